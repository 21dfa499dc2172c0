// Multimaster forwarding of the local master (proxy.md §8, checklist 94-103): a second
// instance of our own proxy is the remote master; an HTTPS terminator made here (client
// certificate required, certificates made with openssl) stands in front of it for the
// key/cert case. Test names start with the checklist numbers they cover.
import { spawnSync } from 'node:child_process'
import { createServer as createHttpServer, request as httpRequest } from 'node:http'
import { createServer as createHttpsServer, type Server } from 'node:https'
import type { TLSSocket } from 'node:tls'
import { readFileSync, rmSync } from 'node:fs'
import { DatabaseSync } from 'node:sqlite'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { SlapClient } from '../src/slap-client.ts'
import { dumps, loads, SlapObject, type PyDict, type PyValue } from '../src/slap-protocol.ts'
import { startProxy, tempDir, type StartedProxy, requestForm } from './helpers.ts'

const SR = 'http://sr.example/local/software.cfg'
const AUTO_SR = 'http://sr.example/auto/software.cfg'
const AS_PARTITION_SR = 'http://sr.example/as-partition/software.cfg'

interface Ctx {
  remote: StartedProxy
  local: StartedProxy
  /** the same remote proxy, reached by another name: its section forwards as remote slappart0 */
  remoteAlias: string
}
const t = suite<Ctx>('proxy multimaster')
t.before.each(async (c) => {
  c.remote = await startProxy({ computerId: 'remote-computer' })
  c.remoteAlias = c.remote.url.replace('127.0.0.1', 'localhost')
  await format(c.remote.url, 'remote-computer', 4)
  c.local = await startProxy({
    extraCfg: [
      `[multimaster/${c.remote.url}]`,
      `software_release_list =\n  ${AUTO_SR}\n  /some/local/path/software.cfg`,
      `[multimaster/${c.remoteAlias}]`,
      'computer = remote-computer',
      'partition = slappart0',
      `software_release_list = ${AS_PARTITION_SR}`,
      '[multimaster/https://127.0.0.1:1/]',
      `software_release_list = http://sr.example/https-without-key/software.cfg`,
    ].join('\n'),
  })
  await format(c.local.url, 'computer', 2)
})
t.after.each(async (c) => {
  await c.local?.stop()
  await c.remote?.stop()
  for (const p of [c.local, c.remote]) if (p) rmSync(p.dir, { recursive: true, force: true })
})

t('94 95 96 an explicit master_url is forwarded: nothing allocated here, one bookkeeping row, the remote has the instance', async ({ local, remote }) => {
  const params = { color: 'blue', size: '3' }
  const first = await request(local.url, { title: 'inst', params, filter: { master_url: remote.url } })
  assert.is(first.status, 200, first.text)
  const answer = loads(first.text) as SlapObject
  assert.is(answer.className, 'ComputerPartition')
  assert.is(answer.state._master_url, remote.url)
  assert.is(answer.state._connection_helper, null)
  assert.is(answer.state.slap_computer_id, 'remote-computer')
  assert.is(answer.state._partition_id, 'slappart0')
  // nothing local
  assert.equal(busy(local), [])
  assert.equal(forwarded(local), [['user_inst', remote.url]])
  // on the remote master: `user_inst`, with the parameters, tagged with its source
  const [row] = busy(remote)
  assert.is(row?.partition_reference, 'user_inst')
  assert.is(row?.software_release, SR)
  assert.match(String(row?.xml), '<parameter id="color">blue</parameter>')
  // repeating keeps one row, and the same remote partition
  const again = await request(local.url, { title: 'inst', params, filter: { master_url: remote.url } })
  assert.is(again.status, 200, again.text)
  assert.is((loads(again.text) as SlapObject).state._partition_id, 'slappart0')
  assert.equal(forwarded(local), [['user_inst', remote.url]])
  assert.is(busy(remote).length, 1)
})

t('97 a master_url that is not a configured multimaster is refused with 404', async ({ local }) => {
  const r = await request(local.url, { title: 'inst', filter: { master_url: 'http://127.0.0.1:9/' } })
  assert.is(r.status, 404)
  assert.match(r.text, 'External SlapOS Master URL http://127.0.0.1:9/ is not listed in multimaster list.')
  assert.equal(busy(local), [])
  assert.equal(forwarded(local), [])
})

