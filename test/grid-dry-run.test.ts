// End to end test of `slapos node instance --dry-run` and `slapos node software --dry-run`
// (`-n`) against real components: our proxy behind the recording tap of node-helpers.ts, real
// supervisord, real buildout and the offline test Software Release. The node goes through the
// states of a life (fresh, deployed and idle, one changed parameter, a stopped and a destroyed
// partition, started again, a software release to remove); in each, the dry run is made first
// and must change nothing (files of the instance root, the software root, the certificates
// and the pid files, supervisord's processes) and ask the master nothing but the partition
// list; then the real run is made and what it did (buildouts in its log, status calls through
// the tap, supervisord groups) must be exactly what the plan said. The stages follow one
// another on one node: each starts from the state the previous one left.
import { spawnSync } from 'node:child_process'
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { createLogger } from '../src/log.ts'
import {
  decidePartition,
  deploymentRecord,
  deploymentRecordText,
  parseDeploymentRecord,
  planPartition,
  planSoftwareRelease,
  type LocalPartitionState,
  type PlanOptions,
  type WantedPartition,
} from '../src/grid-plan.ts'
import { md5hex } from '../src/md5.ts'
import { Tuple, type PyDict } from '../src/slap-protocol.ts'
import { Supervisor, supervisorPaths } from '../src/supervisor.ts'
import { SLAPOS, skip } from './helpers.ts'
import { baseEnv, freePorts, makeNode, type MasterCall, type TestNode } from './node-helpers.ts'

const t = suite('node instance|software --dry-run: the plan, then the real run does exactly that')
// node software builds as the owner of the software root, node instance as the partitions' owners
const ROOT = process.getuid?.() === 0
const quiet = createLogger({ level: 'critical', write: () => undefined })

interface Step {
  id: string
  state: string
  action: string
  reason: string
  detail: string
  url?: string
  problem?: string
}
interface Plan {
  dryRun: true
  supervisord?: string
  offline?: string
  items: Step[]
}

let node: TestNode
let clientCfg: string
/** instance title -> partition id */
const where: Record<string, string> = {}

t.before(async () => {
  node = await makeNode({ partitions: 4 })
  clientCfg = join(node.dir, 'client.cfg')
  writeFileSync(clientCfg, `[slapos]\nmaster_url = ${node.proxy.url}\n`)
})

t.after(async () => {
  await node?.stop()
})

t('fresh node: node software plans `install new`, the run installs it; then `nothing installed`, and the run does nothing', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  await node.supply()
  const hash = md5hex(node.srUrl)
  const plan = await dryRun('software', [])
  assert.equal(brief(plan), [[hash, 'install', 'new']])
  assert.is(plan.items[0]?.url, node.srUrl)
  assert.not.ok(existsSync(join(node.instanceRoot, 'etc')), 'a dry run does not make the instance root structure')

  const run = await realRun('software', [])
  assert.equal(run.json.items.map((i) => [i.id, i.result]), [[hash, 'installed']])
  assert.equal(run.names, ['getFullComputerInformation', 'buildingSoftwareRelease', 'availableSoftwareRelease'])
  assert.ok(existsSync(join(node.softwareRoot, hash, '.completed')))

  const again = await dryRun('software', [])
  assert.equal(brief(again), [[hash, 'nothing', 'installed']])
  const idle = await realRun('software', [])
  assert.equal(idle.json.items.map((i) => i.result), ['up-to-date'])
  assert.equal(idle.names, ['getFullComputerInformation'])
})

t('fresh instances: three `deploy new` and a free partition; supervisord not running is said, not started; the run deploys those three', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  for (const i of [0, 1, 2]) {
    const r = request(`inst${i}`, ['--parameters', `n=${i}`, '--json'])
    assert.is(r.code, 0, r.stderr)
    where[`inst${i}`] = JSON.parse(r.stdout)['partition-id']
  }
  const plan = await dryRun('instance', [])
  assert.is(plan.supervisord, 'not running: a real run starts it')
  assert.not.ok(existsSync(supervisorPaths(node.instanceRoot).pidfile), 'the dry run did not start supervisord')
  const free = Object.keys(node.addresses).find((id) => !Object.values(where).includes(id))!
  assert.equal(brief(plan), [
    [where.inst0, 'deploy', 'new'],
    [where.inst1, 'deploy', 'new'],
    [where.inst2, 'deploy', 'new'],
    [free, 'nothing', 'free'],
  ].sort(byId))
  await checkRealRunDoes(plan)
})

