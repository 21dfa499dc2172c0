// The local master's JSON-RPC API, "slapos master api" 0.0.3 (proxy.md §10.1): `POST
// /slapos.<verb>.<version>.<name>` with a JSON body, answered in JSON; used by the panel and
// by JSON clients. proxy-server.ts routes `/slapos.*` here and lends its request, free and
// bang logic through JsonRpcHost, so both APIs act alike on the same database (proxy-db.ts).
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Logger } from './log.ts'
import { hasControl, idProblem, quote } from './names.ts'
import type { PartitionRow, ProxyDb, SlaveRow } from './proxy-db.ts'
import type { InstanceRequest } from './proxy-types.ts'
import { instanceXml, isPyDict, loads, parseInstanceXml, pyJsonDumps, pyRepr, PyFloat, PyMap, SlapObject, Tuple, type PyDict, type PyValue } from './slap-protocol.ts'

/** What the API needs from the master that serves it. */
export interface JsonRpcHost {
  db: ProxyDb
  log: Logger
  /** the request body, or undefined when it is over the size limit */
  readBody(req: IncomingMessage): Promise<string | undefined>
  /** deepest nesting of a request's JSON document */
  maxDepth: number
  /** seconds since the epoch, strictly increasing */
  now(): number
  /**
   * A person's instance request, as requestComputerPartition does it (allocation, shared
   * instances, frontend bypass, multimaster). `encode` runs inside the write transaction
   * when the instance is here. No partition → JsonRpcError 403.
   */
  requestInstance<T>(r: InstanceRequest, httpReq: IncomingMessage, encode: (answer: SlapObject) => T): Promise<T>
  /** destroyedComputerPartition (proxy.md §5.1); `message` says why it was not freed */
  freePartition(partitionId: string, computerId: string): { freed: boolean; message: string }
  /** softwareInstanceBang: new timestamp for the whole tree of this instance */
  bangTree(p: PartitionRow): void
}

/** An answer `{"status", "type", "title"}` with that HTTP status. */
export class JsonRpcError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

export class JsonRpcApi {
  constructor(private readonly host: JsonRpcHost) {}

  /** Answers `POST /<name>`; `name` starts with `slapos.`. */
  handle(req: IncomingMessage, res: ServerResponse, name: string): void {
    const head = req.method === 'HEAD'
    const route = Object.hasOwn(ROUTES, name) ? ROUTES[name] : undefined
    const refuse = (status: number, title: string, headers: Record<string, string> = {}) => {
      req.resume()
      sendError(res, status, title, head, headers)
    }
    if (!route) return refuse(404, `/${name} is not a method of this API`)
    if (req.method !== 'POST') return refuse(405, 'The method is not allowed for the requested URL.', { Allow: 'POST' })
    if (!acceptsJson(req.headers.accept)) return refuse(406, NOT_ACCEPTABLE)
    if (!isJsonType(req.headers['content-type'])) return refuse(415, "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.")
    this.host
      .readBody(req)
      .then(async (text) => {
        if (text === undefined) throw new JsonRpcError(413, 'The data value transmitted exceeds the capacity limit.')
        let body: unknown
        try {
          body = JSON.parse(text)
        } catch (err) {
          throw new JsonRpcError(400, `Failed to decode JSON object: ${(err as Error).message}`)
        }
        return this.call(name, body, req)
      })
      .then(
        (doc) => sendJson(res, 200, doc, head),
        (err: unknown) => {
          if (err instanceof JsonRpcError) {
            this.host.log.warning(`POST /${name}: ${err.status} ${err.message}`)
            return sendError(res, err.status, err.message, head)
          }
          this.host.log.error(`POST /${name}: ${err instanceof Error ? err.message : String(err)}`)
          if (err instanceof Error && err.stack) this.host.log.debug(err.stack)
          sendError(res, 500, 'Internal server error', head)
        },
      )
  }

  /**
   * One call of a route with a parsed body, checked as `handle` checks it (the panel's checked
   * request goes through here); refused with a JsonRpcError.
   */
  async call(name: string, body: unknown, req: IncomingMessage): Promise<unknown> {
    const route = this.checked(name, body)
    const doc = await route.run({ host: this.host, body: body as Body, req })
    return checkOutput(doc, route.output)
  }

  /**
   * The checks of `call` that read nothing (nesting, NUL, the route's input schema, identifiers):
   * the panel runs them before its own, costlier, schema check. Refused with a JsonRpcError.
   */
  precheck(name: string, body: unknown): void {
    this.checked(name, body)
  }

