// The compatibility checklist of proxy.md §13, against the built proxy over raw HTTP.
// Test names start with the checklist numbers they cover.
import { DatabaseSync } from 'node:sqlite'
import { existsSync } from 'node:fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { dumps, loads, SlapObject, Tuple, type PyDict, type PyValue } from '../src/slap-protocol.ts'
import { slapos, startProxy, type StartedProxy, requestForm } from './helpers.ts'

const SR = 'http://sr.example/a/software.cfg'
const SR2 = 'http://sr.example/b/software.cfg'

interface Ctx {
  p: StartedProxy
}
const t = suite<Ctx>('proxy checklist')
t.before.each(async (c) => {
  c.p = await startProxy({ extraCfg: 'software_product_list =\n  prod http://sr.example/prod.cfg\n' })
})
t.after.each(async (c) => {
  await c.p.stop()
})

async function call(p: StartedProxy, method: string, path: string, form: Record<string, string> = {}, headers: Record<string, string> = {}) {
  const q = new URLSearchParams(form).toString()
  const res = await fetch(`${p.url}${path}${method === 'GET' && q ? `?${q}` : ''}`, {
    method,
    redirect: 'manual',
    headers: method === 'POST' ? { 'Content-Type': 'application/x-www-form-urlencoded', ...headers } : headers,
    body: method === 'POST' ? q : undefined,
  })
  const text = await res.text()
  return { status: res.status, text, type: res.headers.get('content-type'), location: res.headers.get('location') }
}
const post = (p: StartedProxy, path: string, form: Record<string, string>) => call(p, 'POST', path, form)
const get = (p: StartedProxy, path: string, form: Record<string, string> = {}) => call(p, 'GET', path, form)

async function format(p: StartedProxy, computer: string, n: number, prefix = 'slappart') {
  const partition_list: PyValue[] = Array.from({ length: n }, (_, i) => ({
    reference: `${prefix}${i}`,
    tap: { name: `tap${i}` },
    address_list: [{ addr: `10.0.0.${i + 2}`, netmask: '255.255.255.0' }],
  }))
  const r = await post(p, 'loadComputerConfigurationFromXML', { xml: dumps({ reference: computer, address: '10.0.0.1', netmask: '255.255.255.0', partition_list }) })
  assert.is(r.status, 200)
}

async function gfci(p: StartedProxy, computer = 'computer'): Promise<PyDict> {
  const r = await get(p, 'getFullComputerInformation', { computer_id: computer })
  assert.is(r.status, 200, r.text)
  return (loads(r.text) as SlapObject).state
}
const parts = (c: PyDict) => (c._computer_partition_list as SlapObject[]).map((x) => x.state)
const srs = (c: PyDict) => (c._software_release_list as SlapObject[]).map((x) => [x.state._software_release, x.state._requested_state])

interface Req {
  title: string
  sr?: string
  type?: string
  params?: PyDict
  filter?: PyDict
  state?: string | null
  shared?: boolean
  from?: [string, string]
}
async function request(p: StartedProxy, r: Req) {
  const form = requestForm({ ...r, sr: r.sr ?? SR })
  const res = await post(p, 'requestComputerPartition', form)
  return { status: res.status, text: res.text, state: res.status === 200 ? (loads(res.text) as SlapObject).state : ({} as PyDict) }
}
function rows(p: StartedProxy, sql: string): Record<string, unknown>[] {
  const db = new DatabaseSync(p.dbPath, { readOnly: true })
  try {
    return db.prepare(sql).all() as Record<string, unknown>[]
  } finally {
    db.close()
  }
}

