// `slapos cachelookup url` and `slapos cachelookup pypi` (the built binary) against a shadir
// server written here: entries signed with openssl as the original's uploader signs them, the
// table on stdout with the trusted ones marked True, the headings on the log, and the exit
// status when nothing is found, the cache fails or cannot be reached.
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { pythonJson } from '../src/shadir.ts'
import { slaposAsync, tempDir, type Result } from './helpers.ts'

// --- keys and signatures made with openssl ---

interface Signer {
  key: string
  pem: string
}

function makeSigner(dir: string, name: string): Signer {
  const key = join(dir, `${name}.key`)
  const cert = join(dir, `${name}.crt`)
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-subj', `/CN=${name}`, '-days', '2'], { stdio: 'ignore' })
  return { key, pem: readFileSync(cert, 'utf8') }
}

/** base64 of `openssl dgst -sha1 -sign`: what the original's uploader sends. */
function opensslSign(signer: Signer, text: string): string {
  return execFileSync('openssl', ['dgst', '-sha1', '-sign', signer.key], { input: Buffer.from(text, 'utf8') }).toString('base64')
}

// --- a shadir server: GET /shadir/<key> answers the list stored under the key, or `status` ---

interface Shadir {
  url: string
  dir: Map<string, unknown>
  /** when set, every request is answered with this status */
  status?: number
  requests: string[]
  stop(): Promise<void>
}

