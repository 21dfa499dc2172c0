// The binary cache: the pure parts (entry selection, signatures made by openssl as the
// original's signer does, OS matching, member names, the JSON text that is signed), then
// `slapos node software` (the built binary, the real proxy) against a shadir/shacache server
// written here. The configured buildout only records that it ran, so a test that never sees
// it proves the release came from the cache.
import { execFileSync } from 'node:child_process'
import { createHash, X509Certificate } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { ConfigFile, loadNodeConfig, splitCertificates } from '../src/config.ts'
import { md5hex } from '../src/grid-common.ts'
import { badMember, debianize, distributionTuple, isCompatible, loadEntry, osMatches, selectEntries, verifySignature, type MachineInfo } from '../src/networkcache.ts'
import { pythonJson } from '../src/shadir.ts'
import { skip, startProxy, tempDir } from './helpers.ts'
import { makeNode, type TestNode } from './node-helpers.ts'

// --- keys, signatures and archives made with the system tools ---

interface Signer {
  key: string
  cert: string
  pem: string
}

function makeSigner(dir: string, name: string): Signer {
  const key = join(dir, `${name}.key`)
  const cert = join(dir, `${name}.crt`)
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-subj', `/CN=${name}`, '-days', '2'], { stdio: 'ignore' })
  return { key, cert, pem: readFileSync(cert, 'utf8') }
}

/** base64 of `openssl dgst -sha1 -sign`: what the original's client sends. */
function opensslSign(signer: Signer, text: string): string {
  return execFileSync('openssl', ['dgst', '-sha1', '-sign', signer.key], { input: Buffer.from(text, 'utf8') }).toString('base64')
}

function opensslVerify(signer: Signer, text: string, signature: string, dir: string): boolean {
  const pub = join(dir, 'verify.pub')
  const sig = join(dir, 'verify.sig')
  writeFileSync(pub, execFileSync('openssl', ['x509', '-pubkey', '-noout', '-in', signer.cert]))
  writeFileSync(sig, Buffer.from(signature, 'base64'))
  try {
    execFileSync('openssl', ['dgst', '-sha1', '-verify', pub, '-signature', sig], { input: Buffer.from(text, 'utf8'), stdio: ['pipe', 'ignore', 'ignore'] })
    return true
  } catch {
    return false
  }
}

const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex')

/** A tar.gz whose top directory is `<hash>` with a marker file (and `extra` members added by python's tarfile, for hostile names). */
function makeArchive(dir: string, hash: string, extra: string[] = []): Buffer {
  const src = join(dir, `src-${hash}-${extra.length}`)
  rmSync(src, { recursive: true, force: true })
  mkdirSync(join(src, hash, 'bin'), { recursive: true })
  writeFileSync(join(src, hash, 'bin', 'tool'), '#!/bin/sh\necho cached\n', { mode: 0o755 })
  writeFileSync(join(src, hash, 'from-cache'), 'yes\n')
  const out = join(dir, `archive-${hash}-${extra.length}.tar.gz`)
  execFileSync('tar', ['-czf', out, '-C', src, hash])
  if (extra.length) {
    // rewrite with python's tarfile, which stores whatever name it is given
    const py = [
      'import io, sys, tarfile',
      'src, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]',
      "t = tarfile.open(out, 'w:gz')",
      `t.add(src + '/${hash}', arcname='${hash}')`,
      'for n in names:',
      '    i = tarfile.TarInfo(n); i.size = 4; t.addfile(i, io.BytesIO(b"evil"))',
      't.close()',
    ].join('\n')
    execFileSync('python3', ['-c', py, src, out, ...extra])
  }
  return readFileSync(out)
}

// --- a shadir/shacache server ---

interface CacheServer {
  url: string
  /** key -> the JSON list the directory answers */
  dir: Map<string, Array<[string, string]>>
  /** sha512 -> bytes */
  blobs: Map<string, Buffer>
  /** `METHOD path` of every request */
  requests: string[]
  /** awaited before a blob is sent (what happens while a node downloads) */
  beforeBlob?: () => Promise<void>
  stop(): Promise<void>
}