t('98 an SR of a software_release_list is forwarded without master_url; the answer reads like the original', async ({ local, remote }) => {
  const params = { a: '1', b: 'two' }
  const r = await request(local.url, { title: 'auto', sr: AUTO_SR, params })
  assert.is(r.status, 200, r.text)
  const answer = loads(r.text) as SlapObject
  // getSoftwareRelease() of a forwarded partition is the URL string
  assert.is(answer.state._software_release_document, AUTO_SR)
  const got = { ...(answer.state._parameter_dict as PyDict) }
  assert.type(got.timestamp, 'string')
  delete got.timestamp
  assert.equal(got, params)
  assert.equal(forwarded(local), [['user_auto', remote.url]])
  assert.is(busy(remote)[0]?.software_release, AUTO_SR)
  // our own client reads the forwarded answer
  const si = await new SlapClient({ masterUrl: local.url }).requestComputerPartition({ softwareRelease: AUTO_SR, partitionReference: 'auto', partitionParameterKw: params })
  assert.is(si.className, 'ComputerPartition')
  assert.is(si.slap_computer_partition_id, 'slappart0')
  assert.equal(busy(local), [])
})

t('99 a section with computer/partition requests as that remote partition: the instance joins its tree', async ({ local, remote, remoteAlias }) => {
  // the remote partition slappart0 runs the root instance `remote-root`
  const root = await request(remote.url, { title: 'remote-root' })
  assert.is(root.status, 200, root.text)
  const r = await request(local.url, { title: 'child', sr: AS_PARTITION_SR })
  assert.is(r.status, 200, r.text)
  assert.is((loads(r.text) as SlapObject).state._master_url, remoteAlias)
  const child = busy(remote).find((p) => p.partition_reference === 'user_child')
  assert.ok(child, 'the remote master has user_child')
  assert.is(child?.requested_by, 'remote-root')
  assert.equal(forwarded(local), [['user_child', remoteAlias]])
})

t('100 the same title from two partitions and a person gives three remote instances', async ({ local, remote }) => {
  for (const from of [['computer', 'slappart0'], ['computer', 'slappart1'], undefined] as const) {
    const r = await request(local.url, { title: 'same', filter: { master_url: remote.url }, from: from ? [from[0], from[1]] : undefined })
    assert.is(r.status, 200, r.text)
  }
  assert.equal(
    busy(remote)
      .map((p) => p.partition_reference)
      .sort(),
    ['slappart0_same', 'slappart1_same', 'user_same'],
  )
  assert.equal(forwarded(local).map((x) => x[0]).sort(), ['slappart0_same', 'slappart1_same', 'user_same'])
  assert.equal(busy(local), [])
})

t('101 forwarding state=destroyed destroys remotely and deletes the bookkeeping row', async ({ local, remote }) => {
  assert.is((await request(local.url, { title: 'gone', filter: { master_url: remote.url } })).status, 200)
  assert.is(forwarded(local).length, 1)
  const r = await request(local.url, { title: 'gone', filter: { master_url: remote.url }, state: 'destroyed' })
  assert.is(r.status, 200, r.text)
  assert.is(busy(remote)[0]?.requested_state, 'destroyed')
  assert.equal(forwarded(local), [])
})

t('102 a master_url naming this proxy allocates here', async ({ local }) => {
  const r = await request(local.url, { title: 'mine', filter: { master_url: local.url } })
  assert.is(r.status, 200, r.text)
  assert.is((loads(r.text) as SlapObject).className, 'SoftwareInstance')
  assert.equal(
    busy(local).map((p) => p.partition_reference),
    ['mine'],
  )
  assert.equal(forwarded(local), [])
})

t('a master_url naming this proxy by another loopback name allocates here; one not configured is 404 without a connection', async ({ local }) => {
  const port = new URL(local.url).port
  const r = await request(local.url, { title: 'alias', filter: { master_url: `http://localhost:${port}/` } })
  assert.is(r.status, 200, r.text)
  assert.equal(forwarded(local), [])
  const seen: string[] = []
  const other = createHttpServer((req, res) => {
    seen.push(req.url ?? '')
    res.end('')
  })
  await new Promise<void>((ok) => other.listen(0, '127.0.0.1', ok))
  try {
    const url = `http://127.0.0.1:${(other.address() as { port: number }).port}/p`
    const refused = await request(local.url, { title: 'elsewhere', filter: { master_url: url } })
    assert.is(refused.status, 404)
    assert.match(refused.text, 'is not listed in multimaster list')
    assert.equal(seen, [])
  } finally {
    await new Promise<void>((ok) => other.close(() => ok()))
  }
})

