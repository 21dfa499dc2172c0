// The cpuset manager (node-extras §1.4, checklist 8-13) through its hooks, called directly.
//
// Real: a child of the machine's cgroup v1 cpuset hierarchy is the manager's root
// (`cpuset_root`), real `sleep` processes of `nobody` and root are moved, and the kernel's
// view (/proc/<pid>/cpuset, Cpus_allowed_list) is checked. A machine whose cpuset controller
// is on cgroup v2 instead runs the same test on a child of /sys/fs/cgroup, named by
// cpuset_root as an operator names a delegated cgroup (v2 is never used without it).
//
// File trees: cgroup v2 cannot run for real where cpuset is bound to the v1 hierarchy (a
// controller lives in one hierarchy at a time), so v2 is also checked on a tree of regular
// files laid out as v2 (which file is written with what); the same goes for pools the
// machine does not have (0,2 and 0-3), for a machine without cgroups and for the hostile
// request files. Every v2 tree is named by cpuset_root; without it, a v2-looking default root
// (the defaults are a parameter) must be left alone. The requested PIDs there are still real
// processes: the manager reads their owner from /proc.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chownSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Owner } from '../src/grid-common.ts'
import { createLogger, type Logger } from '../src/log.ts'
import { CPU_EXCLUSIVE_FILE, cpusetManager, type DefaultRoots, detectHierarchy, FORMAT_WARNING, NOT_FORMATTED_WARNING, parseCpuList } from '../src/manager-cpuset.ts'
import type { Manager, ManagerComputer, ManagerPartition } from '../src/managers.ts'
import { realRunner } from '../src/system.ts'
import { skip, tempDir } from './helpers.ts'

const NOBODY: Owner = { uid: 65534, gid: 65534, name: 'nobody', home: '/nonexistent', groups: [65534] }
const isRoot = process.getuid?.() === 0

function memLog(): Logger & { lines: string[] } {
  const lines: string[] = []
  const log = createLogger({ level: 'debug', write: (l) => void lines.push(l), isTTY: false, noTime: true })
  return Object.assign(log, { lines })
}

function manager(cpusetRoot: string, cpufreqRoot: string, powerUsers: string): Manager {
  return cpusetManager({
    settings: new Map([['power_user_list', powerUsers]]),
    firewall: undefined,
    sections: new Map([
      [
        'cpuset',
        new Map([
          ['cpuset_root', cpusetRoot],
          ['cpufreq_root', cpufreqRoot],
        ]),
      ],
    ]),
    runner: realRunner,
  })
}

/** The manager as manager_list loads it without cpuset_root, looking at `defaults` instead of /sys. */
function defaultManager(defaults: DefaultRoots, cpufreqRoot: string, powerUsers: string): Manager {
  return cpusetManager(
    {
      settings: new Map([['power_user_list', powerUsers]]),
      firewall: undefined,
      sections: new Map([['cpuset', new Map([['cpufreq_root', cpufreqRoot]])]]),
      runner: realRunner,
    },
    defaults,
  )
}

function computer(log: Logger): ManagerComputer {
  return { instanceRoot: '/srv/slapgrid', softwareRoot: '/opt/slapgrid', log }
}

/** Only what the cpuset hook reads (no supervisord: it has none to do with it). */
function partition(path: string, owner: Owner, log: Logger): ManagerPartition {
  return { id: 'slappart0', path, owner, state: 'started', addresses: [], instanceRoot: path, log, now: () => new Date() } as unknown as ManagerPartition
}

/** A partition directory of `owner` with the request file written by that user. */
function partitionDir(owner: Owner, request?: string): string {
  const dir = tempDir('slapos-cpuset-part-')
  chownSync(dir, owner.uid, owner.gid)
  if (request !== undefined) writeRequest(dir, owner, request)
  return dir
}

function writeRequest(dir: string, owner: Owner, text: string): void {
  writeFileSync(join(dir, CPU_EXCLUSIVE_FILE), text)
  chownSync(join(dir, CPU_EXCLUSIVE_FILE), owner.uid, owner.gid)
}

