// Edge cases of `slapos node instance` that the test Software Release cannot produce: a
// failing, slow or transaction-writing buildout, a missing software release, template.cfg,
// a changed certificate, a master that goes away mid-run. Real proxy (through the recording
// tap), real supervisord; the configured buildout is a small shell script (the node runs
// whatever `buildout` slapos.cfg names) whose behaviour each test picks per partition.
// Each test starts from the deployed node (a snapshot restored before it; the first one from
// the requested node), so any one runs alone as well.
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { createLogger } from '../src/log.ts'
import { loads } from '../src/slap-protocol.ts'
import { Supervisor, supervisorPaths } from '../src/supervisor.ts'
import { SLAPOS, slapos } from './helpers.ts'
import { makeNode, waitFor, type NodeSnapshot, type TestNode } from './node-helpers.ts'

const t = suite('node instance, edge cases (2 partitions, scripted buildout)')
const quiet = createLogger({ level: 'critical', write: () => undefined })
let node: TestNode
let script: string
/** the two instances requested, nothing deployed; then deployed */
let requested: NodeSnapshot
let deployed: NodeSnapshot
const SR2 = 'file:///nowhere/other-software.cfg'

t.before(async () => {
  node = await makeNode({ partitions: 2 })
  // the "buildout": reads ../<partition>.action; default: one service
  script = join(node.dir, 'fake-buildout')
  writeFileSync(
    script,
    [
      '#!/bin/sh',
      'id=$(basename "$PWD")',
      'action=$(cat "../$id.action" 2>/dev/null)',
      'case "$action" in',
      '  fail) echo "step one"; echo "boom: cannot build" >&2; exit 1 ;;',
      '  sleep) touch "../$id.sleeping"; sleep 60 ;;',
      '  transaction) printf "inst-a\\n\\ninst-b\\n" > ".slapos-request-transaction-$id" ;;',
      '  env) env > buildout-env.txt ;;',
      '  noservice) rm -rf etc/service etc/run; exit 0 ;;',
      '  linktransaction) ln -sf "$(cat ../secret-path)" ".slapos-request-transaction-$id" ;;',
      'esac',
      'mkdir -p etc/service',
      'printf "#!/bin/sh\\nexec sleep 100000\\n" > etc/service/svc',
      'chmod 755 etc/service/svc',
      '',
    ].join('\n'),
    { mode: 0o755 },
  )
  const sw = join(node.softwareRoot, md5(node.srUrl))
  mkdirSync(sw, { recursive: true })
  writeFileSync(join(sw, 'instance.cfg'), '[buildout]\nparts =\n')
  await node.supply()
  for (const i of [0, 1]) await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: `i${i}`, partitionParameterKw: {}, state: 'started' })
  requested = await node.snapshot()
  const r = await run([])
  assert.is(r.code, 0, r.stderr)
  deployed = await node.snapshot()
})

t.before.each(async () => {
  await node.restore(deployed)
})

t.after(async () => {
  await node?.stop()
})

t('a scripted deployment works (baseline), legacy slapgrid-cp, and the CLI refuses bad combinations (checklist 11)', async () => {
  await node.restore(requested)
  const r = await run([])
  assert.is(r.code, 0, r.stderr)
  assert.is((await groups()).filter((g) => g === 'slappart0' || g === 'slappart1').length, 2)
  assert.is(slapos(['node', 'instance', '--all', '--only-cp', 'slappart0', '--cfg', node.cfgPath]).code, 2)
  assert.is(slapos(['node', 'instance', '--jobs', '0', '--cfg', node.cfgPath]).code, 2)
  assert.match(slapos(['grid', 'instance', '--help']).stdout, /--only-cp/)
  // the 0.35.1 program name with the configuration as a positional argument
  const legacy = await node.run(['--now', '--buildout', script, node.cfgPath], { noCfg: true, argv0: 'slapgrid-cp' })
  assert.is(legacy.code, 0, legacy.stderr)
  assert.match(legacy.stderr, /Processing computer partitions/)
  // the summary table after work, except with -q
  assert.match((await run(['--force'])).stderr, /partition\s+state\s+result\s+duration\nslappart0\s+started\s+deployed/)
  // -q leaves warnings only: here the one of run_as_root (the test node belongs to root)
  const quiet = (await run(['--force', '-q'])).stderr.trim().split('\n')
  assert.equal(quiet.map((l) => l.replace(/^.*WARNING /, '')), ['run_as_root = true: software releases and partitions owned by root build and run as root (set it to false, or give them to unprivileged users)'])
})

