// The panel of the local master (proxy.md §10.2) against the built proxy: the redirect, the page
// and the JSON routes it uses, downloads of public_directory_path, and - when Debian's chromium
// is installed - the page driven for real in headless Chromium over the DevTools protocol.
import { existsSync, mkdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { Script } from 'node:vm'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { Browser, CHROMIUM } from './chromium.ts'
import { formatComputer, jsonApi as api, skip, type StartedProxy, startProxy, supplyRelease, tempDir } from './helpers.ts'

const SR = 'http://sr.example/panel/software.cfg'
const PANEL_ROUTES = [
  'slapos.allDocs.v0.instance_tree_list',
  'slapos.get.v0.instance_tree',
  'slapos.allDocs.v0.compute_node_software_installation_list',
  'slapos.allDocs.WIP.compute_node_list',
]

interface Ctx {
  p: StartedProxy
  pub: string
}
const t = suite<Ctx>('proxy panel')
t.before.each(async (c) => {
  const dir = tempDir('slapos-panel-')
  c.pub = join(dir, 'public')
  mkdirSync(join(c.pub, 'sub'), { recursive: true })
  writeFileSync(join(c.pub, 'hello.txt'), 'Hello world!')
  writeFileSync(join(c.pub, 'sub', 'schema.json'), '{"type": "object"}')
  writeFileSync(join(c.pub, 'é t.bin'), 'u')
  // outside the public directory: must never be served
  writeFileSync(join(dir, 'secret.txt'), 'secret')
  utimesSync(join(c.pub, 'hello.txt'), new Date('2024-01-02T03:04:05Z'), new Date('2024-01-02T03:04:05Z'))
  c.p = await startProxy({ dir, extraCfg: `public_directory_path = ${c.pub}\n` })
})
t.after.each(async (c) => {
  await c.p.stop()
  rmSync(c.p.dir, { recursive: true, force: true })
})

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

/** One request with the path sent exactly as given (fetch would normalize `..`). */
function raw(p: StartedProxy, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  const u = new URL(p.url)
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path, method, headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (s: string) => (body += s))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

t('GET / redirects to /panel/, /panel to /panel/ (query kept)', async ({ p }) => {
  const root = await raw(p, '/')
  assert.is(root.status, 302)
  assert.is(root.headers.location, '/panel/')
  const bare = await raw(p, '/panel?x=1')
  assert.is(bare.status, 308)
  assert.is(bare.headers.location, '/panel/?x=1')
  // following the redirects ends on the page
  const res = await fetch(p.url)
  assert.is(res.status, 200)
  assert.is(new URL(res.url).pathname, '/panel/')
})

t('the panel is one self-contained HTML page that calls the JSON routes it needs', async ({ p }) => {
  const r = await raw(p, '/panel/')
  assert.is(r.status, 200)
  assert.is(r.headers['content-type'], 'text/html; charset=utf-8')
  assert.is(r.headers['content-length'], String(Buffer.byteLength(r.body)))
  assert.match(r.body, /^<!doctype html>/)
  for (const route of PANEL_ROUTES) assert.ok(r.body.includes(`'${route}'`), `the page calls ${route}`)
  // the JSON API answers those routes on this very proxy (relative to /panel/: ../slapos.*)
  assert.ok(r.body.includes("new URL('../' + name, document.baseURI)"))
  // requests go through the panel's own route, which checks them against the release's schema
  assert.ok(r.body.includes("new URL('request', document.baseURI)"))
  assert.ok(r.body.includes("new URL('schema?url=' + encodeURIComponent(url), document.baseURI)"))
  assert.equal(await api(p, 'slapos.allDocs.WIP.compute_node_list'), { result_list: [] })
  // nothing loaded from elsewhere, nothing rendered as HTML
  assert.not.match(r.body, /<(link|img|iframe)\b|\bsrc=|https?:\/\/|innerHTML|outerHTML|insertAdjacentHTML|document\.write/)
  // the request form has every field the brief of the panel lists
  for (const field of ['title', 'software_release_uri', 'software_type', 'parameters_json', 'shared', 'state', 'parameter_mode']) {
    assert.match(r.body, new RegExp(`name="${field}"`), field)
  }
  // its script is valid JavaScript
  const scripts = [...r.body.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1] ?? '')
  assert.is(scripts.length, 1)
  new Script(scripts[0] ?? '', { filename: 'panel.js' })
  // conditional GET and HEAD
  const again = await raw(p, '/panel/', { 'If-None-Match': String(r.headers.etag) })
  assert.is(again.status, 304)
  assert.is(again.body, '')
  const head = await raw(p, '/panel/', {}, 'HEAD')
  assert.is(head.status, 200)
  assert.is(head.headers['content-length'], r.headers['content-length'])
  assert.is(head.body, '')
  // other panel paths and methods
  assert.is((await raw(p, '/panel/panel.js')).status, 404)
  const post = await raw(p, '/panel/', {}, 'POST')
  assert.is(post.status, 405)
  assert.is(post.headers.allow, 'HEAD, GET, OPTIONS')
})

