// The shacache/shadir proxy of the local master (proxy.md §10.4), against the built proxy and
// an upstream shacache/shadir made here with node:http.
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { startProxy, tempDir, type StartedProxy } from './helpers.ts'

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  text: string
}

/** One request on its own connection; a raw path is sent as is (no URL normalisation). */
function http(base: string, method: string, path: string, opts: { body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Answer> {
  const u = new URL(base)
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, method, path, headers: { Connection: 'close', ...opts.headers }, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const body = Buffer.concat(chunks)
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') })
      })
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

/**
 * A request the proxy answers before reading its whole body (`headers` may announce more than
 * `body`): its status. The proxy must answer rather than reset the connection.
 */
function refusedEarly(base: string, method: string, path: string, headers: Record<string, string>, body: string): Promise<number> {
  const u = new URL(base)
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, method, path, headers, agent: false }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
      req.destroy()
    })
    req.on('error', reject)
    req.write(body)
  })
}

const sha512 = (data: string | Buffer) => createHash('sha512').update(data).digest('hex')

/** A signed shadir entry as the node uploads it: [entry JSON text, base64 signature]. */
function signedEntry(archiveSha512: string): [string, string] {
  const entry = `{"sha512": "${archiveSha512}", "software_url": "https://example.com/software.cfg", "software_root": "/opt/slapgrid", "multiarch": "x86_64-linux-gnu", "os": ["debian", "12", ""]}`
  return [entry, Buffer.from(`signature of ${archiveSha512.slice(0, 8)}`).toString('base64')]
}

/** An upstream shacache (/cache/<sha512>) and shadir (/dir/<key>) holding what the test puts in. */
class Upstream {
  readonly archives = new Map<string, Buffer>()
  readonly dirs = new Map<string, string>()
  readonly seen: string[] = []
  /** every answer has this status instead, when set */
  failWith: number | undefined
  /** archives are sent with one byte changed */
  corrupt = false
  server: Server
  url = ''
  constructor() {
    this.server = createServer((req, res) => {
      this.seen.push(`${req.method} ${req.url}`)
      if (this.failWith) return void res.writeHead(this.failWith).end('upstream trouble')
      const url = req.url ?? ''
      if (url.startsWith('/moved/')) return void res.writeHead(302, { Location: url.slice('/moved'.length) }).end()
      const archive = url.startsWith('/cache/') ? this.archives.get(url.slice('/cache/'.length)) : undefined
      if (archive) {
        const sent = this.corrupt ? Buffer.concat([archive, Buffer.from('x')]) : archive
        return void res.writeHead(200, { 'Content-Type': 'application/octet-stream' }).end(sent)
      }
      const dir = url.startsWith('/dir/') ? this.dirs.get(decodeURIComponent(url.slice('/dir/'.length))) : undefined
      if (dir !== undefined) return void res.writeHead(200, { 'Content-Type': 'application/json' }).end(dir)
      res.writeHead(404).end('not found')
    })
  }
  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r))
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((r) => this.server.close(() => r()))
  }
}

interface Ctx {
  dir: string
  content: string
  metadata: string
  up: Upstream
  proxies: StartedProxy[]
  /** a proxy with the two directories and, when asked, the upstream URLs */
  start(opts?: { upstream?: boolean; extra?: string }): Promise<StartedProxy>
}

const t = suite<Ctx>('proxy /shacache/ (shacache/shadir proxy)')
t.before.each(async (c) => {
  c.dir = tempDir('slapos-shacache-')
  c.content = join(c.dir, 'shacache', 'data')
  c.metadata = join(c.dir, 'shacache', 'dir')
  c.up = new Upstream()
  await c.up.start()
  c.proxies = []
  c.start = async (opts = {}) => {
    const lines = [`shacache_content_directory = ${c.content}`, `shacache_metadata_directory = ${c.metadata}`]
    if (opts.upstream) lines.push(`shacache_upstream_cache_url = ${c.up.url}/cache`, `shacache_upstream_dir_url = ${c.up.url}/dir`)
    const p = await startProxy({ extraCfg: `${lines.join('\n')}\n${opts.extra ?? ''}` })
    c.proxies.push(p)
    return p
  }
})
t.after.each(async (c) => {
  for (const p of c.proxies) {
    await p.stop()
    rmSync(p.dir, { recursive: true, force: true })
  }
  await c.up.stop()
  rmSync(c.dir, { recursive: true, force: true })
})

