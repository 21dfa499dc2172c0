// The local SlapOS master (`slapos proxy start`): the original slapproxy's SLAP routes and
// hateoas subset on node:http, with its semantics (proxy.md). SQL lives in proxy-db.ts; the
// wire format in slap-protocol.ts. Started by commands/proxy-start.ts and by tests.
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { renameSync, statSync, writeFileSync } from 'node:fs'
import { relative as pathRelative, resolve as pathResolve } from 'node:path'
import type { AddressInfo } from 'node:net'
import type { MultimasterEntry, ShacacheConfig } from './config.ts'
import { NotFoundError, ResourceNotReadyError } from './errors.ts'
import { httpProxyUrl, serveHttpProxy } from './proxy-http.ts'
import { JsonRpcApi, JsonRpcError } from './proxy-jsonrpc.ts'
import type { InstanceRequest } from './proxy-types.ts'
import { ShacacheProxy } from './proxy-shacache.ts'
import { escapingLogger, type Logger } from './log.ts'
import { hasControl, idProblem, quote } from './names.ts'
import { firstHeader, hostAllowed, hostPolicy, localLocation, machineNames, originAllowed, parseTarget, type HostPolicy } from './proxy-guard.ts'
import { ProxyDb, ProxyDbError, type PartitionRow, type AddressRow } from './proxy-db.ts'
import { Panel } from './proxy-panel.ts'
import type { SlapClient } from './slap-client.ts'
import {
  dumps,
  dumpsBytes,
  instanceXml,
  isPyDict,
  loads,
  parseInstanceXml,
  preencode,
  pyFloatRepr,
  SlapObject,
  Tuple,
  type InstanceParameters,
  type Preencoded,
  type PyDict,
  type PyValue,
} from './slap-protocol.ts'

export interface ProxyServerOptions {
  db: ProxyDb
  /** the default computer (`computer_id`) */
  computerId: string
  softwareProducts?: Map<string, string>
  multimaster?: MultimasterEntry[]
  /** the /shacache/ proxy (proxy.md §10.4); without its directories it answers 503 */
  shacache?: ShacacheConfig
  log: Logger
  /** bounds on what one request may make the proxy do (defaults: PROXY_LIMITS) */
  limits?: Partial<ProxyLimits> | undefined
  /** the address the proxy listens on (default 127.0.0.1): which Host headers it answers */
  bindHost?: string | undefined
  /** more host names it answers to (`allowed_hosts`) */
  allowedHosts?: string[] | undefined
  /** clock in seconds (float), for instance timestamps */
  clock?: () => number
  /** `public_directory_path`: what /panel/public/ serves (unset: 403) */
  publicDirectoryPath?: string | undefined
}

export interface RunningProxy {
  url: string
  host: string
  port: number
  server: Server
  /** stops accepting, lets in-flight requests finish, then closes the database */
  close(): Promise<void>
}

/**
 * What one request may ask of the proxy; `[slapproxy]` keys of the same names in
 * snake_case (docs/operations.md, Security). The defaults are far above what the original's
 * test suite and real Software Releases send.
 */
export interface ProxyLimits {
  /** largest request body (bytes); larger: 413 (`max_request_body_size`) */
  maxRequestBodySize: number
  /** deepest nesting of an XML or JSON document in a request; deeper: 400 (`max_document_depth`) */
  maxDocumentDepth: number
  /** most values in one XML document of a request; more: 400 (`max_document_values`) */
  maxDocumentValues: number
  /** most parameters of one instance (request or connection parameters); more: 400 (`max_parameter_count`) */
  maxParameterCount: number
}

export const PROXY_LIMITS: ProxyLimits = {
  maxRequestBodySize: 8 * 1024 * 1024,
  maxDocumentDepth: 64,
  maxDocumentValues: 250_000,
  maxParameterCount: 10_000,
}

/** Listens on host:port (0 = any free port) and resolves once listening. */
export async function startProxyServer(opts: ProxyServerOptions & { host: string; port: number }): Promise<RunningProxy> {
  const app = new ProxyApp({ ...opts, bindHost: opts.bindHost ?? opts.host })
  const server = createServer({ keepAliveTimeout: 5000 }, (req, res) => app.handle(req, res))
  // a CONNECT (tunnel) is no request of a master: answered, where node:http would drop the connection
  server.on('connect', (_req: IncomingMessage, socket: import('node:stream').Duplex) => {
    socket.on('error', () => socket.destroy())
    socket.end('HTTP/1.1 405 METHOD NOT ALLOWED\r\nAllow: GET, HEAD, OPTIONS, POST\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const addr = server.address() as AddressInfo
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
  const url = `http://${host}:${addr.port}/`
  app.selfUrl = url
  let closing: Promise<void> | undefined
  return {
    url,
    host: addr.address,
    port: addr.port,
    server,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => {
          opts.db.close()
          resolve()
        })
        server.closeIdleConnections()
      })
      return closing
    },
  }
}

/** The request handler, usable without a listening socket. */
export class ProxyApp {
  private runIdValue: string | undefined
  selfUrl = ''
  private readonly db: ProxyDb
  private readonly computerId: string
  private readonly products: Map<string, string>
  private readonly log: Logger
  private readonly limits: ProxyLimits
  private readonly hostPolicy: HostPolicy
  /** origins handed out by the HTTPS frontend bypass: what /http_proxy/ may fetch */
  private readonly frontTargets = new Set<string>()
  private readonly clock: () => number
  private readonly publicDirectory: string | undefined
  private lastTimestamp = 0
  private readonly gfciCache = new Map<string, { gen: number; body: Buffer }>()
  /** per computer and partition: what its part of getFullComputerInformation was encoded from, and that part */
  private readonly partitionCache = new Map<string, { mark: number; entries: EncodedPartition[]; index: Map<string, number> }>()
  /** per computer: its encoded software release list and the software table version it was made from */
  private readonly softwareCache = new Map<string, { version: string; encoded: Preencoded }>()
  private readonly routes: Record<string, Route>
  private readonly multimaster: MultimasterEntry[]
  /** one client per remote master, made on first use */
  private readonly remoteClients = new Map<string, Promise<SlapClient>>()
  private jsonRpc: JsonRpcApi | undefined
  private panel: Panel | undefined
  private readonly shacache: ShacacheProxy

  /** this run's identifier (getRunId), made on first use */
  get runId(): string {
    return (this.runIdValue ??= randomRunId())
  }

  constructor(opts: ProxyServerOptions) {
    this.db = opts.db
    this.computerId = opts.computerId
    this.products = opts.softwareProducts ?? new Map()
    this.multimaster = opts.multimaster ?? []
    // values from requests reach log lines: none may forge a line
    this.log = escapingLogger(opts.log)
    this.limits = { ...PROXY_LIMITS }
    for (const [k, v] of Object.entries(opts.limits ?? {})) if (typeof v === 'number') this.limits[k as keyof ProxyLimits] = v
    this.hostPolicy = hostPolicy(opts.bindHost ?? '127.0.0.1', opts.allowedHosts ?? [], machineNames)
    this.clock = opts.clock ?? (() => (performance.timeOrigin + performance.now()) / 1000)
    this.publicDirectory = opts.publicDirectoryPath
    this.routes = this.makeRoutes()
    this.shacache = new ShacacheProxy(opts.shacache ?? {}, opts.log)
  }

  /**
   * Every request goes through here: one error boundary, so that no request, header, body
   * or stored value can end the process. Malformed input gets a 4xx; an error of our own is
   * logged once with its trace and answered 500.
   */
  handle(req: IncomingMessage, res: ServerResponse): void {
    try {
      this.route(req, res)
    } catch (err) {
      this.internalError(req, res, err)
    }
  }

