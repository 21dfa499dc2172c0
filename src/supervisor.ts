// The node's supervisord: the files it reads (etc/supervisord.conf and one group file per
// started partition in etc/supervisord.conf.d/), how it is launched, and a small XML-RPC
// client on its unix socket. Used by node instance/report/supervisord/supervisorctl and by
// grid-instance.ts (spec grid.md §2.2, §2.4, §4.6, §4.7).
//
// A partition's services:
//
//   etc/run/*, etc/service/*  --writePartitionGroup-->  etc/supervisord.conf.d/<id>.conf
//        --applyChanges (reloadConfig, add/remove groups)-->  group <id> known, STOPPED
//        --startGroup-->  RUNNING ... EXITED/FATAL  --event-->  watchdog (watchdog.ts)
//   stop: <id>.conf deleted --applyChanges--> group stopped and removed
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import type { RequestOptions } from 'node:http'
import { basename, dirname, join } from 'node:path'
import type { ConfigFile, NodeConfig } from './config.ts'
import { NODE_DEFAULTS } from './config.ts'
import { ConfigError, SlapError } from './errors.ts'
import { escapeControls } from './names.ts'
import type { Logger } from './log.ts'
import { realRunner, searchPath, type Runner } from './system.ts'

export interface SupervisorPaths {
  instanceRoot: string
  /** unix socket supervisord listens on (supervisorctl's serverurl) */
  socket: string
  /** etc/supervisord.conf */
  conf: string
  /** etc/supervisord.conf.d: one file per group */
  confDir: string
  pidfile: string
  logfile: string
}

/** §2.2: the legacy `supervisord.socket` when it exists (nodes installed before 1.6), else `sv.sock`. */
export function supervisorPaths(instanceRoot: string): SupervisorPaths {
  const legacy = join(instanceRoot, 'supervisord.socket')
  return {
    instanceRoot,
    socket: existsSync(legacy) ? legacy : join(instanceRoot, 'sv.sock'),
    conf: join(instanceRoot, 'etc', 'supervisord.conf'),
    confDir: join(instanceRoot, 'etc', 'supervisord.conf.d'),
    pidfile: join(instanceRoot, 'var', 'run', 'supervisord.pid'),
    logfile: join(instanceRoot, 'var', 'log', 'supervisord.log'),
  }
}

/** §2.2: the directories every software/instance/report run (re)creates, with their modes. */
export function createInstanceRootStructure(instanceRoot: string): void {
  mkdirSync(instanceRoot, { recursive: true, mode: 0o755 })
  const dirs: Array<[string, number]> = [
    ['etc', 0o700],
    ['etc/supervisord.conf.d', 0o700],
    ['var', 0o755],
    ['var/log', 0o700],
    ['var/run', 0o700],
    // the partitions' program logs (programLogDir): each partition's user reaches its own only
    ['var/program-log', 0o711],
  ]
  for (const [rel, mode] of dirs) {
    const p = join(instanceRoot, rel)
    mkdirSync(p, { recursive: true, mode })
    // mkdir's mode is filtered by the umask, and an existing directory keeps whatever it had
    chmodSync(p, mode)
  }
}

/**
 * §2.4: the command line of the `watchdog` event listener, like slapgrid writes it. The
 * program comes from `watchdog_command` (default /opt/slapos/bin/slapos-watchdog).
 */
export function watchdogCommand(cfg: Pick<NodeConfig, 'watchdogCommand' | 'masterUrl' | 'computerId' | 'certificateRepositoryPath' | 'instanceRoot'>): string {
  const parts = [cfg.watchdogCommand, '--master-url', quote(cfg.masterUrl), '--computer-id', quote(cfg.computerId)]
  if (cfg.certificateRepositoryPath) parts.push('--certificate-repository-path', quote(cfg.certificateRepositoryPath))
  parts.push('--instance-root', quote(cfg.instanceRoot))
  return parts.join(' ')
}

/** §2.4: writes etc/supervisord.conf (0600, temp + rename) when its text or mode differ. */
export function writeSupervisordConf(instanceRoot: string, watchdogCommand: string): boolean {
  const paths = supervisorPaths(instanceRoot)
  return writeIfChanged(paths.conf, supervisordConfText(paths, watchdogCommand))
}

/** The text of etc/supervisord.conf (exported for tests and for `slapos node supervisord`). */
export function supervisordConfText(paths: SupervisorPaths, watchdogCommand: string): string {
  const root = paths.instanceRoot
  return [
    '[unix_http_server]',
    `file=${ini(paths.socket)}`,
    'chmod=0700',
    '',
    '[supervisord]',
    `logfile=${ini(paths.logfile)}`,
    'logfile_maxbytes=50MB',
    'logfile_backups=10',
    'loglevel=info',
    `pidfile=${ini(paths.pidfile)}`,
    'nodaemon=false',
    // output of programs without their own log file (the watchdog's stderr) stays on the node
    `childlogdir=${ini(join(root, 'var', 'log'))}`,
    // supervisord refuses to start below `minfds` open files (default 1024); the node's
    // services raise their own limits if they need to
    '',
    '[rpcinterface:supervisor]',
    'supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface',
    '',
    '[supervisorctl]',
    `serverurl=unix://${ini(paths.socket)}`,
    '',
    '[eventlistener:watchdog]',
    `command=${ini(watchdogCommand)}`,
    'events=PROCESS_STATE_EXITED, PROCESS_STATE_FATAL',
    // the listener is a shell loop that may have a bang in flight in a child: stopped
    // together, so that the event supervisord hands again to the next listener is banged once
    'stopasgroup=true',
    'killasgroup=true',
    '',
    '[include]',
    `files=${ini(join(paths.confDir, '*.conf'))}`,
    '',
  ].join('\n')
}

