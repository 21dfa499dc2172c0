// The local master's panel (proxy.md §10.2): `/panel/` is one self-contained page that shows and
// requests instances through the JSON API of proxy-jsonrpc.ts, `/panel/public/<path>` downloads
// a file of `[slapproxy] public_directory_path`; `/panel/schema` gives the page the request form
// of a supplied software release (proxy-schema.ts), `/panel/request` checks a request against it
// before making it. One Panel per ProxyApp (proxy-server.ts), which routes `/panel*` here.
import { closeSync, createReadStream, openSync, statSync, type BigIntStats } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { posix, resolve } from 'node:path'
import type { Logger } from './log.ts'
import { quote } from './names.ts'
import { isJsonType, JsonRpcError, sendError, sendJson, sendJsonBytes } from './proxy-jsonrpc.ts'
import { findEntry, loadReleaseSchema, parametersToCheck, SCHEMA_LIMITS, SchemaUnavailable, serialiseParameters, validateParameters, type ReleaseSchema } from './proxy-schema.ts'
import { pyFloatRepr } from './slap-protocol.ts'

// node:crypto costs a process ~1.4 MB of private memory and ~1 MB of code pages, and time to
// load: taken on first use only
const nodeCrypto = (): typeof import('node:crypto') => process.getBuiltinModule('node:crypto')

/** What the panel needs from the master that serves it. */
export interface PanelHost {
  /** `public_directory_path` as configured (undefined or empty: not configured) */
  publicDirectory: string | undefined
  /** whether a software release of this URL is supplied to a computer of this master */
  isSupplied(url: string): boolean
  /** the request body, or undefined when it is over the size limit */
  readBody(req: IncomingMessage): Promise<string | undefined>
  /** the JSON API's own checks of a slapos.post.v0.software_instance body, which read nothing (JsonRpcError when refused) */
  precheckRequest(body: Record<string, unknown>): void
  /** slapos.post.v0.software_instance of the JSON API with this body (JsonRpcError when refused) */
  requestInstance(body: Record<string, unknown>, req: IncomingMessage): Promise<unknown>
  log: Logger
}