t('upload then download: POST stores the body under its sha512 (201), GET sends it as an attachment', async (c) => {
  const p = await c.start()
  const data = Buffer.from(`archive ${Math.random()}`)
  const hash = sha512(data)
  for (const path of ['/shacache/cache', '/shacache/cache/']) {
    const up = await http(p.url, 'POST', path, { body: data, headers: { 'Content-Type': 'application/octet-stream' } })
    assert.is(up.status, 201)
    assert.is(up.text, hash)
  }
  assert.equal(readFileSync(join(c.content, hash)), data)
  // no temporary file left beside it
  assert.equal(readdirSync(c.content), [hash])
  const down = await http(p.url, 'GET', `/shacache/cache/${hash}`)
  assert.is(down.status, 200)
  assert.equal(down.body, data)
  assert.is(down.headers['content-type'], 'application/octet-stream')
  assert.is(down.headers['content-disposition'], `attachment; filename=${hash}`)
  // HEAD, a byte range, a conditional GET
  const head = await http(p.url, 'HEAD', `/shacache/cache/${hash}`)
  assert.is(head.status, 200)
  assert.is(head.headers['content-length'], String(data.length))
  assert.is(head.body.length, 0)
  const part = await http(p.url, 'GET', `/shacache/cache/${hash}`, { headers: { Range: 'bytes=0-6' } })
  assert.is(part.status, 206)
  assert.is(part.text, 'archive')
  assert.is(part.headers['content-range'], `bytes 0-6/${data.length}`)
  const again = await http(p.url, 'GET', `/shacache/cache/${hash}`, { headers: { 'If-None-Match': String(down.headers.etag) } })
  assert.is(again.status, 304)
  // PUT under its own name is the same upload
  const other = Buffer.from('second archive')
  const put = await http(p.url, 'PUT', `/shacache/cache/${sha512(other)}`, { body: other })
  assert.is(put.status, 201)
  assert.is(put.text, sha512(other))
  assert.equal(readFileSync(join(c.content, sha512(other))), other)
})

t('PUT whose body is not its sha512: 400 Checksum mismatch, nothing stored', async (c) => {
  const p = await c.start()
  const r = await http(p.url, 'PUT', `/shacache/cache/${'0'.repeat(128)}`, { body: 'wrong' })
  assert.is(r.status, 400)
  assert.match(r.text, '<p>Checksum mismatch</p>')
  assert.is(r.headers['content-type'], 'text/html; charset=utf-8')
  // a name that is no sha512 at all gets the same answer
  const bad = await http(p.url, 'PUT', '/shacache/cache/not-a-sha512', { body: 'wrong' })
  assert.is(bad.status, 400)
  assert.match(bad.text, 'Checksum mismatch')
  assert.equal(existsSync(c.content) ? readdirSync(c.content) : [], [])
})

t('without both directories every route answers 503 Shacache not configured', async (c) => {
  const p = await startProxy({ extraCfg: `shacache_content_directory = ${c.content}\n` })
  c.proxies.push(p)
  assert.match(p.log(), 'shacache-content-directory is set but shacache-metadata-directory is not. Shacache proxy will not work.')
  const calls: [string, string, string?][] = [
    ['GET', `/shacache/cache/${'0'.repeat(128)}`],
    ['POST', '/shacache/cache', 'data'],
    ['PUT', `/shacache/cache/${'0'.repeat(128)}`, 'data'],
    ['GET', '/shacache/dir/some-key'],
    ['PUT', '/shacache/dir/some-key', '["entry", "sig"]'],
    ['POST', '/shacache/update'],
  ]
  for (const [method, path, body] of calls) {
    const r = await http(p.url, method, path, { body, headers: { 'Content-Type': 'application/json' } })
    assert.is(r.status, 503, `${method} ${path}`)
    assert.match(r.text, '<p>Shacache not configured</p>')
  }
  assert.not.ok(existsSync(c.content))
  // routes that do not exist are still 404, wrong methods 405
  assert.is((await http(p.url, 'GET', '/shacache/nothing')).status, 404)
  const del = await http(p.url, 'DELETE', `/shacache/cache/${'0'.repeat(128)}`)
  assert.is(del.status, 405)
  assert.is(del.headers.allow, 'GET, HEAD, OPTIONS, PUT')
})

t('missing: 404 for an archive or a key that is neither here nor upstream', async (c) => {
  const local = await c.start()
  assert.is((await http(local.url, 'GET', `/shacache/cache/${sha512('nothing')}`)).status, 404)
  assert.is((await http(local.url, 'GET', '/shacache/dir/missing-key')).status, 404)
  const withUpstream = await c.start({ upstream: true })
  assert.is((await http(withUpstream.url, 'GET', `/shacache/cache/${sha512('nothing')}`)).status, 404)
  assert.is((await http(withUpstream.url, 'GET', '/shacache/dir/missing-key')).status, 404)
  assert.equal(c.up.seen, [`GET /cache/${sha512('nothing')}`, 'GET /dir/missing-key'])
})