t('1 2 3 4 67: default computer before format, tables 17, alias, unknown computer 500', async ({ p }) => {
  const c = await gfci(p)
  assert.equal(c, { _computer_id: 'computer', _computer_partition_list: [], _software_release_list: [] })
  assert.ok(existsSync(p.dbPath))
  assert.ok(rows(p, "SELECT name FROM sqlite_master WHERE type='table'").every((r) => String(r.name).endsWith('17')))
  assert.is((await get(p, 'getComputerInformation', { computer_id: 'computer' })).text, (await get(p, 'getFullComputerInformation', { computer_id: 'computer' })).text)
  assert.is((await get(p, 'getFullComputerInformation', { computer_id: 'COMP-9' })).status, 500)
})

t('5 6 7 8 9 10 11: format states, keep, shrink, empty, other computer, guid, order', async ({ p }) => {
  await format(p, 'computer', 3)
  for (const x of parts(await gfci(p))) {
    assert.is(x._software_release_document, null)
    assert.is(x._requested_state, 'destroyed')
    assert.is(x._need_modification, 0)
    assert.is(x._instance_guid, `computer-${String(x._partition_id)}`)
  }
  assert.equal(parts(await gfci(p)).map((x) => x._partition_id), ['slappart0', 'slappart1', 'slappart2'])
  await request(p, { title: 'i' })
  await format(p, 'computer', 3)
  assert.is((parts(await gfci(p))[0]?._software_release_document as SlapObject).state._software_release, SR)
  assert.is(parts(await gfci(p))[0]?._instance_guid, 'computer-slappart0')
  await format(p, 'computer', 1, 'other')
  assert.equal(parts(await gfci(p)).map((x) => x._partition_id), ['other0'])
  await format(p, 'computer', 0)
  assert.equal(parts(await gfci(p)), [])
  await format(p, 'COMP-1', 1)
  assert.is(parts(await gfci(p, 'COMP-1')).length, 1)
})

t('12 13 14: software products', async ({ p }) => {
  assert.equal(loads((await get(p, 'getSoftwareReleaseListFromSoftwareProduct', { software_product_reference: 'prod' })).text), ['http://sr.example/prod.cfg'])
  assert.equal(loads((await get(p, 'getSoftwareReleaseListFromSoftwareProduct', { software_product_reference: 'nope' })).text), [])
  assert.is((await get(p, 'getSoftwareReleaseListFromSoftwareProduct', {})).status, 400)
  assert.is((await get(p, 'getSoftwareReleaseListFromSoftwareProduct', { software_product_reference: 'prod', software_release_url: SR })).status, 400)
})

t('15 16 108 109 110 111 112: certificate, bang, run id, redirect, 404, 400, content type', async ({ p }) => {
  const cert = await get(p, 'getComputerPartitionCertificate', { computer_id: 'computer', computer_partition_id: 'slappart0' })
  assert.equal(loads(cert.text), { certificate: '', key: '' })
  assert.is(cert.type, 'text/html; charset=utf-8')
  assert.is(loads((await post(p, 'computerBang', { computer_id: 'computer', message: 'm' })).text), '')
  assert.match((await get(p, 'getRunId')).text, /^[A-Za-z0-9]{32}$/)
  const root = await get(p, '')
  assert.is(root.status, 302)
  assert.match(root.location ?? '', /\/panel\/$/)
  assert.is((await get(p, 'noSuchRoute')).status, 404)
  assert.is((await post(p, 'requestComputerPartition', { software_release: SR, software_type: '', partition_reference: 'x' })).status, 400)
})

