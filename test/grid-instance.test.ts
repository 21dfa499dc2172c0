// End to end test of `slapos node instance` against real components: our proxy (through the
// recording tap of node-helpers.ts), real supervisord, real buildout (Debian's, through the
// test wrapper) and the offline test Software Release. One node with 3 instances (ports 8080,
// 8081, 8082) and a free partition; the first test deploys them from the requested state,
// every other test starts from the deployed state (a snapshot of the instance root, the
// certificates and the proxy's database, restored before it), so each runs alone as well
// (`t.only`) and one bug fails only the tests that see it.
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { createLogger } from '../src/log.ts'
import { Supervisor, supervisorPaths, type ProcessInfo } from '../src/supervisor.ts'
import { SLAPOS, tempDir } from './helpers.ts'
import { baseEnv, makeNode, waitFor, type NodeSnapshot, type TestNode } from './node-helpers.ts'

const t = suite('node instance, end to end (3 partitions and a free one)')
const quiet = createLogger({ level: 'critical', write: () => undefined })

interface State {
  node: TestNode
  clientCfg: string
  /** instance title -> partition id */
  where: Record<string, string>
  /** software built, 3 instances requested, nothing deployed */
  requested: NodeSnapshot
  /** the 3 instances deployed and running */
  deployed: NodeSnapshot
}
let S: State

t.before(async () => {
  const node = await makeNode({ partitions: 4 })
  // The fixture's instance profile takes its port from the instance parameter `port`, so a
  // request without it makes the instance buildout fail ("broken parameter" case below). The
  // port is also in the service's file name, as SlapOS wrappers carry a hash of their
  // configuration: a changed port is a new program, which supervisord starts afresh.
  const tpl = join(node.dir, 'sr', 'instance.cfg.in')
  const text = readFileSync(tpl, 'utf8')
    .replace('port = 8080', () => 'port = $${slap-configuration:configuration.port}')
    .replace('wrapper-path = $${directory:service}/http-server', () => 'wrapper-path = $${directory:service}/http-server-$${:port}')
  assert.ok(text.includes('http-server-$${:port}'))
  writeFileSync(tpl, text)
  const clientCfg = join(node.dir, 'client.cfg')
  writeFileSync(clientCfg, `[slapos]\nmaster_url = ${node.proxy.url}\n`)
  S = { node, clientCfg, where: {} } as unknown as State
  await node.supply()
  for (const i of [0, 1, 2]) {
    const r = request(`inst${i}`, ['--parameters', `port=${8080 + i}`])
    assert.is(r.code, 0, r.stderr)
  }
  const sw = await node.run(['node', 'software', '--now'])
  if (sw.code === 5 && /does not exist/.test(sw.stderr)) buildSoftwareByHand(node)
  else assert.is(sw.code, 0, sw.stderr)
  S.requested = await node.snapshot()
  const r = await instance([])
  assert.is(r.code, 0, r.stderr)
  for (const i of [0, 1, 2]) S.where[`inst${i}`] = JSON.parse(request(`inst${i}`, ['--parameters', `port=${8080 + i}`, '--json']).stdout)['partition-id']
  S.deployed = await node.snapshot()
})

t.before.each(async () => {
  await S.node.restore(S.deployed)
})

t.after(async () => {
  await S?.node.stop()
})