/**
 * `slapos node supervisord` and `node supervisorctl`: the instance root from [slapos], its
 * directories, and etc/supervisord.conf. The original writes an empty watchdog command
 * here (node instance fills it in later); when master_url and computer_id are known we
 * write the real one at once, so the listener works from the start.
 */
export function prepareSupervisordFromConfig(file: ConfigFile, opts: { onlyIfMissing?: boolean } = {}): SupervisorPaths {
  const instanceRoot = file.path_('slapos', 'instance_root')
  if (!instanceRoot) throw new ConfigError(`${file.path}: [slapos] instance_root is missing`, 'set instance_root in the [slapos] section')
  const paths = supervisorPaths(instanceRoot)
  if (opts.onlyIfMissing && existsSync(paths.conf)) return paths
  createInstanceRootStructure(instanceRoot)
  const masterUrl = file.get('slapos', 'master_url')?.trim()
  const computerId = file.get('slapos', 'computer_id')?.trim()
  const command =
    masterUrl && computerId
      ? watchdogCommand({
          watchdogCommand: file.get('slapos', 'watchdog_command')?.trim() || NODE_DEFAULTS.watchdogCommand,
          masterUrl,
          computerId,
          certificateRepositoryPath: file.path_('slapos', 'certificate_repository_path'),
          instanceRoot,
        })
      : ''
  writeSupervisordConf(instanceRoot, command)
  return paths
}

/** Who runs a partition's services. */
export interface PartitionProcesses {
  /** partition id, also the supervisord group name */
  id: string
  /** partition directory */
  path: string
  uid: number
  gid: number
  /** user name (USER, LOGNAME) */
  user: string
  /** home directory of uid (HOME) */
  home: string
}

/**
 * §2.4/§4.6: writes etc/supervisord.conf.d/<id>.conf from <path>/etc/run then
 * <path>/etc/service (each sorted; services get the `-on-watch` suffix), deletes stale
 * `<id>-*.conf` files (except the manager groups named by `keep`, by default all of them:
 * `socat` and `prerm`), and removes the group file
 * when the partition has no services. `programs` are the supervisord names
 * (`<id>:<process>`), empty when there is nothing to run.
 */
export function writePartitionGroup(instanceRoot: string, p: PartitionProcesses, keep: readonly string[] = MANAGER_GROUP_SUFFIXES): { changed: boolean; programs: string[]; refused: string[] } {
  const confDir = supervisorPaths(instanceRoot).confDir
  const entries: Array<{ name: string; command: string; processName: string }> = []
  const seen = new Set<string>()
  // the names come from files of the partition, whose user is not trusted: only names that
  // cannot change the meaning of the root-owned group file become programs
  const refused: string[] = []
  for (const [dir, suffix] of [['run', ''], ['service', '-on-watch']] as const) {
    for (const name of listExecutables(join(p.path, 'etc', dir))) {
      if (!isServiceName(name)) {
        refused.push(`etc/${dir}/${name}`)
        continue
      }
      // the same name in etc/run and etc/service would give supervisord two programs of one name
      if (seen.has(name)) continue
      seen.add(name)
      entries.push({ name, command: join(p.path, 'etc', dir, name), processName: name + suffix })
    }
  }
  const own = join(confDir, `${p.id}.conf`)
  let changed = false
  // stale files of this partition: <id>-<something>.conf not written by a manager
  for (const f of safeReaddir(confDir)) {
    if (!f.startsWith(`${p.id}-`) || !f.endsWith('.conf')) continue
    const suffix = f.slice(p.id.length + 1, -'.conf'.length)
    if (keep.includes(suffix)) continue
    unlinkSync(join(confDir, f))
    changed = true
  }
  if (entries.length === 0) {
    if (existsSync(own)) {
      unlinkSync(own)
      changed = true
    }
    return { changed, programs: [], refused }
  }
  resetProgramLogs(p, entries)
  const text = groupText(p, entries)
  if (writeIfChanged(own, text)) changed = true
  return { changed, programs: entries.map((e) => `${p.id}:${e.processName}`), refused }
}

/**
 * A service file name that may name a supervisord program: letters, digits and `._+@-`,
 * starting with a letter or digit, at most 200 characters (no `:`, `%`, `;`, space or
 * control character, which supervisord's configuration or process names would read).
 */
export function isServiceName(name: string): boolean {
  return name.length <= 200 && /^[A-Za-z0-9][A-Za-z0-9._+@-]*$/.test(name)
}

/** Service files of a partition refused as program names (what the caller reports). */
export class RefusedServicesError extends SlapError {
  constructor(id: string, refused: string[]) {
    const shown = refused.slice(0, 5).map((r) => `'${escapeControls(r)}'`)
    super(`${refused.length} service file(s) of ${id} have names that cannot be supervisord programs: ${shown.join(', ')}${refused.length > 5 ? ', ...' : ''}`, {
      code: 'E_SERVICE_NAME',
      hint: 'rename them to letters, digits and ._+@- (no spaces, colons, percent signs or control characters)',
    })
  }
}