const read = (f: string) => readFileSync(f, 'utf8')
const words = (f: string) => read(f).split(/\s+/).filter(Boolean)

/** A cpufreq tree with a `powersave` governor per CPU. */
function cpufreqTree(cpus: number[]): string {
  const dir = tempDir('slapos-cpufreq-')
  for (const c of cpus) {
    mkdirSync(join(dir, `cpu${c}`, 'cpufreq'), { recursive: true })
    writeFileSync(join(dir, `cpu${c}`, 'cpufreq', 'scaling_governor'), 'powersave\n')
  }
  return dir
}
const governor = (root: string, cpu: number) => read(join(root, `cpu${cpu}`, 'cpufreq', 'scaling_governor')).trim()

/** A v1 root of regular files: `tasks` and `cpuset.cpus` as the kernel lays them out. */
function v1Tree(pool: string, tasks = ''): string {
  const root = tempDir('slapos-cpuset-v1-')
  writeFileSync(join(root, 'cpuset.cpus'), pool)
  writeFileSync(join(root, 'cpuset.mems'), '0')
  writeFileSync(join(root, 'tasks'), tasks)
  return root
}

/** A v2 root of regular files, as /sys/fs/cgroup with the cpuset controller available. */
function v2Tree(pool: string, mems: string, procs: string, controllers = 'cpuset cpu io memory pids'): string {
  const root = tempDir('slapos-cpuset-v2-')
  writeFileSync(join(root, 'cgroup.controllers'), `${controllers}\n`)
  writeFileSync(join(root, 'cgroup.subtree_control'), '')
  writeFileSync(join(root, 'cgroup.procs'), procs)
  writeFileSync(join(root, 'cpuset.cpus.effective'), `${pool}\n`)
  writeFileSync(join(root, 'cpuset.mems.effective'), `${mems}\n`)
  return root
}

const running: ChildProcess[] = []

/** A `sleep 60` of `uid`, its pid once it runs. */
function sleeper(uid: number): number {
  const child = spawn('sleep', ['60'], { uid, gid: uid === 0 ? 0 : NOBODY.gid, stdio: 'ignore' })
  running.push(child)
  if (child.pid === undefined) throw new Error('sleep did not start')
  return child.pid
}

async function stopSleepers(): Promise<void> {
  await Promise.all(
    running.splice(0).map(
      (c) =>
        new Promise<void>((res) => {
          if (c.exitCode !== null || c.signalCode !== null) return res()
          c.once('exit', () => res())
          c.kill('SIGKILL')
        }),
    ),
  )
}

/** A PID that no process has any more (a process that ran and was reaped). */
function gonePid(): number {
  const r = spawnSync('true')
  return r.pid
}

const cpusetOf = (pid: number) => read(`/proc/${pid}/cpuset`).trim()
const allowedOf = (pid: number) => /^Cpus_allowed_list:\s*(\S+)/m.exec(read(`/proc/${pid}/status`))?.[1]

test('cpu lists parse as the kernel writes them', () => {
  assert.equal(parseCpuList('0-3,6\n'), [0, 1, 2, 3, 6])
  assert.equal(parseCpuList('0,2'), [0, 2])
  assert.equal(parseCpuList('5'), [5])
  assert.is(parseCpuList(''), undefined)
  assert.is(parseCpuList('\n'), undefined)
  assert.is(parseCpuList('3-1'), undefined)
  assert.is(parseCpuList('0;rm -rf /'), undefined)
})

// --- real cgroups ------------------------------------------------------------------------

interface RealHierarchy {
  version: 1 | 2
  /** the mount the test root is made in */
  parent: string
  procs: 'tasks' | 'cgroup.procs'
}

function realHierarchy(): RealHierarchy | undefined {
  if (existsSync('/sys/fs/cgroup/cpuset/cpuset.cpus')) return { version: 1, parent: '/sys/fs/cgroup/cpuset', procs: 'tasks' }
  try {
    if (read('/sys/fs/cgroup/cgroup.controllers').split(/\s+/).includes('cpuset')) return { version: 2, parent: '/sys/fs/cgroup', procs: 'cgroup.procs' }
  } catch {
    // no cgroup2 at /sys/fs/cgroup
  }
  return undefined
}