  private checked(name: string, body: unknown): Route {
    const route = Object.hasOwn(ROUTES, name) ? ROUTES[name] : undefined
    if (!route) throw new JsonRpcError(404, `/${name} is not a method of this API`)
    const hostile = documentProblem(body, this.host.maxDepth)
    if (hostile !== undefined) throw new JsonRpcError(400, hostile)
    const invalid = schemaError(body, route.input)
    if (invalid !== undefined) throw new JsonRpcError(400, invalid)
    const unsafe = identifierProblem(body as Body)
    if (unsafe !== undefined) throw new JsonRpcError(400, unsafe)
    return route
  }
}

/** `<title>___<requested_by>___<0|1>`: how this API names an instance (1 = shared). */
export function instanceGuid(title: string | null, requestedBy: string | null, shared: boolean): string {
  return `${title ?? 'None'}___${requestedBy ?? 'None'}___${shared ? 1 : 0}`
}

/** The parts of an instance guid, like the original's `split('___', 2)` + `bool(int(...))`; undefined if malformed. */
export function parseInstanceGuid(guid: string): { title: string; requestedBy: string; shared: boolean } | undefined {
  const parts = pySplit(guid, '___', 2)
  if (parts.length < 3) return undefined
  const flag = (parts[2] ?? '').trim()
  if (!/^[+-]?\d+(?:_\d+)*$/.test(flag)) return undefined
  return { title: parts[0] ?? '', requestedBy: parts[1] ?? '', shared: /[1-9]/.test(flag) }
}

// --- internal ---

/**
 * A document nested deeper than `maxDepth`, or with a NUL anywhere (no XML can carry it to a
 * node): refused before anything reads it. Iterative, so that depth costs no stack.
 */
function documentProblem(doc: unknown, maxDepth: number): string | undefined {
  const stack: [unknown, number][] = [[doc, 0]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!
    if (typeof v === 'string') {
      if (v.includes('\0')) return 'the document has a NUL character'
    } else if (v !== null && typeof v === 'object') {
      if (depth >= maxDepth) return `the document is nested deeper than ${maxDepth} levels (max_document_depth)`
      if (Array.isArray(v)) for (const x of v) stack.push([x, depth + 1])
      else
        for (const [k, x] of Object.entries(v)) {
          if (k.includes('\0')) return 'the document has a NUL character'
          stack.push([x, depth + 1])
        }
    }
  }
  return undefined
}

/** Identifiers that name paths on nodes are one safe path component; URLs have no control characters. */
function identifierProblem(body: Body): string | undefined {
  for (const key of ['computer_guid', 'compute_partition_id']) {
    const v = body[key]
    if (typeof v === 'string') {
      const problem = idProblem(key, v)
      if (problem) return problem
    }
  }
  const list = body.compute_partition_list
  if (Array.isArray(list)) {
    for (const p of list as { partition_id?: unknown }[]) {
      const problem = idProblem('partition_id', p.partition_id)
      if (problem) return problem
    }
  }
  const url = body.software_release_uri
  if (typeof url === 'string' && hasControl(url)) return `software_release_uri ${quote(url)} has control characters`
  return undefined
}

type Body = Record<string, unknown>
type Json = string | number | boolean | null | Json[] | { [key: string]: Json }

interface Call {
  host: JsonRpcHost
  body: Body
  req: IncomingMessage
}

interface Route {
  input: Schema
  /** checked before answering: what does not match is a 500, as in the original */
  output?: Schema
  run(c: Call): Json | Promise<Json>
}

/** The subset of JSON Schema the API definition uses; errors are worded like Python jsonschema's. */
interface Schema {
  type?: 'string' | 'boolean' | 'integer' | 'number' | 'object' | 'array'
  enum?: readonly string[]
  const?: string
  maxLength?: number
  items?: Schema
  properties?: Record<string, Schema>
  required?: readonly string[]
  /** false: no other keys; a schema: what other keys hold; absent: anything */
  additionalProperties?: false | Schema
}

const STRING: Schema = { type: 'string' }
const OBJECT: Schema = { type: 'object' }
const INSTANCE_STATES = ['started', 'stopped', 'destroyed'] as const
const SOFTWARE_STATES = ['available', 'destroyed'] as const
const NOT_ACCEPTABLE =
  'The resource identified by the request is only capable of generating response entities which have content characteristics not acceptable according to the accept headers sent in the request.'

/** An input object: these keys and no other (every input of the API is so). */
function input(properties: Record<string, Schema>, required: readonly string[] = []): Schema {
  return { type: 'object', required, additionalProperties: false, properties }
}

