// The only HTTP client of a SlapOS master (or of our proxy): one method per SLAP endpoint
// (spec slap-protocol.md §2), bodies form-encoded exactly as slapos.core's client does,
// answers decoded with the xml_marshaller codec. Used by the node, format and client commands.
import { readFileSync } from 'node:fs'
import { isIPv6 } from 'node:net'
import { AuthorizationError, ConfigError, ConnectionError, NotFoundError, ResourceNotReadyError, ServerError, SlapError } from './errors.ts'
import { dumps, isPyDict, loads, MarshalError, SlapObject, Tuple, type PyDict, type PyValue } from './slap-protocol.ts'

declare const SLAPOS_VERSION: string
const VERSION: string = typeof SLAPOS_VERSION === 'string' ? SLAPOS_VERSION : '0.0.0-dev'

export interface SlapClientOptions {
  /** `master_url`: http(s) URL; a bare IPv6 host gets its brackets */
  masterUrl: string
  /** TLS client key and certificate (PEM files), presented to an https master */
  keyFile?: string | undefined
  certFile?: string | undefined
  /** CA of the master: when given the server certificate is verified, else it is not (like slapos.core HEAD) */
  caFile?: string | undefined
  /** connect + answer timeout, default 60 s like `slap.initializeConnection` */
  timeoutMs?: number | undefined
}

// --- typed views of the marshalled objects (attribute names as on the wire, spec §4) ----

export interface SoftwareRelease {
  className: 'SoftwareRelease'
  _software_release: string
  _computer_guid: string | null
  /** `available` or `destroyed`; absent outside `_software_release_list` (means available) */
  _requested_state?: string
  _software_instance_list: PyValue[]
  raw: SlapObject
}

export interface ComputerPartition {
  className: 'ComputerPartition'
  _computer_id: string | null
  _partition_id: string | null
  /** the request dict of a not-yet-allocated placeholder, else null */
  _request_dict: PyValue
  _instance_guid?: string | null
  _requested_state?: string | null
  _need_modification?: number | boolean
  _access_status?: string | null
  /** normally a SoftwareRelease; a plain URL for multimaster-forwarded partitions */
  _software_release_document?: SoftwareRelease | string | null
  _parameter_dict?: PyDict | null
  _connection_dict?: PyDict | null
  raw: SlapObject
}

export interface Computer {
  className: 'Computer'
  _computer_id: string
  _software_release_list: SoftwareRelease[]
  _computer_partition_list: ComputerPartition[]
  raw: SlapObject
}

/** Answer of requestComputerPartition: a SoftwareInstance, or sometimes a ComputerPartition. */
export interface SoftwareInstance {
  className: 'SoftwareInstance' | 'ComputerPartition'
  slap_computer_id: string | null
  slap_computer_partition_id: string | null
  slap_software_release_url?: string
  slap_software_type?: string
  slap_server_url?: string
  ip_list: Array<[string, string]>
  _parameter_dict: PyDict | null
  _connection_dict: PyDict | null
  /** instance XML of the connection parameters, for clients < 1.0.1 (regular instances only) */
  connection_xml?: string | null
  _instance_guid?: string
  /** absent for shared instances */
  _requested_state?: string
  raw: SlapObject
}

export interface PartitionCertificate {
  certificate: string
  key: string
}

export interface RequestOptions {
  softwareRelease: string
  /** the instance title, unique within its requester */
  partitionReference: string
  /** null/undefined sends `default` like the original */
  softwareType?: string | null
  partitionParameterKw?: PyDict | null
  filterKw?: PyDict | null
  /** `started`, `stopped`, `destroyed`; null keeps the current state */
  state?: string | null
  shared?: boolean
  /** set both when the request comes from a partition (ComputerPartition.request) */
  computerId?: string
  partitionId?: string
}

/** A form body or query: ordered pairs, because the field order is part of the bytes. */
export type Fields = Array<[string, string]>

/** Raw answer of an endpoint whose body is plain text or not decoded. */
export interface RawAnswer {
  status: number
  body: string
}

