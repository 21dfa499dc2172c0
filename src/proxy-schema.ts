// The software release's JSON schema for the panel's request form (proxy-panel.ts): reads
// `<release>.json` and the input schema of each software type beside it, resolves `$ref`, keeps
// only the keywords the form knows (a small, plain description the page renders as text), checks
// parameters against it and encodes them as the release's serialisation says.
//
// Everything read here is hostile, the schema as much as the parameters: anyone who reaches the
// proxy can supply a release. Only `.json` files in the release's directory (or below it) are
// read, with size, count, time and expansion limits (characters kept, `$ref` expanded, count);
// a `$ref` elsewhere, or in a loop, becomes a raw JSON field. Over HTTP no redirect is followed
// and link-local and cloud metadata addresses are never contacted (checked at connect time);
// why a file could not be read goes to the proxy's log only (SchemaUnavailable.detail).
// Checking parameters is bounded in steps, the JSON text of compared values counted.
import type { LookupAddress, LookupOptions } from 'node:dns'
import type { Stats } from 'node:fs'
import { hasControl } from './names.ts'
import { asSerialisation, wrapJsonInXml, type Serialisation } from './slap-protocol.ts'

/** A JSON value read from a schema file. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

/** The part of a JSON schema the panel handles; everything else is named in `unsupported`. */
export interface SchemaNode {
  type?: string[]
  title?: string
  description?: string
  default?: Json
  enum?: Json[]
  const?: Json
  minimum?: number
  maximum?: number
  exclusiveMinimum?: number
  exclusiveMaximum?: number
  multipleOf?: number
  minLength?: number
  maxLength?: number
  /** checked by the browser only: a regular expression of the schema never runs on the proxy */
  pattern?: string
  format?: string
  items?: SchemaNode
  minItems?: number
  maxItems?: number
  uniqueItems?: boolean
  /** name and schema of each property, in the schema's order (a list: names are data, never keys) */
  properties?: [string, SchemaNode][]
  required?: string[]
  additionalProperties?: boolean | SchemaNode
  oneOf?: SchemaNode[]
  anyOf?: SchemaNode[]
  allOf?: SchemaNode[]
  /** keywords present but not handled (shown, not enforced); the form edits such a part as JSON */
  unsupported?: string[]
  /** the schema `false`: no value is valid */
  never?: true
}

export type { Serialisation }

/** One `software-type` entry of `software.cfg.json`. */
export interface SoftwareTypeEntry {
  /** its key in `software-type` (how slapos.core looks it up) */
  key: string
  /** the software type to request: the entry's `software-type`, else its key */
  softwareType: string
  title: string
  description: string
  shared: boolean
  serialisation: Serialisation
  index: number
  /** the input schema; undefined when it could not be read (then `problem` says why) */
  schema?: SchemaNode
  problem?: string
}

export interface ReleaseSchema {
  name: string
  description: string
  types: SoftwareTypeEntry[]
}

export const SCHEMA_LIMITS = {
  /** bytes of one file */
  fileSize: 1024 * 1024,
  /** files read for one release (software.cfg.json, input schemas, `$ref` targets) */
  files: 64,
  /** milliseconds for one file, and for the whole release */
  fileTimeout: 5_000,
  totalTimeout: 15_000,
  /** schema nodes kept for one release, `$ref` expanded */
  nodes: 20_000,
  /** characters of the texts and values (default, enum, const) kept for one release, `$ref` expanded */
  chars: 2 * 1024 * 1024,
  /** bytes of the panel's JSON answer for one release */
  answer: 4 * 1024 * 1024,
  /** software types of one release, properties of one object, values of one enum */
  entries: 500,
  /** characters of a title, a description, a name */
  text: 4_000,
  depth: 32,
  /** validation steps of one request: a schema node visited, or this many characters of JSON text made */
  steps: 200_000,
  charsPerStep: 32,
}

/**
 * Why a release has no schema form: `message` is said to the person and never tells why a file
 * could not be read (absent, refused, HTTP status, address): that is `detail`, for the log.
 */
export class SchemaUnavailable extends Error {
  constructor(
    message: string,
    readonly detail?: string,
  ) {
    super(message)
  }
}

/**
 * The schema of a software release URL, or SchemaUnavailable. `http(s)://` and `file://` URLs
 * and absolute paths; nothing is read outside the release's directory. `note` hears why a file
 * of a software type or of a `$ref` could not be read (for the log; the schema only says that
 * it could not).
 */