const COMPUTER = input({ computer_guid: STRING }, ['computer_guid'])
const INSTANCE = input({ instance_guid: STRING }, ['instance_guid'])
const NOTHING = input({})
const SUCCESS: Schema = { type: 'object', required: ['title', 'type'], additionalProperties: false, properties: { type: { type: 'string', const: 'success' }, title: STRING } }
const CERTIFICATE: Schema = { type: 'object', required: ['key', 'certificate'], additionalProperties: false, properties: { key: STRING, certificate: STRING } }
const IP_LIST: Schema = { type: 'array', items: { type: 'array', items: STRING } }
const INSTANCE_DOCUMENT: Schema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    title: STRING,
    instance_guid: STRING,
    software_release_uri: STRING,
    software_type: STRING,
    state: { type: 'string', enum: INSTANCE_STATES },
    connection_parameters: OBJECT,
    parameters: OBJECT,
    shared: { type: 'boolean' },
    root_instance_title: STRING,
    ip_list: IP_LIST,
    full_ip_list: IP_LIST,
    sla_parameters: OBJECT,
    computer_guid: STRING,
    compute_partition_id: STRING,
    processing_timestamp: { type: 'integer' },
    access_status_message: STRING,
  },
}

function resultList(item: Record<string, Schema>): Schema {
  return { type: 'object', required: ['result_list'], additionalProperties: false, properties: { result_list: { type: 'array', items: { type: 'object', additionalProperties: false, properties: item } } } }
}

const success = (title: string): Json => ({ type: 'success', title })
const ignored: Route = { input: NOTHING, output: SUCCESS, run: () => success('Ignored') }
const ignoring = (schema: Schema): Route => ({ ...ignored, input: schema })
const noCertificate = (schema: Schema): Route => ({ input: schema, output: CERTIFICATE, run: () => ({ key: '', certificate: '' }) })

