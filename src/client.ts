// What the client commands (request, supply, remove, service *, computer *, console) share:
// the connection built from the client configuration, `k=v` and parameter-file parsing, the
// software release schema (serialisation), the lazy instance handle of slapos.core's
// ComputerPartition, HATEOAS navigation, and Python-style pretty printing of results.
import { existsSync, readFileSync } from 'node:fs'
import { extname } from 'node:path'
import type { ClientConfig } from './config.ts'
import { ConfigError, NotFoundError, ResourceNotReadyError, ServerError, SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import type { Logger } from './log.ts'
import { SlapClient, type ComputerPartition, type SoftwareInstance } from './slap-client.ts'
import { asSerialisation, compareCodePoints, isPyDict, parseInstanceXml, parseJsonInXml, pyJsonDumps, pyRepr, wrapJsonInXml, type PyDict, type PyValue, type Serialisation } from './slap-protocol.ts'
export { asSerialisation, SERIALISATIONS, wrapJsonInXml, type Serialisation } from './slap-protocol.ts'
import { hasControl, quote } from './names.ts'

/** Message of the original when the HATEOAS API cannot be reached (client-cli.md §1.2). */
export const HATEOAS_MISSING = 'SlapOS Master Hateoas API required for this operation is not available.'

/**
 * One connection to a master, made from the client configuration. Nothing is contacted
 * until a call needs it (the console starts even when master_url is unusable, cli.md §12.6).
 */
export class Connection {
  readonly config: ClientConfig
  readonly log: Logger
  private client: SlapClient | undefined
  private hateoasApi: Promise<Hateoas | undefined> | undefined

  constructor(config: ClientConfig, log: Logger) {
    this.config = config
    this.log = log
  }

  /** The SLAP client; throws ConfigError for a master_url that is not http(s). */
  get slap(): SlapClient {
    this.client ??= new SlapClient({ masterUrl: this.config.masterUrl, keyFile: this.config.keyFile, certFile: this.config.certFile })
    return this.client
  }

  /** Requests an instance; 408 becomes ResourceNotReadyError, 404 NotFoundError (slap.py OpenOrder.request). */
  async request(opts: {
    softwareRelease: string
    partitionReference: string
    partitionParameterKw?: PyDict | null
    softwareType?: string | null
    filterKw?: PyDict | null
    state?: string | null
    shared?: boolean
  }): Promise<Instance> {
    const answer = await this.slap.requestComputerPartition(opts)
    return new Instance(this, answer, opts.shared === true)
  }

  /** `Supply.supply`: ask a node to install (available) or remove (destroyed) a software release. */
  async supply(softwareRelease: string, computerGuid: string | null, state = 'available'): Promise<string> {
    return this.slap.supplySupply(softwareRelease, computerGuid, state)
  }

  /**
   * The URL a command line names: a 0.35.1 alias of the configuration, or `product.<name>`
   * (the master's best release of that software product), else the text itself.
   */
  async softwareUrl(text: string, opts: { products?: boolean } = {}): Promise<string> {
    const alias = this.config.aliases.get(text)
    if (alias !== undefined) {
      this.log.debug(`${text} is an alias of ${alias}`)
      return alias
    }
    if (opts.products !== false && text.startsWith('product.')) return this.productUrl(text.slice('product.'.length))
    return text
  }

  /** SoftwareProductCollection.get of the original: the first URL the master lists for the product. */
  async productUrl(product: string): Promise<string> {
    this.log.info('Getting best Software Release corresponding to this Software Product...')
    const list = await this.slap.getSoftwareReleaseListFromSoftwareProduct(product)
    const url = list[0]
    if (url === undefined) {
      throw new SlapError(`No Software Release corresponding to this Software Product (${product}) has been found.`, {
        code: 'E_NO_PRODUCT',
        hint: 'check the product name (the proxy knows the products of [slapproxy] software_product_list)',
      })
    }
    this.log.info(`Found as ${url}.`)
    return url
  }

  /** The HATEOAS API: `[slapos] master_rest_url`, else what the master answers to getHateoasUrl. */
  async hateoas(): Promise<Hateoas> {
    this.hateoasApi ??= this.findHateoas()
    const api = await this.hateoasApi
    if (!api) {
      throw new SlapError(HATEOAS_MISSING, {
        code: 'E_NO_HATEOAS',
        hint: 'set master_rest_url in [slapos] (for a local proxy: <master_url>/hateoas)',
      })
    }
    return api
  }

  private async findHateoas(): Promise<Hateoas | undefined> {
    let url = this.config.masterRestUrl
    if (!url) {
      try {
        url = (await this.slap.getHateoasUrl()).trim()
      } catch (e) {
        // like slap.initializeConnection: any failure only disables the HATEOAS features
        this.log.debug(`getHateoasUrl failed: ${e instanceof Error ? e.message : String(e)}`)
        return undefined
      }
    }
    if (!url) return undefined
    return new Hateoas(new SlapClient({ masterUrl: url, keyFile: this.config.keyFile, certFile: this.config.certFile }))
  }
}

/**
 * The answer of a request, with the lazy accessors of slapos.core's ComputerPartition
 * (slap-protocol.md §5.4): state, guid and software release are fetched with
 * registerComputerPartition the first time they are missing.
 */
export class Instance {
  readonly computerId: string | null
  readonly partitionId: string | null
  readonly shared: boolean
  /** the raw answer of requestComputerPartition */
  readonly answer: SoftwareInstance
  private readonly connection: Connection
  private requestedState: string | null | undefined
  private instanceGuid: string | null | undefined
  private parameters: PyDict | null
  private connectionParameters: PyDict | null
  private softwareRelease: string | null | undefined
  private fetched = false

  constructor(connection: Connection, answer: SoftwareInstance, shared: boolean) {
    this.connection = connection
    this.answer = answer
    this.shared = shared
    this.computerId = answer.slap_computer_id
    this.partitionId = answer.slap_computer_partition_id
    this.requestedState = answer._requested_state
    this.instanceGuid = answer._instance_guid
    this.parameters = answer._parameter_dict
    this.connectionParameters = answer._connection_dict
    this.softwareRelease = answer.slap_software_release_url
  }

  getId(): string {
    if (!this.partitionId) throw new ResourceNotReadyError('the instance has no partition yet')
    return this.partitionId
  }

  async getState(): Promise<string> {
    if (this.requestedState === undefined) await this.fetch()
    if (this.requestedState === null || this.requestedState === undefined) throw new ResourceNotReadyError('the master has no state for this instance yet')
    return this.requestedState
  }

  async getInstanceGuid(): Promise<string> {
    if (this.instanceGuid === undefined) await this.fetch()
    if (!this.instanceGuid) throw new ResourceNotReadyError('the master has no guid for this instance yet')
    return this.instanceGuid
  }

  async getSoftwareRelease(): Promise<string> {
    if (this.softwareRelease === undefined) await this.fetch()
    if (!this.softwareRelease) throw new NotFoundError(`No software release information for partition ${this.partitionId ?? '?'}`)
    return this.softwareRelease
  }

  getType(): string {
    const t = this.parameters?.slap_software_type
    if (typeof t !== 'string') throw new ResourceNotReadyError('the software type of this instance is not known yet')
    return t
  }

  async getInstanceParameterDict(): Promise<PyDict> {
    if (this.parameters === null && !this.fetched) await this.fetch()
    return { ...(this.parameters ?? {}) }
  }

  async getConnectionParameterDict(): Promise<PyDict> {
    if (this.connectionParameters === null && !this.fetched) await this.fetch()
    if (this.connectionParameters === null && typeof this.answer.connection_xml === 'string') {
      return { ...parseInstanceXml(this.answer.connection_xml) }
    }
    return { ...(this.connectionParameters ?? {}) }
  }

  async getInstanceParameter(key: string): Promise<PyValue> {
    const d = await this.getInstanceParameterDict()
    if (!Object.hasOwn(d, key)) throw new NotFoundError(`${key} not found`)
    return d[key]!
  }

  async getConnectionParameter(key: string): Promise<PyValue> {
    const d = await this.getConnectionParameterDict()
    if (!Object.hasOwn(d, key)) throw new NotFoundError(`${key} not found`)
    return d[key]!
  }

  /** A plain object for `--json` and for the console's display. */
  async toJSON(): Promise<Record<string, unknown>> {
    return {
      computer_id: this.computerId,
      partition_id: this.partitionId,
      shared: this.shared,
      state: await this.getState(),
      connection_parameters: toJson(await this.getConnectionParameterDict()),
    }
  }

  /**
   * Like ComputerPartition.__getattr__ on a missing attribute: one registerComputerPartition.
   * A shared instance keeps its own parameters: the original overwrote them with the host
   * partition's, so `slapos request --slave` printed the host's connection parameters.
   */
  private async fetch(): Promise<void> {
    if (this.fetched) return
    if (!this.computerId || !this.partitionId) throw new ResourceNotReadyError('the instance has no partition yet')
    const p: ComputerPartition = await this.connection.slap.registerComputerPartition(this.computerId, this.partitionId)
    this.fetched = true
    if (this.requestedState === undefined) this.requestedState = p._requested_state ?? null
    if (this.instanceGuid === undefined) this.instanceGuid = p._instance_guid ?? null
    if (this.softwareRelease === undefined) {
      const d = p._software_release_document
      this.softwareRelease = typeof d === 'string' ? d : (d?._software_release ?? null)
    }
    if (!this.shared) {
      if (p._parameter_dict !== undefined) this.parameters = p._parameter_dict
      if (p._connection_dict !== undefined) this.connectionParameters = p._connection_dict
    }
  }
}

// --- command-line values ---

/**
 * 0.35.1 took the configuration file as the first positional (`slapos request CFG REF URL`):
 * when one word more than expected is given and the first names a `.cfg` file, it is the
 * configuration. Returns the remaining words and the configuration path, if any.
 */
export function legacyConfigWord(words: string[], expected: number, cfg: unknown): { words: string[]; cfg: unknown } {
  if (words.length === expected + 1 && cfg === undefined && words[0]!.endsWith('.cfg') && existsSync(words[0]!)) {
    return { words: words.slice(1), cfg: words[0] }
  }
  return { words, cfg }
}

/**
 * `k=v` words of `--node` / `--parameters`: split on the first `=`; a word without `=` or a
 * repeated key is an error (exit 1, like the original's ValueError).
 */
export function parseKeyValues(words: readonly unknown[] | undefined, option: string): PyDict {
  const out: PyDict = {}
  for (const w of words ?? []) {
    const word = String(w)
    const eq = word.indexOf('=')
    if (eq < 0) throw new SlapError(`${option}: '${word}' is not in the form key=value`, { code: 'E_BAD_PARAMETER', hint: `write ${option} key=value [key=value ...]` })
    const key = word.slice(0, eq)
    if (Object.hasOwn(out, key)) throw new SlapError(`${option}: Multiple values provided for the same key '${key}'`, { code: 'E_BAD_PARAMETER' })
    out[key] = word.slice(eq + 1)
  }
  return out
}

/** A `--parameters-file` read and parsed: instance XML (taken verbatim) or an object. */
export type ParametersFile = { path: string; xml: PyDict } | { path: string; object: object }

/**
 * Reads and parses `--parameters-file` (client-cli.md §2): `.yaml`/`.yml` YAML, `.xml`
 * instance XML, anything else JSON. Done first, so that the file's own problem is the one
 * reported; parametersFromFile() then applies the release's serialisation.
 */
export async function readParametersFile(path: string): Promise<ParametersFile> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (e) {
    throw new ConfigError(`cannot read the parameters file ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
  }
  const ext = extname(path).toLowerCase()
  if (ext === '.xml') {
    try {
      return { path, xml: { ...parseInstanceXml(text) } }
    } catch (e) {
      throw new SlapError(`${path} is not instance XML: ${(e as Error).message}`, { code: 'E_BAD_PARAMETER', hint: "write <instance><parameter id='name'>value</parameter></instance>" })
    }
  }
  let obj: unknown
  try {
    if (ext === '.yaml' || ext === '.yml') {
      const { parse } = await import('yaml')
      obj = parse(text) as unknown
    } else {
      obj = JSON.parse(text) as unknown
    }
  } catch (e) {
    throw new SlapError(`${path} cannot be parsed: ${(e as Error).message}`, { code: 'E_BAD_PARAMETER' })
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new SlapError(`${path} must hold an object of parameters`, { code: 'E_BAD_PARAMETER' })
  }
  return { path, object: obj }
}

/**
 * The parameters of a parsed file for a release of this serialisation: XML as it is; for a
 * json-in-xml release the object is wrapped as `{'_': json}` unless its only key already is `_`.
 */
export function parametersFromFile(file: ParametersFile, serialisation: Serialisation | undefined): PyDict {
  if ('xml' in file) return file.xml
  return fromJson(serialisation === 'json-in-xml' ? wrapJsonInXml(file.object) : file.object) as PyDict
}

// --- software release schema (`<url>.json`) ---

/** The schema of a software release, or undefined (with a warning) when it cannot be read. */
export async function loadSoftwareSchema(url: string, log: Logger): Promise<Record<string, unknown> | undefined> {
  const where = `${url}.json`
  try {
    let text: string
    if (/^https?:\/\//.test(url)) {
      const res = await fetch(where, { signal: AbortSignal.timeout(15_000) })
      if (!res.ok) throw new Error(`HTTP ${res.status}`)
      text = await res.text()
    } else {
      text = readFileSync(url.startsWith('file://') ? new URL(where) : where, 'utf8')
    }
    const obj = JSON.parse(text) as unknown
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new Error('not a JSON object')
    return obj as Record<string, unknown>
  } catch (e) {
    log.debug(`Unable to load JSON ${where} (${e instanceof Error ? e.message : String(e)})`)
    return undefined
  }
}

/**
 * SoftwareReleaseSchema.getSerialisation: the software type's `serialisation`, else the
 * release's. Strict: undefined when unknown; not strict: json-in-xml when unknown.
 */
export function schemaSerialisation(schema: Record<string, unknown> | undefined, softwareType: string | null | undefined, strict: boolean): Serialisation | undefined {
  const types = schema?.['software-type']
  const typeSchema = types && typeof types === 'object' ? (types as Record<string, unknown>)[softwareType || 'default'] : undefined
  const fromType = typeSchema && typeof typeSchema === 'object' ? (typeSchema as Record<string, unknown>).serialisation : undefined
  return asSerialisation(fromType ?? schema?.serialisation) ?? (strict ? undefined : 'json-in-xml')
}

// --- HATEOAS (client-cli.md §4) ---

/** Navigation in the master's JSON API: the root's `raw_search` and `traverse` URI templates. */
export class Hateoas {
  private readonly http: SlapClient
  private root: Promise<Record<string, unknown>> | undefined

  constructor(http: SlapClient) {
    this.http = http
  }

  /** `raw_search`: the `_embedded.contents` rows of a query. */
  async search(query: string, selectList: string[]): Promise<Record<string, unknown>[]> {
    const href = await this.link('raw_search')
    const doc = await this.getJson(expandTemplate(href, { query, select_list: selectList.join(','), limit: '40' }))
    const contents = (doc._embedded as Record<string, unknown> | undefined)?.contents
    return Array.isArray(contents) ? (contents.filter((x) => x && typeof x === 'object') as Record<string, unknown>[]) : []
  }

  /** `traverse` to a document. slapproxy answers with a redirect to relative_url, followed here. */
  async traverse(relativeUrl: string): Promise<Record<string, unknown>> {
    const href = await this.link('traverse')
    try {
      return await this.getJson(expandTemplate(href, { relative_url: relativeUrl, view: 'slaposjs_view' }))
    } catch (e) {
      if (e instanceof ServerError && e.status >= 300 && e.status < 400) return this.getJson(relativeUrl)
      throw e
    }
  }

  /**
   * A token for `slapos node register --token` (client-cli, `computer token`): the root's
   * self link + `/computer_module/Base_getComputerToken`, its `access_token`.
   */
  async computerToken(): Promise<string> {
    this.root ??= this.getJson('')
    const self = ((await this.root)._links as Record<string, { href?: unknown }> | undefined)?.self?.href
    if (typeof self !== 'string') throw new SlapError(`${HATEOAS_MISSING} (no self link)`, { code: 'E_NO_HATEOAS' })
    const url = `${self.replace(/\/+$/, '')}/computer_module/Base_getComputerToken`
    // the certificate goes only where the API is
    if (!url.startsWith(this.http.masterUrl.replace(/\/+$/, ''))) {
      throw new SlapError(`the master's API names ${quote(self)} as its own address, outside ${this.http.masterUrl}: not followed`, { code: 'E_HATEOAS' })
    }
    const token = (await this.getJson(url)).access_token
    if (typeof token !== 'string' || token === '' || hasControl(token)) {
      throw new SlapError(`the master answered no usable access_token at ${url}`, { code: 'E_HATEOAS' })
    }
    return token
  }

  private async link(name: string): Promise<string> {
    this.root ??= this.getJson('')
    const links = (await this.root)._links as Record<string, { href?: unknown }> | undefined
    const href = links?.[name]?.href
    if (typeof href !== 'string') throw new SlapError(`${HATEOAS_MISSING} (no ${name} link)`, { code: 'E_NO_HATEOAS' })
    return href
  }

  private async getJson(url: string): Promise<Record<string, unknown>> {
    const body = await this.http.get(url, [])
    try {
      const obj = JSON.parse(body) as unknown
      if (obj && typeof obj === 'object' && !Array.isArray(obj)) return obj as Record<string, unknown>
    } catch {
      // fall through
    }
    throw new SlapError(`the HATEOAS API answered something that is not a JSON object at ${url || this.http.masterUrl}`, { code: 'E_HATEOAS' })
  }
}

