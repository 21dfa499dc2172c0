// What the local master checks before a request reaches a route: the request-target, the
// Host (DNS rebinding) and the Origin (cross-site forms). Pure; used by proxy-server.ts.
// docs/operations.md, Security, says what is accepted and which keys widen it.
import { isIP } from 'node:net'

/**
 * The request-target as a URL: origin-form (`/path?query`, `//` and `\` included, no
 * normalisation of the path) or absolute-form (`http://host/path`); undefined for anything
 * else (`*`, another scheme, a target the URL parser refuses).
 */
export function parseTarget(raw: string | undefined): URL | undefined {
  const target = raw ?? '/'
  try {
    if (target.startsWith('/')) return new URL(`http://proxy${target}`)
    const url = new URL(target)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined
    return new URL(`http://proxy${url.pathname}${url.search}`)
  } catch {
    return undefined
  }
}

/** The host part of a Host header (`name`, `name:port`, `[v6]:port`), lower case; undefined when malformed. */
export function hostName(header: string): string | undefined {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(header)
  if (!m || m[1] === undefined) return undefined
  return m[1].toLowerCase()
}

/** A loopback name or address: `localhost`, `*.localhost`, 127.0.0.0/8, `::1`, `::ffff:127.x`. */
export function isLoopbackName(name: string): boolean {
  const bare = name.startsWith('[') ? name.slice(1, -1) : name
  if (bare === 'localhost' || bare.endsWith('.localhost')) return true
  if (isIP(bare) === 4) return bare.startsWith('127.')
  if (isIP(bare) === 6) {
    const v = bare.toLowerCase()
    return v === '::1' || v === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(v)
  }
  return false
}

export interface HostPolicy {
  /** the proxy listens on a loopback address only */
  loopback: boolean
  /** lower-case names and addresses (IPv6 without brackets) accepted besides loopback ones */
  names: Set<string>
}

/**
 * Which Host headers reach the routes: loopback names and addresses, the machine's host
 * names (Debian maps its own to 127.0.1.1), and `extra` (the `allowed_hosts` key); on
 * another bind than loopback also the bound address (every address of the machine for a
 * wildcard bind).
 */
export function hostPolicy(bound: string, extra: string[], machine: () => { hostnames: string[]; addresses: string[] }): HostPolicy {
  const names = new Set(extra.map((n) => n.toLowerCase().replace(/^\[(.*)\]$/, '$1')))
  const loopback = isLoopbackName(bound)
  const { hostnames, addresses } = machine()
  for (const h of hostnames) if (h) names.add(h.toLowerCase())
  if (!loopback) {
    if (bound === '0.0.0.0' || bound === '::' || bound === '') for (const a of addresses) names.add(a.toLowerCase())
    else names.add(bound.toLowerCase().replace(/^\[(.*)\]$/, '$1'))
  }
  return { loopback, names }
}

/** Is this Host header one the proxy answers to? An absent Host (HTTP/1.0) is accepted. */
export function hostAllowed(header: string | undefined, policy: HostPolicy): boolean {
  if (header === undefined) return true
  const name = hostName(header)
  if (name === undefined) return false
  if (isLoopbackName(name)) return true
  const bare = name.startsWith('[') ? name.slice(1, -1) : name
  return policy.names.has(bare)
}

/**
 * A request from a page of another site carries an Origin that is not this proxy's: refused.
 * The proxy's own origin is the one the Host names (its scheme may differ behind a TLS
 * front). SLAP clients send no Origin.
 */
export function originAllowed(origin: string | undefined, host: string | undefined): boolean {
  if (origin === undefined) return true
  if (host === undefined) return false
  let url: URL
  try {
    url = new URL(origin)
  } catch {
    return false
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false
  return url.host.toLowerCase() === host.toLowerCase() || withDefaultPort(url).toLowerCase() === host.toLowerCase()
}

function withDefaultPort(url: URL): string {
  return url.port ? url.host : `${url.host}:${url.protocol === 'https:' ? 443 : 80}`
}

/**
 * A `relative_url` of hateoas traverse that may be a Location: a path of this proxy (starts
 * with one `/`, not `//` nor `/\`), without control characters; other characters than
 * printable ASCII are percent-encoded. Undefined when refused.
 */
export function localLocation(rel: string): string | undefined {
  if (!rel.startsWith('/') || rel.startsWith('//') || rel.startsWith('/\\')) return undefined
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(rel)) return undefined
  return rel.replace(/[^\x21-\x7e]+/gu, (s) => {
    try {
      return encodeURIComponent(s)
    } catch {
      return ''
    }
  })
}

/** This machine's host name (and its first label) and the addresses of its interfaces. */
export function machineNames(): { hostnames: string[]; addresses: string[] } {
  const os = process.getBuiltinModule('node:os')
  const name = os.hostname()
  const addresses: string[] = []
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) addresses.push(a.address.replace(/%.*$/, ''))
  return { hostnames: [name, name.split('.')[0] ?? ''], addresses }
}

/** The first value of a header that may be repeated. */
export function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}