t('idle node: `nothing up-to-date` everywhere, also while a real run holds the pid file (-n, text output); the run does nothing', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  // a live slapos process (the proxy) holds the instance pid file: a real run would exit 10
  writeFileSync(node.pidfiles.instance, String(node.proxy.pid))
  try {
    const locked = await node.run(['node', 'instance', '--now'])
    assert.is(locked.code, 10, locked.stderr)
    const text = await dryRunText('instance', ['-n'])
    const lines = text.trimEnd().split('\n')
    assert.is(lines[0], 'supervisord: running')
    for (const id of Object.values(where)) assert.match(text, new RegExp(`^${id}\\s+nothing\\s+up-to-date\\s+timestamp unchanged; periodicity 86400 s, \\d+ s left; promises checked in anomaly mode$`, 'm'))
    assert.is(lines.at(-1), '4 partitions: 4 nothing (dry run: nothing was changed)')
  } finally {
    rmPidfile()
  }
  const plan = await dryRun('instance', [])
  assert.is(plan.supervisord, 'running')
  assert.ok(plan.items.every((s) => s.action === 'nothing'))
  await checkRealRunDoes(plan)
})

t('master unreachable: the dry run says a real run would go offline (exit 3), writes nothing, leaves supervisord alone', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  // the node's configuration with a master nobody listens to
  const [port] = await freePorts(1)
  const offlineCfg = join(node.dir, 'offline.cfg')
  writeFileSync(offlineCfg, readFileSync(node.cfgPath, 'utf8').replace(/^master_url = .*$/m, `master_url = http://127.0.0.1:${port}/`))
  try {
    for (const json of [false, true]) {
      const before = await nodeState()
      const r = await node.run(['node', 'instance', '--dry-run', ...(json ? ['--json'] : []), '--cfg', offlineCfg], { noCfg: true })
      assert.is(r.code, 3, r.stderr)
      const said = json ? ((JSON.parse(r.stdout) as Plan).offline ?? '') : r.stdout
      assert.match(said, /^the master cannot be reached \(.*\): a real run would start every supervised process \(offline mode, exit 3\)/)
      if (json) assert.equal((JSON.parse(r.stdout) as Plan).items, [])
      else assert.match(r.stdout, /^supervisord: running$/m)
      const after = await nodeState()
      assert.equal(after.supervisord, before.supervisord, 'supervisord untouched')
      assert.equal(changedPaths(before.files, after.files), [], 'no file written, removed or touched')
    }
  } finally {
    rmSync(offlineCfg, { force: true })
  }
})

t('--force --only-cp: the one partition named is `deploy forced`, the others `skip`; the run redeploys it alone', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  const args = ['--force', '--only-cp', where.inst1!]
  const plan = await dryRun('instance', args)
  const free = plan.items.find((s) => !Object.values(where).includes(s.id))
  assert.equal(brief(plan), [
    [where.inst0, 'skip', 'not-selected'],
    [where.inst1, 'deploy', 'forced'],
    [where.inst2, 'skip', 'not-selected'],
    [free?.id, 'nothing', 'free'],
  ].sort(byId))
  await checkRealRunDoes(plan, args)
})

t('a .timestamp older than the periodicity: `deploy periodicity-elapsed` for that partition; the run redeploys it alone', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  const stamp = join(node.instanceRoot, where.inst0!, '.timestamp')
  const twoDaysAgo = Date.now() / 1000 - 2 * 86400
  utimesSync(stamp, twoDaysAgo, twoDaysAgo)
  const plan = await dryRun('instance', [])
  const mine = plan.items.find((s) => s.id === where.inst0)
  assert.equal([mine?.action, mine?.reason], ['deploy', 'periodicity-elapsed'])
  assert.match(mine?.detail ?? '', /^last processed 17\d{4} s ago, periodicity 86400 s$/)
  assert.ok(plan.items.filter((s) => s.id !== where.inst0).every((s) => s.action === 'nothing'))
  await checkRealRunDoes(plan)
  assert.ok(lstatSync(stamp).mtimeMs > twoDaysAgo * 1000 + 86400_000, 'the run wrote .timestamp again')
})

