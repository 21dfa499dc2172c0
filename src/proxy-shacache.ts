// The shacache/shadir proxy of the local master (proxy.md §10.4), under /shacache/: a binary
// cache for the nodes of this master, kept in two local directories and filled from upstream
// caches on a miss. Used by proxy-server.ts; node:http(s) are loaded on first use only.
//
//   GET  /shacache/cache/<sha512>   the archive: local file, else fetched upstream and kept
//   POST /shacache/cache[/]         store the body under its sha512; 201, body = the sha512
//   PUT  /shacache/cache/<sha512>   the same, refused (400) unless the body has that sha512
//   GET  /shacache/dir/<key>        the JSON list of [entry, signature]: local, else upstream
//   PUT  /shacache/dir/<key>        [entry, signature] becomes the key's only entry; 201
//   POST /shacache/update           drop local entries whose archive is gone (no upstream) or
//                                   refresh every key from the upstream directory
//
// Like the original (shacache_proxy.py): 503 `Shacache not configured` without both
// directories, 404 for what is neither here nor upstream, 502 when upstream fails, and a PUT
// to a directory key replaces its entries. Unlike it: names are checked before any file is
// touched (an archive name is 128 lower-case hex digits, a key a single path component not
// starting with a dot), bodies are bounded and streamed, every file is written to a temporary
// name and renamed, and an archive fetched upstream is kept only if its sha512 is its name.
import { createReadStream, createWriteStream, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, type Stats } from 'node:fs'
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http'
import { join } from 'node:path'
import type { ShacacheConfig } from './config.ts'
import type { Logger } from './log.ts'
import { pythonJson } from './shadir.ts'

// node:crypto costs a process ~1.4 MB of private memory and ~1 MB of code pages, and time to
// load: taken on first use only
const nodeCrypto = (): typeof import('node:crypto') => process.getBuiltinModule('node:crypto')

/** Largest archive stored (upload or upstream download). */
export const MAX_ARCHIVE_BYTES = 4 * 1024 ** 3
/** Largest `PUT /shacache/dir/<key>` body: one entry and its signature. */
export const MAX_ENTRY_BYTES = 1024 ** 2
/** Largest upstream directory answer (every entry of a key). */
export const MAX_DIRECTORY_BYTES = 16 * 1024 ** 2

export interface ShacacheLimits {
  maxArchiveBytes?: number
  maxEntryBytes?: number
}

/** The /shacache/ routes; `handle` takes every request whose path starts with `/shacache/`. */
export class ShacacheProxy {
  private readonly maxArchive: number
  private readonly maxEntry: number

  constructor(
    private readonly cfg: ShacacheConfig,
    private readonly log: Logger,
    limits: ShacacheLimits = {},
  ) {
    this.maxArchive = limits.maxArchiveBytes ?? MAX_ARCHIVE_BYTES
    this.maxEntry = limits.maxEntryBytes ?? MAX_ENTRY_BYTES
    // the original's start-up warnings for half a configuration
    if (cfg.contentDirectory && !cfg.metadataDirectory) {
      log.warning('shacache-content-directory is set but shacache-metadata-directory is not. Shacache proxy will not work.')
    } else if (cfg.metadataDirectory && !cfg.contentDirectory) {
      log.warning('shacache-metadata-directory is set but shacache-content-directory is not. Shacache proxy will not work.')
    }
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    this.route(req, res).catch((err: unknown) => {
      this.log.error(`${req.method ?? ''} ${req.url ?? ''}: ${(err as Error).message}`)
      req.resume()
      if (!res.headersSent) page(res, 500, undefined, true)
      else res.destroy()
    })
  }

