// The cpuset manager (node-extras §1.4): a partition of a power user asks, in
// `<partition>/.slapos-cpu-exclusive`, for some of its processes to get a CPU of their own.
// `node format` makes one cpuset cgroup per CPU of the pool (`cpu<N>`); every `node instance`
// run then moves the processes of the hierarchy's root onto the first CPU of the pool (the
// shared CPU) and each requested PID onto the first exclusive CPU (the others) that is still
// empty, and sets the governor of every CPU receiving a task to `performance`.
//
// The original only knows cgroup v1 (`/sys/fs/cgroup/cpuset`) and only warns on a v2 machine;
// so do we by default. This one also drives a cgroup v2 directory, where an exclusive CPU is
// a cpuset partition root, but only one named by `[manager:cpuset] cpuset_root` (our
// extension, like `cpufreq_root`): a delegated cgroup the operator prepared. Never the
// machine's top cgroup by itself: partitions there would take the exclusive CPUs from every
// other cgroup (systemd's slices included) at format time, and the moves would pull processes
// out of their systemd units.
//
// The request file is the partition user's: it is read without following a symlink, only
// decimal PIDs count, only that user's own processes move, and it is rewritten by replacing
// the directory entry (never by writing through what the user planted there). Used through
// managers.ts.
import { existsSync, mkdirSync, readdirSync, readFileSync, statfsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SlapError } from './errors.ts'
import type { Owner } from './grid-common.ts'
import type { Logger } from './log.ts'
import { readUserFile, replaceFile, type Manager, type ManagerOptions, type ManagerPartition } from './managers.ts'
import { escapeControls } from './names.ts'

export const CPU_EXCLUSIVE_FILE = '.slapos-cpu-exclusive'
export const DEFAULT_V1_ROOT = '/sys/fs/cgroup/cpuset'
export const DEFAULT_V2_ROOT = '/sys/fs/cgroup'
export const DEFAULT_CPUFREQ_ROOT = '/sys/devices/system/cpu'
/** Where the hierarchy is looked for without `cpuset_root` (a parameter so tests can point elsewhere). */
export interface DefaultRoots {
  /** the cgroup v1 cpuset mount, used when it has `cpuset.cpus` */
  v1: string
  /** the cgroup v2 mount: never used, only recognised to tell the operator about `cpuset_root` */
  v2: string
}
export const DEFAULT_ROOTS: DefaultRoots = { v1: DEFAULT_V1_ROOT, v2: DEFAULT_V2_ROOT }
/** A request file is a few PIDs: anything larger is not one. */
export const REQUEST_MAX_BYTES = 64 * 1024
/** The kernel's PID_MAX_LIMIT: no PID (nor thread id) is larger. */
const PID_MAX = 4_194_304
/** statfs f_type of a cgroup2 mount */
const CGROUP2_SUPER_MAGIC = 0x63677270

export const FORMAT_WARNING = 'CPUSet Manager cannot format computer because cgroups do not exist.'
export const NOT_FORMATTED_WARNING = "CGROUP's CPUSET Manager cannot update computer because it is not cpuset-formatted."

/**
 * The cpuset hierarchy in use. `procs` is the file listing and receiving its members: v1's
 * `tasks` (thread ids; a write moves one thread), v2's `cgroup.procs` (a write moves the
 * whole process).
 */
export interface Hierarchy {
  version: 1 | 2
  root: string
  procs: 'tasks' | 'cgroup.procs'
}

/** The manager; `defaults` only for tests (the registry passes options alone). */
export function cpusetManager(options: ManagerOptions, defaults: DefaultRoots = DEFAULT_ROOTS): Manager {
  const section = options.sections.get('cpuset')
  const cpusetRoot = section?.get('cpuset_root')?.trim() || undefined
  const cpufreqRoot = section?.get('cpufreq_root')?.trim() || DEFAULT_CPUFREQ_ROOT
  const powerUsers = (options.settings.get('power_user_list') ?? '').split(/\s+/).filter(Boolean)
  return {
    name: 'cpuset',
    format(computer) {
      const h = detectHierarchy(cpusetRoot, defaults)
      if (typeof h === 'string') {
        computer.log.warning(FORMAT_WARNING)
        // format is run by the operator, who is the one to act on why: INFO, not DEBUG
        computer.log.info(`cpuset: ${h}`)
        return
      }
      formatHierarchy(h, computer.log)
    },
    instance(p) {
      placeRequests(p, { cpusetRoot, cpufreqRoot, powerUsers, defaults })
    },
  }
}

