// Promise plugins through `slapos node instance`, end to end (node-extras.md §4): our proxy
// (through the recording tap), real supervisord, real buildout and the offline test Software
// Release, whose partition gets plugin files shaped like real ones. They import the test-only
// stand-in of slapos.core's promise framework (test/fixtures/promise-framework): periodicity,
// timeouts and the bang are that launcher's; what is tested here is the node around it: test
// mode after a deployment, anomaly mode on an up-to-date partition, what the master hears, the
// bang making the master bump the timestamp and the next run processing the partition again.
// Each test starts from the deployed node (a snapshot restored before it).
import { existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { fixtureForAll } from './helpers.ts'
import { makeNode, type NodeSnapshot, type TestNode } from './node-helpers.ts'

const t = suite('promise plugins through node instance (real proxy, supervisord, buildout)')

let node: TestNode
let deployed: NodeSnapshot
let framework: string
let id: string
let path: string

t.before(async () => {
  node = await makeNode({ partitions: 1 })
  framework = fixtureForAll('promise-framework')
  await node.supply()
  const sw = await node.run(['node', 'software', '--now'], { timeoutMs: 180_000 })
  assert.is(sw.code, 0, sw.stderr)
  const inst = await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'plugged', state: 'started' })
  id = inst.slap_computer_partition_id ?? ''
  path = join(node.instanceRoot, id)
  const r = await instance()
  assert.is(r.code, 0, r.stderr)
  deployed = await node.snapshot()
})

t.before.each(async () => {
  await node.restore(deployed)
})

t.after(async () => {
  await node?.stop()
})

function instance(extra: string[] = []) {
  return node.run(['node', 'instance', '--now', ...extra], { timeoutMs: 180_000 })
}

/** A plugin as slapos.cookbook writes them: the import path first, then a RunPromise class. */
function plugin(name: string, body: string[]): void {
  const dir = join(path, 'etc', 'plugin')
  mkdirSync(dir, { recursive: true })
  const text = ['import sys', 'sys.path[0:0] = [', `  '${framework}',`, '  ]', 'import os, time', 'from slapos.grid.promise.generic import GenericPromise, TestResult', '', 'class RunPromise(GenericPromise):', ...body.map((l) => `  ${l}`), '']
  writeFileSync(join(dir, name), text.join('\n'))
}

/** The master calls about our partition since the last clearCalls(). */
function told(): string[] {
  return node.calls().filter((c) => c.fields.computer_partition_id === id).map((c) => c.name)
}

function result(title: string): { result: { type: string; failed: boolean; message: string } } {
  return JSON.parse(readFileSync(join(path, '.slapgrid', 'promise', 'result', `${title}.status.json`), 'utf8'))
}

/** A run counter kept by a plugin in the partition. */
function runs(name: string): number {
  const f = join(path, `${name}.runs`)
  return existsSync(f) ? readFileSync(f, 'utf8').length : 0
}

async function bumpTimestamp(n: string): Promise<void> {
  await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'plugged', state: 'started', partitionParameterKw: { n } })
}

t('a changed partition: its plugins run in test mode; a failing one and one past the promise timeout fail it (exit 2, the first failure told, no started); fixed, started', async () => {
  plugin('check-a-ok.py', ["def sense(self):", "  self.logger.info('service answers')"])
  plugin('check-b-fail.py', ["def sense(self):", "  self.logger.error('queue is stuck')"])
  plugin('check-c-slow.py', ["def sense(self):", "  time.sleep(30)"])
  const before = readFileSync(join(path, '.timestamp'), 'utf8')
  await bumpTimestamp('1')
  node.clearCalls()
  const r = await instance(['--promise-timeout', '2'])
  assert.is(r.code, 2, r.stderr)
  assert.match(r.stderr, /Running buildout/)
  assert.ok(told().includes('softwareInstanceError') && !told().includes('startedComputerPartition'), told().join(' '))
  const error = node.calls().find((c) => c.name === 'softwareInstanceError')
  assert.is(error?.fields.error_log, "Promise 'check-b-fail.py' failed with output: queue is stuck")
  assert.not.ok(existsSync(join(path, '.timestamp')), 'no .timestamp: the next run processes the partition again')
  assert.equal([result('check-a-ok').result.failed, result('check-b-fail').result.failed], [false, true])
  assert.equal(result('check-c-slow').result, { ...result('check-c-slow').result, failed: true, message: 'Error: Promise timed out after 2 seconds' })
  // the release's own legacy promise ran through the same launcher
  assert.is(result('http-port-listening').result.failed, false)

  rmSync(join(path, 'etc', 'plugin', 'check-b-fail.py'))
  rmSync(join(path, 'etc', 'plugin', 'check-c-slow.py'))
  node.clearCalls()
  const fixed = await instance(['--promise-timeout', '2'])
  assert.is(fixed.code, 0, fixed.stderr)
  assert.ok(told().includes('startedComputerPartition'), told().join(' '))
  assert.is.not(readFileSync(join(path, '.timestamp'), 'utf8'), before)
})