export class SlapClient {
  readonly masterUrl: string
  readonly timeoutMs: number
  private readonly opts: SlapClientOptions
  private transport: Promise<Transport> | undefined

  constructor(opts: SlapClientOptions) {
    this.opts = opts
    this.masterUrl = normalizeMasterUrl(opts.masterUrl)
    this.timeoutMs = opts.timeoutMs ?? 60_000
  }

  // --- node-side reads (GET) ---

  /** The computer with its software releases and partitions (falls back to the legacy name on 404). */
  async getFullComputerInformation(computerId: string): Promise<Computer> {
    if (!computerId) throw new NotFoundError('getFullComputerInformation: the computer id is empty')
    let body: string
    try {
      body = await this.get('getFullComputerInformation', [['computer_id', computerId]])
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e
      body = await this.get('getComputerInformation', [['computer_id', computerId]])
    }
    return asComputer(decode(body, 'getFullComputerInformation'))
  }

  async getComputerInformation(computerId: string): Promise<Computer> {
    return asComputer(decode(await this.get('getComputerInformation', [['computer_id', computerId]]), 'getComputerInformation'))
  }

  async registerComputerPartition(computerId: string, partitionId: string): Promise<ComputerPartition> {
    if (!computerId || !partitionId) throw new NotFoundError('registerComputerPartition: computer id and partition id are required')
    const body = await this.get('registerComputerPartition', [
      ['computer_reference', computerId],
      ['computer_partition_reference', partitionId],
    ])
    return asComputerPartition(decode(body, 'registerComputerPartition'))
  }

  async getComputerPartitionCertificate(computerId: string, partitionId: string): Promise<PartitionCertificate> {
    const v = decode(await this.get('getComputerPartitionCertificate', partitionQuery(computerId, partitionId)), 'getComputerPartitionCertificate')
    if (!isPyDict(v) || typeof v.certificate !== 'string' || typeof v.key !== 'string') {
      throw new MarshalError('getComputerPartitionCertificate: expected a dict with certificate and key')
    }
    return { certificate: v.certificate, key: v.key }
  }

  async getComputerStatus(computerId: string): Promise<PyValue> {
    return decode(await this.get('getComputerStatus', [['computer_id', computerId]]), 'getComputerStatus')
  }

  async getComputerPartitionStatus(computerId: string, partitionId: string): Promise<PyValue> {
    return decode(await this.get('getComputerPartitionStatus', partitionQuery(computerId, partitionId)), 'getComputerPartitionStatus')
  }

  async getHostingSubscriptionIpList(computerId: string, partitionId: string): Promise<PyValue[]> {
    const v = decode(await this.get('getHostingSubscriptionIpList', partitionQuery(computerId, partitionId)), 'getHostingSubscriptionIpList')
    if (!Array.isArray(v)) throw new MarshalError('getHostingSubscriptionIpList: expected a list')
    return v
  }

  /** URLs of a software product, best first; give exactly one of the two. */
  async getSoftwareReleaseListFromSoftwareProduct(productReference?: string | null, releaseUrl?: string | null): Promise<string[]> {
    if (!productReference === !releaseUrl) {
      throw new SlapError('getSoftwareReleaseListFromSoftwareProduct: give either a software product reference or a software release URL', { code: 'E_USAGE' })
    }
    const query: Fields = productReference ? [['software_product_reference', productReference]] : [['software_release_url', releaseUrl!]]
    const v = decode(await this.get('getSoftwareReleaseListFromSoftwareProduct', query), 'getSoftwareReleaseListFromSoftwareProduct')
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new MarshalError('getSoftwareReleaseListFromSoftwareProduct: expected a list of URLs')
    return v as string[]
  }

  /** URL of the master's HATEOAS (JSON) API, plain text. A proxy answers 404. */
  async getHateoasUrl(): Promise<string> {
    return (await this.get('getHateoasUrl', [])).trim()
  }

  // --- node-side writes (POST) ---

  /** Sends the computer description of `slapos node format` (a dict, or an already marshalled document). */
  async loadComputerConfigurationFromXML(computer: PyDict | string): Promise<string> {
    return this.post('loadComputerConfigurationFromXML', [['xml', typeof computer === 'string' ? computer : dumps(computer)]])
  }