t('public file: 200 as an attachment with the headers of werkzeug send_file', async ({ p, pub }) => {
  const r = await raw(p, '/panel/public/hello.txt')
  assert.is(r.status, 200)
  assert.is(r.body, 'Hello world!')
  assert.is(r.headers['content-disposition'], 'attachment; filename=hello.txt')
  assert.is(r.headers['content-type'], 'text/plain; charset=utf-8')
  assert.is(r.headers['content-length'], '12')
  assert.is(r.headers['last-modified'], 'Tue, 02 Jan 2024 03:04:05 GMT')
  assert.is(r.headers['cache-control'], 'no-cache')
  assert.is(r.headers['accept-ranges'], 'bytes')
  // "<mtime>-<size>-<adler32 of the path>" as werkzeug makes it
  assert.match(String(r.headers.etag), /^"1704164645(\.0)?-12-\d+"$/)
  const nested = await raw(p, '/panel/public/sub/schema.json')
  assert.is(nested.status, 200)
  assert.is(nested.body, '{"type": "object"}')
  assert.is(nested.headers['content-type'], 'application/json')
  assert.is(nested.headers['content-disposition'], 'attachment; filename=schema.json')
  // a name that is not ASCII: ASCII fallback and RFC 5987 form
  const utf8 = await raw(p, '/panel/public/%C3%A9%20t.bin')
  assert.is(utf8.status, 200)
  assert.is(utf8.headers['content-disposition'], `attachment; filename="e t.bin"; filename*=UTF-8''%C3%A9%20t.bin`)
  assert.is(utf8.headers['content-type'], 'application/octet-stream')
  // HEAD: the same headers, no body
  const head = await raw(p, '/panel/public/hello.txt', {}, 'HEAD')
  assert.is(head.status, 200)
  assert.is(head.headers.etag, r.headers.etag)
  assert.is(head.body, '')
  // the file is read at each request
  writeFileSync(join(pub, 'hello.txt'), 'Hello again!!')
  const changed = await raw(p, '/panel/public/hello.txt')
  assert.is(changed.body, 'Hello again!!')
  assert.is.not(changed.headers.etag, r.headers.etag)
})

t('public file: conditional GET (304), If-Match (412) and ranges (206, 416)', async ({ p }) => {
  const first = await raw(p, '/panel/public/hello.txt')
  const etag = String(first.headers.etag)
  const byEtag = await raw(p, '/panel/public/hello.txt', { 'If-None-Match': etag })
  assert.is(byEtag.status, 304)
  assert.is(byEtag.body, '')
  assert.is(byEtag.headers.etag, etag)
  assert.is(byEtag.headers['content-type'], undefined)
  assert.is((await raw(p, '/panel/public/hello.txt', { 'If-None-Match': `W/${etag}` })).status, 304)
  assert.is((await raw(p, '/panel/public/hello.txt', { 'If-None-Match': '"another"' })).status, 200)
  assert.is((await raw(p, '/panel/public/hello.txt', { 'If-Modified-Since': 'Tue, 02 Jan 2024 03:04:05 GMT' })).status, 304)
  assert.is((await raw(p, '/panel/public/hello.txt', { 'If-Modified-Since': 'Wed, 03 Jan 2024 00:00:00 GMT' })).status, 304)
  const older = await raw(p, '/panel/public/hello.txt', { 'If-Modified-Since': 'Tue, 02 Jan 2024 03:04:04 GMT' })
  assert.is(older.status, 200)
  assert.is(older.body, 'Hello world!')
  // a stale ETag wins over a date that would match, as werkzeug
  assert.is((await raw(p, '/panel/public/hello.txt', { 'If-None-Match': '"old"', 'If-Modified-Since': 'Tue, 02 Jan 2024 03:04:05 GMT' })).status, 200)
  assert.is((await raw(p, '/panel/public/hello.txt', { 'If-Match': etag })).status, 200)
  assert.is((await raw(p, '/panel/public/hello.txt', { 'If-Match': '"old"' })).status, 412)
  const part = await raw(p, '/panel/public/hello.txt', { Range: 'bytes=0-4' })
  assert.is(part.status, 206)
  assert.is(part.body, 'Hello')
  assert.is(part.headers['content-range'], 'bytes 0-4/12')
  const tail = await raw(p, '/panel/public/hello.txt', { Range: 'bytes=-3' })
  assert.is(tail.body, 'ld!')
  const stale = await raw(p, '/panel/public/hello.txt', { Range: 'bytes=0-4', 'If-Range': '"old"' })
  assert.is(stale.status, 200)
  assert.is(stale.body, 'Hello world!')
  const out = await raw(p, '/panel/public/hello.txt', { Range: 'bytes=12-' })
  assert.is(out.status, 416)
  assert.is(out.headers['content-range'], 'bytes */12')
})