/** Schema loads at once; more are answered 503 (each may take seconds and a few MB). */
const MAX_SCHEMA_LOADS = 4
/** How long a schema read (or its failure) is reused: the page asks when a URL is chosen, then on submit. */
const SCHEMA_CACHE_MS = 30_000
/** Schemas kept, and the bytes of their answers */
const SCHEMA_CACHE_ENTRIES = 32
const SCHEMA_CACHE_BYTES = 16 * 1024 * 1024
/** Headers of the panel's JSON answers, beside those of the JSON API */
const JSON_HEADERS = { 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' }
const NOT_SUPPLIED = 'this software release is not supplied to this master: its schema is read once it is'
const BUSY = 'The proxy is reading other software release schemas: try again in a moment.'

/** A release's schema and the answer of `/panel/schema` for it, made once. */
interface LoadedSchema {
  schema: ReleaseSchema
  answer: Buffer
}

class PanelBusy extends Error {}

/** The panel of one master: its routes, and the schemas it read recently (its own, not the process's). */
export class Panel {
  private readonly schemas = new Map<string, { at: number; loaded: Promise<LoadedSchema>; bytes: number }>()
  private loading = 0

  constructor(private readonly host: PanelHost) {}

  /** Answers a request whose path is `/panel` or starts with `/panel/`. */
  serve(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const rest = url.pathname.replace(/^\/+panel/, '')
    const method = req.method ?? 'GET'
    if (rest === '/request') return void this.request(req, res)
    req.resume()
    if (method === 'OPTIONS') return send(res, 200, '', { Allow: ALLOW })
    if (method !== 'GET' && method !== 'HEAD') return errorPage(res, 405, DESCRIPTIONS[405], { Allow: ALLOW })
    const head = method === 'HEAD'
    // like werkzeug's strict slashes: the page lives at /panel/, so that its relative URLs work
    if (rest === '') {
      const to = `/panel/${url.search}`
      const page = `<!doctype html>\n<html lang=en>\n<title>Redirecting...</title>\n<h1>Redirecting...</h1>\n<p>You should be redirected automatically to the target URL: <a href="${escapeHtml(to)}">${escapeHtml(to)}</a>. If not, click the link.\n`
      return send(res, 308, page, { Location: to })
    }
    if (rest === '/') return servePage(req, res, head)
    if (rest === '/schema') return void this.serveSchema(res, url, head)
    if (rest.startsWith('/public/') && rest.length > '/public/'.length) {
      // 403 rather than 404, like the original, so that an operator sees what is missing
      if (!this.host.publicDirectory) return errorPage(res, 403, 'The public directory path is not configured.')
      return servePublicFile(req, res, this.host.publicDirectory, rest.slice('/public/'.length), head)
    }
    return errorPage(res, 404, DESCRIPTIONS[404])
  }

  /**
   * The release's schema, read only when the release is supplied to this master. Supplying needs
   * no login, so this does not stop the page from making the proxy fetch a URL of its choice: what
   * bounds that is proxy-schema.ts (`.json` files only, no redirect, no link-local or metadata
   * address, sizes and times), MAX_SCHEMA_LOADS, and answers that never say why a file could not
   * be read (the log does).
   */
  private schemaOf(url: string): Promise<LoadedSchema> {
    if (!this.host.isSupplied(url)) return Promise.reject(new SchemaUnavailable(NOT_SUPPLIED))
    const now = Date.now()
    const hit = this.schemas.get(url)
    if (hit && now - hit.at < SCHEMA_CACHE_MS) return hit.loaded
    if (this.loading >= MAX_SCHEMA_LOADS) return Promise.reject(new PanelBusy())
    this.loading++
    const loaded = this.load(url).finally(() => this.loading--)
    const entry = { at: now, loaded, bytes: 0 }
    this.schemas.delete(url)
    this.schemas.set(url, entry)
    loaded.then(
      (l) => {
        entry.bytes = l.answer.length
        this.trim()
      },
      () => this.trim(),
    )
    return loaded
  }

  private async load(url: string): Promise<LoadedSchema> {
    const log = (detail: string) => this.host.log.warning(`panel: the schema of ${quote(url.slice(0, 500))}: ${detail.slice(0, 1000)}`)
    try {
      const schema = await loadReleaseSchema(url, log)
      const answer = Buffer.from(
        JSON.stringify({ software_release_uri: url, available: true, name: schema.name, description: schema.description, software_types: schema.types.map(({ softwareType, ...e }) => ({ ...e, software_type: softwareType })) }),
        'utf8',
      )
      if (answer.length > SCHEMA_LIMITS.answer) throw new SchemaUnavailable('the schema is too large to show', `its form would take ${answer.length} bytes (at most ${SCHEMA_LIMITS.answer})`)
      return { schema, answer }
    } catch (err) {
      if (err instanceof SchemaUnavailable && err.detail) log(err.detail)
      throw err
    }
  }

  /** Old schemas go first, then the oldest while there are too many or too large ones. */
  private trim(): void {
    const now = Date.now()
    let bytes = 0
    for (const [url, e] of this.schemas) {
      if (now - e.at >= SCHEMA_CACHE_MS) this.schemas.delete(url)
      else bytes += e.bytes
    }
    for (const [url, e] of this.schemas) {
      if (this.schemas.size <= SCHEMA_CACHE_ENTRIES && bytes <= SCHEMA_CACHE_BYTES) break
      this.schemas.delete(url)
      bytes -= e.bytes
    }
  }

  /** `GET /panel/schema?url=<release>`: the form of a release, or why there is none. */
  private async serveSchema(res: ServerResponse, url: URL, head: boolean): Promise<void> {
    const release = url.searchParams.get('url')
    if (!release) return sendError(res, 400, 'Give the software release URL as ?url=', head, JSON_HEADERS)
    try {
      sendJsonBytes(res, 200, (await this.schemaOf(release)).answer, head, JSON_HEADERS)
    } catch (err) {
      if (err instanceof PanelBusy) return sendError(res, 503, BUSY, head, { ...JSON_HEADERS, 'Retry-After': '2' })
      if (!(err instanceof SchemaUnavailable)) {
        this.host.log.error(`GET /panel/schema: ${err instanceof Error ? err.message : String(err)}`)
        return sendError(res, 500, 'Internal server error', head, JSON_HEADERS)
      }
      sendJson(res, 200, { software_release_uri: release, available: false, problem: err.message }, head, JSON_HEADERS)
    }
  }

  /**
   * `POST /panel/request`: the body of slapos.post.v0.software_instance, plus the schema entry the
   * page chose (`software_type_entry`). The JSON API's own checks first; then, when the release
   * has an input schema for that software type, the parameters are checked against it (refused:
   * 400, nothing requested) and encoded as its serialisation says; otherwise they go as they are.
   */
  private async request(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const head = req.method === 'HEAD'
    if (req.method !== 'POST') {
      req.resume()
      return sendError(res, 405, 'The method is not allowed for the requested URL.', head, { ...JSON_HEADERS, Allow: 'POST' })
    }
    if (!isJsonType(req.headers['content-type'])) {
      req.resume()
      return sendError(res, 415, "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.", false, JSON_HEADERS)
    }
    try {
      const text = await this.host.readBody(req)
      if (text === undefined) throw new JsonRpcError(413, 'The data value transmitted exceeds the capacity limit.')
      let body: unknown
      try {
        body = JSON.parse(text)
      } catch {
        throw new JsonRpcError(400, 'The request is not valid JSON.')
      }
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new JsonRpcError(400, 'The request must be a JSON object.')
      const doc = body as Record<string, unknown>
      const entryKey = doc.software_type_entry
      delete doc.software_type_entry
      if (entryKey !== undefined && typeof entryKey !== 'string') throw new JsonRpcError(400, 'software_type_entry must be a string')
      // the cheap checks before the schema is read and the parameters walked
      this.host.precheckRequest(doc)
      await this.checkAgainstSchema(doc, entryKey)
      sendJson(res, 200, await this.host.requestInstance(doc, req), false, JSON_HEADERS)
    } catch (err) {
      if (err instanceof PanelBusy) return sendError(res, 503, BUSY, false, { ...JSON_HEADERS, 'Retry-After': '2' })
      if (err instanceof JsonRpcError) {
        this.host.log.warning(`POST /panel/request: ${err.status} ${err.message.slice(0, 2000)}`)
        return sendError(res, err.status, err.message, false, JSON_HEADERS)
      }
      this.host.log.error(`POST /panel/request: ${err instanceof Error ? err.message : String(err)}`)
      sendError(res, 500, 'Internal server error', false, JSON_HEADERS)
    }
  }

  /** Checks and encodes `doc.parameters` in place when the release has a schema for the request. */
  private async checkAgainstSchema(doc: Record<string, unknown>, entryKey: string | undefined): Promise<void> {
    const { software_release_uri: release, software_type: softwareType } = doc
    if (typeof release !== 'string' || typeof softwareType !== 'string') return
    if (!this.host.isSupplied(release)) {
      if (entryKey !== undefined) throw new JsonRpcError(400, 'Not requested: this software release is not supplied to this master, its schema cannot be checked')
      return
    }
    let schema: ReleaseSchema
    try {
      schema = (await this.schemaOf(release)).schema
    } catch (err) {
      if (!(err instanceof SchemaUnavailable)) throw err
      // no schema: the parameters go as given, as from the key/value form
      if (entryKey !== undefined) throw new JsonRpcError(400, `Not requested: the schema cannot be read (${err.message})`)
      return
    }
    const entry = findEntry(schema, softwareType, doc.shared === true, entryKey)
    if (!entry) {
      if (entryKey !== undefined) throw new JsonRpcError(400, 'Not requested: this software type is not in the software release schema')
      return
    }
    if (!entry.schema) {
      if (entryKey !== undefined) throw new JsonRpcError(400, `Not requested: the input schema of this software type cannot be read (${entry.problem ?? ''})`)
      return
    }
    const given = doc.parameters ?? {}
    if (given === null || typeof given !== 'object' || Array.isArray(given)) throw new JsonRpcError(400, 'Not requested: the parameters must be a JSON object')
    const problems = validateParameters(entry.schema, parametersToCheck(entry.serialisation, entry.schema, given as Record<string, unknown>))
    if (problems.length) throw new JsonRpcError(400, `Not requested, the parameters do not fit the schema of ${entry.title}: ${problems.join('; ')}`)
    doc.parameters = serialiseParameters(entry.serialisation, given as Record<string, unknown>)
  }
}

// --- internal ---

const ALLOW = 'HEAD, GET, OPTIONS'
const HTML = 'text/html; charset=utf-8'
const DESCRIPTIONS = {
  404: 'The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.',
  405: 'The method is not allowed for the requested URL.',
  416: 'The server cannot provide the requested range.',
  500: 'The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.',
} as const
/** werkzeug's reason phrases, which differ from Node's for some statuses */
const REASONS: Record<number, string> = {
  200: 'OK',
  206: 'Partial Content',
  304: 'Not Modified',
  308: 'Permanent Redirect',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  412: 'Precondition Failed',
  416: 'Requested Range Not Satisfiable',
  500: 'Internal Server Error',
}

function send(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}, head = false): void {
  const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : body
  res.writeHead(status, (REASONS[status] ?? '').toUpperCase(), { 'Content-Type': HTML, ...headers, 'Content-Length': String(buf.length) })
  res.end(head ? undefined : buf)
}

