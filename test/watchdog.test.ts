// The watchdog (slapos node watchdog) through the built binary: the listener protocol on
// stdin/stdout, which events bang, the once-per-deployment rule; then under the real
// supervisord with our proxy behind a recording tap: a crashing etc/service process bangs
// exactly once, an etc/run one never. Also node bang (computerBang).
import { spawn, spawnSync } from 'node:child_process'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ConfigFile, loadNodeConfig } from '../src/config.ts'
import { createLogger } from '../src/log.ts'
import { createInstanceRootStructure, startPartitionServices, Supervisor, supervisorPaths, watchdogCommand, writeSupervisordConf } from '../src/supervisor.ts'
import { SLAPOS, tempDir } from './helpers.ts'
import { baseEnv, makeNode, runAs, waitFor, type TestNode } from './node-helpers.ts'

interface Event {
  eventname: string
  processname: string
  groupname: string
  /** supervisord's flag for an exit code listed in exitcodes (default 0) */
  expected?: 0 | 1
}

/** One event as supervisord writes it: a header line, then exactly `len` bytes of payload. */
function frame(e: Event, serial: number): Buffer {
  const payload = Buffer.from(`processname:${e.processname} groupname:${e.groupname} from_state:RUNNING expected:${e.expected ?? 0} pid:${1000 + serial}`)
  const header = `ver:3.0 server:supervisor serial:${serial} pool:watchdog poolserial:${serial} eventname:${e.eventname} len:${payload.length}\n`
  return Buffer.concat([Buffer.from(header), payload])
}

/**
 * Runs `dist/slapos node watchdog ARGS`, sends each event only after the listener said
 * READY (as supervisord does), then closes stdin. Returns stdout and the exit status.
 */
function runListener(args: string[], events: (Event | Buffer)[], onStart?: (pid: number) => void, endWithLast = false): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(SLAPOS, ['node', 'watchdog', ...args], { env: baseEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let sent = 0
    let readies = 0
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    let started = false
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      if (!started && child.pid !== undefined) onStart?.(child.pid)
      started = true
      stdout += s
      const n = stdout.split('READY\n').length - 1
      while (readies < n) {
        readies++
        if (sent < events.length) {
          const e = events[sent] as Event | Buffer
          child.stdin.write(Buffer.isBuffer(e) ? e : frame(e, sent + 1))
          sent++
          // an event cut short: the input ends before the listener could say READY again
          if (endWithLast && sent === events.length) child.stdin.end()
        } else if (!endWithLast) child.stdin.end()
      }
    })
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

const bangs = (node: TestNode) => node.calls().filter((c) => c.name === 'softwareInstanceBang')

function expectedStdout(events: number): string {
  return 'READY\n' + 'RESULT 2\nOKREADY\n'.repeat(events)
}

// --- the listener on its own ---

const listener = suite('watchdog listener')
let node: TestNode
listener.before(async () => {
  node = await makeNode({ partitions: 2 })
})
listener.after(async () => {
  await node.stop()
})
listener.before.each(() => node.clearCalls())

listener('protocol: READY, header + len bytes, RESULT 2\\nOK; only EXITED/FATAL of -on-watch bang', async () => {
  const events: Event[] = [
    { eventname: 'PROCESS_STATE_RUNNING', processname: 'web-on-watch', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_BACKOFF', processname: 'web-on-watch', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_STOPPED', processname: 'web-on-watch', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_EXITED', processname: 'wrapper', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_FATAL', processname: 'wrapper', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_EXITED', processname: 'web-on-watch', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_FATAL', processname: 'db-on-watch', groupname: 'slappart1' },
    { eventname: 'PROCESS_STATE_EXITED', processname: 'job-on-watch', groupname: 'slappart1', expected: 1 },
  ]
  // no instance root: no de-duplication, each qualifying event bangs
  const r = await runListener(['--master-url', node.masterUrl, '--computer-id', node.computerId, '--certificate-repository-path', node.certificateRepository], events)
  assert.is(r.code, 0, r.stderr)
  assert.is(r.stdout, expectedStdout(events.length))
  const b = bangs(node)
  assert.equal(
    b.map((c) => c.fields),
    [
      { computer_id: node.computerId, computer_partition_id: 'slappart0', message: 'web-on-watch process in partition slappart0 encountered a problem' },
      { computer_id: node.computerId, computer_partition_id: 'slappart1', message: 'db-on-watch process in partition slappart1 encountered a problem' },
      // an expected exit (code in exitcodes) bangs too, like the original
      { computer_id: node.computerId, computer_partition_id: 'slappart1', message: 'job-on-watch process in partition slappart1 encountered a problem' },
    ],
  )
  assert.ok(b.every((c) => c.verb === 'POST' && c.status === 200))
})

