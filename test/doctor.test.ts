// `slapos node doctor` end to end: the built binary on a test node of node-helpers.ts (our
// proxy behind the recording tap, real supervisord, real buildout, the sample Software Release
// deployed in one partition). The healthy node gives every check ok and changes nothing; then
// one thing at a time is broken (each test starts again from the deployed state) and the
// right line must turn warning or problem, with what to do.
import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { createLogger } from '../src/log.ts'
import { md5hex } from '../src/md5.ts'
import { Supervisor, supervisorPaths } from '../src/supervisor.ts'
import { ROOT, skip } from './helpers.ts'
import { freePorts, makeNode, stopSupervisord, type NodeSnapshot, type TestNode } from './node-helpers.ts'

interface JsonCheck {
  name: string
  status: 'ok' | 'warning' | 'problem'
  message: string
  hint: string | null
}
interface Report {
  checks: JsonCheck[]
  summary: { checks: number; ok: number; warning: number; problem: number; exitCode: number }
}

const t = suite('node doctor (built binary, deployed test node)')
const quiet = createLogger({ level: 'critical', write: () => undefined })
const NOBODY = 65534

interface State {
  node: TestNode
  /** a copy of the package's cron file, as installed */
  cron: string
  /** the partition of the deployed instance */
  id: string
  deployed: NodeSnapshot
}
let S: State | undefined

t.before(async () => {
  if (process.getuid?.() !== 0) return
  const node = await makeNode({ partitions: 2 })
  S = { node } as State
  const cron = join(node.dir, 'slapos-node.cron')
  copyFileSync(join(ROOT, 'packaging', 'slapos-node.cron'), cron)
  chmodSync(cron, 0o644)
  await node.supply()
  const inst = await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'doctor', state: 'started' })
  const sw = await node.run(['node', 'software', '--now'])
  assert.is(sw.code, 0, sw.stderr)
  const r = await node.run(['node', 'instance', '--now'])
  assert.is(r.code, 0, r.stderr)
  S = { node, cron, id: inst.slap_computer_partition_id ?? '', deployed: await node.snapshot() }
})

t.before.each(async () => {
  if (S?.deployed) await S.node.restore(S.deployed)
})

t.after(async () => {
  await S?.node.stop()
})

/**
 * Runs the doctor (--json) with the test cron file (as `user` with `env` when given); the
 * parsed report, the exit status and stderr.
 */
async function doctor(opts: { cfg?: string; cron?: string; user?: { uid: number; gid: number }; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; report: Report; stderr: string }> {
  const { node, cron } = S!
  const args = ['node', 'doctor', '--json', '--cron-file', opts.cron ?? cron]
  const as = { user: opts.user, env: opts.env }
  const r = opts.cfg ? await node.run([...args, '--cfg', opts.cfg], { noCfg: true, ...as }) : await node.run(args, as)
  let report: Report
  try {
    report = JSON.parse(r.stdout) as Report
  } catch {
    throw new Error(`node doctor --json printed no JSON document (exit ${r.code}):\n${r.stdout}\n${r.stderr}`)
  }
  return { code: r.code, report, stderr: r.stderr }
}

function check(report: Report, name: string): JsonCheck {
  const c = report.checks.find((x) => x.name === name)
  assert.ok(c, `a check named ${name} in ${JSON.stringify(report.checks.map((x) => x.name))}`)
  return c!
}

/** The one check that is not ok, with its status; every other check stays ok. */
function onlyBad(report: Report, name: string, status: 'warning' | 'problem'): JsonCheck {
  const bad = report.checks.filter((c) => c.status !== 'ok')
  assert.equal(bad.map((c) => [c.name, c.status]), [[name, status]], JSON.stringify(bad, null, 1))
  const c = check(report, name)
  assert.ok(c.hint && c.hint.length > 5, `${name} says what to do`)
  return c
}

/** A second configuration: the test node's with `edit` applied to its text. */
function altCfg(edit: (text: string) => string): string {
  const { node } = S!
  const path = join(node.dir, 'doctor-alt.cfg')
  writeFileSync(path, edit(readFileSync(node.cfgPath, 'utf8')))
  return path
}

/** mtime, ctime, size, mode and owner of every file under the test node (its proxy's database aside). */
function tree(dir: string, out = new Map<string, string>()): Map<string, string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (p === join(S!.node.dir, 'proxy')) continue
    const st = lstatSync(p)
    out.set(p, `${st.mtimeMs} ${st.ctimeMs} ${st.size} ${st.mode} ${st.uid}:${st.gid}`)
    if (st.isDirectory()) tree(p, out)
  }
  return out
}