t('103 after an explicit forward, the same request without master_url is allocated here; the row stays', async ({ local, remote }) => {
  assert.is((await request(local.url, { title: 'twice', filter: { master_url: remote.url } })).status, 200)
  const r = await request(local.url, { title: 'twice' })
  assert.is(r.status, 200, r.text)
  assert.is((loads(r.text) as SlapObject).className, 'SoftwareInstance')
  assert.equal(
    busy(local).map((p) => p.partition_reference),
    ['twice'],
  )
  assert.equal(forwarded(local), [['user_twice', remote.url]])
  // an instance allocated here is never forwarded later, even with master_url
  const later = await request(local.url, { title: 'twice', filter: { master_url: remote.url } })
  assert.is((loads(later.text) as SlapObject).className, 'SoftwareInstance')
  assert.is(busy(remote).length, 1)
})

t('a shared request is forwarded too; the remote attaches it to its host', async ({ local, remote }) => {
  assert.is((await request(remote.url, { title: 'host' })).status, 200)
  const r = await request(local.url, { title: 'front', shared: true, params: { k: 'v' }, filter: { master_url: remote.url } })
  assert.is(r.status, 200, r.text)
  const answer = loads(r.text) as SlapObject
  assert.is(answer.state._synced, true)
  assert.is(answer.state.slap_computer_partition_id, 'slappart0')
  const [host] = busy(remote)
  const slaves = loads(String(host?.slave_instance_list)) as PyDict[]
  assert.equal(
    slaves.map((s) => [s.slave_reference, s.k]),
    [['_user_front', 'v']],
  )
  assert.equal(forwarded(local), [['user_front', remote.url]])
})

t('the remote refusal (no free partition) is answered 404 with its reason; nothing recorded', async ({ local, remote }) => {
  for (let i = 0; i < 4; i++) assert.is((await request(remote.url, { title: `fill${i}` })).status, 200)
  const r = await request(local.url, { title: 'nope', filter: { master_url: remote.url } })
  assert.is(r.status, 404)
  assert.match(r.text, 'No free computer partition found for: user_nope')
  assert.equal(forwarded(local), [])
})

t('an https master without key and cert is a configuration error: 404', async ({ local }) => {
  const r = await request(local.url, { title: 'x', sr: 'http://sr.example/https-without-key/software.cfg' })
  assert.is(r.status, 404)
  assert.match(r.text, 'did not specify key or certificate')
  assert.equal(forwarded(local), [])
})