const ROUTES: Record<string, Route> = {
  'slapos.remove.v0.compute_node_certificate': ignoring(COMPUTER),
  'slapos.post.v0.compute_node_usage': ignoring(input({ computer_guid: STRING, tioxml: STRING }, ['computer_guid', 'tioxml'])),
  'slapos.put.v0.compute_node_bang': ignoring(input({ message: STRING, computer_guid: STRING }, ['computer_guid', 'message'])),
  'slapos.put.v0.software_instance_error': ignoring(input({ message: STRING, instance_guid: STRING }, ['instance_guid', 'message'])),
  'slapos.put.v0.software_installation_error': ignoring(
    input({ software_release_uri: STRING, computer_guid: STRING, message: STRING }, ['software_release_uri', 'computer_guid', 'message']),
  ),
  // the proxy has no certificates, but clients ask for them
  'slapos.post.v0.compute_node_certificate': noCertificate(COMPUTER),
  'slapos.get.v0.software_instance_certificate': noCertificate(INSTANCE),
  'slapos.get.v0.compute_node_status': { input: COMPUTER, run: () => ({ text: 'Unknown (not implemented)' }) },
  'slapos.get.v0.hateoas_url': { input: NOTHING, output: input({ hateoas_url: STRING }, ['hateoas_url']), run: ({ req }) => ({ hateoas_url: `${externalBase(req)}/hateoas/` }) },

  'slapos.post.v0.software_installation': {
    input: input(
      { software_release_uri: STRING, computer_guid: STRING, state: { type: 'string', enum: SOFTWARE_STATES } },
      ['software_release_uri', 'computer_guid'],
    ),
    output: SUCCESS,
    run({ host, body }) {
      const url = body.software_release_uri as string
      const state = (body.state as string | undefined) ?? 'available'
      host.db.supplySoftware(url, body.computer_guid as string, state)
      return success(`Supplied ${url} to be ${state}`)
    },
  },

  'slapos.put.v0.software_installation_reported_state': {
    input: input(
      { software_release_uri: STRING, computer_guid: STRING, reported_state: { type: 'string', enum: ['available', 'destroyed', 'building'] } },
      ['software_release_uri', 'computer_guid', 'reported_state'],
    ),
    output: SUCCESS,
    run({ host, body }) {
      if (body.reported_state !== 'destroyed') return success('Ignored')
      host.db.deleteSoftware(body.software_release_uri as string, body.computer_guid as string)
      return success('Destroyed')
    },
  },

  'slapos.allDocs.v0.compute_node_software_installation_list': {
    input: COMPUTER,
    output: resultList({ software_release_uri: STRING, state: { type: 'string', enum: SOFTWARE_STATES } }),
    run({ host, body }) {
      const computer = registeredComputer(host, body)
      return { result_list: host.db.listSoftware(computer).map((s) => ({ software_release_uri: s.url, state: s.requestedState })) }
    },
  },

  'slapos.allDocs.v0.compute_node_instance_list': {
    input: COMPUTER,
    output: resultList({ title: STRING, instance_guid: STRING, state: { type: 'string', enum: INSTANCE_STATES }, compute_partition_id: STRING, software_release_uri: STRING }),
    run({ host, body }) {
      const computer = registeredComputer(host, body)
      const busy = host.db.listPartitions(computer).filter((p) => p.slapState === 'busy')
      return {
        result_list: busy.map((p) => ({
          title: p.partitionReference,
          instance_guid: instanceGuid(p.partitionReference, p.requestedBy, false),
          state: p.requestedState,
          compute_partition_id: p.reference,
          software_release_uri: p.softwareRelease,
        })),
      }
    },
  },

  'slapos.allDocs.WIP.compute_node_list': {
    input: NOTHING,
    output: resultList({ computer_guid: STRING }),
    run: ({ host }) => ({ result_list: host.db.listComputers().map((c) => ({ computer_guid: c.reference })) }),
  },

  'slapos.put.v0.compute_node_format': {
    input: input(
      {
        computer_guid: STRING,
        compute_partition_list: {
          type: 'array',
          items: {
            type: 'object',
            required: ['partition_id'],
            properties: {
              ip_list: {
                type: 'array',
                items: {
                  type: 'object',
                  required: ['ip-address'],
                  properties: { 'gateway-ip-address': STRING, 'network-address': STRING, netmask: STRING, 'ip-address': STRING, 'network-interface': STRING },
                },
              },
              partition_id: STRING,
            },
          },
        },
      },
      ['compute_partition_list', 'computer_guid'],
    ),
    output: SUCCESS,
    run({ host, body }) {
      const list = body.compute_partition_list as { partition_id: string; ip_list?: Record<string, string>[] }[]
      // Where the original fails (500) on an address without interface or netmask, or a
      // partition without ip_list, we take the partition id, no netmask, no address.
      const partitions = list.map((p) => ({
        id: p.partition_id,
        addresses: (p.ip_list ?? []).map((ip) => ({ iface: ip['network-interface'] ?? p.partition_id, address: ip['ip-address'] ?? '', netmask: ip.netmask ?? null })),
      }))
      host.db.formatComputer(body.computer_guid as string, null, null, partitions)
      return success('Formatted')
    },
  },

  'slapos.post.v0.software_instance': {
    input: input(
      {
        software_release_uri: STRING,
        parameters: OBJECT,
        title: { type: 'string', maxLength: 200 },
        state: { type: 'string', enum: INSTANCE_STATES },
        sla_parameters: {
          type: 'object',
          additionalProperties: STRING,
          properties: { project_guid: STRING, computer_guid: STRING, instance_guid: STRING, network_guid: STRING, retention_delay: { type: 'number' } },
        },
        software_type: STRING,
        shared: { type: 'boolean' },
      },
      ['title', 'software_release_uri', 'software_type'],
    ),
    output: INSTANCE_DOCUMENT,
    run({ host, body, req }) {
      const title = body.title as string
      const parameters = (body.parameters ?? {}) as PyDict
      const state = (body.state as string | undefined) ?? 'started'
      const shared = (body.shared as boolean | undefined) ?? false
      const r: InstanceRequest = {
        softwareRelease: body.software_release_uri as string,
        softwareType: body.software_type as string,
        title,
        parameters: { ...parameters },
        filter: { ...((body.sla_parameters ?? {}) as PyDict) },
        state,
        shared,
        requestedBy: '',
      }
      // checked inside the write transaction: an answer that cannot be given is not written
      return host.requestInstance(r, req, (answer) => checkOutput(requestedDocument(answer, { title, shared, state, parameters, body }), INSTANCE_DOCUMENT))
    },
  },

  'slapos.get.v0.software_instance': {
    input: INSTANCE,
    output: INSTANCE_DOCUMENT,
    run({ host, body }) {
      const guid = body.instance_guid as string
      const id = knownGuid(guid)
      if (id.shared) {
        const reference = `${id.requestedBy}_${id.title}`
        const slave = host.db.listSlaves().find((s) => s.reference === reference && s.askedBy === id.requestedBy)
        if (!slave) throw new JsonRpcError(403, `No shared instance ${guid} found.`)
        return sharedDocument(host, slave, id.title, guid)
      }
      return partitionDocument(host, allocated(host, id, guid))
    },
  },

  'slapos.get.v0.compute_partition': {
    input: input({ computer_guid: STRING, compute_partition_id: STRING }, ['computer_guid', 'compute_partition_id']),
    output: INSTANCE_DOCUMENT,
    run({ host, body }) {
      const id = body.compute_partition_id as string
      const p = host.db.getPartition(id, body.computer_guid as string)
      if (!p || !p.partitionReference) throw new JsonRpcError(403, `No instance on partition ${id} found.`)
      return partitionDocument(host, p)
    },
  },

  'slapos.allDocs.v0.instance_node_instance_list': {
    input: INSTANCE,
    output: resultList({
      software_release_uri: STRING,
      instance_guid: STRING,
      parameters: OBJECT,
      title: STRING,
      compute_partition_id: STRING,
      state: { type: 'string', enum: INSTANCE_STATES },
      software_type: STRING,
    }),
    run({ host, body }) {
      const guid = body.instance_guid as string
      const id = knownGuid(guid)
      const p = id.shared ? undefined : host.db.findInstance(id.title, id.requestedBy)
      if (!p) throw new JsonRpcError(403, `No software instance ${guid} found.`)
      const result_list = hostedEntries(p).map((entry) => {
        const reference = String(entry.slave_title)
        // the slave row knows who asked; the original splits the reference at its first '_'
        const askedBy = host.db.getSlave(reference, p.computerReference)?.askedBy ?? reference.slice(0, Math.max(0, reference.indexOf('_')))
        const title = reference.slice(askedBy.length + 1)
        return {
          title,
          instance_guid: instanceGuid(title, askedBy, true),
          software_type: toJson(entry.slap_software_type ?? null),
          // shared instances have no state of their own here
          state: 'started',
          parameters: sharedParameters(entry),
          compute_partition_id: p.reference,
        }
      })
      return { result_list }
    },
  },

  'slapos.get.v0.instance_tree': {
    input: input({ title: { type: 'string', maxLength: 200 } }, ['title']),
    output: INSTANCE_DOCUMENT,
    run({ host, body }) {
      const title = body.title as string
      // like the original, an empty title selects every root
      const roots = host.db.listRootInstances().filter((p) => !title || p.partitionReference === title)
      const shared = rootShared(host).filter((s) => !title || s.reference === `_${title}`)
      if (roots.length === 1 && shared.length === 0) return partitionDocument(host, roots[0]!)
      if (roots.length === 0 && shared.length === 1) return sharedDocument(host, shared[0]!, shared[0]!.reference.slice(1), title)
      throw new JsonRpcError(403, `No instance tree ${title} found.`)
    },
  },

  'slapos.allDocs.v0.instance_tree_list': {
    input: NOTHING,
    output: resultList({ title: STRING }),
    run({ host }) {
      const roots = host.db.listRootInstances().map((p) => ({ title: p.partitionReference }))
      // a destroyed shared instance keeps its row but left its host's list: not a tree any more
      const shared = rootShared(host)
        .filter((s) => hostedEntry(host, s) !== undefined)
        .map((s) => ({ title: s.reference.slice(1) }))
      return { result_list: [...roots, ...shared] }
    },
  },

  'slapos.put.v0.software_instance_reported_state': {
    input: input({ reported_state: { type: 'string', enum: ['started', 'destroyed', 'stopped'] }, instance_guid: STRING }, ['instance_guid', 'reported_state']),
    output: SUCCESS,
    run({ host, body }) {
      if (body.reported_state !== 'destroyed') return success('Ignored')
      const guid = body.instance_guid as string
      const id = knownGuid(guid)
      if (id.shared) return success('Ignored')
      const result = host.db.transaction(() => {
        const p = allocated(host, id, guid)
        return host.freePartition(p.reference, p.computerReference)
      })
      // refused after the commit: a root with members left has asked them to be destroyed
      if (!result.freed) throw new JsonRpcError(403, result.message)
      return success('Destroyed')
    },
  },

  'slapos.put.v0.software_instance_bang': {
    input: input({ message: STRING, instance_guid: STRING }, ['instance_guid', 'message']),
    output: SUCCESS,
    run({ host, body }) {
      const id = knownGuid(body.instance_guid as string)
      if (id.shared) throw new JsonRpcError(403, 'NotImplemented')
      host.db.transaction(() => {
        // an unknown instance is not an error here, as in the original
        const p = host.db.findInstance(id.title, id.requestedBy)
        if (p) host.bangTree(p)
      })
      return success('Bang handled')
    },
  },

  'slapos.put.v0.software_instance_title': {
    input: input({ instance_guid: STRING, title: { type: 'string', maxLength: 200 } }, ['instance_guid', 'title']),
    output: SUCCESS,
    run({ host, body }) {
      const id = knownGuid(body.instance_guid as string)
      if (id.shared) throw new JsonRpcError(403, 'NotImplemented')
      host.db.transaction(() => {
        const p = host.db.findInstance(id.title, id.requestedBy)
        // softwareInstanceRename: a root's tree follows its new title
        if (p) host.db.renameInstance(p.reference, p.computerReference, body.title as string)
      })
      return success('Renamed')
    },
  },

  'slapos.put.v0.software_instance_connection_parameter': {
    input: input({ connection_parameter_dict: OBJECT, instance_guid: STRING }, ['instance_guid', 'connection_parameter_dict']),
    output: SUCCESS,
    run({ host, body }) {
      const id = knownGuid(body.instance_guid as string)
      let xml: string
      try {
        xml = instanceXml(body.connection_parameter_dict as PyDict)
      } catch (err) {
        throw new JsonRpcError(400, `connection_parameter_dict: ${(err as Error).message}`)
      }
      host.db.transaction(() => {
        if (id.shared) {
          const reference = `${id.requestedBy}_${id.title}`
          const slave = host.db.listSlaves().find((s) => s.reference === reference && s.askedBy === id.requestedBy)
          if (slave) host.db.setSlaveConnection(reference, xml, slave.hostedBy ?? '')
        } else {
          const p = host.db.findInstance(id.title, id.requestedBy)
          if (p) host.db.updatePartition(p.reference, p.computerReference, { connectionXml: xml })
        }
      })
      return success('Updated')
    },
  },
}