/** Moves whatever is left in `dir` (and below) to `parent`, then removes the directories, deepest first. */
function removeCgroup(dir: string, parent: string, procs: string): void {
  if (!existsSync(dir)) return
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroup(join(dir, e.name), parent, procs)
  for (const pid of existsSync(join(dir, procs)) ? words(join(dir, procs)) : []) {
    try {
      writeFileSync(join(parent, procs), `${pid}\n`)
    } catch {
      // exited meanwhile
    }
  }
  rmdirSync(dir)
}

test('real cgroup: format, shared CPU, exclusive CPU, power users, owners, no free CPU (checklist 8, 10-13)', async () => {
  if (!isRoot) return skip('needs root to create cgroups and to run processes as nobody')
  const real = realHierarchy()
  if (!real) return skip('no cpuset controller on this machine (neither /sys/fs/cgroup/cpuset nor cgroup2 cpuset)')
  const hostPool = parseCpuList(read(join(real.parent, real.version === 1 ? 'cpuset.cpus' : 'cpuset.cpus.effective'))) ?? []
  const [shared, excl] = hostPool
  if (shared === undefined || excl === undefined) return skip('needs 2 CPUs')
  const name = `slapos-test-${randomBytes(4).toString('hex')}`
  const root = join(real.parent, name)
  const cpufreq = cpufreqTree([shared, excl])
  let enabledCpuset = false
  try {
    mkdirSync(root)
    if (real.version === 1) {
      writeFileSync(join(root, 'cpuset.cpus'), `${shared},${excl}`)
      writeFileSync(join(root, 'cpuset.mems'), '0')
      // a v1 cpuset may be cpu_exclusive only when its parent is (EACCES otherwise): the
      // per-CPU cpusets format makes below need their root to be exclusive
      writeFileSync(join(root, 'cpuset.cpu_exclusive'), '1')
    } else {
      if (!read('/sys/fs/cgroup/cgroup.subtree_control').split(/\s+/).includes('cpuset')) {
        writeFileSync('/sys/fs/cgroup/cgroup.subtree_control', '+cpuset')
        enabledCpuset = true
      }
      writeFileSync(join(root, 'cpuset.cpus'), `${shared},${excl}`)
    }
    // three sleeps in our root: two of nobody, one of root; and a PID that is gone
    const mine = sleeper(NOBODY.uid)
    const mine2 = sleeper(NOBODY.uid)
    const others = sleeper(0)
    const gone = gonePid()
    for (const pid of [mine, mine2, others]) writeFileSync(join(root, real.procs), `${pid}\n`)
    assert.is(cpusetOf(mine), `/${name}`)

    const log = memLog()
    const m = manager(root, cpufreq, 'someone nobody')
    await m.format?.(computer(log))
    for (const cpu of [shared, excl]) {
      assert.is(read(join(root, `cpu${cpu}`, 'cpuset.cpus')).trim(), String(cpu), `cpu${cpu}/cpuset.cpus`)
      assert.is(read(join(root, `cpu${cpu}`, 'cpuset.mems')).trim(), '0')
      if (real.version === 1) assert.is(read(join(root, `cpu${cpu}`, 'cpuset.cpu_exclusive')).trim(), '1')
    }
    assert.equal(readdirSync(root).filter((f) => /^cpu\d+$/.test(f)).sort(), [`cpu${shared}`, `cpu${excl}`].sort())

    // not a power user: a warning, nothing moves (checklist 10)
    const part = partitionDir(NOBODY, `${gone} ${others} ${mine}\n`)
    const denied = memLog()
    await manager(root, cpufreq, 'someone').instance?.(partition(part, NOBODY, denied))
    assert.ok(denied.lines.some((l) => l.includes('WARNING User nobody not allowed to modify cpuset! Allowed users are in power_user_list option in config file.')), denied.lines.join(''))
    assert.is(cpusetOf(mine), `/${name}`)
    assert.is(cpusetOf(others), `/${name}`)
    assert.is(read(join(part, CPU_EXCLUSIVE_FILE)), `${gone} ${others} ${mine}\n`)
    assert.is(governor(cpufreq, shared), 'powersave')

    // a power user: everything of the root to the shared CPU, the own PID to the exclusive
    // one (checklist 11, 13); root's process and the gone PID are dropped, not the others
    const plog = memLog()
    await m.instance?.(partition(part, NOBODY, plog))
    const said = plog.lines.join('')
    assert.is(cpusetOf(mine), `/${name}/cpu${excl}`, said)
    assert.is(allowedOf(mine), String(excl))
    for (const pid of [mine2, others]) {
      assert.is(cpusetOf(pid), `/${name}/cpu${shared}`)
      assert.is(allowedOf(pid), String(shared))
    }
    assert.equal(words(join(root, real.procs)), [])
    assert.ok(said.includes(`PID ${others} of ${CPU_EXCLUSIVE_FILE} is a process of uid 0, not of nobody (uid 65534): not moved`), said)
    assert.ok(said.includes(`PID ${gone} of ${CPU_EXCLUSIVE_FILE} no longer exists: dropped`), said)
    assert.is(read(join(part, CPU_EXCLUSIVE_FILE)), '', 'placed and refused PIDs leave the request file')
    assert.is(lstatSync(join(part, CPU_EXCLUSIVE_FILE)).uid, NOBODY.uid)
    assert.is(governor(cpufreq, shared), 'performance')
    assert.is(governor(cpufreq, excl), 'performance')

    // no free exclusive CPU: the PID is written back, it stays on the shared CPU (checklist 12)
    writeRequest(part, NOBODY, `${mine2}`)
    await m.instance?.(partition(part, NOBODY, memLog()))
    assert.is(read(join(part, CPU_EXCLUSIVE_FILE)), `${mine2}\n`)
    assert.is(cpusetOf(mine2), `/${name}/cpu${shared}`)
    assert.is(cpusetOf(mine), `/${name}/cpu${excl}`)

    // an already placed PID asked again is dropped, not moved to another CPU
    writeRequest(part, NOBODY, `${mine}\n`)
    await m.instance?.(partition(part, NOBODY, memLog()))
    assert.is(read(join(part, CPU_EXCLUSIVE_FILE)), '')
    assert.is(cpusetOf(mine), `/${name}/cpu${excl}`)
  } finally {
    await stopSleepers()
    removeCgroup(root, real.parent, real.procs)
    if (enabledCpuset) {
      try {
        writeFileSync('/sys/fs/cgroup/cgroup.subtree_control', '-cpuset')
      } catch {
        // another cgroup of the machine uses it now
      }
    }
  }
  assert.not.ok(existsSync(root))
})

