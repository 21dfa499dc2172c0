// The built proxy against hostile requests (docs/operations.md, Security): request-targets
// and headers that used to end the process, master data that would name paths on nodes,
// cross-site and rebinding requests, limits, forged log lines, the database's modes.
import { mkdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { dumps, type PyDict, type PyValue } from '../src/slap-protocol.ts'
import { requestForm, startProxy, tempDir, type StartedProxy } from './helpers.ts'
import { CRASH_TARGETS, rawGet } from './raw-http.ts'

const SR = 'http://sr.example/hostile/software.cfg'

async function post(p: StartedProxy, path: string, form: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await fetch(p.url + path, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(form).toString() })
  return { status: res.status, text: await res.text() }
}

async function postJson(p: StartedProxy, name: string, body: string) {
  const res = await fetch(p.url + name, { method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body })
  return { status: res.status, text: await res.text() }
}

function computer(reference: string, ids: string[]): string {
  return dumps({ reference, address: '10.0.0.1', netmask: '255.255.255.0', partition_list: ids.map((id) => ({ reference: id, address_list: [] })) })
}

function counts(p: StartedProxy): Record<string, number> {
  const db = new DatabaseSync(p.dbPath, { readOnly: true })
  const out: Record<string, number> = {}
  for (const t of ['computer17', 'software17', 'partition17', 'slave17', 'partition_network17']) out[t] = (db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n
  db.close()
  return out
}

/** The proxy still runs and answers. */
async function alive(p: StartedProxy): Promise<void> {
  assert.is(p.exitCode(), null, p.log())
  const r = await fetch(`${p.url}getRunId`)
  assert.is(r.status, 200)
}

interface Ctx {
  p: StartedProxy
}
const t = suite<Ctx>('proxy under hostile requests')
t.before.each(async (c) => {
  c.p = await startProxy()
  assert.is((await post(c.p, 'loadComputerConfigurationFromXML', { xml: computer('computer', ['slappart0', 'slappart1']) })).status, 200)
})
t.after.each(async (c) => {
  await c.p.stop()
})


t('request-targets that used to end the process get an answer, and the proxy serves on', async ({ p }) => {
  for (const target of CRASH_TARGETS) {
    const r = await rawGet(p, target)
    assert.ok(r.status >= 200 && r.status < 500, `${target}: ${r.head}`)
  }
  await alive(p)
  assert.not.match(p.log(), 'ERROR')
})

t('hateoas traverse: only a path of this proxy may be a Location; control characters refused, no crash', async ({ p }) => {
  for (const rel of ['%0A', '%00', '%0D%0ASet-Cookie:%20x=1', '//evil.example/', '/\\evil.example/', 'http://evil.example/', 'javascript:alert(1)']) {
    const r = await rawGet(p, `/hateoas/?mode=traverse&relative_url=${rel}`)
    assert.is(r.status, 400, `${rel}: ${r.head}`)
    assert.not.match(r.head, /Location|Set-Cookie/i)
  }
  const ok = await rawGet(p, '/hateoas/?mode=traverse&relative_url=/hateoas/partitions/x')
  assert.is(ok.status, 302)
  assert.match(ok.head, /\r\nLocation: \/hateoas\/partitions\/x(\r\n|$)/)
  const wide = await rawGet(p, '/hateoas/?mode=traverse&relative_url=/%E4%B8%AD')
  assert.is(wide.status, 302)
  assert.match(wide.head, /\r\nLocation: \/%E4%B8%AD(\r\n|$)/)
  assert.is((await rawGet(p, '/hateoas/computers/%E0%A4')).status, 400)
  await alive(p)
})

t('panel download of a file whose name has a newline: a safe Content-Disposition', async () => {
  const dir = tempDir('slapos-public-')
  writeFileSync(join(dir, 'x\ny.txt'), 'hello')
  const p = await startProxy({ extraCfg: `public_directory_path = ${dir}\n` })
  try {
    const r = await rawGet(p, '/panel/public/x%0Ay.txt')
    assert.is(r.status, 200, r.head)
    assert.is(r.body, 'hello')
    assert.match(r.head, /\r\nContent-Disposition: attachment; filename=xy\.txt; filename\*=UTF-8''x%0Ay\.txt(\r\n|$)/)
    await alive(p)
  } finally {
    await p.stop()
  }
})

t('identifiers that would name paths on nodes are refused with a 400 and nothing is stored', async ({ p }) => {
  const before = counts(p)
  for (const bad of ['../victim', '..', '.', 'a/b', 'x\ny', '', 'a'.repeat(256), '../../../../etc/X']) {
    let r = await post(p, 'loadComputerConfigurationFromXML', { xml: computer('computer', ['slappart0', bad]) })
    assert.is(r.status, 400, `partition ${JSON.stringify(bad)}: ${r.text}`)
    r = await post(p, 'loadComputerConfigurationFromXML', { xml: computer(bad, ['slappart0']) })
    assert.is(r.status, 400, `computer ${JSON.stringify(bad)}`)
    r = await post(p, 'supplySupply', { url: SR, computer_id: bad, state: 'available' })
    assert.is(r.status, 400, `supply to ${JSON.stringify(bad)}`)
    r = await post(p, 'requestComputerPartition', requestForm({ title: 'i', sr: SR, filter: { computer_guid: bad } }))
    assert.is(r.status, 400, `request on ${JSON.stringify(bad)}`)
    r = await postJson(p, 'slapos.put.v0.compute_node_format', JSON.stringify({ computer_guid: 'computer', compute_partition_list: [{ partition_id: bad }] }))
    assert.is(r.status, 400, `JSON format ${JSON.stringify(bad)}: ${r.text}`)
    r = await postJson(p, 'slapos.post.v0.software_installation', JSON.stringify({ software_release_uri: SR, computer_guid: bad }))
    assert.is(r.status, 400, `JSON supply to ${JSON.stringify(bad)}`)
  }
  assert.match((await post(p, 'loadComputerConfigurationFromXML', { xml: computer('computer', ['../victim']) })).text, 'is not a safe identifier')
  assert.equal(counts(p), before)
  assert.is((await fetch(`${p.url}getFullComputerInformation?computer_id=`)).status, 400)
  await alive(p)
})

t('control characters in a software URL, type, title or state are refused before anything is stored', async ({ p }) => {
  const before = counts(p)
  const nl = 'http://sr.example/x.cfg\n[buildout]\nparts = evil'
  assert.is((await post(p, 'supplySupply', { url: nl, computer_id: 'computer', state: 'available' })).status, 400)
  assert.is((await post(p, 'requestComputerPartition', requestForm({ title: 'i', sr: nl }))).status, 400)
  assert.is((await post(p, 'requestComputerPartition', requestForm({ title: 'i', sr: SR, type: 'a\nb' }))).status, 400)
  assert.is((await post(p, 'requestComputerPartition', requestForm({ title: 'i\r', sr: SR }))).status, 400)
  assert.is((await postJson(p, 'slapos.post.v0.software_installation', JSON.stringify({ software_release_uri: nl, computer_guid: 'computer' }))).status, 400)
  const json = await postJson(p, 'slapos.post.v0.software_instance', JSON.stringify({ title: 'x\ny', software_release_uri: SR, software_type: 'default' }))
  assert.is(json.status, 400, json.text)
  // an empty title: nothing allocated (it left a busy partition no tree lists, and a 500 in instance_tree_list)
  assert.is((await post(p, 'requestComputerPartition', requestForm({ title: '', sr: SR }))).status, 400)
  assert.is((await postJson(p, 'slapos.post.v0.software_instance', JSON.stringify({ title: '', software_release_uri: SR, software_type: 'default' }))).status, 400)
  assert.is((await postJson(p, 'slapos.allDocs.v0.instance_tree_list', '{}')).status, 200)
  assert.equal(counts(p), before)
})

t('a cross-site POST (foreign Origin) is refused and deletes nothing; the own origin and no Origin work', async ({ p }) => {
  const before = counts(p)
  const evil = await post(p, 'loadComputerConfigurationFromXML', { xml: computer('computer', []) }, { Origin: 'http://evil.example' })
  assert.is(evil.status, 403)
  assert.equal(counts(p), before)
  const evilJson = await fetch(`${p.url}slapos.post.v0.software_installation`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', Origin: 'http://evil.example' },
    body: JSON.stringify({ software_release_uri: SR, computer_guid: 'computer' }),
  })
  assert.is(evilJson.status, 403)
  assert.equal(counts(p), before)
  const own = new URL(p.url).origin
  assert.is((await post(p, 'supplySupply', { url: SR, computer_id: 'computer', state: 'available' }, { Origin: own })).status, 200)
  assert.is((await post(p, 'supplySupply', { url: SR, computer_id: 'computer', state: 'available' })).status, 200)
  assert.is(p.log().match(/refused, cross-site request from http:\/\/evil\.example/g)?.length, 2)
})