t('a free partition holding .slapgrid and .timestamp: `clean` (would be removed); the run removes them and nothing else', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  const free = Object.keys(node.addresses).find((id) => !Object.values(where).includes(id))!
  const path = join(node.instanceRoot, free)
  mkdirSync(join(path, '.slapgrid', 'log'), { recursive: true })
  writeFileSync(join(path, '.timestamp'), '1')
  writeFileSync(join(path, '.slapos-resource'), '{}')
  const plan = await dryRun('instance', [])
  const mine = plan.items.find((s) => s.id === free)
  assert.equal([mine?.action, mine?.reason, mine?.detail], ['clean', 'free', 'free partition: .slapgrid and .timestamp would be removed'])
  await checkRealRunDoes(plan)
  assert.equal(readdirSync(path), ['.slapos-resource'], 'the leftovers are gone, .slapos-resource stays')
  const again = await dryRun('instance', [])
  assert.equal([again.items.find((s) => s.id === free)?.action], ['nothing'])
  rmSync(join(path, '.slapos-resource'))
})

t('one changed parameter: `deploy parameters-changed` for that partition only; the run redeploys it alone', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  assert.is(request('inst1', ['--parameters', 'n=changed']).code, 0)
  const plan = await dryRun('instance', [])
  const mine = plan.items.find((s) => s.id === where.inst1)
  assert.equal([mine?.action, mine?.reason, mine?.detail], ['deploy', 'parameters-changed', 'instance parameters changed'])
  assert.ok(plan.items.filter((s) => s.id !== where.inst1).every((s) => s.action === 'nothing'))
  await checkRealRunDoes(plan)
})

t('a stopped and a destroyed partition: `stop` and `destroy` (state-changed); the run stops both; started again: `start`', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  assert.is(request('inst0', ['--parameters', 'n=0', '--state', 'stopped']).code, 0)
  assert.is(request('inst2', ['--parameters', 'n=2', '--state', 'destroyed']).code, 0)
  const plan = await dryRun('instance', [])
  const of = (title: string) => plan.items.find((s) => s.id === where[title])
  assert.equal([of('inst0')?.action, of('inst0')?.reason, of('inst0')?.detail], ['stop', 'state-changed', 'requested state started -> stopped'])
  assert.equal([of('inst2')?.action, of('inst2')?.reason, of('inst2')?.detail], ['destroy', 'state-changed', 'requested state started -> destroyed'])
  assert.is(of('inst1')?.action, 'nothing')
  await checkRealRunDoes(plan)

  assert.is(request('inst0', ['--parameters', 'n=0', '--state', 'started']).code, 0)
  const back = await dryRun('instance', [])
  const inst0 = back.items.find((s) => s.id === where.inst0)
  assert.equal([inst0?.action, inst0?.reason, inst0?.detail], ['start', 'state-changed', 'requested state stopped -> started'])
  await checkRealRunDoes(back)
})