async function startCacheServer(): Promise<CacheServer> {
  const dir = new Map<string, Array<[string, string]>>()
  const blobs = new Map<string, Buffer>()
  const requests: string[] = []
  const cache: Omit<CacheServer, 'url' | 'stop'> = { dir, blobs, requests }
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', async () => {
      const body = Buffer.concat(chunks)
      const path = req.url ?? ''
      requests.push(`${req.method} ${path}`)
      let m: RegExpExecArray | null
      if (req.method === 'GET' && (m = /^\/shadir\/([^/]+)$/.exec(path))) {
        const list = dir.get(m[1] ?? '')
        if (!list) return void res.writeHead(404).end('not found')
        return void res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(list))
      }
      if (req.method === 'PUT' && (m = /^\/shadir\/([^/]+)$/.exec(path))) {
        // as the real directory (our proxy's /shacache/dir, the original's): the entry replaces the key's list
        const pair = JSON.parse(body.toString('utf8')) as [string, string]
        dir.set(m[1] ?? '', [pair])
        return void res.writeHead(201).end()
      }
      if (req.method === 'GET' && (m = /^\/shacache\/([0-9a-f]+)$/.exec(path))) {
        await cache.beforeBlob?.()
        const blob = blobs.get(m[1] ?? '')
        if (!blob) return void res.writeHead(404).end('not found')
        return void res.writeHead(200, { 'Content-Type': 'application/octet-stream' }).end(blob)
      }
      if (req.method === 'POST' && path === '/shacache') {
        const h = sha512(body)
        blobs.set(h, body)
        return void res.writeHead(201).end(h)
      }
      res.writeHead(405).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  return Object.assign(cache, { url: `http://127.0.0.1:${port}`, stop: () => new Promise<void>((r) => server.close(() => r())) })
}

const LOCAL: MachineInfo = {
  multiarch: execFileSync('gcc', ['-dumpmachine'], { encoding: 'utf8' }).trim(),
  os: distributionTuple(readFileSync('/etc/os-release', 'utf8'), existsSync('/etc/debian_version') ? readFileSync('/etc/debian_version', 'utf8') : ''),
}

function entryText(sha: string, machine: { multiarch: string; os: readonly string[] } = LOCAL, url = 'u'): string {
  return pythonJson({ sha512: sha, software_url: url, software_root: '/opt/slapgrid', multiarch: machine.multiarch, os: [...machine.os] })
}

// --- pure parts ---

test('OS matching: Debian by major version without codename, raspbian is debian, others exact', () => {
  assert.equal(debianize(['Debian', '12.5', 'bookworm']), ['debian', '12', ''])
  assert.equal(debianize(['raspbian', '11', 'bullseye']), ['debian', '11', ''])
  assert.ok(osMatches(['debian', '12', ''], ['debian', '12.7', 'bookworm']))
  assert.ok(osMatches(['raspbian', '11.2', ''], ['debian', '11', 'bullseye']))
  assert.not.ok(osMatches(['debian', '11', ''], ['debian', '12', '']))
  assert.ok(osMatches(['ubuntu', '22.04', 'jammy'], ['Ubuntu', '22.04', 'jammy']))
  assert.not.ok(osMatches(['ubuntu', '22.04', 'jammy'], ['ubuntu', '22.04', '']))
  assert.not.ok(osMatches(['ubuntu', '22.04', 'jammy'], ['ubuntu', '22.10', 'jammy']))
})

test('distribution tuple from os-release as the distro library reads it', () => {
  assert.equal(distributionTuple('ID=debian\nVERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\n'), ['debian', '12', 'bookworm'])
  assert.equal(distributionTuple('NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"\nVERSION="22.04.4 LTS (Jammy Jellyfish)"\nUBUNTU_CODENAME=jammy\n'), ['ubuntu', '22.04', 'jammy'])
  // Debian testing has no VERSION_ID: /etc/debian_version
  assert.equal(distributionTuple('ID=debian\nVERSION_CODENAME=trixie\n', 'trixie/sid\n'), ['debian', 'trixie/sid', 'trixie'])
  assert.equal(distributionTuple('ID="opensuse-leap"\nVERSION_ID="15.5"\nVERSION="15.5"\n'), ['opensuse', '15.5', ''])
  assert.equal(distributionTuple('ID=centos\nVERSION_ID="7"\nVERSION="7 (Core)"\n'), ['centos', '7', 'Core'])
})