t('3 requested instances, node instance: every service runs and answers (checklist 49-51, 66, 67, 70, 80, 84)', async () => {
  const { node } = S
  await node.restore(S.requested)

  // slappart3 stays free: leftovers of ours in it are cleaned, the master hears nothing of it
  const free = join(node.instanceRoot, 'slappart3')
  writeFileSync(join(free, '.timestamp'), '1')
  mkdirSync(join(free, '.slapgrid/log'), { recursive: true })
  // a link its user left in there is removed, not followed
  const kept = tempDir('slapos-kept-')
  writeFileSync(join(kept, 'file'), 'kept')
  symlinkSync(kept, join(free, '.slapgrid/log/to-elsewhere'))
  writeFileSync(join(free, '.slapos-resource'), '{}')
  node.clearCalls()
  const r = await instance([])
  assert.is(r.code, 0, r.stderr)
  assert.not.ok(existsSync(join(free, '.timestamp')) || existsSync(join(free, '.slapgrid')), 'free partition cleaned')
  assert.ok(existsSync(join(free, '.slapos-resource')))
  assert.equal(readdirSync(kept), ['file'])
  assert.not.ok(node.calls().some((c) => Object.values(c.fields).includes('slappart3')), 'no master call about the free partition')
  for (const i of [0, 1, 2]) {
    const info = JSON.parse(request(`inst${i}`, ['--parameters', `port=${8080 + i}`, '--json']).stdout)
    assert.is(info['partition-id'], S.where[`inst${i}`])
    const addr = node.addresses[info['partition-id']]
    assert.is(info['connection-parameters']['url-http'], `http://${addr}:${8080 + i}/`)
    assert.is(await httpStatus(`http://${addr}:${8080 + i}/`), 200)
  }
  // the text form of request prints the published URL too
  assert.match(request('inst0', ['--parameters', 'port=8080']).stdout, /'url-http': 'http:\/\/127\.0\.1\.\d+:8080\/'/)
  const procs = await processes()
  assert.is(procs.filter((p) => p.group.startsWith('slappart') && p.statename === 'RUNNING').length, 3, JSON.stringify(procs))

  const p0 = S.where.inst0!
  const path = join(node.instanceRoot, p0)
  // master calls of one started partition, in order
  const mine = node.calls().filter((c) => c.name === 'getFullComputerInformation' || c.fields.computer_partition_id === p0 || c.fields.computer_partition_reference === p0)
  const names = mine.map((c) => c.name).filter((n) => n !== 'registerComputerPartition' && n !== 'setComputerPartitionConnectionXml')
  assert.equal(names, ['getFullComputerInformation', 'getComputerPartitionCertificate', 'startedComputerPartition'])
  // .timestamp holds the master's value
  const params = await masterTimestamp(p0)
  assert.is(readFileSync(join(path, '.timestamp'), 'utf8'), params)
  // certificate files
  for (const ext of ['crt', 'key']) assert.is(statSync(join(node.certificateRepository, `${p0}.${ext}`)).mode & 0o777, 0o400)
  // buildout.cfg = instance.cfg + the tail, 0640
  const cfg = readFileSync(join(path, 'buildout.cfg'), 'utf8')
  const template = readFileSync(join(node.softwareRoot, md5(node.srUrl), 'instance.cfg'), 'utf8')
  assert.ok(cfg.startsWith(template + '\n\n# This is beginning of zc.buildout profile\'s tail added by slapgrid\n'))
  assert.ok(cfg.includes(`[slap-connection]\ncomputer-id = ${node.computerId}\npartition-id = ${p0}\nserver-url = ${node.masterUrl}\nsoftware-release-url = ${node.srUrl}\n`))
  assert.ok(cfg.includes(`key-file = ${node.certificateRepository}/${p0}.key\ncert-file = ${node.certificateRepository}/${p0}.crt\nshared-part-list =\nbuild-time-part-list =\nrequested-state = started\n`))
  assert.ok(cfg.includes('bin-directory = ${buildout:directory}/sbin\n\n# protect software and run parts offline\noffline = true\n'))
  assert.ok(cfg.includes(`[slap_connection]\n# Kept for backward compatiblity\ncomputer_id = ${node.computerId}\npartition_id = ${p0}\n`))
  assert.ok(cfg.endsWith("[network-information]\nglobal-ipv4-network = \n# This is end of zc.buildout profile's tail added by slapgrid\n"))
  assert.is(statSync(join(path, 'buildout.cfg')).mode & 0o777, 0o640)
  assert.ok(lstatSync(join(path, 'software_release')).isSymbolicLink())
  assert.is(readlinkSync(join(path, 'software_release')), join(node.softwareRoot, md5(node.srUrl)))
  assert.match(readFileSync(join(path, '.slapgrid/log/instance.log'), 'utf8'), /Running buildout in /)
  assert.is(readFileSync(join(path, '.slapos-retention-lock-delay'), 'utf8'), '0')
  assert.not.ok(existsSync(node.pidfiles.instance), 'pid file removed at the end')
})