// --- file trees ----------------------------------------------------------------------------

test('v1 file tree: pool 0,2 makes cpu0 and cpu2 only; pool 0-3 makes cpu0..cpu3 (checklist 8)', async () => {
  const two = v1Tree('0,2\n')
  await manager(two, cpufreqTree([]), '').format?.(computer(memLog()))
  assert.equal(readdirSync(two).filter((f) => f.startsWith('cpu')).sort(), ['cpu0', 'cpu2', 'cpuset.cpus', 'cpuset.mems'])
  for (const cpu of [0, 2]) {
    assert.is(read(join(two, `cpu${cpu}`, 'cpuset.cpus')), String(cpu))
    assert.is(read(join(two, `cpu${cpu}`, 'cpuset.cpu_exclusive')), '1')
    assert.is(read(join(two, `cpu${cpu}`, 'cpuset.mems')), '0')
    assert.is(read(join(two, `cpu${cpu}`, 'tasks')), '')
  }
  const four = v1Tree('0-3')
  await manager(four, cpufreqTree([]), '').format?.(computer(memLog()))
  for (const cpu of [0, 1, 2, 3]) assert.is(read(join(four, `cpu${cpu}`, 'cpuset.cpus')), String(cpu))
  assert.not.ok(existsSync(join(four, 'cpu4')))
})

