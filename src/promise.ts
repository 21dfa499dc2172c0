// Promises of a started partition (grid.md §7): the executables of `etc/promise/` run one
// at a time as the partition owner, each killed (with its whole process group) after the
// promise timeout; every result is saved atomically to
// `.slapgrid/promise/result/<title>.status.json` like slapos.grid.promise does.
// Called by grid-instance.ts after the services of a started partition were started.
//
// Promise plugins (`etc/plugin/*.py`) are Python classes of slapos.core's promise framework.
// Like the original (grid.md §7.4, node-extras.md §4.9), they are run by a runner with the
// software release's Python (its bin/buildout's, else python3): slapos.core's `runpromises.py`
// when the egg the plugins import (the `sys.path[0:0] = [...]` of the first plugin) has one,
// else our own (promise-runner.ts), which drives that egg's launcher the same way. The runner
// checks the legacy promises too.
import { closeSync, existsSync, fchmodSync, fchownSync, openSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs'
import { extname, join } from 'node:path'
import { SlapError } from './errors.ts'
import { RUNNER } from './promise-runner.ts'
import { inBeneath, openRegular, type Own } from './beneath.ts'
import { asUser, cleanEnv } from './grid-common.ts'
import type { Logger } from './log.ts'
import type { Runner } from './system.ts'

export interface PromiseResult {
  /** file name in etc/promise (or etc/plugin) */
  name: string
  /** name without its extension: names the result and log files */
  title: string
  failed: boolean
  /** output of the promise (stdout and stderr merged), or why it failed */
  message: string
  durationMs: number
  /** the whole error text when it comes ready-made (from slapos.core's plugin runner) */
  reportText?: string
}

/** The partition owner, as grid-common.ts `Owner` gives it (only these fields are used). */
export interface PromiseOwner {
  uid: number
  gid: number
  name: string
  home: string
  /** primary group first, then the supplementary ones (grid-common.ts Owner) */
  groups?: number[]
}

export interface PromiseRun {
  /** partition directory */
  path: string
  /** partition id (for log lines) */
  id: string
  owner: PromiseOwner
  /** seconds per promise (--promise-timeout) */
  timeoutSec: number
  runner: Runner
  log: Logger
  /** root_check of the node: with it off, a partition owned by root runs its promises as root */
  rootCheck: boolean
  /** clock, for the result dates (tests pass a fixed one) */
  now?: () => Date
  /** the partition's software release directory: its Python runs the plugins */
  softwarePath?: string | undefined
  /**
   * anomaly mode (the runner's --check-anomaly, without --force): the check of an up-to-date
   * partition; test mode (default) is the check after a deployment and of `node promise`
   */
  anomaly?: boolean | undefined
  /** passed to the plugin runner (bang, partition certificate) */
  masterUrl?: string | undefined
  computerId?: string | undefined
  certFile?: string | undefined
  keyFile?: string | undefined
}

/** Minutes between two runs of a legacy promise in anomaly mode (the original wrapper's periodicity). */
export const LEGACY_PERIODICITY_MIN = 2

/**
 * Runs every legacy promise of the partition and returns one result per promise checked (in
 * file name order). A failing promise does not stop the others, and nothing is thrown for
 * it: the caller turns the first failure into the partition's error (promiseFailureMessage).
 * Test mode (default) runs each; anomaly mode runs only those whose periodicity elapsed
 * (the others give their saved result) and fails a legacy promise only after its last three
 * runs failed (node-extras.md §4.3, §4.5).
 */
export async function runPromises(p: PromiseRun): Promise<PromiseResult[]> {
  const now = p.now ?? (() => new Date())
  const plugins = listDir(p.path, PLUGIN_DIR).filter((n) => n.endsWith('.py') && !n.startsWith('__init__'))
  if (plugins.length > 0) return runWithSoftwarePython(p, pluginRunner(p, plugins), plugins)
  const dir = join(p.path, ...LEGACY_DIR)
  const names = listDir(p.path, LEGACY_DIR)
  if (names.length === 0) {
    p.log.debug('No promise.')
    return []
  }
  const user = dropTo(p.owner, p.rootCheck)
  removeDeprecatedState(p, names.map(titleOf))
  const results: PromiseResult[] = []
  for (const name of names) {
    const file = join(dir, name)
    let st
    try {
      st = statSync(file)
    } catch {
      continue
    }
    if (!st.isFile() || (st.mode & 0o111) === 0) {
      p.log.warning(`promise ${file} is not an executable file: skipped`)
      continue
    }
    const title = titleOf(name)
    if (p.anomaly) {
      // not due yet: the saved result counts (a saved failure is a failure)
      const saved = savedResult(p.path, title, now().getTime())
      if (saved) {
        results.push(saved)
        if (saved.failed) p.log.error(promiseFailureMessage(saved))
        continue
      }
    }
    p.log.info(`Checking promise ${name}...`)
    const start = Date.now()
    let failed: boolean
    let message: string
    try {
      const r = await p.runner.run([file], {
        cwd: p.path,
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: p.owner.home, USER: p.owner.name, LOGNAME: p.owner.name },
        ...user,
        timeoutMs: p.timeoutSec * 1000,
        processGroup: true,
      })
      const output = (r.stdout + r.stderr).trim()
      if (r.timedOut) {
        failed = true
        message = `Error: Promise timed out after ${p.timeoutSec} seconds`
      } else if (r.code !== 0) {
        failed = true
        message = output || `Error: promise exited with status ${r.code ?? r.signal}`
      } else {
        failed = false
        message = output
      }
    } catch (err) {
      failed = true
      message = `Error: cannot run the promise: ${(err as Error).message}`
    }
    const date = now()
    appendRunLog(p.path, title, failed, message, date, user)
    // anomaly: only the last three runs failing make a failure (this one is the last)
    if (p.anomaly && failed) failed = lastRunsFailed(p.path, title, 3)
    const result: PromiseResult = { name, title, failed, message, durationMs: Date.now() - start }
    results.push(result)
    if (failed) p.log.error(promiseFailureMessage(result))
    else p.log.info(`Promise ${name} succeeded`)
    writeCache(p.path, title, file, date, user)
    saveResult(p, file, result, date, user)
  }
  return results
}