/** The computer of the body, which must have been formatted (403 otherwise). */
function registeredComputer(host: JsonRpcHost, body: Body): string {
  const computer = body.computer_guid as string
  if (!host.db.getComputer(computer)) throw new JsonRpcError(403, `${computer} is not registered.`)
  return computer
}

function knownGuid(guid: string): { title: string; requestedBy: string; shared: boolean } {
  const id = parseInstanceGuid(guid)
  if (!id) throw new JsonRpcError(403, `instance_guid ${guid} not handled.`)
  return id
}

/** The partition of a regular instance (getAllocatedInstance), 403 if none. */
function allocated(host: JsonRpcHost, id: { title: string; requestedBy: string }, guid: string): PartitionRow {
  const p = host.db.findInstance(id.title, id.requestedBy)
  if (!p) throw new JsonRpcError(403, `No software instance ${guid} found.`)
  return p
}

/** Slave rows of shared instances requested by a person (the roots of their own trees). */
function rootShared(host: JsonRpcHost): SlaveRow[] {
  return host.db.listSlaves().filter((s) => s.askedBy === '')
}

/** The shared instances a partition hosts (its slave_instance_list). */
function hostedEntries(p: PartitionRow): PyDict[] {
  if (p.slaveInstanceList === null) return []
  const list = loads(p.slaveInstanceList)
  if (!Array.isArray(list)) throw new Error(`slave_instance_list of ${p.computerReference}/${p.reference} is not a list`)
  return list.filter(isPyDict)
}