t('Host: a foreign name (DNS rebinding) is refused on a loopback bind; loopback names are answered', async ({ p }) => {
  const port = new URL(p.url).port
  for (const host of ['evil.example', `evil.example:${port}`, '10.0.0.1', 'localhost.evil.example', 'a b']) {
    const r = await rawGet(p, '/getFullComputerInformation?computer_id=computer', `Host: ${host}\r\n`)
    assert.is(r.status, r.status === 400 ? 400 : 403, `${host}: ${r.head}`)
    assert.not.match(r.body, 'slappart0')
  }
  for (const host of ['localhost', `localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, `127.1.2.3`]) {
    assert.is((await rawGet(p, '/getRunId', `Host: ${host}\r\n`)).status, 200, host)
  }
})

t('allowed_hosts adds names of this master', async () => {
  const p = await startProxy({ extraCfg: 'allowed_hosts = master.example, other.example\n' })
  try {
    assert.is((await rawGet(p, '/getRunId', 'Host: master.example:8080\r\n')).status, 200)
    assert.is((await rawGet(p, '/getRunId', 'Host: OTHER.example\r\n')).status, 200)
    assert.is((await rawGet(p, '/getRunId', 'Host: evil.example\r\n')).status, 403)
  } finally {
    await p.stop()
  }
})

t('400 instead of 500: deep JSON, NUL in parameters, forbidden documents', async ({ p }) => {
  const deep = '['.repeat(10_000) + ']'.repeat(10_000)
  const r = await postJson(p, 'slapos.post.v0.software_instance', `{"title": ${deep}, "software_release_uri": "x", "software_type": "y"}`)
  assert.is(r.status, 400, r.text)
  const nul = await postJson(p, 'slapos.post.v0.software_instance', JSON.stringify({ title: 'n', software_release_uri: SR, software_type: 'default', parameters: { a: 'x\u0000y' } }))
  assert.is(nul.status, 400, nul.text)
  const xmlNul = await post(p, 'requestComputerPartition', { ...requestForm({ title: 'n', sr: SR }), partition_parameter_xml: '<?xml version="1.0" encoding="utf-8"?><marshal><dictionary id="i2"><string>a</string><string>x&#0;y</string></dictionary></marshal>' })
  assert.is(xmlNul.status, 400, xmlNul.text)
  await alive(p)
  assert.not.match(p.log(), 'ERROR')
})

t('40,000 partitions load in one request (no SQL variable limit), over SLAP and JSON', async ({ p }) => {
  const ids = Array.from({ length: 40_000 }, (_, i) => `p${i}`)
  const r = await post(p, 'loadComputerConfigurationFromXML', { xml: computer('big', ids) })
  assert.is(r.status, 200, r.text)
  const j = await postJson(p, 'slapos.put.v0.compute_node_format', JSON.stringify({ computer_guid: 'big2', compute_partition_list: ids.map((partition_id) => ({ partition_id })) }))
  assert.is(j.status, 200, j.text)
  const db = new DatabaseSync(p.dbPath, { readOnly: true })
  const n = (db.prepare("SELECT count(*) AS n FROM partition17 WHERE computer_reference IN ('big', 'big2')").get() as { n: number }).n
  db.close()
  assert.is(n, 80_000)
  // formatting again with fewer partitions drops the others
  assert.is((await post(p, 'loadComputerConfigurationFromXML', { xml: computer('big', ids.slice(0, 3)) })).status, 200)
})

t('limits: body, nesting, values and parameter count answered 413/400; configurable', async () => {
  const p = await startProxy({ extraCfg: 'max_request_body_size = 100000\nmax_document_depth = 8\nmax_document_values = 500\nmax_parameter_count = 5\n' })
  try {
    assert.is((await post(p, 'loadComputerConfigurationFromXML', { xml: computer('computer', ['slappart0']) })).status, 200)
    const before = counts(p)
    const params = (n: number): PyDict => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']))
    assert.is((await post(p, 'requestComputerPartition', requestForm({ title: 'ok', sr: SR, params: params(5) }))).status, 200)
    const many = await post(p, 'requestComputerPartition', requestForm({ title: 'many', sr: SR, params: params(6) }))
    assert.is(many.status, 400)
    assert.match(many.text, 'max_parameter_count')
    let nested: PyValue = 'x'
    for (let i = 0; i < 10; i++) nested = [nested]
    assert.is((await post(p, 'requestComputerPartition', requestForm({ title: 'deep', sr: SR, params: { a: nested } }))).status, 400)
    assert.is((await post(p, 'requestComputerPartition', requestForm({ title: 'wide', sr: SR, params: { a: Array.from({ length: 600 }, () => 'v') } }))).status, 400)
    assert.is((await post(p, 'requestComputerPartition', requestForm({ title: 'big', sr: SR, params: { a: 'x'.repeat(200_000) } }))).status, 413)
    const after = counts(p)
    assert.equal(after, before)
    const json = await postJson(p, 'slapos.post.v0.software_instance', JSON.stringify({ title: 'j', software_release_uri: SR, software_type: 'default', parameters: params(6) }))
    assert.is(json.status, 400, json.text)
  } finally {
    await p.stop()
  }
})

t('the default limits let a request of 2,000 parameters through and refuse 20,000 (and 250,000) keys', async ({ p }) => {
  const params = (n: number): PyDict => Object.fromEntries(Array.from({ length: n }, (_, i) => [`key${i}`, `value ${i}`]))
  assert.is((await post(p, 'requestComputerPartition', requestForm({ title: 'usual', sr: SR, params: params(2000) }))).status, 200)
  const many = await post(p, 'requestComputerPartition', requestForm({ title: 'many', sr: SR, params: params(20_000) }))
  assert.is(many.status, 400)
  assert.match(many.text, 'max_parameter_count (10000)')
  const huge = await post(p, 'requestComputerPartition', requestForm({ title: 'huge', sr: SR, params: params(250_000) }))
  assert.ok(huge.status === 400 || huge.status === 413, String(huge.status))
  await alive(p)
})

t('values from requests cannot forge log lines', async ({ p }) => {
  await fetch(`${p.url}getFullComputerInformation?computer_id=x%0A2026-12-01%2000:00:00%20slapos[1]%20INFO%20FORGED`)
  await fetch(`${p.url}no/such%0D%0AFORGED2`)
  await post(p, 'requestComputerPartition', requestForm({ title: 'a\nFORGED3', sr: SR }))
  const lines = p.log().split('\n')
  assert.ok(lines.some((l) => l.includes('FORGED')), 'the request was logged')
  // every line is one of the logger's own (`slapos[<pid>] LEVEL ...`): none was started by a value
  const pid = `slapos[${p.pid}] `
  const foreign = lines.filter((l) => l !== '' && !l.startsWith(pid))
  assert.equal(foreign, [])
})

t('the database and its -wal and -shm files are readable by their owner only', async () => {
  const dir = tempDir('slapos-proxy-')
  // an existing database made with the usual umask is tightened too
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'proxy.db'), '', { mode: 0o644 })
  const p = await startProxy({ dir })
  try {
    assert.is((await post(p, 'supplySupply', { url: SR, computer_id: 'computer', state: 'available' })).status, 200)
    for (const f of ['proxy.db', 'proxy.db-wal', 'proxy.db-shm']) assert.is(statSync(join(dir, f)).mode & 0o777, 0o600, f)
  } finally {
    await p.stop()
  }
  const fresh = await startProxy()
  try {
    assert.is((await post(fresh, 'supplySupply', { url: SR, computer_id: 'computer', state: 'available' })).status, 200)
    for (const f of ['proxy.db', 'proxy.db-wal', 'proxy.db-shm']) assert.is(statSync(join(fresh.dir, f)).mode & 0o777, 0o600, f)
  } finally {
    await fresh.stop()
  }
})

t.run()
