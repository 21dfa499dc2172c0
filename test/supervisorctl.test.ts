// slapos node supervisord, node supervisorctl and the verbs node status|start|stop|restart|tail
// through the built binary, with the real supervisord and supervisorctl.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { createLogger } from '../src/log.ts'
import { startPartitionServices, Supervisor, supervisorPaths } from '../src/supervisor.ts'
import { SLAPOS, tempDir } from './helpers.ts'
import { baseEnv, makeNode, runAs, waitFor, type TestNode } from './node-helpers.ts'

const ctl = suite('node supervisorctl')
let node: TestNode
const pidFile = () => join(node.instanceRoot, 'var', 'run', 'supervisord.pid')

ctl.before(async () => {
  node = await makeNode({ partitions: 1 })
})
ctl.after(async () => {
  await node.stop()
})

ctl('node supervisord writes the configuration and starts supervisord once', async () => {
  const r = await node.run(['node', 'supervisord'])
  assert.is(r.code, 0, r.stderr)
  const conf = readFileSync(join(node.instanceRoot, 'etc', 'supervisord.conf'), 'utf8')
  assert.match(conf, `command=${SLAPOS} node watchdog --master-url '${node.masterUrl}' --computer-id '${node.computerId}' --certificate-repository-path '${node.certificateRepository}' --instance-root '${node.instanceRoot}'`)
  const pid = readFileSync(pidFile(), 'utf8').trim()
  assert.ok(existsSync(`/proc/${pid}`))
  const again = await node.run(['node', 'supervisord'])
  assert.is(again.code, 0, again.stderr)
  assert.is(readFileSync(pidFile(), 'utf8').trim(), pid, 'already running: not started twice')
})