/**
 * Properties of a HATEOAS document as the original reads them: `_embedded._view` fields named
 * `my_*`/`your_*` of the text and number field types, plus `portal_type`.
 */
export function documentProperties(doc: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  const view = (doc._embedded as Record<string, unknown> | undefined)?._view
  if (view && typeof view === 'object') {
    for (const [name, field] of Object.entries(view as Record<string, unknown>)) {
      const m = /^(?:my|your)_(.+)$/.exec(name)
      if (!m || !field || typeof field !== 'object') continue
      const f = field as { type?: unknown; default?: unknown }
      if (typeof f.type === 'string' && FIELD_TYPES.has(f.type)) out[m[1]!] = f.default
    }
  }
  const type = ((doc._links as Record<string, unknown> | undefined)?.type as { name?: unknown } | undefined)?.name
  if (type !== undefined) out.portal_type = type
  return out
}

/** `slapos service info` (client-cli.md §4.2): the JSON of one instance tree, or undefined. */
export async function serviceInformation(conn: Connection, reference: string, news: boolean): Promise<Record<string, unknown> | undefined> {
  const api = await conn.hateoas()
  const rows = await api.search(`portal_type:"Instance Tree" AND validation_state:validated AND title:="${reference}"`, ['title', 'relative_url'])
  if (rows.length === 0) return undefined
  if (rows.length > 1) throw new SlapError(`${rows.length} services are titled ${reference}; the master should have one`, { code: 'E_AMBIGUOUS' })
  const relativeUrl = rows[0]!.relative_url
  if (typeof relativeUrl !== 'string') throw new SlapError(`the master gave no relative_url for ${reference}`, { code: 'E_HATEOAS' })
  const p = documentProperties(await api.traverse(relativeUrl))
  const softwareUrl = typeof p.url_string === 'string' ? p.url_string : ''
  const softwareType = typeof p.source_reference === 'string' ? p.source_reference : null
  let parameters: Record<string, unknown> = parseInstanceXml(typeof p.text_content === 'string' ? p.text_content : '')
  const decoded = parseJsonInXml(parameters)
  if (decoded !== undefined) parameters = decoded as Record<string, unknown>
  let connection: Record<string, unknown> = {}
  const list = p.connection_parameter_list
  if (typeof list === 'string') connection = parseInstanceXml(list)
  else if (Array.isArray(list)) {
    for (const item of list) {
      if (item && typeof item === 'object') {
        const { connection_key: k, connection_value: v } = item as { connection_key?: unknown; connection_value?: unknown }
        if (typeof k === 'string') connection[k] = v
      }
    }
  }
  if (typeof connection._ === 'string' && schemaSerialisation(await loadSoftwareSchema(softwareUrl, conn.log), softwareType, false) === 'json-in-xml') {
    try {
      connection = JSON.parse(connection._) as Record<string, unknown>
    } catch {
      // not JSON after all: show it as published
    }
  }
  const newsList = Array.isArray(p.news) ? p.news : []
  const out: Record<string, unknown> = {
    'software-url': softwareUrl,
    'software-type': softwareType,
    shared: Boolean(p.root_slave),
    'requested-state': p.slap_state ?? null,
    'instance-parameters': parameters,
    'connection-parameters': connection,
    // a master without news (the local proxy) still knows the state it was asked for
    status: newsList.length === 0 && typeof p.slap_state === 'string' && p.slap_state ? p.slap_state : newsStatus(newsList),
  }
  if (news) out.news = newsList
  return out
}