/** A program a manager adds to a partition (node-extras §1.3). */
export interface ManagerProgram {
  /** program id, also the process name: one of isServiceName's names */
  name: string
  /** the command, one argument per item (quoted for supervisord's split) */
  argv: string[]
  /** run as root (uid/gid 0, root's HOME) instead of the partition user */
  asRoot?: boolean
}

/**
 * Writes the manager group `<id>-<suffix>.conf` (group `<id>-<suffix>`, programs
 * `<id>-<suffix>_<name>`, logs `<partition>/.<id>-<suffix>_<name>.log`), or deletes it when
 * `programs` is empty. The partition's own group is left as it is (the original rewrites it
 * here too, which restarts redirections at each processing). True when the file changed:
 * the caller applies the change to supervisord.
 */
export function writeManagerGroup(instanceRoot: string, p: PartitionProcesses, suffix: (typeof MANAGER_GROUP_SUFFIXES)[number], programs: readonly ManagerProgram[]): boolean {
  const file = join(supervisorPaths(instanceRoot).confDir, `${p.id}-${suffix}.conf`)
  if (programs.length === 0) {
    if (!existsSync(file)) return false
    unlinkSync(file)
    return true
  }
  const group: PartitionProcesses = { ...p, id: `${p.id}-${suffix}` }
  const byName = new Map<string, ManagerProgram>()
  for (const prog of programs) {
    if (!isServiceName(prog.name)) throw new SlapError(`refusing the program name '${escapeControls(prog.name)}' in ${group.id}`, { code: 'E_SERVICE_NAME' })
    byName.set(prog.name, prog) // the later of two programs of one name wins, as in the original
  }
  const entries = [...byName.values()].map((prog) => ({ name: prog.name, command: prog.argv.map(shellQuote).join(' '), quoted: true, processName: prog.name, asRoot: prog.asRoot === true }))
  resetProgramLogs(group, entries)
  return writeIfChanged(file, groupText(group, entries))
}

/** Deletes `<id>.conf` and every `<id>-*.conf` (destruction of a partition). True if any was there. */
export function removePartitionGroups(instanceRoot: string, id: string): boolean {
  const confDir = supervisorPaths(instanceRoot).confDir
  // root's directory of the partition's program logs goes with them
  rmSync(programLogDir(instanceRoot, id), { recursive: true, force: true })
  let removed = false
  for (const f of safeReaddir(confDir)) {
    if (f === `${id}.conf` || (f.startsWith(`${id}-`) && f.endsWith('.conf'))) {
      unlinkSync(join(confDir, f))
      removed = true
    }
  }
  return removed
}

/** A fault answered by supervisord (e.g. BAD_NAME 10, STILL_RUNNING 91). */
export class SupervisorFault extends SlapError {
  readonly faultCode: number
  readonly faultString: string
  constructor(method: string, faultCode: number, faultString: string) {
    super(`supervisord refused ${method}: ${faultString} (fault ${faultCode})`, { code: 'E_SUPERVISOR_FAULT' })
    this.faultCode = faultCode
    this.faultString = faultString
  }
}

/** supervisord could not be reached on its socket (not running, or not answering). */
export class SupervisorConnectionError extends SlapError {
  constructor(socket: string, cause: unknown) {
    super(`cannot talk to supervisord on ${socket}: ${cause instanceof Error ? cause.message : String(cause)}`, {
      code: 'E_SUPERVISOR_CONNECTION',
      hint: 'is supervisord running? `slapos node supervisord` starts it',
      cause,
    })
  }
}

/** supervisord's fault codes we act on (supervisor/xmlrpc.py Faults). */
export const FAULT = { UNKNOWN_METHOD: 1, SHUTDOWN_STATE: 6, BAD_NAME: 10, ALREADY_STARTED: 60, NOT_RUNNING: 70, ALREADY_ADDED: 90, STILL_RUNNING: 91 } as const

export interface ProcessInfo {
  name: string
  group: string
  statename: string
  pid: number
  exitstatus: number
}

/**
 * Talks to one supervisord. Every public method runs alone: node instance processes
 * partitions in parallel, and a reloadConfig followed by add/remove must never interleave
 * with another partition's.
 */
export class Supervisor {
  readonly paths: SupervisorPaths
  private readonly log: Logger
  private readonly runner: Runner
  private queue: Promise<unknown> = Promise.resolve()

  constructor(paths: SupervisorPaths, log: Logger, runner: Runner = realRunner) {
    this.paths = paths
    this.log = log
    this.runner = runner
  }

  /**
   * §4.7: makes sure supervisord runs. When its socket answers RUNNING it is left alone
   * (the watchdog listener is re-added if it is not running); otherwise `supervisord -c
   * etc/supervisord.conf` from PATH is started with an empty environment, and asked
   * until it answers. `forbid`: never start one. `nodaemon`: run it in the foreground
   * and return when it exits.
   */
  async launch(opts: { forbid?: boolean; nodaemon?: boolean } = {}): Promise<void> {
    return this.exclusive(async () => {
      await this.stopStraySupervisord()
      if (existsSync(this.paths.socket)) {
        for (let attempt = 1; attempt <= 5; attempt++) {
          let state: string
          let watchdog: boolean | undefined
          try {
            ;({ state, watchdog } = await this.stateAndWatchdog(5_000))
          } catch (e) {
            if (e instanceof SupervisorFault && e.faultCode !== FAULT.SHUTDOWN_STATE) throw e
            if (e instanceof SupervisorFault) {
              await sleep(2_000 * attempt)
              continue
            }
            break // nobody listens: start one
          }
          if (state === 'RUNNING') {
            this.log.debug('supervisord already running')
            await this.reviveWatchdog(watchdog)
            return
          }
          if (state === 'SHUTDOWN') {
            await sleep(2_000 * attempt)
            continue
          }
          break
        }
      }
      if (opts.forbid) {
        this.log.info('supervisord is not running, and forbid_supervisord_automatic_launch keeps it stopped')
        return
      }
      await this.start(opts.nodaemon === true)
    })
  }