// --- reading the hierarchy -------------------------------------------------------------

/**
 * CPU ids of a kernel cpu list (`0-3,6` -> 0,1,2,3,6), in the order written; undefined when
 * the text is not one (the empty list of an unconfigured cpuset included).
 */
export function parseCpuList(text: string): number[] | undefined {
  const t = text.trim()
  if (t === '') return undefined
  const ids: number[] = []
  for (const part of t.split(',')) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part.trim())
    if (!m || m[1] === undefined) return undefined
    const a = Number(m[1])
    const b = m[2] === undefined ? a : Number(m[2])
    if (b < a || b - a > 65535) return undefined
    for (let i = a; i <= b; i++) ids.push(i)
  }
  return ids
}

/**
 * The hierarchy to use, or why there is none (one line for the log). With `cpusetRoot` (the
 * extension option) the version comes from that directory's files (v1: `tasks`; v2:
 * `cgroup.procs` and `cgroup.controllers`); without it, only v1 at `defaults.v1` when it has
 * `cpuset.cpus`, as the original. A cgroup v2 `defaults.v2` is recognised only to say that
 * `cpuset_root` must name a delegated cgroup: using the machine's top cgroup would make the
 * exclusive CPUs partitions that every other cgroup (system.slice, user.slice, ...) loses.
 */
export function detectHierarchy(cpusetRoot: string | undefined, defaults: DefaultRoots = DEFAULT_ROOTS): Hierarchy | string {
  if (cpusetRoot !== undefined) {
    if (existsSync(join(cpusetRoot, 'tasks'))) return checkV1(cpusetRoot)
    if (existsSync(join(cpusetRoot, 'cgroup.procs')) && existsSync(join(cpusetRoot, 'cgroup.controllers'))) return checkV2(cpusetRoot)
    return `cpuset_root ${cpusetRoot} is neither a cgroup v1 directory (no tasks file) nor a cgroup v2 one (no cgroup.procs and cgroup.controllers)`
  }
  if (existsSync(join(defaults.v1, 'cpuset.cpus'))) return checkV1(defaults.v1)
  if (isCgroup2(defaults.v2)) {
    return `${defaults.v2} is cgroup v2, which is used only through cpuset_root: set cpuset_root in [manager:cpuset] to a delegated cgroup prepared for the exclusive CPUs (the machine's top cgroup is not used, its partitions would take those CPUs from systemd's slices)`
  }
  return `no cgroup v1 cpuset hierarchy (${join(defaults.v1, 'cpuset.cpus')}) and no cpuset_root in [manager:cpuset]`
}

/** A cgroup2 mount (statfs), or a directory laid out as one (a test tree). */
function isCgroup2(dir: string): boolean {
  try {
    if (statfsSync(dir).type === CGROUP2_SUPER_MAGIC) return true
  } catch {
    return false // no such directory
  }
  return existsSync(join(dir, 'cgroup.controllers'))
}

function checkV1(root: string): Hierarchy | string {
  if (!existsSync(join(root, 'cpuset.cpus'))) return `${root} is a cgroup v1 hierarchy without the cpuset controller (no cpuset.cpus)`
  return { version: 1, root, procs: 'tasks' }
}

function checkV2(root: string): Hierarchy | string {
  const controllers = readText(join(root, 'cgroup.controllers')) ?? ''
  if (!controllers.split(/\s+/).includes('cpuset')) return `the cgroup v2 directory ${root} has no cpuset controller (cgroup.controllers: ${escapeControls(controllers.trim())}); write +cpuset to its parent's cgroup.subtree_control, or the controller is bound to a cgroup v1 mount`
  return { version: 2, root, procs: 'cgroup.procs' }
}