/** The error text sent to the master for a failed promise (grid.md §7.2 step 6). */
export function promiseFailureMessage(r: PromiseResult): string {
  return r.reportText ?? `Promise '${r.name}' failed with output: ${r.message}`
}

/**
 * The Python of a software release, as slapos.core's getPythonExecutableFromSoftwarePath
 * finds it: the interpreter of `<software>/bin/buildout`'s `#!` line, or, for a `/bin/sh`
 * script, the program of a second line `exec <python> ...` (shell quoting allowed).
 */
export function softwarePython(softwarePath: string): string | undefined {
  let head: string
  try {
    // a file of the software user: only a regular file is opened (never a device or a FIFO)
    const fd = openRegular(join(softwarePath, 'bin', 'buildout'), true)
    if (typeof fd !== 'number') return undefined
    try {
      const buf = Buffer.alloc(4096)
      head = buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8')
    } finally {
      closeSync(fd)
    }
  } catch {
    return undefined
  }
  const [first = '', second = ''] = head.split('\n')
  if (!first.startsWith('#!')) return undefined
  const executable = first.slice(2).trim().split(/\s+/)[0]
  if (!executable) return undefined
  if (executable === '/bin/sh') {
    const words = shellWords(second)
    if (words.length >= 2 && words[0] === 'exec') return words[1]
  }
  return executable
}

/** First failure of a run, or undefined when every promise succeeded. */
export function firstFailure(results: PromiseResult[]): PromiseResult | undefined {
  return results.find((r) => r.failed)
}

// --- internal ---

/**
 * How to run the plugins: the release's Python (python3 when the release names none) with
 * slapos.core's runpromises.py from the egg the first plugin imports, or with our runner.
 */
function pluginRunner(p: PromiseRun, plugins: string[]): { argv: string[]; what: string } {
  const own = p.softwarePath ? softwarePython(p.softwarePath) : undefined
  const python = own && own !== '/bin/sh' ? own : 'python3'
  // like runpromises.py itself: the import path is the `sys.path[0:0] = [...]` of the first plugin
  const read = plugins[0] === undefined ? undefined : inBeneath(p.path, PLUGIN_DIR, undefined, (d) => d.read(plugins[0]!, 1 << 20))
  const text = read?.kind === 'ok' ? read.bytes.toString('utf8') : undefined
  for (const dir of (text !== undefined && pluginImportPath(text)) || []) {
    const script = join(dir, 'slapos', 'grid', 'promise', 'runpromises.py')
    if (existsSync(script)) return { argv: [python, script], what: `${python} ${script}` }
  }
  return { argv: [python, '-c', RUNNER], what: `${python} (slapos.core of the release has no runpromises.py: our runner)` }
}

/**
 * slapgrid.py `_checkPromiseList` with an instance Python: runpromises.py as the partition
 * owner (clean environment, HOME = the owner's home), all promises of the partition within
 * (plugins + legacy) x timeout + 10 s. Exit 2 is a promise failure whose text is the runner's
 * stderr; any other failure is not a promise failure and is thrown.
 */