t('17 18 19 20 21 22 23: software supply and states, per computer', async ({ p }) => {
  await format(p, 'COMP-0', 1)
  await format(p, 'COMP-1', 1)
  assert.is((await post(p, 'supplySupply', { url: SR, computer_id: 'COMP-0', state: 'available' })).text, `Supplied '${SR}' to be available`)
  await post(p, 'supplySupply', { url: SR, computer_id: 'COMP-1', state: 'available' })
  for (const ep of ['buildingSoftwareRelease', 'availableSoftwareRelease', 'softwareReleaseError']) {
    assert.is((await post(p, ep, { url: SR, computer_id: 'COMP-0', error_log: 'x' })).text, 'Ignored')
  }
  assert.equal(srs(await gfci(p, 'COMP-0')), [[SR, 'available']])
  assert.equal(srs(await gfci(p)), [])
  await post(p, 'supplySupply', { url: SR, computer_id: 'COMP-0', state: 'destroyed' })
  assert.equal(srs(await gfci(p, 'COMP-0')), [[SR, 'destroyed']])
  assert.is((await post(p, 'destroyedSoftwareRelease', { url: SR, computer_id: 'COMP-0' })).text, 'OK')
  assert.equal(srs(await gfci(p, 'COMP-0')), [])
  assert.equal(srs(await gfci(p, 'COMP-1')), [[SR, 'available']])
  assert.is((await post(p, 'supplySupply', { url: SR, computer_id: 'COMP-0', state: 'bogus' })).status, 400)
})

t('24 25 26 27 28 29 30 31 32 33: allocation, repeat, updates, timestamps', async ({ p }) => {
  await format(p, 'computer', 3)
  const a = await request(p, { title: 'main', params: { foo: 'bar' } })
  assert.is(a.status, 200)
  assert.is(a.state._requested_state, 'started')
  assert.is(a.state.slap_computer_partition_id, 'slappart0')
  assert.is(a.state._instance_guid, 'computer-slappart0')
  const ts = Number((a.state._parameter_dict as PyDict).timestamp)
  assert.ok(ts <= Date.now() / 1000 + 1 && ts > 1e9)
  const again = await request(p, { title: 'main', params: { foo: 'bar' } })
  assert.is(again.text, a.text)
  const gp = parts(await gfci(p))[0]?._parameter_dict as PyDict
  assert.is(gp.timestamp, (a.state._parameter_dict as PyDict).timestamp)
  const b = await request(p, { title: 'main', params: { foo: 'baz' }, sr: SR2, type: 'other' })
  assert.is(b.state.slap_computer_partition_id, 'slappart0')
  assert.is((b.state._parameter_dict as PyDict).foo, 'baz')
  assert.ok(Number((b.state._parameter_dict as PyDict).timestamp) > ts)
  assert.is(b.state.slap_software_release_url, SR2)
  assert.is(b.state.slap_software_type, 'other')
})

t('34 35 36 60: no free partition 404, titles scoped by tree, free requester = person', async ({ p }) => {
  await format(p, 'computer', 3)
  await request(p, { title: 'root1' })
  await request(p, { title: 'root2' })
  assert.is((await request(p, { title: 'child', from: ['computer', 'slappart0'] })).status, 200)
  const r = await request(p, { title: 'child', from: ['computer', 'slappart1'] })
  assert.is(r.status, 404)
  assert.match(r.text, /No free computer partition found for: child/)
  // requester partition unknown: a person's request, which finds the person's 'root1'
  assert.is((await request(p, { title: 'root1', from: ['computer', 'slappart9'] })).state.slap_computer_partition_id, 'slappart0')
})

t('37 38 39 40: non-ASCII, ints, sorted XML, empty string is None', async ({ p }) => {
  await format(p, 'computer', 1)
  const r = await request(p, { title: 'x', params: { z: 'été ☃', a: 1, m: '' } })
  const d = r.state._parameter_dict as PyDict
  assert.is(d.z, 'été ☃')
  assert.is(d.a, '1')
  assert.is(d.m, null)
  const xml = String(rows(p, 'SELECT xml FROM partition17')[0]?.xml)
  assert.ok(xml.indexOf('id="a"') < xml.indexOf('id="m"') && xml.indexOf('id="m"') < xml.indexOf('id="z"'))
  await post(p, 'setComputerPartitionConnectionXml', { computer_id: 'computer', computer_partition_id: 'slappart0', connection_xml: dumps({ n: 1 }), slave_reference: 'None' })
  assert.equal((await request(p, { title: 'x', params: { z: 'été ☃', a: 1, m: '' } })).state._connection_dict, { n: '1' })
})