test('v2 file tree: +cpuset, per-CPU cpusets, partitions, moves through cgroup.procs', async () => {
  if (!isRoot) return skip('needs root to run a process as nobody')
  // v2 for real needs the cpuset controller on cgroup2; where it is bound to v1 (this
  // hierarchy can only be in one place), the v2 layout is checked file by file
  const root = v2Tree('0-2', '1-2', '4000\n3999\n4100\n')
  const cpufreq = cpufreqTree([0, 1, 2])
  const m = manager(root, cpufreq, 'nobody')
  await m.format?.(computer(memLog()))
  assert.is(read(join(root, 'cgroup.subtree_control')), '+cpuset')
  for (const cpu of [0, 1, 2]) {
    assert.is(read(join(root, `cpu${cpu}`, 'cpuset.cpus')), String(cpu))
    assert.is(read(join(root, `cpu${cpu}`, 'cpuset.mems')), '1', 'first node of cpuset.mems.effective')
    assert.not.ok(existsSync(join(root, `cpu${cpu}`, 'cpuset.cpu_exclusive')), 'no v1 file in v2')
  }
  // the shared CPU stays a member: the root cgroup keeps it for what cannot leave the root
  assert.not.ok(existsSync(join(root, 'cpu0', 'cpuset.cpus.partition')))
  assert.is(read(join(root, 'cpu1', 'cpuset.cpus.partition')), 'root')
  assert.is(read(join(root, 'cpu2', 'cpuset.cpus.partition')), 'root')

  // what the kernel then shows: the partitions took cpu1 and cpu2 from the root's CPUs
  writeFileSync(join(root, 'cpuset.cpus.effective'), '0\n')
  const mine = sleeper(NOBODY.uid)
  const part = partitionDir(NOBODY, `${mine}\n`)
  try {
    await m.instance?.(partition(part, NOBODY, memLog()))
    // every process of the root, highest PID first, then the request on the first exclusive CPU
    assert.is(read(join(root, 'cpu0', 'cgroup.procs')), '4100\n4000\n3999\n')
    assert.is(read(join(root, 'cpu1', 'cgroup.procs')), `${mine}\n`)
    assert.is(read(join(root, 'cpu2', 'cgroup.procs')), '')
    assert.is(read(join(part, CPU_EXCLUSIVE_FILE)), '')
    assert.is(governor(cpufreq, 0), 'performance')
    assert.is(governor(cpufreq, 1), 'performance')
    assert.is(governor(cpufreq, 2), 'powersave')
  } finally {
    await stopSleepers()
  }
})

test('v2 without the cpuset controller, or no cgroups at all: warnings, success (checklist 9)', async () => {
  const noCpuset = v2Tree('0-1', '0', '', 'cpu io memory pids')
  const log = memLog()
  await manager(noCpuset, cpufreqTree([]), '').format?.(computer(log))
  assert.ok(log.lines.some((l) => l.includes(`WARNING ${FORMAT_WARNING}`)), log.lines.join(''))
  assert.not.ok(existsSync(join(noCpuset, 'cpu0')))
  assert.is(read(join(noCpuset, 'cgroup.subtree_control')), '')

  const empty = tempDir('slapos-cpuset-none-')
  const flog = memLog()
  await manager(empty, cpufreqTree([]), 'nobody').format?.(computer(flog))
  assert.ok(flog.lines.some((l) => l.endsWith(`WARNING ${FORMAT_WARNING}\n`)), flog.lines.join(''))
  assert.equal(readdirSync(empty), [])
  const ilog = memLog()
  await manager(empty, cpufreqTree([]), 'nobody').instance?.(partition(partitionDir(NOBODY, '1\n'), NOBODY, ilog))
  assert.ok(ilog.lines.some((l) => l.endsWith(`WARNING ${NOT_FORMATTED_WARNING}\n`)), ilog.lines.join(''))
})

const V2_HINT = 'set cpuset_root in [manager:cpuset] to a delegated cgroup'