  /** Usage report; like the original, nothing is sent for an empty report. */
  async useComputer(computerId: string, useString: string): Promise<string | undefined> {
    if (useString === '') return undefined
    return this.post('useComputer', [
      ['computer_id', computerId],
      ['use_string', useString],
    ])
  }

  async computerBang(computerId: string, message: string): Promise<string> {
    return this.post('computerBang', [
      ['computer_id', computerId],
      ['message', message],
    ])
  }

  async buildingSoftwareRelease(url: string, computerId: string): Promise<string> {
    return this.post('buildingSoftwareRelease', releaseFields(url, computerId))
  }

  async availableSoftwareRelease(url: string, computerId: string): Promise<string> {
    return this.post('availableSoftwareRelease', releaseFields(url, computerId))
  }

  async destroyedSoftwareRelease(url: string, computerId: string): Promise<string> {
    return this.post('destroyedSoftwareRelease', releaseFields(url, computerId))
  }

  async softwareReleaseError(url: string, computerId: string, errorLog: string): Promise<string> {
    return this.post('softwareReleaseError', [...releaseFields(url, computerId), ['error_log', errorLog]])
  }

  async startedComputerPartition(computerId: string, partitionId: string): Promise<string> {
    return this.post('startedComputerPartition', partitionQuery(computerId, partitionId))
  }

  async stoppedComputerPartition(computerId: string, partitionId: string): Promise<string> {
    return this.post('stoppedComputerPartition', partitionQuery(computerId, partitionId))
  }

  /** The master may free the partition; its text answer says so (`OK`) or why not. */
  async destroyedComputerPartition(computerId: string, partitionId: string): Promise<string> {
    return this.post('destroyedComputerPartition', partitionQuery(computerId, partitionId))
  }

  async softwareInstanceError(computerId: string, partitionId: string, errorLog: string, slaveReference?: string | null): Promise<string> {
    const fields: Fields = [...partitionQuery(computerId, partitionId), ['error_log', errorLog]]
    if (slaveReference) fields.push(['slave_reference', slaveReference])
    return this.post('softwareInstanceError', fields)
  }

  async softwareInstanceBang(computerId: string, partitionId: string, message: string): Promise<string> {
    return this.post('softwareInstanceBang', [...partitionQuery(computerId, partitionId), ['message', message]])
  }

  async softwareInstanceRename(computerId: string, partitionId: string, newName: string, slaveReference?: string | null): Promise<string> {
    const fields: Fields = [...partitionQuery(computerId, partitionId), ['new_name', newName]]
    if (slaveReference) fields.push(['slave_reference', slaveReference])
    return this.post('softwareInstanceRename', fields)
  }

  /** Publishes connection parameters of the partition's instance, or of a shared instance it hosts. */
  async setComputerPartitionConnectionXml(computerId: string, partitionId: string, params: PyDict, slaveReference?: string | null): Promise<string> {
    return this.post('setComputerPartitionConnectionXml', [
      ...partitionQuery(computerId, partitionId),
      ['connection_xml', dumps(params)],
      ['slave_reference', slaveReference ?? 'None'],
    ])
  }

  /** The instances this partition requested (real master only; a proxy answers 404). */
  async updateComputerPartitionRelatedInstanceList(computerId: string, partitionId: string, instanceReferenceList: string[]): Promise<string> {
    return this.post('updateComputerPartitionRelatedInstanceList', [
      ...partitionQuery(computerId, partitionId),
      ['instance_reference_xml', dumps(instanceReferenceList)],
    ])
  }

  async generateComputerCertificate(computerId: string): Promise<PyValue> {
    return decode(await this.post('generateComputerCertificate', [['computer_id', computerId]]), 'generateComputerCertificate')
  }

  async revokeComputerCertificate(computerId: string): Promise<string> {
    return this.post('revokeComputerCertificate', [['computer_id', computerId]])
  }

  // --- requests (node and client) ---

