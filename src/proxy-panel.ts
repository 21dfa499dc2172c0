// The local master's panel (proxy.md §10.2): `/panel/` is one self-contained page that shows and
// requests instances through the JSON API of proxy-jsonrpc.ts, `/panel/public/<path>` downloads
// a file of `[slapproxy] public_directory_path`. Routed from proxy-server.ts.
import { closeSync, createReadStream, openSync, statSync, type BigIntStats } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { posix, resolve } from 'node:path'
import { pyFloatRepr } from './slap-protocol.ts'

// node:crypto costs a process ~1.4 MB of private memory and ~1 MB of code pages, and time to
// load: taken on first use only
const nodeCrypto = (): typeof import('node:crypto') => process.getBuiltinModule('node:crypto')

/**
 * Answers a request whose path is `/panel` or starts with `/panel/`. `publicDirectory` is
 * `public_directory_path` as configured (undefined or empty: not configured).
 */
export function servePanel(req: IncomingMessage, res: ServerResponse, url: URL, publicDirectory: string | undefined): void {
  req.resume()
  const rest = url.pathname.replace(/^\/+panel/, '')
  const method = req.method ?? 'GET'
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
  if (rest.startsWith('/public/') && rest.length > '/public/'.length) {
    // 403 rather than 404, like the original, so that an operator sees what is missing
    if (!publicDirectory) return errorPage(res, 403, 'The public directory path is not configured.')
    return servePublicFile(req, res, publicDirectory, rest.slice('/public/'.length), head)
  }
  return errorPage(res, 404, DESCRIPTIONS[404])
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
<form id="request">
  <label>Title <input name="title" required maxlength="200"></label>
  <label>Software release URL <input name="software_release_uri" required list="software-releases"></label>
  <datalist id="software-releases"></datalist>
  <label>Software type <input name="software_type" value="default"></label>
  <fieldset>
    <legend>Parameters</legend>
    <label class="inline"><input type="radio" name="parameter_mode" value="pairs" checked> key / value</label>
    <label class="inline"><input type="radio" name="parameter_mode" value="json"> JSON object</label>
    <div id="pairs"></div>
    <button id="add-pair" type="button">Add a parameter</button>
    <textarea name="parameters_json" hidden spellcheck="false">{}</textarea>
  </fieldset>
  <label class="inline"><input type="checkbox" name="shared"> Shared instance</label>
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

function pairsObject() {
  const out = {}
  for (const row of document.querySelectorAll('#pairs .pair')) {
    const key = row.querySelector('.key').value
    if (!key) continue
    if (Object.hasOwn(out, key)) throw new Error('parameter ' + key + ' is given twice')
    out[key] = row.querySelector('.value').value
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
  const json = parameterMode() === 'json'
  document.getElementById('pairs').hidden = json
  document.getElementById('add-pair').hidden = json
  form.elements.parameters_json.hidden = !json
}

function fillForm(d) {
  form.elements.title.value = d.title
  form.elements.software_release_uri.value = d.software_release_uri
  form.elements.software_type.value = d.software_type
  form.elements.shared.checked = !!d.shared
  form.elements.state.value = d.state
  const parameters = d.parameters || {}
  setParameters(Object.values(parameters).every((v) => typeof v === 'string') ? 'pairs' : 'json', parameters)
  form.scrollIntoView()
}

// switching mode carries the parameters over when they fit the other form
for (const radio of form.elements.parameter_mode) radio.addEventListener('change', () => {
  const result = document.getElementById('request-result')
  result.textContent = ''
  try {
    if (parameterMode() === 'json') form.elements.parameters_json.value = JSON.stringify(pairsObject(), null, 2)
    else {
      const v = jsonObject()
      if (!Object.values(v).every((x) => typeof x === 'string')) throw new Error('values that are not strings can only be edited as JSON')
      setParameters('pairs', v)
    }
  } catch (e) {
    result.className = 'error'
    result.textContent = e.message
    form.elements.parameter_mode.value = parameterMode() === 'json' ? 'pairs' : 'json'
  }
  showMode()
})

form.addEventListener('submit', async (event) => {
  event.preventDefault()
  const result = document.getElementById('request-result')
  const f = form.elements
  const body = { title: f.title.value, software_release_uri: f.software_release_uri.value, software_type: f.software_type.value, shared: f.shared.checked, state: f.state.value }
  try {
    body.parameters = parameterMode() === 'json' ? jsonObject() : pairsObject()
  } catch (e) {
    result.className = 'error'
    result.textContent = 'Not requested: ' + e.message
    return
  }
  if (f.computer_guid.value) body.sla_parameters = { computer_guid: f.computer_guid.value }
  result.className = 'muted'
  result.textContent = 'Requesting...'
  try {
    const doc = await api('slapos.post.v0.software_instance', body)
    result.className = ''
    result.textContent = 'Requested ' + doc.title + (doc.compute_partition_id ? ' on ' + doc.computer_guid + ' / ' + doc.compute_partition_id : '') + ' (' + doc.state + ')'
  } catch (e) {
    result.className = 'error'
    result.textContent = 'Not requested: ' + e.message
  }
  await refresh()
})

document.getElementById('add-pair').addEventListener('click', () => addPair())
document.getElementById('refresh').addEventListener('click', refresh)
addPair()
showMode()
refresh()
</script>
</body>
</html>
`
