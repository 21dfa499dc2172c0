// supervisor.ts against the real supervisord (Debian supervisor 4.2.5): configuration text and
// modes, instance root structure, launch, group files and processes of partitions, the queue.
import { chmodSync, existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { createLogger, type Logger } from '../src/log.ts'
import {
  createInstanceRootStructure,
  decodeResponse,
  encodeCall,
  programLogDir,
  removePartitionGroups,
  startPartitionServices,
  stopPartitionServices,
  Supervisor,
  supervisorPaths,
  watchdogCommand,
  writePartitionGroup,
  writeSupervisordConf,
  type PartitionProcesses,
} from '../src/supervisor.ts'
import { SLAPOS, tempDir } from './helpers.ts'
import { stopSupervisord, waitFor } from './node-helpers.ts'

const uid = process.getuid?.() ?? 0
const gid = process.getgid?.() ?? 0

/** A logger that keeps its lines (for the warning of a partition without services). */
function memLog(): Logger & { lines: string[] } {
  const lines: string[] = []
  const log = createLogger({ level: 'debug', write: (l) => void lines.push(l), isTTY: false })
  return Object.assign(log, { lines })
}

function mode(p: string): number {
  return statSync(p).mode & 0o777
}

/** A partition directory with executables in etc/run and etc/service. */
function partition(root: string, id: string, run: Record<string, string>, service: Record<string, string> = {}): PartitionProcesses {
  const path = join(root, id)
  for (const [dir, files] of [['run', run], ['service', service]] as const) {
    mkdirSync(join(path, 'etc', dir), { recursive: true })
    for (const [name, body] of Object.entries(files)) writeFileSync(join(path, 'etc', dir, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 })
  }
  return { id, path, uid, gid, user: 'root', home: '/root' }
}

const SLEEP = 'exec sleep 300'

/** Temp dirs of this file, removed when it ends (after each supervisord is stopped). */
const scratchDirs: string[] = []
function scratch(): string {
  const d = tempDir('slapos-sv-')
  scratchDirs.push(d)
  return d
}

/** A fresh instance root with its structure and a supervisord.conf (empty watchdog). */
function instanceRoot(): string {
  const root = join(scratch(), 'inst')
  createInstanceRootStructure(root)
  writeSupervisordConf(root, '')
  return root
}



// --- files, no supervisord ---

const files = suite('supervisor files')

files('instance root structure: directories and modes, repaired on the next run', () => {
  const root = join(scratch(), 'inst')
  createInstanceRootStructure(root)
  assert.is(mode(join(root, 'etc')), 0o700)
  assert.is(mode(join(root, 'etc', 'supervisord.conf.d')), 0o700)
  assert.is(mode(join(root, 'var')), 0o755)
  assert.is(mode(join(root, 'var', 'log')), 0o700)
  assert.is(mode(join(root, 'var', 'run')), 0o700)
  assert.is(mode(join(root, 'var', 'program-log')), 0o711)
  chmodSync(join(root, 'var'), 0o700)
  chmodSync(join(root, 'etc'), 0o755)
  createInstanceRootStructure(root)
  assert.is(mode(join(root, 'var')), 0o755)
  assert.is(mode(join(root, 'etc')), 0o700)
})

files('supervisord.conf: include, socket, listener for EXITED and FATAL, 0600, rewritten only on change', () => {
  const root = join(scratch(), 'inst')
  createInstanceRootStructure(root)
  const cmd = watchdogCommand({
    watchdogCommand: '/opt/slapos/bin/slapos-watchdog',
    masterUrl: 'https://master.example:443/',
    computerId: 'COMP-1',
    certificateRepositoryPath: '/etc/opt/slapos/ssl/partition_pki',
    instanceRoot: root,
  })
  assert.is(
    cmd,
    `/opt/slapos/bin/slapos-watchdog --master-url 'https://master.example:443/' --computer-id 'COMP-1' --certificate-repository-path '/etc/opt/slapos/ssl/partition_pki' --instance-root '${root}'`,
  )
  assert.is(writeSupervisordConf(root, cmd), true)
  const conf = join(root, 'etc', 'supervisord.conf')
  const text = readFileSync(conf, 'utf8')
  assert.is(mode(conf), 0o600)
  assert.ok(text.includes(`[include]\nfiles=${root}/etc/supervisord.conf.d/*.conf\n`), text)
  assert.ok(text.includes(`[unix_http_server]\nfile=${root}/sv.sock\nchmod=0700\n`), text)
  assert.ok(text.includes(`[supervisorctl]\nserverurl=unix://${root}/sv.sock\n`), text)
  assert.ok(text.includes(`[eventlistener:watchdog]\ncommand=${cmd}\nevents=PROCESS_STATE_EXITED, PROCESS_STATE_FATAL\nstopasgroup=true\nkillasgroup=true\n`), text)
  assert.ok(text.includes(`logfile=${root}/var/log/supervisord.log\nlogfile_maxbytes=50MB\nlogfile_backups=10\n`), text)
  assert.ok(text.includes(`pidfile=${root}/var/run/supervisord.pid\nnodaemon=false\n`), text)
  assert.ok(text.includes('supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface'))
  assert.is(writeSupervisordConf(root, cmd), false, 'same text and mode: not rewritten')
  chmodSync(conf, 0o644)
  assert.is(writeSupervisordConf(root, cmd), true, 'wrong mode: rewritten')
  assert.is(mode(conf), 0o600)
  // no certificate repository: no option; a quote in a value stays one argument
  assert.is(
    watchdogCommand({ watchdogCommand: 'w', masterUrl: "http://a/'b", computerId: 'c', certificateRepositoryPath: undefined, instanceRoot: '/srv' }),
    `w --master-url 'http://a/'\\''b' --computer-id 'c' --instance-root '/srv'`,
  )
})

files('socket: sv.sock, or the legacy supervisord.socket when it exists', () => {
  const root = join(scratch(), 'inst')
  createInstanceRootStructure(root)
  assert.is(supervisorPaths(root).socket, join(root, 'sv.sock'))
  writeFileSync(join(root, 'supervisord.socket'), '')
  assert.is(supervisorPaths(root).socket, join(root, 'supervisord.socket'))
  writeSupervisordConf(root, '')
  assert.ok(readFileSync(join(root, 'etc', 'supervisord.conf'), 'utf8').includes(`serverurl=unix://${root}/supervisord.socket`))
})

files('group file: etc/run then etc/service sorted, -on-watch, program settings, logs, environment', () => {
  const root = instanceRoot()
  const p = partition(root, 'slappart3', { wrapper: SLEEP, apache: SLEEP }, { daemon: SLEEP, cron: SLEEP })
  const r = writePartitionGroup(root, { ...p, uid: 1003, gid: 1004, user: 'slapuser3', home: '/home/slapuser3' })
  assert.equal(r, { changed: true, programs: ['slappart3:apache', 'slappart3:wrapper', 'slappart3:cron-on-watch', 'slappart3:daemon-on-watch'], refused: [] })
  const file = join(root, 'etc', 'supervisord.conf.d', 'slappart3.conf')
  assert.is(mode(file), 0o600)
  const text = readFileSync(file, 'utf8')
  assert.ok(text.startsWith('[group:slappart3]\nprograms=slappart3_apache,slappart3_wrapper,slappart3_cron,slappart3_daemon\n'), text)
  const section = text.slice(text.indexOf('[program:slappart3_wrapper]'), text.indexOf('[program:slappart3_cron]'))
  assert.is(
    section,
    [
      '[program:slappart3_wrapper]',
      `directory=${p.path}`,
      `command=${p.path}/etc/run/wrapper`,
      'process_name=wrapper',
      'autostart=false',
      'autorestart=false',
      'startsecs=0',
      'startretries=0',
      'exitcodes=0',
      'stopsignal=TERM',
      'stopwaitsecs=60',
      'stopasgroup=true',
      'killasgroup=true',
      'user=1003',
      'group=1004',
      'serverurl=AUTO',
      'redirect_stderr=true',
      `stdout_logfile=${root}/var/program-log/slappart3/.slappart3_wrapper.log`,
      'stdout_logfile_maxbytes=100KB',
      'stdout_logfile_backups=1',
      `stderr_logfile=${root}/var/program-log/slappart3/.slappart3_wrapper.log`,
      'stderr_logfile_maxbytes=100KB',
      'stderr_logfile_backups=1',
      'environment=USER="slapuser3",LOGNAME="slapuser3",HOME="/home/slapuser3"',
      '',
      '',
    ].join('\n'),
  )
  assert.ok(text.includes(`[program:slappart3_daemon]\ndirectory=${p.path}\ncommand=${p.path}/etc/service/daemon\nprocess_name=daemon-on-watch\n`))
  const before = statSync(file)
  const again = writePartitionGroup(root, { ...p, uid: 1003, gid: 1004, user: 'slapuser3', home: '/home/slapuser3' })
  assert.is(again.changed, false)
  assert.is(statSync(file).mtimeMs, before.mtimeMs, 'unchanged list: file not rewritten')
  assert.is(statSync(file).ino, before.ino)
})

files('group file: stale files of the partition go, manager groups and other partitions stay, no service removes it', () => {
  const root = instanceRoot()
  const dir = join(root, 'etc', 'supervisord.conf.d')
  for (const f of ['slappart1-old.conf', 'slappart1-prerm.conf', 'slappart10.conf', 'slappart2.conf']) writeFileSync(join(dir, f), '[group:x]\n')
  const p = partition(root, 'slappart1', { web: SLEEP })
  assert.is(writePartitionGroup(root, p).changed, true)
  assert.ok(!existsSync(join(dir, 'slappart1-old.conf')))
  for (const f of ['slappart1.conf', 'slappart1-prerm.conf', 'slappart10.conf', 'slappart2.conf']) assert.ok(existsSync(join(dir, f)), f)
  rmSync(join(p.path, 'etc', 'run', 'web'))
  assert.equal(writePartitionGroup(root, p), { changed: true, programs: [], refused: [] })
  assert.ok(!existsSync(join(dir, 'slappart1.conf')))
  assert.equal(writePartitionGroup(root, p), { changed: false, programs: [], refused: [] })
  assert.is(removePartitionGroups(root, 'slappart1'), true)
  assert.ok(!existsSync(join(dir, 'slappart1-prerm.conf')))
  assert.ok(existsSync(join(dir, 'slappart10.conf')) && existsSync(join(dir, 'slappart2.conf')))
  assert.is(removePartitionGroups(root, 'slappart1'), false)
})

files('XML-RPC: call encoding and answers (values, structs, arrays, faults, entities)', () => {
  assert.is(
    encodeCall('supervisor.startProcessGroup', ['a<b', false, 3]),
    '<?xml version="1.0"?>\n<methodCall><methodName>supervisor.startProcessGroup</methodName><params><param><value><string>a&lt;b</string></value></param><param><value><boolean>0</boolean></value></param><param><value><int>3</int></value></param></params></methodCall>\n',
  )
  const ok = decodeResponse(
    "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><array><data>\n<value><struct>\n<member>\n<name>name</name>\n<value><string>x &amp; y</string></value>\n</member>\n<member>\n<name>pid</name>\n<value><int>42</int></value>\n</member>\n<member>\n<name>ok</name>\n<value><boolean>1</boolean></value>\n</member>\n<member>\n<name>plain</name>\n<value> spaced </value>\n</member>\n<member>\n<name>empty</name>\n<value><string></string></value>\n</member>\n</struct></value>\n</data></array></value>\n</param>\n</params>\n</methodResponse>\n",
  )
  assert.equal(ok, { value: [{ name: 'x & y', pid: 42, ok: true, plain: ' spaced ', empty: '' }] })
  const fault = decodeResponse(
    "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>10</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>BAD_NAME: nope</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n",
  )
  assert.equal(fault, { fault: { code: 10, string: 'BAD_NAME: nope' } })
})

files.after(() => {
  for (const d of scratchDirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

files('one call at a time: parallel partitions never have two XML-RPC calls in flight on the socket', async () => {
  // a recording stand-in for supervisord's socket (the order of calls is what is tested;
  // the real supervisord is driven by the suites below): each answer comes 30 ms later
  const root = instanceRoot()
  const paths = supervisorPaths(root)
  const { createServer } = await import('node:http')
  let inFlight = 0
  let most = 0
  const methods: string[] = []
  const server = createServer((req, res) => {
    inFlight++
    most = Math.max(most, inFlight)
    let body = ''
    req.setEncoding('utf8').on('data', (c: string) => (body += c))
    req.on('end', () => {
      methods.push(/<methodName>([^<]+)</.exec(body)?.[1] ?? '?')
      setTimeout(() => {
        inFlight--
        res.writeHead(200, { 'Content-Type': 'text/xml' })
        res.end('<?xml version="1.0"?><methodResponse><params><param><value><array><data></data></array></value></param></params></methodResponse>')
      }, 30)
    })
  })
  await new Promise<void>((ok) => server.listen(paths.socket, ok))
  try {
    const sup = new Supervisor(paths, createLogger({ level: 'critical' }))
    await Promise.all([sup.processInfo(), sup.startGroup('slappart0'), sup.stopGroup('slappart1'), sup.processInfo(), sup.startGroup('slappart2')])
    assert.is(methods.length, 5)
    assert.is(most, 1, `${most} calls in flight at once`)
    // partitions that finish while another call runs share one reloadConfig (the real
    // supervisord sees this path in "partitions started in parallel go through one queue");
    // one asked once that apply has started gets its own
    methods.length = 0
    const busy = sup.processInfo()
    const joined = [sup.applyChanges(), sup.applyChanges(), sup.applyChanges()]
    await busy
    // once supervisord has the first reloadConfig in hand (it answers 30 ms later)
    while (!methods.includes('supervisor.reloadConfig')) await new Promise((ok) => setTimeout(ok, 2))
    const later = sup.applyChanges()
    await Promise.all([...joined, later])
    assert.equal(methods, ['supervisor.getAllProcessInfo', 'supervisor.reloadConfig', 'supervisor.reloadConfig'])
  } finally {
    await new Promise<void>((ok) => server.close(() => ok()))
  }
})

files.run()

// --- with a real supervisord ---

const live = suite('supervisor with supervisord')

live('launch, partition services started, unchanged list keeps processes, stop removes only that group', async () => {
  const root = instanceRoot()
  const log = memLog()
  const sup = new Supervisor(supervisorPaths(root), log)
  try {
    await sup.launch()
    assert.is(await sup.getState(), 'RUNNING')
    const pidFile = join(root, 'var', 'run', 'supervisord.pid')
    const daemonPid = readFileSync(pidFile, 'utf8').trim()
    assert.ok(existsSync(join(root, 'sv.sock')))
    // a second launch finds it running and starts nothing
    await sup.launch()
    assert.is(readFileSync(pidFile, 'utf8').trim(), daemonPid)

    const p0 = partition(root, 'slappart0', { wrapper: SLEEP }, { daemon: SLEEP })
    const p1 = partition(root, 'slappart1', { web: SLEEP })
    await startPartitionServices(sup, root, p0, log)
    await startPartitionServices(sup, root, p1, log)
    const running = await waitFor('4 processes running', async () => {
      const l = (await sup.processInfo()).filter((p) => p.group !== 'watchdog')
      return l.length === 3 && l.every((p) => p.statename === 'RUNNING') ? l : undefined
    })
    assert.equal(running.map((p) => `${p.group}:${p.name}`).sort(), ['slappart0:daemon-on-watch', 'slappart0:wrapper', 'slappart1:web'])
    const pid = (n: string) => running.find((p) => `${p.group}:${p.name}` === n)?.pid
    // the processes run as the user, in the partition, with its log file
    const wrapperPid = pid('slappart0:wrapper') ?? 0
    assert.ok(wrapperPid > 0)
    assert.is(readlinkSync(`/proc/${wrapperPid}/cwd`), p0.path, 'runs in the partition directory')
    assert.is(statSync(`/proc/${wrapperPid}`).uid, uid)
    assert.ok(existsSync(join(p0.path, '.slappart0_wrapper.log')))

    const file = join(root, 'etc', 'supervisord.conf.d', 'slappart0.conf')
    const mtime = statSync(file).mtimeMs
    await startPartitionServices(sup, root, p0, log)
    assert.is(statSync(file).mtimeMs, mtime, 'unchanged services: group file not rewritten')
    const after = await sup.processInfo()
    for (const p of running) assert.is(after.find((q) => q.group === p.group && q.name === p.name)?.pid, p.pid, `${p.name} not restarted`)

    // unknown group: nothing to start, not an error
    await sup.startGroup('slappart9')

    await stopPartitionServices(sup, root, 'slappart0')
    assert.ok(!existsSync(file))
    const left = await sup.processInfo()
    assert.ok(!left.some((p) => p.group === 'slappart0'), 'group slappart0 removed')
    assert.is(left.find((p) => p.group === 'slappart1')?.pid, pid('slappart1:web'), 'slappart1 untouched')
    assert.ok(existsSync(join(root, 'etc', 'supervisord.conf.d', 'slappart1.conf')))
    let gone = false
    try {
      process.kill(wrapperPid, 0)
    } catch {
      gone = true
    }
    assert.ok(gone, 'the stopped partition process is gone')

    // started again: file and processes come back
    await startPartitionServices(sup, root, p0, log)
    assert.ok(existsSync(file))
    await waitFor('slappart0 running again', async () => ((await sup.processInfo()).filter((p) => p.group === 'slappart0' && p.statename === 'RUNNING').length === 2 ? true : undefined))
  } finally {
    await stopSupervisord(root)
  }
})

live('program logs: in root\'s directory of the partition, a link in the partition; a link planted there before a restart is never written through', async () => {
  const root = instanceRoot()
  const log = memLog()
  const sup = new Supervisor(supervisorPaths(root), log)
  const victim = join(scratch(), 'root-only')
  writeFileSync(victim, 'ROOT ONLY\n', { mode: 0o600 })
  try {
    await sup.launch()
    const p0 = partition(root, 'slappart0', { chatty: 'echo started\nexec sleep 300' })
    // the partition's user left a link under the log's name before the run
    const inPartition = join(p0.path, '.slappart0_chatty.log')
    symlinkSync(victim, inPartition)
    p0.gid = 4321
    await startPartitionServices(sup, root, p0, log)
    const dir = programLogDir(root, 'slappart0')
    const real = join(dir, '.slappart0_chatty.log')
    assert.equal([statSync(dir).uid, statSync(dir).gid, mode(dir)], [0, 4321, 0o750])
    assert.is(readlinkSync(inPartition), real, 'the planted link replaced by one to the log')
    await waitFor('the first line logged', async () => (readFileSync(inPartition, 'utf8') === 'started\n' ? true : undefined))
    // the link again, after the node's run: supervisord opens the log by its name at each
    // start of the program (a restart by the operator, by a bang's redeployment ...)
    unlinkSync(inPartition)
    symlinkSync(victim, inPartition)
    await sup.stopGroup('slappart0')
    await sup.startGroup('slappart0')
    await waitFor('the second start logged', async () => (readFileSync(real, 'utf8') === 'started\nstarted\n' ? true : undefined))
    assert.is(readFileSync(victim, 'utf8'), 'ROOT ONLY\n')
    // destroying the partition's groups takes its log directory
    await sup.stopGroup('slappart0')
    removePartitionGroups(root, 'slappart0')
    assert.not.ok(existsSync(dir))
  } finally {
    await stopSupervisord(root)
  }
})

live('stopGroup stops a group, startAll starts every process again', async () => {
  const root = instanceRoot()
  const log = memLog()
  const sup = new Supervisor(supervisorPaths(root), log)
  try {
    await sup.launch()
    await startPartitionServices(sup, root, partition(root, 'slappart0', { a: SLEEP }), log)
    await startPartitionServices(sup, root, partition(root, 'slappart1', { b: SLEEP }), log)
    await waitFor('both running', async () => ((await sup.processInfo()).filter((q) => q.statename === 'RUNNING' && q.group !== 'watchdog').length === 2 ? true : undefined))
    await sup.stopGroup('slappart0')
    await sup.stopGroup('slappart9') // unknown: nothing to stop
    const l = await sup.processInfo()
    assert.is(l.find((q) => q.group === 'slappart0')?.statename, 'STOPPED')
    assert.is(l.find((q) => q.group === 'slappart1')?.statename, 'RUNNING')
    await sup.startAll()
    await waitFor('both running again', async () => ((await sup.processInfo()).filter((q) => q.statename === 'RUNNING' && q.group !== 'watchdog').length === 2 ? true : undefined))
  } finally {
    await stopSupervisord(root)
  }
})

live('a group file written by an earlier run but never applied is applied and started', async () => {
  const root = instanceRoot()
  const log = memLog()
  const sup = new Supervisor(supervisorPaths(root), log)
  try {
    await sup.launch()
    const p = partition(root, 'slappart0', { a: SLEEP })
    assert.is(writePartitionGroup(root, p).changed, true) // written, supervisord not told
    assert.is(await sup.startGroup('slappart0'), false, 'unknown to supervisord')
    await startPartitionServices(sup, root, p, log)
    await waitFor('a running', async () => ((await sup.processInfo()).some((q) => q.group === 'slappart0' && q.statename === 'RUNNING') ? true : undefined))
  } finally {
    await stopSupervisord(root)
  }
})

live('a changed service list is applied: the new service runs', async () => {
  const root = instanceRoot()
  const log = memLog()
  const sup = new Supervisor(supervisorPaths(root), log)
  try {
    await sup.launch()
    const p = partition(root, 'slappart0', { a: SLEEP })
    await startPartitionServices(sup, root, p, log)
    writeFileSync(join(p.path, 'etc', 'service', 'b'), `#!/bin/sh\n${SLEEP}\n`, { mode: 0o755 })
    await startPartitionServices(sup, root, p, log)
    const l = await waitFor('a and b-on-watch running', async () => {
      const x = (await sup.processInfo()).filter((q) => q.group === 'slappart0' && q.statename === 'RUNNING')
      return x.length === 2 ? x : undefined
    })
    assert.equal(l.map((q) => q.name).sort(), ['a', 'b-on-watch'])
  } finally {
    await stopSupervisord(root)
  }
})

live('partitions started in parallel go through one queue', async () => {
  const root = instanceRoot()
  const log = memLog()
  const sup = new Supervisor(supervisorPaths(root), log)
  try {
    await sup.launch()
    const parts = Array.from({ length: 8 }, (_, i) => partition(root, `slappart${i}`, { a: SLEEP }, { b: SLEEP }))
    await Promise.all(parts.map((p) => startPartitionServices(sup, root, p, log)))
    const l = await waitFor('16 processes running', async () => {
      const x = (await sup.processInfo()).filter((q) => q.group !== 'watchdog' && q.statename === 'RUNNING')
      return x.length === 16 ? x : undefined
    })
    assert.is(new Set(l.map((q) => q.group)).size, 8)
    await Promise.all(parts.slice(0, 4).map((p) => stopPartitionServices(sup, root, p.id)))
    assert.is((await sup.processInfo()).filter((q) => q.group !== 'watchdog').length, 8)
  } finally {
    await stopSupervisord(root)
  }
})

live('a partition without services: warning, no group file, nothing started', async () => {
  const root = instanceRoot()
  const log = memLog()
  const sup = new Supervisor(supervisorPaths(root), log)
  try {
    await sup.launch()
    const p = partition(root, 'slappart0', {})
    await startPartitionServices(sup, root, p, log)
    assert.ok(log.lines.some((l) => l.includes('WARNING') && l.includes('No service to run in slappart0')), log.lines.join(''))
    assert.ok(!existsSync(join(root, 'etc', 'supervisord.conf.d', 'slappart0.conf')))
    assert.ok(!(await sup.processInfo()).some((q) => q.group === 'slappart0'))
  } finally {
    await stopSupervisord(root)
  }
})

live('a running supervisord whose watchdog listener is not running gets it re-added by launch', async () => {
  const root = instanceRoot() // empty watchdog command: the listener cannot start
  const sup = new Supervisor(supervisorPaths(root), memLog())
  try {
    await sup.launch()
    await waitFor('listener given up', async () => ((await sup.processInfo()).some((p) => p.name === 'watchdog' && p.statename === 'FATAL') ? true : undefined))
    const daemonPid = readFileSync(join(root, 'var', 'run', 'supervisord.pid'), 'utf8')
    writeSupervisordConf(root, `${SLAPOS} node watchdog --master-url 'http://127.0.0.1:9/' --computer-id 'c' --instance-root '${root}'`)
    await sup.launch()
    await waitFor('listener running', async () => ((await sup.processInfo()).some((p) => p.name === 'watchdog' && p.statename === 'RUNNING') ? true : undefined))
    assert.is(readFileSync(join(root, 'var', 'run', 'supervisord.pid'), 'utf8'), daemonPid, 'same supervisord')
  } finally {
    await stopSupervisord(root)
  }
})

live('launch asks the state and the watchdog in one multicall; a supervisord without multicall is asked twice', async () => {
  const root = instanceRoot()
  const { createServer } = await import('node:http')
  for (const multicall of [true, false]) {
    // a recording XML-RPC server in supervisord's place (the real one has multicall: the test above)
    const calls: string[] = []
    const server = createServer((req, res) => {
      let body = ''
      req.on('data', (c: Buffer) => (body += c.toString()))
      req.on('end', () => {
        const method = /<methodName>([^<]+)<\/methodName>/.exec(body)?.[1] ?? ''
        calls.push(method)
        const state = '<struct><member><name>statename</name><value><string>RUNNING</string></value></member></struct>'
        const value =
          method === 'system.multicall' && !multicall
            ? null
            : method === 'system.multicall'
              ? `<array><data><value>${state}</value><value>${state}</value></data></array>`
              : state
        res.setHeader('content-type', 'text/xml')
        res.end(
          value === null
            ? '<?xml version="1.0"?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member><name>faultString</name><value><string>UNKNOWN_METHOD</string></value></member></struct></value></fault></methodResponse>'
            : `<?xml version="1.0"?><methodResponse><params><param><value>${value}</value></param></params></methodResponse>`,
        )
      })
    })
    const socket = supervisorPaths(root).socket
    rmSync(socket, { force: true })
    await new Promise<void>((resolve) => server.listen(socket, resolve))
    try {
      await new Supervisor(supervisorPaths(root), memLog()).launch()
      assert.equal(calls, multicall ? ['system.multicall'] : ['system.multicall', 'supervisor.getState', 'supervisor.getProcessInfo'])
    } finally {
      await new Promise((resolve) => server.close(resolve))
    }
  }
})

live('legacy supervisord.socket: a second supervisord on sv.sock is stopped with its processes', async () => {
  const root = instanceRoot()
  const log = memLog()
  try {
    // the stray one, on sv.sock, running a service
    const stray = new Supervisor(supervisorPaths(root), log)
    await stray.launch()
    const p = partition(root, 'slappart0', { a: SLEEP })
    await startPartitionServices(stray, root, p, log)
    const strayPid = Number(readFileSync(join(root, 'var', 'run', 'supervisord.pid'), 'utf8'))
    const service = await waitFor('service running', async () => (await stray.processInfo()).find((q) => q.name === 'a' && q.statename === 'RUNNING'))
    // the node uses the legacy socket name
    writeFileSync(join(root, 'supervisord.socket'), '')
    const paths = supervisorPaths(root)
    assert.is(paths.socket, join(root, 'supervisord.socket'))
    writeSupervisordConf(root, '')
    const sup = new Supervisor(paths, log)
    await sup.launch()
    assert.is(await sup.getState(), 'RUNNING')
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    assert.ok(!alive(strayPid), 'stray supervisord gone')
    assert.ok(!alive(service.pid), 'its service stopped')
    const pid = Number(readFileSync(join(root, 'var', 'run', 'supervisord.pid'), 'utf8'))
    assert.ok(pid !== strayPid && alive(pid), 'the pid file names the new supervisord')
    assert.ok(log.lines.some((l) => l.includes('a second supervisord listens on')))
  } finally {
    await stopSupervisord(root)
  }
})

live('launch failure: "Failed to launch supervisord:" and its output', async () => {
  const root = instanceRoot()
  writeFileSync(join(root, 'etc', 'supervisord.conf'), 'this is not an ini file\n')
  const sup = new Supervisor(supervisorPaths(root), memLog())
  try {
    await sup.launch()
    assert.unreachable('launch should fail')
  } catch (e) {
    const msg = (e as Error).message
    assert.ok(msg.startsWith('Failed to launch supervisord:\n'), msg)
    assert.match(msg, /section header/i)
  } finally {
    await stopSupervisord(root)
  }
})

live('forbid: no supervisord is started', async () => {
  const root = instanceRoot()
  const sup = new Supervisor(supervisorPaths(root), memLog())
  await sup.launch({ forbid: true })
  assert.ok(!existsSync(join(root, 'var', 'run', 'supervisord.pid')))
  assert.ok(!existsSync(join(root, 'sv.sock')))
  try {
    await sup.getState()
    assert.unreachable('no supervisord to answer')
  } catch (e) {
    assert.match((e as Error).message, /cannot talk to supervisord/)
  }
})

live.after(() => {
  for (const d of scratchDirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

live.run()