  // --- routes ---

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rawPath = (req.url ?? '').split('?')[0] ?? ''
    const parts = decodeSegments(rawPath.slice('/shacache/'.length))
    const method = req.method ?? 'GET'
    const [what, name, ...more] = parts ?? []
    let allowed: string[]
    if (parts && what === 'cache' && more.length === 0 && (name === undefined || name === '')) allowed = ['POST']
    else if (parts && (what === 'cache' || what === 'dir') && name && more.length === 0) allowed = ['GET', 'HEAD', 'PUT']
    else if (parts && what === 'update' && name === undefined) allowed = ['POST']
    else return drainThen(req, () => page(res, 404))
    if (method === 'OPTIONS' || !allowed.includes(method)) {
      const allow = [...allowed, 'OPTIONS'].sort().join(', ')
      return drainThen(req, () => (method === 'OPTIONS' ? reply(res, 200, '', HTML, { Allow: allow }) : page(res, 405, undefined, false, { Allow: allow })))
    }
    const { contentDirectory: content, metadataDirectory: metadata } = this.cfg
    if (!content || !metadata) return drainThen(req, () => page(res, 503, 'Shacache not configured'))
    const dirs = { content, metadata }
    const head = method === 'HEAD'
    if (what === 'update') return drainThen(req, () => this.update(res, dirs))
    if (what === 'cache' && !name) return this.upload(req, res, dirs, undefined)
    if (what === 'cache' && method === 'PUT') return this.upload(req, res, dirs, name)
    if (what === 'cache') return drainThen(req, () => this.download(req, res, dirs, name ?? '', head))
    if (method === 'PUT') return this.putEntry(req, res, dirs, name ?? '')
    return drainThen(req, () => this.getEntries(res, dirs, name ?? '', head))
  }

  /** POST (sha512 = undefined) or PUT of an archive. */
  private async upload(req: IncomingMessage, res: ServerResponse, dirs: Dirs, sha512: string | undefined): Promise<void> {
    // a name that is no sha512 can be no body's: the original's answer, without reading it
    if (sha512 !== undefined && !SHA512.test(sha512)) return drainThen(req, () => page(res, 400, 'Checksum mismatch'))
    mkdirSync(dirs.content, { recursive: true })
    const got = await receiveFile(req, dirs.content, this.maxArchive)
    if (got === 'too-large') return tooLarge(req, res, `An archive is at most ${this.maxArchive} bytes.`)
    if (sha512 !== undefined && got.sha512 !== sha512) {
      rmSync(got.tmp, { force: true })
      return page(res, 400, 'Checksum mismatch')
    }
    renameSync(got.tmp, join(dirs.content, got.sha512))
    this.log.debug(`shacache: stored ${got.sha512} (${got.size} bytes)`)
    reply(res, 201, got.sha512)
  }

  private async download(req: IncomingMessage, res: ServerResponse, dirs: Dirs, sha512: string, head: boolean): Promise<void> {
    if (!SHA512.test(sha512)) return page(res, 404)
    const path = join(dirs.content, sha512)
    let stat = fileStat(path)
    if (!stat) {
      const upstream = this.cfg.upstreamCacheUrl
      if (!upstream) return page(res, 404)
      this.log.info(`Fetching ${sha512} from upstream`)
      try {
        await this.fetchArchive(upstream, sha512, dirs.content)
      } catch (err) {
        return this.upstreamFailed(res, err, sha512)
      }
      stat = fileStat(path)
      if (!stat) return page(res, 404)
    }
    serveFile(req, res, path, sha512, stat, head)
  }

  private async getEntries(res: ServerResponse, dirs: Dirs, key: string, head: boolean): Promise<void> {
    if (!validKey(key)) return page(res, 404)
    const path = join(dirs.metadata, key)
    let text: string | undefined
    try {
      text = readFileSync(path, 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOENT' && code !== 'EISDIR') this.log.warning(`Failed to read metadata for ${key}: ${(err as Error).message}`)
    }
    if (text !== undefined) return reply(res, 200, text, JSON_TYPE, {}, head)
    const upstream = this.cfg.upstreamDirUrl
    if (!upstream) return page(res, 404)
    this.log.info(`Fetching dir ${key} from upstream`)
    let entries: unknown
    try {
      entries = await fetchJson(upstream, key)
    } catch (err) {
      return this.upstreamFailed(res, err, key, 'dir ')
    }
    const body = pythonJson(entries)
    if (Array.isArray(entries)) writeAtomic(dirs.metadata, key, body)
    reply(res, 200, body, JSON_TYPE, {}, head)
  }

  private async putEntry(req: IncomingMessage, res: ServerResponse, dirs: Dirs, key: string): Promise<void> {
    if (!validKey(key)) return drainThen(req, () => page(res, 400, 'Invalid key'))
    const type = String(req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? ''
    if (type !== 'application/json' && !/^application\/[^/]*\+json$/.test(type)) {
      return drainThen(req, () => page(res, 415, "Did not attempt to load JSON data because the request Content-Type was not 'application/json'."))
    }
    const body = await receiveText(req, this.maxEntry)
    if (body === undefined) return tooLarge(req, res, `An entry is at most ${this.maxEntry} bytes.`)
    let entry: unknown
    try {
      entry = JSON.parse(body)
    } catch (err) {
      return page(res, 400, `Failed to decode JSON object: ${(err as Error).message}`)
    }
    // a signed entry: the entry's JSON text and its signature (the original only counts two items)
    if (!Array.isArray(entry) || entry.length !== 2 || !entry.every((x) => typeof x === 'string')) return page(res, 400, 'Invalid entry format')
    writeAtomic(dirs.metadata, key, pythonJson([entry]))
    reply(res, 201, '')
  }

  /** The original's /update: its answer lists the keys removed (or trimmed) and refreshed. */
  private async update(res: ServerResponse, dirs: Dirs): Promise<void> {
    const removed: string[] = []
    const updated: string[] = []
    let names: string[] = []
    try {
      names = readdirSync(dirs.metadata).filter(validKey).sort()
    } catch {
      names = []
    }
    const upstream = this.cfg.upstreamDirUrl
    for (const key of names) {
      const path = join(dirs.metadata, key)
      if (!fileStat(path)) continue
      if (upstream) {
        this.log.info(`Updating dir ${key} from upstream`)
        try {
          const entries = await fetchJson(upstream, key)
          if (Array.isArray(entries) && entries.length > 0) {
            writeAtomic(dirs.metadata, key, pythonJson(entries))
            updated.push(key)
          } else {
            rmSync(path, { force: true })
            removed.push(key)
          }
        } catch (err) {
          if (err instanceof UpstreamStatus && err.status === 404) {
            rmSync(path, { force: true })
            removed.push(key)
          } else {
            this.log.warning(`Failed to update dir ${key} from upstream: ${(err as Error).message}`)
          }
        }
        continue
      }
      // no upstream: keep the entries whose archive is here
      let entries: unknown
      try {
        entries = JSON.parse(readFileSync(path, 'utf8'))
      } catch (err) {
        this.log.warning(`Failed to process metadata file ${key}: ${(err as Error).message}`)
        continue
      }
      if (!Array.isArray(entries)) {
        rmSync(path, { force: true })
        removed.push(key)
        continue
      }
      const kept = entries.filter((pair) => {
        const sha512 = entrySha512(pair)
        return sha512 !== undefined && fileStat(join(dirs.content, sha512)) !== undefined
      })
      if (kept.length === entries.length) continue
      if (kept.length) writeAtomic(dirs.metadata, key, pythonJson(kept))
      else rmSync(path, { force: true })
      removed.push(key)
    }
    reply(res, 200, pythonJson({ removed, updated }), JSON_TYPE)
  }

  private upstreamFailed(res: ServerResponse, err: unknown, what: string, kind = ''): void {
    if (err instanceof UpstreamStatus) {
      if (err.status === 404) return page(res, 404)
      this.log.warning(`Upstream ${kind}returned ${err.status} for ${what}`)
      return page(res, 502, `Upstream returned ${err.status}`)
    }
    this.log.warning(`Failed to fetch ${kind}from upstream: ${(err as Error).message}`)
    page(res, 502, `Upstream error: ${(err as Error).message}`)
  }

  /** Downloads `<upstream>/<sha512>` into the content directory, only if its sha512 is right. */
  private async fetchArchive(upstream: string, sha512: string, contentDir: string): Promise<void> {
    const answer = await upstreamGet(joinUrl(upstream, sha512))
    if (answer.statusCode !== 200) {
      answer.resume()
      throw new UpstreamStatus(answer.statusCode ?? 0)
    }
    mkdirSync(contentDir, { recursive: true })
    const got = await receiveFile(answer, contentDir, this.maxArchive)
    if (got === 'too-large') {
      answer.destroy()
      throw new Error(`the archive is larger than ${this.maxArchive} bytes`)
    }
    if (got.sha512 !== sha512) {
      rmSync(got.tmp, { force: true })
      throw new Error(`the data sent has sha512 ${got.sha512.slice(0, 16)}..., not the one asked for`)
    }
    renameSync(got.tmp, join(contentDir, sha512))
  }
}

// --- internal ---

interface Dirs {
  content: string
  metadata: string
}

const SHA512 = /^[0-9a-f]{128}$/
const HTML = 'text/html; charset=utf-8'
const JSON_TYPE = 'application/json'
const TIMEOUT_MS = 60_000
const MAX_REDIRECTS = 10
const DRAIN_LIMIT = 64 * 1024 ** 2
const DRAIN_MS = 10_000

const DEFAULT_TEXT: Record<number, string> = {
  404: 'The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.',
  405: 'The method is not allowed for the requested URL.',
  500: 'The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.',
}

/** An upstream answer other than 2xx. */
class UpstreamStatus extends Error {
  constructor(readonly status: number) {
    super(`HTTP Error ${status}`)
  }
}

/** A shadir key usable as a file name: one path component, no leading dot, no control character. */
function validKey(key: string): boolean {
  return key !== '' && !key.startsWith('.') && !/[/\\\u0000-\u001f\u007f]/.test(key) && Buffer.byteLength(key) <= 255
}

/** Path segments after /shacache/, percent-decoded; undefined when one cannot be decoded or holds a '/'. */
function decodeSegments(rest: string): string[] | undefined {
  const out: string[] = []
  for (const raw of rest.split('/')) {
    let s: string
    try {
      s = decodeURIComponent(raw)
    } catch {
      return undefined
    }
    // werkzeug decodes before routing: an encoded '/' makes a path no route has
    if (s.includes('/')) return undefined
    out.push(s)
  }
  return out
}

function entrySha512(pair: unknown): string | undefined {
  if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string') return undefined
  try {
    const entry: unknown = JSON.parse(pair[0])
    const sha512 = entry && typeof entry === 'object' ? (entry as Record<string, unknown>).sha512 : undefined
    return typeof sha512 === 'string' && SHA512.test(sha512) ? sha512 : undefined
  } catch {
    return undefined
  }
}

function fileStat(path: string): Stats | undefined {
  try {
    const st = statSync(path)
    return st.isFile() ? st : undefined
  } catch {
    return undefined
  }
}

function tempName(dir: string): string {
  return join(dir, `.tmp-${process.pid}-${nodeCrypto().randomBytes(6).toString('hex')}`)
}

function writeAtomic(dir: string, name: string, text: string): void {
  mkdirSync(dir, { recursive: true })
  const tmp = tempName(dir)
  try {
    writeFileSync(tmp, text)
    renameSync(tmp, join(dir, name))
  } catch (err) {
    rmSync(tmp, { force: true })
    throw err
  }
}

/** Streams a body into a temporary file of `dir`, hashing it; the caller renames or removes it. */
function receiveFile(body: IncomingMessage, dir: string, max: number): Promise<{ tmp: string; sha512: string; size: number } | 'too-large'> {
  if (Number(body.headers['content-length'] ?? 0) > max) return Promise.resolve('too-large')
  const tmp = tempName(dir)
  return new Promise((resolve, reject) => {
    const hash = nodeCrypto().createHash('sha512')
    const out = createWriteStream(tmp, { mode: 0o644 })
    let size = 0
    let settled = false
    const fail = (err: Error | 'too-large') => {
      if (settled) return
      settled = true
      body.unpipe(out)
      out.destroy()
      rmSync(tmp, { force: true })
      if (err === 'too-large') resolve(err)
      else reject(err)
    }
    body.on('data', (c: Buffer) => {
      size += c.length
      if (size > max) return fail('too-large')
      hash.update(c)
    })
    body.on('error', fail)
    body.on('close', () => {
      if (!body.complete) fail(new Error('the body was cut short'))
    })
    out.on('error', fail)
    out.on('finish', () => {
      if (settled) return
      settled = true
      resolve({ tmp, sha512: hash.digest('hex'), size })
    })
    body.pipe(out)
  })
}

/** The body as text, or undefined as soon as it is larger than `max` (the rest is left unread). */
function receiveText(body: IncomingMessage, max: number): Promise<string | undefined> {
  if (Number(body.headers['content-length'] ?? 0) > max) return Promise.resolve(undefined)
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (c: Buffer) => {
      size += c.length
      if (size <= max) return void chunks.push(c)
      body.off('data', onData)
      body.pause()
      resolve(undefined)
    }
    body.on('data', onData)
    body.on('end', () => resolve(size > max ? undefined : Buffer.concat(chunks).toString('utf8')))
    body.on('error', reject)
  })
}