  /**
   * Requests an instance (or a shared instance). 408 (not allocated yet) throws
   * ResourceNotReadyError, 404 (cannot allocate) NotFoundError with the master's reason.
   */
  async requestComputerPartition(req: RequestOptions): Promise<SoftwareInstance> {
    const softwareType = req.softwareType ?? 'default'
    const parameters = dumps(checkDict(req.partitionParameterKw, 'partition_parameter_kw'))
    const filter = dumps(checkDict(req.filterKw, 'filter_kw'))
    const state = dumps(req.state ?? null)
    const shared = dumps(req.shared ?? false)
    // The two callers of the original build their dict in different orders.
    const fields: Fields =
      req.computerId !== undefined || req.partitionId !== undefined
        ? [
            ['computer_id', req.computerId ?? 'None'],
            ['computer_partition_id', req.partitionId ?? 'None'],
            ['software_release', req.softwareRelease],
            ['software_type', softwareType],
            ['partition_reference', req.partitionReference],
            ['shared_xml', shared],
            ['partition_parameter_xml', parameters],
            ['filter_xml', filter],
            ['state', state],
          ]
        : [
            ['software_release', req.softwareRelease],
            ['partition_reference', req.partitionReference],
            ['partition_parameter_xml', parameters],
            ['filter_xml', filter],
            ['software_type', softwareType],
            ['state', state],
            ['shared_xml', shared],
          ]
    return asSoftwareInstance(decode(await this.post('requestComputerPartition', fields), 'requestComputerPartition'))
  }

  /** Asks the master to install (`available`) or remove (`destroyed`) a software release on a computer. */
  async supplySupply(url: string, computerId: string | null, state: 'available' | 'destroyed' | string = 'available'): Promise<string> {
    try {
      return await this.post('supplySupply', [
        ['url', url],
        ['computer_id', computerId ?? 'None'],
        ['state', state],
      ])
    } catch (e) {
      if (e instanceof NotFoundError) throw new NotFoundError(`Computer ${computerId ?? 'None'} has not been found by SlapOS Master.`)
      throw e
    }
  }

  async requestComputer(computerTitle: string): Promise<Computer> {
    return asComputer(decode(await this.post('requestComputer', [['computer_title', computerTitle]]), 'requestComputer'))
  }

  // --- transport ---

  /** GET `<master>/<method>?<query>`; resolves with the body of a 2xx answer, else throws the mapped error. */
  async get(method: string, query: Fields): Promise<string> {
    const qs = formEncode(query)
    return this.request('GET', method, qs === '' ? endpointUrl(this.masterUrl, method) : `${endpointUrl(this.masterUrl, method)}?${qs}`, undefined)
  }

  /** POST a form to `<master>/<method>`; resolves with the body of a 2xx answer, else throws the mapped error. */
  async post(method: string, fields: Fields): Promise<string> {
    return this.request('POST', method, endpointUrl(this.masterUrl, method), formEncode(fields))
  }

  private async request(verb: 'GET' | 'POST', method: string, url: string, body: string | undefined): Promise<string> {
    this.transport ??= makeTransport(this.opts, this.timeoutMs)
    const send = await this.transport
    let answer: RawAnswer
    try {
      answer = await send(verb, url, body)
    } catch (e) {
      throw connectionError(e, this.masterUrl, this.timeoutMs, url.startsWith('https:'))
    }
    const { status } = answer
    if (status >= 200 && status < 300) return answer.body
    const reason = serverReason(answer.body)
    const where = `${method} on ${this.masterUrl}`
    if (status === 404) throw new NotFoundError(`${where}: not found (HTTP 404)${reason ? `: ${reason}` : ''}`)
    if (status === 408) throw new ResourceNotReadyError(`${where}: not ready yet (HTTP 408)${reason ? `: ${reason}` : ''}`)
    if (status === 401 || status === 403) throw new AuthorizationError(`${where}: refused (HTTP ${status})${reason ? `: ${reason}` : ''}`)
    throw new ServerError(`${where}: the master answered HTTP ${status}${reason ? `: ${reason}` : ''}`, status)
  }
}

// --- typed views ------------------------------------------------------------------------

