// End to end test of `slapos node instance --converge` against real components: our proxy
// (through the recording tap of node-helpers.ts), real supervisord, real buildout and the two
// offline test releases of test/fixtures/software-release: the tree release (tree.cfg), whose
// instance requests two instances of the sample release (software.cfg) and publishes their
// URLs once they have published them. One node with 3 partitions: the parent and its two
// children. Each test starts from the built releases with nothing requested (a snapshot).
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { answerChanges, nextAfterAnswer, partitionsToReprocess, type PartitionAnswer } from '../src/grid-converge.ts'
import { slapos } from './helpers.ts'
import { httpBody, makeNode, type NodeSnapshot, type TestNode } from './node-helpers.ts'

const t = suite('node instance --converge, end to end (a parent requesting two children)')

interface State {
  node: TestNode
  clientCfg: string
  treeUrl: string
  /** both releases built, nothing requested */
  built: NodeSnapshot
}
let S: State

t.before(async () => {
  const node = await makeNode({ partitions: 3 })
  const clientCfg = join(node.dir, 'client.cfg')
  writeFileSync(clientCfg, `[slapos]\nmaster_url = ${node.proxy.url}\n`)
  const treeUrl = join(node.dir, 'sr', 'tree.cfg')
  S = { node, clientCfg, treeUrl } as State
  await node.supply()
  await node.supply(treeUrl)
  const sw = await node.run(['node', 'software', '--now'])
  assert.is(sw.code, 0, sw.stderr)
  S.built = await node.snapshot()
})

t.before.each(async () => {
  await S.node.restore(S.built)
})

t.after(async () => {
  await S?.node.stop()
})

t('from `slapos request` to the published URLs of both children in one call: 3 passes, then 1 with nothing to do', async () => {
  const { node } = S
  const r = requestParent()
  assert.is(r.code, 0, r.stderr)
  const run = await converge([])
  assert.is(run.code, 0, run.stderr)
  // pass 1: the parent requests its children; pass 2: they are deployed and publish; pass 3:
  // the parent, up to date for the master, is processed again and reads their URLs
  assert.equal(passLines(run.stderr).length, 3, run.stderr)
  assert.match(passLines(run.stderr)[0] ?? '', /^.*converge pass 1: processed 1 partition \(slappart0\); the master changed slappart1 .*slappart2 .*: pass 2$/)
  assert.match(passLines(run.stderr)[1] ?? '', /converge pass 2: processed 2 partitions \(slappart1, slappart2\); slappart0 reads what child-1, child-2 published: pass 3$/)
  assert.match(passLines(run.stderr)[2] ?? '', /converge pass 3: processed 1 partition \(slappart0\); settled: nothing the master changed asks for another pass$/)

  const published = connection(requestParent(['--json']))
  const urls = [published['child-1-url'], published['child-2-url']]
  for (const [i, url] of urls.entries()) {
    assert.match(url ?? '', /^http:\/\/127\.0\.1\.\d+:8080\/$/)
    assert.match(await httpBody(url ?? ''), `Hello from child-${i + 1} of parent`)
  }
  assert.is.not(urls[0], urls[1])
  // the master was told who requested whom (the transaction of the parent's last processing)
  const related = node.calls().filter((c) => c.name === 'updateComputerPartitionRelatedInstanceList' && c.fields.computer_partition_id === 'slappart0')
  assert.ok(related.length >= 1)

  // a second call finds nothing to do: one pass, and one JSON document on stdout
  const again = await converge(['--json'])
  assert.is(again.code, 0, again.stderr)
  assert.equal(passLines(again.stderr).map(afterLevel), ['converge pass 1: nothing to do: settled'])
  const doc = JSON.parse(again.stdout) as { exitCode: number; settled: boolean; passes: Array<{ pass: number; processed: string[]; items: Array<{ id: string; result: string }> }> }
  assert.is(doc.exitCode, 0)
  assert.is(doc.settled, true)
  assert.is(doc.passes.length, 1)
  assert.equal(doc.passes[0]?.processed, [])
  assert.equal(doc.passes[0]?.items.map((i) => i.result), ['up-to-date', 'up-to-date', 'up-to-date'])
})

