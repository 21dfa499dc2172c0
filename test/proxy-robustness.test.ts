// The built proxy under bad input, concurrent clients and a kill -9 in the middle of writes.
import { request as httpRequest } from 'node:http'
import { DatabaseSync } from 'node:sqlite'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { dumps, loads, SlapObject, type PyDict, type PyValue } from '../src/slap-protocol.ts'
import { startProxy, type StartedProxy } from './helpers.ts'

const SR = 'http://sr.example/robust/software.cfg'

async function post(p: StartedProxy, path: string, form: Record<string, string>): Promise<{ status: number; text: string }> {
  const res = await fetch(p.url + path, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() })
  return { status: res.status, text: await res.text() }
}

async function get(p: StartedProxy, path: string, query: Record<string, string>): Promise<{ status: number; text: string }> {
  const res = await fetch(`${p.url}${path}?${new URLSearchParams(query).toString()}`)
  return { status: res.status, text: await res.text() }
}

function computerXml(reference: string, n: number): string {
  const partition_list: PyValue[] = []
  for (let i = 0; i < n; i++) {
    partition_list.push({ reference: `slappart${i}`, tap: { name: `tap${i}` }, address_list: [{ addr: `10.0.${Math.floor(i / 200)}.${(i % 200) + 2}`, netmask: '255.255.255.0' }] })
  }
  return dumps({ reference, address: '10.0.0.1', netmask: '255.255.255.0', partition_list })
}

function requestForm(title: string, params: PyDict = {}, extra: Record<string, string> = {}): Record<string, string> {
  return {
    software_release: SR,
    software_type: 'default',
    partition_reference: title,
    partition_parameter_xml: dumps(params),
    filter_xml: dumps({}),
    state: dumps(null),
    shared_xml: dumps(false),
    ...extra,
  }
}