/** The HTML error page of werkzeug, as the original's aborts show it. */
function errorPage(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  const reason = REASONS[status] ?? 'Error'
  send(res, status, `<!doctype html>\n<html lang=en>\n<title>${status} ${reason}</title>\n<h1>${reason}</h1>\n<p>${escapeHtml(text)}</p>\n`, headers)
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

let pageCache: { body: Buffer; etag: string } | undefined

function servePage(req: IncomingMessage, res: ServerResponse, head: boolean): void {
  pageCache ??= (() => {
    const body = Buffer.from(PANEL_PAGE, 'utf8')
    return { body, etag: nodeCrypto().createHash('sha1').update(body).digest('hex') }
  })()
  const headers = { 'Content-Type': HTML, 'Cache-Control': 'no-cache', ETag: `"${pageCache.etag}"` }
  if (!isModified(req, pageCache.etag, undefined)) {
    res.writeHead(304, 'NOT MODIFIED', { 'Cache-Control': headers['Cache-Control'], ETag: headers.ETag })
    return void res.end()
  }
  send(res, 200, pageCache.body, headers, head)
}

/**
 * Flask's `send_from_directory(dir, name, as_attachment=True, conditional=True)`: werkzeug's
 * safe_join (normalized, never absolute nor above the directory), regular files only, the
 * headers and conditional/range answers of werkzeug's send_file.
 */
function servePublicFile(req: IncomingMessage, res: ServerResponse, directory: string, encodedName: string, head: boolean): void {
  let name: string
  try {
    name = decodeURIComponent(encodedName)
  } catch {
    return errorPage(res, 404, DESCRIPTIONS[404])
  }
  const part = safePart(name)
  if (part === undefined) return errorPage(res, 404, DESCRIPTIONS[404])
  // werkzeug joins without normalizing the configured directory (this is also what its ETag hashes);
  // a relative one is taken from the current directory (the original: from its package directory)
  const base = directory.startsWith('/') ? directory : resolve(directory)
  const path = base.endsWith('/') ? base + part : `${base}/${part}`
  let st: BigIntStats
  try {
    st = statSync(path, { bigint: true })
  } catch {
    return errorPage(res, 404, DESCRIPTIONS[404])
  }
  if (!st.isFile()) return errorPage(res, 404, DESCRIPTIONS[404])
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch {
    return errorPage(res, 500, DESCRIPTIONS[500])
  }
  const size = Number(st.size)
  // Python's st_mtime: seconds + nanoseconds * 1e-9 as a double
  const mtime = Number(st.mtimeNs / 1_000_000_000n) + Number(st.mtimeNs % 1_000_000_000n) * 1e-9
  const lastModifiedSeconds = Math.floor(mtime)
  const etag = `${pyFloatRepr(mtime)}-${size}-${adler32(Buffer.from(path, 'utf8'))}`
  const fileName = posix.basename(part)
  const headers: Record<string, string> = {
    'Content-Disposition': contentDisposition(fileName),
    'Content-Type': guessContentType(fileName),
    'Content-Length': String(size),
    'Last-Modified': new Date(lastModifiedSeconds * 1000).toUTCString(),
    'Cache-Control': 'no-cache',
    ETag: `"${etag}"`,
    'Accept-Ranges': 'bytes',
  }
  let range: [number, number] | undefined
  const rangeHeader = header(req, 'range')
  // werkzeug: a Range of a non-empty file, unless If-Range names another version
  if (rangeHeader !== undefined && size > 0 && (header(req, 'if-range') === undefined || !isModified(req, etag, lastModifiedSeconds, true))) {
    range = byteRange(rangeHeader, size)
    if (range === undefined) {
      closeSync(fd)
      return errorPage(res, 416, DESCRIPTIONS[416], { 'Content-Range': `bytes */${size}` })
    }
  }
  let status = 200
  if (range) {
    status = 206
    headers['Content-Length'] = String(range[1] - range[0])
    headers['Content-Range'] = `bytes ${range[0]}-${range[1] - 1}/${size}`
  } else if (!isModified(req, etag, lastModifiedSeconds)) {
    // werkzeug answers a failed If-Match 412 with the whole document, and 304 with no entity headers
    if (parseEtags(header(req, 'if-match')).any) status = 412
    else {
      closeSync(fd)
      res.writeHead(304, 'NOT MODIFIED', {
        'Content-Disposition': headers['Content-Disposition'] ?? '',
        'Cache-Control': 'no-cache',
        ETag: `"${etag}"`,
        'Accept-Ranges': 'bytes',
      })
      return void res.end()
    }
  }
  res.writeHead(status, (REASONS[status] ?? '').toUpperCase(), headers)
  if (head || size === 0 || (range && range[1] === range[0])) {
    closeSync(fd)
    return void res.end()
  }
  const stream = createReadStream('', { fd, start: range?.[0] ?? 0, end: (range?.[1] ?? size) - 1 })
  stream.on('error', () => res.destroy())
  stream.pipe(res)
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name]
  return Array.isArray(v) ? v.join(', ') : v
}

/** werkzeug's safe_join for one untrusted part: normalized; undefined when absolute or above the base. */
function safePart(name: string): string | undefined {
  if (name.includes('\0')) return undefined
  let part = posix.normalize(name)
  if (part.length > 1 && part.endsWith('/')) part = part.slice(0, -1)
  if (part.startsWith('/') || part === '..' || part.startsWith('../')) return undefined
  return part
}

/** zlib's adler32, unsigned: the last part of werkzeug's file ETag. */
function adler32(data: Buffer): number {
  let a = 1
  let b = 0
  for (const byte of data) {
    a = (a + byte) % 65521
    b = (b + a) % 65521
  }
  return (b * 65536 + a) >>> 0
}

/** `attachment; filename=<name>`, with werkzeug's ASCII fallback and RFC 5987 form for other names. */
function contentDisposition(name: string): string {
  const quoted = (v: string) => (/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(v) ? v : `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`)
  // printable ASCII as werkzeug; anything else (other characters, and control characters,
  // which a header may not hold) in the RFC 5987 form, with a fallback of what is printable
  if (/^[\x20-\x7e]*$/.test(name)) return `attachment; filename=${quoted(name)}`
  const simple = name.normalize('NFKD').replace(/[^\x20-\x7e]/g, '')
  const star = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
  return `attachment; filename=${quoted(simple)}; filename*=UTF-8''${star}`
}

/**
 * Python's mimetypes.guess_type for the usual names, with Flask's charset for text; compression
 * suffixes are encodings (`a.tar.gz` is a tar), an unknown type is application/octet-stream.
 */
