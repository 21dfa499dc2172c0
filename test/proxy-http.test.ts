// The HTTPS frontend bypass (proxy.md §4.2, checklist 81-82) and the /http_proxy/ route
// behind it (§10.3), against the built proxy and a small upstream HTTP server made here.
import { rmSync } from 'node:fs'
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { dumps, loads, SlapObject } from '../src/slap-protocol.ts'
import { startProxy, type StartedProxy } from './helpers.ts'

const APACHE_FRONTEND = 'http://git.erp5.org/gitweb/slapos.git/blob_plain/HEAD:/software/apache-frontend/software.cfg'

interface Ctx {
  p: StartedProxy
  up: Server
  upUrl: string
  seen: IncomingHttpHeaders[]
}
const t = suite<Ctx>('proxy https frontend bypass and /http_proxy/')
t.before.each(async (c) => {
  // the HTTPS front of test 82 passes its own name as Host: a documented allowed_hosts entry
  c.p = await startProxy({ extraCfg: 'allowed_hosts = proxy.example\n' })
  c.seen = []
  c.up = createServer((req, res) => {
    c.seen.push(req.headers)
    const u = new URL(req.url ?? '/', 'http://x')
    if (u.pathname === '/loop') return void res.writeHead(302, { Location: '/loop' }).end()
    if (u.pathname === '/moved') return void res.writeHead(301, { Location: '/doc?from=moved' }).end()
    if (u.pathname === '/silent') return // never answers
    if (u.pathname === '/away') return void res.writeHead(302, { Location: `http://localhost:${(c.up.address() as { port: number }).port}/doc` }).end()
    res.writeHead(201, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Upstream': 'yes' })
    res.end(`${req.method} ${req.url}`)
  })
  await new Promise<void>((r) => c.up.listen(0, '127.0.0.1', r))
  c.upUrl = `127.0.0.1:${(c.up.address() as { port: number }).port}`
})
t.after.each(async (c) => {
  await c.p.stop()
  rmSync(c.p.dir, { recursive: true, force: true })
  c.up.closeAllConnections()
  await new Promise<void>((r) => c.up.close(() => r()))
})

/** An apache-frontend shared request; node:http because fetch may not set Host. */
function frontend(p: StartedProxy, url: string, headers: Record<string, string> = {}): Promise<Record<string, unknown>> {
  const body = new URLSearchParams({
    software_release: APACHE_FRONTEND,
    software_type: 'RootSoftwareInstance',
    partition_reference: 'front',
    partition_parameter_xml: dumps({ url }),
    filter_xml: dumps({}),
    state: dumps(null),
    shared_xml: dumps(true),
  }).toString()
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${p.url}requestComputerPartition`,
      { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': Buffer.byteLength(body), ...headers } },
      (res) => {
        let text = ''
        res.setEncoding('utf8').on('data', (s: string) => (text += s))
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}: ${text}`))
          resolve((loads(text) as SlapObject).state._connection_dict as Record<string, unknown>)
        })
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

t('81 over plain HTTP the fake frontend is the URL itself', async ({ p }) => {
  assert.equal(await frontend(p, 'https://[::1]:123/my/path?my=query&string=value#myanchor'), {
    secure_access: 'https://[::1]:123/my/path?my=query&string=value#myanchor',
    domain: '[::1]:123',
  })
})

