// The node's managers (node-extras.md §1): optional modules named by `[slapos] manager_list`
// that hook into format, software, instance and report at the points of §1.2. One module
// per manager (manager-*.ts); this file loads them, reads their configuration and calls
// their hooks. Used by format.ts, grid-software.ts, grid-instance.ts and grid-report.ts.
//
//   node format    format ──────── partitions ──────── formatTearDown
//   node software  software(sr) ── buildout ────────── softwareTearDown(sr)
//   node instance  instance(p) ─── decision, buildout, services, promises ── instanceTearDown(p)
//   node report    ... stop, /stoppedComputerPartition ── report(p) ── wait list, destruction
//
// The managers themselves are loaded by manager-registry.ts (from the command files).
//
// Everything a manager reads from a partition was written by the partition's user, who is
// not trusted: each manager validates it before it names a path, a command argument or a
// line of a root-owned file. The files of that user's directory are read with readUserFile
// (or readPartitionJson) and replaced with replaceFile, here for the managers and firewall.ts.
import { closeSync, constants, fchmodSync, fchownSync, fstatSync, lstatSync, openSync, readSync, renameSync, unlinkSync, writeSync, type Stats } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import type { ConfigFile } from './config.ts'
import { SlapError } from './errors.ts'
import type { Logger } from './log.ts'
import { escapeControls } from './names.ts'
import { Tuple, type PyDict } from './slap-protocol.ts'
import type { Supervisor, PartitionProcesses } from './supervisor.ts'
import type { Runner } from './system.ts'


/** What every manager is built with (the original's option dictionary, §1.1). */
export interface ManagerOptions {
  /** [slapos] (+ [networkcache] and the command line for node software/instance/report) */
  settings: ReadonlyMap<string, string>
  /** [firewall] with its defaults, undefined when the section is absent */
  firewall: FirewallOptions | undefined
  /** `[manager:NAME]` sections by NAME (`[manager:devperm]` -> devperm) */
  sections: ReadonlyMap<string, ReadonlyMap<string, string>>
  runner: Runner
}

/** `[firewall]` (§2.1), values as written (`[DEFAULT]` applied by the reader). */
export interface FirewallOptions {
  /** prefix of every rule command, split on whitespace */
  firewallCmd: string
  /** shell command run after rules changed */
  reloadConfigCmd: string
  firewallExecutable: string
  dbusExecutable: string
  logFile: string
  dbusLogFile: string
  /** IPv4 addresses or a.b.c.d/len networks always accepted (not validated here) */
  authorizedSources: string[]
  /** a non-empty `testing` suppresses the firewall and dbus supervisord programs */
  testing: boolean
}

/** node format (§1.2): the computer as format sees it. */
export interface ManagerComputer {
  instanceRoot: string
  softwareRoot: string
  log: Logger
}

/** node software (§1.2): one software release of the master's list. */
export interface ManagerSoftware {
  url: string
  /** software_root/<md5 of url> */
  path: string
  log: Logger
}

/** node instance and node report (§1.2): one partition. */
export interface ManagerPartition {
  id: string
  /** the partition directory (instance_root/<id>) */
  path: string
  /** owner of the directory: the partition user (grid-common's Owner) */
  owner: { uid: number; gid: number; name: string; home: string; groups: number[] }
  /** requested state: started, stopped or destroyed */
  state: string
  /** ip_list then full_ip_list of the instance parameters: [interface, address] */
  addresses: ReadonlyArray<readonly [string, string]>
  instanceRoot: string
  sup: Supervisor
  /** who runs the partition's programs (supervisord group files) */
  processes: PartitionProcesses
  log: Logger
  now: () => Date
}

/** A manager implements any of the hooks; a hook that throws fails what it was called for. */
export interface Manager {
  readonly name: string
  format?(computer: ManagerComputer): Promise<void> | void
  formatTearDown?(computer: ManagerComputer): Promise<void> | void
  software?(software: ManagerSoftware): Promise<void> | void
  softwareTearDown?(software: ManagerSoftware): Promise<void> | void
  instance?(partition: ManagerPartition): Promise<void> | void
  instanceTearDown?(partition: ManagerPartition): Promise<void> | void
  report?(partition: ManagerPartition): Promise<void> | void
}

export type Hook = 'format' | 'formatTearDown' | 'software' | 'softwareTearDown' | 'instance' | 'instanceTearDown' | 'report'

/** `manager_list` split as the original does: commas are spaces, order kept, duplicates kept. */
export function managerNames(value: string | undefined): string[] {
  return (value ?? '').replace(/,/g, ' ').split(/\s+/).filter(Boolean)
}