async function runWithSoftwarePython(p: PromiseRun, r: { argv: string[]; what: string }, plugins: string[]): Promise<PromiseResult[]> {
  const legacyNames = listDir(p.path, LEGACY_DIR)
  const legacy = legacyNames.length
  const count = plugins.length + legacy
  const argv = [
    ...r.argv,
    '--promise-folder', join(p.path, 'etc', 'plugin'),
    '--legacy-promise-folder', join(p.path, 'etc', 'promise'),
    '--promise-timeout', String(p.timeoutSec),
    '--partition-folder', p.path,
    '--log-folder', join(p.path, '.slapgrid', 'promise', 'log'),
    // test mode forces every promise to run; anomaly mode keeps the periodicity
    ...(p.anomaly ? ['--check-anomaly'] : ['--force']),
    // always given, empty when unknown (the runner reads empty as unset), in this order
    '--master-url', p.masterUrl ?? '',
    '--partition-cert', p.certFile ?? '',
    '--partition-key', p.keyFile ?? '',
    '--partition-id', p.id,
    '--computer-id', p.computerId ?? '',
  ]
  p.log.info(`Checking promises of ${p.id} with ${r.what}`)
  const start = Date.now()
  const res = await p.runner.run(argv, {
    cwd: p.path,
    env: cleanEnv(process.env, p.owner.home),
    ...dropTo(p.owner, p.rootCheck),
    timeoutMs: (count * p.timeoutSec + 10) * 1000,
    processGroup: true,
  })
  if (res.stdout.trim()) for (const line of res.stdout.trimEnd().split('\n')) p.log.info(line)
  const error = res.stderr.trim()
  if (res.timedOut) throw new SlapError(`Failed to run the promises of ${p.id}: timed out after ${count * p.timeoutSec + 10} s`, { code: 'E_PROMISE_RUNNER' })
  // the result of each promise of the partition: written by this run, or saved by an earlier
  // one (a promise not due in anomaly mode); a result of a promise gone is left out
  const names = new Set([...plugins, ...legacyNames])
  const results = readResults(p.path, start).filter((x) => names.has(x.name))
  if (res.code === 2) {
    // the runner's text names the first failure: it is the partition's error
    p.log.error(error)
    const named = /^Promise '([^']*)' failed/.exec(error)?.[1]
    const first = results.find((x) => x.failed && (named === undefined || x.name === named)) ?? results.find((x) => x.failed)
    if (first) first.reportText = error
    else results.unshift({ name: 'runpromises.py', title: 'runpromises', failed: true, message: error, durationMs: Date.now() - start, reportText: error })
    return results
  }
  if (res.code !== 0) throw new SlapError(`Failed to run the promises of ${p.id}: exit ${res.code ?? res.signal}\n${error}`, { code: 'E_PROMISE_RUNNER' })
  if (error) p.log.warning(`Unexpected promise runner output:\n${error}`)
  return results
}

/**
 * The results in `.slapgrid/promise/result/`, in name order; one written before `sinceMs` is a
 * saved result (duration 0). The files belong to the partition user: read without following
 * links, at most 1 MiB each, anything unreadable left out.
 */
export function readResults(path: string, sinceMs: number): PromiseResult[] {
  const out: PromiseResult[] = []
  inBeneath(path, RESULT_DIR, undefined, (dir) => {
    for (const file of dir.list().sort()) {
      if (!file.endsWith('.status.json')) continue
      const read = dir.read(file, 1 << 20)
      if (read.kind !== 'ok') continue
      // a second of slack: the file system may keep coarser times than the clock
      const saved = read.mtimeMs < sinceMs - 1000
      try {
        const j = JSON.parse(read.bytes.toString('utf8')) as { title?: unknown; name?: unknown; 'execution-time'?: unknown; result?: { failed?: unknown; message?: unknown } }
        const name = typeof j.name === 'string' ? j.name : file.slice(0, -'.status.json'.length)
        out.push({
          name,
          title: typeof j.title === 'string' ? j.title : titleOf(name),
          failed: j.result?.failed === true,
          message: typeof j.result?.message === 'string' ? j.result.message : '',
          durationMs: !saved && typeof j['execution-time'] === 'number' ? Math.round(j['execution-time'] * 1000) : 0,
        })
      } catch {
        // not a result
      }
    }
  })
  return out
}

/**
 * The import path a plugin file gives: its first top-level assignment, which must be
 * `sys.path[0:0] = [<literal list of strings>]` (what slapos.cookbook writes, and the only
 * shape runpromises.py accepts). Undefined for any other first assignment.
 */