t('41 42 43 44: busy partition parameters', async ({ p }) => {
  await format(p, 'computer', 2)
  await request(p, { title: 'root', type: '' })
  await request(p, { title: 'kid', from: ['computer', 'slappart0'] })
  const [root, kid] = parts(await gfci(p))
  const rp = root?._parameter_dict as PyDict
  assert.equal(rp.ip_list, [new Tuple(['tap0', '10.0.0.2'])])
  assert.is(rp.slap_software_type, 'default')
  assert.is(rp.instance_title, 'root')
  assert.is(rp.root_instance_title, 'root')
  assert.is(rp.slap_computer_id, 'computer')
  assert.is(rp.slap_computer_partition_id, 'slappart0')
  assert.is(rp.slap_software_release_url, SR)
  assert.equal(rp.slave_instance_list, [])
  assert.equal(rp.full_address_list, [])
  assert.is((kid?._parameter_dict as PyDict).root_instance_title, 'root')
})

t('45 46 47 48 49: states and their propagation', async ({ p }) => {
  await format(p, 'computer', 3)
  assert.is((await request(p, { title: 'root', state: 'stopped' })).state._requested_state, 'stopped')
  await request(p, { title: 'kid', from: ['computer', 'slappart0'] })
  assert.is((await request(p, { title: 'kid', from: ['computer', 'slappart0'] })).state._requested_state, 'stopped')
  assert.is((await request(p, { title: 'root' })).state._requested_state, 'started')
  assert.is(rows(p, "SELECT requested_state FROM partition17 WHERE reference='slappart0'")[0]?.requested_state, 'stopped')
  await request(p, { title: 'root', state: 'started' })
  assert.is((await request(p, { title: 'kid', state: 'stopped', from: ['computer', 'slappart0'] })).state._requested_state, 'stopped')
  await request(p, { title: 'root', state: 'destroyed' })
  const row = rows(p, "SELECT * FROM partition17 WHERE reference='slappart0'")[0]
  assert.equal([row?.requested_state, row?.slap_state, row?.software_release, row?.partition_reference], ['destroyed', 'busy', SR, 'root'])
})

t('50 51 52 53 54: destroyedComputerPartition frees leaves, then the root', async ({ p }) => {
  await format(p, 'computer', 3)
  await request(p, { title: 'root' })
  await request(p, { title: 'b-kid', from: ['computer', 'slappart0'] })
  await request(p, { title: 'a-kid', from: ['computer', 'slappart0'] })
  const first = await post(p, 'destroyedComputerPartition', { computer_id: 'computer', computer_partition_id: 'slappart0' })
  assert.is(first.text, 'Not destroying yet because this partition has child partitions: a-kid, b-kid')
  assert.equal(rows(p, "SELECT requested_state FROM partition17 WHERE requested_by='root'").map((r) => r.requested_state), ['destroyed', 'destroyed'])
  for (const id of ['slappart1', 'slappart2']) assert.is((await post(p, 'destroyedComputerPartition', { computer_id: 'computer', computer_partition_id: id })).text, 'OK')
  const freed = rows(p, "SELECT * FROM partition17 WHERE reference='slappart1'")[0]
  assert.equal([freed?.slap_state, freed?.partition_reference, freed?.requested_state, freed?.requested_by], ['free', null, 'started', ''])
  assert.is((await post(p, 'destroyedComputerPartition', { computer_id: 'computer', computer_partition_id: 'slappart0' })).text, 'OK')
  assert.is((await request(p, { title: 'new' })).state.slap_computer_partition_id, 'slappart0')
  const unknown = await post(p, 'destroyedComputerPartition', { computer_id: 'computer', computer_partition_id: 'slappart9' })
  assert.equal([unknown.status, unknown.text], [200, "Unknown partition 'slappart9' on 'computer'"])
})