function hostedEntry(host: JsonRpcHost, slave: SlaveRow): { partition: PartitionRow; entry: PyDict } | undefined {
  const partition = slave.hostedBy === null ? undefined : host.db.getPartition(slave.hostedBy, slave.computerReference)
  const entry = partition && hostedEntries(partition).find((e) => e.slave_title === slave.reference)
  return partition && entry ? { partition, entry } : undefined
}

/** An entry's parameters, without what the proxy added to it. */
function sharedParameters(entry: PyDict): Json {
  const out: PyDict = {}
  for (const [k, v] of Object.entries(entry)) if (k !== 'slave_title' && k !== 'slap_software_type' && k !== 'slave_reference') out[k] = v
  return toJson(out)
}

/** send_json_rpc_sql_partition: a regular instance from its partition row. */
function partitionDocument(host: JsonRpcHost, p: PartitionRow): Json {
  return {
    title: p.partitionReference,
    instance_guid: instanceGuid(p.partitionReference, p.requestedBy, false),
    software_release_uri: p.softwareRelease,
    software_type: p.softwareType,
    state: p.requestedState,
    connection_parameters: parseInstanceXml(p.connectionXml),
    parameters: parseInstanceXml(p.xml),
    shared: false,
    root_instance_title: p.requestedBy || p.partitionReference,
    ip_list: host.db.partitionAddresses(p.reference, p.computerReference).map((a) => [a.reference, a.address]),
    full_ip_list: [],
    sla_parameters: {},
    computer_guid: p.computerReference,
    compute_partition_id: p.reference,
    processing_timestamp: Math.trunc(p.timestamp ?? 0),
    access_status_message: '',
  }
}