/** Decodes a master answer; a plain-text answer where a document was expected is a MarshalError. */
export function decode(body: string, method: string): PyValue {
  try {
    return loads(body)
  } catch (e) {
    if (e instanceof MarshalError) throw new MarshalError(`${method}: the master's answer is not a marshalled document (${e.message})`)
    throw e
  }
}

function hasReleaseUrl(o: SlapObject): boolean {
  return typeof (o.state._software_release ?? o.initArgs[0] ?? null) === 'string'
}

export function asSoftwareRelease(v: PyValue): SoftwareRelease {
  const o = expectObject(v, 'SoftwareRelease')
  const s = o.state
  const url = s._software_release ?? o.initArgs[0] ?? null
  if (typeof url !== 'string') throw new MarshalError('SoftwareRelease without a URL')
  const view: SoftwareRelease = {
    className: 'SoftwareRelease',
    _software_release: url,
    _computer_guid: optString(s._computer_guid ?? o.initArgs[1] ?? null, '_computer_guid'),
    _software_instance_list: Array.isArray(s._software_instance_list) ? s._software_instance_list : [],
    raw: o,
  }
  if (s._requested_state !== undefined) view._requested_state = String(s._requested_state)
  return view
}

export function asComputerPartition(v: PyValue): ComputerPartition {
  const o = expectObject(v, 'ComputerPartition')
  const s = o.state
  const view: ComputerPartition = {
    className: 'ComputerPartition',
    _computer_id: optString(s._computer_id ?? o.initArgs[0] ?? null, '_computer_id'),
    _partition_id: optString(s._partition_id ?? o.initArgs[1] ?? null, '_partition_id'),
    _request_dict: s._request_dict ?? o.initArgs[2] ?? null,
    raw: o,
  }
  if ('_instance_guid' in s) view._instance_guid = optString(s._instance_guid!, '_instance_guid')
  if ('_requested_state' in s) view._requested_state = optString(s._requested_state!, '_requested_state')
  if ('_access_status' in s) view._access_status = optString(s._access_status!, '_access_status')
  if (typeof s._need_modification === 'number' || typeof s._need_modification === 'boolean') view._need_modification = s._need_modification
  if ('_parameter_dict' in s) view._parameter_dict = optDict(s._parameter_dict!, '_parameter_dict')
  if ('_connection_dict' in s) view._connection_dict = optDict(s._connection_dict!, '_connection_dict')
  if ('_software_release_document' in s) {
    const d = s._software_release_document!
    // a free partition's document may be a SoftwareRelease without a URL: no software release
    view._software_release_document = d instanceof SlapObject ? (hasReleaseUrl(d) ? asSoftwareRelease(d) : null) : optString(d, '_software_release_document')
  }
  return view
}

export function asComputer(v: PyValue): Computer {
  const o = expectObject(v, 'Computer')
  const s = o.state
  const id = s._computer_id ?? o.initArgs[0]
  if (typeof id !== 'string') throw new MarshalError('Computer without an id')
  const list = (x: PyValue | undefined, name: string): PyValue[] => {
    if (x === undefined || x === null) return []
    if (!Array.isArray(x)) throw new MarshalError(`Computer.${name} is not a list`)
    return x
  }
  return {
    className: 'Computer',
    _computer_id: id,
    _software_release_list: list(s._software_release_list, '_software_release_list').map(asSoftwareRelease),
    _computer_partition_list: list(s._computer_partition_list, '_computer_partition_list').map(asComputerPartition),
    raw: o,
  }
}