t('an up-to-date partition: anomaly mode; a periodic plugin runs when due only (its saved failure counts); a bang (one per run) makes the master bump the timestamp and the next run deploys again', async () => {
  // counts its runs; fails while `periodic-broken` exists; runs at most once an hour unless
  // forced; never bangs
  plugin('check-periodic.py', [
    'def __init__(self, config):',
    '  super(RunPromise, self).__init__(config)',
    '  self.setPeriodicity(60)',
    '  self.allowBang(False)',
    'def sense(self):',
    "  open('check-periodic.runs', 'a').write('x')",
    "  if os.path.exists('periodic-broken'): self.logger.error('backup is late')",
    "  else: self.logger.info('backup done')",
  ])
  // healthy for the tests after a deployment, an anomaly while `banging` exists
  for (const n of ['check-bang1.py', 'check-bang2.py'])
    plugin(n, [
      'def sense(self):',
      "  self.logger.info('checked')",
      'def anomaly(self):',
      "  return TestResult(os.path.exists('banging'), 'replication lags', 'Anomaly Result')",
    ])
  const idle = async () => {
    node.clearCalls()
    const r = await instance()
    assert.is(r.code, 0, r.stderr)
    return r
  }
  // first anomaly run: everything due, everything passes, nothing new to tell
  let r = await idle()
  assert.not.match(r.stderr, /Running buildout/)
  assert.equal(told(), [])
  assert.is(runs('check-periodic'), 1)
  assert.is(result('check-bang1').result.type, 'Anomaly Result')

  // the periodic plugin breaks, but is not due: not run, its saved success counts
  writeFileSync(join(path, 'periodic-broken'), '')
  r = await idle()
  assert.is(runs('check-periodic'), 1)
  assert.equal(told(), [])
  // due again (its cache gone, as an hour later): it fails, the master hears it once
  rmSync(join(path, '.slapgrid', 'promise', 'cache', 'check-periodic'))
  r = await idle()
  assert.is(runs('check-periodic'), 2)
  assert.equal(told(), ['getComputerPartitionCertificate', 'softwareInstanceError'])
  assert.is(node.calls().find((c) => c.name === 'softwareInstanceError')?.fields.error_log, "Promise 'check-periodic.py' failed with output: backup is late")
  // not due, not run: its saved failure still fails the check (nothing new to tell)
  r = await idle()
  assert.is(runs('check-periodic'), 2)
  assert.match(r.stderr, /backup is late/)
  assert.equal(told(), [])
  rmSync(join(path, 'periodic-broken'))
  rmSync(join(path, '.slapgrid', 'promise', 'cache'), { recursive: true })

  // two plugins see an anomaly: one bang for the run, an unchanged .timestamp, no deployment
  writeFileSync(join(path, 'banging'), '')
  const stamp = readFileSync(join(path, '.timestamp'), 'utf8')
  r = await idle()
  assert.not.match(r.stderr, /Running buildout/)
  assert.is(node.calls().filter((c) => c.name === 'softwareInstanceBang').length, 1, told().join(' '))
  const bang = node.calls().find((c) => c.name === 'softwareInstanceBang')
  assert.is(bang?.fields.message, 'Promise check-bang1 is failing')
  assert.is(readFileSync(join(path, '.timestamp'), 'utf8'), stamp, 'an anomaly never touches .timestamp')
  // the master bumped the timestamp: the next run deploys the partition again, in test mode
  rmSync(join(path, 'banging'))
  const periodic = runs('check-periodic')
  r = await idle()
  assert.match(r.stderr, /Running buildout/)
  assert.is(runs('check-periodic'), periodic + 1, 'test mode runs every plugin, due or not')
  assert.ok(told().includes('startedComputerPartition'), told().join(' '))
  assert.is.not(readFileSync(join(path, '.timestamp'), 'utf8'), stamp)
})

t('a plugin past the promise timeout in anomaly mode fails only at the second timeout in a row', async () => {
  plugin('check-slow.py', ["def sense(self):", "  time.sleep(30) if os.path.exists('slow') else self.logger.info('fast')"])
  const idle = async () => {
    rmSync(join(path, '.slapgrid', 'promise', 'cache'), { recursive: true, force: true })
    node.clearCalls()
    const r = await instance(['--promise-timeout', '2'])
    assert.is(r.code, 0, r.stderr)
    return told()
  }
  assert.equal(await idle(), [])
  writeFileSync(join(path, 'slow'), '')
  assert.equal(await idle(), [], 'a first timeout is not an anomaly')
  assert.is(result('check-slow').result.message, 'Error: Promise timed out after 2 seconds')
  assert.equal(await idle(), ['getComputerPartitionCertificate', 'softwareInstanceError'], 'the second one is')
})

t.run()
