// `slapos node promise` (grid.md §7.6, checklist 89 and 94): the built binary against our
// proxy through the recording tap, on partitions with real promise executables.
import { existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { makeNode, type TestNode } from './node-helpers.ts'

const NOBODY = 65534

function chownTree(p: string): void {
  const st = lstatSync(p)
  if (st.isDirectory()) for (const n of readdirSync(p)) chownTree(join(p, n))
  lchownSync(p, NOBODY, NOBODY)
}

async function instance(node: TestNode, ref: string, state: 'started' | 'stopped', promises: Record<string, string>): Promise<string> {
  const inst = await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: ref, state })
  const id = inst.slap_computer_partition_id ?? ''
  const path = join(node.instanceRoot, id)
  mkdirSync(join(path, 'etc', 'promise'), { recursive: true })
  for (const [name, body] of Object.entries(promises)) writeFileSync(join(path, 'etc', 'promise', name), `#!/bin/sh\n${body}\n`, { mode: 0o755 })
  chownTree(path)
  return id
}

const promise = suite('node promise (built binary, real proxy)')

promise('runs the promises of started partitions only, sends nothing, exit 2 on a failure, 0 with --only-cp on a good one', async () => {
  const node = await makeNode({ partitions: 3 })
  try {
    await node.supply()
    const good = await instance(node, 'good', 'started', { 'is-up': 'echo "service answers"' })
    const bad = await instance(node, 'bad', 'started', { 'a-ok': 'exit 0', 'b-port': 'echo "port 8080 closed" >&2; exit 1' })
    const stopped = await instance(node, 'sleeping', 'stopped', { never: `touch ${node.dir}/stopped-promise-ran; exit 1` })
    node.clearCalls()
    const r = await node.run(['node', 'promise', '--now'])
    assert.is(r.code, 2, r.stderr)
    assert.equal(node.calls().map((c) => c.name), ['getFullComputerInformation'], 'nothing is sent to the master')
    assert.match(r.stderr, `Promise 'b-port' failed with output: port 8080 closed`)
    assert.match(r.stderr, new RegExp(`${bad}: Promise 'b-port' failed`))
    assert.not.ok(existsSync(join(node.dir, 'stopped-promise-ran')), `the promises of stopped ${stopped} never run`)
    const result = JSON.parse(readFileSync(join(node.instanceRoot, bad, '.slapgrid', 'promise', 'result', 'b-port.status.json'), 'utf8')) as { result: { failed: boolean } }
    assert.is(result.result.failed, true)
    const ok = JSON.parse(readFileSync(join(node.instanceRoot, good, '.slapgrid', 'promise', 'result', 'is-up.status.json'), 'utf8')) as { result: { failed: boolean; message: string } }
    assert.equal([ok.result.failed, ok.result.message], [false, 'service answers'])

    const only = await node.run(['node', 'promise', '--now', '--only-cp', good])
    assert.is(only.code, 0, only.stderr)
    const unknown = await node.run(['node', 'promise', '--now', '--only-cp', `${good},nope`])
    assert.is(unknown.code, 1)
    assert.match(unknown.stderr, 'Unknown partition: nope')
  } finally {
    await node.stop()
  }
})

promise('master unreachable: exit 1, no promise run; a running node instance holds the pid file: exit 10', async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    await instance(node, 'one', 'started', { mark: `touch ${node.dir}/promise-ran` })
    const down = await node.run(['node', 'promise', '--now', '--master-url', 'http://127.0.0.1:1/'])
    assert.is(down.code, 1)
    assert.match(down.stderr, '127.0.0.1:1')
    assert.not.ok(existsSync(join(node.dir, 'promise-ran')))
    // the proxy is a live slapos process: as holder of the instance pid file it blocks a check
    writeFileSync(node.pidfiles.instance, String(node.proxy.pid))
    const locked = await node.run(['node', 'promise', '--now'])
    assert.is(locked.code, 10, locked.stderr)
    assert.not.ok(existsSync(join(node.dir, 'promise-ran')))
  } finally {
    await node.stop()
  }
})

promise.run()