async function startShadir(): Promise<Shadir> {
  const shadir: Shadir = { url: '', dir: new Map(), requests: [], stop: async () => {} }
  const server: Server = createServer((req, res) => {
    const path = req.url ?? ''
    shadir.requests.push(`${req.method} ${path}`)
    if (shadir.status) return void res.writeHead(shadir.status).end('down for maintenance')
    const m = /^\/shadir\/([^/]+)$/.exec(path)
    const list = req.method === 'GET' && m ? shadir.dir.get(decodeURIComponent(m[1] ?? '')) : undefined
    if (list === undefined) return void res.writeHead(404).end('not found')
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(list))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  shadir.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  shadir.stop = () => new Promise((r) => server.close(() => r()))
  return shadir
}

interface Env {
  dir: string
  shadir: Shadir
  trusted: Signer
  other: Signer
  cfg: string
  /** stores [entry text, signature] pairs under `key` */
  publish(key: string, ...pairs: Array<[string, string]>): void
  run(args: string[], cfg?: string): Promise<Result>
}

async function withShadir(fn: (e: Env) => Promise<void>): Promise<void> {
  const dir = tempDir('slapos-cachelookup-')
  const shadir = await startShadir()
  const trusted = makeSigner(dir, 'trusted')
  const other = makeSigner(dir, 'other')
  const cfg = join(dir, 'slapos.cfg')
  writeFileSync(
    cfg,
    [
      '[slapos]',
      'software_root = /opt/slapgrid',
      '',
      '[networkcache]',
      `download-dir-url = ${shadir.url}/shadir`,
      `download-cache-url = ${shadir.url}/shacache`,
      'signature-certificate-list =',
      ...trusted.pem.trim().split('\n').map((l) => `  ${l}`),
      '',
    ].join('\n'),
  )
  try {
    await fn({
      dir,
      shadir,
      trusted,
      other,
      cfg,
      publish: (key, ...pairs) => void shadir.dir.set(key, [...((shadir.dir.get(key) as unknown[]) ?? []), ...pairs]),
      run: (args, c = cfg) => slaposAsync(['cachelookup', ...args, '--cfg', c, '--log-time']),
    })
  } finally {
    await shadir.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

const md5 = (s: string) => createHash('md5').update(s, 'utf8').digest('hex')
/** the log lines without the `slapos[pid] LEVEL ` head */
const logLines = (r: Result) => r.stderr.split('\n').map((l) => l.replace(/^slapos\[\d+\] [A-Z]+ /, ''))

const SOURCE = 'http://example.com/src/a.tar.gz'

// --- cachelookup url ---

test('url: every entry under file-urlmd5:<md5>, True for the trusted signature only, table on stdout', () =>
  withShadir(async (e) => {
    const key = `file-urlmd5:${md5(SOURCE)}`
    const good = pythonJson({ file: 'a.tar.gz', url: SOURCE, urlmd5: md5(SOURCE), sha512: 'c0ffee' })
    const foreign = pythonJson({ file: 'a.tar.gz', url: SOURCE, urlmd5: md5(SOURCE), sha512: 'deadbeef' })
    e.publish(key, [good, opensslSign(e.trusted, good)], [foreign, opensslSign(e.other, foreign)])
    const r = await e.run(['url', SOURCE])
    assert.is(r.code, 0, r.stderr)
    assert.equal(e.shadir.requests, [`GET /shadir/${key}`])
    // as prettytable prints it (border, no padding, no vertical rules, centred)
    assert.is(
      r.stdout,
      [
        '-------------------------------------------------',
        '               url                sha512  signed ',
        '-------------------------------------------------',
        ' http://example.com/src/a.tar.gz  c0ffee   True  ',
        ' http://example.com/src/a.tar.gz deadbeef False  ',
        '-------------------------------------------------',
        '',
      ].join('\n'),
    )
    const lines = logLines(r)
    assert.ok(lines.includes(`Software source URL: ${SOURCE}`), r.stderr)
    // the original logs the SHADIR line with a trailing newline
    const at = lines.indexOf(`SHADIR URL: ${e.shadir.url}/shadir/${key}`)
    assert.ok(at > 0, r.stderr)
    assert.is(lines[at + 1], '')
    assert.not.match(r.stderr, 'c0ffee')
  }))

test('url: a signature by another key, a signature of other text or none at all is False', () =>
  withShadir(async (e) => {
    const key = `file-urlmd5:${md5(SOURCE)}`
    const text = pythonJson({ url: SOURCE, sha512: 'ab' })
    e.publish(key, [text, opensslSign(e.other, text)], [text, opensslSign(e.trusted, text + ' ')], [text, ''])
    const r = await e.run(['url', SOURCE])
    assert.is(r.code, 0, r.stderr)
    const signed = r.stdout.split('\n').filter((l) => l.includes(SOURCE)).map((l) => l.trim().split(/ +/)[2])
    assert.equal(signed, ['False', 'False', 'False'])
  }))

test('url: 404 is "Object not found in cache." exit 1; an empty list exits 0; nothing on stdout', () =>
  withShadir(async (e) => {
    const missing = await e.run(['url', SOURCE])
    assert.is(missing.code, 1)
    assert.ok(logLines(missing).includes('Object not found in cache.'), missing.stderr)
    assert.is(missing.stdout, '')
    e.shadir.dir.set(`file-urlmd5:${md5(SOURCE)}`, [])
    const empty = await e.run(['url', SOURCE])
    assert.is(empty.code, 0, empty.stderr)
    assert.ok(logLines(empty).includes('Object found in cache, but has no entry.'), empty.stderr)
    assert.is(empty.stdout, '')
  }))

test('url: an unreachable cache is CRITICAL exit 1, a failing one "Problem to connect to shacache." exit 1', () =>
  withShadir(async (e) => {
    e.shadir.status = 503
    const failing = await e.run(['url', SOURCE])
    assert.is(failing.code, 1)
    assert.match(failing.stderr, /INFO Problem to connect to shacache\. \(HTTP Error 503/)
    assert.is(failing.stdout, '')
    await e.shadir.stop()
    const down = await e.run(['url', SOURCE])
    assert.is(down.code, 1)
    assert.match(down.stderr, new RegExp(`CRITICAL Error while looking object ${SOURCE}: .*ECONNREFUSED`))
    assert.is(down.stdout, '')
  }))

test('url: an entry without url, or a directory answer that is not a list, is CRITICAL exit 1', () =>
  withShadir(async (e) => {
    const key = `file-urlmd5:${md5(SOURCE)}`
    const text = pythonJson({ sha512: 'ab' })
    e.publish(key, [text, opensslSign(e.trusted, text)])
    const r = await e.run(['url', SOURCE])
    assert.is(r.code, 1)
    assert.match(r.stderr, `CRITICAL Error while looking object ${SOURCE}: entry 0 has no url`)
    assert.is(r.stdout, '')
    e.shadir.dir.set(key, { not: 'a list' })
    const odd = await e.run(['url', SOURCE])
    assert.is(odd.code, 1)
    assert.match(odd.stderr, 'the directory answer is not a list of [entry, signature]')
  }))

// --- cachelookup pypi ---

test('pypi: entries under pypi:<name>=<version> (version kept as text) with basename, sha512, signed', () =>
  withShadir(async (e) => {
    const key = 'pypi:slapos.core=1.10'
    const wheel = pythonJson({ basename: 'slapos.core-1.10.tar.gz', sha512: '0123abcd' })
    e.publish(key, [wheel, opensslSign(e.trusted, wheel)])
    const r = await e.run(['pypi', 'slapos.core', '1.10'])
    assert.is(r.code, 0, r.stderr)
    assert.equal(e.shadir.requests, [`GET /shadir/${key}`])
    assert.is(
      r.stdout,
      [
        '-----------------------------------------',
        '         basename         sha512  signed ',
        '-----------------------------------------',
        ' slapos.core-1.10.tar.gz 0123abcd  True  ',
        '-----------------------------------------',
        '',
      ].join('\n'),
    )
    const lines = logLines(r)
    assert.ok(lines.includes('Python egg slapos.core version 1.10'), r.stderr)
    assert.ok(lines.includes(`SHADIR URL: ${e.shadir.url}/shadir/${key}`), r.stderr)
  }))

test('pypi: untrusted entry is False; not found exit 1; unreachable CRITICAL names the egg', () =>
  withShadir(async (e) => {
    const text = pythonJson({ basename: 'x-2.tar.gz', sha512: 'ff' })
    e.publish('pypi:x=2', [text, opensslSign(e.other, text)])
    const r = await e.run(['pypi', 'x', '2'])
    assert.is(r.code, 0, r.stderr)
    assert.match(r.stdout, / x-2\.tar\.gz +ff +False +\n/)
    const missing = await e.run(['pypi', 'x', '3'])
    assert.is(missing.code, 1)
    assert.ok(logLines(missing).includes('Object not found in cache.'), missing.stderr)
    await e.shadir.stop()
    const down = await e.run(['pypi', 'x', '2'])
    assert.is(down.code, 1)
    assert.match(down.stderr, /CRITICAL Error while looking egg x version 2: .*ECONNREFUSED/)
  }))

// --- arguments and configuration ---

test('arguments as argparse: missing ones and extra ones exit 2; a missing [networkcache] key exits 1', () =>
  withShadir(async (e) => {
    const none = await e.run(['url'])
    assert.is(none.code, 2)
    assert.match(none.stderr, 'the following arguments are required: url')
    const extra = await e.run(['url', SOURCE, 'more'])
    assert.is(extra.code, 2)
    assert.match(extra.stderr, 'unrecognized arguments: more')
    const noVersion = await e.run(['pypi', 'x'])
    assert.is(noVersion.code, 2)
    assert.match(noVersion.stderr, 'the following arguments are required: version')
    const bare = join(e.dir, 'bare.cfg')
    writeFileSync(bare, `[slapos]\n[networkcache]\ndownload-dir-url = ${e.shadir.url}/shadir\nsignature-certificate-list =\n`)
    const noCache = await e.run(['pypi', 'x', '2'], bare)
    assert.is(noCache.code, 1)
    assert.match(noCache.stderr, '[networkcache] download-cache-url is missing')
    assert.equal(e.shadir.requests, [])
  }))

test.run()
