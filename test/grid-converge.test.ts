// End to end test of `slapos node instance --converge` against real components: our proxy
// (through the recording tap of node-helpers.ts), real supervisord, real buildout and the two
// offline test releases of test/fixtures/software-release: the tree release (tree.cfg), whose
// instance requests two instances of the sample release (software.cfg) and publishes their
// URLs once they have published them. One node with 3 partitions: the parent and its two
// children. Each test starts from the built releases with nothing requested (a snapshot).
import { chmodSync, lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { answerChanges, answerOf, nextAfterAnswer, partitionsToReprocess, stopAfterPass, stopOnQueryError, type PartitionAnswer } from '../src/grid-converge.ts'
import { ConnectionError, ServerError } from '../src/errors.ts'
import type { PartitionSummary } from '../src/grid-instance.ts'
import { md5hex } from '../src/md5.ts'
import type { ComputerPartition } from '../src/slap-client.ts'
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

t('the master answers 503 when asked again between passes: stop with the offline status 3, the why said, the --json report printed', async () => {
  const { node } = S
  assert.is(requestParent().code, 0)
  // the first list (pass 1) is the master's; the second (between passes) a 503
  let lists = 0
  node.failCalls((c) => (c.name === 'getFullComputerInformation' && ++lists === 2 ? 503 : undefined))
  const run = await converge(['--json'])
  node.failCalls()
  assert.is(run.code, 3, run.stderr)
  const lines = passLines(run.stderr)
  assert.is(lines.length, 1, run.stderr)
  assert.match(lines[0] ?? '', /converge pass 1: processed 1 partition \(slappart0\); stopping: the master cannot be reached to see whether the tree has settled \(.*503.*\); the next run goes on \(exit 3\)$/)
  const doc = JSON.parse(run.stdout) as { exitCode: number; settled: boolean; passes: Array<{ exitCode: number; processed: string[]; next: string }> }
  assert.equal([doc.exitCode, doc.settled, doc.passes.length, doc.passes[0]?.exitCode, doc.passes[0]?.processed], [3, false, 1, 0, ['slappart0']])
  assert.not.match(run.stderr, /\n\s+at /, 'no stack trace')
})

t('hostile transaction files (a link to a root file, a huge file, too many lines) are neither followed nor read whole: nothing is sent, the run goes on', async () => {
  const { node } = S
  // a root-only file the link points to: its text must reach no one
  const secret = join(node.dir, 'secret-of-root')
  writeFileSync(secret, 'root-secret-title\n', { mode: 0o600 })
  // three releases made by hand beside the installed sample (whose recipe eggs they use): each
  // instance's promise plants its transaction file after the buildout, before the node reads it
  const sample = readFileSync(join(node.softwareRoot, md5hex(node.srUrl), 'instance.cfg'), 'utf8')
  const eggs = (key: string) => new RegExp(`^${key} = (.*)$`, 'm').exec(sample)?.[1] ?? ''
  const plants: Record<string, string> = {
    link: `ln -sfn ${secret} $\${:file}`,
    huge: `truncate -s 200M $\${:file}`,
    lines: `sh -c 'seq 1 10000 > $\${:file}'`,
  }
  const ids: Record<string, string> = {}
  for (const [kind, plant] of Object.entries(plants)) {
    const url = join(node.dir, 'sr', `hostile-${kind}.cfg`)
    const dir = join(node.softwareRoot, md5hex(url))
    mkdirSync(dir)
    chmodSync(dir, 0o755)
    writeFileSync(
      join(dir, 'instance.cfg'),
      [
        '[buildout]',
        'parts = plant',
        `eggs-directory = ${eggs('eggs-directory')}`,
        `develop-eggs-directory = ${eggs('develop-eggs-directory')}`,
        'offline = true',
        'newest = false',
        '',
        '[plant]',
        'recipe = slaptestrecipe:wrapper',
        'file = $${buildout:directory}/.slapos-request-transaction-$${slap-connection:partition-id}',
        'wrapper-path = $${buildout:directory}/etc/promise/plant',
        `command-line = ${plant}`,
        '',
      ].join('\n').replaceAll('$$', '$'),
    )
    writeFileSync(join(dir, '.completed'), 'Thu Jan  1 00:00:00 2026')
    await node.supply(url)
    const r = slapos(['request', `hostile-${kind}`, url, '--cfg', S.clientCfg, '--json'])
    assert.is(r.code, 0, r.stderr)
    ids[kind] = (JSON.parse(r.stdout) as Record<string, string>)['partition-id']!
  }
  node.clearCalls()
  const run = await converge(['--json'])
  assert.is(run.code, 0, run.stderr)
  const doc = JSON.parse(run.stdout) as { passes: Array<{ items: Array<{ id: string; result: string }> }> }
  assert.equal(doc.passes[0]?.items.map((i) => i.result), ['deployed', 'deployed', 'deployed'])
  const file = (kind: string) => join(node.instanceRoot, ids[kind]!, `.slapos-request-transaction-${ids[kind]}`)
  assert.match(run.stderr, new RegExp(`${esc(file('link'))} is not a regular file \\(a symbolic link\\): the instances it requested are not told to the master`))
  assert.match(run.stderr, new RegExp(`${esc(file('huge'))} is larger than 65536 bytes: the instances it requested are not told to the master`))
  assert.match(run.stderr, new RegExp(`${esc(file('lines'))} names more than 4096 instances: the instances it requested are not told to the master`))
  // the promises did plant them; the link still points where it did, the secret stayed secret
  assert.is(readlinkSync(file('link')), secret)
  assert.is(lstatSync(file('huge')).size, 200 * 1024 * 1024)
  assert.equal(node.calls().filter((c) => c.name === 'updateComputerPartitionRelatedInstanceList'), [])
  assert.not.ok(node.calls().some((c) => JSON.stringify(c.fields).includes('root-secret')), 'the root file was not read')
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

pure('failing promises: the loop goes on while the answer changes, then ends with 2 once it has settled', () => {
  const item = (id: string, result: PartitionSummary['result']): PartitionSummary => ({ id, state: 'started', softwareType: undefined, result, durationMs: 0 })
  // a failed partition stops at once (exit 1); a promise failure does not
  assert.equal(stopAfterPass(1, { items: [item('slappart0', 'failed'), item('slappart1', 'promise-failed')] })?.code, 1)
  assert.is(stopAfterPass(2, { items: [item('slappart0', 'promise-failed'), item('slappart1', 'deployed')] }), undefined)
  const changes = [{ id: 'slappart1', what: ['timestamp' as const] }]
  assert.is(nextAfterAnswer({ pass: 1, maxPasses: 10, changes, readers: new Map(), promiseFailed: ['slappart0'] }).kind, 'pass')
  assert.equal(nextAfterAnswer({ pass: 2, maxPasses: 10, changes: [], readers: new Map(), promiseFailed: ['slappart0'] }), {
    kind: 'stop',
    code: 2,
    settled: true,
    why: 'settled, but promises of slappart0 failed (exit 2)',
  })
  // not settled at the limit: 1, whatever the promises
  const last = nextAfterAnswer({ pass: 2, maxPasses: 2, changes, readers: new Map(), promiseFailed: ['slappart0'] })
  assert.equal(last.kind === 'stop' ? last.code : undefined, 1)
})

pure('the master cannot be asked again: no answer or 503 is the offline status 3, another error 1', () => {
  assert.equal(stopOnQueryError(new ConnectionError('connect ECONNREFUSED')).code, 3)
  assert.equal(stopOnQueryError(new ServerError('Service Unavailable', 503)).code, 3)
  const other = stopOnQueryError(new ServerError('Internal Server Error\x1b[2J', 500))
  assert.equal([other.code, other.settled], [1, false])
  assert.match(other.why, /\(Internal Server Error\\x1b\[2J\)/, 'the text of the master is escaped')
})

pure('answerOf reads the master through the node\'s one reading (masterView): equal data in another key order answers the same', () => {
  const p = (params: Record<string, unknown>, connection: Record<string, unknown>): ComputerPartition =>
    ({ className: 'ComputerPartition', _computer_id: 'c', _partition_id: 'slappart0', _request_dict: null, _requested_state: 'started', _software_release_document: '/sr/software.cfg', _parameter_dict: params, _connection_dict: connection, raw: {} }) as unknown as ComputerPartition
  const a = answerOf([p({ instance_title: 'parent', timestamp: 12, slave_instance_list: [{ a: 1, b: 2 }] }, { x: '1', y: '2' })]).get('slappart0')
  const b = answerOf([p({ slave_instance_list: [{ b: 2, a: 1 }], timestamp: 12, instance_title: 'parent' }, { y: '2', x: '1' })]).get('slappart0')
  assert.equal(a, b)
  assert.equal([a?.title, a?.timestamp, a?.softwareReleaseUrl, a?.state], ['parent', '12', '/sr/software.cfg', 'started'])
})

pure.run()

// --- helpers ---

function requestParent(extra: string[] = []) {
  return slapos(['request', 'parent', S.treeUrl, '--cfg', S.clientCfg, ...extra])
}

function converge(extra: string[]) {
  return S.node.run(['node', 'instance', '--now', '--converge', ...extra], { timeoutMs: 300_000 })
}

/** `s` as a regular expression matching itself. */
function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
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