  /** Our own bug (an exception no route turned into an answer): logged with its trace, 500. */
  internalError(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    this.log.error(`${req.method} ${req.url ?? ''}: ${err instanceof Error ? err.message : String(err)}`)
    if (err instanceof Error && err.stack) for (const line of err.stack.split('\n')) this.log.debug(line)
    if (res.headersSent) return void res.destroy()
    try {
      send(res, errorPage(500))
    } catch {
      res.destroy()
    }
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    const host = firstHeader(req.headers.host)
    if (!hostAllowed(host, this.hostPolicy)) {
      req.resume()
      this.log.warning(`${req.method} ${req.url ?? ''}: refused, Host ${host ?? ''} is not a name of this master (allowed_hosts)`)
      return send(res, errorPage(403, 'This host name is not one of this master (see allowed_hosts in [slapproxy]).'))
    }
    const origin = firstHeader(req.headers.origin)
    if (!originAllowed(origin, host)) {
      req.resume()
      this.log.warning(`${req.method} ${req.url ?? ''}: refused, cross-site request from ${origin ?? ''}`)
      return send(res, errorPage(403, 'Cross-site requests are refused.'))
    }
    if (req.url?.startsWith('/http_proxy/')) {
      serveHttpProxy(req, res, req.url.slice('/http_proxy/'.length), (url) => this.frontTargets.has(url.origin)).catch((err: unknown) =>
        this.internalError(req, res, err),
      )
      return
    }
    if (req.url?.startsWith('/shacache/')) return this.shacache.handle(req, res)
    const url = parseTarget(req.url)
    if (!url) {
      req.resume()
      return send(res, errorPage(400))
    }
    const name = url.pathname.replace(/^\/+/, '')
    if (name.startsWith('slapos.')) return this.jsonRpcApi().handle(req, res, name)
    const route = Object.hasOwn(this.routes, name) ? this.routes[name] : undefined
    if (!route) {
      // the panel reads the body of its request route itself
      if (name === 'panel' || name.startsWith('panel/')) return (this.panel ??= this.makePanel()).serve(req, res, url)
      // drain the body so keep-alive connections stay usable
      req.resume()
      if (name.startsWith('hateoas')) return void this.respondSafely(req, res, () => this.hateoas(req, url))
      if (name === '' && (req.method === 'GET' || req.method === 'HEAD')) return redirect(res, '/panel/')
      return send(res, errorPage(404))
    }
    const method = req.method === 'HEAD' ? 'GET' : req.method
    if (method !== route.method) {
      req.resume()
      res.setHeader('Allow', route.method === 'GET' ? 'GET, HEAD, OPTIONS' : 'OPTIONS, POST')
      return send(res, errorPage(405))
    }
    if (route.method === 'GET') {
      return this.respondSafely(req, res, () => route.run(new Form(url.searchParams), req))
    }
    readBody(req, this.limits.maxRequestBodySize).then(
      (body) => {
        if (body === undefined) return send(res, errorPage(413))
        const type = String(req.headers['content-type'] ?? '')
        const params = type.startsWith('application/x-www-form-urlencoded') || type === '' ? new URLSearchParams(body) : new URLSearchParams()
        this.respondSafely(req, res, () => route.run(new Form(params), req))
      },
      () => send(res, errorPage(400)),
    )
  }

  // --- routes ---

  private makeRoutes(): Record<string, Route> {
    const get = (run: Route['run']): Route => ({ method: 'GET', run })
    const post = (run: Route['run']): Route => ({ method: 'POST', run })
    const ignored = post(() => 'Ignored')
    return {
      getComputerInformation: get((f) => this.getFullComputerInformation(f)),
      getFullComputerInformation: get((f) => this.getFullComputerInformation(f)),
      registerComputerPartition: get((f) => this.registerComputerPartition(f)),
      getComputerPartitionCertificate: get(() => dumps({ certificate: '', key: '' })),
      // the original proxy's answer, byte for byte (fixture client/37): masters that track status answer more
      getComputerPartitionStatus: get(() => dumps('Not implemented.')),
      getSoftwareReleaseListFromSoftwareProduct: get((f) => this.getSoftwareReleaseListFromSoftwareProduct(f)),
      getRunId: get(() => this.runId),
      loadComputerConfigurationFromXML: post((f) => this.loadComputerConfigurationFromXML(f)),
      supplySupply: post((f) => this.supplySupply(f)),
      requestComputerPartition: post((f, req) => this.requestComputerPartition(f, req)),
      setComputerPartitionConnectionXml: post((f) => this.setComputerPartitionConnectionXml(f)),
      destroyedSoftwareRelease: post((f) => {
        this.db.deleteSoftware(f.need('url'), f.id('computer_id'))
        return 'OK'
      }),
      destroyedComputerPartition: post((f) => this.destroyedComputerPartition(f)),
      softwareInstanceBang: post((f) => this.softwareInstanceBang(f)),
      softwareInstanceRename: post((f) => this.softwareInstanceRename(f)),
      computerBang: post(() => dumps('')),
      buildingSoftwareRelease: ignored,
      availableSoftwareRelease: ignored,
      softwareReleaseError: ignored,
      startedComputerPartition: ignored,
      stoppedComputerPartition: ignored,
      softwareInstanceError: ignored,
      // the original answers and forgets; a report of a known computer is kept (proxy show --consumption)
      useComputer: post((f) => {
        const computerId = f.get('computer_id')
        const use = f.get('use_string')
        if (computerId && use && !idProblem('computer_id', computerId) && this.db.getComputer(computerId)) this.db.storeConsumption(computerId, use, new Date(this.clock() * 1000).toISOString())
        return 'Ignored'
      }),
    }
  }

  /** The panel (proxy-panel.ts), made on first use: supplied releases, and the JSON API's request. */
  private makePanel(): Panel {
    return new Panel({
      publicDirectory: this.publicDirectory,
      isSupplied: (url) => this.db.isSoftwareKnown(url),
      readBody: (req) => readBody(req, this.limits.maxRequestBodySize),
      precheckRequest: (body) => this.jsonRpcApi().precheck('slapos.post.v0.software_instance', body),
      requestInstance: (body, req) => this.jsonRpcApi().call('slapos.post.v0.software_instance', body, req),
      log: this.log,
    })
  }

  /** The JSON-RPC API (proxy.md §10.1), made on first use; it acts through this master's logic. */
  private jsonRpcApi(): JsonRpcApi {
    this.jsonRpc ??= new JsonRpcApi({
      db: this.db,
      log: this.log,
      readBody: (req) => readBody(req, this.limits.maxRequestBodySize),
      maxDepth: this.limits.maxDocumentDepth,
      now: () => this.now(),
      requestInstance: async (r, httpReq, encode) => {
        try {
          // a person's request: no requester tree; forwarded as `user_<title>` like a SLAP person
          return await this.requestInstance(r, () => '', 'user', httpReq, encode)
        } catch (err) {
          if (err instanceof AllocationFailure) throw new JsonRpcError(403, err.message)
          if (err instanceof BadRequest) throw new JsonRpcError(400, err.message)
          throw err
        }
      },
      freePartition: (partitionId, computerId) => this.freePartition(partitionId, computerId),
      bangTree: (p) => this.bangTree(p),
    })
    return this.jsonRpc
  }

  /** proxy.md §3.2; the answer is cached until the database changes. */
  private getFullComputerInformation(f: Form): Reply {
    const computerId = f.id('computer_id')
    const gen = this.db.generation()
    const hit = this.gfciCache.get(computerId)
    // the encoded answer is kept and sent as is: no per-request copy or encoding of a large body
    if (hit && hit.gen === gen) return { status: 200, body: hit.body }
    if (!this.db.getComputer(computerId) && computerId !== this.computerId) {
      throw new ServerFault(`getFullComputerInformation: computer ${computerId} is not registered`)
    }
    const partitions = this.encodedPartitions(computerId)
    const computer = new SlapObject('Computer', [computerId], {
      _computer_id: computerId,
      _software_release_list: this.softwareList(computerId),
      _computer_partition_list: partitions,
    })
    // one buffer, made once per change (beside the kept partition fragments): sent with one
    // write, where its segments took one write call each (1,000 partitions: a thousand calls)
    const body = dumpsBytes(computer)
    if (this.gfciCache.size > 1000) this.gfciCache.clear()
    this.gfciCache.set(computerId, { gen, body })
    return { status: 200, body }
  }