/** send_json_rpc_sql_shared: a shared instance from its slave row and its host's list entry. */
function sharedDocument(host: JsonRpcHost, slave: SlaveRow, title: string, asked: string): Json {
  const hosted = hostedEntry(host, slave)
  if (!hosted) {
    const partition = slave.hostedBy === null ? undefined : host.db.getPartition(slave.hostedBy, slave.computerReference)
    // the original crashes (500) when the host no longer lists it (a destroyed shared instance)
    throw new JsonRpcError(403, partition ? `No shared instance ${asked} found.` : `No partition hosting ${asked} found.`)
  }
  const { partition, entry } = hosted
  return {
    title,
    instance_guid: instanceGuid(title, slave.askedBy, true),
    software_release_uri: partition.softwareRelease,
    software_type: partition.softwareType,
    // shared instances have no state of their own here
    state: 'started',
    connection_parameters: parseInstanceXml(slave.connectionXml),
    parameters: sharedParameters(entry),
    shared: true,
    root_instance_title: slave.askedBy || title,
    ip_list: [],
    full_ip_list: [],
    sla_parameters: {},
    computer_guid: partition.computerReference,
    compute_partition_id: partition.reference,
    processing_timestamp: Math.trunc(partition.timestamp ?? 0),
    access_status_message: '',
  }
}

/**
 * The answer to slapos.post.v0.software_instance from what the SLAP request logic gave: a
 * SoftwareInstance (allocated here: regular or shared), or a ComputerPartition (a frontend
 * bypass, or an instance of another master).
 */
function requestedDocument(
  answer: SlapObject,
  r: { title: string; shared: boolean; state: string; parameters: PyDict; body: Body },
): Json {
  const s = answer.state
  const here = answer.className === 'SoftwareInstance'
  const parameters = here ? { ...((s._parameter_dict ?? {}) as PyDict) } : r.parameters
  // the partition's timestamp travels as a parameter; shared instances have none
  const timestamp = here && !r.shared ? Math.trunc(Number(parameters.timestamp)) : 0
  if (here && !r.shared) delete parameters.timestamp
  return {
    title: r.title,
    instance_guid: instanceGuid(r.title, '', r.shared),
    software_release_uri: here ? toJson(s.slap_software_release_url ?? null) : (r.body.software_release_uri as string),
    software_type: here ? toJson(s.slap_software_type ?? null) : (r.body.software_type as string),
    state: here ? (r.shared ? 'started' : toJson(s._requested_state ?? null)) : r.state,
    connection_parameters: toJson(s._connection_dict ?? {}),
    parameters: toJson(parameters),
    shared: r.shared,
    root_instance_title: r.title,
    ip_list: here ? toJson(s.ip_list ?? []) : [],
    full_ip_list: [],
    sla_parameters: {},
    computer_guid: toJson(here ? (s.slap_computer_id ?? null) : (s._computer_id ?? answer.initArgs[0] ?? null)),
    compute_partition_id: toJson(here ? (s.slap_computer_partition_id ?? null) : (s._partition_id ?? answer.initArgs[1] ?? null)),
    processing_timestamp: Number.isFinite(timestamp) ? timestamp : 0,
    access_status_message: '',
  }
}

/** A value read from the database or another master, as Python's json.dumps would write it. */
function toJson(v: PyValue): Json {
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v
  if (typeof v === 'bigint') return Number(v)
  if (v instanceof PyFloat) return v.value
  if (v instanceof Tuple) return v.items.map(toJson)
  if (Array.isArray(v)) return v.map(toJson)
  if (v instanceof Set) return [...v].map(toJson)
  if (v instanceof PyMap) return Object.fromEntries(v.entries.map(([k, x]) => [typeof k === 'string' ? k : pyRepr(k), toJson(x)]))
  if (v instanceof SlapObject) throw new Error(`a ${v.className} cannot be written as JSON`)
  const out: { [key: string]: Json } = {}
  for (const [k, x] of Object.entries(v)) out[k] = toJson(x)
  return out
}

function checkOutput<T>(doc: T, schema: Schema | undefined): T {
  const invalid = schema && schemaError(doc, schema)
  if (invalid !== undefined) throw new JsonRpcError(500, invalid)
  return doc
}

/**
 * The error Python's jsonschema.validate would raise (its best_match: the shallowest, then
 * the first found), or undefined when the value matches.
 */
function schemaError(value: unknown, schema: Schema): string | undefined {
  const errors: { depth: number; message: string }[] = []
  collectErrors(value, schema, 0, errors)
  let best: { depth: number; message: string } | undefined
  for (const e of errors) if (!best || e.depth < best.depth) best = e
  return best?.message
}