t('the certificate is rewritten when it differs from the master (checklist 50)', async () => {
  const crt = join(node.certificateRepository, 'slappart0.crt')
  writeFileSync(crt, 'stale')
  const r = await run(['--force', '--only-cp', 'slappart0'])
  assert.is(r.code, 0, r.stderr)
  // the count is of the selected partitions only
  assert.match(r.stderr, /Finished computer partitions \(1 looked at, 0 failed/)
  const cert = await node.client.getComputerPartitionCertificate(node.computerId, 'slappart0')
  assert.is(readFileSync(crt, 'utf8'), cert.certificate)
  // the files are the partition user's: a huge sparse one, a FIFO (the run does not block), a
  // link (replaced, never written through): each is rewritten
  const key = join(node.certificateRepository, 'slappart0.key')
  const outside = join(node.dir, 'outside-key')
  writeFileSync(outside, 'keep')
  for (const plant of [() => truncateSync(crt, 8 * 2 ** 30), () => (rmSync(crt), spawnSync('mkfifo', [crt])), () => (rmSync(key), symlinkSync(outside, key))]) {
    plant()
    const again = await run(['--force', '--only-cp', 'slappart0'])
    assert.is(again.code, 0, again.stderr)
    assert.is(readFileSync(crt, 'utf8'), cert.certificate)
    assert.is(readFileSync(key, 'utf8'), cert.key)
    assert.ok(lstatSync(crt).isFile() && lstatSync(key).isFile())
  }
  assert.is(readFileSync(outside, 'utf8'), 'keep')
})

t('template.cfg is used when instance.cfg is absent (checklist 65)', async () => {
  const sw = join(node.softwareRoot, md5(node.srUrl))
  renameSync(join(sw, 'instance.cfg'), join(sw, 'template.cfg'))
  writeFileSync(join(sw, 'template.cfg'), '# from template.cfg\n[buildout]\nparts =\n')
  try {
    const r = await run(['--force', '--only-cp', 'slappart0'])
    assert.is(r.code, 0, r.stderr)
    assert.ok(readFileSync(join(node.instanceRoot, 'slappart0/buildout.cfg'), 'utf8').startsWith('# from template.cfg\n'))
  } finally {
    renameSync(join(sw, 'template.cfg'), join(sw, 'instance.cfg'))
  }
})

t('a stopped partition whose buildout fails is still stopped and not reported stopped; it runs no promise (checklist 75, 89)', async () => {
  await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'i1', partitionParameterKw: {}, state: 'stopped' })
  writeFileSync(join(node.instanceRoot, 'slappart1.action'), 'fail')
  mkdirSync(join(node.instanceRoot, 'slappart1/etc/promise'), { recursive: true })
  writeFileSync(join(node.instanceRoot, 'slappart1/etc/promise/p'), '#!/bin/sh\ntouch promise-ran\n', { mode: 0o755 })
  node.clearCalls()
  const r = await run([])
  assert.is(r.code, 1, r.stderr)
  assert.not.ok((await groups()).includes('slappart1'), 'services stopped anyway')
  assert.not.ok(node.calls().some((c) => c.name === 'stoppedComputerPartition'))
  const err = node.calls().find((c) => c.name === 'softwareInstanceError')
  assert.match(err?.fields.error_log ?? '', /^Failed to run buildout profile in directory '.*slappart1':\nstep one\nboom: cannot build/)
  // fixed: stopped and reported, still no promise
  rmSync(join(node.instanceRoot, 'slappart1.action'))
  node.clearCalls()
  const again = await run([])
  assert.is(again.code, 0, again.stderr)
  assert.ok(node.calls().some((c) => c.name === 'stoppedComputerPartition'))
  assert.not.ok(existsSync(join(node.instanceRoot, 'slappart1/promise-ran')))
})