  /**
   * The computer's partitions, each encoded once until its row changes. After writes that
   * changed only some partitions' rows (the database's change journal says which), only
   * those are read and encoded again; after any other write, every row is read and the
   * partitions whose row and addresses did not change keep their encoding (a fresh answer
   * for 100 partitions took 20 ms and 5 MB of garbage).
   */
  private encodedPartitions(computerId: string): Preencoded[] {
    const kept = this.partitionCache.get(computerId)
    const changed = kept && this.db.changedPartitions(kept.mark)
    if (kept && changed) {
      const mark = this.db.changeMark()
      let complete = true
      for (const key of changed) {
        const cut = key.indexOf('\n')
        if (key.slice(0, cut) !== computerId) continue
        const reference = key.slice(cut + 1)
        const i = kept.index.get(reference)
        const row = i === undefined ? undefined : this.db.getPartition(reference, computerId)
        if (i === undefined || !row) {
          complete = false
          break
        }
        const addresses = kept.entries[i]!.addresses
        kept.entries[i] = { row, addresses, encoded: preencode(this.partitionObject(row, addresses)) }
      }
      if (complete) {
        kept.mark = mark
        return kept.entries.map((e) => e.encoded)
      }
    }
    const mark = this.db.changeMark()
    const addresses = groupAddresses(this.db.listAddresses(computerId))
    const rows = this.db.listPartitions(computerId)
    const previous = new Map<string, EncodedPartition>()
    if (kept) for (const e of kept.entries) previous.set(e.row.reference, e)
    const entries = rows.map((row) => {
      const addrs = addresses.get(row.reference) ?? []
      const hit = previous.get(row.reference)
      // an unchanged partition keeps its entry: the rows just read die young, instead of
      // replacing long-lived ones and leaving old-generation garbage at every answer
      if (hit && sameFields(hit.row, row) && sameRows(hit.addresses, addrs)) return hit
      return { row, addresses: addrs, encoded: preencode(this.partitionObject(row, addrs)) }
    })
    if (this.partitionCache.size > 1000) this.partitionCache.clear()
    this.partitionCache.set(computerId, { mark, entries, index: new Map(entries.map((e, i) => [e.row.reference, i])) })
    return entries.map((e) => e.encoded)
  }

  /**
   * The computer's software release list, encoded once until the software table changes: a
   * node with a thousand releases does not pay their encoding after every other write.
   */
  private softwareList(computerId: string): Preencoded {
    const version = this.db.softwareVersion()
    const hit = this.softwareCache.get(computerId)
    if (hit && hit.version === version) return hit.encoded
    const encoded = preencode(
      this.db.listSoftware(computerId).map(
        (s) =>
          new SlapObject('SoftwareRelease', [s.url, computerId], {
            _software_release: s.url,
            _computer_guid: computerId,
            _software_instance_list: [],
            _requested_state: s.requestedState,
          }),
      ),
    )
    if (this.softwareCache.size > 1000) this.softwareCache.clear()
    this.softwareCache.set(computerId, { version, encoded })
    return encoded
  }

  private registerComputerPartition(f: Form): Reply {
    const computerId = f.id('computer_reference')
    const partitionId = f.id('computer_partition_reference')
    const p = this.db.getPartition(partitionId, computerId)
    if (!p) throw new ServerFault(`registerComputerPartition: no partition ${partitionId} on computer ${computerId}`)
    return dumps(this.partitionObject(p, this.db.partitionAddresses(partitionId, computerId)))
  }

  private getSoftwareReleaseListFromSoftwareProduct(f: Form): Reply {
    const product = f.get('software_product_reference')
    const url = f.get('software_release_url')
    if (url) throw new BadRequest('getSoftwareReleaseListFromSoftwareProduct: software_release_url is not supported')
    if (product === undefined) throw new BadRequest('getSoftwareReleaseListFromSoftwareProduct: software_product_reference is required')
    const sr = this.products.get(product)
    return dumps(sr === undefined ? [] : [sr])
  }

  /** proxy.md §3.1 */
  private loadComputerConfigurationFromXML(f: Form): Reply {
    const dict = this.loadsField(f.need('xml'), 'xml')
    if (!isPyDict(dict)) throw new BadRequest('loadComputerConfigurationFromXML: xml is not a dictionary')
    const reference = dict.reference
    if (typeof reference !== 'string' || !reference) throw new BadRequest('loadComputerConfigurationFromXML: the computer has no reference')
    checkId('computer reference', reference)
    const list = dict.partition_list ?? []
    if (!Array.isArray(list)) throw new BadRequest('loadComputerConfigurationFromXML: partition_list is not a list')
    const partitions = list.map((p, i) => {
      if (!isPyDict(p) || typeof p.reference !== 'string') throw new BadRequest(`loadComputerConfigurationFromXML: partition ${i} has no reference`)
      const id = p.reference
      checkId('partition reference', id)
      const tap = isPyDict(p.tap) && typeof p.tap.name === 'string' ? p.tap.name : ''
      const iface = tap || id
      const addrs = Array.isArray(p.address_list) ? p.address_list : []
      return {
        id,
        addresses: addrs.map((a) => {
          if (!isPyDict(a) || typeof a.addr !== 'string') throw new BadRequest(`loadComputerConfigurationFromXML: bad address of ${id}`)
          return { iface, address: a.addr, netmask: textOrNull(a.netmask) }
        }),
      }
    })
    this.db.formatComputer(reference, textOrNull(dict.address), textOrNull(dict.netmask), partitions)
    return 'done'
  }

  /** proxy.md §6 */
  private supplySupply(f: Form): Reply {
    const url = f.text('url')
    const computerId = f.id('computer_id')
    const state = f.need('state')
    if (state !== 'available' && state !== 'destroyed') throw new BadRequest(`supplySupply: wrong state ${state}`)
    this.db.supplySoftware(url, computerId, state)
    return `Supplied ${pyStrRepr(url)} to be ${state}`
  }

  /** proxy.md §5.3 */
  private setComputerPartitionConnectionXml(f: Form): Reply {
    const slaveReference = f.get('slave_reference')
    const partitionId = f.id('computer_partition_id')
    const computerId = f.id('computer_id')
    const dict = this.loadsField(f.need('connection_xml'), 'connection_xml')
    if (!isPyDict(dict)) throw new BadRequest('setComputerPartitionConnectionXml: connection_xml is not a dictionary')
    this.checkParameterCount(dict, 'connection_xml')
    const xml = instanceXml(dict)
    if (!slaveReference || slaveReference === 'None') this.db.updatePartition(partitionId, computerId, { connectionXml: xml })
    else this.db.setSlaveConnection(slaveReference, xml, partitionId)
    return 'done'
  }

  /** proxy.md §5.1 */
  private destroyedComputerPartition(f: Form): Reply {
    const partitionId = f.id('computer_partition_id')
    const computerId = f.id('computer_id')
    return this.freePartition(partitionId, computerId).message
  }

  /**
   * freePartitionFromDB (proxy.md §5.1), for SLAP and the JSON-RPC API: the partition is
   * free again, unless it is unknown or a root whose tree still has members (those are
   * then asked to be destroyed); `message` is the SLAP answer.
   */
  private freePartition(partitionId: string, computerId: string): { freed: boolean; message: string } {
    return this.db.transaction(() => {
      const p = this.db.getPartition(partitionId, computerId)
      if (!p) return { freed: false, message: `Unknown partition ${pyStrRepr(partitionId)} on ${pyStrRepr(computerId)}` }
      if (!p.requestedBy) {
        const children = this.db.treeMemberTitles(p.partitionReference ?? '')
        if (children.length && p.partitionReference !== null) {
          this.db.setTreeState(p.partitionReference, 'destroyed')
          return { freed: false, message: `Not destroying yet because this partition has child partitions: ${children.join(', ')}` }
        }
      }
      this.db.freePartition(partitionId, computerId)
      return { freed: true, message: 'OK' }
    })
  }