test('without cpuset_root a cgroup v2 default root is never used: warnings and the cpuset_root hint (checklist 9)', async () => {
  if (!isRoot) return skip('needs root to own the request file as nobody')
  // a machine booted with cgroup v2 only: no v1 cpuset mount, a v2 top cgroup with cpuset
  const v2 = v2Tree('0-2', '0', '4000\n3999\n')
  const defaults: DefaultRoots = { v1: join(tempDir('slapos-cpuset-nov1-'), 'cpuset'), v2 }
  const why = detectHierarchy(undefined, defaults)
  assert.type(why, 'string')
  assert.ok(String(why).includes(V2_HINT), String(why))
  // the same directory named by cpuset_root is a v2 hierarchy
  assert.equal(detectHierarchy(v2, defaults), { version: 2, root: v2, procs: 'cgroup.procs' })

  const cpufreq = cpufreqTree([0, 1, 2])
  const flog = memLog()
  await defaultManager(defaults, cpufreq, 'nobody').format?.(computer(flog))
  assert.ok(flog.lines.some((l) => l.endsWith(`WARNING ${FORMAT_WARNING}\n`)), flog.lines.join(''))
  assert.is(flog.lines.filter((l) => l.includes('INFO') && l.includes(V2_HINT)).length, 1, flog.lines.join(''))
  assert.equal(readdirSync(v2).filter((f) => /^cpu\d+$/.test(f)), [], 'no partition made at the top')
  assert.is(read(join(v2, 'cgroup.subtree_control')), '', 'the controller is not enabled at the top')

  // even with cpu<N> present (as if someone formatted it), instance moves nothing without cpuset_root
  await manager(v2, cpufreq, 'nobody').format?.(computer(memLog()))
  assert.ok(existsSync(join(v2, 'cpu1', 'cpuset.cpus.partition')))
  const mine = sleeper(NOBODY.uid)
  try {
    const request = `${mine}\n${mine + 1}\n${mine + 2}\n`
    const part = partitionDir(NOBODY, request)
    const ilog = memLog()
    await defaultManager(defaults, cpufreq, 'nobody').instance?.(partition(part, NOBODY, ilog))
    assert.ok(ilog.lines.some((l) => l.endsWith(`WARNING ${NOT_FORMATTED_WARNING}\n`)), ilog.lines.join(''))
    assert.is(ilog.lines.filter((l) => l.includes(V2_HINT)).length, 1, 'the hint once per hook call, not per PID')
    assert.ok(ilog.lines.some((l) => l.includes('DEBUG') && l.includes(V2_HINT)), ilog.lines.join(''))
    assert.is(read(join(v2, 'cgroup.procs')), '4000\n3999\n', 'nothing left the top cgroup')
    for (const cpu of [0, 1, 2]) assert.is(read(join(v2, `cpu${cpu}`, 'cgroup.procs')), '')
    assert.is(read(join(part, CPU_EXCLUSIVE_FILE)), request, 'the request is left as it was')
    assert.is(governor(cpufreq, 1), 'powersave')
  } finally {
    await stopSleepers()
  }
})

test('without cpuset_root the v1 default is used even beside a cgroup v2 mount; neither: the reason', async () => {
  const v1 = v1Tree('0-1')
  const v2 = v2Tree('0-1', '0', '')
  const h = detectHierarchy(undefined, { v1, v2 })
  assert.equal(h, { version: 1, root: v1, procs: 'tasks' })
  const log = memLog()
  await defaultManager({ v1, v2 }, cpufreqTree([]), '').format?.(computer(log))
  assert.is(read(join(v1, 'cpu1', 'cpuset.cpu_exclusive')), '1')
  assert.equal(readdirSync(v2).filter((f) => /^cpu\d+$/.test(f)), [])
  assert.not.ok(log.lines.some((l) => l.includes('WARNING')), log.lines.join(''))

  const none = tempDir('slapos-cpuset-none-')
  const why = detectHierarchy(undefined, { v1: join(none, 'cpuset'), v2: none })
  assert.is(why, `no cgroup v1 cpuset hierarchy (${join(none, 'cpuset', 'cpuset.cpus')}) and no cpuset_root in [manager:cpuset]`)
})