t('public file: no way out of the directory, missing files and directories are 404', async ({ p, pub }) => {
  assert.ok(statSync(join(pub, '..', 'secret.txt')).isFile())
  for (const path of [
    '/panel/public/../secret.txt',
    '/panel/public/..%2Fsecret.txt',
    '/panel/public/sub/..%2F..%2Fsecret.txt',
    '/panel/public/%2E%2E%2Fsecret.txt',
    `/panel/public/${encodeURIComponent(join(pub, '..', 'secret.txt'))}`,
    `/panel/public/${encodeURIComponent(`..${join(pub, '..', 'secret.txt')}`)}`,
    '/panel/public/nope.txt',
    '/panel/public/sub',
    '/panel/public/sub/',
    '/panel/public/',
    '/panel/public/%00',
    '/panel/public/%E0%A4%A',
  ]) {
    const r = await raw(p, path)
    assert.is(r.status, 404, path)
    assert.not.match(r.body, /secret/, path)
  }
  // `..` that stays inside is normalized away, as werkzeug's safe_join does
  const inside = await raw(p, '/panel/public/sub/..%2Fhello.txt')
  assert.is(inside.status, 200)
  assert.is(inside.body, 'Hello world!')
})

t('public file: 403 when public_directory_path is not configured', async () => {
  const p = await startProxy()
  try {
    const r = await raw(p, '/panel/public/hello.txt')
    assert.is(r.status, 403)
    assert.is(r.headers['content-type'], 'text/html; charset=utf-8')
    assert.match(r.body, /<p>The public directory path is not configured\.<\/p>/)
    // the page itself does not need it
    assert.is((await raw(p, '/panel/')).status, 200)
  } finally {
    await p.stop()
    rmSync(p.dir, { recursive: true, force: true })
  }
})