/**
 * The options of §1.1 from the configuration file: `settings` as the command merged them,
 * `[firewall]` with defaults, and every section whose name starts with `manager` (the name
 * after the first eight characters, `[manager:devperm]` -> `devperm`).
 */
export function managerOptions(file: ConfigFile, settings: ReadonlyMap<string, string>, runner: Runner): ManagerOptions {
  const sections = new Map<string, ReadonlyMap<string, string>>()
  for (const name of file.sections.keys()) {
    if (name.startsWith('manager')) sections.set(name.slice(8), file.section(name))
  }
  return { settings, firewall: firewallOptions(file), sections, runner }
}

/** `[firewall]` with the defaults of §2.1, undefined without the section. */
export function firewallOptions(file: ConfigFile): FirewallOptions | undefined {
  if (!file.has('firewall')) return undefined
  const s = file.section('firewall')
  const get = (k: string, dflt: string) => s.get(k) ?? dflt
  return {
    firewallCmd: get('firewall_cmd', 'firewall-cmd'),
    reloadConfigCmd: get('reload_config_cmd', 'slapos node restart firewall'),
    firewallExecutable: get('firewall_executable', '').trim(),
    dbusExecutable: get('dbus_executable', '').trim(),
    logFile: get('log_file', '/var/log/firewall.log').trim(),
    dbusLogFile: get('dbus_log_file', '/var/log/dbus.log').trim(),
    authorizedSources: get('authorized_sources', '')
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean),
    testing: (s.get('testing') ?? '') !== '',
  }
}

/** `ip_list` then `full_ip_list` of the instance parameters, as (interface, address) pairs. */
export function partitionAddresses(params: PyDict): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (const key of ['ip_list', 'full_ip_list']) {
    const list = params[key]
    if (!Array.isArray(list)) continue
    for (const t of list) {
      const items = t instanceof Tuple ? t.items : Array.isArray(t) ? t : []
      if (typeof items[0] === 'string' && typeof items[1] === 'string') out.push([items[0], items[1]])
    }
  }
  return out
}

/**
 * Calls `hook` of every manager that has it, in manager_list order; the first error stops and
 * is thrown. Each call is logged at debug level (`manager NAME: HOOK`), the trace of a run.
 */
export async function runHook<T extends { log: Logger }>(managers: readonly Manager[], hook: Hook, arg: T): Promise<void> {
  for (const m of managers) {
    const fn = m[hook] as ((a: T) => Promise<void> | void) | undefined
    if (!fn) continue
    arg.log.debug(`manager ${m.name}: ${hook}`)
    await fn.call(m, arg)
  }
}

// --- files of the partition's user ---
//
// One reader and one writer for every manager and for firewall.ts: the partition's user can
// swap any file of its directory at any moment (link, FIFO, hard link to a root file, a huge
// sparse file).

/** What readUserFile found: nothing, why the file is not read, or its bytes and permission bits. */
export type UserFile = { kind: 'absent' } | { kind: 'refused'; why: string } | { kind: 'ok'; bytes: Buffer; mode: number; mtimeMs: number; skipped?: number }

const LINK = 'not a regular file (a symbolic link)'

/**
 * Reads a file that lies in a directory of a partition's user: only a regular file, never
 * through a link (lstat, then O_NOFOLLOW), never blocking on a FIFO swapped in (O_NONBLOCK),
 * only the file that was checked (same inode), never more than `maxBytes`: the size checks
 * give the early answer, the read itself stops at `maxBytes + 1` bytes, so a file grown or
 * replaced by a huge sparse one after the checks costs no more memory. `trust` may refuse the
 * file from its lstat and from its fstat (a reason, or undefined). A refusal reads after "is"
 * or a colon (`not a regular file`, `larger than N bytes`, `unreadable (EIO)`).
 * `tail`: a larger file is not refused, its last `maxBytes` are read (`skipped`: the bytes
 * before them), for logs whose last lines matter.
 */