t('55 56: bang bumps the whole tree equally, not other trees', async ({ p }) => {
  await format(p, 'computer', 3)
  await request(p, { title: 'root' })
  await request(p, { title: 'kid', from: ['computer', 'slappart0'] })
  await request(p, { title: 'other' })
  const before = rows(p, 'SELECT reference, timestamp FROM partition17 ORDER BY rowid')
  assert.is((await post(p, 'softwareInstanceBang', { computer_id: 'computer', computer_partition_id: 'slappart1', message: 'm' })).text, 'OK')
  const after = rows(p, 'SELECT reference, timestamp FROM partition17 ORDER BY rowid')
  assert.is(after[0]?.timestamp, after[1]?.timestamp)
  assert.ok(Number(after[0]?.timestamp) > Number(before[0]?.timestamp))
  assert.is(after[2]?.timestamp, before[2]?.timestamp)
})

t('57 58 59: rename of a child, of a root (the tree follows)', async ({ p }) => {
  await format(p, 'computer', 2)
  await request(p, { title: 'root' })
  await request(p, { title: 'kid', from: ['computer', 'slappart0'] })
  assert.is((await post(p, 'softwareInstanceRename', { computer_id: 'computer', computer_partition_id: 'slappart1', new_name: 'kid2' })).text, 'done')
  assert.is((await post(p, 'softwareInstanceRename', { computer_id: 'computer', computer_partition_id: 'slappart0', new_name: 'root2' })).text, 'done')
  const [r, k] = parts(await gfci(p)).map((x) => x._parameter_dict as PyDict)
  assert.equal([r?.instance_title, k?.instance_title, k?.root_instance_title], ['root2', 'kid2', 'root2'])
})

t('61 62 63 64 65 66: multi-computer allocation', async ({ p }) => {
  await format(p, 'COMP-0', 1)
  await format(p, 'COMP-1', 1)
  const a = await request(p, { title: 'a', filter: { computer_guid: 'COMP-1' } })
  assert.is(a.state.slap_computer_id, 'COMP-1')
  assert.is(a.state._instance_guid, 'COMP-1-slappart0')
  assert.is((await request(p, { title: 'b', filter: { computer_guid: 'COMP-9' } })).status, 404)
  assert.is((await request(p, { title: 'c' })).status, 404)
  assert.is((await request(p, { title: 'a', filter: { computer_guid: 'COMP-0' } })).state.slap_computer_id, 'COMP-1')
  const b = await request(p, { title: 'b', filter: { computer_guid: 'COMP-0' }, state: 'stopped' })
  assert.is(b.state._instance_guid, 'COMP-0-slappart0')
  assert.is(parts(await gfci(p, 'COMP-1'))[0]?._requested_state, 'started')
})