t('a software release to remove and a directory nobody uses (--garbage-collect): `remove`; the run removes exactly those', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  // a release installed before (its directory made by hand: what node software leaves), then destroyed
  const other = join(node.dir, 'other', 'software.cfg')
  const otherDir = join(node.softwareRoot, md5hex(other))
  mkdirSync(otherDir)
  writeFileSync(join(otherDir, 'buildout.cfg'), `[buildout]\nextends = ${other}\n`)
  writeFileSync(join(otherDir, '.completed'), 'Thu Jan  1 00:00:00 2026')
  // an old release no longer supplied
  const stale = join(node.softwareRoot, md5hex('http://example.invalid/old/software.cfg'))
  mkdirSync(stale)
  writeFileSync(join(stale, 'buildout.cfg'), '[buildout]\n')
  await node.supply(other, 'available')
  const kept = await dryRun('software', ['--garbage-collect'])
  assert.equal(brief(kept), [
    [md5hex(node.srUrl), 'nothing', 'installed'],
    [md5hex(other), 'nothing', 'installed'],
    [md5hex('http://example.invalid/old/software.cfg'), 'remove', 'not-supplied'],
  ].sort(byId))

  await node.supply(other, 'destroyed')
  const plan = JSON.parse(await dryRunText('software', ['-n', '--json', '--garbage-collect'])) as Plan
  const removed = plan.items.filter((s) => s.action === 'remove').map((s) => [s.id, s.reason])
  assert.equal(removed.sort(), [
    [md5hex(other), 'destroyed'],
    [md5hex('http://example.invalid/old/software.cfg'), 'not-supplied'],
  ].sort())
  assert.ok(plan.items.some((s) => s.id === md5hex(node.srUrl) && s.action === 'nothing'))

  const run = await realRun('software', ['--garbage-collect'])
  const results = Object.fromEntries(run.json.items.map((i) => [i.id, i.result]))
  assert.equal(results, { [md5hex(node.srUrl)]: 'up-to-date', [md5hex(other)]: 'destroyed' })
  assert.equal(run.names, ['getFullComputerInformation', 'destroyedSoftwareRelease'])
  assert.not.ok(existsSync(otherDir), 'the destroyed release is removed')
  assert.not.ok(existsSync(stale), 'the unused directory is removed')
  assert.ok(existsSync(join(node.softwareRoot, md5hex(node.srUrl), '.completed')), 'the release in use stays')
  // what the plan said, for every release
  for (const s of plan.items) {
    if (s.reason === 'not-supplied') continue
    assert.is(results[s.id], { nothing: 'up-to-date', remove: 'destroyed', install: 'installed' }[s.action], s.id)
  }
})

t('node report destroys the destroyed partition, and its deployment record with it; the dry run then finds it free', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  const id = where.inst2!
  const record = join(node.instanceRoot, 'var', 'run', `${id}.deployment`)
  assert.ok(existsSync(record), 'node instance recorded the deployment')
  const r = await node.run(['node', 'report', '--now'], { timeoutMs: 120_000 })
  assert.is(r.code, 0, r.stderr)
  assert.not.ok(existsSync(record), 'the record went with the partition')
  const plan = await dryRun('instance', [])
  assert.equal(brief({ ...plan, items: plan.items.filter((s) => s.id === id) }), [[id, 'nothing', 'free']])
})

t('an instance of a software release this node does not have: `deploy new; will fail: software release not present`; the run fails it so', async () => {
  if (!ROOT) return skip('node software and node instance change users: needs root')
  const missing = join(node.dir, 'sr', 'missing.cfg')
  const r = spawnSync(SLAPOS, ['request', 'lost', missing, '--cfg', clientCfg, '--json'], { encoding: 'utf8', env: baseEnv(), timeout: 60_000 })
  assert.is(r.status, 0, r.stderr)
  const id = (JSON.parse(r.stdout) as Record<string, string>)['partition-id']!
  const plan = await dryRun('instance', [])
  const mine = plan.items.find((s) => s.id === id)
  assert.equal([mine?.action, mine?.reason, mine?.problem], ['deploy', 'new', 'will fail: software release not present (node software installs it)'])
  assert.is(mine?.detail, 'never deployed here (no .timestamp); will fail: software release not present (node software installs it)')
  assert.ok(plan.items.filter((s) => s.id !== id).every((s) => s.problem === undefined), 'the others have their release')
  const run = await node.run(['node', 'instance', '--now', '--json'], { timeoutMs: 240_000 })
  assert.is(run.code, 1, run.stderr)
  const item = (JSON.parse(run.stdout) as { items: Array<{ id: string; result: string; message?: string }> }).items.find((i) => i.id === id)
  assert.is(item?.result, 'failed')
  assert.match(item?.message ?? '', /^Software Release .*missing\.cfg is not present on system\.$/)
})

t.run()