t('a second run changes nothing: no buildout, no status call, same pids, exit 0 (checklist 24, 52)', async () => {
  const { node } = S
  const before = await processes()
  const stamps = timestampMtimes()
  node.clearCalls()
  const r = await instance([])
  assert.is(r.code, 0, r.stderr)
  assert.equal(node.calls().map((c) => c.name), ['getFullComputerInformation'])
  assert.not.match(r.stderr, /Running buildout/)
  assert.not.match(r.stderr, /partition\s+state\s+result/, 'an idle run prints no summary table')
  assert.equal(timestampMtimes(), stamps)
  assert.equal(pids(await processes()), pids(before))
})

t('a parameter change redeploys only that partition (checklist 53)', async () => {
  const { node } = S
  const before = await processes()
  const stamps = timestampMtimes()
  const p1 = S.where.inst1!
  assert.is(request('inst1', ['--parameters', 'port=8091']).code, 0)
  await sleep(1100) // mtime resolution of .timestamp checks
  const r = await instance([])
  assert.is(r.code, 0, r.stderr)
  const after = timestampMtimes()
  for (const id of Object.keys(stamps)) {
    if (id === p1) assert.is.not(after[id], stamps[id], `${id} redeployed`)
    else assert.is(after[id], stamps[id], `${id} untouched`)
  }
  const beforePids = pids(before)
  const afterPids = pids(await processes())
  for (const [name, pid] of Object.entries(afterPids)) {
    if (name.startsWith(p1)) assert.is.not(pid, beforePids[name], 'restarted on the new port')
    else assert.is(pid, beforePids[name], `${name} kept running`)
  }
  const addr = node.addresses[p1]
  assert.is(await httpStatus(`http://${addr}:8091/`), 200)
  assert.match(request('inst1', ['--parameters', 'port=8091']).stdout, new RegExp(`'url-http': 'http://${addr!.replace(/\./g, '\\.')}:8091/'`))
})

t('an up-to-date started partition: its promises in anomaly mode; the master hears a change only (failure after three failed runs, then the recovery); exit 0', async () => {
  const { node } = S
  const p0 = S.where.inst0!
  const path = join(node.instanceRoot, p0)
  writeFileSync(join(path, 'etc/promise/flaky'), '#!/bin/sh\necho run >> flaky-runs\necho "disk almost full"\nexit 1\n', { mode: 0o755 })
  // each run finds every promise due (its cache gone, as after the 2 minutes of periodicity)
  const idleRun = async () => {
    rmSync(join(path, '.slapgrid/promise/cache'), { recursive: true, force: true })
    node.clearCalls()
    const r = await instance([])
    assert.is(r.code, 0, r.stderr)
    assert.not.match(r.stderr, /Running buildout/)
    return node.calls().filter((c) => c.fields.computer_partition_id === p0).map((c) => c.name)
  }
  assert.equal(await idleRun(), [], 'one failed run: nothing to tell')
  assert.equal(await idleRun(), [], 'two')
  const third = await idleRun()
  assert.equal(third, ['getComputerPartitionCertificate', 'softwareInstanceError'], 'three failed runs: an anomaly, told once')
  const told = node.calls().find((c) => c.name === 'softwareInstanceError')
  assert.is(told?.fields.error_log, "Promise 'flaky' failed with output: disk almost full")
  assert.equal(await idleRun(), [], 'still failing: nothing new to tell')
  assert.is(readFileSync(join(path, 'flaky-runs'), 'utf8').trim().split('\n').length, 4)
  assert.ok(existsSync(join(path, '.timestamp')), 'an anomaly never deletes .timestamp')
  // fixed: the recovery is told, once
  writeFileSync(join(path, 'etc/promise/flaky'), '#!/bin/sh\nexit 0\n', { mode: 0o755 })
  assert.equal(await idleRun(), ['getComputerPartitionCertificate', 'startedComputerPartition'])
  assert.equal(await idleRun(), [])
})