t('upstream fallback: archive and entries fetched once, kept locally and served from there', async (c) => {
  const archive = Buffer.from('upstream binary content')
  const hash = sha512(archive)
  c.up.archives.set(hash, archive)
  const entries = [signedEntry(hash)]
  c.up.dirs.set('file-urlmd5:0123abcd', JSON.stringify(entries))
  const p = await c.start({ upstream: true })
  const down = await http(p.url, 'GET', `/shacache/cache/${hash}`)
  assert.is(down.status, 200)
  assert.equal(down.body, archive)
  assert.equal(readFileSync(join(c.content, hash)), archive)
  const dir = await http(p.url, 'GET', '/shacache/dir/file-urlmd5:0123abcd')
  assert.is(dir.status, 200)
  assert.is(dir.headers['content-type'], 'application/json')
  assert.equal(JSON.parse(dir.text), entries)
  // stored as the original writes it: Python's json.dumps of the list
  const stored = readFileSync(join(c.metadata, 'file-urlmd5:0123abcd'), 'utf8')
  assert.is(stored, `[["${entries[0]?.[0].replace(/"/g, '\\"')}", "${entries[0]?.[1]}"]]`)
  // the second time nothing goes upstream
  const seen = c.up.seen.length
  assert.equal((await http(p.url, 'GET', `/shacache/cache/${hash}`)).body, archive)
  assert.equal(JSON.parse((await http(p.url, 'GET', '/shacache/dir/file-urlmd5:0123abcd')).text), entries)
  assert.is(c.up.seen.length, seen)
  // a redirecting upstream is followed
  const other = Buffer.from('behind a redirect')
  c.up.archives.set(sha512(other), other)
  const moved = await c.start({ extra: `shacache_upstream_cache_url = ${c.up.url}/moved/cache\n` })
  assert.equal((await http(moved.url, 'GET', `/shacache/cache/${sha512(other)}`)).body, other)
})

t('upstream failures: 502 with its status or error, and a wrong archive is not kept', async (c) => {
  const archive = Buffer.from('will be corrupted')
  const hash = sha512(archive)
  c.up.archives.set(hash, archive)
  const p = await c.start({ upstream: true })
  c.up.failWith = 500
  const cache = await http(p.url, 'GET', `/shacache/cache/${hash}`)
  assert.is(cache.status, 502)
  assert.match(cache.text, '<p>Upstream returned 500</p>')
  const dir = await http(p.url, 'GET', '/shacache/dir/some-key')
  assert.is(dir.status, 502)
  assert.match(dir.text, 'Upstream returned 500')
  c.up.failWith = undefined
  c.up.corrupt = true
  const corrupt = await http(p.url, 'GET', `/shacache/cache/${hash}`)
  assert.is(corrupt.status, 502)
  assert.match(corrupt.text, 'Upstream error: the data sent has sha512')
  assert.equal(existsSync(c.content) ? readdirSync(c.content) : [], [])
  // an upstream that cannot be reached
  await c.up.stop()
  const gone = await http(p.url, 'GET', `/shacache/cache/${hash}`)
  assert.is(gone.status, 502)
  assert.match(gone.text, /Upstream error: .*ECONNREFUSED/)
  assert.match(p.log(), 'Failed to fetch from upstream')
  c.up = new Upstream()
  await c.up.start()
})

t('dir PUT then GET: a signed entry becomes the key’s only entry; bad bodies are refused', async (c) => {
  const p = await c.start()
  const first = signedEntry(sha512('a'))
  const json = { 'Content-Type': 'application/json' }
  const put = await http(p.url, 'PUT', '/shacache/dir/0123456789abcdef', { body: JSON.stringify(first), headers: json })
  assert.is(put.status, 201)
  assert.is(put.text, '')
  const get = await http(p.url, 'GET', '/shacache/dir/0123456789abcdef')
  assert.is(get.status, 200)
  assert.equal(JSON.parse(get.text), [first])
  // like the original, a second PUT replaces the entries of the key
  const second = signedEntry(sha512('b'))
  assert.is((await http(p.url, 'PUT', '/shacache/dir/0123456789abcdef', { body: JSON.stringify(second), headers: json })).status, 201)
  assert.equal(JSON.parse((await http(p.url, 'GET', '/shacache/dir/0123456789abcdef')).text), [second])
  for (const body of ['"not a list"', '["only one"]', '["a", "b", "c"]', '[1, 2]']) {
    const r = await http(p.url, 'PUT', '/shacache/dir/other', { body, headers: json })
    assert.is(r.status, 400, body)
    assert.match(r.text, 'Invalid entry format')
  }
  const notJson = await http(p.url, 'PUT', '/shacache/dir/other', { body: '[nope', headers: json })
  assert.is(notJson.status, 400)
  assert.match(notJson.text, 'Failed to decode JSON object')
  const wrongType = await http(p.url, 'PUT', '/shacache/dir/other', { body: JSON.stringify(first), headers: { 'Content-Type': 'text/plain' } })
  assert.is(wrongType.status, 415)
  const huge = JSON.stringify([first[0], 'x'.repeat(2 * 1024 * 1024)])
  assert.is(await refusedEarly(p.url, 'PUT', '/shacache/dir/other', { ...json, 'Content-Length': String(huge.length) }, huge), 413)
  assert.equal(readdirSync(c.metadata), ['0123456789abcdef'])
})