t('68 69 70 71 72 73 74 75 76 77 78 79 80: shared instances', async ({ p }) => {
  await format(p, 'computer', 2)
  assert.is((await request(p, { title: 's', shared: true })).status, 404)
  await request(p, { title: 'host' })
  await request(p, { title: 'host2' })
  const ts = () => rows(p, 'SELECT timestamp FROM partition17 ORDER BY rowid').map((r) => Number(r.timestamp))
  const t0 = ts()[0] ?? 0
  const s = await request(p, { title: 's', shared: true, params: { k: 'v' } })
  assert.equal(s.state._connection_dict, {})
  assert.is(s.state.slap_computer_partition_id, 'slappart0')
  const t1 = ts()[0] ?? 0
  assert.ok(t1 > t0)
  const list = () => (parts(gfciSync)[0]?._parameter_dict as PyDict).slave_instance_list
  let gfciSync = await gfci(p)
  assert.equal(list(), [{ k: 'v', slap_software_type: 'default', slave_reference: '_s', slave_title: '_s' }])
  assert.equal((parts(gfciSync)[1]?._parameter_dict as PyDict).slave_instance_list, [])
  await request(p, { title: 's', shared: true, params: { k: 'v' } })
  assert.is(ts()[0], t1)
  await request(p, { title: 's', shared: true, params: { k: 'w' } })
  const t2 = ts()[0] ?? 0
  assert.ok(t2 > t1)
  await request(p, { title: 's2', shared: true })
  gfciSync = await gfci(p)
  assert.is((list() as PyValue[]).length, 2)
  await post(p, 'setComputerPartitionConnectionXml', { computer_id: 'computer', computer_partition_id: 'slappart0', connection_xml: dumps({ url: 'u' }), slave_reference: '_s' })
  assert.equal((await request(p, { title: 's', shared: true, params: { k: 'w' } })).state._connection_dict, { url: 'u' })
  await request(p, { title: 's2', shared: true, state: 'destroyed' })
  gfciSync = await gfci(p)
  assert.equal((list() as PyDict[]).map((x) => x.slave_reference), ['_s'])
  assert.is((await request(p, { title: 'pin', shared: true, filter: { instance_guid: 'computer-slappart1' } })).state.slap_computer_partition_id, 'slappart1')
  assert.is((await request(p, { title: 'x', shared: true, filter: { computer_guid: 'COMP-9' } })).status, 404)
  await post(p, 'setComputerPartitionConnectionXml', { computer_id: 'computer', computer_partition_id: 'slappart0', connection_xml: dumps({ c: 'd' }), slave_reference: 'None' })
  assert.equal(parts(await gfci(p))[0]?._connection_dict, { c: 'd' })
})

t('shared instances land on the host of their software type; a type no host has is the original 404', async ({ p }) => {
  await format(p, 'computer', 3)
  assert.is((await request(p, { title: 'host-a', type: 'A' })).state.slap_computer_partition_id, 'slappart0')
  assert.is((await request(p, { title: 'host-b', type: 'B' })).state.slap_computer_partition_id, 'slappart1')
  const b = await request(p, { title: 'shared-b', type: 'B', shared: true })
  assert.is(b.status, 200, b.text)
  assert.is(b.state.slap_computer_partition_id, 'slappart1')
  const a = await request(p, { title: 'shared-a', type: 'A', shared: true })
  assert.is(a.state.slap_computer_partition_id, 'slappart0')
  const c = await request(p, { title: 'shared-c', type: 'C', shared: true })
  assert.is(c.status, 404)
  assert.match(c.text, 'No partition corresponding to slave request')
  const hosted = (id: string) => rows(p, `SELECT hosted_by FROM slave17 WHERE reference = '_${id}'`)[0]?.hosted_by
  assert.equal([hosted('shared-a'), hosted('shared-b'), hosted('shared-c')], ['slappart0', 'slappart1', undefined])
})

t('81 83: frontend bypass answers', async ({ p }) => {
  const apache = await request(p, {
    title: 'f',
    shared: true,
    type: '',
    sr: 'http://git.erp5.org/gitweb/slapos.git/blob_plain/HEAD:/software/apache-frontend/software.cfg',
    params: { url: 'http://[::1]:123/my/path' },
  })
  assert.equal(apache.state._connection_dict, { secure_access: 'http://[::1]:123/my/path', domain: '[::1]:123' })
  const kvm = await request(p, {
    title: 'k',
    shared: true,
    type: 'frontend',
    sr: 'http://git.erp5.org/gitweb/slapos.git/blob_plain/refs/tags/slapos-0.92:/software/kvm/software.cfg',
    params: { host: '::1', port: '5900' },
  })
  assert.equal(kvm.state._connection_dict, { url: 'https://[::1]:5900/', domainname: '[::1]', port: '5900', path: '/' })
})

t('84: registerComputerPartition', async ({ p }) => {
  await format(p, 'computer', 1)
  await request(p, { title: 'x' })
  const r = loads((await get(p, 'registerComputerPartition', { computer_reference: 'computer', computer_partition_reference: 'slappart0' })).text) as SlapObject
  assert.equal(r.state, parts(await gfci(p))[0])
  assert.is((await get(p, 'registerComputerPartition', { computer_reference: 'computer', computer_partition_reference: 'nope' })).status, 500)
})