// --- output ---

/** Python's `pprint.pformat` (width 80, sorted keys) of a decoded value, as the original prints results. */
export function pformat(value: PyValue, width = 80): string {
  const out: string[] = []
  format(value, 0, 0, 1, width, out)
  return out.join('')
}

/** A marshalled value as JSON-compatible data (tuples and sets as lists, bigints as numbers or text). */
export function toJson(v: PyValue): unknown {
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()
  if (Array.isArray(v)) return v.map(toJson)
  if (v instanceof Set) return [...v].map(toJson)
  if (isPyDict(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]))
  if ('items' in v && Array.isArray(v.items)) return v.items.map(toJson)
  if ('value' in v && typeof v.value === 'number') return v.value
  return pyRepr(v)
}

/** Plain data from anywhere (a JSON file, a console script) as a marshallable value. */
export function fromJson(v: unknown): PyValue {
  if (v === null || v === undefined) return null
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return v
  if (Array.isArray(v)) return v.map(fromJson)
  if (v instanceof Set) return new Set([...v].map(fromJson))
  if (typeof v === 'object') {
    const out: PyDict = {}
    for (const [k, x] of Object.entries(v)) out[k] = fromJson(x)
    return out
  }
  return String(v)
}

/** Exit status and one-line advice of the 408 answer to a request. */
export const NOT_READY_MESSAGE = 'Instance requested. Master is provisioning it. Please rerun in a couple of minutes to get connection information.'
export { EXIT }