t('requesting stopped stops its services and reports stopped (checklist 25, 48)', async () => {
  const { node } = S
  const p2 = S.where.inst2!
  assert.is(request('inst2', ['--parameters', 'port=8082', '--state', 'stopped']).code, 0)
  node.clearCalls()
  const r = await instance([])
  assert.is(r.code, 0, r.stderr)
  const procs = await processes()
  assert.is(procs.filter((p) => p.group === p2).length, 0, 'group removed from supervisord')
  assert.not.ok(existsSync(join(node.instanceRoot, 'etc/supervisord.conf.d', `${p2}.conf`)))
  assert.is(procs.filter((p) => p.group.startsWith('slappart') && p.statename === 'RUNNING').length, 2)
  const mine = node.calls().filter((c) => c.fields.computer_partition_id === p2 || c.name === 'getFullComputerInformation' || (c.name === 'getComputerPartitionCertificate' && c.fields.computer_partition_id === p2))
  const names = mine.map((c) => c.name).filter((n) => n !== 'registerComputerPartition' && n !== 'setComputerPartitionConnectionXml')
  assert.equal(names, ['getFullComputerInformation', 'getComputerPartitionCertificate', 'stoppedComputerPartition'])
  assert.is(node.calls().find((c) => c.name === 'stoppedComputerPartition')?.status, 200)
  // the proxy shows it stopped
  const info = JSON.parse(request('inst2', ['--parameters', 'port=8082', '--state', 'stopped', '--json']).stdout)
  assert.is(info.state, 'stopped')
  assert.is(await httpStatus(`http://${node.addresses[p2]}:8082/`), 0, 'nothing listens any more')
})

t('a broken parameter fails only that partition: exit 1, error reported, others deployed (checklist 61, 72, 73, 82)', async () => {
  const { node } = S
  const p0 = S.where.inst0!
  const path = join(node.instanceRoot, p0)
  const stamps = timestampMtimes()
  assert.is(request('inst0', ['--parameters', 'portx=8080']).code, 0)
  // a failing promise too: still run after the failed buildout, but the exit status stays 1 (checklist 74)
  mkdirSync(join(path, 'etc/promise'), { recursive: true })
  writeFileSync(join(path, 'etc/promise/always-bad'), '#!/bin/sh\necho bad\nexit 1\n', { mode: 0o755 })
  node.clearCalls()
  const r = await instance([])
  assert.is(r.code, 1, r.stderr)
  assert.is(JSON.parse(readFileSync(join(path, '.slapgrid/promise/result/always-bad.status.json'), 'utf8')).result.message, 'bad')
  rmSync(join(path, 'etc/promise/always-bad'))
  const err = node.calls().find((c) => c.name === 'softwareInstanceError' && c.fields.computer_partition_id === p0)
  assert.ok(err, 'error sent to the master')
  assert.match(err!.fields.error_log ?? '', /^Failed to run buildout profile in directory '.*slappart\d+':\n/)
  assert.match(err!.fields.error_log ?? '', /configuration\.port/)
  assert.not.ok(node.calls().some((c) => c.name === 'startedComputerPartition' && c.fields.computer_partition_id === p0))
  assert.not.ok(existsSync(join(path, '.timestamp')), 'no .timestamp after a failure')
  assert.match(readFileSync(join(path, `.slapgrid-${p0}-error.log`), 'utf8'), /Failed to run buildout/)
  assert.match(r.stderr, new RegExp(`Error while processing the following partitions:[\\s\\S]*  ${p0}\\[default\\]: Failed to run buildout`))
  const p1 = S.where.inst1!
  assert.is(timestampMtimes()[p1], stamps[p1], 'the other started partition is untouched')
  assert.is(await httpStatus(`http://${node.addresses[p1]}:8081/`), 200)
  // fixed parameter: redeployed, the error log goes
  assert.is(request('inst0', ['--parameters', 'port=8080']).code, 0)
  const again = await instance([])
  assert.is(again.code, 0, again.stderr)
  assert.not.ok(existsSync(join(path, `.slapgrid-${p0}-error.log`)))
  assert.is(await httpStatus(`http://${node.addresses[p0]}:8080/`), 200)
})