t('--max-passes 1 stops after the first pass and says the tree has not settled (exit 1)', async () => {
  assert.is(requestParent().code, 0)
  const run = await converge(['--max-passes', '1'])
  assert.is(run.code, 1, run.stderr)
  const lines = passLines(run.stderr)
  assert.is(lines.length, 1, run.stderr)
  assert.match(lines[0] ?? '', /converge pass 1: processed 1 partition \(slappart0\); stopping: --max-passes 1 reached and the tree has not settled \(the master changed slappart1 /)
  assert.match(lines[0] ?? '', /never settles is a problem of its software release or of its requests/)
  // the children were requested, not deployed: the parent published empty URLs (which the
  // master stores as parameters without a value: None)
  assert.equal(connection(requestParent(['--json'])), { 'child-1-url': null, 'child-2-url': null })
})

t('a failing child stops the loop at its pass with exit 1', async () => {
  // child 2 of a release this node does not have: its partition fails
  const missing = join(S.node.dir, 'sr', 'missing.cfg')
  assert.is(requestParent(['--parameters', `child-2-release=${missing}`]).code, 0)
  const run = await converge([])
  assert.is(run.code, 1, run.stderr)
  const lines = passLines(run.stderr)
  assert.is(lines.length, 2, run.stderr)
  assert.match(lines[1] ?? '', /converge pass 2: processed 2 partitions \(slappart1, slappart2\); stopping: slappart2 failed \(exit 1\)$/)
  assert.match(run.stderr, /Software Release .*missing\.cfg is not present on system/)
})

t('usage errors: --converge with --only-cp, --force-stop or --dry-run, --max-passes without --converge or below 1 (exit 2)', async () => {
  for (const args of [
    ['--converge', '--only-cp', 'slappart0'],
    ['--converge', '--force-stop'],
    ['--converge', '--dry-run'],
    ['--max-passes', '3'],
    ['--converge', '--max-passes', '0'],
    ['--converge', '--max-passes', 'x'],
  ]) {
    const r = await S.node.run(['node', 'instance', '--now', ...args])
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.not.match(r.stderr, /converge pass/)
    assert.not.match(r.stderr, /\n\s+at /, 'no stack trace')
  }
})

t.run()

// the decisions between passes, on answers written here (no node)
const pure = suite('node instance --converge: what makes another pass')
const answer = (over: Partial<PartitionAnswer> = {}): PartitionAnswer => ({
  state: 'started',
  softwareReleaseUrl: '/sr/software.cfg',
  softwareType: 'default',
  timestamp: '1.5',
  title: 'x',
  connection: '<marshal><dictionary id="i2"/></marshal>',
  shared: '<marshal><list id="i2"/></marshal>',
  ...over,
})

pure('an answer that did not change, or changed only connection parameters nobody here reads, settles', () => {
  const before = new Map([['slappart0', answer({ title: 'parent' })]])
  assert.equal(answerChanges(before, new Map(before)), [])
  const after = new Map([['slappart0', answer({ title: 'parent', connection: 'other' })]])
  const changes = answerChanges(before, after)
  assert.equal(changes, [{ id: 'slappart0', what: ['connection parameters'] }])
  const readers = partitionsToReprocess(changes, after, new Map([['slappart0', new Set(['parent'])]]))
  assert.is(readers.size, 0, 'a partition does not read what it published itself')
  assert.equal(nextAfterAnswer({ pass: 3, maxPasses: 10, changes, readers }), { kind: 'stop', code: 0, settled: true, why: 'settled: nothing the master changed asks for another pass' })
})

pure('new connection parameters of a requested instance make its requester processed again; the planner\'s inputs make another pass', () => {
  const before = new Map([
    ['slappart0', answer({ title: 'parent' })],
    ['slappart1', answer({ title: 'child-1' })],
    ['slappart2', answer({ state: 'destroyed', softwareReleaseUrl: null, softwareType: undefined, timestamp: undefined, title: undefined })],
  ])
  const after = new Map([
    ['slappart0', answer({ title: 'parent' })],
    ['slappart1', answer({ title: 'child-1', connection: 'published' })],
    ['slappart2', answer({ title: 'child-2', timestamp: '2.5' })],
    ['slappart3', answer({ title: 'other' })],
  ])
  const changes = answerChanges(before, after)
  assert.equal(changes, [
    { id: 'slappart1', what: ['connection parameters'] },
    { id: 'slappart2', what: ['state', 'software release', 'software type', 'timestamp'] },
    { id: 'slappart3', what: ['listed'] },
  ])
  const requested = new Map([
    ['slappart0', new Set(['child-1', 'child-2'])],
    ['gone', new Set(['child-1'])],
  ])
  const readers = partitionsToReprocess(changes, after, requested)
  assert.equal([...readers], [['slappart0', ['child-1']]])
  const next = nextAfterAnswer({ pass: 2, maxPasses: 10, changes, readers })
  assert.is(next.kind, 'pass')
  if (next.kind === 'pass') assert.equal([...next.reprocess], ['slappart0'])
  assert.match(next.why, /^the master changed slappart2 \(state, software release, software type, timestamp\), slappart3 \(listed\); slappart0 reads what child-1 published: pass 3$/)
  // the same at the limit: exit 1, not settled
  const last = nextAfterAnswer({ pass: 2, maxPasses: 2, changes, readers })
  assert.is(last.kind, 'stop')
  if (last.kind === 'stop') assert.equal([last.code, last.settled], [1, false])
})

pure.run()

// --- helpers ---

function requestParent(extra: string[] = []) {
  return slapos(['request', 'parent', S.treeUrl, '--cfg', S.clientCfg, ...extra])
}

function converge(extra: string[]) {
  return S.node.run(['node', 'instance', '--now', '--converge', ...extra], { timeoutMs: 300_000 })
}

/** The log lines of the passes, in order. */
function passLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.includes('converge pass '))
}

/** A log line from its message on (without time and level). */
function afterLevel(line: string): string {
  return line.slice(line.indexOf('converge pass '))
}

/** The connection parameters the master gives for the parent (`slapos request --json`). */
function connection(r: { code: number | null; stdout: string; stderr: string }): Record<string, string | null> {
  assert.is(r.code, 0, r.stderr)
  return (JSON.parse(r.stdout) as { 'connection-parameters': Record<string, string | null> })['connection-parameters']
}