// --- internal ---

const FIELD_TYPES = new Set(['StringField', 'EmailField', 'IntegerField', 'FloatField', 'TextAreaField'])

function newsStatus(news: unknown[]): string {
  if (news.length === 0) return 'unsupported'
  const texts = news.map((n) => (n && typeof n === 'object' ? String((n as { text?: unknown }).text ?? '') : String(n)))
  const access = texts.some((t) => t.startsWith('#access'))
  const error = texts.some((t) => t.startsWith('#error'))
  return access && error ? 'orange' : error ? 'red' : access ? 'green' : 'none'
}

/** RFC 6570 simple expansion (`{name}`), what the original's uritemplate does for these links. */
function expandTemplate(href: string, vars: Record<string, string>): string {
  return href.replace(/\{([^}]+)\}/g, (_all, name: string) => {
    const v = vars[name]
    if (v === undefined) return ''
    return encodeURIComponent(v).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
  })
}

// pprint, following CPython's algorithm: a value whose repr fits stays on one line, else
// dicts and lists put one item per line and long strings are cut at spaces.
function format(v: PyValue, indent: number, allowance: number, level: number, width: number, out: string[]): void {
  const rep = pyRepr(sortDicts(v))
  if (rep.length <= width - indent - allowance) {
    out.push(rep)
    return
  }
  if (isPyDict(v)) {
    const keys = Object.keys(v).sort(compareCodePoints)
    out.push('{')
    keys.forEach((k, i) => {
      const last = i === keys.length - 1
      const kr = pyRepr(k)
      out.push(kr, ': ')
      format(v[k]!, indent + 1 + kr.length + 2, last ? allowance + 1 : 1, level + 1, width, out)
      if (!last) out.push(',\n' + ' '.repeat(indent + 1))
    })
    out.push('}')
    return
  }
  if (Array.isArray(v)) {
    out.push('[')
    v.forEach((x, i) => {
      const last = i === v.length - 1
      format(x, indent + 1, last ? allowance + 1 : 1, level + 1, width, out)
      if (!last) out.push(',\n' + ' '.repeat(indent + 1))
    })
    out.push(']')
    return
  }
  if (typeof v === 'string' && v.length > 0) {
    out.push(formatString(v, indent, allowance, level, width))
    return
  }
  out.push(rep)
}

