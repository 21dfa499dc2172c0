// `/http_proxy/<scheme>/<netloc><path>` of the local master (proxy.md §10.3): fetches an
// http(s) URL for a browser that reached the proxy over HTTPS, so that the "fake frontend"
// answer of an apache-frontend request (proxy.md §4.2) can point at the proxy itself.
// Used by proxy-server.ts; node:http(s) are loaded on first use only.
import type { IncomingMessage, ServerResponse } from 'node:http'

/** Request headers passed on to the upstream server; every other one is dropped. */
const FORWARDED_HEADERS = ['content-type', 'accept', 'accept-language', 'range', 'if-modified-since', 'if-none-match', 'user-agent', 'authorization', 'origin']
/** Hop-by-hop answer headers that describe our connection, not the document. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'])
const TIMEOUT_MS = 5000
const MAX_REDIRECTS = 30

/**
 * The URL under /http_proxy/ for `target` as seen from `base` (the proxy's own https base
 * URL, no final slash): `https://[::1]:123/p?q#f` -> `<base>/http_proxy/https/%5B::1%5D:123/p?q#f`.
 */
export function httpProxyUrl(base: string, target: URL): string {
  const netloc = encodeURIComponent(target.host).replace(/%3A/gi, ':').replace(/%40/g, '@')
  return `${base}/http_proxy/${target.protocol.slice(0, -1)}/${netloc}${target.pathname}${target.search}${target.hash}`
}

/**
 * Answers one /http_proxy/ request; `rawPath` is what follows `/http_proxy/`, query included.
 * Only URLs that `allowed` accepts are fetched (the first one and every redirect): anything
 * else is 403 without a connection, so that the proxy relays nothing but the sites it handed out.
 */
export async function serveHttpProxy(req: IncomingMessage, res: ServerResponse, rawPath: string, allowed: (url: URL) => boolean): Promise<void> {
  const method = req.method ?? 'GET'
  req.resume()
  if (method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS') return fail(res, 405, 'Method Not Allowed', 'The method is not allowed for the requested URL.')
  const m = /^([^/?]*)\/([^/?]*)(.*)$/.exec(rawPath)
  const scheme = m?.[1] ?? ''
  if (scheme !== 'http' && scheme !== 'https') return fail(res, 400, 'Bad Request', `Scheme ${scheme || '(none)'} is not supported: only http and https.`)
  let target: URL
  try {
    target = new URL(`${scheme}://${decodeURIComponent(m?.[2] ?? '')}${m?.[3] ?? ''}`)
  } catch {
    return fail(res, 400, 'Bad Request', 'The URL to fetch is not valid.')
  }
  if (!allowed(target)) return fail(res, 403, 'Forbidden', `${target.origin} is not a frontend target handed out by this master.`)
  const headers: Record<string, string> = {}
  for (const h of FORWARDED_HEADERS) {
    const v = req.headers[h]
    if (typeof v === 'string') headers[h] = v
  }
  let upstream: IncomingMessage
  try {
    upstream = await fetchFollowing(method, target, headers, allowed)
  } catch (err) {
    const e = err as Error & { code?: string }
    if (e.code === 'E_TOO_MANY_REDIRECTS') return fail(res, 520, 'Too Many Redirects', `More than ${MAX_REDIRECTS} redirects from ${target.href}.`)
    if (e.name === 'TimeoutError' || e.code === 'ETIMEDOUT' || e.code === 'E_TIMEOUT') return fail(res, 524, 'A Timeout Occurred', `${target.href} did not answer within ${TIMEOUT_MS / 1000} s.`)
    if (/SSL|TLS|CERT|EPROTO/i.test(`${e.code ?? ''} ${e.message}`)) return fail(res, 526, 'Invalid SSL Certificate', `TLS error with ${target.host}: ${e.message}`)
    return fail(res, 523, 'Origin Is Unreachable', `Could not connect to ${target.host}: ${e.code ?? e.message}`)
  }
  res.statusCode = upstream.statusCode ?? 502
  if (upstream.statusMessage) res.statusMessage = upstream.statusMessage
  for (const [k, v] of Object.entries(upstream.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) res.setHeader(k, v)
  upstream.pipe(res)
}

// --- internal ---

function fail(res: ServerResponse, status: number, reason: string, text: string): void {
  const body = `<!doctype html>\n<html lang=en>\n<title>${status} ${reason}</title>\n<h1>${reason}</h1>\n<p>${text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')}</p>\n`
  res.statusCode = status
  res.statusMessage = reason.toUpperCase()
  res.setHeader('Content-Type', 'text/html; charset=utf-8')
  res.setHeader('Content-Length', Buffer.byteLength(body))
  res.end(body)
}

/** One request, following redirects like python-requests (at most 30); TLS is not verified. */
async function fetchFollowing(method: string, first: URL, headers: Record<string, string>, allowed: (url: URL) => boolean): Promise<IncomingMessage> {
  let url = first
  for (let hops = 0; ; hops++) {
    const mod = url.protocol === 'https:' ? process.getBuiltinModule('node:https') : process.getBuiltinModule('node:http')
    const target = url
    const answer = await new Promise<IncomingMessage>((resolve, reject) => {
      // like the original's `timeout=5`: no byte for 5 s (connecting or reading) ends it
      const r = mod.request(target, { method, headers, agent: false, timeout: TIMEOUT_MS, rejectUnauthorized: false }, resolve)
      r.on('timeout', () => r.destroy(Object.assign(new Error('timeout'), { code: 'E_TIMEOUT' })))
      r.on('error', reject)
      r.end()
    })
    const location = answer.headers.location
    if (!location || ![301, 302, 303, 307, 308].includes(answer.statusCode ?? 0)) return answer
    let next: URL
    try {
      next = new URL(location, url)
    } catch {
      return answer
    }
    // a redirect elsewhere is handed to the browser, not followed
    if ((next.protocol !== 'http:' && next.protocol !== 'https:') || !allowed(next)) return answer
    answer.resume()
    if (hops >= MAX_REDIRECTS) throw Object.assign(new Error('too many redirects'), { code: 'E_TOO_MANY_REDIRECTS' })
    url = next
  }
}