test('entries: old machine/os-string entries read as x86_64-linux-gnu; unusable ones throw', () => {
  const old = loadEntry(JSON.stringify({ sha512: 'ab', machine: 'x86_64', os: "('debian', '6.0.6', '')" }))
  assert.is(old.multiarch, 'x86_64-linux-gnu')
  assert.equal(old.os, ['debian', '6.0.6', ''])
  assert.throws(() => loadEntry(JSON.stringify({ sha512: 'ab', machine: 'i686', os: "('debian', '6', '')" })), /multiarch/)
  assert.throws(() => loadEntry(JSON.stringify({ multiarch: 'x', os: [] })), /sha512/)
  assert.throws(() => loadEntry('not json'))
  assert.ok(isCompatible({ multiarch: 'x86_64-linux-gnu', os: ['debian', '6.0.10', ''] }, old))
  assert.not.ok(isCompatible({ multiarch: 'aarch64-linux-gnu', os: ['debian', '6', ''] }, old))
  assert.not.ok(isCompatible(LOCAL, { sha512: 'a', multiarch: LOCAL.multiarch, os: 'debian' }))
})

test('selection: only entries signed (openssl sha1) by a listed certificate, readable and compatible, in order', () => {
  const dir = tempDir('slapos-nc-')
  try {
    const trusted = makeSigner(dir, 'trusted')
    const other = makeSigner(dir, 'other')
    const certs = [new X509Certificate(trusted.pem)]
    const good1 = entryText('1'.repeat(128))
    const good2 = entryText('2'.repeat(128))
    const otherOs = entryText('3'.repeat(128), { multiarch: LOCAL.multiarch, os: ['plan9', '4', ''] })
    const otherArch = entryText('4'.repeat(128), { multiarch: 'sparc-sun-solaris', os: LOCAL.os })
    assert.ok(verifySignature(good1, opensslSign(trusted, good1), certs))
    assert.not.ok(verifySignature(good1, opensslSign(other, good1), certs))
    assert.not.ok(verifySignature(good1, opensslSign(trusted, good1 + ' '), certs))
    assert.not.ok(verifySignature(good1, '', certs))
    // old clients wrapped the base64 text every 76 characters
    assert.ok(verifySignature(good1, opensslSign(trusted, good1).replace(/(.{76})/g, '$1\n'), certs))
    const answer = [
      [good1, opensslSign(other, good1)],
      [otherOs, opensslSign(trusted, otherOs)],
      [otherArch, opensslSign(trusted, otherArch)],
      ['{bad json', opensslSign(trusted, '{bad json')],
      'not a pair',
      [good2, opensslSign(trusted, good2)],
      [good1, opensslSign(trusted, good1)],
    ]
    const { entries, rejected } = selectEntries(answer, certs, LOCAL)
    assert.equal(entries.map((e) => e.sha512), ['2'.repeat(128), '1'.repeat(128)])
    assert.is(rejected.length, 5)
    assert.match(rejected[0] ?? '', /not signed by a trusted certificate/)
    assert.match(rejected[1] ?? '', /plan9/)
    // no certificate list: nothing is trusted
    assert.equal(selectEntries(answer, [], LOCAL).entries, [])
    assert.throws(() => selectEntries({ not: 'a list' }, certs, LOCAL), /not a JSON list/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('members: only <hash> and below, no absolute name, no ..', () => {
  const h = md5hex('x')
  assert.is(badMember(h, h), undefined)
  assert.is(badMember(`${h}/`, h), undefined)
  assert.is(badMember(`${h}/bin/python`, h), undefined)
  assert.match(badMember(`/etc/passwd`, h) ?? '', /absolute/)
  assert.match(badMember(`${h}/../evil`, h) ?? '', /\.\./)
  assert.match(badMember(`../${h}`, h) ?? '', /\.\./)
  assert.match(badMember(`other/file`, h) ?? '', /outside/)
})

test('the signed text is what Python json.dumps writes', () => {
  const value = { sha512: 'ab', software_url: 'http://x/é"\\\n\u0001/€😀', software_root: '/opt', multiarch: 'x86_64-linux-gnu', os: ['debian', '12', ''] }
  const py = execFileSync('python3', ['-c', 'import json,sys; sys.stdout.write(json.dumps(json.loads(sys.stdin.read())))'], { input: JSON.stringify(value), encoding: 'utf8' })
  assert.is(pythonJson(value), py)
  assert.is(pythonJson(['a', 'b']), '["a", "b"]')
})

test('configuration: [networkcache] over [slapos], lists, the deprecated blacklist alias, certificates', () => {
  const file = ConfigFile.fromText(
    [
      '[slapos]',
      'computer_id = c',
      'master_url = http://m',
      'software_root = /s',
      'instance_root = /i',
      'download-binary-cache-url = http://old/',
      'binary-cache-url-blacklist = http://a/',
      '  /',
      '[networkcache]',
      'download-binary-cache-url = http://cache/',
      'download-binary-dir-url = http://dir/',
      'download-from-binary-cache-force-url-list = https://forced/',
      'signature-certificate-list =',
      '  -----BEGIN CERTIFICATE-----',
      '  AAAA',
      '  -----END CERTIFICATE-----',
      '  -----BEGIN CERTIFICATE-----',
      '  BBBB',
      '  -----END CERTIFICATE-----',
      '',
    ].join('\n'),
  )
  const nc = loadNodeConfig(file).networkcache
  assert.is(nc.downloadBinaryCacheUrl, 'http://cache/')
  assert.is(nc.downloadBinaryDirUrl, 'http://dir/')
  assert.is(nc.uploadBinaryCacheUrl, undefined)
  assert.equal(nc.downloadBlacklist, ['http://a/', '/'])
  assert.equal(nc.forceUrlList, ['https://forced/'])
  assert.equal(nc.signatureCertificateList, ['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', '-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----'])
  assert.equal(splitCertificates(''), [])
  const plain = loadNodeConfig(ConfigFile.fromText('[slapos]\ncomputer_id = c\nmaster_url = http://m\nsoftware_root = /s\ninstance_root = /i\n')).networkcache
  assert.is(plain.signatureCertificateList, undefined)
  assert.equal([plain.downloadBlacklist, plain.uploadBlacklist, plain.forceUrlList], [[], [], []])
})

// --- node software against the cache server ---

interface CacheNode {
  node: TestNode
  server: CacheServer
  trusted: Signer
  other: Signer
  hash: string
  path: string
  /** lines the recording buildout wrote (its arguments), one per run */
  buildoutRuns(): string[]
  reset(): void
  /** publishes `archive` under the SR's key with `text(sha)` signed by `signer` */
  publish(archive: Buffer, signer: Signer, text?: (sha: string) => string): string
  run(): Promise<{ code: number | null; stderr: string }>
}

async function withCacheNode(networkcache: (s: CacheServer, trusted: Signer) => string[], fn: (c: CacheNode) => Promise<void>, buildoutExit = 1): Promise<void> {
  const keys = tempDir('slapos-nc-keys-')
  const server = await startCacheServer()
  const trusted = makeSigner(keys, 'trusted')
  const other = makeSigner(keys, 'other')
  const node = await makeNode({ partitions: 1, extraCfg: ['[networkcache]', ...networkcache(server, trusted)].join('\n') })
  try {
    // the configured buildout only records its arguments; it fails unless buildoutExit is 0,
    // and on success leaves a file in the software directory
    const record = join(node.dir, 'buildout-runs')
    writeFileSync(node.buildout, `#!/bin/sh\necho "$*" >> '${record}'\necho built > built-here\nexit ${buildoutExit}\n`, { mode: 0o755 })
    chmodSync(node.dir, 0o777)
    const hash = md5hex(node.srUrl)
    const path = join(node.softwareRoot, hash)
    await node.supply()
    await fn({
      node,
      server,
      trusted,
      other,
      hash,
      path,
      buildoutRuns: () => (existsSync(record) ? readFileSync(record, 'utf8').split('\n').filter(Boolean) : []),
      reset() {
        rmSync(record, { force: true })
        rmSync(path, { recursive: true, force: true })
        server.requests.length = 0
        server.dir.clear()
        server.blobs.clear()
        node.clearCalls()
      },
      publish(archive, signer, text = (sha) => entryText(sha, LOCAL, node.srUrl)) {
        const sha = sha512(archive)
        server.blobs.set(sha, archive)
        const t = text(sha)
        server.dir.set(hash, [...(server.dir.get(hash) ?? []), [t, opensslSign(signer, t)]])
        return sha
      },
      run: () => node.run(['node', 'software', '--now']),
    })
  } finally {
    await node.stop()
    await server.stop()
    rmSync(keys, { recursive: true, force: true })
  }
}

const downloadKeys = (s: CacheServer, trusted: Signer) => [
  `download-binary-cache-url = ${s.url}/shacache`,
  `download-binary-dir-url = ${s.url}/shadir/`,
  'signature-certificate-list =',
  ...trusted.pem.trim().split('\n').map((l) => `  ${l}`),
]

const names = (node: TestNode) => node.calls().map((c) => c.name)
const leftovers = (root: string) => readdirSync(root).filter((n) => n.startsWith('.'))

test('signed compatible archive: extracted, reported available, .completed written, buildout never runs', () =>
  withCacheNode(downloadKeys, async (c) => {
    const sha = c.publish(makeArchive(c.node.dir, c.hash), c.trusted)
    const r = await c.run()
    assert.is(r.code, 0, r.stderr)
    assert.equal(c.buildoutRuns(), [])
    assert.equal(c.server.requests, [`GET /shadir/${c.hash}`, `GET /shacache/${sha}`])
    assert.is(readFileSync(join(c.path, 'from-cache'), 'utf8'), 'yes\n')
    assert.is(execFileSync(join(c.path, 'bin', 'tool'), { encoding: 'utf8' }), 'cached\n')
    assert.ok(existsSync(join(c.path, '.completed')))
    assert.equal(names(c.node), ['getFullComputerInformation', 'buildingSoftwareRelease', 'availableSoftwareRelease'])
    assert.match(r.stderr, 'Extracting archive of cached software release')
    assert.equal(leftovers(c.node.softwareRoot), [])
  }))

test("the software user renames the download directory and leaves a link to a root directory under its name: root writes, extracts and removes nothing there", () =>
  withCacheNode(downloadKeys, async (c) => {
    if (process.getuid?.() !== 0) return skip('needs root')
    c.publish(makeArchive(c.node.dir, c.hash), c.trusted)
    const outside = join(c.node.dir, 'root-dir')
    mkdirSync(outside, { mode: 0o700 })
    mkdirSync(join(outside, 'tree'))
    writeFileSync(join(outside, 'tree', 'precious'), 'kept\n')
    c.server.beforeBlob = async () => {
      const [work] = leftovers(c.node.softwareRoot).filter((n) => n.includes('.download-'))
      assert.ok(work, 'a download directory while the archive is fetched')
      renameSync(join(c.node.softwareRoot, work!), join(c.node.softwareRoot, '.moved'))
      symlinkSync(outside, join(c.node.softwareRoot, work!))
    }
    const r = await c.run()
    c.server.beforeBlob = undefined
    assert.equal(readdirSync(outside), ['tree'])
    assert.equal(readdirSync(join(outside, 'tree')), ['precious'])
    assert.is(r.code, 0, r.stderr)
    assert.is(readFileSync(join(c.path, 'from-cache'), 'utf8'), 'yes\n')
    assert.equal(c.buildoutRuns(), [])
  }))

test('untrusted, corrupt or foreign archives are ignored: buildout builds instead', () =>
  withCacheNode(downloadKeys, async (c) => {
    const archive = makeArchive(c.node.dir, c.hash)
    const cases: Array<[string, () => void]> = [
      ['not signed by a trusted certificate', () => c.publish(archive, c.other)],
      ['sha512 of the bytes is not the entry', () => {
        const sha = c.publish(archive, c.trusted)
        c.server.blobs.set(sha, Buffer.concat([archive, Buffer.from('x')]))
      }],
      ['other OS', () => c.publish(archive, c.trusted, (sha) => entryText(sha, { multiarch: LOCAL.multiarch, os: ['plan9', '4', ''] }))],
      ['other multiarch', () => c.publish(archive, c.trusted, (sha) => entryText(sha, { multiarch: 'sparc-sun-solaris2', os: LOCAL.os }))],
      ['no entry (404)', () => undefined],
    ]
    for (const [what, setup] of cases) {
      c.reset()
      setup()
      const r = await c.run()
      assert.is(r.code, 1, what)
      assert.is(c.buildoutRuns().length, 1, what)
      assert.ok(c.server.requests.includes(`GET /shadir/${c.hash}`), what)
      assert.not.ok(existsSync(join(c.path, 'from-cache')), what)
      assert.not.ok(existsSync(join(c.path, '.completed')), what)
      // the failing buildout is what the master hears about
      assert.equal(names(c.node), ['getFullComputerInformation', 'buildingSoftwareRelease', 'softwareReleaseError'], what)
      assert.equal(leftovers(c.node.softwareRoot), [], what)
      assert.match(r.stderr, /INFO .*Failed to download from network cache/, what)
    }
  }))

test('a blacklisted URL prefix is not even looked up', () =>
  withCacheNode(
    (s, t) => [...downloadKeys(s, t), 'download-from-binary-cache-url-blacklist =', '  http://elsewhere/', '  /'],
    async (c) => {
      c.publish(makeArchive(c.node.dir, c.hash), c.trusted)
      const r = await c.run()
      assert.is(r.code, 1)
      assert.equal(c.server.requests, [])
      assert.is(c.buildoutRuns().length, 1)
      assert.match(r.stderr, 'URL / is blacklisted')
    },
  ))

test('forced URL without an archive: SR error, never built; with one: installed', () =>
  withCacheNode(
    (s, t) => [...downloadKeys(s, t), 'download-from-binary-cache-force-url-list = /'],
    async (c) => {
      const r = await c.run()
      assert.is(r.code, 1)
      assert.equal(c.buildoutRuns(), [])
      assert.not.ok(existsSync(c.path))
      assert.equal(names(c.node), ['getFullComputerInformation', 'buildingSoftwareRelease', 'softwareReleaseError'])
      const error = c.node.calls().find((x) => x.name === 'softwareReleaseError')
      assert.is(error?.fields.error_log, `Binary cache forced for '${c.node.srUrl}', but failed to download, will retry again`)
      c.reset()
      c.publish(makeArchive(c.node.dir, c.hash), c.trusted)
      const ok = await c.run()
      assert.is(ok.code, 0, ok.stderr)
      assert.equal(c.buildoutRuns(), [])
      assert.ok(existsSync(join(c.path, '.completed')))
    },
  ))

test('archives with ../ or absolute members, or members beside <hash>, are refused and nothing is written outside', () =>
  withCacheNode(downloadKeys, async (c) => {
    const absolute = join(c.node.dir, 'absolute-escape')
    for (const evil of [`${c.hash}/../../escaped`, absolute, 'beside']) {
      c.reset()
      c.publish(makeArchive(c.node.dir, c.hash, [evil]), c.trusted)
      const r = await c.run()
      assert.match(r.stderr, /WARNING .*refused archive/, evil)
      assert.is(c.buildoutRuns().length, 1, evil)
      assert.not.ok(existsSync(join(c.path, 'from-cache')), evil)
      assert.not.ok(existsSync(join(c.node.dir, 'escaped')), evil)
      assert.not.ok(existsSync(absolute), evil)
      assert.not.ok(existsSync(join(c.node.softwareRoot, 'beside')), evil)
      assert.equal(leftovers(c.node.softwareRoot), [], evil)
    }
  }))

const uploadKeys = (s: CacheServer, t: Signer) => [
  ...downloadKeys(s, t),
  `upload-binary-cache-url = ${s.url}/shacache`,
  `upload-binary-dir-url = ${s.url}/shadir`,
  `signature-private-key-file = ${t.key}`,
]

test('upload after a build: archive <hash>/ in shacache, entry signed for the certificate list; another node downloads it', () =>
  withCacheNode(
    uploadKeys,
    async (c) => {
      const r = await c.run()
      assert.is(r.code, 0, r.stderr)
      assert.is(c.buildoutRuns().length, 1)
      const put = c.server.requests.filter((x) => x.startsWith('PUT'))
      assert.equal(put, [`PUT /shadir/${c.hash}`])
      const [text, signature] = c.server.dir.get(c.hash)?.[0] ?? ['', '']
      assert.ok(opensslVerify(c.trusted, text, signature, c.node.dir))
      const entry = JSON.parse(text) as Record<string, unknown>
      assert.equal(Object.keys(entry), ['sha512', 'software_url', 'software_root', 'multiarch', 'os'])
      assert.equal([entry.software_url, entry.software_root, entry.multiarch, entry.os], [c.node.srUrl, c.node.softwareRoot, LOCAL.multiarch, LOCAL.os])
      const blob = c.server.blobs.get(String(entry.sha512))
      assert.ok(blob)
      const archive = join(c.node.dir, 'uploaded.tar.gz')
      writeFileSync(archive, blob)
      const members = execFileSync('tar', ['-tzf', archive], { encoding: 'utf8' }).split('\n').filter(Boolean)
      assert.ok(members.every((m) => m === `${c.hash}/` || m.startsWith(`${c.hash}/`)))
      assert.ok(members.includes(`${c.hash}/built-here`))
      // the archive is made before .completed exists
      assert.not.ok(members.includes(`${c.hash}/.completed`))
      assert.equal(leftovers(c.node.softwareRoot), [])

      // what was uploaded installs without buildout once the directory is gone
      const dir = new Map(c.server.dir)
      const blobs = new Map(c.server.blobs)
      c.reset()
      for (const [k, v] of dir) c.server.dir.set(k, v)
      for (const [k, v] of blobs) c.server.blobs.set(k, v)
      const again = await c.run()
      assert.is(again.code, 0, again.stderr)
      assert.equal(c.buildoutRuns(), [])
      assert.is(readFileSync(join(c.path, 'built-here'), 'utf8'), 'built\n')
      // nothing uploaded when nothing was built
      assert.equal(c.server.requests.filter((x) => !x.startsWith('GET')), [])
    },
    0,
  ))

test('the shadir/shacache stand-in of these tests answers as the real one (our proxy, which answers as the original)', async () => {
  const keys = tempDir('slapos-nc-contract-')
  const fake = await startCacheServer()
  const real = await startProxy({ extraCfg: `shacache_content_directory = ${join(keys, 'c')}\nshacache_metadata_directory = ${join(keys, 'd')}\n` })
  try {
    const routes = { fake: { cache: `${fake.url}/shacache`, dir: `${fake.url}/shadir` }, real: { cache: `${real.url}shacache/cache`, dir: `${real.url}shacache/dir` } }
    const exchange = async (kind: 'fake' | 'real') => {
      const r = routes[kind]
      const out: string[] = []
      const see = async (what: string, res: Response) => out.push(`${what}: ${res.status} ${what.startsWith('GET archive') ? sha512(Buffer.from(await res.arrayBuffer())) : await res.text()}`)
      const archive = Buffer.from('an archive')
      await see('POST archive', await fetch(r.cache, { method: 'POST', body: archive }))
      await see('GET archive', await fetch(`${r.cache}/${sha512(archive)}`))
      await see('GET missing key', await fetch(`${r.dir}/${'0'.repeat(32)}`).then((x) => new Response('', { status: x.status })))
      const entry = (n: string) => JSON.stringify([`{"sha512": "${n.repeat(128)}"}`, 'c2lnbmF0dXJl'])
      const put = { method: 'PUT', headers: { 'Content-Type': 'application/json' } }
      await see('PUT entry', await fetch(`${r.dir}/${'a'.repeat(32)}`, { ...put, body: entry('1') }))
      await see('PUT second entry', await fetch(`${r.dir}/${'a'.repeat(32)}`, { ...put, body: entry('2') }))
      await see('GET key', await fetch(`${r.dir}/${'a'.repeat(32)}`).then(async (x) => new Response(JSON.stringify(await x.json()), { status: x.status })))
      return out
    }
    const fakeAnswers = await exchange('fake')
    assert.equal(fakeAnswers, await exchange('real'))
    assert.equal(fakeAnswers.map((l) => l.split(':')[1]?.trim().split(' ')[0]), ['201', '200', '404', '201', '201', '200'])
  } finally {
    await fake.stop()
    await real.stop()
    rmSync(keys, { recursive: true, force: true })
  }
})

test("against our own proxy's /shacache: a node uploads what it built, another node installs it without buildout", async () => {
  const keys = tempDir('slapos-nc-keys-')
  const trusted = makeSigner(keys, 'trusted')
  const content = join(keys, 'content')
  const metadata = join(keys, 'metadata')
  const cache = await startProxy({ extraCfg: `shacache_content_directory = ${content}\nshacache_metadata_directory = ${metadata}\n` })
  const base = `${cache.url}shacache`
  const download = [
    `download-binary-cache-url = ${base}/cache`,
    `download-binary-dir-url = ${base}/dir`,
    'signature-certificate-list =',
    ...trusted.pem.trim().split('\n').map((l) => `  ${l}`),
  ]
  const upload = [`upload-binary-cache-url = ${base}/cache`, `upload-binary-dir-url = ${base}/dir`, `signature-private-key-file = ${trusted.key}`]
  const builder = await makeNode({ partitions: 1, extraCfg: ['[networkcache]', ...download, ...upload].join('\n') })
  const user = await makeNode({ partitions: 1, extraCfg: ['[networkcache]', ...download].join('\n') })
  try {
    // the builder: real buildout of the sample release, then the upload through the proxy's routes
    await builder.supply()
    const built = await builder.run(['node', 'software', '--now'], { timeoutMs: 300_000 })
    assert.is(built.code, 0, built.stderr)
    const hash = md5hex(builder.srUrl)
    assert.equal(readdirSync(metadata), [hash])
    assert.is(readdirSync(content).length, 1)
    // the user: its buildout would leave a trace and fail; the release comes from the cache
    const trace = join(user.dir, 'buildout-ran')
    writeFileSync(user.buildout, `#!/bin/sh\ntouch '${trace}'\nexit 1\n`, { mode: 0o755 })
    await user.supply(builder.srUrl)
    const got = await user.run(['node', 'software', '--now'], { timeoutMs: 300_000 })
    assert.is(got.code, 0, got.stderr)
    assert.not.ok(existsSync(trace), 'buildout ran')
    assert.ok(existsSync(join(user.softwareRoot, hash, '.completed')))
    assert.ok(existsSync(join(user.softwareRoot, hash, 'instance.cfg')), 'the built release is there')
    assert.ok(names(user).includes('availableSoftwareRelease'))
  } finally {
    await builder.stop()
    await user.stop()
    await cache.stop()
    rmSync(keys, { recursive: true, force: true })
  }
})

test('no upload for a .shared release, a blacklisted URL, or a key without its certificate in the list', () =>
  withCacheNode(
    (s, t) => [...uploadKeys(s, t), 'upload-to-binary-cache-url-blacklist = http://never/'],
    async (c) => {
      // .shared: the buildout leaves it, the release is not uploaded
      writeFileSync(c.node.buildout, `#!/bin/sh\necho "$*" >> '${join(c.node.dir, 'buildout-runs')}'\ntouch .shared\nexit 0\n`, { mode: 0o755 })
      const r = await c.run()
      assert.is(r.code, 0, r.stderr)
      assert.is(c.buildoutRuns().length, 1)
      assert.equal(c.server.requests.filter((x) => !x.startsWith('GET')), [])
    },
    0,
  ).then(() =>
    withCacheNode(
      (s, t) => [...uploadKeys(s, t), 'upload-to-binary-cache-url-blacklist = /'],
      async (c) => {
        const r = await c.run()
        assert.is(r.code, 0, r.stderr)
        assert.match(r.stderr, "Can't upload to binary cache: Software Release URL is blacklisted.")
        assert.equal(c.server.requests.filter((x) => !x.startsWith('GET')), [])
      },
      0,
    ),
  ).then(() =>
    withCacheNode(
      (s, t) => [...downloadKeys(s, t), `upload-binary-cache-url = ${s.url}/shacache`, `upload-binary-dir-url = ${s.url}/shadir`, `signature-private-key-file = ${t.key.replace('trusted', 'other')}`],
      async (c) => {
        const r = await c.run()
        // the build itself succeeded; only the upload is refused
        assert.is(r.code, 0, r.stderr)
        assert.match(r.stderr, 'no matching certificate for private key')
        assert.equal(c.server.requests.filter((x) => !x.startsWith('GET')), [])
      },
      0,
    ),
  ))

test('slapos cachelookup binary-sr: every entry with compatible? and verified?, by URL or md5; 404 exits 1', () =>
  withCacheNode(downloadKeys, async (c) => {
    const archive = makeArchive(c.node.dir, c.hash)
    c.publish(archive, c.other, (sha) => entryText(sha, { multiarch: LOCAL.multiarch, os: ['plan9', '4', ''] }, c.node.srUrl))
    c.publish(archive, c.trusted)
    for (const what of [c.node.srUrl, c.hash]) {
      const r = await c.node.run(['cachelookup', 'binary-sr', what, '--log-time'])
      assert.is(r.code, 0, r.stderr)
      const lines = r.stderr.split('\n').map((l) => l.replace(/^slapos\[\d+\] INFO /, ''))
      assert.ok(lines.includes(`Software URL: ${c.node.srUrl}`), r.stderr)
      assert.ok(lines.includes(`MD5:          ${c.hash}`))
      const rows = lines.filter((l) => / (yes|no) +(yes|no) *$/.test(l)).map((l) => l.trim().split(/ +/))
      assert.equal(rows, [
        [LOCAL.multiarch, 'plan9', '4', 'no', 'no'],
        [LOCAL.multiarch, ...LOCAL.os.filter(Boolean), 'yes', 'yes'],
      ].sort((a, b) => (a.join(' ') < b.join(' ') ? -1 : 1)))
      assert.ok(lines.some((l) => /^ +multiarch +distribution +version +id +compatible\? +verified\? $/.test(l)), r.stderr)
    }
    // the 0.35.1 spelling: slapos cache-lookup CFG URL_OR_MD5
    const old = await c.node.run(['cache-lookup', c.node.cfgPath, c.hash], { noCfg: true })
    assert.is(old.code, 0, old.stderr)
    assert.match(old.stderr, `MD5:          ${c.hash}`)
    c.reset()
    const missing = await c.node.run(['cachelookup', 'binary-sr', c.node.srUrl])
    assert.is(missing.code, 1)
    assert.match(missing.stderr, `Software release not found in binary cache: ${c.node.srUrl}`)
  }))

test.run()