async function processes(): Promise<string[]> {
  const sup = new Supervisor(supervisorPaths(S!.node.instanceRoot), quiet)
  return (await sup.processInfo()).map((p) => `${p.group}:${p.name} ${p.statename} ${p.pid}`).sort()
}

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' })
  assert.is(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`)
}

/** A key and a self-signed certificate for it, valid `days` days from now (negative: expired). */
function certificate(dir: string, name: string, days: number): { key: string; cert: string } {
  const key = join(dir, `${name}.key`)
  const csr = join(dir, `${name}.csr`)
  const cert = join(dir, `${name}.crt`)
  openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`])
  openssl(['x509', '-req', '-in', csr, '-signkey', key, '-out', cert, '-days', String(days)])
  chmodSync(key, 0o600)
  return { key, cert }
}

function withTls(files: { key: string; cert: string }): string {
  return altCfg((text) => text.replace('[slapos]\n', `[slapos]\nkey_file = ${files.key}\ncert_file = ${files.cert}\n`))
}

const EXPECTED = (node: TestNode, id: string) => [
  'configuration',
  'software root',
  'instance root',
  'certificate repository',
  'tls certificate',
  'master',
  'supervisord',
  'watchdog',
  'cron',
  'pidfile software',
  'pidfile instance',
  'pidfile report',
  'pidfile collect',
  'disk software root',
  'disk instance root',
  'buildout',
  `software release ${md5hex(node.srUrl)}`,
  'partitions',
  `partition ${id}`,
]