function tableCounts(dbPath: string): Record<string, number> {
  const db = new DatabaseSync(dbPath, { readOnly: true })
  const out: Record<string, number> = {}
  for (const t of ['computer17', 'software17', 'partition17', 'slave17', 'partition_network17']) {
    out[t] = (db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n
  }
  out.busy = (db.prepare("SELECT count(*) AS n FROM partition17 WHERE slap_state = 'busy'").get() as { n: number }).n
  db.close()
  return out
}

test('bad input gets a clear status, writes nothing, and the server keeps serving', async () => {
  const p = await startProxy()
  try {
    assert.is((await post(p, 'loadComputerConfigurationFromXML', { xml: computerXml('computer', 2) })).status, 200)
    const before = tableCounts(p.dbPath)
    const cases: [string, () => Promise<{ status: number; text: string }>, number][] = [
      ['malformed xml', () => post(p, 'loadComputerConfigurationFromXML', { xml: '<marshal><dictionary id="i2">' }), 400],
      ['not a dict', () => post(p, 'loadComputerConfigurationFromXML', { xml: dumps([1, 2]) }), 400],
      ['forbidden class', () => post(p, 'loadComputerConfigurationFromXML', { xml: '<marshal><object id="i2" module="os" class="system"><tuple/><dictionary id="i3"/></object></marshal>' }), 400],
      ['entity bomb', () => post(p, 'loadComputerConfigurationFromXML', { xml: '<!DOCTYPE x [<!ENTITY a "aaaa">]><marshal><string>&a;</string></marshal>' }), 400],
      ['missing field', () => post(p, 'requestComputerPartition', { software_release: SR }), 400],
      ['missing state', () => post(p, 'requestComputerPartition', { software_release: SR, software_type: 'default', partition_reference: 'x' }), 400],
      ['bad parameter xml', () => post(p, 'requestComputerPartition', requestForm('x', {}, { partition_parameter_xml: '<marshal>' })), 400],
      ['bad state', () => post(p, 'supplySupply', { url: SR, computer_id: 'computer', state: 'exploded' }), 400],
      ['unknown computer', () => get(p, 'getFullComputerInformation', { computer_id: 'NOPE' }), 500],
      ['unknown partition', () => get(p, 'registerComputerPartition', { computer_reference: 'computer', computer_partition_reference: 'slappart99' }), 500],
      ['wrong method GET on POST route', () => get(p, 'requestComputerPartition', {}), 405],
      ['wrong method POST on GET route', () => post(p, 'getFullComputerInformation', { computer_id: 'computer' }), 405],
      ['unknown route', () => get(p, 'noSuchMethod', {}), 404],
      ['oversized body', () => post(p, 'loadComputerConfigurationFromXML', { xml: 'x'.repeat(17 * 1024 * 1024) }), 413],
      ['connection xml not a dict', () => post(p, 'setComputerPartitionConnectionXml', { computer_id: 'computer', computer_partition_id: 'slappart0', connection_xml: dumps('x') }), 400],
    ]
    for (const [name, call, status] of cases) {
      const r = await call()
      assert.is(r.status, status, `${name}: ${r.text.slice(0, 200)}`)
      assert.match(r.text, /<title>\d{3} /, name)
    }
    assert.equal(tableCounts(p.dbPath), before)
    // still serving
    const ok = await get(p, 'getFullComputerInformation', { computer_id: 'computer' })
    assert.is(ok.status, 200)
    assert.ok(loads(ok.text) instanceof SlapObject)
    // the reasons are in the proxy's log, for the operator
    assert.match(p.log(), /computer NOPE is not registered/)
  } finally {
    await p.stop()
  }
})

test('a request that fails halfway (no free partition) writes nothing', async () => {
  const p = await startProxy()
  try {
    await post(p, 'loadComputerConfigurationFromXML', { xml: computerXml('computer', 1) })
    assert.is((await post(p, 'requestComputerPartition', requestForm('a'))).status, 200)
    const before = tableCounts(p.dbPath)
    const r = await post(p, 'requestComputerPartition', requestForm('b'))
    assert.is(r.status, 404)
    assert.match(r.text, /No free computer partition found for: b/)
    assert.equal(tableCounts(p.dbPath), before)
  } finally {
    await p.stop()
  }
})

test('two concurrent requests for the same reference get the same partition', async () => {
  const p = await startProxy()
  try {
    await post(p, 'loadComputerConfigurationFromXML', { xml: computerXml('computer', 10) })
    for (let round = 0; round < 5; round++) {
      const rs = await Promise.all(Array.from({ length: 8 }, () => post(p, 'requestComputerPartition', requestForm(`same-${round}`))))
      const ids = rs.map((r) => {
        assert.is(r.status, 200)
        return ((loads(r.text) as SlapObject).state as PyDict).slap_computer_partition_id
      })
      assert.is(new Set(ids).size, 1, `round ${round}: ${ids.join(',')}`)
    }
    assert.is(tableCounts(p.dbPath).busy, 5)
  } finally {
    await p.stop()
  }
})

test('8 concurrent clients mixing reads and writes: no error, no lost write', async () => {
  const p = await startProxy()
  const seconds = Number(process.env.SLAPOS_LOAD_SECONDS ?? 5)
  try {
    await post(p, 'loadComputerConfigurationFromXML', { xml: computerXml('computer', 16) })
    const end = Date.now() + seconds * 1000
    const errors: string[] = []
    const written = new Map<string, string>()
    let calls = 0
    await Promise.all(
      Array.from({ length: 8 }, async (_, c) => {
        let i = 0
        while (Date.now() < end) {
          i++
          calls++
          const kind = i % 4
          if (kind === 0) {
            const r = await get(p, 'getFullComputerInformation', { computer_id: 'computer' })
            if (r.status !== 200) errors.push(`gfci ${r.status}`)
          } else if (kind === 1) {
            const value = `${c}-${i}`
            const r = await post(p, 'requestComputerPartition', requestForm(`client-${c}`, { value }))
            if (r.status !== 200) errors.push(`request ${r.status} ${r.text.slice(0, 100)}`)
            else written.set(`client-${c}`, value)
          } else if (kind === 2) {
            const r = await post(p, 'supplySupply', { url: `http://sr/${c}/${i}.cfg`, computer_id: 'computer', state: 'available' })
            if (r.status !== 200) errors.push(`supply ${r.status}`)
          } else {
            const r = await post(p, 'softwareInstanceBang', { computer_id: 'computer', computer_partition_id: `slappart${c}`, message: 'x' })
            if (r.status !== 200) errors.push(`bang ${r.status}`)
          }
        }
      }),
    )
    assert.equal(errors, [])
    assert.ok(calls > 100, `${calls} calls`)
    // every acknowledged last value is what the master now serves
    const computer = loads((await get(p, 'getFullComputerInformation', { computer_id: 'computer' })).text) as SlapObject
    const params = new Map<string, unknown>()
    for (const cp of computer.state._computer_partition_list as SlapObject[]) {
      const d = cp.state._parameter_dict as PyDict | undefined
      if (d) params.set(String(d.instance_title), d.value)
    }
    for (const [title, value] of written) assert.is(params.get(title), value, title)
    const supplied = (computer.state._software_release_list as SlapObject[]).length
    assert.ok(supplied >= calls / 4 - 8, `${supplied} software releases`)
  } finally {
    await p.stop()
  }
})

test('kill -9 during a stream of writes: the database is intact and every acknowledged write is there', async () => {
  const p = await startProxy()
  const acked: string[] = []
  let stop = false
  try {
    const writers = Array.from({ length: 4 }, async (_, c) => {
      for (let i = 0; !stop; i++) {
        const url = `http://sr/${c}/${i}.cfg`
        try {
          const r = await post(p, 'supplySupply', { url, computer_id: 'computer', state: 'available' })
          if (r.status === 200) acked.push(url)
        } catch {
          return // the proxy is gone
        }
      }
    })
    await new Promise((r) => setTimeout(r, 700))
    process.kill(p.pid, 'SIGKILL')
    stop = true
    await Promise.all(writers)
  } finally {
    await p.stop()
  }
  assert.ok(acked.length > 20, `${acked.length} acknowledged writes`)
  // restart on the same directory: it opens, and the data is all there
  const again = await startProxy({ dir: p.dir })
  try {
    const db = new DatabaseSync(again.dbPath, { readOnly: true })
    assert.equal((db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[]).map((r) => r.integrity_check), ['ok'])
    const urls = new Set((db.prepare('SELECT url FROM software17').all() as { url: string }[]).map((r) => r.url))
    db.close()
    const lost = acked.filter((u) => !urls.has(u))
    assert.equal(lost, [])
  } finally {
    await again.stop()
  }
})

test('SIGTERM stops the proxy gracefully with exit status 0', async () => {
  const p = await startProxy()
  // a request in flight when the signal arrives (half of its body sent) still gets its answer
  const body = new URLSearchParams({ url: SR, computer_id: 'computer', state: 'available' }).toString()
  const u = new URL(p.url)
  const req = httpRequest({ host: u.hostname, port: u.port, path: '/supplySupply', method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': body.length } })
  const answer = new Promise<number>((resolve, reject) => {
    req.on('response', (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
  })
  req.write(body.slice(0, 10))
  await new Promise((r) => setTimeout(r, 200))
  const stopping = p.stop()
  await new Promise((r) => setTimeout(r, 200))
  req.end(body.slice(10))
  assert.is(await answer, 200)
  await stopping
  assert.match(p.log(), /SIGTERM received, stopping/)
  assert.is(p.exitCode(), 0)
})

test.run()