ctl('node status / start / stop / restart / tail act on <partition>:<program>', async () => {
  const part = join(node.instanceRoot, 'slappart0')
  mkdirSync(join(part, 'etc', 'service'), { recursive: true })
  writeFileSync(join(part, 'etc', 'service', 'daemon'), '#!/bin/sh\necho daemon says hello\nexec sleep 300\n', { mode: 0o755 })
  const sup = new Supervisor(supervisorPaths(node.instanceRoot), createLogger({ level: 'warning' }))
  await startPartitionServices(sup, node.instanceRoot, { id: 'slappart0', path: part, uid: 0, gid: 0, user: 'root', home: '/root' }, createLogger({ level: 'warning' }))
  await waitFor('daemon-on-watch running', async () => ((await sup.processInfo()).some((p) => p.name === 'daemon-on-watch' && p.statename === 'RUNNING') || undefined))
  // an event listener stays STARTING for its first second (supervisord's startsecs)
  await waitFor('watchdog running', async () => ((await sup.processInfo()).some((p) => p.name === 'watchdog' && p.statename === 'RUNNING') || undefined))

  let r = await node.run(['node', 'status'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, /slappart0:daemon-on-watch\s+RUNNING/)
  assert.match(r.stdout, /watchdog\s+RUNNING/)

  r = await node.run(['node', 'stop', 'slappart0:daemon-on-watch'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, /slappart0:daemon-on-watch: stopped/)
  r = await node.run(['node', 'status', 'slappart0:*'])
  assert.match(r.stdout, /slappart0:daemon-on-watch\s+STOPPED/)
  assert.not.match(r.stdout, /watchdog/)
  // supervisorctl's own status (3: a process is not running) reaches the caller as is
  assert.is(r.code, 3, r.stderr)

  r = await node.run(['node', 'start', 'slappart0:daemon-on-watch'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, /slappart0:daemon-on-watch: started/)
  const pid1 = (await sup.processInfo()).find((p) => p.name === 'daemon-on-watch')?.pid
  r = await node.run(['node', 'restart', 'slappart0:'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, /slappart0:daemon-on-watch: started/)
  const pid2 = (await sup.processInfo()).find((p) => p.name === 'daemon-on-watch')?.pid
  assert.ok(pid1 && pid2 && pid1 !== pid2, 'restarted')

  r = await node.run(['node', 'tail', 'slappart0:daemon-on-watch'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, 'daemon says hello')
})

ctl('node supervisorctl passes every word; --cfg may come after them; slapos node = node status', async () => {
  const pid = readFileSync(pidFile(), 'utf8').trim()
  let r = await node.run(['node', 'supervisorctl', 'pid'])
  assert.is(r.code, 0, r.stderr)
  assert.is(r.stdout.trim(), pid)
  r = await node.run(['node', 'supervisorctl', '--cfg', node.cfgPath, 'pid'], { noCfg: true })
  assert.is(r.stdout.trim(), pid)
  // an option of supervisorctl's tail: the last 12 bytes of the log
  r = await node.run(['node', 'supervisorctl', 'tail', '-12', 'slappart0:daemon-on-watch'])
  assert.is(r.code, 0, r.stderr)
  assert.is(r.stdout.trim(), 'says hello', `supervisorctl options reach supervisorctl: ${JSON.stringify(r.stdout)}`)
  r = await node.run(['node'], { noCfg: true, env: baseEnv({ SLAPOS_CONFIGURATION: node.cfgPath }) })
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, /slappart0:daemon-on-watch\s+RUNNING/)
  // the 0.35.1 program name with the configuration as first argument
  const linkDir = tempDir()
  const link = join(linkDir, 'slapgrid-supervisorctl')
  symlinkSync(SLAPOS, link)
  const legacy = spawnSync(link, [node.cfgPath, 'pid'], { encoding: 'utf8', env: baseEnv(), timeout: 60_000 })
  rmSync(linkDir, { recursive: true, force: true })
  assert.is(legacy.status, 0, legacy.stderr)
  assert.is(legacy.stdout.trim(), pid)
})

ctl('-h after the words of supervisorctl is supervisorctl\'s; right after the command it is ours', async () => {
  let r = await node.run(['node', 'supervisorctl', 'help', 'status'])
  const supervisorHelp = r.stdout.trim()
  assert.match(supervisorHelp, /status <name>/)
  r = await node.run(['node', 'supervisorctl', 'status', '-h'])
  // supervisorctl 4.2 takes it as a process name: what matters is that it got it
  assert.match(r.stdout + r.stderr, /-h: ERROR \(no such process\)|status <name>/, `supervisorctl got -h: ${r.stdout}${r.stderr}`)
  assert.not.match(r.stdout, /Usage: slapos node supervisorctl/)
  r = await node.run(['node', 'supervisorctl', '-h'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, /slapos node supervisorctl/)
})

ctl('supervisorctl exit status is passed on', async () => {
  const r = await node.run(['node', 'start', 'slappart0:nothing-here'])
  const direct = spawnSync('supervisorctl', ['-c', join(node.instanceRoot, 'etc', 'supervisord.conf'), 'start', 'slappart0:nothing-here'])
  assert.is(r.code, direct.status)
  assert.is.not(r.code, 0)
  assert.match(r.stdout + r.stderr, /no such process/i)
})

ctl('root check: exit 5 for a non-root user unless root_check = false', async () => {
  const cfg = join(node.dir, 'root.cfg')
  writeFileSync(cfg, readFileSync(node.cfgPath, 'utf8').replace('root_check = false', 'root_check = true'))
  const r = await runAs(65534, ['node', 'status', '--cfg', cfg])
  assert.is(r.code, 5, r.stderr)
  assert.match(r.stderr, /must be run as root/)
})

ctl.run()

const fg = suite('node supervisord -n')

fg('runs supervisord in the foreground until it stops', async () => {
  const n = await makeNode({ partitions: 1 })
  try {
    const child = spawn(SLAPOS, ['node', 'supervisord', '-n', '--cfg', n.cfgPath], { env: baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)))
    const pidFile = join(n.instanceRoot, 'var', 'run', 'supervisord.pid')
    await waitFor('supervisord pid file', async () => (existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '') || undefined)
    const pid = readFileSync(pidFile, 'utf8').trim()
    const ppid = /PPid:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    assert.is(ppid, String(child.pid), 'supervisord is our child, not a daemon')
    const r = await n.run(['node', 'supervisorctl', 'shutdown'])
    assert.is(r.code, 0, r.stderr)
    assert.is(await exited, 0)
  } finally {
    await n.stop()
  }
})

fg.run()

const forbid = suite('forbid_supervisord_automatic_launch')

forbid('node status does not start supervisord', async () => {
  const n = await makeNode({ partitions: 1, extraSlapos: 'forbid_supervisord_automatic_launch = true' })
  try {
    const r = await n.run(['node', 'status'])
    assert.is.not(r.code, 0)
    assert.ok(!existsSync(join(n.instanceRoot, 'var', 'run', 'supervisord.pid')), 'no supervisord started')
    assert.ok(existsSync(join(n.instanceRoot, 'etc', 'supervisord.conf')), 'the configuration is written')
  } finally {
    await n.stop()
  }
})

forbid.run()

// --- internal ---