t('a healthy deployed node: every check ok, exit 0, and nothing changed (files, master, supervisord)', async () => {
  if (!S) return skip('needs root (the test node runs supervisord and services as root)')
  const { node, id } = S
  const before = tree(node.dir)
  const procs = await processes()
  node.clearCalls()
  const { code, report, stderr } = await doctor()
  assert.is(code, 0, JSON.stringify(report, null, 1) + stderr)
  assert.equal(report.checks.map((c) => c.name), EXPECTED(node, id))
  for (const c of report.checks) assert.is(c.status, 'ok', `${c.name}: ${c.message}`)
  assert.equal(report.summary, { checks: EXPECTED(node, id).length, ok: EXPECTED(node, id).length, warning: 0, problem: 0, exitCode: 0 })
  assert.match(check(report, `partition ${id}`).message, /^started, 1\/1 promise\(s\) pass, 1\/1 service\(s\) running$/)
  assert.match(check(report, `software release ${md5hex(node.srUrl)}`).message, /: installed \(/)
  assert.match(check(report, 'master').message, /answers for computer 'computer': 1 software release\(s\), 2 partition\(s\)/)
  assert.match(check(report, 'partitions').message, '1 in use, 1 free')
  assert.match(check(report, 'buildout').message, node.buildout)
  // the master heard one read, nothing else
  assert.equal(node.calls().map((c) => `${c.verb} ${c.name}`), ['GET getFullComputerInformation'])
  assert.equal(tree(node.dir), before, 'no file of the node changed')
  assert.equal(await processes(), procs, 'supervisord runs the same processes')

  // the text form: one line per check, then the summary
  const text = await node.run(['node', 'doctor', '--cron-file', S.cron])
  assert.is(text.code, 0, text.stderr)
  const lines = text.stdout.trimEnd().split('\n')
  assert.is(lines.length, EXPECTED(node, id).length + 1)
  assert.match(lines[0] ?? '', /^ok {7}configuration: .*slapos\.cfg: computer 'computer'/)
  assert.is(lines.at(-1), `${EXPECTED(node, id).length} checks: ${EXPECTED(node, id).length} ok, 0 warnings, 0 problems`)
})

t('master unreachable: master is a problem, the software and partitions are read from the disk', async () => {
  if (!S) return skip('needs root')
  const [port] = await freePorts(1)
  const cfg = altCfg((text) => text.replace(/^master_url = .*$/m, `master_url = http://127.0.0.1:${port}/`))
  const { code, report } = await doctor({ cfg })
  assert.is(code, 1)
  const master = onlyBad(report, 'master', 'problem')
  assert.match(master.message, `127.0.0.1:${port}`)
  assert.match(master.hint ?? '', 'master_url')
  assert.match(check(report, `software release ${md5hex(S.node.srUrl)}`).message, 'installed')
  assert.match(check(report, `partition ${S.id}`).message, 'state unknown')
})

t('a stale pid file is a warning (exit 0), named with what to do', async () => {
  if (!S) return skip('needs root')
  // the pid of a process that has ended
  const gone = spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim()
  writeFileSync(S.node.pidfiles.instance, gone)
  const { code, report } = await doctor()
  assert.is(code, 0, 'warnings alone exit 0')
  const c = onlyBad(report, 'pidfile instance', 'warning')
  assert.match(c.message, `stale: process ${gone} is not a running slapos`)
  assert.match(c.hint ?? '', `rm ${S.node.pidfiles.instance}`)
})

t('supervisord stopped: supervisord and watchdog are problems, and the doctor does not start it', async () => {
  if (!S) return skip('needs root')
  await stopSupervisord(S.node.instanceRoot)
  const { code, report } = await doctor()
  assert.is(code, 1)
  const bad = report.checks.filter((c) => c.status !== 'ok').map((c) => [c.name, c.status])
  assert.equal(bad, [
    ['supervisord', 'problem'],
    ['watchdog', 'problem'],
  ])
  assert.match(check(report, 'supervisord').hint ?? '', 'slapos node supervisord')
  const sock = supervisorPaths(S.node.instanceRoot).socket
  const state = await new Supervisor(supervisorPaths(S.node.instanceRoot), quiet).getState(2000).catch(() => 'not running')
  assert.is(state, 'not running', `supervisord (${sock}) still stopped`)
})

t('a partition whose last run failed, then one whose promise fails: the partition is a problem', async () => {
  if (!S) return skip('needs root')
  const { node, id } = S
  // the release's instance profile gone: node instance fails on this partition
  const template = join(node.softwareRoot, md5hex(node.srUrl), 'instance.cfg')
  renameSync(template, `${template}.away`)
  try {
    const r = await node.run(['node', 'instance', '--now', '--force'])
    assert.is(r.code, 1, r.stderr)
  } finally {
    renameSync(`${template}.away`, template)
  }
  let { code, report } = await doctor()
  assert.is(code, 1)
  let c = onlyBad(report, `partition ${id}`, 'problem')
  assert.match(c.message, /^started: its last run failed: /)
  assert.match(c.hint ?? '', `slapos node instance --now --only-cp ${id}`)

  await node.restore(S.deployed)
  const promise = join(node.instanceRoot, id, 'etc', 'promise', 'disk-full')
  writeFileSync(promise, '#!/bin/sh\necho "no space left for the cache" >&2\nexit 1\n', { mode: 0o755 })
  const p = await node.run(['node', 'promise', '--now'])
  assert.is(p.code, 2, p.stderr)
  ;({ code, report } = await doctor())
  assert.is(code, 1)
  c = onlyBad(report, `partition ${id}`, 'problem')
  assert.match(c.message, `promise 'disk-full' fails: no space left for the cache`)
  assert.match(c.hint ?? '', `slapos node promise --now --only-cp ${id}`)
})

t('a service of a started partition stopped: the partition is a problem', async () => {
  if (!S) return skip('needs root')
  await new Supervisor(supervisorPaths(S.node.instanceRoot), quiet).stopGroup(S.id)
  const { code, report } = await doctor()
  assert.is(code, 1)
  const c = onlyBad(report, `partition ${S.id}`, 'problem')
  assert.match(c.message, /^started: service\(s\) not running: http-server-on-watch STOPPED$/)
  assert.match(c.hint ?? '', 'slapos node status')
})

t('a software release whose build failed is a problem', async () => {
  if (!S) return skip('needs root')
  const { node } = S
  const broken = join(node.dir, 'broken.cfg')
  writeFileSync(broken, '[buildout]\nparts = nothing\noffline = true\n\n[nothing]\nrecipe = no.such.recipe\n')
  await node.supply(broken)
  const sw = await node.run(['node', 'software', '--now'])
  assert.is(sw.code, 1, sw.stderr)
  const { code, report } = await doctor()
  assert.is(code, 1)
  const c = onlyBad(report, `software release ${md5hex(broken)}`, 'problem')
  assert.match(c.message, `'${broken}': not installed, its last build failed`)
  assert.match(c.hint ?? '', 'slapos node software --now')
})

t('a missing mandatory key: configuration is a problem, exit 1', async () => {
  if (!S) return skip('needs root')
  const cfg = altCfg((text) => text.replace(/^software_root = .*\n/m, ''))
  const { code, report } = await doctor({ cfg })
  assert.is(code, 1)
  assert.equal(report.checks.map((c) => [c.name, c.status]), [
    ['configuration', 'problem'],
    ['cron', 'ok'],
  ])
  assert.match(check(report, 'configuration').message, 'Missing mandatory parameters: software_root')
  assert.match(check(report, 'configuration').hint ?? '', 'set them in [slapos]')
})

t('a root directory writable by others, or owned by another user: a problem', async () => {
  if (!S) return skip('needs root')
  const { node } = S
  chmodSync(node.instanceRoot, 0o777)
  let { code, report } = await doctor()
  assert.is(code, 1)
  let c = onlyBad(report, 'instance root', 'problem')
  assert.match(c.message, 'writable by group or others (mode 0777)')
  assert.match(c.hint ?? '', `chmod 755 ${node.instanceRoot}`)
  chmodSync(node.instanceRoot, 0o755)

  const st = statSync(node.softwareRoot)
  chownSync(node.softwareRoot, NOBODY, NOBODY)
  try {
    ;({ code, report } = await doctor())
  } finally {
    chownSync(node.softwareRoot, st.uid, st.gid)
  }
  assert.is(code, 1)
  c = check(report, 'software root')
  assert.is(c.status, 'problem')
  assert.match(c.message, `${node.softwareRoot} belongs to nobody`)
  assert.match(c.hint ?? '', 'chown')
})

t('TLS: an expired certificate, a key that is not its own, one expiring soon', async () => {
  if (!S) return skip('needs root')
  const dir = join(S.node.dir, 'tls')
  spawnSync('mkdir', ['-p', dir])
  const expired = certificate(dir, 'expired', -1)
  let { code, report } = await doctor({ cfg: withTls(expired) })
  assert.is(code, 1)
  let c = onlyBad(report, 'tls certificate', 'problem')
  assert.match(c.message, /cert_file expired on \d{4}-\d\d-\d\d/)

  const good = certificate(dir, 'good', 365)
  const other = certificate(dir, 'other', 365)
  ;({ code, report } = await doctor({ cfg: withTls({ key: other.key, cert: good.cert }) }))
  assert.is(code, 1)
  c = onlyBad(report, 'tls certificate', 'problem')
  assert.match(c.message, `key_file ${other.key} is not the key of cert_file ${good.cert}`)

  ;({ code, report } = await doctor({ cfg: withTls(good) }))
  assert.is(code, 0)
  assert.match(check(report, 'tls certificate').message, /the key matches, expires in 36[45] days/)

  const soon = certificate(dir, 'soon', 10)
  ;({ code, report } = await doctor({ cfg: withTls(soon) }))
  assert.is(code, 0, 'a warning alone exits 0')
  c = onlyBad(report, 'tls certificate', 'warning')
  assert.match(c.message, /cert_file expires in (9|10) days/)
})

t('the cron file absent is a problem, a changed one a warning', async () => {
  if (!S) return skip('needs root')
  const { code, report } = await doctor({ cron: join(S.node.dir, 'no-such-cron') })
  assert.is(code, 1)
  const c = onlyBad(report, 'cron', 'problem')
  assert.match(c.message, 'is missing')
  assert.match(c.hint ?? '', 'reinstall the slapos package')

  const changed = join(S.node.dir, 'changed.cron')
  writeFileSync(changed, readFileSync(S.cron, 'utf8').replace('--maximal_delay=20', '--maximal_delay=5'), { mode: 0o644 })
  const r = await doctor({ cron: changed })
  assert.is(r.code, 0)
  const w = onlyBad(r.report, 'cron', 'warning')
  assert.match(w.message, /1 of the package's lines missing or changed \(first: \* \* \* \* \* root \/opt\/slapos\/bin\/slapos node instance --maximal_delay=20 /)
  assert.match(w.message, /1 line\(s\) the package does not write \(first: .*--maximal_delay=5 /)

  chmodSync(changed, 0o666)
  const loose = await doctor({ cron: changed })
  assert.match(onlyBad(loose.report, 'cron', 'problem').message, 'cron ignores it')
})

t('as nobody with a plain PATH: a full report (--json), what it may not look at a warning, the exit status as documented', async () => {
  if (!S) return skip('needs root (to run the doctor as nobody)')
  const { node, id } = S
  // buildout named without a slash, found on a PATH whose first directory nobody may not search
  const locked = join(node.dir, 'locked-bin')
  mkdirSync(locked, { mode: 0o700 })
  const cfg = altCfg((text) => text.replace(/^buildout = .*$/m, 'buildout = buildout'))
  const env = { PATH: `${locked}:${dirname(node.buildout)}:/usr/bin:/bin`, HOME: '/tmp' }
  const { code, report, stderr } = await doctor({ cfg, user: { uid: NOBODY, gid: NOBODY }, env })
  assert.equal(report.checks.map((c) => c.name), EXPECTED(node, id), stderr)
  // documented: 1 when a check is a problem, else 0 (warnings allowed)
  assert.is(code, report.checks.some((c) => c.status === 'problem') ? 1 : 0)
  assert.is(report.summary.exitCode, code)
  for (const c of report.checks) assert.not.match(c.message, 'could not be checked', `${c.name}: ${c.message}`)
  assert.not.match(stderr, /EACCES|ERROR/)
  // the partition (0750, its user's) and instance_root/var/run (0700): warnings, run as root
  const p = check(report, `partition ${id}`)
  assert.is(p.status, 'warning', p.message)
  assert.match(p.message, `started: the files of ${join(node.instanceRoot, id)} cannot be examined by this user (EACCES)`)
  assert.is(p.hint, 'run the doctor as root')
  const collectPid = check(report, 'pidfile collect')
  assert.is(collectPid.status, 'warning', collectPid.message)
  assert.match(collectPid.message, 'cannot be examined by this user (EACCES)')
  // supervisord's socket is root's (0700): nobody cannot tell whether it runs, nothing is known wrong
  for (const name of ['supervisord', 'watchdog']) {
    const c = check(report, name)
    assert.is(c.status, 'warning', `${name}: ${c.message}`)
    assert.match(c.message, 'cannot be examined by this user (EACCES)')
  }
  assert.is(check(report, 'master').status, 'ok')
  const buildout = check(report, 'buildout')
  assert.is(buildout.status, 'ok', buildout.message)
  assert.match(buildout.message, `${node.buildout}: `)
})

t('software_root a file while the master answers: the roots and releases say so, the report goes on', async () => {
  if (!S) return skip('needs root')
  const { node, id } = S
  const file = join(node.dir, 'not-a-directory')
  writeFileSync(file, 'x')
  const cfg = altCfg((text) => text.replace(/^software_root = .*$/m, `software_root = ${file}`))
  const { code, report } = await doctor({ cfg })
  assert.is(code, 1)
  assert.equal(report.checks.map((c) => c.name), EXPECTED(node, id))
  const root = check(report, 'software root')
  assert.is(root.status, 'problem')
  assert.match(root.message, `${file} is not a directory`)
  const sr = check(report, `software release ${md5hex(node.srUrl)}`)
  assert.is(sr.status, 'problem')
  assert.match(sr.message, 'cannot be examined (ENOTDIR)')
  assert.match(sr.hint ?? '', 'fix software_root')
  for (const c of report.checks) assert.not.match(c.message, 'could not be checked', `${c.name}: ${c.message}`)
})

t('a hostile partition: links, a FIFO, a huge error log, control characters; nothing of the link targets shown, all escaped', async () => {
  if (!S) return skip('needs root')
  const { node, id } = S
  const part = join(node.instanceRoot, id)
  const result = join(part, '.slapgrid', 'promise', 'result')
  const shadow = readFileSync('/etc/shadow', 'utf8')
  const secret = join(node.dir, 'elsewhere')
  mkdirSync(secret)
  writeFileSync(join(secret, 'x.status.json'), JSON.stringify({ name: 'x', result: { failed: true, message: 'SECRET ELSEWHERE' } }))
  // the error log a link to /etc/shadow, the result directory a link to a directory of root's
  symlinkSync('/etc/shadow', join(part, `.slapgrid-${id}-error.log`))
  rmSync(result, { recursive: true, force: true })
  symlinkSync(secret, result)
  const linked = await doctor()
  assert.is(linked.code, 0, 'warnings alone')
  const w = onlyBad(linked.report, `partition ${id}`, 'warning')
  assert.match(w.message, 'its error log is not a regular file (a symbolic link)')
  assert.match(w.message, `its promise results cannot be read: ${result} is a symbolic link`)
  const out = JSON.stringify(linked.report)
  assert.not.match(out, 'SECRET ELSEWHERE')
  for (const line of shadow.split('\n').filter((l) => l.includes(':'))) assert.not.ok(out.includes(line.slice(0, line.lastIndexOf(':'))), 'a line of /etc/shadow shown')

  await node.restore(S.deployed)
  // an error log of 200 KiB whose reason is its last line, a FIFO where a result goes, a
  // result whose name is long and whose message moves the terminal's cursor
  writeFileSync(join(part, `.slapgrid-${id}-error.log`), 'noise of a long run\n'.repeat(10_000) + 'Traceback (most recent call last):\nRuntimeError: the real reason\n')
  const fifo = spawnSync('mkfifo', [join(result, 'zz.status.json')])
  assert.is(fifo.status, 0, 'mkfifo')
  const longName = `evil\u001b[2J${'n'.repeat(10_000)}`
  writeFileSync(join(result, 'aa.status.json'), JSON.stringify({ name: longName, result: { failed: true, message: '\u001b[31mred\u0007\nsecond line' } }))
  const { code, report } = await doctor()
  assert.is(code, 1)
  const c = onlyBad(report, `partition ${id}`, 'problem')
  assert.match(c.message, /^started: its last run failed: RuntimeError: the real reason; /)
  assert.match(c.message, `promise 'evil\\x1b[2J${'n'.repeat(69)}...' fails: \\x1b[31mred\\x07\\nsecond line`)
  assert.ok(c.message.length < 1000, 'the name is cut')
  // the text form: no control character reaches the terminal, one line per check
  const text = await node.run(['node', 'doctor', '--cron-file', S.cron])
  assert.is(text.code, 1)
  assert.not.ok(/[\u0000-\u0009\u000b-\u001f\u007f]/.test(text.stdout), 'no control character but newlines')
  assert.is(text.stdout.trimEnd().split('\n').length, EXPECTED(node, id).length + 1)
})

t.run()