export function readUserFile(file: string, maxBytes: number, trust?: (st: Stats) => string | undefined, opts: { tail?: boolean } = {}): UserFile {
  const refused = (why: string): UserFile => ({ kind: 'refused', why })
  const problem = (st: Stats): string | undefined =>
    st.isSymbolicLink() ? LINK : !st.isFile() ? 'not a regular file' : (trust?.(st) ?? (st.size > maxBytes && !opts.tail ? `larger than ${maxBytes} bytes` : undefined))
  let fd: number | undefined
  try {
    // an absent file (the usual case of most callers) answered without an exception
    const st = lstatSync(file, { throwIfNoEntry: false })
    if (!st) return { kind: 'absent' }
    const early = problem(st)
    if (early) return refused(early)
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    const now = fstatSync(fd)
    if (now.ino !== st.ino || now.dev !== st.dev) return refused('replaced while being read')
    const late = problem(now)
    if (late) return refused(late)
    if (opts.tail && now.size > maxBytes) {
      // the size read once: a file that grows meanwhile still gives at most maxBytes
      const skipped = now.size - maxBytes
      const buf = Buffer.alloc(maxBytes)
      let n = 0
      while (n < buf.length) {
        const got = readSync(fd, buf, n, buf.length - n, skipped + n)
        if (got === 0) break
        n += got
      }
      return { kind: 'ok', bytes: buf.subarray(0, n), mode: now.mode & 0o7777, mtimeMs: now.mtimeMs, skipped }
    }
    const buf = Buffer.alloc(maxBytes + 1)
    let n = 0
    while (n < buf.length) {
      const got = readSync(fd, buf, n, buf.length - n, null)
      if (got === 0) break
      n += got
    }
    if (n > maxBytes) {
      if (!opts.tail) return refused(`larger than ${maxBytes} bytes`)
      // it grew past maxBytes after the fstat: its last maxBytes of what was read
      return { kind: 'ok', bytes: buf.subarray(n - maxBytes, n), mode: now.mode & 0o7777, mtimeMs: now.mtimeMs, skipped: n - maxBytes }
    }
    return { kind: 'ok', bytes: buf.subarray(0, n), mode: now.mode & 0o7777, mtimeMs: now.mtimeMs }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'absent' }
    if (code === 'ELOOP') return refused(LINK)
    return refused(`unreadable (${code ?? String(e)})`)
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** What a partition's JSON request file held. */
export type PartitionJson = { kind: 'absent' } | { kind: 'refused'; why: string } | { kind: 'ok'; value: unknown }

/**
 * A JSON file the partition's user wrote (`.slapos-port-redirect`, ...): readUserFile, then
 * parsed. A refusal names the file (`<file> is not a regular file`).
 */
export function readPartitionJson(file: string, maxBytes = 1 << 20): PartitionJson {
  const read = readUserFile(file, maxBytes)
  if (read.kind === 'absent') return read
  if (read.kind === 'refused') return { kind: 'refused', why: `${file} is ${read.why}` }
  try {
    return { kind: 'ok', value: JSON.parse(read.bytes.toString('utf8')) as unknown }
  } catch (e) {
    return { kind: 'refused', why: `${file} is not JSON (${e instanceof Error ? e.message : String(e)})` }
  }
}

/**
 * Gives `path` the content `text` and permission bits `mode` by renaming a new file over it,
 * created exclusively beside it (O_EXCL, O_NOFOLLOW): a link, FIFO or hard link the
 * directory's owner planted under the name is replaced, never written through. `owner`: the
 * new file's uid and gid (default this process: root). A directory under the name is an error
 * (removing a tree its owner can change while we walk it is not worth the risk).
 */
export function replaceFile(path: string, text: string, mode: number, owner?: { uid: number; gid: number }): void {
  // a name taken already only makes the exclusive create fail: no need for node:crypto's randomness
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}-${Math.random().toString(36).slice(2, 10)}.tmp`)
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
  try {
    try {
      if (owner) fchownSync(fd, owner.uid, owner.gid)
      fchmodSync(fd, mode)
      writeSync(fd, text)
    } finally {
      closeSync(fd)
    }
    if (lstatSync(path, { throwIfNoEntry: false })?.isDirectory()) {
      throw new SlapError(`Cannot write ${path}: a directory has that name`, { code: 'E_PATH_IS_DIRECTORY', hint: `remove the directory ${path}` })
    }
    renameSync(tmp, path)
  } catch (e) {
    try {
      unlinkSync(tmp)
    } catch {
      // already gone: the directory's owner removed it
    }
    throw e
  }
}

/** A value of a partition's file for a log line: JSON, controls escaped, cut at 200 characters. */
export function shown(v: unknown): string {
  let s: string
  try {
    s = escapeControls(JSON.stringify(v) ?? String(v))
  } catch {
    s = escapeControls(String(v)) // a BigInt or a cycle: never from JSON.parse
  }
  return s.length > 200 ? `${s.slice(0, 200)}...` : s
}