export function asSoftwareInstance(v: PyValue): SoftwareInstance {
  if (!(v instanceof SlapObject) || (v.className !== 'SoftwareInstance' && v.className !== 'ComputerPartition')) {
    throw new MarshalError(`expected a SoftwareInstance, got ${describe(v)}`)
  }
  const s = v.state
  const ipList = Array.isArray(s.ip_list) ? s.ip_list : []
  const view: SoftwareInstance = {
    className: v.className,
    slap_computer_id: optString(s.slap_computer_id ?? null, 'slap_computer_id'),
    slap_computer_partition_id: optString(s.slap_computer_partition_id ?? null, 'slap_computer_partition_id'),
    ip_list: ipList.map((t) => {
      const items = t instanceof Tuple ? t.items : Array.isArray(t) ? t : []
      return [String(items[0] ?? ''), String(items[1] ?? '')] as [string, string]
    }),
    _parameter_dict: optDict(s._parameter_dict ?? null, '_parameter_dict'),
    _connection_dict: optDict(s._connection_dict ?? null, '_connection_dict'),
    raw: v,
  }
  for (const k of ['slap_software_release_url', 'slap_software_type', 'slap_server_url', '_instance_guid', '_requested_state'] as const) {
    if (typeof s[k] === 'string') view[k] = s[k]
  }
  if ('connection_xml' in s) view.connection_xml = optString(s.connection_xml!, 'connection_xml')
  return view
}

/** Python-style `urlencode` (quote_plus): only `A-Za-z0-9_.-~` stay as they are, space is `+`. */
export function formEncode(fields: Fields): string {
  return fields.map(([k, v]) => `${quotePlus(k)}=${quotePlus(v)}`).join('&')
}

/** `master_url` as the original uses it: brackets around a bare IPv6 host, a final `/`. */
export function normalizeMasterUrl(url: string): string {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)([^/?#]*)(.*)$/.exec(url)
  let out = url
  // an IPv6 address has at least two colons: `host:port` never needs net's (costly) IPv6 check
  if (m && !m[2]!.startsWith('[') && m[2]!.indexOf(':') !== m[2]!.lastIndexOf(':')) {
    const netloc = m[2]!
    if (isIPv6(netloc)) out = `${m[1]}[${netloc}]${m[3]}`
    else {
      const i = netloc.lastIndexOf(':')
      if (isIPv6(netloc.slice(0, i))) out = `${m[1]}[${netloc.slice(0, i)}]:${netloc.slice(i + 1)}${m[3]}`
    }
  }
  try {
    const u = new URL(out)
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme')
  } catch {
    throw new ConfigError(`master_url ${JSON.stringify(url)} is not an http:// or https:// URL`, 'set master_url in the [slapos] section (e.g. http://127.0.0.1:8080)')
  }
  return out.endsWith('/') ? out : `${out}/`
}

// --- internal -------------------------------------------------------------------------

type Transport = (verb: 'GET' | 'POST', url: string, body: string | undefined) => Promise<RawAnswer>

/**
 * ofetch (imported here, lazily: it costs start-up time) drives a small fetch over
 * node:http/node:https, because Node's built-in fetch cannot present a client certificate.
 */
async function makeTransport(opts: SlapClientOptions, timeoutMs: number): Promise<Transport> {
  const { createFetch } = await import('ofetch')
  const tls = readTls(opts)
  // the time limit is nodeFetch's own (a timer per request): ofetch's would build an
  // AbortController and a signal for every request, which node:http then listens to
  const $fetch = createFetch({ fetch: nodeFetch(tls, timeoutMs), Headers: PlainHeaders as unknown as typeof globalThis.Headers })
  return async (verb, url, body) => {
    const headers: Record<string, string> = { Accept: '*/*', 'User-Agent': `slapos/${VERSION}` }
    if (verb === 'POST') headers['Content-Type'] = 'application/x-www-form-urlencoded'
    const res = await $fetch.raw<string, 'text'>(url, {
      method: verb,
      headers,
      body: verb === 'POST' ? (body ?? '') : undefined,
      responseType: 'text',
      ignoreResponseError: true,
      retry: false,
    })
    return { status: res.status, body: res._data ?? '' }
  }
}

interface TlsMaterial {
  key?: Buffer
  cert?: Buffer
  ca?: Buffer
}

function readTls(opts: SlapClientOptions): TlsMaterial {
  const read = (file: string | undefined, what: string): Buffer | undefined => {
    if (!file) return undefined
    try {
      return readFileSync(file)
    } catch (e) {
      throw new ConfigError(`cannot read the ${what} ${file}: ${(e as Error).message}`, 'check key_file, cert_file and master_ca_file in the configuration')
    }
  }
  if (!opts.masterUrl.startsWith('https')) return {}
  const tls: TlsMaterial = {}
  const key = read(opts.keyFile, 'key file')
  const cert = read(opts.certFile, 'certificate file')
  const ca = read(opts.caFile, 'CA file')
  if (key) tls.key = key
  if (cert) tls.cert = cert
  if (ca) tls.ca = ca
  return tls
}

/**
 * Headers and Response as far as ofetch uses them. Node's own classes come with its fetch
 * implementation, whose loading costs every node run tens of milliseconds of start-up.
 */
type HeaderInit = Iterable<[string, string]> | Record<string, string>

class PlainHeaders {
  private readonly map = new Map<string, string>()
  constructor(init?: HeaderInit) {
    if (!init) return
    const entries: Iterable<[string, string]> = Symbol.iterator in Object(init) ? (init as Iterable<[string, string]>) : Object.entries(init as Record<string, string>)
    for (const [k, v] of entries) this.set(k, v)
  }
  get(k: string): string | null {
    return this.map.get(k.toLowerCase()) ?? null
  }
  set(k: string, v: string): void {
    this.map.set(k.toLowerCase(), String(v))
  }
  has(k: string): boolean {
    return this.map.has(k.toLowerCase())
  }
  delete(k: string): void {
    this.map.delete(k.toLowerCase())
  }
  forEach(fn: (v: string, k: string) => void): void {
    for (const [k, v] of this.map) fn(v, k)
  }
  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.map.entries()
  }
}