  /** proxy.md §5 (softwareInstanceBang) */
  private softwareInstanceBang(f: Form): Reply {
    const computerId = f.id('computer_id')
    const partitionId = f.id('computer_partition_id')
    this.db.transaction(() => this.bangTree(this.db.getPartition(partitionId, computerId)))
    return 'OK'
  }

  /** The root of this instance's tree and all its members get a new timestamp (unknown: nothing). */
  private bangTree(p: PartitionRow | undefined): void {
    const root = p ? p.requestedBy || p.partitionReference : null
    if (root) this.db.bumpTree(root, this.now())
  }

  /** proxy.md §5.2 */
  private softwareInstanceRename(f: Form): Reply {
    const newName = f.text('new_name')
    const partitionId = f.id('computer_partition_id')
    const computerId = f.id('computer_id')
    if (!this.db.renameInstance(partitionId, computerId, newName)) return `Unknown partition ${pyStrRepr(partitionId)} on ${pyStrRepr(computerId)}`
    return 'done'
  }

  /** proxy.md §4 */
  private requestComputerPartition(f: Form, httpReq: IncomingMessage): Reply | Promise<Reply> {
    const computerId = f.get('computer_id')
    const requesterPartition = f.get('computer_partition_id')
    const req: InstanceRequest = {
      softwareRelease: f.need('software_release'),
      softwareType: f.need('software_type'),
      title: f.need('partition_reference'),
      parameters: this.dictField(f.get('partition_parameter_xml'), 'partition_parameter_xml'),
      filter: this.dictField(f.get('filter_xml'), 'filter_xml'),
      state: this.stateField(f.need('state')),
      shared: f.get('shared_xml') === undefined ? false : truthy(this.loadsField(f.get('shared_xml') ?? '', 'shared_xml')),
      requestedBy: '',
    }
    const requestedBy = (): string => {
      if (computerId === undefined || requesterPartition === undefined) return ''
      const p = this.db.getPartition(requesterPartition, computerId)
      return p ? p.requestedBy || p.partitionReference || '' : ''
    }
    return this.requestInstance(req, requestedBy, requesterPartition ?? 'user', httpReq, dumps)
  }

  /**
   * requestInstanceFromDB, for SLAP and the JSON-RPC API: allocate or update here (or answer
   * a frontend bypass), or forward to another master. `requestedBy` names the requester's
   * tree, `requesterId` the requester in a forwarded reference; `encode` turns the answer
   * into the reply (inside the transaction when allocating here).
   */
  private requestInstance<T>(req: InstanceRequest, requestedBy: () => string, requesterId: string, httpReq: IncomingMessage, encode: (answer: SlapObject) => T): T | Promise<T> {
    this.checkRequest(req)
    const local = (): T =>
      this.db.transaction(() => {
        req.requestedBy = requestedBy()
        if (req.shared) {
          const base = httpsBase(httpReq)
          const bypass = frontendBypass(req, base)
          if (bypass) {
            if (base !== undefined) this.rememberFrontTarget(req.parameters.url)
            return encode(bypass)
          }
        }
        const guid = req.filter.computer_guid
        if (typeof guid !== 'string') req.filter.computer_guid = this.computerId
        return encode(req.shared ? this.requestShared(req) : this.requestRegular(req))
      })
    // Multimaster (proxy.md §8): only a request that matches nothing local may be forwarded.
    const masterUrl = req.filter.master_url
    if (masterUrl === undefined && !this.multimaster.some((m) => m.softwareReleaseList.includes(req.softwareRelease))) return local()
    if (req.shared && frontendBypass(req, undefined)) return local()
    if (this.hasLocalInstance(req, requestedBy())) return local()
    return this.forwardTarget(masterUrl, req.softwareRelease, httpReq).then((target) =>
      target ? this.forward(target, req, requesterId).then(encode) : local(),
    )
  }

  /** Step 2 of proxy.md §4.2: does the request match an instance of this proxy? */
  private hasLocalInstance(r: InstanceRequest, requestedBy: string): boolean {
    if (r.shared) {
      const guid = r.filter.computer_guid
      return this.db.getSlave(`${requestedBy}_${r.title}`, typeof guid === 'string' ? guid : this.computerId) !== undefined
    }
    return this.db.findInstance(r.title, requestedBy) !== undefined
  }

  /**
   * The remote master a request goes to, or undefined to allocate here: an explicit
   * `filter_kw.master_url` (this proxy itself = local, a configured one, else 404), else
   * the first section whose software_release_list holds the SR.
   */
  private async forwardTarget(masterUrl: PyValue | undefined, softwareRelease: string, httpReq: IncomingMessage): Promise<MultimasterEntry | undefined> {
    if (masterUrl === undefined) return this.multimaster.find((m) => m.softwareReleaseList.includes(softwareRelease))
    const url = String(masterUrl)
    const entry = this.multimaster.find((m) => m.url === url) ?? this.multimaster.find((m) => trimSlash(m.url) === trimSlash(url))
    if (this.isSelf(url, httpReq)) return undefined
    if (!entry) throw new HttpFault(404, `External SlapOS Master URL ${url} is not listed in multimaster list.`)
    return entry
  }