/**
 * The CPU pool, ascending (the kernel writes its lists ascending, so the first is the shared
 * CPU). v1: the root's `cpuset.cpus`, which per-CPU cpusets leave alone. v2: the root's
 * `cpuset.cpus.effective` loses the CPUs its partition roots take, so the `cpu<N>` made by
 * format are added back: the pool stays the same after format as before.
 */
export function poolOf(h: Hierarchy): number[] | undefined {
  const text = readText(join(h.root, h.version === 1 ? 'cpuset.cpus' : 'cpuset.cpus.effective'))
  const ids = new Set(text === undefined ? [] : (parseCpuList(text) ?? []))
  if (h.version === 2) {
    let names: string[] = []
    try {
      names = readdirSync(h.root)
    } catch {
      // unreadable root: its effective list only
    }
    for (const name of names) {
      const m = /^cpu(\d{1,5})$/.exec(name)
      if (m && m[1] !== undefined && existsSync(join(h.root, name, h.procs))) ids.add(Number(m[1]))
    }
  }
  return ids.size === 0 ? undefined : [...ids].sort((a, b) => a - b)
}

/**
 * The memory node each per-CPU cpuset gets: the original writes 0; we write the first node
 * the root has (0 on every machine whose root has node 0, where writing 0 is the only choice
 * that works anyway).
 */
function memoryNode(h: Hierarchy): number {
  const text = readText(join(h.root, h.version === 1 ? 'cpuset.mems' : 'cpuset.mems.effective'))
  return (text === undefined ? undefined : parseCpuList(text)?.[0]) ?? 0
}

// --- format ------------------------------------------------------------------------------

/**
 * One cpuset per pool CPU. v1: `cpuset.cpus` = N, `cpuset.cpu_exclusive` = 1, `cpuset.mems`.
 * v2: `+cpuset` in the root's `cgroup.subtree_control` first (else the children have no
 * cpuset files), then `cpuset.cpus` = N, `cpuset.mems`, and `cpuset.cpus.partition` = `root`
 * for the exclusive CPUs only: the `cpuset_root` cgroup must keep a CPU for what stays in it
 * (the kernel refuses to give a partition's last CPU to a child partition), so the shared CPU
 * is an ordinary member cpuset.
 */
export function formatHierarchy(h: Hierarchy, log: Logger): void {
  const pool = poolOf(h)
  if (!pool) {
    log.warning(`CPUSet Manager cannot format computer: no CPU list in ${join(h.root, h.version === 1 ? 'cpuset.cpus' : 'cpuset.cpus.effective')}`)
    return
  }
  const mems = String(memoryNode(h))
  if (h.version === 2) {
    const control = readText(join(h.root, 'cgroup.subtree_control')) ?? ''
    if (!control.split(/\s+/).includes('cpuset')) writeControl(join(h.root, 'cgroup.subtree_control'), '+cpuset')
  }
  const shared = pool[0]
  for (const cpu of pool) {
    const dir = join(h.root, `cpu${cpu}`)
    if (!existsSync(dir)) {
      mkdirSync(dir)
      // a real cgroup directory has its files from the start; a plain directory (a test
      // tree) gets the two the instance step reads, as the original does
      for (const f of [h.procs, 'cpuset.cpus']) if (!existsSync(join(dir, f))) writeFileSync(join(dir, f), '')
    }
    writeControl(join(dir, 'cpuset.cpus'), String(cpu))
    if (h.version === 1) {
      writeControl(join(dir, 'cpuset.cpu_exclusive'), '1')
      writeControl(join(dir, 'cpuset.mems'), mems)
    } else {
      writeControl(join(dir, 'cpuset.mems'), mems)
      if (cpu !== shared) writeControl(join(dir, 'cpuset.cpus.partition'), 'root')
    }
  }
  log.debug(`cpuset: ${pool.length} per-CPU cgroups under ${h.root} (cgroup v${h.version}), shared CPU ${shared}`)
}