t('104 105 106 107: hateoas subset', async ({ p }) => {
  await format(p, 'computer', 2)
  await request(p, { title: 'root', params: { a: 'b' } })
  await request(p, { title: 'kid', from: ['computer', 'slappart0'] })
  await request(p, { title: 'sh', shared: true })
  const q = (query: string) => get(p, 'hateoas/', { mode: 'search', query })
  const trees = JSON.parse((await q('portal_type:"Instance Tree" AND validation_state:validated')).text) as { _embedded: { contents: { title: string; url_string: string }[] } }
  assert.equal(trees._embedded.contents.map((x) => [x.title, x.url_string]), [['root', SR], ['sh', SR]])
  const doc = JSON.parse((await get(p, 'hateoas/partitions/root')).text) as { _embedded: { _view: Record<string, { default: unknown }> } }
  assert.is(doc._embedded._view.my_url_string?.default, SR)
  assert.is(doc._embedded._view.my_slap_state?.default, 'started')
  const shared = JSON.parse((await get(p, 'hateoas/shared/sh')).text) as { _embedded: { _view: Record<string, { default: unknown }> } }
  assert.is(shared._embedded._view.my_slap_state?.default, 'unused')
  assert.is(shared._embedded._view.my_root_slave?.default, 1)
  assert.is((await q('portal_type:"Instance Tree" AND validation_state:validated AND title:="a" junk')).status, 400)
  const nodes = JSON.parse((await q('portal_type:"Compute Node" AND validation_state:validated')).text) as { _embedded: { contents: { title: string }[] } }
  assert.equal(nodes._embedded.contents.map((x) => x.title), ['computer'])
})

t('proxy show prints the tables, parameters and network, and --json', async ({ p }) => {
  await format(p, 'computer', 2)
  await request(p, { title: 'root' })
  await post(p, 'supplySupply', { url: SR, computer_id: 'computer', state: 'available' })
  await post(p, 'setComputerPartitionConnectionXml', {
    computer_id: 'computer',
    computer_partition_id: 'slappart0',
    connection_xml: dumps({ _: '{"b": 1, "a": [1]}', 'ssh-key': 'k'.repeat(60) }),
    slave_reference: 'None',
  })
  const r = slapos(['proxy', 'show', '--cfg', p.cfgPath])
  assert.is(r.code, 0, r.stderr)
  const lines = r.stdout.split('\n')
  assert.is(lines[0], `Using database: ${p.dbPath}`)
  assert.ok(lines.includes('table computer17'))
  assert.ok(lines.includes('table partition17: skipping xml, connection_xml, slave_instance_list'))
  assert.ok(lines.includes('table slave17: empty'))
  assert.ok(lines.includes('slappart0: root (type default)'))
  assert.ok(lines.includes(`    ssh-key = ${'k'.repeat(20)}...${'k'.repeat(20)}`))
  assert.ok(r.stdout.includes('    _ = {\n  "a": [\n    1\n  ],\n  "b": 1\n}'))
  assert.ok(lines.includes('slappart0: 10.0.0.2'))
  assert.ok(lines.includes(' '))
  // prettytable frame: dashes as wide as the centred columns plus one space each, plus one
  const i = lines.indexOf('table computer17')
  const rule = '-'.repeat(34)
  assert.equal(lines.slice(i + 1, i + 6), [rule, ' reference address     netmask    ', rule, '  computer 10.0.0.1 255.255.255.0 ', rule])
  const j = slapos(['proxy', 'show', '--cfg', p.cfgPath, '--json', '--software'])
  const doc = JSON.parse(j.stdout) as { software: { url: string; md5: string }[] }
  assert.equal(doc.software.map((s) => s.url), [SR])
  assert.match(doc.software[0]?.md5 ?? '', /^[0-9a-f]{32}$/)
})

t.run()