// The reasons the stages above do not reach, on the pure decision itself (grid-plan.ts).
const why = suite('the reason of each decision (grid-plan.ts decidePartition, planSoftwareRelease)')
const NOW = Date.UTC(2026, 0, 1, 12, 0, 0)
const wanted = (p: Partial<WantedPartition> = {}): WantedPartition => ({ id: 'slappart0', state: 'started', softwareReleaseUrl: '/sr/software.cfg', timestamp: '2', ...p })
const local = (p: Partial<LocalPartitionState> = {}): LocalPartitionState => ({ dirExists: true, timestamp: { content: '2', mtimeMs: NOW - 10_000 }, ...p })
const opts = (p: Partial<PlanOptions> = {}): PlanOptions => ({ force: false, forceStop: false, maximumPeriodicity: 86400, nowMs: NOW, ...p })
const stepOf = (w: WantedPartition, l: LocalPartitionState, o: PlanOptions) => {
  const { decision, step } = decidePartition(w, l, o)
  assert.equal(decision, planPartition(w, l, o), 'the decision is planPartition\'s')
  return [decision.kind, step.action, step.reason, step.detail]
}
const record = (p: Partial<{ state: string; parameters: PyDict; url: string; type: string; instance: string }> = {}) =>
  deploymentRecord({ state: p.state ?? 'started', softwareReleaseUrl: p.url ?? '/sr/software.cfg', softwareType: p.type ?? 'default', parameters: p.parameters ?? { n: '1', timestamp: '1' }, instance: p.instance ?? 'inst' })

why('up to date, periodicity elapsed, periodicity 0, forced, --force-stop', () => {
  assert.equal(stepOf(wanted(), local(), opts()), ['up-to-date', 'nothing', 'up-to-date', 'timestamp unchanged; periodicity 86400 s, 86390 s left; promises checked in anomaly mode'])
  assert.equal(stepOf(wanted(), local(), opts({ maximumPeriodicity: 5 })), ['process', 'deploy', 'periodicity-elapsed', 'last processed 10 s ago, periodicity 5 s'])
  assert.equal(stepOf(wanted(), local({ periodicityFile: '0' }), opts()), ['process', 'deploy', 'every-run', 'periodicity 0: processed on every run'])
  assert.equal(stepOf(wanted({ state: 'stopped' }), local({ periodicityFile: '-1' }), opts()).slice(0, 4), ['up-to-date', 'nothing', 'up-to-date', 'timestamp unchanged; negative periodicity: not processed again while it stays so'])
  assert.equal(stepOf(wanted(), local(), opts({ force: true })), ['process', 'deploy', 'forced', '--force'])
  assert.equal(stepOf(wanted(), local(), opts({ forceStop: true })), ['process', 'stop', 'forced', '--force-stop'])
  assert.equal(stepOf(wanted(), local({ periodicityFile: 'soon' }), opts()).slice(2), ['up-to-date', 'timestamp unchanged; periodicity 86400 s, 86390 s left; promises checked in anomaly mode; the periodicity file is not an integer: deleted'])
})

why('no .timestamp: new, failed before, removed since; no master timestamp', () => {
  assert.equal(stepOf(wanted(), local({ timestamp: undefined }), opts()).slice(1, 3), ['deploy', 'new'])
  assert.equal(stepOf(wanted(), local({ timestamp: undefined, failedBefore: true }), opts()).slice(1), ['deploy', 'failed-before', 'the last processing failed (.slapgrid-slappart0-error.log), no .timestamp'])
  assert.equal(stepOf(wanted({ record: record() }), local({ timestamp: undefined, lastDeployment: record() }), opts()).slice(1, 3), ['deploy', 'timestamp-removed'])
  // a record of the instance the partition held before (freed, then given to another): new
  assert.equal(stepOf(wanted({ record: record({ instance: 'other' }) }), local({ timestamp: undefined, lastDeployment: record() }), opts()).slice(1, 3), ['deploy', 'new'])
  assert.equal(stepOf(wanted({ timestamp: undefined }), local(), opts()).slice(1, 3), ['deploy', 'no-master-timestamp'])
})