/**
 * 413 while the client may still be sending. Closing at once (node closes after the answer when
 * the client asked for `Connection: close`, as urllib does) would make the kernel answer the
 * unread bytes with a reset, which can reach the client before the 413. So the whole answer is
 * written but the response ends only once the rest of the body has been read and dropped, or
 * after DRAIN_LIMIT bytes or DRAIN_MS, when the connection is cut.
 */
function tooLarge(req: IncomingMessage, res: ServerResponse, text: string): void {
  if (req.readableEnded) return page(res, 413, text)
  const body = Buffer.from(pageHtml(413, text), 'utf8')
  res.writeHead(413, 'REQUEST ENTITY TOO LARGE', { 'Content-Type': HTML, 'Content-Length': String(body.length), Connection: 'close' })
  res.write(body)
  const timer = setTimeout(() => cut(), DRAIN_MS)
  timer.unref()
  let dropped = 0
  const cut = () => {
    clearTimeout(timer)
    res.end()
    req.socket.destroy()
  }
  req.on('data', (c: Buffer) => {
    dropped += c.length
    if (dropped > DRAIN_LIMIT) cut()
  })
  req.on('end', () => {
    clearTimeout(timer)
    res.end()
  })
  req.resume()
}

/** Answers once the request body has been read (so that a keep-alive connection stays usable). */
function drainThen(req: IncomingMessage, answer: () => void | Promise<void>): Promise<void> {
  if (req.readableEnded) return Promise.resolve(answer())
  return new Promise((resolve, reject) => {
    req.on('end', () => Promise.resolve(answer()).then(resolve, reject))
    req.on('error', reject)
    req.resume()
  })
}

