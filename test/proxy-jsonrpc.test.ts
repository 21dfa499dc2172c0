// The JSON-RPC API of the proxy (proxy.md §10.1) against the built proxy over HTTP, and what
// SLAP clients see of what it did (and the other way round).
import { DatabaseSync } from 'node:sqlite'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { dumps, loads, SlapObject, type PyDict } from '../src/slap-protocol.ts'
import { requestForm, startProxy, type StartedProxy } from './helpers.ts'

const SR = 'http://sr.example/a/software.cfg'
const APACHE_FRONTEND = 'http://git.erp5.org/gitweb/slapos.git/blob_plain/HEAD:/software/apache-frontend/software.cfg'

interface Ctx {
  p: StartedProxy
}
const t = suite<Ctx>('proxy JSON-RPC API')
t.before.each(async (c) => {
  c.p = await startProxy()
})
t.after.each(async (c) => {
  await c.p.stop()
})

interface Answer {
  status: number
  type: string | null
  allow: string | null
  text: string
  json: any
}

async function rpc(p: StartedProxy, method: string, body: unknown = {}, headers: Record<string, string> = {}, httpMethod = 'POST'): Promise<Answer> {
  const res = await fetch(`${p.url}${method}`, {
    method: httpMethod,
    headers: { 'Content-Type': 'application/json', ...headers },
    body: httpMethod === 'POST' ? (typeof body === 'string' ? body : JSON.stringify(body)) : undefined,
  })
  const text = await res.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.status, type: res.headers.get('content-type'), allow: res.headers.get('allow'), text, json }
}

/** A 200 JSON answer's document. */
async function ok(p: StartedProxy, method: string, body: unknown = {}) {
  const r = await rpc(p, method, body)
  assert.is(r.status, 200, `${method}: ${r.text}`)
  assert.is(r.type, 'application/json')
  return r.json
}

/** The error document of a refused call. */
async function refused(p: StartedProxy, method: string, body: unknown, status: number, headers: Record<string, string> = {}) {
  const r = await rpc(p, method, body, headers)
  assert.is(r.status, status, `${method}: ${r.text}`)
  assert.is(r.type, 'application/json')
  return r.json
}

function formatBody(n: number, computer = 'computer') {
  return {
    computer_guid: computer,
    compute_partition_list: Array.from({ length: n }, (_, i) => ({
      partition_id: `slappart${i}`,
      ip_list: [{ 'ip-address': `10.0.0.${i + 2}`, 'network-interface': `tap${i}`, netmask: '255.255.255.0' }],
    })),
  }
}

async function format(p: StartedProxy, n: number, computer = 'computer') {
  assert.equal(await ok(p, 'slapos.put.v0.compute_node_format', formatBody(n, computer)), { type: 'success', title: 'Formatted' })
}

async function request(p: StartedProxy, body: Record<string, unknown>) {
  return ok(p, 'slapos.post.v0.software_instance', { software_release_uri: SR, software_type: 'default', ...body })
}

// --- SLAP side ---

async function slapGet(p: StartedProxy, path: string, query: Record<string, string>) {
  const res = await fetch(`${p.url}${path}?${new URLSearchParams(query).toString()}`)
  return { status: res.status, text: await res.text() }
}