function formatString(s: string, indent: number, allowance: number, level: number, width: number): string {
  if (level === 1) {
    indent += 1
    allowance += 1
  }
  const chunks: string[] = []
  const lines = s.split(/(?<=\n)/)
  let maxWidth1 = width - indent
  lines.forEach((line, i) => {
    const lastLine = i === lines.length - 1
    if (lastLine) maxWidth1 -= allowance
    if (pyRepr(line).length <= maxWidth1) {
      chunks.push(pyRepr(line))
      return
    }
    const parts = line.match(/\S*\s*/g)!.filter((p) => p !== '')
    let maxWidth2 = width - indent
    let current = ''
    parts.forEach((part, j) => {
      const candidate = current + part
      if (j === parts.length - 1 && lastLine) maxWidth2 -= allowance
      if (pyRepr(candidate).length > maxWidth2) {
        if (current) chunks.push(pyRepr(current))
        current = part
      } else current = candidate
    })
    if (current) chunks.push(pyRepr(current))
  })
  if (chunks.length === 1) return chunks[0]!
  const body = chunks.join('\n' + ' '.repeat(indent))
  return level === 1 ? `(${body})` : body
}

function sortDicts(v: PyValue): PyValue {
  if (Array.isArray(v)) return v.map(sortDicts)
  if (isPyDict(v)) {
    const out: PyDict = {}
    for (const k of Object.keys(v).sort(compareCodePoints)) out[k] = sortDicts(v[k]!)
    return out
  }
  return v
}