listener('payload length is in bytes (non-ASCII names)', async () => {
  const r = await runListener(['--master-url', node.masterUrl, '--computer-id', node.computerId], [
    { eventname: 'PROCESS_STATE_EXITED', processname: 'café-on-watch', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_EXITED', processname: 'x-on-watch', groupname: 'slappart1' },
  ])
  assert.is(r.stdout, expectedStdout(2))
  assert.equal(bangs(node).map((c) => c.fields.message), [
    'café-on-watch process in partition slappart0 encountered a problem',
    'x-on-watch process in partition slappart1 encountered a problem',
  ])
})

listener('with the instance root: one bang per successful deployment (.slapos_latest_bang_timestamp)', async () => {
  const part = join(node.instanceRoot, 'slappart0')
  const crash: Event = { eventname: 'PROCESS_STATE_EXITED', processname: 'web-on-watch', groupname: 'slappart0' }
  const args = ['--master-url', node.masterUrl, '--computer-id', node.computerId, '--instance-root', node.instanceRoot]
  // never deployed: bangs once, records 0, then stays quiet
  let r = await runListener(args, [crash, crash])
  assert.is(r.stdout, expectedStdout(2))
  assert.is(bangs(node).length, 1)
  assert.is(readFileSync(join(part, '.slapos_latest_bang_timestamp'), 'utf8'), '0')
  r = await runListener(args, [crash])
  assert.is(bangs(node).length, 1, 'still never deployed: no second bang')
  // a successful deployment (newer .timestamp): one more bang, recorded
  writeFileSync(join(part, '.timestamp'), '1700000000')
  r = await runListener(args, [crash, { ...crash, eventname: 'PROCESS_STATE_FATAL' }])
  assert.is(bangs(node).length, 2)
  assert.is(readFileSync(join(part, '.slapos_latest_bang_timestamp'), 'utf8'), '1700000000')
  // same deployment, the spelling --instance-root-path of HEAD: no bang
  r = await runListener(['--master-url', node.masterUrl, '--computer-id', node.computerId, '--instance-root-path', node.instanceRoot], [crash])
  assert.is(r.code, 0, r.stderr)
  assert.is(bangs(node).length, 2)
  writeFileSync(join(part, '.timestamp'), '1700000100')
  await runListener(args, [crash])
  assert.is(bangs(node).length, 3)
})

listener('a master that cannot be reached: the event is still acknowledged, the next bang retried', async () => {
  const dir = tempDir()
  mkdirSync(join(dir, 'slappart0'))
  const crash: Event = { eventname: 'PROCESS_STATE_EXITED', processname: 'web-on-watch', groupname: 'slappart0' }
  try {
    const r = await runListener(['--master-url', 'http://127.0.0.1:9/', '--computer-id', 'c', '--instance-root', dir], [crash])
    assert.is(r.code, 0)
    assert.is(r.stdout, expectedStdout(1))
    assert.match(r.stderr, /Couldn't connect to the master/)
    assert.ok(!existsSync(join(dir, 'slappart0', '.slapos_latest_bang_timestamp')), 'a failed bang is not recorded')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

listener('what stays running is /bin/sh in the same process; --in-process answers the same', async () => {
  const events: Event[] = [
    { eventname: 'PROCESS_STATE_RUNNING', processname: 'web-on-watch', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_EXITED', processname: 'wrapper', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_EXITED', processname: 'web-on-watch', groupname: 'slappart0' },
    { eventname: 'PROCESS_STATE_FATAL', processname: 'db-on-watch', groupname: 'slappart1' },
  ]
  const args = ['--master-url', node.masterUrl, '--computer-id', node.computerId]
  const seen: { exe?: string; rssKb?: number; flags?: number[] } = {}
  const shell = await runListener(args, events, (pid) => {
    // the pid supervisord started, after its first READY
    seen.exe = realpathSync(`/proc/${pid}/exe`)
    seen.rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
    seen.flags = [0, 1].map((fd) => Number.parseInt(/flags:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1] ?? 'x', 8))
  })
  assert.is(seen.exe, realpathSync('/bin/sh'))
  assert.ok((seen.rssKb ?? 0) > 0, 'the listener was still there to be measured')
  // stdin and stdout as supervisord gave them: a non-blocking read would end the shell's loop
  assert.equal(seen.flags?.map((f) => f & 0o4000), [0, 0], `O_NONBLOCK on stdin/stdout: ${seen.flags?.map((f) => f.toString(8)).join(' ')}`)
  const viaShell = bangs(node).map((c) => c.fields)
  node.clearCalls()
  const inProcess = await runListener([...args, '--in-process'], events)
  assert.is(inProcess.code, 0, inProcess.stderr)
  assert.is(shell.stdout, expectedStdout(events.length))
  assert.is(inProcess.stdout, shell.stdout)
  assert.equal(bangs(node).map((c) => c.fields), viaShell)
  assert.equal(viaShell.map((f) => f.computer_partition_id), ['slappart0', 'slappart1'])
})

listener('hostile names and files: never evaluated, never a path outside, never written through', async () => {
  const dir = tempDir()
  const marker = join(dir, 'evaluated')
  const part = join(node.instanceRoot, 'slappart1')
  const victim = join(dir, 'victim')
  for (const f of ['.timestamp', '.slapos_latest_bang_timestamp']) rmSync(join(node.instanceRoot, 'slappart0', f), { force: true })
  writeFileSync(victim, 'keep')
  symlinkSync(victim, join(part, '.slapos_latest_bang_timestamp'))
  writeFileSync(join(part, '.timestamp'), '1700000000')
  const args = ['--master-url', node.masterUrl, '--computer-id', node.computerId, '--instance-root', node.instanceRoot]
  const names = [`$(touch\${IFS}${marker})-on-watch`, `\`touch\${IFS}${marker}\`-on-watch`, `x;touch\${IFS}${marker};-on-watch`, `'"*?[-on-watch`]
  try {
    for (const mode of [[], ['--in-process']]) {
      node.clearCalls()
      const payload = (name: string, group: string) => Buffer.from(`processname:${name} groupname:${group} from_state:RUNNING expected:0 pid:1`)
      const raw = (header: string, body: Buffer) => Buffer.concat([Buffer.from(`${header}\n`), body])
      const r = await runListener(
        [...args, ...mode],
        [
          ...names.map((name) => ({ eventname: 'PROCESS_STATE_EXITED', processname: name, groupname: 'slappart0' })),
          // groups that are not partition ids
          { eventname: 'PROCESS_STATE_EXITED', processname: 'a-on-watch', groupname: '..' },
          { eventname: 'PROCESS_STATE_EXITED', processname: 'a-on-watch', groupname: '$(reboot)' },
          // headers out of order, without len, with a len that is not a number
          raw(`len:${payload('b-on-watch', 'slappart1').length} eventname:PROCESS_STATE_FATAL ver:3.0`, payload('b-on-watch', 'slappart1')),
          raw('ver:3.0 eventname:PROCESS_STATE_EXITED', Buffer.alloc(0)),
          raw('ver:3.0 eventname:PROCESS_STATE_EXITED len:$(id)', Buffer.alloc(0)),
        ],
      )
      assert.is(r.code, 0, r.stderr)
      assert.is(r.stdout, expectedStdout(names.length + 5), mode.join(' '))
      assert.not.ok(existsSync(marker), `nothing evaluated ${mode.join(' ')}`)
      // only slappart0's first event and slappart1's FATAL bang (once per deployment)
      assert.equal(
        bangs(node).map((c) => c.fields.message),
        mode.length === 0
          ? [`${names[0]} process in partition slappart0 encountered a problem`, 'b-on-watch process in partition slappart1 encountered a problem']
          : [`${names[0]} process in partition slappart0 encountered a problem`],
        mode.join(' '),
      )
      assert.match(r.stderr, /group '\.\.' stopped, but that group is not a partition id/)
      // the link planted in slappart1 was replaced, its target untouched
      assert.is(readFileSync(victim, 'utf8'), 'keep')
      assert.ok(lstatSync(join(part, '.slapos_latest_bang_timestamp')).isFile())
      assert.is(readFileSync(join(part, '.slapos_latest_bang_timestamp'), 'utf8'), '1700000000')
      rmSync(join(node.instanceRoot, 'slappart0', '.slapos_latest_bang_timestamp'), { force: true })
    }
  } finally {
    rmSync(join(part, '.slapos_latest_bang_timestamp'), { force: true })
    rmSync(join(part, '.timestamp'), { force: true })
    rmSync(dir, { recursive: true, force: true })
  }
})

listener('a FIFO as .timestamp does not block; input that ends inside an event bangs nothing', async () => {
  const part = join(node.instanceRoot, 'slappart0')
  for (const f of ['.timestamp', '.slapos_latest_bang_timestamp']) rmSync(join(part, f), { force: true })
  assert.is(spawnSync('mkfifo', [join(part, '.timestamp')]).status, 0, 'mkfifo')
  writeFileSync(join(part, '.slapos_latest_bang_timestamp'), '5')
  const args = ['--master-url', node.masterUrl, '--computer-id', node.computerId, '--instance-root', node.instanceRoot]
  try {
    for (const mode of [[], ['--in-process']]) {
      node.clearCalls()
      // a FIFO reads as no deployment: already banged, not again (and the listener answers)
      const r = await runListener([...args, ...mode], [{ eventname: 'PROCESS_STATE_EXITED', processname: 'web-on-watch', groupname: 'slappart0' }])
      assert.is(r.stdout, expectedStdout(1), mode.join(' '))
      assert.is(bangs(node).length, 0)
      // the header says 200 bytes, 60 come, then the end
      const body = Buffer.from('processname:web-on-watch groupname:slappart1 from_state:RUN')
      const cut = await runListener([...args, ...mode], [Buffer.concat([Buffer.from('ver:3.0 eventname:PROCESS_STATE_EXITED len:200\n'), body])], undefined, true)
      assert.is(cut.code, 0, cut.stderr)
      assert.ok(cut.stdout.startsWith('READY\n'))
      assert.is(bangs(node).length, 0, `a cut event bangs nothing ${mode.join(' ')}`)
    }
  } finally {
    rmSync(join(part, '.timestamp'), { force: true })
    rmSync(join(part, '.slapos_latest_bang_timestamp'), { force: true })
  }
})

listener('a copy of the program named slapos-watchdog starts itself as the handler under that name', async () => {
  const dir = tempDir()
  const copy = join(dir, 'slapos-watchdog')
  try {
    copyFileSync(SLAPOS, copy)
    chmodSync(copy, 0o755)
    const payload = Buffer.from('processname:web-on-watch groupname:slappart1 from_state:RUNNING expected:0 pid:1')
    const child = spawn(copy, ['--master-url', node.masterUrl, '--computer-id', node.computerId], { env: baseEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t))
    child.stdout.setEncoding('utf8').on('data', (t: string) => {
      stdout += t
      const readies = stdout.split('READY\n').length - 1
      if (readies === 1 && !child.stdin.writableEnded && stdout === 'READY\n') child.stdin.write(Buffer.concat([Buffer.from(`ver:3.0 eventname:PROCESS_STATE_EXITED len:${payload.length}\n`), payload]))
      else if (readies === 2) child.stdin.end()
    })
    const code = await new Promise<number | null>((ok) => child.on('close', ok))
    assert.is(code, 0, stderr)
    assert.is(stdout, expectedStdout(1))
    assert.equal(bangs(node).map((c) => c.fields.computer_partition_id), ['slappart1'], stderr)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

listener('missing --master-url or --computer-id: usage error, exit 2', async () => {
  const r = await runListener(['--computer-id', 'c'], [])
  assert.is(r.code, 2)
  assert.match(r.stderr, /master-url/)
})

listener.run()

// --- under supervisord, banging our proxy ---

const live = suite('watchdog under supervisord')

live('a crashing etc/service process bangs once, an etc/run one never, a second crash before redeploy never', async () => {
  const n = await makeNode({ partitions: 1 })
  const root = n.instanceRoot
  try {
    // an instance on slappart0, so the bang is visible in the proxy as a new timestamp
    await n.supply()
    await n.client.requestComputerPartition({ softwareRelease: n.srUrl, partitionReference: 'inst0', state: 'started' })
    const stamp = async () => {
      const c = await n.client.getFullComputerInformation(n.computerId)
      const p = c._computer_partition_list.find((x) => x._partition_id === 'slappart0')
      return String((p?._parameter_dict as Record<string, unknown> | null | undefined)?.timestamp)
    }
    const before = await stamp()
    assert.ok(before !== 'undefined' && before !== 'None', `instance allocated on slappart0 (timestamp ${before})`)

    const cfg = loadNodeConfig(ConfigFile.load(n.cfgPath))
    createInstanceRootStructure(root)
    writeSupervisordConf(root, watchdogCommand(cfg))
    const log = createLogger({ level: 'warning' })
    const sup = new Supervisor(supervisorPaths(root), log)
    await sup.launch()
    await waitFor('watchdog listener running', async () => ((await sup.processInfo()).some((p) => p.name === 'watchdog' && p.statename === 'RUNNING') ? true : undefined))
    // the process supervisord watches is the small shell loop (same pid as it started)
    const listenerPid = (await sup.processInfo()).find((p) => p.name === 'watchdog')?.pid
    await waitFor('the listener became /bin/sh', async () => (realpathSync(`/proc/${listenerPid}/exe`) === realpathSync('/bin/sh') ? true : undefined))

    const part = join(root, 'slappart0')
    for (const d of ['run', 'service']) mkdirSync(join(part, 'etc', d), { recursive: true })
    writeFileSync(join(part, 'etc', 'run', 'runner'), '#!/bin/sh\nsleep 0.5\nexit 3\n', { mode: 0o755 })
    writeFileSync(join(part, 'etc', 'service', 'crasher'), '#!/bin/sh\nsleep 0.5\nexit 1\n', { mode: 0o755 })
    const owner = { id: 'slappart0', path: part, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, user: 'root', home: '/root' }
    n.clearCalls()
    await startPartitionServices(sup, root, owner, log)
    const exited = async () => {
      const l = (await sup.processInfo()).filter((p) => p.group === 'slappart0')
      return l.length === 2 && l.every((p) => p.statename === 'EXITED') ? l : undefined
    }
    // the barrier: the watchdog logs its decision on each exit of the watched process, so the
    // test knows when it has handled the N-th one (no sleep waiting for "nothing more")
    const logDir = join(root, 'var', 'log')
    const decisions = () =>
      readdirSync(logDir)
        .filter((f) => f.startsWith('watchdog-stderr'))
        .flatMap((f) => readFileSync(join(logDir, f), 'utf8').split('\n'))
        .filter((l) => /crasher-on-watch process in partition slappart0|crasher-on-watch of slappart0 stopped/.test(l))
    const decided = (count: number) => waitFor(`the watchdog's decision on exit ${count}`, async () => (decisions().length >= count ? true : undefined))
    await waitFor('both processes exited', exited)
    await decided(1)
    // answered by the master, then recorded by the watchdog
    await waitFor('one bang answered', async () => (bangs(n).length >= 1 && bangs(n)[0]?.status !== 0 ? true : undefined))
    await waitFor('the bang recorded', async () => (existsSync(join(part, '.slapos_latest_bang_timestamp')) ? true : undefined))
    assert.equal(
      bangs(n).map((c) => c.fields),
      [{ computer_id: n.computerId, computer_partition_id: 'slappart0', message: 'crasher-on-watch process in partition slappart0 encountered a problem' }],
    )
    assert.is(bangs(n)[0]?.status, 200)
    assert.is.not(await stamp(), before, 'the proxy bumped the instance timestamp')
    assert.is(readFileSync(join(part, '.slapos_latest_bang_timestamp'), 'utf8'), '0')

    // crash again, no successful deployment in between: no bang
    await sup.startGroup('slappart0')
    await waitFor('both processes exited again', exited)
    await decided(2)
    assert.match(decisions()[1] ?? '', 'already banged since the last deployment, not banging again')
    assert.is(bangs(n).length, 1)

    // after a successful deployment (.timestamp newer than the last bang) it bangs again, once
    writeFileSync(join(part, '.timestamp'), '1800000000')
    await sup.startGroup('slappart0')
    await waitFor('both processes exited a third time', exited)
    await decided(3)
    await waitFor('second bang answered', async () => (bangs(n).length >= 2 && bangs(n)[1]?.status !== 0 ? true : undefined))
    await waitFor('the second bang recorded', async () => (readFileSync(join(part, '.slapos_latest_bang_timestamp'), 'utf8') === '1800000000' ? true : undefined))
    assert.equal(decisions().length, 3)
    assert.is(bangs(n).length, 2)
    assert.is(readFileSync(join(part, '.slapos_latest_bang_timestamp'), 'utf8'), '1800000000')
  } finally {
    await n.stop()
  }
})

live('stopping the listener stops the handler it started, so that the event is not banged twice', async () => {
  const n = await makeNode({ partitions: 1 })
  const root = n.instanceRoot
  // a master that takes the connection and never answers: the handler waits on it
  const sockets: Socket[] = []
  const hang = createServer((sock) => {
    sockets.push(sock)
    sock.on('error', () => undefined)
  })
  await new Promise<void>((ok) => hang.listen(0, '127.0.0.1', ok))
  const port = (hang.address() as AddressInfo).port
  try {
    const cfg = loadNodeConfig(ConfigFile.load(n.cfgPath))
    createInstanceRootStructure(root)
    writeSupervisordConf(root, watchdogCommand({ ...cfg, masterUrl: `http://127.0.0.1:${port}/` }))
    const log = createLogger({ level: 'warning' })
    const sup = new Supervisor(supervisorPaths(root), log)
    await sup.launch()
    await waitFor('watchdog listener running', async () => ((await sup.processInfo()).some((p) => p.name === 'watchdog' && p.statename === 'RUNNING') ? true : undefined))
    const part = join(root, 'slappart0')
    mkdirSync(join(part, 'etc', 'service'), { recursive: true })
    writeFileSync(join(part, 'etc', 'service', 'crasher'), '#!/bin/sh\nsleep 0.2\nexit 1\n', { mode: 0o755 })
    await startPartitionServices(sup, root, { id: 'slappart0', path: part, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, user: 'root', home: '/root' }, log)
    // the handler of the crash, started by the shell loop, waiting on the master
    const handlers = () =>
      readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .filter((p) => {
          try {
            const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0')
            const state = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.[0]
            // the shell loop carries the handler's arguments too: not it
            return state !== 'Z' && argv[0] !== '/bin/sh' && argv.includes('--handle-event') && argv.includes(root)
          } catch {
            return false // gone meanwhile
          }
        })
    const waiting = await waitFor('a handler waiting on the master', async () => (sockets.length > 0 && handlers().length > 0 ? handlers() : undefined))
    assert.is(waiting.length, 1)
    await sup.stopGroup('watchdog')
    await waitFor('the handler stopped with the listener', async () => (handlers().length === 0 ? true : undefined))
  } finally {
    for (const sock of sockets) sock.destroy()
    hang.close()
    await n.stop()
  }
})

live.run()

// --- node bang ---

const bang = suite('node bang')

bang('sends computerBang with the message, as the node', async () => {
  const n = await makeNode({ partitions: 1 })
  try {
    const r = await n.run(['node', 'bang', '-m', 'Reboot'])
    assert.is(r.code, 0, r.stderr)
    assert.match(r.stderr, `Banging to '${n.masterUrl}'`)
    assert.match(r.stderr, "Bang with message 'Reboot'")
    const calls = n.calls().filter((c) => c.name === 'computerBang')
    assert.equal(calls.map((c) => [c.verb, c.status, c.fields]), [['POST', 200, { computer_id: n.computerId, message: 'Reboot' }]])
    // the alias and the long option
    const r2 = await n.run(['bang', '--message', 'repaired'])
    assert.is(r2.code, 0, r2.stderr)
    assert.is(n.calls().filter((c) => c.name === 'computerBang')[1]?.fields.message, 'repaired')
    // -m is required
    const r3 = await n.run(['node', 'bang'])
    assert.is(r3.code, 2)
  } finally {
    await n.stop()
  }
})

bang('root check: a non-root user gets exit 5 unless root_check = false', async () => {
  const n = await makeNode({ partitions: 1 })
  try {
    writeFileSync(join(n.dir, 'root.cfg'), readFileSync(n.cfgPath, 'utf8').replace('root_check = false', 'root_check = true'))
    const r = await runAs(65534, ['node', 'bang', '-m', 'x', '--cfg', join(n.dir, 'root.cfg')])
    assert.is(r.code, 5, r.stderr)
    assert.match(r.stderr, /must be run as root/)
    assert.is(n.calls().filter((c) => c.name === 'computerBang').length, 0)
    const ok = await runAs(65534, ['node', 'bang', '-m', 'x', '--cfg', n.cfgPath])
    assert.is(ok.code, 0, ok.stderr)
  } finally {
    await n.stop()
  }
})

bang.run()

// --- internal ---