function guessContentType(name: string): string {
  let lower = name.toLowerCase()
  if (lower.endsWith('.tgz')) lower = `${lower.slice(0, -4)}.tar`
  lower = lower.replace(/\.(gz|bz2|xz|br|z)$/, '')
  const dot = lower.lastIndexOf('.')
  const type = dot < 0 ? undefined : MIME_TYPES[lower.slice(dot + 1)]
  if (type === undefined) return 'application/octet-stream'
  const textual = type.startsWith('text/') || type.endsWith('+xml') || ['application/javascript', 'application/xml', 'application/sql'].includes(type)
  return textual ? `${type}; charset=utf-8` : type
}

const MIME_TYPES: Record<string, string> = {
  cfg: 'application/octet-stream',
  css: 'text/css',
  csv: 'text/csv',
  gif: 'image/gif',
  htm: 'text/html',
  html: 'text/html',
  ico: 'image/vnd.microsoft.icon',
  jpeg: 'image/jpeg',
  jpg: 'image/jpeg',
  js: 'text/javascript',
  json: 'application/json',
  md: 'text/markdown',
  pdf: 'application/pdf',
  png: 'image/png',
  py: 'text/x-python',
  sh: 'application/x-sh',
  svg: 'image/svg+xml',
  tar: 'application/x-tar',
  txt: 'text/plain',
  webp: 'image/webp',
  xml: 'text/xml',
  zip: 'application/zip',
}

/** werkzeug's is_resource_modified: If-Modified-Since, If-None-Match (weak), If-Match (strong), If-Range. */
function isModified(req: IncomingMessage, etag: string, lastModifiedSeconds: number | undefined, withIfRange = false): boolean {
  let unmodified = false
  let ifRangeDate: number | undefined
  let ifRangeEtag: string | undefined
  const ifRange = withIfRange ? header(req, 'if-range') : undefined
  if (ifRange) {
    ifRangeDate = parseHttpDate(ifRange)
    if (ifRangeDate === undefined) ifRangeEtag = unquoteEtag(ifRange)
  }
  const since = ifRangeDate ?? parseHttpDate(header(req, 'if-modified-since'))
  if (since !== undefined && lastModifiedSeconds !== undefined && lastModifiedSeconds <= since) unmodified = true
  if (ifRangeEtag !== undefined) return !parseEtags(ifRangeEtag).contains(etag)
  const noneMatch = parseEtags(header(req, 'if-none-match'))
  if (noneMatch.any) unmodified = noneMatch.containsWeak(etag)
  const match = parseEtags(header(req, 'if-match'))
  if (match.any) unmodified = !match.strong.includes(etag)
  return !unmodified
}

/** An RFC 2822 / HTTP date in seconds; one without a zone is UTC (werkzeug's parse_date). */
function parseHttpDate(v: string | undefined): number | undefined {
  const m = v === undefined ? null : HTTP_DATE.exec(v)
  if (!m) return undefined
  const d = Date.parse(m[2] ? v! : `${v} GMT`)
  return Number.isNaN(d) ? undefined : Math.floor(d / 1000)
}

const HTTP_DATE = /^\s*(?:[A-Za-z]{3},\s*)?\d{1,2}[\s-][A-Za-z]{3}[\s-]\d{2,4}\s+\d{1,2}:\d{2}(?::\d{2})?(\s*(?:GMT|UTC?|Z|[+-]\d{4}))?\s*$/

function unquoteEtag(v: string): string {
  let e = v.trim()
  if (e.startsWith('W/') || e.startsWith('w/')) e = e.slice(2)
  if (e.length >= 2 && e.startsWith('"') && e.endsWith('"')) e = e.slice(1, -1)
  return e
}

/** werkzeug's parse_etags: `"a", W/"b"` or `*`. */
function parseEtags(v: string | undefined): { any: boolean; strong: string[]; contains(e: string): boolean; containsWeak(e: string): boolean } {
  const strong: string[] = []
  const weak: string[] = []
  let star = false
  if (v) {
    const re = /([Ww]\/)?(?:"(.*?)"|(.*?))(?:\s*,\s*|$)/y
    let pos = 0
    while (pos < v.length) {
      re.lastIndex = pos
      const m = re.exec(v)
      if (!m || re.lastIndex === pos) break
      const raw = m[2] ?? m[3] ?? ''
      if (m[2] === undefined && raw === '*') {
        star = true
        break
      }
      ;(m[1] ? weak : strong).push(raw)
      pos = re.lastIndex
    }
  }
  return {
    any: star || strong.length > 0 || weak.length > 0,
    strong: star ? [] : strong,
    contains: (e) => star || strong.includes(e),
    containsWeak: (e) => star || strong.includes(e) || weak.includes(e),
  }
}

/** werkzeug's Range: one `bytes=` range only, as [start, end) within the file; undefined = 416. */
function byteRange(value: string, size: number): [number, number] | undefined {
  const eq = value.indexOf('=')
  if (eq < 0 || value.slice(0, eq).trim().toLowerCase() !== 'bytes') return undefined
  const items = value.slice(eq + 1).split(',')
  if (items.length !== 1) return undefined
  const item = (items[0] ?? '').trim()
  let start: number
  let end: number
  if (item.startsWith('-')) {
    if (!/^-\d+$/.test(item)) return undefined
    start = size + Number(item)
    end = size
  } else {
    const [first = '', last = ''] = item.split('-').map((s) => s.trim())
    if (!/^\d+$/.test(first) || (last !== '' && !/^\d+$/.test(last))) return undefined
    start = Number(first)
    end = last === '' ? size : Number(last) + 1
    if (last !== '' && start >= end) return undefined
  }
  if (start < 0 || start >= size || start >= end) return undefined
  return [start, Math.min(end, size)]
}

/**
 * The panel: plain HTML and a little JavaScript, no external resource. Everything it shows is
 * put in the page as text nodes (never parsed as HTML). The JSON API lives at the proxy's
 * root, so the page calls `../slapos.*`, which also works behind a front with a path prefix.
 */