function collectErrors(v: unknown, s: Schema, depth: number, out: { depth: number; message: string }[]): void {
  const fail = (message: string) => out.push({ depth, message })
  if (s.enum && !s.enum.includes(v as string)) fail(`${repr(v)} is not one of ${pyRepr([...s.enum])}`)
  if (s.const !== undefined && v !== s.const) fail(`${pyRepr(s.const)} was expected`)
  // the other keywords only apply to values of their own type
  if (s.type && !hasType(v, s.type)) return void fail(`${repr(v)} is not of type ${pyRepr(s.type)}`)
  if (typeof v === 'string' && s.maxLength !== undefined && [...v].length > s.maxLength) fail(`${repr(v)} is too long`)
  if (Array.isArray(v) && s.items) for (const x of v) collectErrors(x, s.items, depth + 1, out)
  if (!isObject(v)) return
  for (const k of s.required ?? []) if (!Object.hasOwn(v, k)) fail(`${pyRepr(k)} is a required property`)
  const extra = Object.keys(v).filter((k) => !s.properties || !Object.hasOwn(s.properties, k))
  if (s.additionalProperties === false && extra.length) {
    extra.sort()
    fail(`Additional properties are not allowed (${extra.map((k) => pyRepr(k)).join(', ')} ${extra.length === 1 ? 'was' : 'were'} unexpected)`)
  } else if (s.additionalProperties) {
    for (const k of extra) collectErrors(v[k], s.additionalProperties, depth + 1, out)
  }
  for (const [k, sub] of Object.entries(s.properties ?? {})) if (Object.hasOwn(v, k)) collectErrors(v[k], sub, depth + 1, out)
}

function hasType(v: unknown, type: NonNullable<Schema['type']>): boolean {
  switch (type) {
    case 'string':
      return typeof v === 'string'
    case 'boolean':
      return typeof v === 'boolean'
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v)
    case 'number':
      return typeof v === 'number'
    case 'array':
      return Array.isArray(v)
    case 'object':
      return isObject(v)
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Python repr() of a JSON value, for messages. */
function repr(v: unknown): string {
  return v === undefined ? 'None' : pyRepr(v as PyValue)
}

/** Python `s.split(sep, max)`. */
function pySplit(s: string, sep: string, max: number): string[] {
  const out: string[] = []
  let rest = s
  while (out.length < max) {
    const i = rest.indexOf(sep)
    if (i < 0) break
    out.push(rest.slice(0, i))
    rest = rest.slice(i + sep.length)
  }
  out.push(rest)
  return out
}

/** Like werkzeug's best_match(['application/json']): no Accept header, or one that allows JSON. */
function acceptsJson(header: string | undefined): boolean {
  if (header === undefined || header.trim() === '') return true
  for (const item of header.split(',')) {
    const [range = '', ...params] = item.split(';').map((x) => x.trim().toLowerCase())
    if (!range) continue
    const q = params.map((p) => /^q\s*=\s*([0-9.]+)$/.exec(p)?.[1]).find((x) => x !== undefined)
    if (q !== undefined && !(Number(q) > 0)) continue
    if (range === '*' || range === '*/*' || range === 'application/*' || range === 'application/json') return true
  }
  return false
}

/** `application/json` or `application/<something>+json`, as werkzeug's is_json (the panel's routes too). */
export function isJsonType(header: string | undefined): boolean {
  const type = (header ?? '').split(';')[0]?.trim().toLowerCase() ?? ''
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'))
}

/** `<scheme>://<Host><X-Forwarded-Prefix>` as the client reached us (one proxy hop, like the original). */
function externalBase(req: IncomingMessage): string {
  const first = (h: string | string[] | undefined) => (Array.isArray(h) ? h[0] : h)?.split(',')[0]?.trim()
  const proto = first(req.headers['x-forwarded-proto']) === 'https' ? 'https' : 'http'
  const prefix = (first(req.headers['x-forwarded-prefix']) ?? '').replace(/\/+$/, '')
  return `${proto}://${req.headers.host ?? 'localhost'}${prefix}`
}

/** werkzeug's names where they differ from node's */
const REASONS: Record<number, string> = { 413: 'Request Entity Too Large' }

/** An answer `{"status", "type", "title"}` (the panel's JSON routes answer their errors so too). */
export function sendError(res: ServerResponse, status: number, title: string, head: boolean, headers: Record<string, string> = {}): void {
  sendJson(res, status, { status, type: REASONS[status] ?? STATUS_CODES[status] ?? 'Unknown Error', title }, head, headers)
}

export function sendJson(res: ServerResponse, status: number, doc: unknown, head: boolean, headers: Record<string, string> = {}): void {
  sendJsonBytes(res, status, Buffer.from(pyJsonDumps(doc), 'utf8'), head, headers)
}

/** A JSON answer whose text is already made (the panel keeps the one of each schema). */
export function sendJsonBytes(res: ServerResponse, status: number, body: Buffer, head: boolean, headers: Record<string, string> = {}): void {
  res.writeHead(status, (REASONS[status] ?? STATUS_CODES[status] ?? '').toUpperCase(), {
    ...headers,
    'Content-Type': 'application/json',
    'Content-Length': String(body.length),
  })
  res.end(head ? undefined : body)
}