why('another timestamp: what changed, from the record of the last deployment (every change named, controls escaped)', () => {
  const now = (p: Parameters<typeof record>[0]) => wanted({ timestamp: '3', record: record(p) })
  const last = local({ lastDeployment: record() })
  assert.equal(stepOf(now({}), last, opts()).slice(1), ['deploy', 'timestamp-changed', "the master's timestamp changed (2 -> 3)"])
  assert.equal(stepOf(now({ parameters: { n: '2' }, instance: 'other' }), last, opts()).slice(1, 3), ['deploy', 'timestamp-changed'], "another instance's record names no change")
  assert.equal(stepOf(now({ parameters: { timestamp: '9', n: '1' } }), last, opts()).slice(2, 3), ['timestamp-changed'], 'the timestamp itself is no parameter')
  assert.equal(stepOf(now({ parameters: { n: '2' } }), last, opts()).slice(1, 3), ['deploy', 'parameters-changed'])
  assert.equal(stepOf(now({ parameters: { n: '1', slave_instance_list: [{ a: 1 }] } }), last, opts()).slice(1, 3), ['deploy', 'shared-instances-changed'])
  assert.equal(stepOf(now({ url: '/other/software.cfg' }), last, opts()).slice(1, 3), ['deploy', 'software-release-changed'])
  assert.equal(stepOf(now({ type: 'other' }), last, opts()).slice(1, 3), ['deploy', 'software-type-changed'])
  const both = stepOf({ ...now({ state: 'stopped', parameters: { n: '2' } }), state: 'stopped' }, last, opts())
  assert.equal(both.slice(1), ['stop', 'state-changed', 'requested state started -> stopped; instance parameters changed'])
  // started again, nothing else changed: start; with new parameters too: deploy
  const stopped = local({ lastDeployment: record({ state: 'stopped' }) })
  assert.equal(stepOf(now({}), stopped, opts()).slice(1, 3), ['start', 'state-changed'])
  assert.equal(stepOf(now({ parameters: { n: '2' } }), stopped, opts()).slice(1, 3), ['deploy', 'state-changed'])
  // key order does not matter; a local .timestamp with controls is shown escaped
  assert.is(record({ parameters: { a: '1', b: { c: 1, d: 2 } } }).parameters, record({ parameters: { b: { d: 2, c: 1 }, a: '1' } }).parameters)
  assert.equal(stepOf(wanted({ timestamp: '3' }), local({ timestamp: { content: '2\x1b[2J', mtimeMs: NOW } }), opts()).slice(3), ["the master's timestamp changed (2\\x1b[2J -> 3)"])
  assert.equal(parseDeploymentRecord(deploymentRecordText(record())), record())
  const { instance: _i, ...old } = record()
  for (const bad of ['', 'x', '{}', JSON.stringify({ ...record(), state: 'gone' }), JSON.stringify({ ...record(), parameters: '../x' }), JSON.stringify(old)]) assert.is(parseDeploymentRecord(bad), undefined, bad)
  // a tuple and a list of the same items differ (the protocol's own encoding is hashed)
  assert.is.not(record({ parameters: { a: new Tuple([1]) } }).parameters, record({ parameters: { a: [1] } }).parameters)
})

why('free, missing directory, not selected; what only says why is read only when the step is', () => {
  assert.equal(stepOf(wanted({ state: 'destroyed', softwareReleaseUrl: null }), local({ leftovers: true }), opts()).slice(1), ['clean', 'free', 'free partition: .slapgrid and .timestamp would be removed'])
  assert.equal(stepOf(wanted({ state: 'destroyed', softwareReleaseUrl: null }), local({ leftovers: false }), opts()).slice(1, 3), ['nothing', 'free'])
  assert.equal(stepOf(wanted(), local({ dirExists: false }), opts()).slice(1, 3), ['error', 'missing-directory'])
  assert.equal(stepOf(wanted(), local(), opts({ only: new Set(['slappart9']) })).slice(1, 3), ['skip', 'not-selected'])
  // a real run reads the decision only: the leftovers of a free partition, the record and the
  // error log of a processed one are not looked at
  const reads: string[] = []
  const watched = (l: LocalPartitionState): LocalPartitionState => ({
    ...l,
    get leftovers() {
      return (reads.push('leftovers'), true)
    },
    get lastDeployment() {
      return (reads.push('lastDeployment'), undefined)
    },
    get failedBefore() {
      return (reads.push('failedBefore'), false)
    },
  })
  const free = decidePartition(wanted({ state: 'destroyed', softwareReleaseUrl: null }), watched(local()), opts())
  const fresh = decidePartition(wanted(), watched(local({ timestamp: undefined })), opts())
  assert.equal([free.decision.kind, fresh.decision.kind, reads], ['free', 'process', []])
  assert.equal([free.step.action, fresh.step.reason], ['clean', 'new'])
  assert.equal(reads, ['leftovers', 'failedBefore', 'lastDeployment'])
})