  /**
   * Is this master URL this very proxy? Its own URL, the address the request reached, or a
   * name this proxy answers to with its port. Decided without a connection: a request never
   * makes the proxy reach a URL that the configuration does not name.
   */
  private isSelf(url: string, httpReq: IncomingMessage): boolean {
    const u = trimSlash(url)
    if (u === trimSlash(this.selfUrl) || (httpReq.headers.host !== undefined && u === `http://${httpReq.headers.host}`)) return true
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return false
    }
    const own = this.selfUrl ? new URL(this.selfUrl).port : ''
    return parsed.protocol === 'http:' && own !== '' && parsed.port === own && hostAllowed(parsed.host, this.hostPolicy)
  }

  /** The origin of a frontend bypass's `url`, which /http_proxy/ may then fetch (at most 10,000 kept). */
  private rememberFrontTarget(url: PyValue | undefined): void {
    if (typeof url !== 'string') return
    let origin: string
    try {
      const u = new URL(url)
      if (u.protocol !== 'http:' && u.protocol !== 'https:') return
      origin = u.origin
    } catch {
      return
    }
    if (this.frontTargets.size >= 10_000 && !this.frontTargets.has(origin)) {
      const oldest = this.frontTargets.values().next().value
      if (oldest !== undefined) this.frontTargets.delete(oldest)
    }
    this.frontTargets.add(origin)
  }

  /**
   * forwardRequestToExternalMaster: the request goes to the remote master as
   * `<requester>_<title>` (a person is `user`), either as an open order tagged with
   * source_instance_id, or as the configured remote partition; the answer is the remote
   * instance as a ComputerPartition that remembers its master (proxy.md §8).
   */
  private async forward(m: MultimasterEntry, r: InstanceRequest, requesterId: string): Promise<SlapObject> {
    if (m.url.startsWith('https') && (!m.key || !m.cert)) {
      throw new HttpFault(404, `External master ${m.url} configuration did not specify key or certificate.`)
    }
    const reference = `${requesterId}_${r.title}`
    const asPartition = m.computer !== undefined && m.partition !== undefined
    this.log.info(`Forwarding request of ${reference} to ${m.url}${asPartition ? ` as ${m.computer}/${m.partition}` : ''}`)
    const client = await this.remoteClient(m)
    // the request has reached the master it names: the remote one allocates it without
    // having to recognise its own URL (which it may only know through a front)
    const { master_url: _reached, ...filter } = r.filter
    let answer: Awaited<ReturnType<SlapClient['requestComputerPartition']>>
    try {
      answer = await client.requestComputerPartition({
        softwareRelease: r.softwareRelease,
        partitionReference: reference,
        softwareType: r.softwareType,
        partitionParameterKw: r.parameters,
        filterKw: asPartition ? filter : { ...filter, source_instance_id: reference },
        state: r.state,
        shared: r.shared,
        ...(asPartition ? { computerId: m.computer, partitionId: m.partition } : {}),
      })
    } catch (err) {
      if (err instanceof ResourceNotReadyError) {
        this.recordForward(reference, m.url, r.state)
        throw new HttpFault(408, 'Resource not ready')
      }
      if (err instanceof NotFoundError) throw new HttpFault(404, err.message)
      throw new ServerFault(`forwarding ${reference} to ${m.url}: ${(err as Error).message}`)
    }
    this.recordForward(reference, m.url, r.state)
    const state: PyDict = {
      _computer_id: answer.slap_computer_id,
      _partition_id: answer.slap_computer_partition_id,
      _request_dict: null,
      ...answer.raw.state,
      _master_url: m.url,
      _connection_helper: null,
      _software_release_document: r.softwareRelease,
    }
    if (r.shared) state._synced = true
    return new SlapObject('ComputerPartition', [answer.slap_computer_id, answer.slap_computer_partition_id, null], state)
  }

  /** forwarded_partition_request: a destroyed instance is forgotten, any other one (re)recorded. */
  private recordForward(reference: string, masterUrl: string, state: string | null): void {
    if (state === 'destroyed') this.db.forgetForwarded(reference, masterUrl)
    else this.db.recordForwarded(reference, masterUrl)
  }

  private remoteClient(m: MultimasterEntry): Promise<SlapClient> {
    let c = this.remoteClients.get(m.url)
    if (!c) {
      // slap-client (and its HTTP stack) is only loaded by a proxy that forwards
      c = import('./slap-client.ts').then(({ SlapClient }) => new SlapClient({ masterUrl: m.url, keyFile: m.key, certFile: m.cert }))
      this.remoteClients.set(m.url, c)
    }
    return c
  }

  /** requestNotSlave: allocate or update a regular instance (proxy.md §4.3). */
  private requestRegular(r: InstanceRequest): SlapObject {
    const computer = String(r.filter.computer_guid)
    const xml = instanceXml(r.parameters)
    let state = r.state
    let softwareType = r.softwareType
    let p = this.db.findInstance(r.title, r.requestedBy)
    const update: Partial<PartitionRow> = { slapState: 'busy' }
    if (!p) {
      p = this.db.firstFreePartition(computer)
      if (!p) throw new AllocationFailure(`No free computer partition found for: ${r.title}`)
      if (r.title) update.partitionReference = r.title
      if (r.requestedBy) update.requestedBy = r.requestedBy
      if (!softwareType) softwareType = 'default'
    } else if (r.requestedBy) {
      const root = this.db.findInstance(r.requestedBy, '')
      // a stopped or destroyed tree forces its members; a started root lets them be stopped
      if (root && root.requestedState !== 'started') state = root.requestedState
    }
    let changed = p.timestamp === null
    const wanted = { requestedState: state ?? p.requestedState, softwareRelease: r.softwareRelease, softwareType, xml }
    for (const [k, v] of Object.entries(wanted) as [keyof typeof wanted, string][]) {
      if (p[k] !== v) {
        update[k] = v
        changed = true
      }
    }
    if (changed) update.timestamp = this.now()
    this.db.updatePartition(p.reference, p.computerReference, update)
    const row = this.db.getPartition(p.reference, p.computerReference) ?? p
    const parameters: PyDict = { ...this.parse(row.xml) }
    parameters.timestamp = row.timestamp === null ? 'None' : pyFloatRepr(row.timestamp)
    return new SlapObject('SoftwareInstance', [], {
      _connection_dict: { ...this.parse(row.connectionXml) },
      _parameter_dict: parameters,
      connection_xml: row.connectionXml,
      slap_computer_id: row.computerReference,
      slap_computer_partition_id: row.reference,
      slap_software_release_url: row.softwareRelease,
      slap_server_url: 'slap_server_url',
      slap_software_type: row.softwareType,
      _instance_guid: `${row.computerReference}-${row.reference}`,
      _requested_state: state ?? 'started',
      ip_list: this.db.partitionAddresses(row.reference, undefined).map((a) => new Tuple([a.reference, a.address])),
    })
  }

  /** requestSlave: attach a shared instance to a host partition (proxy.md §4.4). */
  private requestShared(r: InstanceRequest): SlapObject {
    const computer = String(r.filter.computer_guid)
    let hostId: string | undefined
    const guid = r.filter.instance_guid
    if (guid !== undefined && guid !== null) {
      const g = String(guid)
      hostId = g.startsWith(computer) ? g.slice(computer.length + 1) : g
    }
    const host = this.db.findSlaveHost(r.softwareRelease, computer, r.softwareType, hostId)
    if (!host) {
      const args = [r.softwareRelease, computer, ...(r.softwareType ? [r.softwareType] : []), ...(hostId !== undefined ? [hostId] : [])]
      throw new AllocationFailure(`No partition corresponding to slave request: [${args.map(pyStrRepr).join(', ')}]`)
    }
    const reference = `${r.requestedBy}_${r.title}`
    const entry: PyDict = { slave_title: reference, slap_software_type: r.softwareType, slave_reference: reference }
    for (const [k, v] of Object.entries(r.parameters)) entry[k] = v
    let list: PyValue[]
    let changed = false
    if (r.state === 'destroyed') {
      if (host.slaveInstanceList === null) throw new ServerFault(`cannot destroy shared instance ${reference}: its host has no shared instance list`)
      list = this.parseSlaveList(host.slaveInstanceList)
      const before = list.length
      list = list.filter((x) => !(isPyDict(x) && x.slave_reference === reference))
      changed = list.length !== before
    } else {
      list = host.slaveInstanceList === null ? [] : this.parseSlaveList(host.slaveInstanceList)
      const i = list.findIndex((x) => isPyDict(x) && x.slave_reference === reference)
      if (i < 0) {
        list.push(entry)
        changed = true
      } else if (dumps(list[i] ?? null) !== dumps(entry)) {
        list[i] = entry
        changed = true
      }
    }
    const update: Partial<PartitionRow> = { slaveInstanceList: dumps(list) }
    if (changed) update.timestamp = this.now()
    this.db.updatePartition(host.reference, computer, update)
    let slave = this.db.getSlave(reference, computer)
    if (!slave) {
      this.db.insertSlave(reference, computer, r.requestedBy, host.reference)
      slave = this.db.getSlave(reference, computer)
    }
    return new SlapObject('SoftwareInstance', [], {
      _connection_dict: { ...this.parse(slave?.connectionXml ?? null) },
      _parameter_dict: { ...parseInstanceXml(instanceXml(r.parameters)) },
      slap_computer_id: host.computerReference,
      slap_computer_partition_id: slave?.hostedBy ?? host.reference,
      slap_software_release_url: host.softwareRelease,
      slap_server_url: 'slap_server_url',
      slap_software_type: host.softwareType,
      ip_list: this.db.partitionAddresses(host.reference, host.computerReference).map((a) => new Tuple([a.reference, a.address])),
    })
  }

  // --- input checks ---

  /** An xml_marshaller document of a request, within the limits; malformed: 400. */
  private loadsField(text: string, field: string): PyValue {
    try {
      return loads(text, { maxLength: this.limits.maxRequestBodySize, maxDepth: this.limits.maxDocumentDepth, maxExpanded: this.limits.maxDocumentValues })
    } catch (err) {
      throw new BadRequest(`${field} is not a valid marshalled document: ${(err as Error).message}`)
    }
  }

  private dictField(text: string | undefined, field: string): PyDict {
    if (text === undefined) return {}
    const v = this.loadsField(text, field)
    if (v === null) return {}
    if (!isPyDict(v)) throw new BadRequest(`${field} is not a dictionary`)
    return { ...v }
  }

  private stateField(text: string): string | null {
    const v = this.loadsField(text, 'state')
    if (v === null) return null
    if (typeof v !== 'string') throw new BadRequest('state is not a string')
    return v
  }

  private checkParameterCount(dict: PyDict, field: string): void {
    const n = Object.keys(dict).length
    if (n > this.limits.maxParameterCount) throw new BadRequest(`${field} has ${n} parameters, more than max_parameter_count (${this.limits.maxParameterCount})`)
  }

  /** What an instance request may hold, for SLAP and the JSON API alike (400 otherwise). */
  private checkRequest(r: InstanceRequest): void {
    checkText('software release', r.softwareRelease)
    checkText('software type', r.softwareType)
    checkText('title', r.title)
    // an instance without a title would be allocated and never found again (no tree lists it)
    if (r.title === '') throw new BadRequest('the title is empty: an instance needs one')
    if (r.state !== null) checkText('state', r.state)
    this.checkParameterCount(r.parameters, 'the instance parameters')
    this.checkParameterCount(r.filter, 'the filter')
    const guid = r.filter.computer_guid
    if (typeof guid === 'string') checkId('computer_guid', guid)
    if (isPyDict(r.parameters) && hasNul(r.parameters)) throw new BadRequest('the instance parameters have a NUL character')
  }

  // --- hateoas subset (proxy.md §9) ---

  private hateoas(req: IncomingMessage, url: URL): Reply {
    if (req.method !== 'GET' && req.method !== 'HEAD') return errorPage(405)
    const base = `http://${req.headers.host ?? 'localhost'}`
    const path = url.pathname.replace(/\/+$/, '')
    if (path === '/hateoas') {
      const mode = url.searchParams.get('mode')
      if (mode === null) {
        return json({
          _links: {
            raw_search: { href: `${base}/hateoas/?mode=search&query={query}&select_list={select_list}` },
            traverse: { href: `${base}/hateoas/?mode=traverse&relative_url={relative_url}&view={view}` },
          },
        })
      }
      if (mode === 'search') return this.hateoasSearch(url.searchParams.get('query') ?? '')
      if (mode === 'traverse') {
        // only a path of this proxy may be a Location (no open redirect, no header injection)
        const to = localLocation(url.searchParams.get('relative_url') ?? '/')
        if (to === undefined) return { status: 400, body: 'relative_url must be a path of this master' }
        return { status: 302, body: '', headers: { Location: to } }
      }
      return { status: 400, body: `Unhandled mode: ${mode}` }
    }
    const m = /^\/hateoas\/(partitions|shared|computers)\/(.+)$/.exec(path)
    if (!m) return errorPage(404)
    const what = m[1]
    let key: string
    try {
      key = decodeURIComponent(m[2] ?? '')
    } catch {
      return errorPage(400)
    }
    if (what === 'computers') {
      const c = this.db.getComputer(key)
      if (!c) return errorPage(404)
      const field = (k: string) => ({ type: 'StringField', key: k, default: c.reference })
      return json({
        _embedded: { _view: { form_id: field('computer'), my_reference: field('reference'), my_title: field('reference') } },
        _links: { type: { name: 'Computer' } },
      })
    }
    if (what === 'partitions') {
      const p = this.db.findByTitle(key)
      if (!p) return errorPage(404)
      return json(serviceDocument(p.partitionReference ?? '', p.requestedState, p.xml, p.connectionXml, p.softwareRelease, p.softwareType, 0))
    }
    const found = this.findRootShared(key)
    if (!found) return errorPage(404)
    const { slave, host, entry } = found
    const params: PyDict = {}
    for (const [k, v] of Object.entries(entry)) if (k !== 'slave_title' && k !== 'slave_reference' && k !== 'slap_software_type') params[k] = v
    const type = entry.slap_software_type
    return json(serviceDocument(key, 'unused', instanceXml(params), slave.connectionXml, host.softwareRelease, typeof type === 'string' ? type : null, 1))
  }

  private hateoasSearch(query: string): Reply {
    const tree = 'portal_type:"Instance Tree" AND validation_state:validated'
    const node = 'portal_type:"Compute Node" AND validation_state:validated'
    const rest = (prefix: string, field: string): string | null | undefined => {
      if (query === prefix) return null
      if (!query.startsWith(`${prefix} AND ${field}:=`)) return undefined
      const v = query.slice(prefix.length + ` AND ${field}:=`.length)
      if (!/^"(?:[^"\\]|\\.)*"$/.test(v)) throw new HttpFault(400, `Unhandled query: ${query}`)
      return v.slice(1, -1)
    }
    const t = rest(tree, 'title')
    if (t !== undefined) {
      const partitions = this.db.listRootInstances().filter((p) => t === null || p.partitionReference === t)
      const contents: unknown[] = partitions.map((p) => ({
        ...partitionColumns(p),
        url_string: p.softwareRelease,
        title: p.partitionReference,
        relative_url: `/hateoas/partitions/${p.partitionReference ?? ''}`,
      }))
      if (t === null || contents.length === 0) {
        for (const s of this.db.listSlaves()) {
          if (s.askedBy !== '' || !s.reference.startsWith('_')) continue
          const title = s.reference.slice(1)
          if (t !== null && title !== t) continue
          const found = this.findRootShared(title)
          if (!found) continue
          contents.push({ url_string: found.host.softwareRelease, title, relative_url: `/hateoas/shared/${title}` })
        }
      }
      return json({ _embedded: { contents } })
    }
    const c = rest(node, 'reference')
    if (c !== undefined) {
      const contents = this.db
        .listComputers()
        .filter((x) => c === null || x.reference === c)
        .map((x) => ({ ...x, title: x.reference, relative_url: `/hateoas/computers/${x.reference}` }))
      return json({ _embedded: { contents } })
    }
    return { status: 400, body: `Unhandled query: ${query}` }
  }

  private findRootShared(title: string) {
    const reference = `_${title}`
    const slave = this.db.listSlaves().find((s) => s.reference === reference && s.askedBy === '')
    if (!slave || !slave.hostedBy) return undefined
    const host = this.db.getPartition(slave.hostedBy, slave.computerReference)
    if (!host || host.slaveInstanceList === null) return undefined
    const entry = this.parseSlaveList(host.slaveInstanceList).find((x) => isPyDict(x) && x.slave_reference === reference)
    if (!entry || !isPyDict(entry)) return undefined
    return { slave, host, entry }
  }

  // --- helpers ---

  /** partitiondict2partition (proxy.md §3.3) */
  private partitionObject(p: PartitionRow, addresses: AddressRow[]): SlapObject {
    const state: PyDict = {
      _computer_id: p.computerReference,
      _partition_id: p.reference,
      _request_dict: null,
      _instance_guid: `${p.computerReference}-${p.reference}`,
      _software_release_document: null,
      _requested_state: 'destroyed',
      _need_modification: 0,
    }
    if (p.softwareRelease) {
      const params: PyDict = { ...this.parse(p.xml) }
      params.ip_list = addresses.map((a) => new Tuple([a.reference, a.address]))
      params.full_address_list = []
      params.slap_software_type = p.softwareType
      params.instance_title = p.partitionReference
      params.root_instance_title = p.requestedBy || p.partitionReference
      params.slap_computer_id = p.computerReference
      params.slap_computer_partition_id = p.reference
      params.slap_software_release_url = p.softwareRelease
      params.slave_instance_list = p.slaveInstanceList === null ? [] : this.parseSlaveList(p.slaveInstanceList)
      if (p.timestamp) params.timestamp = pyFloatRepr(p.timestamp)
      state._need_modification = 1
      state._requested_state = p.requestedState
      state._parameter_dict = params
      state._connection_dict = { ...this.parse(p.connectionXml) }
      state._software_release_document = new SlapObject('SoftwareRelease', [p.softwareRelease, p.computerReference], {
        _software_release: p.softwareRelease,
        _computer_guid: p.computerReference,
        _software_instance_list: [],
      })
    }
    return new SlapObject('ComputerPartition', [p.computerReference, p.reference, null], state)
  }

  private parse(xml: string | null): InstanceParameters {
    if (!xml) return {}
    return parseInstanceXml(xml)
  }

  private parseSlaveList(text: string): PyValue[] {
    const v = loads(text)
    if (!Array.isArray(v)) throw new ServerFault('slave_instance_list column is not a list')
    return v
  }

  /** Seconds since the epoch, strictly increasing so that every change is seen as one. */
  private now(): number {
    let t = this.clock()
    if (t <= this.lastTimestamp) t = this.lastTimestamp + 1e-6
    this.lastTimestamp = t
    return t
  }

  private respondSafely(req: IncomingMessage, res: ServerResponse, fn: () => Reply | Promise<Reply>): void {
    let reply: Reply | Promise<Reply>
    try {
      reply = fn()
    } catch (err) {
      reply = this.faultReply(req, err)
    }
    if (typeof reply === 'string' || !('then' in reply)) return send(res, reply, req.method === 'HEAD')
    reply.then(
      (r) => send(res, r, req.method === 'HEAD'),
      (err: unknown) => send(res, this.faultReply(req, err), req.method === 'HEAD'),
    )
  }

  private faultReply(req: IncomingMessage, err: unknown): Reply {
    if (err instanceof HttpFault) {
      this.log.warning(`${req.method} ${req.url ?? ''}: ${err.status} ${err.message}`)
      return errorPage(err.status, err.status === 500 ? undefined : err.message, err instanceof BadRequest)
    }
    if (err instanceof ServerFault) {
      this.log.warning(`${req.method} ${req.url ?? ''}: ${err.message}`)
      return errorPage(500)
    }
    this.log.error(`${req.method} ${req.url ?? ''}: ${err instanceof Error ? err.message : String(err)}`)
    if (err instanceof Error && err.stack) this.log.debug(err.stack)
    return errorPage(500)
  }
}

