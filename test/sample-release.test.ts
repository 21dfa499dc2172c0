// The sample Software Release that the demo, the packages' test and the node tests deploy,
// end to end with the built binary: its page shows the requested greeting (as text), and its
// promise fails the partition while nothing listens on the service's port.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { slaposAsync } from './helpers.ts'
import { makeNode } from './node-helpers.ts'

test('the page shows the requested greeting escaped; the promise fails while the port is closed', async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    const req = await slaposAsync(['request', 'sample', node.srUrl, '--parameters', 'greeting=<b>Hi</b> & welcome', '--cfg', node.cfgPath], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: node.dir } })
    assert.is(req.code, 0, req.stderr)
    const sw = await node.run(['node', 'software', '--now'])
    assert.is(sw.code, 0, sw.stderr)
    const inst = await node.run(['node', 'instance', '--now'])
    assert.is(inst.code, 0, inst.stderr)
    const url = `http://${node.addresses.slappart0}:8080/`
    const page = await (await fetch(url)).text()
    assert.match(page, '<h1>&lt;b&gt;Hi&lt;/b&gt; &amp; welcome</h1>')
    // nothing listens any more: the promise (it waits up to 15 s) fails the check
    const stop = await node.run(['node', 'supervisorctl', 'stop', 'slappart0:*'])
    assert.is(stop.code, 0, stop.stderr)
    const promise = await node.run(['node', 'promise'])
    assert.is(promise.code, 2, promise.stderr)
    assert.match(promise.stderr, `nothing listens on ${node.addresses.slappart0}:8080`)
  } finally {
    await node.stop()
  }
})

test.run()