t('82 reached over HTTPS (X-Forwarded-Proto) it is an /http_proxy/ URL on the proxy host', async ({ p }) => {
  assert.equal(await frontend(p, 'https://[::1]:123/my/path?my=query&string=value#myanchor', { 'X-Forwarded-Proto': 'https', Host: 'localhost' }), {
    secure_access: 'https://localhost/http_proxy/https/%5B::1%5D:123/my/path?my=query&string=value#myanchor',
    domain: 'localhost',
  })
  // X-Forwarded-Prefix is part of the base
  const d = await frontend(p, 'http://site.example/a', { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Prefix': '/master/', Host: 'proxy.example:8443' })
  assert.equal(d, { secure_access: 'https://proxy.example:8443/master/http_proxy/http/site.example/a', domain: 'proxy.example:8443' })
})

/** The frontend bypass over HTTPS hands out `url`'s site: /http_proxy/ may fetch it from then on. */
async function handOut(p: StartedProxy, url: string): Promise<void> {
  const d = await frontend(p, url, { 'X-Forwarded-Proto': 'https' })
  assert.match(String(d.secure_access), '/http_proxy/')
}

t('/http_proxy/ fetches nothing but the sites the frontend bypass handed out: 403, no connection', async ({ p, upUrl, seen }) => {
  const before = await fetch(`${p.url}http_proxy/http/${upUrl}/doc`)
  assert.is(before.status, 403)
  assert.match(await before.text(), 'is not a frontend target handed out by this master')
  assert.is(seen.length, 0)
  // over plain HTTP the bypass hands out the URL itself, not the proxy: still refused
  await frontend(p, `http://${upUrl}/`)
  assert.is((await fetch(`${p.url}http_proxy/http/${upUrl}/doc`)).status, 403)
  await handOut(p, `http://${upUrl}/`)
  assert.is((await fetch(`${p.url}http_proxy/http/${upUrl}/doc`)).status, 201)
  assert.is(seen.length, 1)
  // same host, another port: another site
  assert.is((await fetch(`${p.url}http_proxy/http/127.0.0.1:9/doc`)).status, 403)
  // a redirect to a site not handed out is given to the browser, not followed
  const away = await fetch(`${p.url}http_proxy/http/${upUrl}/away`, { redirect: 'manual' })
  assert.is(away.status, 302)
  assert.match(away.headers.get('location') ?? '', `http://localhost:`)
  assert.is(seen.length, 2)
})

t('/http_proxy/ fetches the page, passes status, body and headers, forwards only the listed request headers', async ({ p, upUrl, seen }) => {
  await handOut(p, `http://${upUrl}/`)
  const res = await fetch(`${p.url}http_proxy/http/${upUrl}/doc/x?a=1&b=2`, { headers: { Accept: 'text/plain', 'X-Secret': 'no', Cookie: 'c=1' } })
  assert.is(res.status, 201)
  assert.is(await res.text(), 'GET /doc/x?a=1&b=2')
  assert.is(res.headers.get('x-upstream'), 'yes')
  assert.is(res.headers.get('content-type'), 'text/plain; charset=utf-8')
  assert.is(seen[0]?.accept, 'text/plain')
  assert.is(seen[0]?.['x-secret'], undefined)
  assert.is(seen[0]?.cookie, undefined)
  // HEAD, and a redirect followed
  const head = await fetch(`${p.url}http_proxy/http/${upUrl}/moved`, { method: 'HEAD' })
  assert.is(head.status, 201)
  const moved = await fetch(`${p.url}http_proxy/http/${upUrl}/moved`)
  assert.is(await moved.text(), 'GET /doc?from=moved')
})

t('/http_proxy/ errors: 400 scheme, 405 method, 520 redirect loop, 523 unreachable, 526 TLS, 524 timeout', async ({ p, upUrl }) => {
  const status = async (path: string, init: RequestInit = {}) => (await fetch(`${p.url}http_proxy/${path}`, init)).status
  for (const site of [`http://${upUrl}/`, `https://${upUrl}/`, 'http://127.0.0.1:9/']) await handOut(p, site)
  assert.is(await status(`ftp/${upUrl}/x`), 400)
  assert.is(await status(`http/${upUrl}/x`, { method: 'POST', body: 'x' }), 405)
  assert.is(await status(`http/${upUrl}/loop`), 520)
  assert.is(await status('http/127.0.0.1:9/x'), 523)
  // TLS spoken to a plain HTTP server
  assert.is(await status(`https/${upUrl}/x`), 526)
  const t0 = Date.now()
  assert.is(await status(`http/${upUrl}/silent`), 524)
  const waited = Date.now() - t0
  assert.ok(waited >= 4500 && waited < 15_000, `waited ${waited} ms, about the 5 s timeout`)
})

t.run()