t('a failing etc/promise script: exit 2, promise error reported, not started, no .timestamp (checklist 85, 86, 61)', async () => {
  const { node } = S
  const p1 = S.where.inst1!
  const path = join(node.instanceRoot, p1)
  mkdirSync(join(path, 'etc/promise'), { recursive: true })
  writeFileSync(join(path, 'etc/promise/check-port'), '#!/bin/sh\necho "port is closed" >&2\nexit 1\n', { mode: 0o755 })
  assert.is(request('inst1', ['--parameters', 'port=8092']).code, 0)
  node.clearCalls()
  const r = await instance(['--only-cp', p1])
  assert.is(r.code, 2, r.stderr)
  const err = node.calls().find((c) => c.name === 'softwareInstanceError' && c.fields.computer_partition_id === p1)
  assert.is(err?.fields.error_log, "Promise 'check-port' failed with output: port is closed")
  assert.not.ok(node.calls().some((c) => c.name === 'startedComputerPartition'))
  assert.not.ok(existsSync(join(path, '.timestamp')))
  assert.match(readFileSync(join(path, '.slapgrid/log/instance.log'), 'utf8'), /port is closed/)
  const status = JSON.parse(readFileSync(join(path, '.slapgrid/promise/result/check-port.status.json'), 'utf8'))
  assert.is(status.result.failed, true)
  assert.match(r.stderr, new RegExp(`Error with promises for the following partitions:[\\s\\S]*  ${p1}\\[default\\]: Promise 'check-port' failed`))
  // --only-cp with an unknown partition
  const unknown = await instance(['--only-cp', 'slappart9,slappart8'])
  assert.is(unknown.code, 1)
  assert.match(unknown.stderr, /Unknown partitions: slappart8, slappart9/)
  // promise fixed: the next plain run processes it again (no .timestamp) and succeeds
  writeFileSync(join(path, 'etc/promise/check-port'), '#!/bin/sh\nexit 0\n', { mode: 0o755 })
  const again = await instance([])
  assert.is(again.code, 0, again.stderr)
  assert.ok(existsSync(join(path, '.timestamp')))
})

t('wrong permissions fail the partition; a missing directory is reported without failing the run (checklist 63, 47)', async () => {
  const { node } = S
  const p1 = S.where.inst1!
  const path = join(node.instanceRoot, p1)
  chmodSync(path, 0o755)
  node.clearCalls()
  const r = await instance(['--force', '--only-cp', p1])
  chmodSync(path, 0o750)
  assert.is(r.code, 1, r.stderr)
  const err = node.calls().find((c) => c.name === 'softwareInstanceError')
  assert.is(err?.fields.error_log, `Wrong permissions in ${path}: actual permissions are: 0755, wanted are 0750`)
  renameSync(join(node.instanceRoot, 'slappart3'), join(node.dir, 'slappart3.away'))
  node.clearCalls()
  const missing = await instance([])
  renameSync(join(node.dir, 'slappart3.away'), join(node.instanceRoot, 'slappart3'))
  assert.is(missing.code, 0, missing.stderr)
  const e3 = node.calls().find((c) => c.name === 'softwareInstanceError' && c.fields.computer_partition_id === 'slappart3')
  assert.is(e3?.fields.error_log, `Partition directory ${join(node.instanceRoot, 'slappart3')} does not exist.`)
})