why('software releases: install new / failed before / forced, nothing, remove, skip, refused', () => {
  const sr = (state: string, url = '/sr/software.cfg') => ({ url, hash: md5hex(url), state })
  const plan = (w: ReturnType<typeof sr>, dirExists: boolean, completed: boolean, force = false, selected = true) => {
    const s = planSoftwareRelease(w, { dirExists, completed }, { force, selected })
    return [s.action, s.reason]
  }
  assert.equal(plan(sr('available'), false, false), ['install', 'new'])
  assert.equal(plan(sr('available'), true, false), ['install', 'failed-before'])
  assert.equal(plan(sr('available'), true, true, true), ['install', 'forced'])
  assert.equal(plan(sr('available'), true, true), ['nothing', 'installed'])
  assert.equal(plan(sr('destroyed'), true, true), ['remove', 'destroyed'])
  assert.equal(plan(sr('destroyed'), false, false), ['remove', 'destroyed'])
  assert.equal(plan(sr('destroyed'), true, true, false, false), ['skip', 'not-selected'])
  assert.equal(plan(sr('available', '/sr/a\nb.cfg'), false, false), ['error', 'refused'])
  assert.is(planSoftwareRelease(sr('available', '/sr/a\nb.cfg'), { dirExists: false, completed: false }, { force: false, selected: true }).url, '/sr/a\\nb.cfg')
  assert.equal(plan(sr('frozen'), false, false), ['error', 'unsupported-state'])
})

why.run()

// --- helpers ---

/** [id, action, reason] of each step, sorted by id. */
function brief(plan: Plan): string[][] {
  return plan.items.map((s) => [s.id, s.action, s.reason]).sort(byId)
}

function byId(a: Array<string | undefined>, b: Array<string | undefined>): number {
  return (a[0] ?? '').localeCompare(b[0] ?? '')
}