// --- internal ---

interface Route {
  method: 'GET' | 'POST'
  run(f: Form, req: IncomingMessage): Reply | Promise<Reply>
}

/** An answer: its text (an HTML page) or its status, body and headers. */
type Reply = string | { status: number; body: string | Buffer; headers?: Record<string, string>; contentType?: string }

/** An error answered with its status and message (404 allocation failure, 400 ...). */
class HttpFault extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

/** No partition for a request (the original's AllocationFailure): 404 on SLAP, 403 in JSON-RPC. */
class AllocationFailure extends HttpFault {
  constructor(message: string) {
    super(404, message)
  }
}

/** Malformed input: 400 with the reason (the original raised, a bare 500, for most of it). */
class BadRequest extends HttpFault {
  constructor(message: string) {
    super(400, message)
  }
}

/** What the original answers with a bare 500 for well-formed input (an unknown computer or partition); we log the reason. */
class ServerFault extends Error {}

/** A computer or partition identifier that will name paths on nodes: one safe path component. */
function checkId(what: string, id: string): void {
  const problem = idProblem(what, id)
  if (problem) throw new BadRequest(problem)
}

/** A value that ends up on a line of a node's files (a URL, a title): no control characters. */
function checkText(what: string, v: string): void {
  if (hasControl(v)) throw new BadRequest(`${what} ${quote(v)} has control characters`)
}