t('headless Chromium: the page lists computers and trees and requests an instance through its form', async ({ p }) => {
  if (!existsSync(CHROMIUM)) return skip(`${CHROMIUM} is not installed (Debian package chromium)`)
  await formatComputer(p)
  await supplyRelease(p, SR)
  await api(p, 'slapos.post.v0.software_instance', { title: 'existing', software_release_uri: SR, software_type: 'default', parameters: { nested: { a: 1 } } })
  const browser = await Browser.start(`${p.url}panel/`)
  try {
    const page = browser.page
    await page.waitFor("document.getElementById('status').textContent.startsWith('Updated')")
    assert.match(await page.eval("document.getElementById('computers').textContent"), /computer.*http:\/\/sr\.example\/panel\/software\.cfg.*available/)
    assert.match(await page.eval("document.querySelector('[data-title=existing]').textContent"), /existing.*default.*started.*computer \/ slappart0.*tap0 10\.0\.0\.2.*nested\{'a': 1\}/s)
    assert.equal(await page.eval("[...document.querySelectorAll('#software-releases option')].map((o) => o.value)"), [SR])
    // key/value mode: the JSON text area is not shown
    const shown = (sel: string) => page.eval(`getComputedStyle(document.querySelector(${JSON.stringify(sel)})).display !== 'none'`)
    assert.equal([await shown('#pairs'), await shown('textarea[name=parameters_json]')], [true, false])

    // a key/value request, with a value that would be markup if it were rendered as HTML
    await page.eval(`(() => {
      const f = document.getElementById('request').elements
      f.title.value = 'from-panel'
      f.software_release_uri.value = ${JSON.stringify(SR)}
      f.software_type.value = 'default'
      document.querySelector('#pairs .key').value = 'greeting'
      document.querySelector('#pairs .value').value = '<b id=injected>hi</b>'
      f.state.value = 'stopped'
      f.computer_guid.value = 'computer'
      document.getElementById('request').requestSubmit()
    })()`)
    await page.waitFor("document.getElementById('request-result').textContent.startsWith('Requested')")
    assert.is(await page.eval("document.getElementById('request-result').textContent"), 'Requested from-panel on computer / slappart1 (stopped)')
    const doc = await api(p, 'slapos.get.v0.instance_tree', { title: 'from-panel' })
    assert.is(doc.software_release_uri, SR)
    assert.is(doc.software_type, 'default')
    assert.is(doc.state, 'stopped')
    assert.is(doc.compute_partition_id, 'slappart1')
    assert.equal(doc.parameters, { greeting: '<b id=injected>hi</b>' })
    // the page refreshed itself and shows the value as text
    await page.waitFor("!!document.querySelector('[data-title=from-panel]')")
    assert.match(await page.eval("document.querySelector('[data-title=from-panel] .parameters').textContent"), /greeting<b id=injected>hi<\/b>/)
    assert.is(await page.eval("document.getElementById('injected') === null"), true)

    // connection parameters published by the instance appear after a refresh
    await api(p, 'slapos.put.v0.software_instance_connection_parameter', { instance_guid: doc.instance_guid, connection_parameter_dict: { url: 'http://10.0.0.3:8080/' } })
    await page.eval("document.getElementById('refresh').click()")
    await page.waitFor("document.querySelector('[data-title=from-panel] .connection').textContent.includes('http://10.0.0.3:8080/')")

    // JSON parameters: invalid JSON requests nothing, a JSON object is sent as it is
    await page.eval(`(() => {
      const f = document.getElementById('request').elements
      document.querySelector('[name=parameter_mode][value=json]').click()
      f.title.value = 'json-one'
      f.parameters_json.value = '{"x": '
      document.getElementById('request').requestSubmit()
    })()`)
    await page.waitFor("document.getElementById('request-result').textContent.startsWith('Not requested')")
    assert.match(await page.eval("document.getElementById('request-result').textContent"), /not valid JSON/)
    assert.equal([await shown('#pairs'), await shown('textarea[name=parameters_json]')], [false, true])
    assert.is((await api(p, 'slapos.allDocs.v0.instance_tree_list')).result_list.length, 2)
    await page.eval(`(() => {
      const f = document.getElementById('request').elements
      f.parameters_json.value = '{"x": {"y": [1, 2]}, "s": "t"}'
      f.state.value = 'started'
      document.getElementById('request').requestSubmit()
    })()`)
    await page.waitFor("document.getElementById('request-result').textContent.startsWith('Requested json-one')")
    // the proxy keeps parameter values as text, as the original: what is not a string is its Python repr
    assert.equal((await api(p, 'slapos.get.v0.instance_tree', { title: 'json-one' })).parameters, { x: "{'y': [1, 2]}", s: 't' })
    // a refused request shows the master's message: no partition left
    await page.eval(`(() => {
      const f = document.getElementById('request').elements
      f.title.value = 'one-too-many'
      document.getElementById('request').requestSubmit()
    })()`)
    await page.waitFor("document.getElementById('request-result').textContent.startsWith('Not requested')")
    assert.is((await api(p, 'slapos.allDocs.v0.instance_tree_list')).result_list.length, 3)
    assert.is(await page.eval("document.getElementById('request-result').textContent"), 'Not requested: No free computer partition found for: one-too-many')
    // "Edit in the request form" loads a tree's values
    await page.eval("document.querySelector('[data-title=from-panel] button').click()")
    const form = "document.getElementById('request').elements"
    // the page first asks the proxy for the release's schema (this one has none)
    await page.waitFor(`${form}.parameter_mode.value === 'pairs'`)
    assert.equal(
      await page.eval(`[${form}.title.value, ${form}.software_release_uri.value, ${form}.state.value, ${form}.parameter_mode.value]`),
      ['from-panel', SR, 'stopped', 'pairs'],
    )
    assert.equal(await page.eval("[...document.querySelectorAll('#pairs .pair')].map((r) => [r.querySelector('.key').value, r.querySelector('.value').value])"), [['greeting', '<b id=injected>hi</b>']])
  } finally {
    await browser.close()
  }
})

t.run()