test('v1 file tree: not formatted, no request, empty request: nothing happens', async () => {
  const root = v1Tree('0-1', '10\n')
  const part = partitionDir(NOBODY, '')
  const log = memLog()
  await manager(root, cpufreqTree([0, 1]), 'nobody').instance?.(partition(part, NOBODY, log))
  assert.ok(log.lines.some((l) => l.includes(NOT_FORMATTED_WARNING)))
  await manager(root, cpufreqTree([0, 1]), 'nobody').format?.(computer(memLog()))
  const quiet = memLog()
  await manager(root, cpufreqTree([0, 1]), 'nobody').instance?.(partition(part, NOBODY, quiet))
  await manager(root, cpufreqTree([0, 1]), 'nobody').instance?.(partition(partitionDir(NOBODY), NOBODY, quiet))
  assert.equal(quiet.lines, [])
  assert.is(read(join(root, 'cpu0', 'tasks')), '', 'no request: the root is left alone')
})

test('hostile request files: symlink, FIFO, another owner, hard link, junk, too big', async () => {
  if (!isRoot) return skip('needs root to own files as nobody')
  const root = v1Tree('0-1', '10\n')
  const cpufreq = cpufreqTree([0, 1])
  const m = manager(root, cpufreq, 'nobody')
  await m.format?.(computer(memLog()))
  const mine = sleeper(NOBODY.uid)
  try {
    // a symbolic link (to a file the user could not otherwise make root rewrite) is not followed
    const outside = join(tempDir('slapos-cpuset-outside-'), 'target')
    writeFileSync(outside, `${mine}\n`)
    chownSync(outside, NOBODY.uid, NOBODY.gid)
    const linked = partitionDir(NOBODY)
    symlinkSync(outside, join(linked, CPU_EXCLUSIVE_FILE))
    const slog = memLog()
    await m.instance?.(partition(linked, NOBODY, slog))
    assert.ok(slog.lines.some((l) => l.includes(`WARNING ${CPU_EXCLUSIVE_FILE} ignored: not a regular file`)), slog.lines.join(''))
    assert.is(read(outside), `${mine}\n`)
    assert.ok(lstatSync(join(linked, CPU_EXCLUSIVE_FILE)).isSymbolicLink())
    assert.is(read(join(root, 'cpu0', 'tasks')), '', 'nothing moved')
    assert.is(read(join(root, 'cpu1', 'tasks')), '')

    // a FIFO is not opened for reading (it would block the node)
    const fifo = partitionDir(NOBODY)
    spawnSync('mkfifo', [join(fifo, CPU_EXCLUSIVE_FILE)])
    const flog = memLog()
    await m.instance?.(partition(fifo, NOBODY, flog))
    assert.ok(flog.lines.some((l) => l.includes('ignored: not a regular file')))

    // a file of another user (root here: a hard link to a root file) is not read nor rewritten
    const rootFile = join(tempDir('slapos-cpuset-rootfile-'), 'secret')
    writeFileSync(rootFile, `${mine}\nsecret\n`)
    const hard = partitionDir(NOBODY)
    linkSync(rootFile, join(hard, CPU_EXCLUSIVE_FILE))
    const hlog = memLog()
    await m.instance?.(partition(hard, NOBODY, hlog))
    assert.ok(hlog.lines.some((l) => l.includes(`${CPU_EXCLUSIVE_FILE} ignored: owned by uid 0, not by the partition user (uid 65534)`)), hlog.lines.join(''))
    assert.is(read(rootFile), `${mine}\nsecret\n`)
    assert.is(read(join(root, 'cpu0', 'tasks')), '', 'a refused request moves nothing')
    assert.is(read(join(root, 'cpu1', 'tasks')), '')

    // too big
    const big = partitionDir(NOBODY, `${mine} `.repeat(20000))
    const blog = memLog()
    await m.instance?.(partition(big, NOBODY, blog))
    assert.ok(blog.lines.some((l) => l.includes('ignored: larger than 65536 bytes')), blog.lines.join(''))
    assert.is(read(join(root, 'cpu1', 'tasks')), '')

    // words that are not PIDs are dropped with a warning (escaped); the PID still moves, once;
    // the request file is replaced by a new file of the user (a hard link of the user's own
    // file elsewhere keeps its content)
    const junk = partitionDir(NOBODY, `-1 0 ../../etc 99999999 \x1b[31mred ${mine} ${mine}\n`)
    const keep = join(tempDir('slapos-cpuset-keep-'), 'copy')
    linkSync(join(junk, CPU_EXCLUSIVE_FILE), keep)
    const jlog = memLog()
    await m.instance?.(partition(junk, NOBODY, jlog))
    const said = jlog.lines.join('')
    assert.ok(said.includes(`WARNING ${CPU_EXCLUSIVE_FILE}: 5 entries are not PIDs and are dropped ('-1', '0', '../../etc', ...)`), said)
    assert.not.ok(said.includes('\x1b'))
    assert.is(read(join(root, 'cpu1', 'tasks')), `${mine}\n`)
    assert.is(read(join(junk, CPU_EXCLUSIVE_FILE)), '')
    assert.is(statSync(join(junk, CPU_EXCLUSIVE_FILE)).uid, NOBODY.uid)
    assert.ok(read(keep).includes('red'), 'the old inode is untouched')
    assert.equal(
      readdirSync(junk).filter((f) => f.endsWith('.tmp')),
      [],
      'no temporary file left',
    )
  } finally {
    await stopSleepers()
  }
})