class Form {
  constructor(private readonly params: URLSearchParams) {}
  get(name: string): string | undefined {
    return this.params.get(name) ?? undefined
  }
  /** A mandatory field: missing → 400 like Flask's request.form[...] */
  need(name: string): string {
    const v = this.params.get(name)
    if (v === null) throw new HttpFault(400, `missing form field ${name}`)
    return v
  }
  /** A mandatory computer or partition identifier: 400 unless one safe path component. */
  id(name: string): string {
    const v = this.need(name)
    checkId(name, v)
    return v
  }
  /** A mandatory field without control characters. */
  text(name: string): string {
    const v = this.need(name)
    checkText(name, v)
    return v
  }
}

const HTML = 'text/html; charset=utf-8'

const DEFAULT_DESCRIPTIONS: Record<number, string> = {
  400: 'The browser (or proxy) sent a request that this server could not understand.',
  404: 'The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.',
  405: 'The method is not allowed for the requested URL.',
  408: "The server closed the network connection because the browser didn't finish the request within the specified time.",
  413: 'The data value transmitted exceeds the capacity limit.',
  500: 'The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.',
}

/** The HTML error page of Flask/werkzeug, which clients show in their messages. */
function errorPage(status: number, description?: string, explained = false): Reply {
  const reason = STATUS_CODES[status] ?? 'Error'
  // a 400 for a missing field shows werkzeug's generic text, like the original; malformed
  // input that the original answered 500 says what is wrong with it
  const text = (status === 400 && !explained) || description === undefined ? (DEFAULT_DESCRIPTIONS[status] ?? '') : escapeHtml(description)
  return {
    status,
    body: `<!doctype html>\n<html lang=en>\n<title>${status} ${reason}</title>\n<h1>${reason}</h1>\n<p>${text}</p>\n`,
  }
}

function json(v: unknown): Reply {
  return { status: 200, body: JSON.stringify(v), contentType: 'application/json' }
}

function send(res: ServerResponse, reply: Reply, head = false): void {
  const r = typeof reply === 'string' ? { status: 200, body: reply } : reply
  const body = typeof r.body === 'string' ? Buffer.from(r.body, 'utf8') : r.body
  // one flat list for writeHead: the cheapest way through node:http, this runs per request
  const headers: string[] = ['Content-Type', typeof reply === 'string' ? HTML : (reply.contentType ?? HTML)]
  if (typeof reply !== 'string' && reply.headers) for (const [k, v] of Object.entries(reply.headers)) headers.push(k, v)
  headers.push('Content-Length', String(body.length))
  res.writeHead(r.status, statusMessage(r.status), headers)
  res.end(head ? undefined : body)
}

const STATUS_MESSAGES = new Map<number, string>()

/** werkzeug's reason phrases are upper case (`200 OK`, `404 NOT FOUND`). */
function statusMessage(status: number): string {
  let m = STATUS_MESSAGES.get(status)
  if (m === undefined) {
    m = (STATUS_CODES[status] ?? '').toUpperCase()
    STATUS_MESSAGES.set(status, m)
  }
  return m
}

function redirect(res: ServerResponse, to: string): void {
  send(res, { status: 302, body: '', headers: { Location: to } })
}

function readBody(req: IncomingMessage, max: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > max) {
      req.resume()
      resolve(undefined)
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    let over = false
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > max) over = true
      else chunks.push(c)
    })
    req.on('end', () => resolve(over ? undefined : Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}


function truthy(v: PyValue): boolean {
  if (v === null || v === false || v === 0 || v === '') return false
  if (Array.isArray(v)) return v.length > 0
  if (isPyDict(v)) return Object.keys(v).length > 0
  return true
}

function textOrNull(v: PyValue | undefined): string | null {
  if (v === undefined || v === null) return null
  return typeof v === 'string' ? v : String(v)
}

interface EncodedPartition {
  row: PartitionRow
  addresses: AddressRow[]
  encoded: Preencoded
}

/** Same values in every field (rows of one query: same fields, primitive values). */
function sameFields<T extends object>(a: T, b: T): boolean {
  for (const k in a) if (a[k] !== b[k]) return false
  return true
}

function sameRows<T extends object>(a: T[], b: T[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (!sameFields(a[i]!, b[i]!)) return false
  return true
}

function groupAddresses(rows: AddressRow[]): Map<string, AddressRow[]> {
  const m = new Map<string, AddressRow[]>()
  for (const r of rows) {
    const l = m.get(r.partitionReference)
    if (l) l.push(r)
    else m.set(r.partitionReference, [r])
  }
  return m
}

/** Python repr() of a str, as in `Supplied '<url>' ...` and `Unknown partition '<id>'`. */
function pyStrRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'"
  let out = quote
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0
    if (ch === '\\') out += '\\\\'
    else if (ch === quote) out += `\\${quote}`
    else if (ch === '\n') out += '\\n'
    else if (ch === '\r') out += '\\r'
    else if (ch === '\t') out += '\\t'
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`
    else out += ch
  }
  return out + quote
}

/**
 * `https://<Host><X-Forwarded-Prefix>` when the request came over HTTPS (a TLS front that
 * sets `X-Forwarded-Proto: https`; one hop, like the original), else undefined.
 */
function httpsBase(req: IncomingMessage): string | undefined {
  const first = (h: string | string[] | undefined) => (Array.isArray(h) ? h[0] : h)?.split(',')[0]?.trim()
  if (first(req.headers['x-forwarded-proto']) !== 'https') return undefined
  const prefix = (first(req.headers['x-forwarded-prefix']) ?? '').replace(/\/+$/, '')
  return `https://${req.headers.host ?? 'localhost'}${prefix}`
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '')
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&#34;').replace(/'/g, '&#39;')
}

