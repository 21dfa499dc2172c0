// getFullComputerInformation keeps each partition's encoding between answers and encodes again
// only the partitions a write changed. After every kind of write, the answer of a proxy that
// has been answering all along must be the very bytes a proxy starting afresh on the same
// database gives.
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { createLogger } from '../src/log.ts'
import { ProxyDb } from '../src/proxy-db.ts'
import { startProxyServer, type RunningProxy } from '../src/proxy-server.ts'
import { dumps, loads, type PyValue, type SlapObject } from '../src/slap-protocol.ts'
import { requestForm, tempDir, type RequestForm } from './helpers.ts'

const SR = 'http://sr.example/cache/software.cfg'
const log = createLogger({ level: 'critical', write: () => {} })

interface Ctx {
  db: ProxyDb
  warm: RunningProxy
}
const t = suite<Ctx>('proxy answer cache')
t.before.each(async (c) => {
  c.db = ProxyDb.open({ path: join(tempDir('slapos-proxy-cache-'), 'proxy.db'), computerId: 'computer', log })
  c.warm = await start(c.db)
})
t.after.each(async (c) => {
  await c.warm.close()
})

function start(db: ProxyDb): Promise<RunningProxy> {
  return startProxyServer({ db, computerId: 'computer', log, host: '127.0.0.1', port: 0 })
}

async function call(p: RunningProxy, method: 'GET' | 'POST', path: string, form: Record<string, string>): Promise<string> {
  const q = new URLSearchParams(form).toString()
  const res = await fetch(`${p.url}${path}${method === 'GET' ? `?${q}` : ''}`, {
    method,
    headers: method === 'POST' ? { 'Content-Type': 'application/x-www-form-urlencoded' } : {},
    body: method === 'POST' ? q : undefined,
  })
  const text = await res.text()
  assert.is(res.status, 200, `${path}: ${text.slice(0, 300)}`)
  return text
}

function format(addresses: (i: number) => string[], n = 5): Record<string, string> {
  const partition_list: PyValue[] = Array.from({ length: n }, (_, i) => ({
    reference: `slappart${i}`,
    tap: { name: `tap${i}` },
    address_list: addresses(i).map((addr) => ({ addr, netmask: '255.255.255.0' })),
  }))
  return { xml: dumps({ reference: 'computer', address: '10.0.0.1', netmask: '255.255.255.0', partition_list }) }
}

const request = (r: Omit<RequestForm, 'sr'>) => requestForm({ sr: SR, ...r })

t('every write shows in the next answer, byte for byte as a proxy starting afresh', async ({ db, warm }) => {
  const answer = () => call(warm, 'GET', 'getFullComputerInformation', { computer_id: 'computer' })
  const fresh = async () => {
    const p = await start(db)
    try {
      return await call(p, 'GET', 'getFullComputerInformation', { computer_id: 'computer' })
    } finally {
      // the database stays open for the warm proxy: close the server only
      await new Promise<void>((r) => p.server.close(() => r()))
    }
  }
  const writes: Array<[string, string, Record<string, string>]> = [
    ['supply', 'supplySupply', { url: SR, computer_id: 'computer', state: 'available' }],
    ['request a', 'requestComputerPartition', request({ title: 'a', params: { x: '1' }, state: 'started' })],
    ['request b', 'requestComputerPartition', request({ title: 'b', params: { y: '2', '\u00e9t\u00e9': '<&>' }, state: 'started' })],
    ['request c', 'requestComputerPartition', request({ title: 'c', state: 'started' })],
    ['publish a', 'setComputerPartitionConnectionXml', { computer_id: 'computer', computer_partition_id: 'slappart0', connection_xml: dumps({ url: 'http://[fd00::2]:8080/' }), slave_reference: 'None' }],
    ['shared on a', 'requestComputerPartition', request({ title: 's1', shared: true, params: { k: 'v' }, filter: { instance_guid: 'computer-slappart0' } })],
    ['second shared', 'requestComputerPartition', request({ title: 's2', shared: true })],
    ['new parameters of b', 'requestComputerPartition', request({ title: 'b', params: { y: '3' }, state: 'started' })],
    ['stop c', 'requestComputerPartition', request({ title: 'c', state: 'stopped' })],
    ['bang', 'softwareInstanceBang', { computer_id: 'computer', computer_partition_id: 'slappart1', message: 'down' }],
    ['rename c', 'softwareInstanceRename', { computer_id: 'computer', computer_partition_id: 'slappart2', new_name: 'c2' }],
    ['new addresses', 'loadComputerConfigurationFromXML', format((i) => (i === 1 ? ['10.0.0.99', 'fd00::99'] : [`10.0.0.${i + 2}`]))],
    ['destroy c2', 'requestComputerPartition', request({ title: 'c2', state: 'destroyed' })],
    ['destroyed', 'destroyedComputerPartition', { computer_id: 'computer', computer_partition_id: 'slappart2' }],
  ]
  await call(warm, 'POST', 'loadComputerConfigurationFromXML', format((i) => [`10.0.0.${i + 2}`]))
  let previous = await answer()
  assert.is(previous, await fresh())
  for (const [label, path, form] of writes) {
    await call(warm, 'POST', path, form)
    const now = await answer()
    assert.is.not(now, previous, `${label}: the answer did not change`)
    assert.is(now, await fresh(), `${label}: the kept answer differs from a fresh one`)
    previous = now
  }
  // the document is well formed and the last state is in it
  const parts = (loads(previous) as SlapObject).state._computer_partition_list as SlapObject[]
  assert.is(parts.length, 5)
  assert.is(parts[1]!.state._requested_state, 'started')
  assert.is(parts[2]!.state._requested_state, 'destroyed')
})

t.run()