test('v1 file tree: no free exclusive CPU writes the PID back; placed ones leave (checklist 11, 12)', async () => {
  if (!isRoot) return skip('needs root to run processes as nobody')
  const root = v1Tree('0-2', '300\n200\n')
  const cpufreq = cpufreqTree([0, 1, 2])
  const m = manager(root, cpufreq, 'nobody')
  await m.format?.(computer(memLog()))
  writeFileSync(join(root, 'cpu2', 'tasks'), '77\n') // cpu2 is taken already
  const a = sleeper(NOBODY.uid)
  const b = sleeper(NOBODY.uid)
  const part = partitionDir(NOBODY, `${a}\n${b}\n`)
  try {
    await m.instance?.(partition(part, NOBODY, memLog()))
    assert.is(read(join(root, 'cpu0', 'tasks')), '300\n200\n')
    assert.is(read(join(root, 'cpu1', 'tasks')), `${a}\n`)
    assert.is(read(join(root, 'cpu2', 'tasks')), '77\n')
    assert.is(read(join(part, CPU_EXCLUSIVE_FILE)), `${b}\n`)
    assert.is(governor(cpufreq, 1), 'performance')
    assert.is(governor(cpufreq, 2), 'powersave')
  } finally {
    await stopSleepers()
  }
})

test('governor: absent file is skipped, a refused write is an error line, not a failure (checklist 13)', async () => {
  if (!isRoot) return skip('needs root to run a process as nobody')
  const root = v1Tree('0-1', '')
  const cpufreq = tempDir('slapos-cpufreq-')
  // cpu1's governor is a directory: the write fails as a refused sysfs write would
  mkdirSync(join(cpufreq, 'cpu1', 'cpufreq', 'scaling_governor'), { recursive: true })
  const m = manager(root, cpufreq, 'nobody')
  await m.format?.(computer(memLog()))
  const pid = sleeper(NOBODY.uid)
  try {
    const log = memLog()
    await m.instance?.(partition(partitionDir(NOBODY, `${pid}\n`), NOBODY, log))
    assert.is(read(join(root, 'cpu1', 'tasks')), `${pid}\n`)
    assert.ok(log.lines.some((l) => l.includes(`ERROR Failed to write "performance" to ${join(cpufreq, 'cpu1', 'cpufreq', 'scaling_governor')}`)), log.lines.join(''))
  } finally {
    await stopSleepers()
  }
})

test.after(async () => {
  await stopSleepers()
})

test.run()