function request(title: string, extra: string[]) {
  const r = spawnSync(SLAPOS, ['request', title, node.srUrl, '--cfg', clientCfg, ...extra], { encoding: 'utf8', env: baseEnv(), timeout: 60_000 })
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

/** Runs a dry run with --json and checks that it changed nothing and only read the partition list; returns the plan. */
async function dryRun(kind: 'instance' | 'software', extra: string[]): Promise<Plan> {
  const text = await dryRunText(kind, ['--dry-run', '--json', ...extra])
  const plan = JSON.parse(text) as Plan
  assert.is(plan.dryRun, true)
  return plan
}

/** A dry run (the caller gives --dry-run or -n): exit 0, nothing changed, one GET of the partition list; returns stdout. */
async function dryRunText(kind: 'instance' | 'software', args: string[]): Promise<string> {
  const before = await nodeState()
  node.clearCalls()
  const r = await node.run(['node', kind, ...args])
  assert.is(r.code, 0, r.stderr)
  const calls = node.calls()
  assert.equal(
    calls.map((c) => `${c.verb} ${c.name}`),
    ['GET getFullComputerInformation'],
    'a dry run asks the master for the list only, and posts nothing',
  )
  const after = await nodeState()
  assert.equal(after.supervisord, before.supervisord, 'supervisord untouched')
  assert.equal(changedPaths(before.files, after.files), [], 'no file written, removed or touched')
  return r.stdout
}

interface InstanceJson {
  exitCode: number
  items: Array<{ id: string; result: string }>
}

/** A real run with --json; its master calls by name. */
async function realRun(kind: 'instance' | 'software', extra: string[]): Promise<{ json: InstanceJson; names: string[]; calls: MasterCall[]; stderr: string }> {
  node.clearCalls()
  const r = await node.run(['node', kind, '--now', '--json', ...extra], { timeoutMs: 240_000 })
  assert.is(r.code, 0, r.stderr)
  const calls = node.calls()
  return { json: JSON.parse(r.stdout) as InstanceJson, names: calls.map((c) => c.name), calls, stderr: r.stderr }
}

/**
 * Makes the real `node instance` run (with the dry run's options `args`) and checks, partition by partition, that it did what
 * the plan said, from what can be seen outside it: the buildouts it ran (its log), the
 * status it told the master (the tap), supervisord's groups after it.
 */
async function checkRealRunDoes(plan: Plan, args: string[] = []): Promise<void> {
  const groupsBefore = await groups()
  const run = await realRun('instance', args)
  const groupsAfter = await groups()
  for (const step of plan.items) {
    const id = step.id
    const path = join(node.instanceRoot, id)
    const buildout = run.stderr.split('\n').some((l) => l.endsWith(`Running buildout in ${path}`))
    const told = run.calls.filter((c) => c.fields.computer_partition_id === id && /^(started|stopped)ComputerPartition$|^softwareInstanceError$/.test(c.name)).map((c) => c.name)
    const seen = buildout && told.join() === 'startedComputerPartition' ? 'deploy' : buildout && told.join() === 'stoppedComputerPartition' ? 'stop' : !buildout && told.join() === 'stoppedComputerPartition' ? 'destroy' : !buildout && told.length === 0 ? 'nothing' : `buildout ${buildout}, told ${told.join()}`
    const said = step.action === 'start' ? 'deploy' : step.action === 'clean' || step.action === 'skip' ? 'nothing' : step.action
    assert.is(seen, said, `${id}: the plan said ${step.action} (${step.reason}), the run did ${seen}`)
    const after = groupsAfter[id]
    if (said === 'deploy') assert.is(after, 'RUNNING', `${id} runs`)
    else if (said === 'stop' || said === 'destroy') assert.is(after, undefined, `${id} has no process under supervisord`)
    else assert.is(after, groupsBefore[id], `${id} left as it was`)
  }
}

/** supervisord's partition groups: id -> RUNNING when all its processes run, else their states. */
async function groups(): Promise<Record<string, string>> {
  if (!existsSync(supervisorPaths(node.instanceRoot).pidfile)) return {}
  const list = await new Supervisor(supervisorPaths(node.instanceRoot), quiet).processInfo()
  const out: Record<string, string> = {}
  for (const p of list.filter((x) => x.group.startsWith('slappart'))) {
    const states = new Set([...(out[p.group]?.split(',') ?? []), p.statename])
    out[p.group] = [...states].sort().join(',')
  }
  return out
}

/** Everything a dry run must leave alone: the files of the node, and supervisord's processes. */
async function nodeState(): Promise<{ files: Map<string, string>; supervisord: string }> {
  const files = new Map<string, string>()
  for (const root of [node.instanceRoot, node.softwareRoot, node.certificateRepository, join(node.dir, 'run')]) walk(root, files)
  const pidfile = supervisorPaths(node.instanceRoot).pidfile
  let supervisord = 'not running'
  if (existsSync(pidfile)) {
    const list = await new Supervisor(supervisorPaths(node.instanceRoot), quiet).processInfo()
    supervisord = `pid ${readFileSync(pidfile, 'utf8').trim()}: ` + list.map((p) => `${p.group}:${p.name} ${p.statename} ${p.pid}`).sort().join('; ')
  }
  return { files, supervisord }
}

/** path -> type, mode, owner, size and modification time of each entry under `dir` (links not followed). */
function walk(dir: string, into: Map<string, string>): void {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    const st = lstatSync(p)
    into.set(p, `${st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isSocket() ? 's' : 'f'} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.mtimeMs}`)
    // the software release's own tree is large and only node software writes there
    if (st.isDirectory() && !(dir === node.softwareRoot && existsSync(join(p, '.completed')))) walk(p, into)
  }
}

function changedPaths(a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = []
  for (const [p, v] of a) if (b.get(p) !== v) out.push(`${p}: ${v} -> ${b.get(p) ?? 'gone'}`)
  for (const p of b.keys()) if (!a.has(p)) out.push(`${p}: new`)
  return out
}

function rmPidfile(): void {
  rmSync(node.pidfiles.instance, { force: true })
}