/** A write to a cgroup control file; a refusal fails format (as the original's IOError) with what to check. */
function writeControl(file: string, value: string): void {
  try {
    writeFileSync(file, value)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e)
    throw new SlapError(`Cannot write ${value} to ${file}: ${code}`, {
      code: 'E_CPUSET',
      hint: 'a per-CPU cpuset is exclusive (v1 cpuset.cpu_exclusive, v2 partition root): no other cgroup beside it may hold that CPU exclusively, and in v1 its parent must be cpu_exclusive itself',
      cause: e,
    })
  }
}

// --- instance ----------------------------------------------------------------------------

export interface PlaceOptions {
  cpusetRoot: string | undefined
  cpufreqRoot: string
  powerUsers: readonly string[]
  /** where to look without cpusetRoot (tests); DEFAULT_ROOTS otherwise */
  defaults?: DefaultRoots
}

/** The instance hook (§1.4 steps 1-6), run for every selected partition on every run. */
export function placeRequests(p: ManagerPartition, o: PlaceOptions): void {
  const log = p.log
  // 1. formatted? (the original tests cpu0; the first CPU of the pool is the same on any
  //    whole machine and stays right for a cpuset_root whose pool does not start at 0)
  const h = detectHierarchy(o.cpusetRoot, o.defaults)
  const pool = typeof h === 'string' ? undefined : poolOf(h)
  const first = pool?.[0]
  if (typeof h === 'string' || !pool || first === undefined || !existsSync(join(h.root, `cpu${first}`))) {
    log.warning(NOT_FORMATTED_WARNING)
    // why, once per call: DEBUG, as this runs for every partition on every run
    if (typeof h === 'string') log.debug(`cpuset: ${h}`)
    return
  }
  // 2. a request? (read now, so that a refused file moves nothing at all)
  const request = readRequest(join(p.path, CPU_EXCLUSIVE_FILE), p.owner)
  if (request.kind === 'absent') return
  if (request.kind === 'refused') {
    log.warning(`${CPU_EXCLUSIVE_FILE} ignored: ${request.why}`)
    return
  }
  // 3. a power user?
  if (!o.powerUsers.includes(p.owner.name)) {
    log.warning(`User ${escapeControls(p.owner.name)} not allowed to modify cpuset! Allowed users are in power_user_list option in config file.`)
    return
  }
  const procsOf = (cpu: number) => join(h.root, `cpu${cpu}`, h.procs)
  // 4. everything in the root goes to the shared CPU. No pause between moves (the original
  //    sleeps 10 ms after each): a write returns once the kernel has moved the task.
  const rootPids = readPids(join(h.root, h.procs)).sort((a, b) => b - a)
  const moved: number[] = []
  const refused: number[] = []
  for (const pid of rootPids) {
    if (writePid(procsOf(first), pid) === undefined) moved.push(pid)
    else refused.push(pid) // kernel threads stay in the root
  }
  if (moved.length > 0) setGovernor(o.cpufreqRoot, first, log)
  log.debug(`cpuset: refused to move ${refused.length} PIDs: ${refused.join(' ')}; moved ${moved.length} PIDs to cpu${first}: ${moved.join(' ')}`)

  // 5. the request, less the PIDs already on an exclusive CPU
  const running = new Set([...rootPids, ...readPids(procsOf(first))])
  const exclusiveCpus = pool.slice(1)
  const exclusive = new Set(exclusiveCpus.flatMap((cpu) => readPids(procsOf(cpu))))
  if (request.invalid.length > 0) {
    const shown = request.invalid.slice(0, 3).map((t) => `'${escapeControls(t.slice(0, 20))}'`)
    log.warning(`${CPU_EXCLUSIVE_FILE}: ${request.invalid.length} entries are not PIDs and are dropped (${shown.join(', ')}${request.invalid.length > 3 ? ', ...' : ''})`)
  }
  const wanted = request.pids.filter((pid) => running.has(pid) || !exclusive.has(pid))

  // 6. each to the first empty exclusive CPU, if it is the partition user's own process
  const again: number[] = []
  for (const pid of wanted) {
    const uid = realUidOf(pid)
    if (uid === undefined) {
      log.info(`PID ${pid} of ${CPU_EXCLUSIVE_FILE} no longer exists: dropped`)
      continue
    }
    if (uid !== p.owner.uid) {
      log.warning(`PID ${pid} of ${CPU_EXCLUSIVE_FILE} is a process of uid ${uid}, not of ${escapeControls(p.owner.name)} (uid ${p.owner.uid}): not moved`)
      continue
    }
    const cpu = exclusiveCpus.find((c) => readPids(procsOf(c)).length === 0)
    if (cpu === undefined) {
      again.push(pid) // no free exclusive CPU: asked again next run
      continue
    }
    const err = writePid(procsOf(cpu), pid)
    if (err === undefined) {
      log.debug(`cpuset: PID ${pid} moved to cpu${cpu}`)
      setGovernor(o.cpufreqRoot, cpu, log)
    } else if (err === 'ESRCH') {
      log.info(`PID ${pid} of ${CPU_EXCLUSIVE_FILE} exited before it could move: dropped`)
    } else {
      log.warning(`Cannot move PID ${pid} to cpu${cpu} (${err}): asked again next run`)
      again.push(pid)
    }
  }
  const content = again.map((pid) => `${pid}\n`).join('')
  if (content !== request.text) {
    try {
      // a new file of the user renamed over the old one: nothing written through a planted link
      replaceFile(join(p.path, CPU_EXCLUSIVE_FILE), content, request.mode, p.owner)
    } catch (e) {
      log.warning(`Cannot rewrite ${CPU_EXCLUSIVE_FILE}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
    }
  }
}

/** Writes `pid` into a cgroup's member file: undefined on success, else the error code. */
function writePid(file: string, pid: number): string | undefined {
  try {
    // append: on a cgroup file the same single write; on a test tree every PID stays visible
    writeFileSync(file, `${pid}\n`, { flag: 'a' })
    return undefined
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'EIO'
  }
}

/** The PIDs of a kernel member file (whitespace separated numbers); a missing file has none. */
function readPids(file: string): number[] {
  const text = readText(file)
  if (text === undefined) return []
  return text
    .split(/\s+/)
    .filter((t) => /^\d+$/.test(t))
    .map(Number)
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}

/** Real uid of a process or thread (first field of `Uid:` in /proc/<pid>/status), undefined when it is gone. */
export function realUidOf(pid: number): number | undefined {
  const status = readText(`/proc/${pid}/status`)
  const m = status === undefined ? null : /^Uid:\s+(\d+)/m.exec(status)
  return m && m[1] !== undefined ? Number(m[1]) : undefined
}

/** `performance` into the CPU's scaling governor when the machine has one (not fatal). */
function setGovernor(cpufreqRoot: string, cpu: number, log: Logger): void {
  const file = join(cpufreqRoot, `cpu${cpu}`, 'cpufreq', 'scaling_governor')
  if (!existsSync(file)) return
  try {
    writeFileSync(file, 'performance\n')
  } catch {
    log.error(`Failed to write "performance" to ${file}`)
  }
}

// --- the request file --------------------------------------------------------------------

export type Request = { kind: 'absent' } | { kind: 'refused'; why: string } | { kind: 'read'; pids: number[]; invalid: string[]; text: string; mode: number }

/**
 * The request file as the partition user left it: a regular file owned by that user, read
 * with readUserFile (no link followed, at most REQUEST_MAX_BYTES). `pids` are its decimal
 * PIDs in order, each once; `invalid` the other words. No file and an empty file are `absent`
 * (no request).
 */
export function readRequest(path: string, owner: Owner): Request {
  // a file of another user (a hard link to a root file) is not read, even one empty when checked
  const read = readUserFile(path, REQUEST_MAX_BYTES, (st) => (st.uid !== owner.uid ? `owned by uid ${st.uid}, not by the partition user (uid ${owner.uid})` : undefined))
  if (read.kind !== 'ok') return read
  if (read.bytes.length === 0) return { kind: 'absent' }
  const text = read.bytes.toString('latin1')
  const pids: number[] = []
  const invalid: string[] = []
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const pid = /^\d{1,7}$/.test(word) ? Number(word) : 0
    if (pid < 1 || pid > PID_MAX) invalid.push(word)
    else if (!pids.includes(pid)) pids.push(pid)
  }
  return { kind: 'read', pids, invalid, text, mode: read.mode & 0o666 }
}