async function slapPost(p: StartedProxy, path: string, form: Record<string, string>) {
  const res = await fetch(`${p.url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() })
  return { status: res.status, text: await res.text() }
}

/** The partitions of getFullComputerInformation, as a SLAP client reads them. */
async function slapPartitions(p: StartedProxy, computer = 'computer'): Promise<PyDict[]> {
  const r = await slapGet(p, 'getFullComputerInformation', { computer_id: computer })
  assert.is(r.status, 200, r.text)
  const c = (loads(r.text) as SlapObject).state
  return (c._computer_partition_list as SlapObject[]).map((x) => x.state)
}

function rows(p: StartedProxy, sql: string): Record<string, unknown>[] {
  const db = new DatabaseSync(p.dbPath, { readOnly: true })
  try {
    // plain objects (node:sqlite gives null-prototype rows)
    return db.prepare(sql).all().map((r) => ({ ...r }))
  } finally {
    db.close()
  }
}

t('compute_node_format, software_installation and the lists; a SLAP node sees the partitions and the software', async ({ p }) => {
  await format(p, 2)
  assert.equal(await ok(p, 'slapos.post.v0.software_installation', { software_release_uri: SR, computer_guid: 'computer' }), {
    type: 'success',
    title: `Supplied ${SR} to be available`,
  })
  assert.equal(await ok(p, 'slapos.post.v0.software_installation', { software_release_uri: 'http://sr.example/b', computer_guid: 'computer', state: 'destroyed' }), {
    type: 'success',
    title: 'Supplied http://sr.example/b to be destroyed',
  })
  assert.equal(await ok(p, 'slapos.allDocs.v0.compute_node_software_installation_list', { computer_guid: 'computer' }), {
    result_list: [
      { software_release_uri: SR, state: 'available' },
      { software_release_uri: 'http://sr.example/b', state: 'destroyed' },
    ],
  })
  assert.equal(await ok(p, 'slapos.allDocs.WIP.compute_node_list'), { result_list: [{ computer_guid: 'computer' }] })

  const r = await slapGet(p, 'getFullComputerInformation', { computer_id: 'computer' })
  const computer = (loads(r.text) as SlapObject).state
  assert.equal(
    (computer._software_release_list as SlapObject[]).map((s) => [s.state._software_release, s.state._requested_state]),
    [
      [SR, 'available'],
      ['http://sr.example/b', 'destroyed'],
    ],
  )
  assert.equal(
    (computer._computer_partition_list as SlapObject[]).map((x) => x.state._partition_id),
    ['slappart0', 'slappart1'],
  )
  assert.equal(rows(p, 'SELECT reference, partition_reference, address, netmask FROM partition_network17 ORDER BY rowid'), [
    { reference: 'tap0', partition_reference: 'slappart0', address: '10.0.0.2', netmask: '255.255.255.0' },
    { reference: 'tap1', partition_reference: 'slappart1', address: '10.0.0.3', netmask: '255.255.255.0' },
  ])

  // the node reports the software destroyed: the row goes
  assert.equal(
    await ok(p, 'slapos.put.v0.software_installation_reported_state', { software_release_uri: 'http://sr.example/b', computer_guid: 'computer', reported_state: 'destroyed' }),
    { type: 'success', title: 'Destroyed' },
  )
  assert.equal(
    await ok(p, 'slapos.put.v0.software_installation_reported_state', { software_release_uri: SR, computer_guid: 'computer', reported_state: 'building' }),
    { type: 'success', title: 'Ignored' },
  )
  assert.equal(await ok(p, 'slapos.allDocs.v0.compute_node_software_installation_list', { computer_guid: 'computer' }), {
    result_list: [{ software_release_uri: SR, state: 'available' }],
  })

  // a computer never formatted is refused, even the configured one
  assert.equal(await refused(p, 'slapos.allDocs.v0.compute_node_instance_list', { computer_guid: 'COMP-9' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'COMP-9 is not registered.',
  })
})

t('compute_node_format: partitions kept, dropped and added; a missing interface is the partition id', async ({ p }) => {
  await format(p, 2)
  await request(p, { title: 'one' })
  await request(p, { title: 'two' })
  await ok(p, 'slapos.put.v0.compute_node_format', {
    computer_guid: 'computer',
    compute_partition_list: [{ partition_id: 'slappart1', ip_list: [{ 'ip-address': '10.0.1.3' }] }, { partition_id: 'slappart7' }],
  })
  assert.is((await rpc(p, 'slapos.get.v0.software_instance', { instance_guid: 'one______0' })).status, 403)
  const two = await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'two______0' })
  assert.equal(two.ip_list, [['slappart1', '10.0.1.3']])
  assert.equal(
    (await slapPartitions(p)).map((x) => x._partition_id),
    ['slappart1', 'slappart7'],
  )
})

t('post software_instance allocates like SLAP; get, compute_partition and the list give the same document; SLAP sees it', async ({ p }) => {
  await format(p, 2)
  const before = Math.floor(Date.now() / 1000)
  const doc = await request(p, { title: 'MyInstance', software_type: 'foobar', parameters: { bar: 'foo', n: 1, on: true } })
  const after = Math.ceil(Date.now() / 1000)
  assert.ok(Number.isInteger(doc.processing_timestamp) && doc.processing_timestamp >= before && doc.processing_timestamp <= after, String(doc.processing_timestamp))
  const expected = {
    title: 'MyInstance',
    instance_guid: 'MyInstance______0',
    software_release_uri: SR,
    software_type: 'foobar',
    state: 'started',
    connection_parameters: {},
    // through the instance XML, as for a SLAP request: values become text
    parameters: { bar: 'foo', n: '1', on: 'True' },
    shared: false,
    root_instance_title: 'MyInstance',
    ip_list: [['tap0', '10.0.0.2']],
    full_ip_list: [],
    sla_parameters: {},
    computer_guid: 'computer',
    compute_partition_id: 'slappart0',
    processing_timestamp: doc.processing_timestamp,
    access_status_message: '',
  }
  assert.equal(doc, expected)
  // the same keys in the same order as the original
  assert.equal(Object.keys(doc), Object.keys(expected))
  assert.equal(await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'MyInstance______0' }), expected)
  assert.equal(await ok(p, 'slapos.get.v0.compute_partition', { computer_guid: 'computer', compute_partition_id: 'slappart0' }), expected)
  assert.equal(await ok(p, 'slapos.allDocs.v0.compute_node_instance_list', { computer_guid: 'computer' }), {
    result_list: [{ title: 'MyInstance', instance_guid: 'MyInstance______0', state: 'started', compute_partition_id: 'slappart0', software_release_uri: SR }],
  })

  // requesting again is the same instance, now stopped
  const again = await request(p, { title: 'MyInstance', software_type: 'foobar', state: 'stopped', parameters: { bar: 'foo', n: 1, on: true } })
  assert.is(again.compute_partition_id, 'slappart0')
  assert.is(again.state, 'stopped')

  // a SLAP node sees the instance on its partition
  const [part0, part1] = await slapPartitions(p)
  assert.is(part0?._requested_state, 'stopped')
  assert.is(part0?._need_modification, 1)
  const params = part0?._parameter_dict as PyDict
  assert.is(params.instance_title, 'MyInstance')
  assert.is(params.root_instance_title, 'MyInstance')
  assert.is(params.slap_software_type, 'foobar')
  assert.is(params.slap_software_release_url, SR)
  assert.is(params.bar, 'foo')
  assert.is(params.n, '1')
  assert.is(part1?._requested_state, 'destroyed')

  // and a SLAP client requesting the same title as a person gets this very instance
  const slap = await slapPost(p, 'requestComputerPartition', requestForm({ title: 'MyInstance', sr: SR, type: 'foobar', params: { bar: 'foo', n: 1, on: true }, state: 'stopped' }))
  assert.is(slap.status, 200, slap.text)
  assert.is((loads(slap.text) as SlapObject).state.slap_computer_partition_id, 'slappart0')
})

t('an instance requested over SLAP by a partition is seen in JSON as a member of its tree', async ({ p }) => {
  await format(p, 2)
  await request(p, { title: 'root' })
  const child = await slapPost(p, 'requestComputerPartition', requestForm({ title: 'child', sr: SR, params: { a: 'b' }, from: ['computer', 'slappart0'] }))
  assert.is(child.status, 200, child.text)
  const doc = await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'child___root___0' })
  assert.is(doc.compute_partition_id, 'slappart1')
  assert.is(doc.root_instance_title, 'root')
  assert.equal(doc.parameters, { a: 'b' })
  assert.equal(
    (await ok(p, 'slapos.allDocs.v0.compute_node_instance_list', { computer_guid: 'computer' })).result_list.map((x: { instance_guid: string }) => x.instance_guid),
    ['root______0', 'child___root___0'],
  )
  // only roots are trees
  assert.equal(await ok(p, 'slapos.allDocs.v0.instance_tree_list'), { result_list: [{ title: 'root' }] })
})

t('shared instance: requested on its host, listed by the host, get gives its own parameters', async ({ p }) => {
  await format(p, 2)
  await request(p, { title: 'host', software_type: 'foobar' })
  const before = rows(p, "SELECT timestamp FROM partition17 WHERE reference = 'slappart0'")[0]?.timestamp
  const shared = await request(p, { title: 'MyShared', software_type: 'foobar', shared: true, parameters: { bar2: 'foo2', list: [1, 2] } })
  assert.equal(shared, {
    title: 'MyShared',
    instance_guid: 'MyShared______1',
    software_release_uri: SR,
    software_type: 'foobar',
    state: 'started',
    connection_parameters: {},
    parameters: { bar2: 'foo2', list: '[1, 2]' },
    shared: true,
    root_instance_title: 'MyShared',
    ip_list: [['tap0', '10.0.0.2']],
    full_ip_list: [],
    sla_parameters: {},
    computer_guid: 'computer',
    compute_partition_id: 'slappart0',
    processing_timestamp: 0,
    access_status_message: '',
  })
  // the host is processed again
  const after = rows(p, "SELECT timestamp FROM partition17 WHERE reference = 'slappart0'")[0]?.timestamp
  assert.ok((after as number) > (before as number))

  const got = await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'MyShared______1' })
  assert.equal(got.parameters, { bar2: 'foo2', list: [1, 2] })
  assert.is(got.shared, true)
  assert.equal(got.ip_list, [])
  assert.is(got.compute_partition_id, 'slappart0')
  assert.equal(await ok(p, 'slapos.allDocs.v0.instance_node_instance_list', { instance_guid: 'host______0' }), {
    result_list: [
      { title: 'MyShared', instance_guid: 'MyShared______1', software_type: 'foobar', state: 'started', parameters: { bar2: 'foo2', list: [1, 2] }, compute_partition_id: 'slappart0' },
    ],
  })
  // the SLAP node of the host sees the shared instance in its slave_instance_list
  const params = (await slapPartitions(p))[0]?._parameter_dict as PyDict
  assert.equal(params.slave_instance_list, [
    { slave_title: '_MyShared', slap_software_type: 'foobar', slave_reference: '_MyShared', bar2: 'foo2', list: [1, 2] },
  ])

  // the trees: the host and the shared instance
  assert.equal(await ok(p, 'slapos.allDocs.v0.instance_tree_list'), { result_list: [{ title: 'host' }, { title: 'MyShared' }] })
  assert.equal(await ok(p, 'slapos.get.v0.instance_tree', { title: 'MyShared' }), got)
  assert.equal(await ok(p, 'slapos.get.v0.instance_tree', { title: 'host' }), await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'host______0' }))
  assert.equal(await refused(p, 'slapos.get.v0.instance_tree', { title: 'FOO' }, 403), { status: 403, type: 'Forbidden', title: 'No instance tree FOO found.' })

  // no host for another software release
  assert.equal(
    await refused(p, 'slapos.post.v0.software_instance', { title: 'S2', software_release_uri: 'http://other', software_type: 'foobar', shared: true }, 403),
    { status: 403, type: 'Forbidden', title: "No partition corresponding to slave request: ['http://other', 'computer', 'foobar']" },
  )

  // destroyed: it leaves its host's list and is no tree any more
  await request(p, { title: 'MyShared', software_type: 'foobar', shared: true, state: 'destroyed' })
  assert.equal(await ok(p, 'slapos.allDocs.v0.instance_tree_list'), { result_list: [{ title: 'host' }] })
  assert.equal(await refused(p, 'slapos.get.v0.software_instance', { instance_guid: 'MyShared______1' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'No shared instance MyShared______1 found.',
  })
})

t('shared frontend request: the bypass answer of the original', async ({ p }) => {
  const url = 'https://[::1]:123/my/path?my=query&string=value#myanchor'
  const doc = await ok(p, 'slapos.post.v0.software_instance', {
    title: 'MyCDNInstance',
    software_release_uri: APACHE_FRONTEND,
    software_type: 'default',
    parameters: { url },
    shared: true,
  })
  assert.equal(doc, {
    title: 'MyCDNInstance',
    instance_guid: 'MyCDNInstance______1',
    software_release_uri: APACHE_FRONTEND,
    software_type: 'default',
    state: 'started',
    connection_parameters: { secure_access: url, domain: '[::1]:123' },
    parameters: { url },
    shared: true,
    root_instance_title: 'MyCDNInstance',
    ip_list: [],
    full_ip_list: [],
    sla_parameters: {},
    computer_guid: '',
    compute_partition_id: `Fake frontend for ${url}`,
    processing_timestamp: 0,
    access_status_message: '',
  })
})

t('publish connection parameters: JSON and SLAP see each other', async ({ p }) => {
  await format(p, 1)
  await request(p, { title: 'inst' })
  await request(p, { title: 'sh', shared: true })
  assert.equal(
    await ok(p, 'slapos.put.v0.software_instance_connection_parameter', { instance_guid: 'inst______0', connection_parameter_dict: { url: 'http://x', port: 8080 } }),
    { type: 'success', title: 'Updated' },
  )
  assert.equal((await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'inst______0' })).connection_parameters, { port: '8080', url: 'http://x' })
  assert.equal((await slapPartitions(p))[0]?._connection_dict, { port: '8080', url: 'http://x' })
  assert.equal((await request(p, { title: 'inst' })).connection_parameters, { port: '8080', url: 'http://x' })

  await ok(p, 'slapos.put.v0.software_instance_connection_parameter', { instance_guid: 'sh______1', connection_parameter_dict: { secret: 's' } })
  assert.equal((await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'sh______1' })).connection_parameters, { secret: 's' })
  assert.equal((await request(p, { title: 'sh', shared: true })).connection_parameters, { secret: 's' })

  // the node publishes over SLAP: JSON reads it
  const set = await slapPost(p, 'setComputerPartitionConnectionXml', { computer_id: 'computer', computer_partition_id: 'slappart0', connection_xml: dumps({ url: 'http://y' }) })
  assert.is(set.status, 200, set.text)
  assert.equal((await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'inst______0' })).connection_parameters, { url: 'http://y' })

  // a value XML cannot hold is refused, nothing written
  assert.equal((await refused(p, 'slapos.put.v0.software_instance_connection_parameter', { instance_guid: 'inst______0', connection_parameter_dict: { bad: 'a\u0001b' } }, 400)).status, 400)
  assert.equal((await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'inst______0' })).connection_parameters, { url: 'http://y' })
})

t('rename: the new guid works, the old one does not, the tree follows; shared is not renamed', async ({ p }) => {
  await format(p, 2)
  await request(p, { title: 'root' })
  await slapPost(p, 'requestComputerPartition', requestForm({ title: 'child', sr: SR, from: ['computer', 'slappart0'] }))
  await request(p, { title: 'sh', shared: true })
  assert.equal(await ok(p, 'slapos.put.v0.software_instance_title', { instance_guid: 'root______0', title: 'renamed' }), { type: 'success', title: 'Renamed' })
  assert.is((await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'renamed______0' })).compute_partition_id, 'slappart0')
  assert.equal(await refused(p, 'slapos.get.v0.software_instance', { instance_guid: 'root______0' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'No software instance root______0 found.',
  })
  const child = await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'child___renamed___0' })
  assert.is(child.root_instance_title, 'renamed')
  const params = (await slapPartitions(p))[1]?._parameter_dict as PyDict
  assert.is(params.root_instance_title, 'renamed')
  assert.equal(await refused(p, 'slapos.put.v0.software_instance_title', { instance_guid: 'sh______1', title: 'x' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'NotImplemented',
  })
})

t('bang: the whole tree gets a new timestamp; shared refused; unknown instance accepted', async ({ p }) => {
  await format(p, 3)
  await request(p, { title: 'root' })
  await slapPost(p, 'requestComputerPartition', requestForm({ title: 'child', sr: SR, from: ['computer', 'slappart0'] }))
  await request(p, { title: 'other' })
  const stamps = async () => (await slapPartitions(p)).map((x) => (x._parameter_dict as PyDict).timestamp)
  const [root0, child0, other0] = await stamps()
  assert.equal(await ok(p, 'slapos.put.v0.software_instance_bang', { instance_guid: 'child___root___0', message: 'Please reprocess' }), {
    type: 'success',
    title: 'Bang handled',
  })
  const [root1, child1, other1] = await stamps()
  assert.is.not(root1, root0)
  assert.is.not(child1, child0)
  assert.is(root1, child1)
  assert.is(other1, other0)
  assert.equal(await refused(p, 'slapos.put.v0.software_instance_bang', { instance_guid: 'x______1', message: 'm' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'NotImplemented',
  })
  assert.is((await rpc(p, 'slapos.put.v0.software_instance_bang', { instance_guid: 'nobody______0', message: 'm' })).status, 200)
  assert.equal(await stamps(), [root1, child1, other1])
})

t('reported states: started/stopped ignored, destroyed frees the partition; a root with members first destroys them', async ({ p }) => {
  await format(p, 2)
  await request(p, { title: 'root' })
  await slapPost(p, 'requestComputerPartition', requestForm({ title: 'child', sr: SR, from: ['computer', 'slappart0'] }))
  for (const state of ['started', 'stopped']) {
    assert.equal(await ok(p, 'slapos.put.v0.software_instance_reported_state', { instance_guid: 'anything', reported_state: state }), { type: 'success', title: 'Ignored' })
  }
  // the root still has a member: refused, and the member is now asked to be destroyed
  assert.equal(await refused(p, 'slapos.put.v0.software_instance_reported_state', { instance_guid: 'root______0', reported_state: 'destroyed' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'Not destroying yet because this partition has child partitions: child',
  })
  assert.is((await ok(p, 'slapos.get.v0.software_instance', { instance_guid: 'child___root___0' })).state, 'destroyed')
  assert.is((await slapPartitions(p))[1]?._requested_state, 'destroyed')

  assert.equal(await ok(p, 'slapos.put.v0.software_instance_reported_state', { instance_guid: 'child___root___0', reported_state: 'destroyed' }), {
    type: 'success',
    title: 'Destroyed',
  })
  assert.equal(await ok(p, 'slapos.put.v0.software_instance_reported_state', { instance_guid: 'root______0', reported_state: 'destroyed' }), {
    type: 'success',
    title: 'Destroyed',
  })
  // both partitions are free: SLAP sees no instance, JSON finds none, a new request gets slappart0
  for (const part of await slapPartitions(p)) {
    assert.is(part._software_release_document, null)
    assert.is(part._requested_state, 'destroyed')
  }
  assert.equal(await ok(p, 'slapos.allDocs.v0.compute_node_instance_list', { computer_guid: 'computer' }), { result_list: [] })
  assert.equal(await refused(p, 'slapos.get.v0.compute_partition', { computer_guid: 'computer', compute_partition_id: 'slappart0' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'No instance on partition slappart0 found.',
  })
  assert.equal(await refused(p, 'slapos.put.v0.software_instance_reported_state', { instance_guid: 'root______0', reported_state: 'destroyed' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'No software instance root______0 found.',
  })
  assert.is((await request(p, { title: 'again' })).compute_partition_id, 'slappart0')
  // a shared instance's report is ignored
  assert.equal(await ok(p, 'slapos.put.v0.software_instance_reported_state', { instance_guid: 'sh______1', reported_state: 'destroyed' }), { type: 'success', title: 'Ignored' })
})

t('input validation: 400 with the jsonschema message, nothing written', async ({ p }) => {
  await format(p, 1)
  const bad = (body: unknown) => refused(p, 'slapos.post.v0.software_instance', body, 400)
  assert.equal(await bad({ title: 'x', software_type: 'a' }), { status: 400, type: 'Bad Request', title: "'software_release_uri' is a required property" })
  assert.equal(await bad({ title: 'x', software_type: 'a', software_release_uri: SR, color: 'red', age: 1 }), {
    status: 400,
    type: 'Bad Request',
    title: "Additional properties are not allowed ('age', 'color' were unexpected)",
  })
  assert.is((await bad({ title: 'x', software_type: 'a', software_release_uri: 5 })).title, "5 is not of type 'string'")
  assert.is((await bad({ title: 'x', software_type: 'a', software_release_uri: SR, state: 'gone' })).title, "'gone' is not one of ['started', 'stopped', 'destroyed']")
  assert.is((await bad({ title: 'x', software_type: 'a', software_release_uri: SR, shared: 'yes' })).title, "'yes' is not of type 'boolean'")
  assert.is((await bad({ title: 'x', software_type: 'a', software_release_uri: SR, sla_parameters: { computer_guid: 1 } })).title, "1 is not of type 'string'")
  assert.is((await bad({ title: 'x'.repeat(201), software_type: 'a', software_release_uri: SR })).title, `'${'x'.repeat(201)}' is too long`)
  assert.is((await bad([1])).title, "[1] is not of type 'object'")
  assert.match((await bad('{"title": ')).title, /^Failed to decode JSON object: /)
  assert.equal(await refused(p, 'slapos.get.v0.hateoas_url', { x: 1 }, 400), { status: 400, type: 'Bad Request', title: "Additional properties are not allowed ('x' was unexpected)" })
  assert.is(
    (await refused(p, 'slapos.put.v0.compute_node_format', { computer_guid: 'c2', compute_partition_list: [{ partition_id: 'p0' }, { ip_list: [] }] }, 400)).title,
    "'partition_id' is a required property",
  )
  // nothing of the refused calls was written
  assert.equal(rows(p, "SELECT reference FROM computer17 WHERE reference = 'c2'"), [])
  assert.equal(rows(p, 'SELECT partition_reference FROM partition17 WHERE partition_reference IS NOT NULL'), [])
})

t('errors: 403 no partition and bad guid, 404 unknown method, 405 not POST, 406 refused JSON, 415 not JSON, 500 shape', async ({ p }) => {
  assert.equal(await refused(p, 'slapos.post.v0.software_instance', { title: 'foo', software_release_uri: 'bar', software_type: 'foobar' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'No free computer partition found for: foo',
  })
  assert.equal(await refused(p, 'slapos.get.v0.software_instance', { instance_guid: 'foo' }, 403), { status: 403, type: 'Forbidden', title: 'instance_guid foo not handled.' })
  assert.equal(await refused(p, 'slapos.get.v0.software_instance', { instance_guid: 'a___b___x' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'instance_guid a___b___x not handled.',
  })
  assert.equal(await refused(p, 'slapos.allDocs.v0.instance_node_instance_list', { instance_guid: 'MyFirstInstance______0' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'No software instance MyFirstInstance______0 found.',
  })
  assert.equal(await refused(p, 'slapos.get.v0.compute_partition', { computer_guid: 'foo', compute_partition_id: 'bar' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'No instance on partition bar found.',
  })

  const unknown = await refused(p, 'slapos.get.v0.nothing', {}, 404)
  assert.is(unknown.type, 'Not Found')

  const get = await rpc(p, 'slapos.get.v0.hateoas_url', undefined, {}, 'GET')
  assert.is(get.status, 405)
  assert.is(get.allow, 'POST')
  assert.is(get.type, 'application/json')
  assert.equal(get.json, { status: 405, type: 'Method Not Allowed', title: 'The method is not allowed for the requested URL.' })

  // a client that refuses JSON gets 406, and nothing is done
  await format(p, 1)
  const html = await refused(p, 'slapos.post.v0.software_instance', { title: 'i', software_release_uri: SR, software_type: 'a' }, 406, { Accept: 'text/html' })
  assert.equal(Object.keys(html), ['status', 'type', 'title'])
  assert.is(html.type, 'Not Acceptable')
  assert.equal(await ok(p, 'slapos.allDocs.v0.compute_node_instance_list', { computer_guid: 'computer' }), { result_list: [] })
  for (const accept of ['application/json', 'application/*', '*/*', 'text/html, application/json;q=0.5', '']) {
    assert.is((await rpc(p, 'slapos.get.v0.hateoas_url', {}, { Accept: accept })).status, 200, accept)
  }
  assert.is((await rpc(p, 'slapos.get.v0.hateoas_url', {}, { Accept: 'application/json;q=0' })).status, 406)

  const form = await rpc(p, 'slapos.get.v0.hateoas_url', 'a=b', { 'Content-Type': 'application/x-www-form-urlencoded' })
  assert.is(form.status, 415)
  assert.is(form.json.type, 'Unsupported Media Type')

  // an instance row the API cannot describe (a busy partition without title) is a 500 in the documented shape
  const db = new DatabaseSync(p.dbPath)
  db.exec("UPDATE partition17 SET slap_state = 'busy', software_release = 'x', requested_state = 'started' WHERE reference = 'slappart0'")
  db.close()
  assert.equal(await refused(p, 'slapos.get.v0.compute_partition', { computer_guid: 'computer', compute_partition_id: 'slappart0' }, 403), {
    status: 403,
    type: 'Forbidden',
    title: 'No instance on partition slappart0 found.',
  })
  assert.equal(await refused(p, 'slapos.allDocs.v0.compute_node_instance_list', { computer_guid: 'computer' }, 500), {
    status: 500,
    type: 'Internal Server Error',
    title: "None is not of type 'string'",
  })
})

t('the constant answers: certificates, status, ignored reports, hateoas URL behind an HTTPS front', async ({ p }) => {
  assert.equal(await ok(p, 'slapos.post.v0.compute_node_certificate', { computer_guid: 'foo' }), { key: '', certificate: '' })
  assert.equal(await ok(p, 'slapos.get.v0.software_instance_certificate', { instance_guid: 'foo' }), { key: '', certificate: '' })
  assert.equal(await ok(p, 'slapos.get.v0.compute_node_status', { computer_guid: 'computer' }), { text: 'Unknown (not implemented)' })
  const ignoredCalls: [string, Record<string, string>][] = [
    ['slapos.remove.v0.compute_node_certificate', { computer_guid: 'foo' }],
    ['slapos.post.v0.compute_node_usage', { computer_guid: 'foo', tioxml: '' }],
    ['slapos.put.v0.compute_node_bang', { computer_guid: 'computer', message: 'm' }],
    ['slapos.put.v0.software_instance_error', { instance_guid: 'foo', message: 'it does not work' }],
    ['slapos.put.v0.software_installation_error', { software_release_uri: SR, computer_guid: 'computer', message: 'it does not work' }],
  ]
  for (const [method, body] of ignoredCalls) assert.equal(await ok(p, method, body), { type: 'success', title: 'Ignored' }, method)
  const host = new URL(p.url).host
  assert.equal(await ok(p, 'slapos.get.v0.hateoas_url'), { hateoas_url: `http://${host}/hateoas/` })
  const behind = await rpc(p, 'slapos.get.v0.hateoas_url', {}, { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Prefix': '/proxy' })
  assert.equal(behind.json, { hateoas_url: `https://${host}/proxy/hateoas/` })
  // the answer is Python's json.dumps text
  assert.is((await rpc(p, 'slapos.post.v0.compute_node_certificate', { computer_guid: 'foo' })).text, '{"key": "", "certificate": ""}')
})

t.run()

// --- multimaster: a JSON request for another master's software release is forwarded ---

const AUTO_SR = 'http://sr.example/auto/software.cfg'

interface Fwd {
  remote: StartedProxy
  local: StartedProxy
}
const fwd = suite<Fwd>('proxy JSON-RPC API, multimaster')
fwd.before.each(async (c) => {
  c.remote = await startProxy({ computerId: 'remote-computer' })
  await format(c.remote, 2, 'remote-computer')
  c.local = await startProxy({ extraCfg: `[multimaster/${c.remote.url}]\nsoftware_release_list = ${AUTO_SR}\n` })
  await format(c.local, 1)
})
fwd.after.each(async (c) => {
  await c.local?.stop()
  await c.remote?.stop()
})

fwd('forwarded as a person (user_<title>): the remote master allocates it, nothing here', async ({ local, remote }) => {
  const doc = await request(local, { title: 'inst', software_release_uri: AUTO_SR, parameters: { color: 'blue', n: 3 } })
  assert.equal(doc, {
    title: 'inst',
    instance_guid: 'inst______0',
    software_release_uri: AUTO_SR,
    software_type: 'default',
    state: 'started',
    connection_parameters: {},
    parameters: { color: 'blue', n: 3 },
    shared: false,
    root_instance_title: 'inst',
    ip_list: [],
    full_ip_list: [],
    sla_parameters: {},
    computer_guid: 'remote-computer',
    compute_partition_id: 'slappart0',
    processing_timestamp: 0,
    access_status_message: '',
  })
  assert.equal(await ok(local, 'slapos.allDocs.v0.compute_node_instance_list', { computer_guid: 'computer' }), { result_list: [] })
  const there = await ok(remote, 'slapos.get.v0.software_instance', { instance_guid: 'user_inst______0' })
  assert.equal(there.parameters, { color: 'blue', n: '3' })
  assert.equal(rows(local, 'SELECT partition_reference, master_url FROM forwarded_partition_request17'), [{ partition_reference: 'user_inst', master_url: remote.url }])
})

fwd('a master_url that is not configured: 500, nothing written', async ({ local }) => {
  const r = await refused(local, 'slapos.post.v0.software_instance', { title: 'x', software_release_uri: 'http://sr', software_type: 'a', sla_parameters: { master_url: 'http://127.0.0.1:9/' } }, 500)
  assert.equal(r, { status: 500, type: 'Internal Server Error', title: 'Internal server error' })
  assert.equal(rows(local, 'SELECT partition_reference FROM partition17 WHERE partition_reference IS NOT NULL'), [])
})

fwd.run()