t('traversal: encoded slashes, dot keys, non-hex names and oversized archives are refused, nothing written outside', async (c) => {
  const p = await c.start()
  const outside = join(c.dir, 'shacache', 'outside')
  mkdirSync(join(c.dir, 'shacache'))
  writeFileSync(outside, 'secret')
  const json = { 'Content-Type': 'application/json' }
  const entry = JSON.stringify(signedEntry(sha512('x')))
  for (const key of ['..', '.', '..%2Foutside', '%2E%2E', '.hidden', 'a%00b', '..%2F..%2Fescaped']) {
    const put = await http(p.url, 'PUT', `/shacache/dir/${key}`, { body: entry, headers: json })
    assert.ok(put.status === 400 || put.status === 404, `PUT ${key}: ${put.status}`)
    const get = await http(p.url, 'GET', `/shacache/dir/${key}`)
    assert.is(get.status, 404, `GET ${key}`)
    assert.not.match(get.text, 'secret')
  }
  for (const name of ['..%2Foutside', '../outside', 'outside', sha512('x').toUpperCase()]) {
    const get = await http(p.url, 'GET', `/shacache/cache/${name}`)
    assert.is(get.status, 404, `GET cache ${name}`)
    assert.not.match(get.text, 'secret')
  }
  assert.is(readFileSync(outside, 'utf8'), 'secret')
  assert.equal(readdirSync(join(c.dir, 'shacache')).sort(), ['outside'])
  assert.not.ok(existsSync(join(c.dir, 'escaped')))
  // an archive announced larger than the limit is refused before it is read
  assert.is(await refusedEarly(p.url, 'POST', '/shacache/cache', { 'Content-Length': String(5 * 1024 ** 3) }, 'start of a very large body'), 413)
  assert.equal(existsSync(c.content) ? readdirSync(c.content) : [], [])
})

t('update: without upstream, entries whose archive is gone are dropped; with upstream, keys are refreshed or removed', async (c) => {
  const p = await c.start()
  const kept = Buffer.from('kept archive')
  assert.is((await http(p.url, 'POST', '/shacache/cache', { body: kept })).status, 201)
  mkdirSync(c.metadata, { recursive: true })
  writeFileSync(join(c.metadata, 'mixed'), JSON.stringify([signedEntry(sha512(kept)), signedEntry('0'.repeat(128))]))
  writeFileSync(join(c.metadata, 'orphan'), JSON.stringify([signedEntry('1'.repeat(128))]))
  writeFileSync(join(c.metadata, 'intact'), JSON.stringify([signedEntry(sha512(kept))]))
  const r = await http(p.url, 'POST', '/shacache/update')
  assert.is(r.status, 200)
  assert.is(r.text, '{"removed": ["mixed", "orphan"], "updated": []}')
  assert.equal(JSON.parse(readFileSync(join(c.metadata, 'mixed'), 'utf8')), [signedEntry(sha512(kept))])
  assert.not.ok(existsSync(join(c.metadata, 'orphan')))
  assert.ok(existsSync(join(c.metadata, 'intact')))

  const q = await c.start({ upstream: true })
  c.up.dirs.set('mixed', JSON.stringify([signedEntry('2'.repeat(128))]))
  const u = await http(q.url, 'POST', '/shacache/update')
  assert.is(u.status, 200)
  assert.is(u.text, '{"removed": ["intact"], "updated": ["mixed"]}')
  assert.equal(JSON.parse(readFileSync(join(c.metadata, 'mixed'), 'utf8')), [signedEntry('2'.repeat(128))])
  assert.not.ok(existsSync(join(c.metadata, 'intact')))
})

t('the dashed key names of the original example file are read too', async (c) => {
  const p = await startProxy({ extraCfg: `shacache-content-directory = ${c.content}\nshacache-metadata-directory = ${c.metadata}\n` })
  c.proxies.push(p)
  const r = await http(p.url, 'POST', '/shacache/cache', { body: 'dashed' })
  assert.is(r.status, 201)
  assert.ok(existsSync(join(c.content, sha512('dashed'))))
})

t.run()