// node:crypto costs a process ~1.4 MB of private memory and ~1 MB of code pages, and time to
// load: taken on first use only
const nodeCrypto = (): typeof import('node:crypto') => process.getBuiltinModule('node:crypto')

function randomRunId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
  const bytes = nodeCrypto().randomBytes(64)
  let s = ''
  for (const b of bytes) {
    if (b >= 248) continue // keep the distribution uniform
    s += alphabet[b % 62]
    if (s.length === 32) break
  }
  return s.padEnd(32, 'a')
}

function partitionColumns(p: PartitionRow): Record<string, unknown> {
  return {
    reference: p.reference,
    computer_reference: p.computerReference,
    slap_state: p.slapState,
    software_release: p.softwareRelease,
    xml: p.xml,
    connection_xml: p.connectionXml,
    slave_instance_list: p.slaveInstanceList,
    software_type: p.softwareType,
    partition_reference: p.partitionReference,
    requested_by: p.requestedBy,
    requested_state: p.requestedState,
    timestamp: p.timestamp,
  }
}

function serviceDocument(
  title: string,
  state: string,
  xml: string | null,
  connectionXml: string | null,
  sr: string | null,
  type: string | null,
  rootSlave: number,
): unknown {
  const f = (key: string, def: unknown, kind = 'StringField') => ({ type: kind, key: `field_${key}`, default: def })
  return {
    _embedded: {
      _view: {
        form_id: { type: 'StringField', key: 'form_id', default: 'InstanceTree_viewAsHateoas' },
        my_reference: f('my_reference', title),
        my_slap_state: f('my_slap_state', state),
        my_text_content: f('my_text_content', xml),
        my_connection_parameter_list: f('my_connection_parameter_list', connectionXml),
        my_url_string: f('my_url_string', sr),
        my_source_reference: f('my_source_reference', type),
        my_root_slave: f('my_root_slave', rootSlave, 'IntegerField'),
      },
    },
    _links: { type: { name: 'Instance Tree' } },
  }
}

const APACHE_FRONTEND = 'http://git.erp5.org/gitweb/slapos.git/blob_plain/HEAD:/software/apache-frontend/software.cfg'
const KVM_FRONTEND = 'http://git.erp5.org/gitweb/slapos.git/blob_plain/refs/tags/slapos-0.92:/software/kvm/software.cfg'

/**
 * The two "fake frontend" answers of the original for well-known frontend SRs (proxy.md §4.2).
 * `httpsBase` is the proxy's own URL when it was reached over HTTPS: the browser then gets
 * the site through the proxy's /http_proxy/ (no mixed content), under the proxy's domain.
 */
function frontendBypass(r: InstanceRequest, httpsBase: string | undefined): SlapObject | undefined {
  if (r.softwareRelease === APACHE_FRONTEND && ['', 'RootSoftwareInstance', 'default'].includes(r.softwareType) && typeof r.parameters.url === 'string') {
    const url = r.parameters.url
    let target: URL | undefined
    try {
      target = new URL(url)
    } catch {
      target = undefined
    }
    const viaProxy = httpsBase !== undefined && target !== undefined && (target.protocol === 'http:' || target.protocol === 'https:')
    return new SlapObject('ComputerPartition', ['', `Fake frontend for ${url}`], {
      slap_computer_id: '',
      slap_computer_partition_id: '',
      _parameter_dict: {},
      _connection_dict: viaProxy ? { secure_access: httpProxyUrl(httpsBase, target!), domain: new URL(httpsBase).host } : { secure_access: url, domain: target?.host ?? '' },
    })
  }
  if (r.softwareRelease === KVM_FRONTEND && r.softwareType === 'frontend' && r.parameters.host !== undefined && r.parameters.port !== undefined) {
    let host = String(r.parameters.host)
    if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`
    const port = r.parameters.port
    return new SlapObject('ComputerPartition', ['', `Fake KVM VNC frontend for ${String(r.parameters.url ?? host)}`], {
      slap_computer_id: '',
      slap_computer_partition_id: '',
      _parameter_dict: {},
      _connection_dict: { url: `https://${host}:${String(port)}/`, domainname: host, port, path: '/' },
    })
  }
  return undefined
}

/**
 * Local software-release root (proxy.md §7). The `config` row remembers the root the stored
 * local-path URLs were written under (no row = `/`). When the configured root differs (as
 * written, like the original), the new root is stored; unless one root contains the other,
 * the database is dumped to `<database>-backup-<ISO time>.sql` and every `software.url` and
 * `partition.software_release` that is a path under the old root moves to the same place
 * under the new root - except a path whose old file exists while the new one does not.
 * All of it in one transaction: a backup that cannot be written changes nothing. Called
 * once at start-up, after the schema migration (the original does both on the first request).
 */
export function applyLocalSoftwareReleaseRoot(db: ProxyDb, root: string, log: Logger, now: Date = new Date(), fs = { isFile, write: writeFileAtomic }): void {
  const oldRoot = db.getConfig('local_software_release_root') ?? '/'
  if (oldRoot === root) return
  // like os.path.relpath: both made absolute (from the current directory) and normalised
  const up = pathRelative(pathResolve(oldRoot), pathResolve(root)).split('/')
  db.transaction(() => {
    db.setConfig('local_software_release_root', root)
    if (up[0] !== '..') {
      log.info(`Do not rebase any URLs because ${root} is a subpath of ${oldRoot}`)
      return
    }
    if (up.every((s) => s === '..')) {
      log.info(`Do not rebase any URLs because ${root} is a superpath of ${oldRoot}`)
      return
    }
    const backup = `${db.path}-backup-${isoLocal(now)}.sql`
    log.info(`Backuping database to ${backup}`)
    try {
      fs.write(backup, db.dump())
    } catch (err) {
      throw new ProxyDbError(
        // the reason without the path node appends (", open '<backup>.tmp'")
        `cannot write the backup ${backup} before rebasing software release URLs: ${(err as Error).message.replace(/, \w+ '.*'$/, '')}`,
        'check that the directory of database_uri is writable and has room; nothing was changed',
      )
    }
    log.info('Rebase URLs on local software release root path')
    log.info(`Old root path: ${oldRoot}`)
    log.info(`New root path: ${root}`)
    const absOld = pathResolve(oldRoot)
    db.rewriteSoftwareUrls((url) => {
      log.debug(`Examining URL ${url}`)
      if (url === '' || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(url)) {
        log.debug('  Do not rebase because it is not a path')
        return null
      }
      const rel = pathRelative(absOld, pathResolve(url)) || '.'
      if (rel === '..' || rel.startsWith('../')) {
        log.debug(`  Do not rebase because it is not a subpath of ${oldRoot}`)
        return null
      }
      const to = root.endsWith('/') ? `${root}${rel}` : `${root}/${rel}`
      if (!fs.isFile(to) && fs.isFile(url)) {
        log.debug(`  Do not rebase because it refers to an existing file but ${to} does not`)
        return null
      }
      log.debug(`  Migrate to rebased URL ${to}`)
      return to
    })
  })
}

function isFile(path: string): boolean {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false
  } catch {
    return false
  }
}

function writeFileAtomic(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text)
  renameSync(`${path}.tmp`, path)
}

function isoLocal(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}000`
}

/** Does any text of this value (keys included) hold a NUL? No XML document can carry one. */
function hasNul(v: PyValue, depth = 0): boolean {
  if (depth > 200) return false
  if (typeof v === 'string') return v.includes('\0')
  if (Array.isArray(v)) return v.some((x) => hasNul(x, depth + 1))
  if (isPyDict(v)) return Object.entries(v).some(([k, x]) => k.includes('\0') || hasNul(x, depth + 1))
  return false
}