t('the instance buildout gets a clean environment with HOME = the partition (checklist 68)', async () => {
  writeFileSync(join(node.instanceRoot, 'slappart0.action'), 'env')
  const r = await node.run(['node', 'instance', '--now', '--buildout', script, '--force', '--only-cp', 'slappart0'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/root', LANG: 'C.UTF-8', LC_ALL: 'C', TMPDIR: '/tmp', PYTHONPATH: '/x' },
  })
  rmSync(join(node.instanceRoot, 'slappart0.action'))
  assert.is(r.code, 0, r.stderr)
  const env = Object.fromEntries(readFileSync(join(node.instanceRoot, 'slappart0/buildout-env.txt'), 'utf8').trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  assert.is(env.HOME, join(node.instanceRoot, 'slappart0'))
  assert.is(env.PYTHONNOUSERSITE, 'true')
  assert.is(env.SLAPGRID_INSTANCE_ROOT, node.instanceRoot)
  for (const k of ['LANG', 'LC_ALL', 'TMPDIR', 'PYTHONPATH']) assert.is(env[k], undefined, k)
})

t('a started partition without services gets a warning and is still reported started (checklist 26)', async () => {
  writeFileSync(join(node.instanceRoot, 'slappart0.action'), 'noservice')
  node.clearCalls()
  const r = await run(['--force', '--only-cp', 'slappart0'])
  rmSync(join(node.instanceRoot, 'slappart0.action'))
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, /WARNING.*No service to run in slappart0/)
  assert.ok(node.calls().some((c) => c.name === 'startedComputerPartition' && c.fields.computer_partition_id === 'slappart0'))
  assert.not.ok((await groups()).includes('slappart0'))
  const back = await run(['--force', '--only-cp', 'slappart0'])
  assert.is(back.code, 0, back.stderr)
  assert.ok((await groups()).includes('slappart0'))
})