t('killed with SIGKILL during buildout, the next run completes cleanly (exit 0, no stale lock)', async () => {
  const { node } = S
  const p0 = S.where.inst0!
  assert.is(request('inst0', ['--parameters', 'port=8070']).code, 0)
  const log = join(node.instanceRoot, p0, '.slapgrid/log/instance.log')
  const runs = () => (readFileSync(log, 'utf8').match(/Running buildout/g) ?? []).length
  const before = runs()
  const child = spawn(SLAPOS, ['node', 'instance', '--now', '--cfg', node.cfgPath], { env: baseEnv(), stdio: 'ignore' })
  const exited = new Promise((res) => child.once('exit', res))
  const deadline = Date.now() + 60_000
  while (runs() === before && Date.now() < deadline) await sleep(20)
  assert.ok(runs() > before, 'buildout started')
  await sleep(150)
  child.kill('SIGKILL')
  await exited
  assert.ok(existsSync(node.pidfiles.instance), 'the killed run left its pid file behind')
  // the orphaned buildout finishes on its own: no process works in the partition any more
  const partition = join(node.instanceRoot, p0)
  const working = () =>
    readdirSync('/proc').filter((pid) => {
      if (!/^\d+$/.test(pid)) return false
      try {
        return readlinkSync(`/proc/${pid}/cwd`) === partition && !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('http.server')
      } catch {
        return false
      }
    })
  await waitFor('the orphaned buildout to end', async () => (working().length === 0 ? true : undefined), 60_000)
  const r = await instance([])
  assert.is(r.code, 0, r.stderr)
  assert.not.ok(existsSync(node.pidfiles.instance))
  assert.is(await httpStatus(`http://${node.addresses[p0]}:8070/`), 200)
})

t('--force-stop: buildout runs, services stop, no promise, no report (checklist 79)', async () => {
  const { node } = S
  const p0 = S.where.inst0!
  writeFileSync(join(node.instanceRoot, p0, 'etc/promise/never-run'), '#!/bin/sh\ntouch ran\nexit 1\n', { mode: 0o755 })
  node.clearCalls()
  const r = await instance(['--force-stop', '--only-cp', p0])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, /Running buildout/)
  assert.is((await processes()).filter((p) => p.group === p0).length, 0)
  assert.not.ok(existsSync(join(node.instanceRoot, p0, 'ran')), 'no promise ran')
  const reports = ['startedComputerPartition', 'stoppedComputerPartition', 'softwareInstanceError', 'updateComputerPartitionRelatedInstanceList']
  assert.equal(node.calls().map((c) => c.name).filter((n) => reports.includes(n)), [])
  rmSync(join(node.instanceRoot, p0, 'etc/promise/never-run'))
})

t('--jobs 2 gives the same result; --json summary on stdout', async () => {
  const { node } = S
  const r = await instance(['--force', '--jobs', '2', '--json'])
  assert.is(r.code, 0, r.stderr)
  const summary = JSON.parse(r.stdout)
  assert.is(summary.exitCode, 0)
  assert.equal(Object.keys(summary), ['exitCode', 'durationMs', 'items'])
  const rows = Object.fromEntries(summary.items.map((p: { id: string; result: string; state: string }) => [p.id, `${p.state} ${p.result}`]))
  assert.equal(rows, { [S.where.inst0!]: 'started deployed', [S.where.inst1!]: 'started deployed', [S.where.inst2!]: 'started deployed', slappart3: 'destroyed free' })
  const procs = await processes()
  assert.is(procs.filter((p) => p.group.startsWith('slappart') && p.statename === 'RUNNING').length, 3)
  for (const i of [0, 1, 2]) assert.is(await httpStatus(`http://${node.addresses[S.where[`inst${i}`]!]}:${8080 + i}/`), 200)
})

t('a destroyed partition is only stopped and reported stopped; its files stay (checklist 76)', async () => {
  const { node } = S
  const p2 = S.where.inst2!
  assert.is(request('inst2', ['--parameters', 'port=8082', '--state', 'destroyed']).code, 0)
  node.clearCalls()
  const r = await instance(['--json'])
  assert.is(r.code, 0, r.stderr)
  // its result says what happened here: stopped (node report destroys it), not deployed
  const item = (JSON.parse(r.stdout) as { items: { id: string; state: string; result: string }[] }).items.find((i) => i.id === p2)
  assert.equal([item?.state, item?.result], ['destroyed', 'stopped'])
  assert.ok(node.calls().some((c) => c.name === 'stoppedComputerPartition' && c.fields.computer_partition_id === p2))
  assert.ok(existsSync(join(node.instanceRoot, p2, 'buildout.cfg')))
  assert.not.ok(node.calls().some((c) => c.name === 'destroyedComputerPartition'))
})