export async function loadReleaseSchema(releaseUrl: string, note: (detail: string) => void = () => undefined): Promise<ReleaseSchema> {
  const base = releaseLocation(releaseUrl)
  const reader = new Reader(base.directory)
  const top = await reader.read(base.schema)
  if (!isObject(top)) throw unreadable(base.schema, 'it is not a JSON object')
  const types = top['software-type']
  if (!isObject(types)) throw unreadable(base.schema, 'it has no software-type entries')
  const topSerialisation = asSerialisation(top.serialisation)
  const entries: SoftwareTypeEntry[] = []
  // one budget of parts and characters for the whole release
  const expander = new Expander(reader, note)
  const text = (s: string) => expander.text(s)
  for (const [key, raw] of Object.entries(types).slice(0, SCHEMA_LIMITS.entries)) {
    if (!isObject(raw) || key === '' || hasControl(key)) continue
    const declared = typeof raw['software-type'] === 'string' && raw['software-type'] !== '' && !hasControl(raw['software-type']) ? raw['software-type'] : key
    const entry: SoftwareTypeEntry = {
      key: text(key),
      softwareType: text(declared),
      title: text(typeof raw.title === 'string' ? raw.title : key),
      description: typeof raw.description === 'string' ? text(raw.description) : '',
      shared: raw.shared === true,
      // slapos.core's SoftwareReleaseSchema.getSerialisation: the type's, else the release's, else json-in-xml
      serialisation: asSerialisation(raw.serialisation) ?? topSerialisation ?? 'json-in-xml',
      index: typeof raw.index === 'number' && Number.isFinite(raw.index) ? raw.index : Number.MAX_SAFE_INTEGER,
    }
    try {
      if (typeof raw.request !== 'string' || raw.request === '') throw new SchemaUnavailable('no input schema (request) is named')
      const file = reader.locate(raw.request, base.schema)
      entry.schema = await expander.node(await reader.read(file), file, '', 0)
    } catch (err) {
      // over the release's budget: no form at all rather than a form cut anywhere
      if (!(err instanceof SchemaUnavailable) || err instanceof OverBudget) throw err
      entry.problem = err.message
      if (err.detail) note(`software type ${JSON.stringify(entry.key.slice(0, 200))}: ${err.detail}`)
    }
    entries.push(entry)
  }
  entries.sort((a, b) => a.index - b.index || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  return {
    name: typeof top.name === 'string' ? text(top.name) : '',
    description: typeof top.description === 'string' ? text(top.description) : '',
    types: entries,
  }
}

/** The message for a file that could not be read; why goes to the log. */
function unreadable(url: URL, why: string): SchemaUnavailable {
  return new SchemaUnavailable(`${url.href} cannot be read`, `${url.href}: ${why}`)
}

/**
 * The entry a request names: by the panel's entry key when given, else the entry whose key is
 * the software type (slapos.core's lookup, with its RootSoftwareInstance → default fallback),
 * else one that declares it; of the same sharedness.
 */
export function findEntry(schema: ReleaseSchema, softwareType: string, shared: boolean, key?: string): SoftwareTypeEntry | undefined {
  const fits = (e: SoftwareTypeEntry) => e.shared === shared
  if (key !== undefined) return schema.types.find((e) => e.key === key && e.softwareType === softwareType && fits(e))
  return (
    schema.types.find((e) => e.key === softwareType && fits(e)) ??
    (softwareType === 'RootSoftwareInstance' ? schema.types.find((e) => e.key === 'default' && fits(e)) : undefined) ??
    schema.types.find((e) => e.softwareType === softwareType && fits(e))
  )
}

/** What is wrong with these parameters for this schema (empty: valid). At most 20 problems. */
export function validateParameters(schema: SchemaNode, value: unknown): string[] {
  // making the JSON text of values (enum, const, uniqueItems) walks them: their depth is bounded first
  if (depthOver(value, 64)) return ['the parameters are nested deeper than 64 levels']
  const v = new Validator()
  try {
    v.check(schema, value, '')
  } catch (err) {
    if (err instanceof TooComplex) return ['the parameters are too complex to check against the schema']
    throw err
  }
  return v.problems
}

/**
 * The parameters as the instance receives them: json-in-xml sends the whole object as JSON
 * text in one `_` parameter (unless that is already all it holds); xml sends one parameter per
 * key, a string as it is and any other value as its JSON text.
 */
export function serialiseParameters(serialisation: Serialisation, parameters: Record<string, unknown>): Record<string, string> {
  const flat = serialisation === 'json-in-xml' ? wrapJsonInXml(parameters) : parameters
  const out: Record<string, string> = {}
  for (const k of Object.keys(flat)) {
    const v = flat[k]
    Object.defineProperty(out, k, { value: typeof v === 'string' ? v : JSON.stringify(v), enumerable: true, writable: true, configurable: true })
  }
  return out
}

/**
 * The parameters as the schema sees them: json-in-xml's `_` decoded; a top-level `$schema` key
 * left out (slapos.core's validateInstanceParameterDict ignores it); for an xml release, the text
 * of a property whose schema does not allow a string read as JSON when that gives an allowed
 * type (xml parameters are text: a stored `"8080"` is the integer it was requested as).
 */
export function parametersToCheck(serialisation: Serialisation, schema: SchemaNode, parameters: Record<string, unknown>): unknown {
  const value = serialisation === 'json-in-xml' ? unwrapJsonInXml(parameters) : parameters
  if (!isObject(value)) return value
  const out: Record<string, unknown> = {}
  const properties = new Map(schema.properties ?? [])
  for (const k of Object.keys(value)) {
    if (k === '$schema') continue
    let v = value[k]
    const types = properties.get(k)?.type
    if (serialisation === 'xml' && typeof v === 'string' && types && !types.includes('string')) {
      try {
        const parsed = JSON.parse(v) as unknown
        if (types.some((t) => hasType(parsed, t))) v = parsed
      } catch {
        // not JSON: checked as the text it is
      }
    }
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
  }
  return out
}

/** The object behind a json-in-xml `_` parameter, for checking what a person typed as JSON. */
export function unwrapJsonInXml(parameters: Record<string, unknown>): unknown {
  const keys = Object.keys(parameters)
  if (keys.length !== 1 || keys[0] !== '_' || typeof parameters._ !== 'string') return parameters
  try {
    return JSON.parse(parameters._) as unknown
  } catch {
    return parameters._
  }
}

// --- internal ---

class TooComplex extends Error {}

/** More parts or characters than one release may have: the whole release has no form. */
class OverBudget extends SchemaUnavailable {}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function clip(s: string): string {
  return s.length > SCHEMA_LIMITS.text ? `${s.slice(0, SCHEMA_LIMITS.text)}…` : s
}

/**
 * Where the release's schema is and the directory nothing may be read outside of. slapos.core
 * appends `.json` to the release URL; a local path is a file URL.
 */
function releaseLocation(releaseUrl: string): { schema: URL; directory: URL } {
  let url: URL
  try {
    if (releaseUrl.startsWith('/')) url = process.getBuiltinModule('node:url').pathToFileURL(releaseUrl)
    else url = new URL(releaseUrl)
  } catch {
    throw new SchemaUnavailable('the software release URL is not an absolute URL or path')
  }
  if (!['http:', 'https:', 'file:'].includes(url.protocol)) throw new SchemaUnavailable(`no schema is read over ${url.protocol}`)
  if (url.search || url.hash || url.username || url.password) throw new SchemaUnavailable('no schema is read for a URL with a query, a fragment or credentials')
  if (url.pathname.endsWith('/')) throw new SchemaUnavailable('the software release URL names a directory')
  const schema = new URL(`${url.href}.json`)
  return { schema, directory: new URL('./', url) }
}

/** Reads the files of one release: counted, bounded, each at most once. */
class Reader {
  private readonly files = new Map<string, Promise<unknown>>()
  private readonly deadline = Date.now() + SCHEMA_LIMITS.totalTimeout
  private realDirectory: string | undefined

  constructor(private readonly directory: URL) {}

  /** A reference relative to `from`, if it names a `.json` file in the release's directory. */
  locate(reference: string, from: URL): URL {
    let url: URL
    try {
      url = new URL(reference, from)
    } catch {
      throw new SchemaUnavailable(`${JSON.stringify(clip(reference))} is not a URL`)
    }
    url.hash = ''
    const shown = JSON.stringify(clip(reference))
    if (url.origin !== this.directory.origin || url.protocol !== this.directory.protocol || !url.href.startsWith(this.directory.href) || url.search || url.username || url.password) {
      throw new SchemaUnavailable(`${shown} is outside the software release's directory: not read`)
    }
    if (!url.pathname.endsWith('.json') || /%2f|%5c|%00/i.test(url.pathname)) throw new SchemaUnavailable(`${shown} is not a .json file beside the software release: not read`)
    return url
  }

  read(url: URL): Promise<unknown> {
    const known = this.files.get(url.href)
    if (known) return known
    if (this.files.size >= SCHEMA_LIMITS.files) throw new SchemaUnavailable(`the schema spans more than ${SCHEMA_LIMITS.files} files`)
    const p = this.readText(url).then((text) => {
      try {
        return JSON.parse(text) as unknown
      } catch {
        // the parser's message quotes the text: not repeated
        throw unreadable(url, 'it is not valid JSON')
      }
    })
    this.files.set(url.href, p)
    return p
  }

  private async readText(url: URL): Promise<string> {
    const left = this.deadline - Date.now()
    if (left <= 0) throw unreadable(url, 'reading the schema took too long')
    if (url.protocol === 'file:') return this.readFile(url)
    return fetchText(url, Math.min(left, SCHEMA_LIMITS.fileTimeout))
  }

  /**
   * A regular file whose real path is in the release's real directory (no link out, no device,
   * no FIFO). The path is checked, then the file opened is checked to be the one checked: a
   * partition user who swaps a directory for a link in between gains nothing.
   */
  private readFile(url: URL): string {
    const fs = process.getBuiltinModule('node:fs')
    const { fileURLToPath } = process.getBuiltinModule('node:url')
    let real: string
    let before: Stats
    let fd: number | undefined
    try {
      this.realDirectory ??= fs.realpathSync(fileURLToPath(this.directory))
      real = fs.realpathSync(fileURLToPath(url))
      before = fs.statSync(real)
    } catch (err) {
      throw unreadable(url, `it cannot be found (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
    const dir = this.realDirectory.endsWith('/') ? this.realDirectory : `${this.realDirectory}/`
    if (!real.startsWith(dir)) throw unreadable(url, `it leads outside the software release's directory (${real})`)
    if (!before.isFile()) throw unreadable(url, 'it is not a regular file')
    const max = SCHEMA_LIMITS.fileSize
    try {
      fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
      const st: Stats = fs.fstatSync(fd)
      if (st.dev !== before.dev || st.ino !== before.ino) throw unreadable(url, 'it was replaced while it was read')
      // what was opened, whatever the path became meanwhile (Linux)
      const opened = openedPath(fd)
      if (opened !== undefined && !opened.startsWith(dir)) throw unreadable(url, `it leads outside the software release's directory (${opened})`)
      if (!st.isFile()) throw unreadable(url, 'it is not a regular file')
      if (st.size > max) throw unreadable(url, `it is larger than ${max} bytes`)
      const buf = Buffer.alloc(max + 1)
      let size = 0
      for (;;) {
        const n = fs.readSync(fd, buf, size, buf.length - size, null)
        if (n === 0) break
        size += n
        if (size > max) throw unreadable(url, `it is larger than ${max} bytes`)
      }
      return buf.subarray(0, size).toString('utf8')
    } catch (err) {
      if (err instanceof SchemaUnavailable) throw err
      throw unreadable(url, `it could not be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    } finally {
      if (fd !== undefined) fs.closeSync(fd)
    }
  }
}

/** The path of an open file descriptor, from /proc; undefined where there is none. */
function openedPath(fd: number): string | undefined {
  try {
    return process.getBuiltinModule('node:fs').readlinkSync(`/proc/self/fd/${fd}`)
  } catch {
    return undefined
  }
}

/**
 * Addresses a schema is never fetched from: link-local (where clouds serve instance metadata
 * and credentials) and the metadata services elsewhere. Loopback stays allowed: a local
 * master's releases are often served from 127.0.0.1.
 */
let forbidden: import('node:net').BlockList | undefined
function forbiddenAddress(address: string): boolean {
  const net = process.getBuiltinModule('node:net')
  if (!forbidden) {
    const list = new net.BlockList()
    list.addSubnet('169.254.0.0', 16, 'ipv4')
    list.addSubnet('fe80::', 10, 'ipv6')
    // Alibaba, Azure's wire server, Oracle's older metadata service, AWS's IPv6 one; and
    // each of them (169.254/16 too) through NAT64's well-known prefix 64:ff9b::/96
    for (const a of ['100.100.100.200', '168.63.129.16', '192.0.0.192']) {
      list.addAddress(a, 'ipv4')
      const [w, x, y, z] = a.split('.').map(Number) as [number, number, number, number]
      list.addAddress(`64:ff9b::${((w << 8) | x).toString(16)}:${((y << 8) | z).toString(16)}`, 'ipv6')
    }
    list.addAddress('fd00:ec2::254', 'ipv6')
    list.addSubnet('64:ff9b::a9fe:0', 112, 'ipv6')
    forbidden = list
  }
  const family = net.isIP(address)
  if (family === 0) return false
  return forbidden.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/** dns.lookup that fails for a name with a forbidden address: checked where the connection is made. */
function checkedLookup(hostname: string, options: LookupOptions, callback: LookupCallback): void {
  process.getBuiltinModule('node:dns').lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '')
    const bad = addresses.find((a) => forbiddenAddress(a.address))
    if (bad) return callback(Object.assign(new Error(`${hostname} has the address ${bad.address}, link-local or cloud metadata: not contacted`), { code: 'EADDRNOTALLOWED' }), '')
    const first = addresses[0]
    if (options.all) return callback(null, addresses)
    if (!first) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '')
    callback(null, first.address, first.family)
  })
}

/** GET of one schema file over HTTP(S): 200 only (no redirect followed), bounded in size and time. */
function fetchText(url: URL, timeout: number): Promise<string> {
  const host = url.hostname.replace(/^\[|\]$/g, '')
  if (forbiddenAddress(host)) return Promise.reject(unreadable(url, `${host} is a link-local or cloud metadata address: not contacted`))
  const client = url.protocol === 'https:' ? process.getBuiltinModule('node:https') : process.getBuiltinModule('node:http')
  const max = SCHEMA_LIMITS.fileSize
  return new Promise((resolve, reject) => {
    let settled = false
    const finish = (err: SchemaUnavailable | undefined, text = ''): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      req.destroy()
      if (err) reject(err)
      else resolve(text)
    }
    const req = client.get(url, { agent: false, lookup: checkedLookup, headers: { Accept: 'application/json' } }, (res) => {
      if (res.statusCode !== 200) return finish(unreadable(url, `it answered HTTP ${res.statusCode ?? '?'}`))
      if (Number(res.headers['content-length'] ?? 0) > max) return finish(unreadable(url, `it is larger than ${max} bytes`))
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (chunk: Buffer) => {
        size += chunk.length
        if (size > max) return finish(unreadable(url, `it is larger than ${max} bytes`))
        chunks.push(chunk)
      })
      res.on('end', () => finish(undefined, Buffer.concat(chunks).toString('utf8')))
      res.on('error', (err) => finish(unreadable(url, `it could not be fetched (${err.message})`)))
    })
    req.on('error', (err) => finish(unreadable(url, `it could not be fetched (${err.message})`)))
    const timer = setTimeout(() => finish(unreadable(url, `no answer within ${timeout} ms`)), timeout)
  })
}

const TYPES = new Set(['string', 'integer', 'number', 'boolean', 'object', 'array', 'null'])
/** keywords that only describe: ignored without a word */
const IGNORED = new Set(['$schema', '$id', 'id', '$comment', 'examples', 'definitions', '$defs', 'readOnly', 'writeOnly', 'deprecated', 'textarea', 'contentMediaType', 'contentEncoding'])

/** Turns one schema file's node into a SchemaNode, following `$ref` (each chain once). */
class Expander {
  private nodes = 0
  private chars = 0
  private readonly active: string[] = []

  constructor(
    private readonly reader: Reader,
    private readonly note: (detail: string) => void,
  ) {}

  /** A text kept (title, description, name...): clipped, and counted in the release's budget. */
  text(s: string): string {
    const kept = clip(s)
    this.spend(kept.length)
    return kept
  }

  private spend(chars: number): void {
    this.chars += chars
    if (this.chars > SCHEMA_LIMITS.chars) throw new OverBudget('the schema is too large to show', `more than ${SCHEMA_LIMITS.chars} characters of text and values once $ref are expanded`)
  }

  private part(): void {
    if (++this.nodes > SCHEMA_LIMITS.nodes) throw new OverBudget('the schema is too large to show', `more than ${SCHEMA_LIMITS.nodes} parts once $ref are expanded`)
  }

  async node(raw: unknown, file: URL, pointer: string, depth: number): Promise<SchemaNode> {
    const made = await this.expand(raw, file, pointer, depth)
    // the texts enum and const are compared by, made once here rather than at each request
    if (made.enum) choices(made, 'enum')
    if (made.const !== undefined) choices(made, 'const')
    return made
  }

  private async expand(raw: unknown, file: URL, pointer: string, depth: number): Promise<SchemaNode> {
    this.part()
    if (raw === true) return {}
    if (raw === false) return { never: true }
    if (!isObject(raw)) return { unsupported: ['a schema that is not an object'] }
    if (depth > SCHEMA_LIMITS.depth) return { unsupported: [`nesting deeper than ${SCHEMA_LIMITS.depth}`] }
    const out: SchemaNode = {}
    const unsupported: string[] = []
    let base: SchemaNode | undefined
    if (typeof raw.$ref === 'string') base = await this.ref(raw.$ref, file, depth, unsupported)
    for (const [k, v] of Object.entries(raw)) {
      if (k === '$ref' || IGNORED.has(k)) continue
      switch (k) {
        case 'type': {
          const list = (Array.isArray(v) ? v : [v]).filter((t): t is string => typeof t === 'string' && TYPES.has(t))
          if (list.length) out.type = list
          break
        }
        case 'title':
        case 'description':
        case 'pattern':
        case 'format':
          if (typeof v === 'string') out[k] = this.text(v)
          break
        case 'default':
          out.default = this.value(v, 0)
          break
        case 'const':
          out.const = this.value(v, 0)
          break
        case 'enum':
          if (Array.isArray(v)) out.enum = v.slice(0, SCHEMA_LIMITS.entries).map((x) => this.value(x, 0))
          break
        case 'minimum':
        case 'maximum':
        case 'multipleOf':
        case 'minLength':
        case 'maxLength':
        case 'minItems':
        case 'maxItems':
          if (typeof v === 'number' && Number.isFinite(v)) out[k] = v
          break
        case 'exclusiveMinimum':
        case 'exclusiveMaximum':
          // draft 4 writes a boolean beside minimum/maximum; later drafts the bound itself
          if (typeof v === 'number' && Number.isFinite(v)) out[k] = v
          else if (v === true) {
            const bound = raw[k === 'exclusiveMinimum' ? 'minimum' : 'maximum']
            if (typeof bound === 'number' && Number.isFinite(bound)) out[k] = bound
          }
          break
        case 'uniqueItems':
          if (typeof v === 'boolean') out.uniqueItems = v
          break
        case 'required':
          if (Array.isArray(v)) out.required = v.filter((x): x is string => typeof x === 'string').slice(0, SCHEMA_LIMITS.entries).map((x) => this.text(x))
          break
        case 'items':
          if (Array.isArray(v)) unsupported.push('items as a list (tuples)')
          else out.items = await this.node(v, file, `${pointer}/items`, depth + 1)
          break
        case 'properties':
          if (isObject(v)) {
            out.properties = []
            for (const [name, sub] of Object.entries(v).slice(0, SCHEMA_LIMITS.entries)) {
              out.properties.push([this.text(name), await this.node(sub, file, `${pointer}/properties/${escapePointer(name)}`, depth + 1)])
            }
          }
          break
        case 'additionalProperties':
          if (typeof v === 'boolean') out.additionalProperties = v
          else out.additionalProperties = await this.node(v, file, `${pointer}/additionalProperties`, depth + 1)
          break
        case 'oneOf':
        case 'anyOf':
        case 'allOf':
          if (Array.isArray(v)) {
            const list: SchemaNode[] = []
            for (const [i, sub] of v.slice(0, SCHEMA_LIMITS.entries).entries()) list.push(await this.node(sub, file, `${pointer}/${k}/${i}`, depth + 1))
            out[k] = list
          }
          break
        default:
          unsupported.push(clip(k))
      }
    }
    if (unsupported.length) out.unsupported = unsupported.slice(0, 20)
    for (const u of out.unsupported ?? []) this.spend(u.length)
    if (!base) return out
    // `$ref` beside other keywords: the reference, with what is written beside it on top
    const merged: SchemaNode = { ...base }
    for (const [k, v] of Object.entries(out) as [keyof SchemaNode, unknown][]) {
      if (k === 'unsupported') merged.unsupported = [...(base.unsupported ?? []), ...(v as string[])]
      else (merged as Record<string, unknown>)[k] = v
    }
    return merged
  }

  private async ref(ref: string, file: URL, depth: number, unsupported: string[]): Promise<SchemaNode | undefined> {
    let target: URL
    let pointer: string
    try {
      const hash = ref.indexOf('#')
      pointer = hash < 0 ? '' : decodeURIComponent(ref.slice(hash + 1))
      target = hash === 0 ? file : this.reader.locate(hash < 0 ? ref : ref.slice(0, hash), file)
    } catch (err) {
      if (err instanceof SchemaUnavailable) {
        unsupported.push(`$ref ${err.message}`)
        return undefined
      }
      unsupported.push('$ref that is not a URL')
      return undefined
    }
    const key = `${target.href}#${pointer}`
    if (this.active.includes(key)) {
      unsupported.push('$ref in a loop')
      return undefined
    }
    let doc: unknown
    try {
      doc = await this.reader.read(target)
    } catch (err) {
      if (!(err instanceof SchemaUnavailable)) throw err
      if (err.detail) this.note(`$ref ${JSON.stringify(clip(ref))}: ${err.detail}`)
      unsupported.push(`$ref: ${err.message}`)
      return undefined
    }
    const found = resolvePointer(doc, pointer)
    if (found === undefined) {
      unsupported.push(`$ref ${JSON.stringify(clip(ref))} names nothing`)
      return undefined
    }
    this.active.push(key)
    try {
      return await this.node(found, target, pointer, depth + 1)
    } finally {
      this.active.pop()
    }
  }

  /** A JSON value of the schema (default, enum, const), its parts and characters counted. */
  private value(v: unknown, depth: number): Json {
    this.part()
    if (v === null || typeof v === 'boolean' || typeof v === 'number') return v
    if (typeof v === 'string') {
      this.spend(v.length)
      return v
    }
    if (depth > SCHEMA_LIMITS.depth) return null
    if (Array.isArray(v)) return v.map((x) => this.value(x, depth + 1))
    if (isObject(v)) {
      const out: { [key: string]: Json } = {}
      for (const [k, x] of Object.entries(v)) {
        this.spend(k.length)
        Object.defineProperty(out, k, { value: this.value(x, depth + 1), enumerable: true, writable: true, configurable: true })
      }
      return out
    }
    return null
  }
}

function escapePointer(s: string): string {
  return s.replace(/~/g, '~0').replace(/\//g, '~1')
}

/** A JSON pointer (`/definitions/a`) in a document; own properties only. */
function resolvePointer(doc: unknown, pointer: string): unknown {
  if (pointer === '') return doc
  if (!pointer.startsWith('/')) return undefined
  let cur: unknown = doc
  for (const raw of pointer.slice(1).split('/')) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    if (Array.isArray(cur) && /^\d+$/.test(part)) cur = cur[Number(part)]
    else if (isObject(cur) && Object.hasOwn(cur, part)) cur = cur[part]
    else return undefined
  }
  return cur
}

/** Checks a value against a SchemaNode with a step budget (hostile schema × hostile value). */
class Validator {
  readonly problems: string[] = []
  private steps = 0

  /** Counts work; too much is TooComplex (the request is refused, the proxy goes on). */
  private spend(steps: number): void {
    this.steps += steps
    if (this.steps > SCHEMA_LIMITS.steps) throw new TooComplex()
  }

  /** The canonical JSON text of `v`, or undefined when longer than `cap`; its length is counted. */
  private textOf(v: unknown, cap: number): string | undefined {
    const text = canonicalWithin(v, cap)
    this.spend(1 + Math.floor((text?.length ?? cap) / SCHEMA_LIMITS.charsPerStep))
    return text
  }

  check(s: SchemaNode, v: unknown, path: string): boolean {
    this.spend(1)
    const before = this.problems.length
    const fail = (what: string) => {
      if (this.problems.length < 20) this.problems.push(`${path === '' ? 'the parameters' : path}: ${what}`)
      else this.problems.length = 20
    }
    if (s.never) fail('no value is allowed')
    if (s.type && !s.type.some((t) => hasType(v, t))) {
      fail(`must be ${s.type.map((t) => (t === 'integer' ? 'an integer' : t === 'object' || t === 'array' ? `an ${t}` : `a ${t}`)).join(' or ')}`)
      return false
    }
    if (s.enum || s.const !== undefined) {
      const allowed = s.enum ? choices(s, 'enum') : undefined
      const only = s.const !== undefined ? choices(s, 'const') : undefined
      // the value's text once, and never longer than the longest allowed one: a 7 MB string
      // against 500 choices costs what its first few characters cost
      const text = this.textOf(v, Math.max(allowed?.longest ?? 0, only?.longest ?? 0))
      if (allowed && (text === undefined || !allowed.texts.has(text))) fail(`must be one of ${allowed.shown}`)
      if (only && (text === undefined || !only.texts.has(text))) fail(`must be ${only.shown}`)
    }
    if (typeof v === 'number') {
      if (s.minimum !== undefined && v < s.minimum) fail(`must be at least ${s.minimum}`)
      if (s.maximum !== undefined && v > s.maximum) fail(`must be at most ${s.maximum}`)
      if (s.exclusiveMinimum !== undefined && v <= s.exclusiveMinimum) fail(`must be more than ${s.exclusiveMinimum}`)
      if (s.exclusiveMaximum !== undefined && v >= s.exclusiveMaximum) fail(`must be less than ${s.exclusiveMaximum}`)
      if (s.multipleOf !== undefined && s.multipleOf > 0 && !Number.isInteger(Number((v / s.multipleOf).toPrecision(12)))) fail(`must be a multiple of ${s.multipleOf}`)
    }
    if (typeof v === 'string' && (s.minLength !== undefined || s.maxLength !== undefined)) {
      this.spend(Math.floor(v.length / SCHEMA_LIMITS.charsPerStep))
      const length = [...v].length
      if (s.minLength !== undefined && length < s.minLength) fail(`must have at least ${s.minLength} characters`)
      if (s.maxLength !== undefined && length > s.maxLength) fail(`must have at most ${s.maxLength} characters`)
    }
    if (Array.isArray(v)) {
      if (s.minItems !== undefined && v.length < s.minItems) fail(`must have at least ${s.minItems} items`)
      if (s.maxItems !== undefined && v.length > s.maxItems) fail(`must have at most ${s.maxItems} items`)
      if (s.uniqueItems) {
        const seen = new Set<string>()
        for (const x of v) {
          // each item's text once, within what is left of the budget
          const text = this.textOf(x, (SCHEMA_LIMITS.steps - this.steps) * SCHEMA_LIMITS.charsPerStep)
          if (text === undefined) throw new TooComplex()
          seen.add(text)
        }
        if (seen.size !== v.length) fail('must not repeat an item')
      }
      if (s.items) v.forEach((x, i) => this.check(s.items!, x, `${path}[${i}]`))
    }
    if (isObject(v)) {
      for (const name of s.required ?? []) if (!Object.hasOwn(v, name)) fail(`${JSON.stringify(name)} is required`)
      const known = new Set<string>()
      for (const [name, sub] of s.properties ?? []) {
        known.add(name)
        if (Object.hasOwn(v, name)) this.check(sub, v[name], path === '' ? name : `${path}.${name}`)
      }
      if (s.additionalProperties !== undefined && s.additionalProperties !== true) {
        const names = Object.keys(v)
        this.spend(Math.floor(names.length / SCHEMA_LIMITS.charsPerStep))
        for (const name of names) {
          if (known.has(name)) continue
          if (s.additionalProperties === false) fail(`${JSON.stringify(name.slice(0, 200))} is not a parameter of this software type`)
          else this.check(s.additionalProperties, v[name], path === '' ? name : `${path}.${name}`)
        }
      }
    }
    for (const sub of s.allOf ?? []) this.check(sub, v, path)
    if (s.anyOf && !s.anyOf.some((sub) => this.quietly(sub, v))) fail('matches none of the allowed forms (anyOf)')
    if (s.oneOf) {
      const n = s.oneOf.filter((sub) => this.quietly(sub, v)).length
      if (n !== 1) fail(n === 0 ? 'matches none of the allowed forms (oneOf)' : 'matches more than one of the allowed forms (oneOf)')
    }
    return this.problems.length === before
  }

  /** Whether a value fits, without reporting (for anyOf, oneOf). */
  private quietly(s: SchemaNode, v: unknown): boolean {
    const kept = this.problems.splice(0)
    const ok = this.check(s, v, '')
    this.problems.splice(0, this.problems.length, ...kept)
    return ok
  }
}

/** The values an enum or a const allows, as canonical JSON texts, and how a message shows them. */
interface Choices {
  texts: Set<string>
  longest: number
  shown: string
}

/** Made once per schema node (at load, by the Expander); kept beside the node, out of its JSON. */
const CHOICES = new WeakMap<SchemaNode, { enum?: Choices; const?: Choices }>()

function choices(s: SchemaNode, keyword: 'enum' | 'const'): Choices {
  let known = CHOICES.get(s)
  if (!known) CHOICES.set(s, (known = {}))
  const have = known[keyword]
  if (have) return have
  const values = keyword === 'enum' ? (s.enum ?? []) : [s.const]
  const texts = new Set<string>()
  let longest = 0
  let shown = ''
  for (const value of values) {
    const text = canonicalWithin(value, Number.MAX_SAFE_INTEGER) ?? 'null'
    texts.add(text)
    longest = Math.max(longest, text.length)
    if (shown.length < 300) shown += `${shown ? ', ' : ''}${text.slice(0, 300)}`
  }
  const made = { texts, longest, shown: shown.length > 300 ? `${shown.slice(0, 300)}…` : shown }
  known[keyword] = made
  return made
}

/**
 * JSON text with sorted keys (equal values give equal text), or undefined as soon as it would be
 * longer than `cap`: what is too long is never fully walked nor sorted.
 */
function canonicalWithin(value: unknown, cap: number): string | undefined {
  const parts: string[] = []
  let size = 0
  const over = (more: number) => size + more > cap
  const put = (s: string): boolean => {
    size += s.length
    parts.push(s)
    return size <= cap
  }
  const walk = (v: unknown): boolean => {
    if (typeof v === 'string') return !over(v.length + 2) && put(JSON.stringify(v))
    if (Array.isArray(v)) {
      // `[a,b]`: at least two characters an item
      if (over(2 * v.length + 1)) return false
      if (!put('[')) return false
      for (let i = 0; i < v.length; i++) if ((i > 0 && !put(',')) || !walk(v[i])) return false
      return put(']')
    }
    if (isObject(v)) {
      const keys = Object.keys(v)
      // `{"k":v}`: at least five characters a key
      if (over(5 * keys.length + 1)) return false
      keys.sort()
      if (!put('{')) return false
      for (const [i, k] of keys.entries()) {
        if ((i > 0 && !put(',')) || over(k.length + 3) || !put(`${JSON.stringify(k)}:`) || !walk(v[k])) return false
      }
      return put('}')
    }
    return put(JSON.stringify(v) ?? 'null')
  }
  return walk(value) ? parts.join('') : undefined
}

/** Whether a JSON value is nested deeper than `max` (iterative: depth costs no stack). */
function depthOver(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]]
  while (stack.length) {
    const [v, d] = stack.pop()!
    if (v === null || typeof v !== 'object') continue
    if (d >= max) return true
    for (const x of Object.values(v)) stack.push([x, d + 1])
  }
  return false
}

function hasType(v: unknown, t: string): boolean {
  switch (t) {
    case 'string':
      return typeof v === 'string'
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v)
    case 'number':
      return typeof v === 'number' && Number.isFinite(v)
    case 'boolean':
      return typeof v === 'boolean'
    case 'null':
      return v === null
    case 'array':
      return Array.isArray(v)
    case 'object':
      return isObject(v)
    default:
      return true
  }
}