  /** `RUNNING`, `SHUTDOWN`, `RESTARTING` or `FATAL`. */
  async getState(timeoutMs?: number): Promise<string> {
    return this.exclusive(() => this.stateName(timeoutMs))
  }

  /**
   * §4.6 "apply change": reloadConfig, then stop and remove the removed groups (removal
   * retried up to 10 times, one second apart, while processes stop), stop/remove/add the
   * changed ones and add the new ones (not started: autostart=false).
   */
  async applyChanges(): Promise<void> {
    // Partitions that finish together share one apply: one queued but not started yet reads
    // every group file written before it starts, theirs included. supervisord re-reads all
    // its group files at each reloadConfig, so on a node of 1,000 partitions one apply per
    // partition kept it busy for minutes of the first deployment.
    if (this.queuedApply) return this.queuedApply
    const queued = this.exclusive(() => {
      this.queuedApply = undefined
      return this.apply()
    })
    this.queuedApply = queued
    return queued
  }

  /** the apply waiting for its turn, that a new caller joins */
  private queuedApply: Promise<void> | undefined

  /**
   * startProcessGroup(id, wait=false). A group supervisord does not know (BAD_NAME) has
   * nothing to start: not an error, the answer is false.
   */
  async startGroup(id: string): Promise<boolean> {
    return this.exclusive(async () => {
      try {
        await this.rpc('supervisor.startProcessGroup', [id, false])
        return true
      } catch (e) {
        if (e instanceof SupervisorFault && e.faultCode === FAULT.BAD_NAME) return false
        throw e
      }
    })
  }

  /** stopProcessGroup(id); an unknown group is already stopped. */
  async stopGroup(id: string): Promise<void> {
    return this.exclusive(async () => {
      try {
        await this.rpc('supervisor.stopProcessGroup', [id, true])
      } catch (e) {
        if (e instanceof SupervisorFault && e.faultCode === FAULT.BAD_NAME) return
        throw e
      }
    })
  }

  async processInfo(): Promise<ProcessInfo[]> {
    return this.exclusive(() => this.allProcessInfo())
  }

  /** getProcessInfo('<group>:<name>'); undefined when supervisord does not know it. */
  async processInfoOf(name: string): Promise<(ProcessInfo & { start: number }) | undefined> {
    return this.exclusive(async () => {
      let v: XmlRpcValue
      try {
        v = await this.rpc('supervisor.getProcessInfo', [name])
      } catch (e) {
        if (e instanceof SupervisorFault && e.faultCode === FAULT.BAD_NAME) return undefined
        throw e
      }
      return isStruct(v) ? { ...processInfo(v), start: Number(v.start ?? 0) } : undefined
    })
  }

  /** startProcess('<group>:<name>', wait=false); one already started is left alone. */
  async startProcess(name: string): Promise<void> {
    return this.exclusive(async () => {
      try {
        await this.rpc('supervisor.startProcess', [name, false])
      } catch (e) {
        if (e instanceof SupervisorFault && e.faultCode === FAULT.ALREADY_STARTED) return
        throw e
      }
    })
  }

  /** startAllProcesses(wait=false) (offline mode and `node boot`). */
  async startAll(): Promise<void> {
    return this.exclusive(async () => {
      await this.rpc('supervisor.startAllProcesses', [false])
    })
  }

  /** Path of an executable found on PATH (supervisorctl for the node commands). */
  static which(name: string, path?: string): string | undefined {
    return findOnPath(name, path)
  }

  /** Stops every process and supervisord itself (tests, upgrades). */
  async shutdown(): Promise<void> {
    return this.exclusive(async () => {
      await this.rpc('supervisor.shutdown', [])
    })
  }