t('on a terminal, a progress line shows the running buildout, cleared before log lines', async () => {
  writeFileSync(join(node.instanceRoot, 'slappart0.action'), 'sleep')
  const cmd = [SLAPOS, 'node', 'instance', '--now', '--buildout', script, '--force', '--only-cp', 'slappart0', '--partition-timeout', '2', '--cfg', node.cfgPath].join(' ')
  // script(1) gives the run a terminal; its stdin stays open (an EOF there would hang the session up)
  const r = await new Promise<{ stdout: string }>((res) => {
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/root', TERM: 'xterm' }, stdio: ['pipe', 'pipe', 'inherit'] })
    let stdout = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.on('close', () => {
      clearTimeout(timer)
      child.stdin.destroy()
      res({ stdout })
    })
  })
  rmSync(join(node.instanceRoot, 'slappart0.action'))
  assert.match(r.stdout, /\r\x1b\[Kbuildout: slappart0 \d+s/, JSON.stringify(r.stdout.slice(0, 3000)))
  assert.match(r.stdout, /\r\x1b\[K[^\r]*ERROR/, 'line cleared before the error')
  const fixed = await run(['--force', '--only-cp', 'slappart0'])
  assert.is(fixed.code, 0, fixed.stderr)
})

t('instance_min_free_space: not enough room fails the partition before its buildout', async () => {
  const cfg = join(node.dir, 'slapos-full.cfg')
  writeFileSync(cfg, readFileSync(node.cfgPath, 'utf8').replace('[slapos]\n', '[slapos]\ninstance_min_free_space = 1000T\n'))
  node.clearCalls()
  const r = await node.run(['node', 'instance', '--now', '--buildout', script, '--force', '--only-cp', 'slappart0', '--cfg', cfg], { noCfg: true })
  assert.is(r.code, 1, r.stderr)
  const err = node.calls().find((c) => c.name === 'softwareInstanceError')
  assert.match(err?.fields.error_log ?? '', /^Not enough free space in .*slappart0: \d+M available, instance_min_free_space asks for 1000T$/)
})

t('one bin/bootstrap* of the software release makes sbin/buildout, which then runs; two are refused (checklist 69)', async () => {
  const bin = join(node.softwareRoot, md5(node.srUrl), 'bin')
  mkdirSync(bin, { recursive: true })
  writeFileSync(join(bin, 'bootstrap-buildout'), "#!/bin/sh\nmkdir -p sbin\nprintf '#!/bin/sh\\ntouch sbin-buildout-ran\\n' > sbin/buildout\nchmod 755 sbin/buildout\n", { mode: 0o755 })
  try {
    const r = await run(['--force', '--only-cp', 'slappart0'])
    assert.is(r.code, 0, r.stderr)
    assert.ok(existsSync(join(node.instanceRoot, 'slappart0/sbin-buildout-ran')))
    writeFileSync(join(bin, 'bootstrap-other'), '#!/bin/sh\n', { mode: 0o755 })
    node.clearCalls()
    const two = await run(['--force', '--only-cp', 'slappart0'])
    assert.is(two.code, 1, two.stderr)
    assert.match(node.calls().find((c) => c.name === 'softwareInstanceError')?.fields.error_log ?? '', /More than one bootstrap candidate/)
  } finally {
    rmSync(bin, { recursive: true, force: true })
  }
})

t('links an instance plants in its partition are not followed by root (written, read, chowned)', async () => {
  const p0 = join(node.instanceRoot, 'slappart0')
  const victim = join(node.dir, 'victim')
  writeFileSync(victim, 'precious\n')
  const victimDir = join(node.dir, 'victim-dir')
  mkdirSync(victimDir, { recursive: true })
  writeFileSync(join(node.instanceRoot, 'secret-path'), victim)
  writeFileSync(join(node.instanceRoot, 'slappart0.action'), 'linktransaction')
  rmSync(join(p0, '.timestamp'), { force: true })
  symlinkSync(victim, join(p0, '.timestamp'))
  rmSync(join(p0, '.slapgrid/log/instance.log'), { force: true })
  symlinkSync(victim, join(p0, '.slapgrid/log/instance.log'))
  rmSync(join(p0, '.slapgrid/promise'), { recursive: true, force: true })
  symlinkSync(victimDir, join(p0, '.slapgrid/promise'))
  mkdirSync(join(p0, 'etc/promise'), { recursive: true })
  writeFileSync(join(p0, 'etc/promise/fine'), '#!/bin/sh\nexit 0\n', { mode: 0o755 })
  node.clearCalls()
  // --force: the old .timestamp (here the link) is kept until it is replaced after success
  const r = await run(['--force', '--only-cp', 'slappart0'])
  rmSync(join(node.instanceRoot, 'slappart0.action'))
  rmSync(join(p0, 'etc/promise/fine'))
  assert.is(r.code, 0, r.stderr)
  assert.is(readFileSync(victim, 'utf8'), 'precious\n', 'nothing written through the links')
  assert.equal(readdirSync(victimDir), [], 'no promise result written through a linked directory')
  assert.ok(lstatSync(join(p0, '.timestamp')).isFile(), '.timestamp replaced by a real file')
  assert.ok(lstatSync(join(p0, '.slapgrid/promise')).isDirectory())
  assert.ok(existsSync(join(p0, '.slapgrid/promise/result/fine.status.json')))
  assert.not.ok(node.calls().some((c) => c.name === 'updateComputerPartitionRelatedInstanceList'), 'a linked transaction file is not read')
  rmSync(join(p0, `.slapos-request-transaction-slappart0`), { force: true })
})

t('partition_timeout kills a buildout that runs too long (checklist 78)', async () => {
  writeFileSync(join(node.instanceRoot, 'slappart0.action'), 'sleep')
  const start = Date.now()
  const r = await run(['--force', '--only-cp', 'slappart0', '--partition-timeout', '1'])
  rmSync(join(node.instanceRoot, 'slappart0.action'))
  assert.is(r.code, 1, r.stderr)
  assert.ok(Date.now() - start < 20_000, 'did not wait for the 60 s sleep')
  assert.match(readFileSync(join(node.instanceRoot, 'slappart0/.slapgrid-slappart0-error.log'), 'utf8'), /killed after 1 s \(timeout\)/)
})

t('instances requested during buildout are sent after success; the file goes at the next processing (checklist 81)', async () => {
  writeFileSync(join(node.instanceRoot, 'slappart0.action'), 'transaction')
  node.clearCalls()
  const r = await run(['--force', '--only-cp', 'slappart0'])
  rmSync(join(node.instanceRoot, 'slappart0.action'))
  assert.is(r.code, 0, r.stderr)
  const call = node.calls().find((c) => c.name === 'updateComputerPartitionRelatedInstanceList')
  assert.ok(call, 'sent')
  assert.equal(loads(call!.fields.instance_reference_xml ?? ''), ['inst-a', 'inst-b'])
  // the proxy does not implement it (404): a warning, not a failure
  assert.match(r.stderr, /WARNING/)
  const file = join(node.instanceRoot, 'slappart0/.slapos-request-transaction-slappart0')
  assert.ok(existsSync(file))
  const again = await run([])
  assert.is(again.code, 0, again.stderr)
  assert.not.ok(existsSync(file), 'deleted at the start of the next processing')
})

t('a software release that is not installed fails only its partition (checklist 64)', async () => {
  await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'i1', partitionParameterKw: {}, state: 'destroyed' })
  // the proxy frees slappart1 once it is reported destroyed; request a new instance of another SR
  await node.client.destroyedComputerPartition(node.computerId, 'slappart1').catch(() => undefined)
  await node.client.supplySupply(SR2, node.computerId, 'available')
  await node.client.requestComputerPartition({ softwareRelease: SR2, partitionReference: 'other', partitionParameterKw: {}, state: 'started' })
  node.clearCalls()
  const r = await run(['--force'])
  assert.is(r.code, 1, r.stderr)
  const err = node.calls().find((c) => c.name === 'softwareInstanceError')
  assert.is(err?.fields.error_log, `Software Release ${SR2} is not present on system.`)
  assert.ok(node.calls().some((c) => c.name === 'startedComputerPartition' && c.fields.computer_partition_id === 'slappart0'))
})