function plainResponse(body: Buffer | null, status: number, statusText: string, headers: PlainHeaders): Response {
  const r = {
    status,
    statusText,
    ok: status >= 200 && status < 300,
    headers,
    body,
    text: async () => (body ? body.toString('utf8') : ''),
  }
  return r as unknown as Response
}

/**
 * The TLS server name (SNI) Node's agent would derive: the host name, none for an address or
 * plain http. Given explicitly, the agent skips its own derivation, whose IPv6 regular
 * expression costs 5-10 ms the first time a node command meets a host name.
 */
export function serverName(url: URL): string {
  if (url.protocol !== 'https:') return ''
  const h = url.hostname
  return h.startsWith('[') || /^\d{1,3}(\.\d{1,3}){3}$/.test(h) ? '' : h
}

/** The subset of fetch ofetch needs, over node:http(s) so that TLS client certificates work. */
function nodeFetch(tls: TlsMaterial, timeoutMs: number): typeof globalThis.fetch {
  return async (input, init) => {
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
    // loaded on first use; getBuiltinModule is synchronous, whereas import() of a builtin
    // from this bundle starts the ES module loader (tens of milliseconds)
    const mod = url.protocol === 'https:' ? process.getBuiltinModule('node:https') : process.getBuiltinModule('node:http')
    const headers: Record<string, string> = {}
    for (const [k, v] of new PlainHeaders(init?.headers as HeaderInit | undefined)) headers[k] = v
    const body = typeof init?.body === 'string' ? init.body : undefined
    if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body))
    // one time limit for the whole exchange, connection and the answer's last byte included
    let timer: NodeJS.Timeout | undefined
    let current: { destroy(e: Error): void } | undefined
    // A kept-alive connection the master closed while we were idle fails at once with
    // ECONNRESET on reuse: the request never reached the master, so it is sent again once
    // on a new connection (Node's documented pattern, req.reusedSocket).
    const attempt = (again: boolean): Promise<Response> => new Promise<Response>((resolve, reject) => {
      const req = mod.request(
        url,
        {
          method: init?.method ?? 'GET',
          headers,
          signal: init?.signal ?? undefined,
          servername: serverName(url),
          ...(url.protocol === 'https:' ? { ...tls, rejectUnauthorized: tls.ca !== undefined } : {}),
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('error', reject)
          res.on('end', () => {
            const status = res.statusCode ?? 0
            const h = new PlainHeaders()
            for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v)
            const nullBody = status === 204 || status === 304 || status < 200
            try {
              resolve(plainResponse(nullBody ? null : Buffer.concat(chunks), status < 200 || status > 599 ? 500 : status, res.statusMessage ?? '', h))
            } catch (e) {
              reject(e instanceof Error ? e : new Error(String(e)))
            }
          })
        },
      )
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (again && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) resolve(attempt(false))
        else reject(err)
      })
      current = req
      timer ??= setTimeout(() => {
        const err = new Error('The operation was aborted due to timeout')
        err.name = 'TimeoutError'
        current?.destroy(err)
      }, timeoutMs)
      req.end(body)
    })
    return attempt(true).finally(() => clearTimeout(timer))
  }
}