t('master unreachable: offline mode starts every supervised process, exit 3 (checklist 97)', async () => {
  const { node } = S
  const conf = join(node.instanceRoot, 'etc/supervisord.conf')
  const p0 = S.where.inst0!
  spawnSync('supervisorctl', ['-c', conf, 'stop', `${p0}:*`], { encoding: 'utf8' })
  assert.ok((await processes()).some((p) => p.group === p0 && p.statename === 'STOPPED'))
  // an old version's .requested_state = stopped stops that partition (checklist 99)
  const p1 = S.where.inst1!
  writeFileSync(join(node.instanceRoot, p1, '.requested_state'), 'stopped')
  node.clearCalls()
  const r = await instance(['--master-url', 'http://127.0.0.1:9/', '--json'])
  assert.is(r.code, 3, r.stderr)
  assert.equal(JSON.parse(r.stdout).offline, true)
  assert.match(r.stderr, /offline mode/)
  assert.not.match(r.stderr, /Running buildout/)
  await waitFor('the services of the offline start', async () => {
    const p = (await processes()).filter((x) => x.group === p0)
    return p.length > 0 && p.every((x) => x.statename === 'RUNNING') ? true : undefined
  })
  const after = await processes()
  assert.ok(after.filter((p) => p.group === p0).length > 0 && after.filter((p) => p.group === p0).every((p) => p.statename === 'RUNNING'))
  assert.is(after.filter((p) => p.group === p1).length, 0, 'the partition whose .requested_state said stopped is stopped')
  assert.not.ok(existsSync(join(node.instanceRoot, p1, '.requested_state')))
  assert.is(node.calls().length, 0, 'nothing reached the master')
})

t.run()

// --- helpers ---

function request(title: string, extra: string[]) {
  const r = spawnSync(SLAPOS, ['request', title, S.node.srUrl, '--cfg', S.clientCfg, ...extra], { encoding: 'utf8', env: baseEnv(), timeout: 60_000 })
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

function instance(extra: string[]) {
  return S.node.run(['node', 'instance', '--now', ...extra], { timeoutMs: 180_000 })
}

async function processes(): Promise<ProcessInfo[]> {
  return new Supervisor(supervisorPaths(S.node.instanceRoot), quiet).processInfo()
}

function pids(list: ProcessInfo[]): Record<string, number> {
  return Object.fromEntries(list.filter((p) => p.group.startsWith('slappart')).map((p) => [`${p.group}:${p.name}`, p.pid]))
}

function timestampMtimes(): Record<string, number> {
  const out: Record<string, number> = {}
  for (const id of Object.keys(S.node.addresses)) {
    const f = join(S.node.instanceRoot, id, '.timestamp')
    out[id] = existsSync(f) ? statSync(f).mtimeMs : -1
  }
  return out
}

async function masterTimestamp(id: string): Promise<string> {
  const computer = await S.node.client.getFullComputerInformation(S.node.computerId)
  const p = computer._computer_partition_list.find((x) => x._partition_id === id)
  return String(p?._parameter_dict?.timestamp)
}

function md5(s: string): string {
  return createHash('md5').update(s, 'utf8').digest('hex')
}

/** HTTP status of a GET, retried for a few seconds while the service starts; 0 if nothing answers. */
async function httpStatus(url: string): Promise<number> {
  for (let i = 0; i < 40; i++) {
    const code = await new Promise<number>((res) => {
      const req = get(url, (r) => {
        r.resume()
        res(r.statusCode ?? 0)
      })
      req.on('error', () => res(0))
      req.setTimeout(2000, () => req.destroy())
    })
    if (code !== 0) return code
    await sleep(100)
  }
  return 0
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** Until `node software` is in the build: install the test SR the way it does (buildout.cfg extending the URL). */
function buildSoftwareByHand(node: TestNode): void {
  const dir = join(node.softwareRoot, md5(node.srUrl))
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'buildout.cfg'), `[buildout]\nextends = ${node.srUrl}\n`)
  const b = spawnSync(node.buildout, ['-c', join(dir, 'buildout.cfg'), `buildout:directory=${dir}`], { cwd: dir, encoding: 'utf8' })
  if (b.status !== 0) throw new Error(`software build failed: ${b.stdout}${b.stderr}`)
}