t('a master answering 503 (maintenance) is a lost master: offline mode, services kept, exit 3', async () => {
  const { createServer } = await import('node:http')
  const server = createServer((_req, res) => res.writeHead(503, { 'Content-Type': 'text/plain' }).end('down for maintenance'))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  try {
    const { port } = server.address() as import('node:net').AddressInfo
    const r = await run(['--master-url', `http://127.0.0.1:${port}/`, '--json'])
    assert.is(r.code, 3, r.stderr)
    assert.match(r.stderr, /offline mode/)
    const out = JSON.parse(r.stdout) as { exitCode: number; offline: boolean }
    assert.equal([out.exitCode, out.offline], [3, true])
    assert.ok((await groups()).includes('slappart0'), 'the services are kept')
  } finally {
    await new Promise<void>((r) => server.close(() => r()))
  }
})

t('the master lost in the middle of a run: offline mode, exit 3 (checklist 98)', async () => {
  // talk to the proxy directly and stop it while the first partition's buildout runs
  writeFileSync(join(node.instanceRoot, 'slappart0.action'), 'sleep')
  rmSync(join(node.instanceRoot, 'slappart0.sleeping'), { force: true })
  const running = run(['--force', '--master-url', node.proxy.url, '--partition-timeout', '3'])
  // the barrier: the buildout of the first partition has started
  await waitFor('the buildout to run', async () => (existsSync(join(node.instanceRoot, 'slappart0.sleeping')) ? true : undefined), 60_000)
  await node.proxy.stop()
  const r = await running
  rmSync(join(node.instanceRoot, 'slappart0.action'))
  assert.is(r.code, 3, r.stderr)
  assert.match(r.stderr, /offline mode/)
})

t.run()

// --- helpers ---

function run(extra: string[]) {
  return node.run(['node', 'instance', '--now', '--buildout', script, ...extra], { timeoutMs: 120_000 })
}

async function groups(): Promise<string[]> {
  const list = await new Supervisor(supervisorPaths(node.instanceRoot), quiet).processInfo()
  return [...new Set(list.map((p) => p.group))]
}

function md5(s: string): string {
  return createHash('md5').update(s, 'utf8').digest('hex')
}