function connectionError(e: unknown, masterUrl: string, timeoutMs: number, https: boolean): SlapError {
  if (e instanceof SlapError) return e
  // ofetch wraps the transport error in a FetchError whose cause is the original one.
  let cause: unknown = e
  while (cause instanceof Error && cause.cause !== undefined && !('code' in cause && cause.code)) cause = cause.cause
  const err = cause as (Error & { code?: string }) | undefined
  const code = err?.code ?? ''
  const text = `${code} ${err?.message ?? String(e)}`
  const base = `Couldn't connect to the master at ${masterUrl}`
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError' || /timeout|aborted/i.test(text)) {
    return new ConnectionError(`${base}: no answer within ${Math.round(timeoutMs / 1000)} s`, e)
  }
  if (https && /CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE|BAD_CERTIFICATE|UNKNOWN_CA|ECONNRESET|socket hang up/i.test(text)) {
    return new ConnectionError(`${base}: the TLS handshake was refused (${err?.message ?? code}); the master wants a valid client certificate (cert_file and key_file)`, e)
  }
  if (https && /CERT|SSL|TLS|self.signed|verify/i.test(text)) {
    return new ConnectionError(`${base}: TLS error: ${err?.message ?? code}`, e)
  }
  return new ConnectionError(`${base}: ${err?.message ?? String(e)}`, e)
}

/** The message of a Flask/werkzeug error page (`<p>No free computer partition ...</p>`), if any. */
function serverReason(body: string): string {
  const trimmed = body.trim()
  if (trimmed === '') return ''
  const p = [...trimmed.matchAll(/<p>([\s\S]*?)<\/p>/g)].map((m) => m[1]!)
  const text = p.length > 0 ? p[p.length - 1]! : /^</.test(trimmed) ? '' : trimmed
  const plain = text
    .replace(/<[^>]*>/g, '')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#0?39;/g, "'")
    .replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ')
    .trim()
  return plain.length > 300 ? `${plain.slice(0, 300)}...` : plain
}

function quotePlus(s: string): string {
  return encodeURIComponent(s.toWellFormed())
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+')
}

function endpointUrl(base: string, method: string): string {
  return new URL(method, base).href
}

function partitionQuery(computerId: string, partitionId: string): Fields {
  return [
    ['computer_id', computerId],
    ['computer_partition_id', partitionId],
  ]
}

function releaseFields(url: string, computerId: string): Fields {
  return [
    ['url', url],
    ['computer_id', computerId],
  ]
}

function checkDict(d: PyDict | null | undefined, name: string): PyDict {
  if (d === null || d === undefined) return {}
  if (!isPyDict(d)) throw new SlapError(`Unexpected type of ${name} '${String(d)}'`, { code: 'E_USAGE' })
  return d
}

function expectObject(v: PyValue, className: SlapObject['className']): SlapObject {
  if (!(v instanceof SlapObject) || v.className !== className) throw new MarshalError(`expected a ${className}, got ${describe(v)}`)
  return v
}

function optString(v: PyValue, name: string): string | null {
  if (v === null || typeof v === 'string') return v
  throw new MarshalError(`${name} should be a string, got ${describe(v)}`)
}

function optDict(v: PyValue, name: string): PyDict | null {
  if (v === null || isPyDict(v)) return v
  throw new MarshalError(`${name} should be a dict, got ${describe(v)}`)
}

function describe(v: PyValue): string {
  if (v instanceof SlapObject) return v.className
  if (v === null) return 'None'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return v.constructor?.name ?? 'a dict'
  return JSON.stringify(typeof v === 'bigint' ? v.toString() : v).slice(0, 60)
}