function reply(res: ServerResponse, status: number, body: string, type = HTML, headers: Record<string, string> = {}, head = false): void {
  const buf = Buffer.from(body, 'utf8')
  res.writeHead(status, (STATUS_CODES[status] ?? '').toUpperCase(), { 'Content-Type': type, 'Content-Length': String(buf.length), ...headers })
  res.end(head ? undefined : buf)
}

/** werkzeug's HTML error page; `close` when the request body was not read. */
function page(res: ServerResponse, status: number, text?: string, close = false, headers: Record<string, string> = {}): void {
  reply(res, status, pageHtml(status, text), HTML, close ? { ...headers, Connection: 'close' } : headers)
}

function pageHtml(status: number, text?: string): string {
  const reason = STATUS_CODES[status] ?? 'Error'
  const p = text === undefined ? (DEFAULT_TEXT[status] ?? '') : text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
  return `<!doctype html>\n<html lang=en>\n<title>${status} ${reason}</title>\n<h1>${reason}</h1>\n<p>${p}</p>\n`
}

/** An archive as Flask's send_file sends an attachment: conditional GET and one byte range. */
function serveFile(req: IncomingMessage, res: ServerResponse, path: string, name: string, st: Stats, head: boolean): void {
  const etag = `"${name.slice(0, 32)}-${st.size}"`
  const modified = new Date(Math.floor(st.mtimeMs / 1000) * 1000)
  const headers: Record<string, string> = {
    'Content-Type': 'application/octet-stream',
    'Content-Disposition': `attachment; filename=${name}`,
    'Last-Modified': modified.toUTCString(),
    ETag: etag,
    'Cache-Control': 'no-cache',
    'Accept-Ranges': 'bytes',
  }
  const inm = req.headers['if-none-match']
  const ims = Date.parse(String(req.headers['if-modified-since'] ?? ''))
  if ((inm !== undefined && (inm === '*' || inm.split(',').some((t) => t.trim() === etag))) || (inm === undefined && !Number.isNaN(ims) && ims >= modified.getTime())) {
    res.writeHead(304, 'NOT MODIFIED', headers)
    return void res.end()
  }
  let start = 0
  let end = st.size - 1
  let status = 200
  const range = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? '').trim())
  if (range && (range[1] || range[2])) {
    if (range[1]) {
      start = Number(range[1])
      if (range[2]) end = Math.min(Number(range[2]), st.size - 1)
    } else start = Math.max(0, st.size - Number(range[2]))
    if (start > end || start >= st.size) {
      res.writeHead(416, 'RANGE NOT SATISFIABLE', { ...headers, 'Content-Range': `bytes */${st.size}`, 'Content-Length': '0' })
      return void res.end()
    }
    status = 206
    headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`
  }
  headers['Content-Length'] = String(st.size === 0 ? 0 : end - start + 1)
  res.writeHead(status, status === 206 ? 'PARTIAL CONTENT' : 'OK', headers)
  if (head || st.size === 0) return void res.end()
  createReadStream(path, { start, end })
    .on('error', () => res.destroy())
    .pipe(res)
}

function joinUrl(base: string, name: string): string {
  return `${base.replace(/\/+$/, '')}/${encodeURIComponent(name).replace(/%3A/gi, ':').replace(/%3D/gi, '=').replace(/%40/g, '@').replace(/%2B/gi, '+').replace(/%2C/gi, ',')}`
}

/** The upstream directory's JSON answer for a key; HTTP errors throw UpstreamStatus. */
async function fetchJson(upstream: string, key: string): Promise<unknown> {
  const answer = await upstreamGet(joinUrl(upstream, key))
  const status = answer.statusCode ?? 0
  const body = await receiveText(answer, MAX_DIRECTORY_BYTES)
  if (status < 200 || status >= 300) throw new UpstreamStatus(status)
  if (body === undefined) {
    answer.destroy()
    throw new Error(`the answer is larger than ${MAX_DIRECTORY_BYTES} bytes`)
  }
  try {
    return JSON.parse(body)
  } catch {
    throw new Error(`the answer is not JSON: ${body.slice(0, 100)}`)
  }
}

/** GET following redirects, as urllib does for the original; 60 s without a byte ends it. */
async function upstreamGet(first: string): Promise<IncomingMessage> {
  let url = new URL(first)
  for (let hops = 0; ; hops++) {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`unsupported URL scheme: ${url.href}`)
    const mod = url.protocol === 'https:' ? process.getBuiltinModule('node:https') : process.getBuiltinModule('node:http')
    const headers: Record<string, string> = { Connection: 'close' }
    if (url.username) headers.Authorization = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`
    const target = url
    const answer = await new Promise<IncomingMessage>((resolve, reject) => {
      const r = mod.request(
        { protocol: target.protocol, hostname: target.hostname.replace(/^\[|\]$/g, ''), port: target.port || undefined, path: `${target.pathname}${target.search}`, headers, timeout: TIMEOUT_MS },
        (res) => {
          res.setTimeout(TIMEOUT_MS, () => res.destroy(new Error(`no data from ${target.host} for ${TIMEOUT_MS / 1000} s`)))
          resolve(res)
        },
      )
      r.on('timeout', () => r.destroy(new Error(`${target.host} did not answer within ${TIMEOUT_MS / 1000} s`)))
      r.on('error', reject)
      r.end()
    })
    const location = answer.headers.location
    if (!location || ![301, 302, 303, 307, 308].includes(answer.statusCode ?? 0)) return answer
    answer.resume()
    if (hops >= MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects from ${first}`)
    url = new URL(location, url)
  }
}