export function pluginImportPath(text: string): string[] | undefined {
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    // top level only: no indentation; an assignment (not ==)
    if (!/^[A-Za-z_][\w.]*(\[[^\]]*\])?\s*=[^=]/.test(lines[i] ?? '')) continue
    // the list may span lines (slapos.cookbook writes one path per line)
    const m = /^sys\.path\[0:0\]\s*=\s*\[([^\]]*)\]/.exec(lines.slice(i).join('\n'))
    if (!m) return undefined
    return [...(m[1] ?? '').matchAll(/'([^']*)'|"([^"]*)"/g)].map((q) => q[1] ?? q[2] ?? '')
  }
  return undefined
}

/** Words of a shell line, with single and double quotes (enough for buildout's exec line). */
function shellWords(line: string): string[] {
  const out: string[] = []
  for (const m of line.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g)) out.push(m[1] ?? m[2] ?? m[3] ?? '')
  return out
}

/** Where the partition's promises and their state are, below the partition directory. */
const PLUGIN_DIR = ['etc', 'plugin']
const LEGACY_DIR = ['etc', 'promise']
const STATE_DIR = ['.slapgrid', 'promise']
const RESULT_DIR = [...STATE_DIR, 'result']

/** The names in a directory of the partition (reached without following links), sorted; [] when there is none. */
function listDir(path: string, parts: readonly string[]): string[] {
  return inBeneath(path, parts, undefined, (d) => d.list().sort()) ?? []
}

function titleOf(name: string): string {
  const ext = extname(name)
  return ext && ext !== name ? name.slice(0, -ext.length) : name
}

/** Privileges of the promise: the partition owner when we are root (grid-common.ts asUser rules). */
function dropTo(owner: PromiseOwner, refuseRoot: boolean): { uid?: number; gid?: number; groups?: number[] } {
  if (process.getuid?.() !== 0) return {}
  if (owner.uid !== 0) return { uid: owner.uid, gid: owner.gid, ...(owner.groups ? { groups: owner.groups } : {}) }
  return asUser({ uid: 0, gid: 0, name: 'root', home: '/root', groups: [] }, refuseRoot)
}

function saveResult(p: PromiseRun, file: string, r: PromiseResult, date: Date, user: Own): void {
  // like the original, long messages keep their end
  const message = r.message.length > 5000 ? '...' + r.message.slice(-5000) : r.message
  const json = pyJson({
    title: r.title,
    name: r.name,
    path: file,
    'execution-time': r.durationMs / 1000,
    result: { type: 'Test Result', failed: r.failed, date: isoDate(date), message },
  })
  inBeneath(p.path, RESULT_DIR, user, (d) => d.write(`${r.title}.status.json`, json, 0o644, user))
}

/**
 * State files of older slapos.core versions, which the original's launcher deletes before it
 * runs a promise (node-extras.md §4.3): per promise `<title>.timestamp` and `.periodicity`,
 * the aggregate files and the `history` directory. Reached and removed without following a
 * link (beneath.ts): a link is removed itself, a directory emptied from its parent down.
 */
function removeDeprecatedState(p: PromiseRun, titles: string[]): void {
  const names = ['promise_stats.json', 'promise_status.json', 'global.json', 'public.json', 'history']
  for (const t of titles) names.push(`${t}.timestamp`, `${t}.periodicity`)
  inBeneath(p.path, STATE_DIR, undefined, (d) => {
    for (const n of names) {
      try {
        d.removeTree(n)
      } catch (e) {
        p.log.warning(`Cannot remove ${d.path}/${n}: ${(e as Error).message}`)
      }
    }
  })
}

/** One run in the promise's log (`.slapgrid/promise/log/<title>.log`), in the original's line format. */
function appendRunLog(path: string, title: string, failed: boolean, message: string, date: Date, user: Own): void {
  // the run id: seconds and three digits, shared by the lines of one run
  const txn = `${Math.floor(date.getTime() / 1000)}-${100 + Math.floor(Math.random() * 900)}`
  const line = `${localDate(date)} - ${failed ? 'ERROR' : 'INFO'} - ${txn} - ${message || 'OK'}\n`
  inBeneath(path, [...STATE_DIR, 'log'], user, (d) => d.append(`${title}.log`, line, user))
}

/** The end of a promise's log read to find its last runs: three runs of output larger than this are rare. */
const RUN_LOG_TAIL = 8 << 20