  // --- internal (called with the queue held) ---

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn)
    this.queue = next.catch(() => undefined)
    return next
  }

  /**
   * getState, and whether the watchdog listener runs, in one round trip (system.multicall):
   * what every node run asks first. A supervisord without multicall is asked twice.
   */
  private async stateAndWatchdog(timeoutMs: number): Promise<{ state: string; watchdog: boolean | undefined }> {
    let answers: XmlRpcValue
    try {
      answers = await this.rpc('system.multicall', [[{ methodName: 'supervisor.getState', params: [] }, { methodName: 'supervisor.getProcessInfo', params: ['watchdog'] }]], timeoutMs)
    } catch (e) {
      if (!(e instanceof SupervisorFault && e.faultCode === FAULT.UNKNOWN_METHOD)) throw e
      return { state: await this.stateName(timeoutMs), watchdog: undefined }
    }
    // supervisord answers each call's value itself (the XML-RPC convention is [value]), or the struct of a fault
    const [stateAnswer, watchdogAnswer] = (Array.isArray(answers) ? answers : []).map((a) => (Array.isArray(a) ? a[0] : a))
    if (isStruct(stateAnswer) && 'faultCode' in stateAnswer) throw new SupervisorFault('supervisor.getState', Number(stateAnswer.faultCode), String(stateAnswer.faultString ?? ''))
    const state = isStruct(stateAnswer) && typeof stateAnswer.statename === 'string' ? stateAnswer.statename : 'UNKNOWN'
    return { state, watchdog: isStruct(watchdogAnswer) && (watchdogAnswer.statename === 'RUNNING' || watchdogAnswer.statename === 'STARTING') }
  }

  private async stateName(timeoutMs?: number): Promise<string> {
    const v = await this.rpc('supervisor.getState', [], timeoutMs)
    return isStruct(v) && typeof v.statename === 'string' ? v.statename : 'UNKNOWN'
  }

  private async allProcessInfo(): Promise<ProcessInfo[]> {
    const v = await this.rpc('supervisor.getAllProcessInfo', [])
    if (!Array.isArray(v)) return []
    return v.filter(isStruct).map(processInfo)
  }

  private async apply(): Promise<void> {
    const v = await this.rpc('supervisor.reloadConfig', [])
    const lists = Array.isArray(v) && Array.isArray(v[0]) ? v[0] : [[], [], []]
    const names = (i: number) => (Array.isArray(lists[i]) ? (lists[i] as XmlRpcValue[]).map(String) : [])
    const [added, changed, removed] = [names(0), names(1), names(2)]
    for (const g of removed) {
      this.log.debug(`supervisord: removing group ${g}`)
      await this.stopAndRemove(g)
    }
    for (const g of changed) {
      this.log.debug(`supervisord: reloading group ${g}`)
      await this.stopAndRemove(g)
      await this.add(g)
    }
    for (const g of added) {
      this.log.debug(`supervisord: adding group ${g}`)
      await this.add(g)
    }
  }

  private async add(group: string): Promise<void> {
    try {
      await this.rpc('supervisor.addProcessGroup', [group])
    } catch (e) {
      if (!(e instanceof SupervisorFault && e.faultCode === FAULT.ALREADY_ADDED)) throw e
    }
  }

  private async stopAndRemove(group: string): Promise<void> {
    try {
      // wait=false, then our own polling: supervisord answers a waiting call only on its
      // next one-second tick, which made every stop cost a second
      await this.rpc('supervisor.stopProcessGroup', [group, false])
    } catch (e) {
      if (!(e instanceof SupervisorFault && e.faultCode === FAULT.BAD_NAME)) throw e
      return
    }
    // processes get stopwaitsecs (60 s) after TERM before supervisord KILLs them
    const deadline = Date.now() + 70_000
    while (Date.now() < deadline) {
      const busy = (await this.allProcessInfo()).some((p) => p.group === group && ACTIVE_STATES.includes(p.statename))
      if (!busy) break
      await sleep(100)
    }
    for (let attempt = 1; ; attempt++) {
      try {
        await this.rpc('supervisor.removeProcessGroup', [group])
        return
      } catch (e) {
        if (e instanceof SupervisorFault && e.faultCode === FAULT.BAD_NAME) return
        if (!(e instanceof SupervisorFault && e.faultCode === FAULT.STILL_RUNNING) || attempt >= 10) throw e
        await sleep(1_000)
      }
    }
  }

  /**
   * HEAD's launchSupervisord: a running supervisord whose watchdog listener is not running
   * (its command was empty, or changed since) gets the current configuration applied and
   * the listener re-added. `known`: whether it runs, when the caller already asked.
   */
  private async reviveWatchdog(known?: boolean): Promise<void> {
    // one process asked about, not all of them: a node with many partitions answers faster
    const running = async (): Promise<boolean> => {
      try {
        const v = await this.rpc('supervisor.getProcessInfo', ['watchdog'])
        return isStruct(v) && (v.statename === 'RUNNING' || v.statename === 'STARTING')
      } catch (e) {
        if (e instanceof SupervisorFault) return false
        throw e
      }
    }
    if (known ?? (await running())) return
    await this.apply()
    if (await running()) return
    await this.stopAndRemove('watchdog')
    await this.add('watchdog')
  }

  /**
   * §2.2, repair of a slapos.core 1.6.1 bug: on a node that still uses the legacy
   * supervisord.socket, a second supervisord listening on sv.sock has its processes stopped
   * and is shut down (it would run every service twice).
   */
  private async stopStraySupervisord(): Promise<void> {
    const modern = join(this.paths.instanceRoot, 'sv.sock')
    if (this.paths.socket === modern || !existsSync(modern)) return
    const stray = new Supervisor({ ...this.paths, socket: modern }, this.log, this.runner)
    try {
      if ((await stray.stateName(5_000)) !== 'RUNNING') return
    } catch {
      return // nobody listens there
    }
    this.log.warning(`a second supervisord listens on ${modern} while this node uses ${this.paths.socket}: stopping it`)
    const pid = Number(await stray.rpc('supervisor.getPID', []))
    await stray.rpc('supervisor.stopAllProcesses', [true])
    await stray.rpc('supervisor.shutdown', [])
    // it removes the (shared) pid file when it exits: wait for that before starting the right one
    for (let i = 0; i < 200 && alive(pid); i++) await sleep(100)
  }

  private async start(nodaemon: boolean): Promise<void> {
    const binary = findOnPath('supervisord')
    if (!binary) {
      throw new SlapError('Failed to launch supervisord:\nsupervisord was not found on PATH', {
        code: 'E_SUPERVISOR_LAUNCH',
        hint: 'install supervisor (Debian: apt-get install supervisor)',
      })
    }
    const argv = [binary, '-c', this.paths.conf, ...(nodaemon ? ['--nodaemon'] : [])]
    this.log.info(`Launching supervisord with clean environment: ${argv.join(' ')}`)
    const r = await this.runner.run(argv, { env: {}, cwd: this.paths.instanceRoot, onOutput: nodaemon ? (s) => this.log.info(s.trimEnd()) : undefined })
    if (r.code !== 0) {
      const output = (r.stdout + r.stderr).trim() || `exit ${r.code ?? r.signal}`
      throw new SlapError(`Failed to launch supervisord:\n${output}`, { code: 'E_SUPERVISOR_LAUNCH', hint: `check ${this.paths.conf} and ${this.paths.logfile}` })
    }
    if (nodaemon) return
    // supervisord daemonises before it listens: ask until it answers, waiting longer each time
    let last: unknown
    for (let attempt = 1; attempt <= 5; attempt++) {
      try {
        if ((await this.stateName(1_000 * attempt)) === 'RUNNING') {
          this.log.debug('supervisord started')
          return
        }
      } catch (e) {
        last = e
      }
      await sleep(200 * attempt * attempt)
    }
    throw new SlapError(`Failed to launch supervisord:\nit was started but does not answer on ${this.paths.socket}${last ? ` (${(last as Error).message})` : ''}`, {
      code: 'E_SUPERVISOR_LAUNCH',
      hint: `see ${this.paths.logfile}`,
    })
  }

  /** One XML-RPC call over the unix socket (POST /RPC2). */
  private async rpc(method: string, params: XmlRpcValue[], timeoutMs = 60_000): Promise<XmlRpcValue> {
    // loaded on first use; getBuiltinModule is synchronous, whereas import() of a builtin
    // from this bundle starts the ES module loader (tens of milliseconds)
    const { request } = process.getBuiltinModule('node:http')
    const body = encodeCall(method, params)
    // no TLS here: an empty server name spares the agent its IPv6 check of 'localhost'
    const options: RequestOptions & { servername: string } = {
      socketPath: this.paths.socket,
      path: '/RPC2',
      method: 'POST',
      agent: false,
      servername: '',
      headers: { 'content-type': 'text/xml', 'content-length': Buffer.byteLength(body), host: 'localhost' },
      timeout: timeoutMs,
    }
    const text = await new Promise<string>((resolve, reject) => {
      const req = request(
        options,
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('error', reject)
          res.on('end', () => {
            const s = Buffer.concat(chunks).toString('utf8')
            if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode ?? '?'} for ${method}`))
            else resolve(s)
          })
        },
      )
      req.on('timeout', () => req.destroy(new Error(`no answer within ${Math.round(timeoutMs / 1000)} s`)))
      req.on('error', reject)
      req.end(body)
    }).catch((e: unknown) => {
      throw new SupervisorConnectionError(this.paths.socket, e)
    })
    const answer = decodeResponse(text)
    if ('fault' in answer) throw new SupervisorFault(method, answer.fault.code, answer.fault.string)
    return answer.value
  }
}

/**
 * §4.6 start: (re)writes the partition's group file, applies it if anything changed, then
 * starts the group without waiting. A partition without services only gets a warning.
 */
export async function startPartitionServices(sup: Supervisor, instanceRoot: string, p: PartitionProcesses, log: Logger, keep?: readonly string[]): Promise<void> {
  const { changed, programs, refused } = writePartitionGroup(instanceRoot, p, keep)
  // the valid services still start; the partition fails, naming the others
  const refusal = refused.length ? new RefusedServicesError(p.id, refused) : undefined
  if (refusal) log.error(refusal.message)
  if (programs.length === 0) log.warning(`No service to run in ${p.id}: ${join(p.path, 'etc', 'run')} and ${join(p.path, 'etc', 'service')} are empty or missing`)
  if (changed) await sup.applyChanges()
  if (programs.length > 0) {
    // an unchanged file supervisord does not know yet (a previous run wrote it, then could
    // not apply it): apply it now rather than leave the services down
    if (!(await sup.startGroup(p.id)) && !changed) {
      await sup.applyChanges()
      await sup.startGroup(p.id)
    }
  }
  if (refusal) throw refusal
}

/** §4.6 stop: deletes <id>.conf (manager groups stay) and lets supervisord stop and forget the group. */
export async function stopPartitionServices(sup: Supervisor, instanceRoot: string, id: string): Promise<void> {
  const own = join(supervisorPaths(instanceRoot).confDir, `${id}.conf`)
  if (existsSync(own)) {
    unlinkSync(own)
    await sup.applyChanges()
  }
}

// --- XML-RPC (the subset supervisord speaks) ---

export type XmlRpcValue = string | number | boolean | null | XmlRpcValue[] | { [key: string]: XmlRpcValue }

export function encodeCall(method: string, params: XmlRpcValue[]): string {
  return `<?xml version="1.0"?>\n<methodCall><methodName>${escapeXml(method)}</methodName><params>${params
    .map((p) => `<param>${encodeValue(p)}</param>`)
    .join('')}</params></methodCall>\n`
}

export function decodeResponse(xml: string): { value: XmlRpcValue } | { fault: { code: number; string: string } } {
  const root = parseXml(xml)
  if (root.name !== 'methodResponse') throw new SlapError(`supervisord answered something that is not an XML-RPC response: ${xml.slice(0, 200)}`)
  const fault = child(root, 'fault')
  if (fault) {
    const v = decodeValue(child(fault, 'value'))
    const s = isStruct(v) ? v : {}
    return { fault: { code: Number(s.faultCode ?? 0), string: String(s.faultString ?? '') } }
  }
  const param = child(child(root, 'params'), 'param')
  return { value: param ? decodeValue(child(param, 'value')) : null }
}

// --- internal ---

/** States in which a process still has to stop before its group can be removed. */
const ACTIVE_STATES = ['STARTING', 'RUNNING', 'BACKOFF', 'STOPPING']

/** Groups written by managers (prerm, socat): start and stop leave them to their manager. */
export const MANAGER_GROUP_SUFFIXES = ['prerm', 'socat'] as const

/** A group file. A partition's commands are one path each (quoted here); a manager's are already quoted lines (`quoted`). */
function groupText(p: PartitionProcesses, entries: Array<{ name: string; command: string; quoted?: boolean; processName: string; asRoot?: boolean }>): string {
  const lines = [`[group:${p.id}]`, `programs=${entries.map((e) => `${p.id}_${e.name}`).join(',')}`, '']
  for (const e of entries) {
    const log = ini(programLog(p, e.name))
    lines.push(
      `[program:${p.id}_${e.name}]`,
      `directory=${ini(p.path)}`,
      `command=${ini(e.quoted ? e.command : shellQuote(e.command))}`,
      `process_name=${e.processName}`,
      'autostart=false',
      'autorestart=false',
      'startsecs=0',
      'startretries=0',
      'exitcodes=0',
      'stopsignal=TERM',
      'stopwaitsecs=60',
      'stopasgroup=true',
      'killasgroup=true',
      `user=${e.asRoot ? 0 : p.uid}`,
      `group=${e.asRoot ? 0 : p.gid}`,
      'serverurl=AUTO',
      'redirect_stderr=true',
      `stdout_logfile=${log}`,
      'stdout_logfile_maxbytes=100KB',
      'stdout_logfile_backups=1',
      `stderr_logfile=${log}`,
      'stderr_logfile_maxbytes=100KB',
      'stderr_logfile_backups=1',
      e.asRoot ? 'environment=USER="root",LOGNAME="root",HOME="/root"' : `environment=USER="${ini(p.user)}",LOGNAME="${ini(p.user)}",HOME="${ini(p.home)}"`,
      '',
    )
  }
  return lines.join('\n')
}

/**
 * Where supervisord writes the output of a partition's programs: `<instance_root>/var/program-log/<id>/`,
 * root's, mode 0750, group of the partition, so its user reads its logs and nobody else's.
 * Not in the partition: supervisord (root) opens the log by its name at each start of the
 * program, and a link the partition's user put under that name would have root write what the
 * program prints into any file.
 */
export function programLogDir(instanceRoot: string, partitionId: string): string {
  return join(instanceRoot, 'var', 'program-log', partitionId)
}

/** The log of program `name` of group `p` (a partition or one of its manager groups). */
function programLog(p: PartitionProcesses, name: string): string {
  return join(programLogDir(dirname(p.path), basename(p.path)), `.${p.id}_${name}.log`)
}

/**
 * Makes the partition's log directory, and puts under the original's name in the partition
 * (`.<group>_<program>.log`) a link to each log, for whoever reads it there. Whatever the
 * partition's user left under that name is replaced (a directory is left alone: no link then).
 */
function resetProgramLogs(p: PartitionProcesses, entries: ReadonlyArray<{ name: string }>): void {
  const dir = programLogDir(dirname(p.path), basename(p.path))
  // one stat on every run of a partition whose directory is as it should be
  const st = statSync(dir, { throwIfNoEntry: false })
  const root = process.getuid?.() === 0
  if (!st?.isDirectory() || (st.mode & 0o777) !== 0o750 || (root && (st.uid !== 0 || st.gid !== p.gid))) {
    mkdirSync(dirname(dir), { recursive: true, mode: 0o711 })
    mkdirSync(dir, { recursive: true, mode: 0o750 })
    if (root) chownSync(dir, 0, p.gid)
    chmodSync(dir, 0o750)
  }
  for (const e of entries) {
    const target = programLog(p, e.name)
    const link = join(p.path, `.${p.id}_${e.name}.log`)
    try {
      const st = lstatSync(link, { throwIfNoEntry: false })
      if (st?.isDirectory()) continue
      if (st?.isSymbolicLink() && readlinkSync(link) === target) continue
      if (st) unlinkSync(link)
      symlinkSync(target, link)
    } catch {
      // the partition's user took the name meanwhile: only the convenience link is missing
    }
  }
}

/** Entry names of a directory, sorted, directories left out; none when it does not exist. */
function listExecutables(dir: string): string[] {
  return safeReaddir(dir)
    .filter((n) => {
      try {
        return !statSync(join(dir, n)).isDirectory()
      } catch {
        return true // a dangling symlink: supervisord will say what is wrong with it
      }
    })
    .sort()
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return []
    throw e
  }
}

/** Writes `text` (mode 0600, temp + rename) unless the file already has that text and mode. */
function writeIfChanged(path: string, text: string): boolean {
  try {
    const st = statSync(path)
    if ((st.mode & 0o777) === 0o600 && readFileSync(path, 'utf8') === text) return false
  } catch {
    // absent: write it
  }
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, text, { mode: 0o600 })
  chmodSync(tmp, 0o600)
  renameSync(tmp, path)
  return true
}

/** supervisord expands `%(name)s` in values: a literal % is written %%. */
/**
 * A value on one line of a supervisord file: `%` doubled (interpolation). A value that could
 * end the line or start a comment (control characters, ` ;` or ` #`) is refused: none of
 * ours should hold one (identifiers and service names are checked before).
 */
function ini(s: string): string {
  if (/[\u0000-\u001f\u007f]|\s[;#]/.test(s)) throw new SlapError(`refusing to write '${escapeControls(s)}' into a supervisord file`, { code: 'E_SUPERVISOR_VALUE' })
  return s.replace(/%/g, '%%')
}

/** Single quotes for supervisord's shlex split of `command=` (the original quotes every option value). */
function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

/** A path as is when shlex keeps it whole, else quoted (node doctor's hints quote paths with it too). */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : quote(s)
}

function findOnPath(name: string, path = process.env.PATH): string | undefined {
  return searchPath(name, path, (p) => {
    const st = statSync(p)
    return st.isFile() && (st.mode & 0o111) !== 0
  })
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

function processInfo(p: { [key: string]: XmlRpcValue }): ProcessInfo {
  return { name: String(p.name ?? ''), group: String(p.group ?? ''), statename: String(p.statename ?? ''), pid: Number(p.pid ?? 0), exitstatus: Number(p.exitstatus ?? 0) }
}

function isStruct(v: unknown): v is { [key: string]: XmlRpcValue } {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

function encodeValue(v: XmlRpcValue): string {
  if (v === null) return '<value><nil/></value>'
  if (typeof v === 'boolean') return `<value><boolean>${v ? 1 : 0}</boolean></value>`
  if (typeof v === 'number') return Number.isInteger(v) ? `<value><int>${v}</int></value>` : `<value><double>${v}</double></value>`
  if (typeof v === 'string') return `<value><string>${escapeXml(v)}</string></value>`
  if (Array.isArray(v)) return `<value><array><data>${v.map(encodeValue).join('')}</data></array></value>`
  return `<value><struct>${Object.entries(v)
    .map(([k, x]) => `<member><name>${escapeXml(k)}</name>${encodeValue(x)}</member>`)
    .join('')}</struct></value>`
}

interface XmlNode {
  name: string
  children: XmlNode[]
  text: string
}

function child(n: XmlNode | undefined, name: string): XmlNode | undefined {
  return n?.children.find((c) => c.name === name)
}

function decodeValue(n: XmlNode | undefined): XmlRpcValue {
  if (!n) return null
  const typed = n.children[0]
  if (!typed) return n.text // <value>text</value> is a string
  switch (typed.name) {
    case 'string':
      return typed.text
    case 'int':
    case 'i4':
    case 'i8':
    case 'double':
      return Number(typed.text.trim())
    case 'boolean':
      return typed.text.trim() === '1'
    case 'nil':
      return null
    case 'array':
      return (child(typed, 'data')?.children ?? []).filter((c) => c.name === 'value').map(decodeValue)
    case 'struct': {
      const out: { [key: string]: XmlRpcValue } = {}
      for (const m of typed.children) if (m.name === 'member') out[child(m, 'name')?.text ?? ''] = decodeValue(child(m, 'value'))
      return out
    }
    default:
      return typed.text
  }
}

/** A minimal XML reader for XML-RPC answers: elements and text, entities, no attributes kept. */
function parseXml(xml: string): XmlNode {
  const root: XmlNode = { name: '#root', children: [], text: '' }
  const stack: XmlNode[] = [root]
  const re = /<(\/?)([A-Za-z_][\w.-]*)[^>]*?(\/?)>|<\?[^>]*\?>|<!--[\s\S]*?-->|([^<]+)/g
  let m: RegExpExecArray | null
  while ((m = re.exec(xml)) !== null) {
    const top = stack[stack.length - 1] as XmlNode
    if (m[4] !== undefined) {
      top.text += unescapeXml(m[4])
    } else if (m[2] !== undefined) {
      if (m[1] === '/') {
        if (stack.length > 1) stack.pop()
      } else {
        const node: XmlNode = { name: m[2], children: [], text: '' }
        top.children.push(node)
        if (m[3] !== '/') stack.push(node)
      }
    }
  }
  const first = root.children[0]
  if (!first) throw new SlapError('supervisord sent an empty XML-RPC answer')
  return first
}

function unescapeXml(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|lt|gt|amp|quot|apos);/g, (_, e: string) => {
    if (e === 'lt') return '<'
    if (e === 'gt') return '>'
    if (e === 'amp') return '&'
    if (e === 'quot') return '"'
    if (e === 'apos') return "'"
    return String.fromCodePoint(e[1] === 'x' ? Number.parseInt(e.slice(2), 16) : Number.parseInt(e.slice(1), 10))
  })
}