t('an unreachable remote master is a server error (500), logged with the reason; nothing recorded', async ({ local }) => {
  const p = await startProxy({ extraCfg: '[multimaster/http://127.0.0.1:9/]\n' })
  try {
    const r = await request(p.url, { title: 'x', filter: { master_url: 'http://127.0.0.1:9/' } })
    assert.is(r.status, 500)
    assert.match(p.log(), /forwarding user_x to http:\/\/127\.0\.0\.1:9\/: Couldn't connect/)
    assert.equal(forwarded(p), [])
  } finally {
    await p.stop()
    rmSync(p.dir, { recursive: true, force: true })
  }
  assert.ok(local)
})

t('a remote 408 (not ready yet) is answered 408 and the request is recorded as forwarded', async () => {
  // a stand-in master that is never ready: our proxy never answers 408 itself
  const seen: string[] = []
  const master = createHttpServer((req, res) => {
    seen.push(req.url ?? '')
    req.resume()
    res.writeHead(408, { 'Content-Type': 'text/html; charset=utf-8' }).end('<p>Resource not ready</p>')
  })
  await new Promise<void>((r) => master.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${(master.address() as { port: number }).port}/`
  const p = await startProxy({ extraCfg: `[multimaster/${url}]\n` })
  try {
    const r = await request(p.url, { title: 'later', filter: { master_url: url } })
    assert.is(r.status, 408, r.text)
    assert.ok(seen.includes('/requestComputerPartition'), seen.join(', '))
    assert.equal(forwarded(p), [['user_later', url]])
  } finally {
    await p.stop()
    rmSync(p.dir, { recursive: true, force: true })
    await new Promise<void>((r) => master.close(() => r()))
  }
})

const https = suite<Ctx & { tls: Tls; front: Server; frontUrl: string; seen: string[] }>('proxy multimaster over https')
https.before.each(async (c) => {
  c.tls = certificates()
  c.remote = await startProxy({ computerId: 'remote-computer' })
  await format(c.remote.url, 'remote-computer', 2)
  c.seen = []
  c.front = tlsFront(c.tls, c.remote.url, c.seen)
  await new Promise<void>((r) => c.front.listen(0, '127.0.0.1', r))
  const port = (c.front.address() as { port: number }).port
  c.frontUrl = `https://127.0.0.1:${port}/`
  c.local = await startProxy({ extraCfg: `[multimaster/${c.frontUrl}]\nkey = ${c.tls.dir}/client.key\ncert = ${c.tls.dir}/client.crt\n` })
})
https.after.each(async (c) => {
  await c.local?.stop()
  await c.remote?.stop()
  await new Promise<void>((r) => (c.front ? c.front.close(() => r()) : r()))
  for (const dir of [c.local?.dir, c.remote?.dir, c.tls?.dir]) if (dir) rmSync(dir, { recursive: true, force: true })
})

https('an https master gets the configured client certificate', async ({ local, remote, frontUrl, seen }) => {
  const r = await request(local.url, { title: 'tls', filter: { master_url: frontUrl } })
  assert.is(r.status, 200, r.text)
  assert.is((loads(r.text) as SlapObject).state._master_url, frontUrl)
  assert.ok(seen.includes('/requestComputerPartition multimaster-client'), `requests seen: ${seen.join(', ')}`)
  assert.is(busy(remote)[0]?.partition_reference, 'user_tls')
  assert.equal(forwarded(local), [['user_tls', frontUrl]])
})

t.run()
https.run()

// --- helpers ---

interface Req {
  title: string
  sr?: string
  params?: PyDict
  filter?: PyDict
  state?: string | null
  shared?: boolean
  from?: [string, string] | undefined
}

async function request(base: string, r: Req): Promise<{ status: number; text: string }> {
  const form = requestForm({ ...r, sr: r.sr ?? SR })
  const res = await fetch(`${base}requestComputerPartition`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
    signal: AbortSignal.timeout(30_000),
  })
  return { status: res.status, text: await res.text() }
}

async function format(base: string, computer: string, n: number): Promise<void> {
  const partition_list: PyValue[] = Array.from({ length: n }, (_, i) => ({
    reference: `slappart${i}`,
    address_list: [{ addr: `10.0.0.${i + 2}`, netmask: '255.255.255.0' }],
  }))
  const res = await fetch(`${base}loadComputerConfigurationFromXML`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ xml: dumps({ reference: computer, address: '10.0.0.1', netmask: '255.255.255.0', partition_list }) }).toString(),
  })
  assert.is(res.status, 200, await res.text())
}

function rows(p: StartedProxy, sql: string): Record<string, unknown>[] {
  const db = new DatabaseSync(p.dbPath, { readOnly: true })
  try {
    return db.prepare(sql).all() as Record<string, unknown>[]
  } finally {
    db.close()
  }
}

const busy = (p: StartedProxy) => rows(p, "SELECT * FROM partition17 WHERE slap_state = 'busy' ORDER BY rowid")
const forwarded = (p: StartedProxy) => rows(p, 'SELECT partition_reference, master_url FROM forwarded_partition_request17 ORDER BY rowid').map((r) => [r.partition_reference, r.master_url])

interface Tls {
  dir: string
  ca: Buffer
  serverKey: Buffer
  serverCert: Buffer
}

function certificates(): Tls {
  const dir = tempDir('slapos-mm-tls-')
  const run = (args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`)
  }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=multimaster-ca'])
  for (const [name, cn] of [
    ['server', '127.0.0.1'],
    ['client', 'multimaster-client'],
  ] as const) {
    run(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`])
    run(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2'])
  }
  return { dir, ca: readFileSync(join(dir, 'ca.crt')), serverKey: readFileSync(join(dir, 'server.key')), serverCert: readFileSync(join(dir, 'server.crt')) }
}

/**
 * An HTTPS front of the remote proxy. It asks for a client certificate and records, per
 * path, the common name of a valid one (`-` for none).
 */
function tlsFront(tls: Tls, upstream: string, seen: string[]): Server {
  return createHttpsServer({ key: tls.serverKey, cert: tls.serverCert, ca: tls.ca, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    const socket = req.socket as TLSSocket
    seen.push(`${new URL(req.url ?? '/', 'http://x').pathname} ${socket.authorized ? String(socket.getPeerCertificate().subject?.CN ?? '') : '-'}`)
    const up = httpRequest(new URL(req.url ?? '/', upstream), { method: req.method, headers: { ...req.headers, host: new URL(upstream).host } }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers)
      r.pipe(res)
    })
    up.on('error', () => res.writeHead(502).end())
    req.pipe(up)
  })
}