/** True when each of the last `count` runs in the promise's log has an ERROR or CRITICAL line. */
export function lastRunsFailed(path: string, title: string, count: number): boolean {
  const read = inBeneath(path, [...STATE_DIR, 'log'], undefined, (d) => d.read(`${title}.log`, RUN_LOG_TAIL, { tail: true }))
  const text = read?.kind === 'ok' ? read.bytes.toString('utf8') : ''
  const runs = new Map<string, boolean>()
  for (const line of text.split('\n')) {
    const m = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - (\w+) - (\d+-\d+) - /.exec(line)
    if (!m) continue
    const failed = m[1] === 'ERROR' || m[1] === 'CRITICAL'
    runs.set(m[2] ?? '', (runs.get(m[2] ?? '') ?? false) || failed)
  }
  const last = [...runs.values()].slice(-count)
  return last.length === count && last.every(Boolean)
}

/**
 * The saved result of a promise that is not due (its cache's `next_run_after` is ahead), or
 * undefined when it has to run. A cache or result that cannot be read means "run it".
 */
function savedResult(path: string, title: string, nowMs: number): PromiseResult | undefined {
  const read = inBeneath(path, [...STATE_DIR, 'cache'], undefined, (d) => d.read(title, 1 << 20))
  let cache: { next_run_after?: unknown }
  try {
    cache = JSON.parse(read?.kind === 'ok' ? read.bytes.toString('utf8') : '') as { next_run_after?: unknown }
  } catch {
    return undefined
  }
  if (typeof cache.next_run_after !== 'number' || nowMs >= cache.next_run_after * 1000) return undefined
  const saved = readResults(path, 0).find((r) => r.title === title)
  return saved ? { ...saved, durationMs: 0 } : undefined
}

/** The cache of a legacy promise (grid.md §7.2 keys, `.slapgrid/promise/cache/<title>`): when it may run again. */
function writeCache(path: string, title: string, file: string, date: Date, user: Own): void {
  const seconds = date.getTime() / 1000
  let mtime = 0
  try {
    mtime = statSync(file).mtimeMs / 1000
  } catch {
    // gone meanwhile
  }
  const cache = {
    is_tested: true,
    is_anomaly_detected: true,
    periodicity: LEGACY_PERIODICITY_MIN,
    next_run_after: seconds + LEGACY_PERIODICITY_MIN * 60,
    timestamp: seconds,
    module_file: file,
    module_file_mtime: mtime,
  }
  inBeneath(path, [...STATE_DIR, 'cache'], user, (d) => d.write(title, pyJson(cache), 0o644, user))
}

/** `YYYY-MM-DD HH:MM:SS` in local time, as Python's logging writes it. */
function localDate(d: Date): string {
  const z = (n: number) => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${z(d.getMonth() + 1)}-${z(d.getDate())} ${z(d.getHours())}:${z(d.getMinutes())}:${z(d.getSeconds())}`
}

function isoDate(d: Date): string {
  return d.toISOString().slice(0, 19) + '+0000'
}

/** JSON as Python's json.dumps writes it (", " and ": " separators, non-ASCII escaped). */
function pyJson(v: unknown): string {
  if (v === null) return 'null'
  if (typeof v === 'boolean') return v ? 'true' : 'false'
  if (typeof v === 'number') return Number.isInteger(v) ? `${v}.0` : String(v)
  if (typeof v === 'string') return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'))
  if (Array.isArray(v)) return '[' + v.map(pyJson).join(', ') + ']'
  return '{' + Object.entries(v as Record<string, unknown>).map(([k, x]) => `${pyJson(k)}: ${pyJson(x)}`).join(', ') + '}'
}

// --- files inside a partition (also used by grid-instance.ts and manager-prerm.ts) ---
//
// We run as root and a partition belongs to its user, who may plant symbolic links where we
// are about to write, read or chown (`.timestamp` -> /etc/shadow). This one writes a file
// directly in the partition directory (whose own name only root can change): it never follows
// a link at that name, and creates the file with O_EXCL before setting its owner and mode
// through the open descriptor. Files further down are reached with beneath.ts.

/** Writes `file` through a fresh temp file (O_EXCL, mode and owner set on the descriptor), then renames it over. */
export function writePartitionFile(file: string, text: string, mode: number, own: { uid?: number | undefined; gid?: number | undefined } = {}): void {
  const tmp = `${file}.${process.pid}.tmp`
  rmSync(tmp, { force: true })
  const fd = openSync(tmp, 'wx', mode)
  try {
    writeSync(fd, text)
    fchmodSync(fd, mode)
    if (own.uid !== undefined || own.gid !== undefined) fchownSync(fd, own.uid ?? -1, own.gid ?? -1)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, file)
}