const PANEL_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SlapOS local master</title>
<style>
[hidden] { display: none !important }
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 75em; margin: 0 auto; padding: 0 1em 3em }
h1 { font-size: 1.4em; display: flex; gap: 1em; align-items: center }
h2 { font-size: 1.15em; border-bottom: 1px solid #ccc; margin-top: 1.6em }
h3 { font-size: 1em; margin: 0 0 .4em }
table { border-collapse: collapse; margin: .3em 0 }
th, td { border: 1px solid #ddd; padding: .2em .5em; text-align: left; vertical-align: top }
th { background: #f5f5f5; font-weight: 600 }
td.value { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all }
.card { border: 1px solid #ccc; border-radius: 4px; padding: .6em 1em; margin: .7em 0 }
.muted { color: #777 }
.error { color: #b00 }
.started { color: #070 } .stopped { color: #a60 } .destroyed { color: #b00 }
form { max-width: 45em }
form label { display: block; margin: .5em 0 }
form input:not([type=checkbox]):not([type=radio]), form select, form textarea { display: block; width: 100%; box-sizing: border-box; padding: .25em }
form textarea { font-family: ui-monospace, monospace; min-height: 8em }
fieldset { border: 1px solid #ccc; margin: .6em 0 }
.inline { display: inline-block; margin-right: 1.2em }
#pairs input { display: inline-block; width: 40%; margin: .15em 0 }
#schema-form { border: 0; padding: 0; margin: 0 }
.field small { display: block }
.field code { color: #555 }
</style>
</head>
<body>
<h1>SlapOS local master <button id="refresh" type="button">Refresh</button></h1>
<p id="status" class="muted" role="status"></p>

<h2>Computers and their software releases</h2>
<div id="computers"></div>

<h2>Instance trees</h2>
<div id="trees"></div>

<h2>Request an instance</h2>
<form id="request" novalidate>
  <label>Title <input name="title" required maxlength="200"></label>
  <label>Software release URL <input name="software_release_uri" required list="software-releases"></label>
  <datalist id="software-releases"></datalist>
  <p id="schema-status" class="muted" role="status"></p>
  <label class="inline"><input type="checkbox" name="shared"> Shared instance</label>
  <label id="software-type-text">Software type <input name="software_type" value="default"></label>
  <label id="software-type-choice" hidden>Software type <select name="software_type_entry"></select></label>
  <p id="software-type-description" class="muted"></p>
  <fieldset>
    <legend>Parameters</legend>
    <label class="inline" id="mode-form" hidden><input type="radio" name="parameter_mode" value="form"> form of the schema</label>
    <label class="inline" id="mode-pairs"><input type="radio" name="parameter_mode" value="pairs" checked> key / value</label>
    <label class="inline"><input type="radio" name="parameter_mode" value="json"> JSON object</label>
    <fieldset id="schema-form" hidden disabled></fieldset>
    <div id="pairs"></div>
    <button id="add-pair" type="button">Add a parameter</button>
    <textarea name="parameters_json" hidden spellcheck="false">{}</textarea>
  </fieldset>
  <label>State <select name="state"><option>started</option><option>stopped</option><option>destroyed</option></select></label>
  <label>On computer <select name="computer_guid"><option value="">any</option></select></label>
  <button type="submit">Request</button>
  <p id="request-result" role="status"></p>
</form>

<script>
'use strict'
const form = document.getElementById('request')

/** POST /slapos.<name> with a JSON body; rejects with the API's error title. */
async function api(name, body) {
  const r = await fetch(new URL('../' + name, document.baseURI), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body || {}),
  })
  let doc
  try { doc = await r.json() } catch (e) { throw new Error('HTTP ' + r.status + ' ' + r.statusText) }
  if (!r.ok) throw new Error(doc && doc.title ? doc.title : 'HTTP ' + r.status)
  return doc
}

/** An element with attributes and children; strings become text nodes, never HTML. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v)
    else e.setAttribute(k, v)
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) e.append(c)
  return e
}

function text(v) {
  return typeof v === 'string' ? v : JSON.stringify(v, null, 2)
}

function dictTable(d) {
  const keys = Object.keys(d || {}).sort()
  if (!keys.length) return el('span', { class: 'muted' }, 'none')
  return el('table', {}, keys.map((k) => el('tr', {}, el('th', {}, k), el('td', { class: 'value' }, text(d[k])))))
}

async function loadComputers() {
  const computers = (await api('slapos.allDocs.WIP.compute_node_list')).result_list
  const lists = await Promise.all(computers.map((c) =>
    api('slapos.allDocs.v0.compute_node_software_installation_list', { computer_guid: c.computer_guid })))
  const box = document.getElementById('computers')
  const urls = new Set()
  box.replaceChildren()
  if (!computers.length) box.append(el('p', { class: 'muted' }, 'No computer yet: format a node against this master.'))
  computers.forEach((c, i) => {
    const software = lists[i].result_list
    software.forEach((s) => urls.add(s.software_release_uri))
    box.append(el('div', { class: 'card computer' },
      el('h3', {}, c.computer_guid),
      software.length
        ? el('table', {}, el('tr', {}, el('th', {}, 'Software release'), el('th', {}, 'State')),
            software.map((s) => el('tr', {}, el('td', { class: 'value' }, s.software_release_uri), el('td', { class: s.state }, s.state))))
        : el('span', { class: 'muted' }, 'no software release supplied')))
  })
  document.getElementById('software-releases').replaceChildren(...[...urls].sort().map((u) => el('option', { value: u })))
  const select = form.elements.computer_guid
  const chosen = select.value
  select.replaceChildren(el('option', { value: '' }, 'any'), ...computers.map((c) => el('option', { value: c.computer_guid }, c.computer_guid)))
  select.value = computers.some((c) => c.computer_guid === chosen) ? chosen : ''
}

async function loadTrees() {
  const trees = (await api('slapos.allDocs.v0.instance_tree_list')).result_list
  const docs = await Promise.all(trees.map((t) =>
    api('slapos.get.v0.instance_tree', { title: t.title }).catch((e) => ({ title: t.title, error: e.message }))))
  const box = document.getElementById('trees')
  box.replaceChildren()
  if (!docs.length) box.append(el('p', { class: 'muted' }, 'No instance requested yet.'))
  for (const d of docs) {
    if (d.error) {
      box.append(el('div', { class: 'card tree' }, el('h3', {}, d.title), el('p', { class: 'error' }, d.error)))
      continue
    }
    const where = d.compute_partition_id ? d.computer_guid + ' / ' + d.compute_partition_id : 'not allocated'
    const addresses = (d.ip_list || []).map((a) => a.join(' ')).join(', ')
    box.append(el('div', { class: 'card tree', 'data-title': d.title },
      el('h3', {}, d.title, d.shared ? ' (shared)' : ''),
      el('table', {},
        el('tr', {}, el('th', {}, 'Software release'), el('td', { class: 'value' }, d.software_release_uri)),
        el('tr', {}, el('th', {}, 'Software type'), el('td', {}, d.software_type)),
        el('tr', {}, el('th', {}, 'State'), el('td', { class: 'state ' + d.state }, d.state)),
        el('tr', {}, el('th', {}, 'Computer / partition'), el('td', {}, where)),
        addresses ? el('tr', {}, el('th', {}, 'Addresses'), el('td', { class: 'value' }, addresses)) : null,
        el('tr', {}, el('th', {}, 'Connection parameters'), el('td', { class: 'connection' }, dictTable(d.connection_parameters))),
        el('tr', {}, el('th', {}, 'Parameters'), el('td', { class: 'parameters' }, dictTable(d.parameters)))),
      el('button', { type: 'button', onclick: () => fillForm(d) }, 'Edit in the request form')))
  }
}

async function refresh() {
  const status = document.getElementById('status')
  status.className = 'muted'
  status.textContent = 'Loading...'
  try {
    await Promise.all([loadComputers(), loadTrees()])
    status.textContent = 'Updated at ' + new Date().toLocaleTimeString()
  } catch (e) {
    status.className = 'error'
    status.textContent = 'Could not read the master: ' + e.message
  }
}

function addPair(key, value) {
  const row = el('div', { class: 'pair' },
    el('input', { 'aria-label': 'parameter name', placeholder: 'name', class: 'key' }),
    ' ',
    el('input', { 'aria-label': 'parameter value', placeholder: 'value', class: 'value' }),
    ' ',
    el('button', { type: 'button', onclick: () => row.remove() }, 'Remove'))
  row.querySelector('.key').value = key || ''
  row.querySelector('.value').value = value || ''
  document.getElementById('pairs').append(row)
}

/** Sets out[key] as an own property, whatever the key (a name such as __proto__ is data here). */
function put(out, key, value) {
  Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true })
}

function pairsObject() {
  const out = {}
  for (const row of document.querySelectorAll('#pairs .pair')) {
    const key = row.querySelector('.key').value
    if (!key) continue
    if (Object.hasOwn(out, key)) throw new Error('parameter ' + key + ' is given twice')
    put(out, key, row.querySelector('.value').value)
  }
  return out
}

function jsonObject() {
  const source = form.elements.parameters_json.value.trim() || '{}'
  let v
  try { v = JSON.parse(source) } catch (e) { throw new Error('the parameters are not valid JSON: ' + e.message) }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('the parameters must be a JSON object')
  return v
}

function parameterMode() {
  return form.elements.parameter_mode.value
}

function setParameters(mode, parameters) {
  form.elements.parameter_mode.value = mode
  document.getElementById('pairs').replaceChildren()
  if (mode === 'pairs') for (const [k, v] of Object.entries(parameters)) addPair(k, v)
  form.elements.parameters_json.value = JSON.stringify(parameters, null, 2)
  showMode()
}

function showMode() {
  const mode = parameterMode()
  const schemaForm = document.getElementById('schema-form')
  document.getElementById('pairs').hidden = mode !== 'pairs'
  document.getElementById('add-pair').hidden = mode !== 'pairs'
  form.elements.parameters_json.hidden = mode !== 'json'
  // a hidden part of the form is disabled: its constraints do not stop a request
  schemaForm.hidden = schemaForm.disabled = mode !== 'form'
}

// --- the form built from the software release's schema (GET schema?url=, from this proxy) ---

/** The schema of the release in the URL field, as the proxy read it; null when there is none. */
let release = null
/** The fields of the schema form: { name, node, kind, input, choices } */
let fields = []
let schemaAsked = 0

function schemaEntries() {
  if (!release) return []
  const shared = form.elements.shared.checked
  return release.software_types.filter((e) => e.shared === shared)
}

function currentEntry() {
  const key = form.elements.software_type_entry.value
  return schemaEntries().find((e) => e.key === key) || null
}

async function loadSchema() {
  const url = form.elements.software_release_uri.value.trim()
  const asked = ++schemaAsked
  const status = document.getElementById('schema-status')
  release = null
  if (url) {
    status.textContent = 'Reading the schema of this software release...'
    try {
      const r = await fetch(new URL('schema?url=' + encodeURIComponent(url), document.baseURI), { headers: { Accept: 'application/json' } })
      const doc = await r.json()
      if (asked !== schemaAsked) return
      if (doc.available) release = doc
      status.textContent = doc.available
        ? 'Schema of the software release' + (doc.name ? ' ' + doc.name : '') + (doc.description ? ': ' + doc.description : '')
        : 'No schema form: ' + (doc.problem || doc.title || 'HTTP ' + r.status) + ' (key / value parameters)'
    } catch (e) {
      if (asked !== schemaAsked) return
      status.textContent = 'No schema form: ' + e.message
    }
  } else status.textContent = ''
  showSoftwareTypes()
}

/** The software type select of the schema's entries (shared or not), or the free text field. */
function showSoftwareTypes(wanted) {
  const entries = schemaEntries()
  const select = form.elements.software_type_entry
  const previous = wanted || select.value
  select.replaceChildren(...entries.map((e) => el('option', { value: e.key }, e.title + (e.title !== e.software_type ? ' (' + e.software_type + ')' : ''))))
  const keep = entries.find((e) => e.key === previous) || entries.find((e) => e.software_type === form.elements.software_type.value) || entries[0]
  if (keep) select.value = keep.key
  document.getElementById('software-type-choice').hidden = entries.length === 0
  document.getElementById('software-type-text').hidden = entries.length > 0
  showEntry()
}

function showEntry() {
  const entry = currentEntry()
  const box = document.getElementById('schema-form')
  const description = document.getElementById('software-type-description')
  fields = []
  box.replaceChildren()
  description.textContent = ''
  if (entry) {
    form.elements.software_type.value = entry.software_type
    description.textContent = [entry.description, entry.problem ? 'No form: ' + entry.problem : ''].filter(Boolean).join(' ')
  }
  const schema = entry && entry.schema
  const usable = !!schema
  document.getElementById('mode-form').hidden = !usable
  if (usable) buildForm(box, schema)
  if (usable) form.elements.parameter_mode.value = 'form'
  else if (parameterMode() === 'form') form.elements.parameter_mode.value = 'pairs'
  // a schema types its values: key / value (all text) is for releases without one
  document.getElementById('mode-pairs').hidden = usable
  if (usable && parameterMode() === 'pairs') form.elements.parameter_mode.value = 'form'
  showMode()
}

function has(node, key) {
  return node !== null && typeof node === 'object' && Object.hasOwn(node, key)
}

function isType(node, type) {
  return !!(node && node.type && node.type.includes(type))
}

/** The values a select offers: an enum, or a oneOf of constants (with their titles). */
function choicesOf(node) {
  if (Array.isArray(node.enum) && node.enum.length && node.enum.every((v) => v === null || typeof v !== 'object')) return node.enum.map((v) => ({ value: v, title: String(v) }))
  if (Array.isArray(node.oneOf) && node.oneOf.length && node.oneOf.every((b) => has(b, 'const') && (b.const === null || typeof b.const !== 'object'))) {
    return node.oneOf.map((b) => ({ value: b.const, title: b.title ? b.title + ' (' + String(b.const) + ')' : String(b.const) }))
  }
  return null
}

function kindOf(node) {
  if (node.unsupported || node.never) return 'json'
  if (choicesOf(node)) return 'select'
  const types = node.type || []
  if (types.length === 1 || (types.length === 2 && types.includes('null'))) {
    const t = types.find((x) => x !== 'null')
    if (t === 'boolean') return 'boolean'
    if (t === 'integer' || t === 'number') return 'number'
    if (t === 'string' && !node.oneOf && !node.anyOf && !node.allOf) return 'string'
    if (t === 'array' && node.items && !node.items.unsupported && (isType(node.items, 'string') || isType(node.items, 'integer') || isType(node.items, 'number')) && !choicesOf(node.items)) return 'lines'
  }
  return 'json'
}

/** One labelled input per property of the schema; what it cannot show as a field is a JSON text area. */
function buildForm(box, schema) {
  const properties = isType(schema, 'object') || schema.properties ? schema.properties || [] : null
  const required = new Set(schema.required || [])
  if (!properties || schema.unsupported || schema.oneOf || schema.anyOf) {
    box.append(el('p', { class: 'muted' }, 'This schema is edited as one JSON object' + (schema.unsupported ? ' (the form does not handle: ' + schema.unsupported.join(', ') + ')' : '') + '.'))
    fields.push(makeField(box, '', schema, 'json', true))
    return
  }
  for (const [name, node] of properties) fields.push(makeField(box, name, node, kindOf(node), required.has(name)))
  if (!properties.length) box.append(el('p', { class: 'muted' }, 'This software type takes no parameter.'))
}

function makeField(box, name, node, kind, required) {
  const field = { name, node, kind, required, choices: null, input: null }
  const hasDefault = has(node, 'default')
  let input
  if (kind === 'select') {
    field.choices = choicesOf(node)
    input = el('select', {}, required && hasDefault ? null : el('option', { value: '' }, '(not set)'), field.choices.map((c, i) => el('option', { value: String(i) }, c.title)))
    const at = hasDefault ? field.choices.findIndex((c) => JSON.stringify(c.value) === JSON.stringify(node.default)) : -1
    input.value = at >= 0 ? String(at) : ''
  } else if (kind === 'boolean') {
    if (hasDefault || required) {
      input = el('input', { type: 'checkbox' })
      input.checked = node.default === true
    } else input = el('select', {}, el('option', { value: '' }, '(not set)'), el('option', { value: 'true' }, 'true'), el('option', { value: 'false' }, 'false'))
  } else if (kind === 'number') {
    input = el('input', { type: 'number', step: isType(node, 'integer') ? (node.multipleOf && Number.isInteger(node.multipleOf) ? String(node.multipleOf) : '1') : 'any' })
    if (typeof node.minimum === 'number') input.min = String(node.minimum)
    if (typeof node.maximum === 'number') input.max = String(node.maximum)
    if (typeof node.default === 'number') input.value = String(node.default)
  } else if (kind === 'string') {
    input = el('input', { type: 'text' })
    if (typeof node.maxLength === 'number') input.maxLength = node.maxLength
    if (typeof node.minLength === 'number') input.minLength = node.minLength
    if (typeof node.pattern === 'string') input.pattern = node.pattern
    if (typeof node.default === 'string') input.value = node.default
  } else if (kind === 'lines') {
    input = el('textarea', { spellcheck: 'false', placeholder: 'one item a line' })
    if (Array.isArray(node.default)) input.value = node.default.join('\\n')
  } else {
    input = el('textarea', { spellcheck: 'false', placeholder: 'JSON' })
    if (hasDefault) input.value = JSON.stringify(node.default, null, 2)
  }
  if (required && kind !== 'boolean') input.required = true
  input.addEventListener('input', () => input.setCustomValidity(''))
  input.addEventListener('change', () => input.setCustomValidity(''))
  field.input = input
  const title = node.title || name || 'Parameters'
  box.append(el('label', { class: 'field' },
    el('span', { class: 'field-title' }, title), required ? ' *' : '', name ? ' ' : '', name ? el('code', {}, name) : null,
    input,
    node.description ? el('small', { class: 'muted' }, node.description) : null,
    node.unsupported ? el('small', { class: 'muted' }, 'JSON: the form does not handle ' + node.unsupported.join(', ')) : null))
  return field
}

/** The value a field holds, undefined when not set; throws with what is wrong. */
function fieldValue(f) {
  const input = f.input
  if (f.kind === 'select') return input.value === '' ? undefined : f.choices[Number(input.value)].value
  if (f.kind === 'boolean') return input.type === 'checkbox' ? input.checked : input.value === '' ? undefined : input.value === 'true'
  const text = input.value
  if (text.trim() === '') return undefined
  if (f.kind === 'number') {
    const n = Number(text)
    if (!Number.isFinite(n)) throw new Error('is not a number')
    return n
  }
  if (f.kind === 'string') return text
  if (f.kind === 'lines') {
    const items = text.split('\\n').map((l) => l.trim()).filter(Boolean)
    return isType(f.node.items, 'string') ? items : items.map((x) => {
      const n = Number(x)
      if (!Number.isFinite(n)) throw new Error(JSON.stringify(x) + ' is not a number')
      return n
    })
  }
  try { return JSON.parse(text) } catch (e) { throw new Error('is not valid JSON') }
}

/** What the schema says of a value that the input's own constraints do not check. */
function valueProblem(node, v) {
  if (typeof v === 'number') {
    if (typeof node.exclusiveMinimum === 'number' && v <= node.exclusiveMinimum) return 'must be more than ' + node.exclusiveMinimum
    if (typeof node.exclusiveMaximum === 'number' && v >= node.exclusiveMaximum) return 'must be less than ' + node.exclusiveMaximum
    if (typeof node.minimum === 'number' && v < node.minimum) return 'must be at least ' + node.minimum
    if (typeof node.maximum === 'number' && v > node.maximum) return 'must be at most ' + node.maximum
    if (isType(node, 'integer') && !Number.isInteger(v)) return 'must be an integer'
  }
  if (typeof v === 'string') {
    const n = [...v].length
    if (typeof node.minLength === 'number' && n < node.minLength) return 'must have at least ' + node.minLength + ' characters'
    if (typeof node.maxLength === 'number' && n > node.maxLength) return 'must have at most ' + node.maxLength + ' characters'
  }
  if (Array.isArray(v)) {
    if (typeof node.minItems === 'number' && v.length < node.minItems) return 'must have at least ' + node.minItems + ' items'
    if (typeof node.maxItems === 'number' && v.length > node.maxItems) return 'must have at most ' + node.maxItems + ' items'
  }
  if (node.type && v !== undefined && wrongType(node, v)) return 'must be ' + node.type.join(' or ')
  return ''
}

function wrongType(node, v) {
  const t = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v
  return !node.type.some((x) => x === t || (x === 'integer' && t === 'number' && Number.isInteger(v)))
}

/** The parameters of the schema form, checked; undefined (and the first problem reported) when invalid. */
function formObject() {
  const out = {}
  for (const f of fields) {
    let v
    try {
      v = fieldValue(f)
      const problem = v === undefined ? '' : valueProblem(f.node, v)
      if (problem) throw new Error(problem)
    } catch (e) {
      f.input.setCustomValidity((f.node.title || f.name || 'the parameters') + ' ' + e.message)
      continue
    }
    f.input.setCustomValidity('')
    if (f.name === '') return v === undefined ? {} : v
    if (v !== undefined) put(out, f.name, v)
  }
  return out
}

/** Fills the schema form from stored parameters (text for xml releases); false when they do not fit it. */
function fillSchemaForm(parameters) {
  const entry = currentEntry()
  if (!entry || !entry.schema) return false
  let values = parameters
  if (entry.serialisation === 'json-in-xml' && Object.keys(parameters).length === 1 && typeof parameters._ === 'string') {
    try { values = JSON.parse(parameters._) } catch (e) { return false }
  }
  if (values === null || typeof values !== 'object' || Array.isArray(values)) return false
  if (fields.length === 1 && fields[0].name === '') {
    fields[0].input.value = JSON.stringify(values, null, 2)
    return true
  }
  const byName = new Map(fields.map((f) => [f.name, f]))
  if (Object.keys(values).some((k) => !byName.has(k))) return false
  for (const f of fields) {
    const given = Object.hasOwn(values, f.name)
    let v = given ? values[f.name] : undefined
    if (typeof v === 'string' && f.kind !== 'string' && f.kind !== 'select') {
      try { v = JSON.parse(v) } catch (e) { if (f.kind !== 'lines') return false }
    }
    const input = f.input
    if (f.kind === 'select') {
      const at = f.choices.findIndex((c) => c.value === v || String(c.value) === String(v))
      if (given && at < 0) return false
      input.value = at < 0 ? '' : String(at)
    } else if (f.kind === 'boolean') {
      if (input.type === 'checkbox') input.checked = v === true
      else input.value = v === undefined ? '' : String(v === true)
    } else if (f.kind === 'lines') input.value = Array.isArray(v) ? v.join('\\n') : v === undefined ? '' : String(v)
    else if (f.kind === 'json') input.value = v === undefined ? '' : JSON.stringify(v, null, 2)
    else input.value = v === undefined ? '' : String(v)
  }
  return true
}

async function fillForm(d) {
  form.elements.title.value = d.title
  form.elements.software_release_uri.value = d.software_release_uri
  form.elements.software_type.value = d.software_type
  form.elements.shared.checked = !!d.shared
  form.elements.state.value = d.state
  const parameters = d.parameters || {}
  form.scrollIntoView()
  await loadSchema()
  const entry = schemaEntries().find((e) => e.key === d.software_type) || schemaEntries().find((e) => e.software_type === d.software_type)
  if (entry) showSoftwareTypes(entry.key)
  else if (release) {
    // the instance's software type is not in the schema: edited as it is
    document.getElementById('software-type-choice').hidden = true
    document.getElementById('software-type-text').hidden = false
    form.elements.software_type.value = d.software_type
    fields = []
    document.getElementById('mode-form').hidden = true
    document.getElementById('mode-pairs').hidden = false
  }
  if (entry && fillSchemaForm(parameters)) {
    form.elements.parameter_mode.value = 'form'
    showMode()
    return
  }
  const textOnly = Object.values(parameters).every((v) => typeof v === 'string')
  setParameters(textOnly && document.getElementById('mode-pairs').hidden === false ? 'pairs' : 'json', parameters)
}

// switching mode carries the parameters over when they fit the other form
for (const radio of form.elements.parameter_mode) radio.addEventListener('change', () => {
  const result = document.getElementById('request-result')
  result.textContent = ''
  const from = radio.value === 'json' ? (document.getElementById('mode-pairs').hidden ? 'form' : 'pairs') : 'json'
  try {
    if (radio.value === 'json') {
      const v = from === 'form' ? formObject() : pairsObject()
      form.elements.parameters_json.value = JSON.stringify(v, null, 2)
    } else if (radio.value === 'form') {
      if (!fillSchemaForm(jsonObject())) throw new Error('these parameters do not fit the form of the schema')
    } else {
      const v = jsonObject()
      if (!Object.values(v).every((x) => typeof x === 'string')) throw new Error('values that are not strings can only be edited as JSON')
      setParameters('pairs', v)
    }
  } catch (e) {
    result.className = 'error'
    result.textContent = e.message
    form.elements.parameter_mode.value = from
  }
  showMode()
})

form.addEventListener('submit', async (event) => {
  event.preventDefault()
  const result = document.getElementById('request-result')
  const f = form.elements
  const refuse = (message) => {
    result.className = 'error'
    result.textContent = 'Not requested: ' + message
  }
  const body = { title: f.title.value, software_release_uri: f.software_release_uri.value, software_type: f.software_type.value, shared: f.shared.checked, state: f.state.value }
  const entry = currentEntry()
  if (entry && !document.getElementById('software-type-choice').hidden) {
    body.software_type = entry.software_type
    body.software_type_entry = entry.key
  }
  try {
    body.parameters = parameterMode() === 'json' ? jsonObject() : parameterMode() === 'form' ? formObject() : pairsObject()
  } catch (e) {
    return refuse(e.message)
  }
  // the browser's own checks of every field (required, bounds, patterns) and those of formObject
  if (!form.checkValidity()) {
    const bad = [...form.elements].find((x) => x.willValidate && !x.validity.valid)
    if (bad) {
      const label = bad.closest('label')
      const name = label && label.querySelector('.field-title') ? label.querySelector('.field-title').textContent : bad.name || 'a field'
      refuse(name + ': ' + bad.validationMessage)
      bad.focus()
    } else refuse('a field is not valid')
    return
  }
  if (f.computer_guid.value) body.sla_parameters = { computer_guid: f.computer_guid.value }
  result.className = 'muted'
  result.textContent = 'Requesting...'
  try {
    // the proxy checks the parameters against the schema again before it requests
    const r = await fetch(new URL('request', document.baseURI), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body),
    })
    let doc
    try { doc = await r.json() } catch (e) { throw new Error('HTTP ' + r.status + ' ' + r.statusText) }
    if (!r.ok) throw new Error(doc && doc.title ? doc.title : 'HTTP ' + r.status)
    result.className = ''
    result.textContent = 'Requested ' + doc.title + (doc.compute_partition_id ? ' on ' + doc.computer_guid + ' / ' + doc.compute_partition_id : '') + ' (' + doc.state + ')'
  } catch (e) {
    result.className = 'error'
    result.textContent = e.message.startsWith('Not requested') ? e.message : 'Not requested: ' + e.message
  }
  await refresh()
})

form.elements.software_release_uri.addEventListener('change', loadSchema)
form.elements.shared.addEventListener('change', () => showSoftwareTypes())
form.elements.software_type_entry.addEventListener('change', showEntry)
document.getElementById('add-pair').addEventListener('click', () => addPair())
document.getElementById('refresh').addEventListener('click', refresh)
addPair()
showMode()
refresh()
</script>
</body>
</html>
`
