// Promises of a started partition (grid.md §7): the executables of `etc/promise/` run one
// at a time as the partition owner, each killed (with its whole process group) after the
// promise timeout; every result is saved atomically to
// `.slapgrid/promise/result/<title>.status.json` like slapos.grid.promise does.
// Called by grid-instance.ts after the services of a started partition were started.
//
// Promise plugins (`etc/plugin/*.py`) are Python classes that the original loads into its
// own promise framework (slapos.grid.promise with GenericPromise); this program has no
// Python runtime of its own, so plugins are not run: a warning is logged once per run.
import { chownSync, mkdirSync, readdirSync, renameSync, statSync, writeFileSync, appendFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import type { Logger } from './log.ts'
import type { Runner } from './system.ts'

export interface PromiseResult {
  /** file name in etc/promise */
  name: string
  /** name without its extension: names the result and log files */
  title: string
  failed: boolean
  /** output of the promise (stdout and stderr merged), or why it failed */
  message: string
  durationMs: number
}

/** The partition owner, as grid-common.ts `Owner` gives it (only these fields are used). */
export interface PromiseOwner {
  uid: number
  gid: number
  name: string
  home: string
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
}

/**
 * Runs every legacy promise of the partition and returns one result per promise run (in
 * file name order). A failing promise does not stop the others, and nothing is thrown for
 * it: the caller turns the first failure into the partition's error (promiseFailureMessage).
 */
export async function runPromises(p: PromiseRun): Promise<PromiseResult[]> {
  const now = p.now ?? (() => new Date())
  warnPlugins(p)
  const dir = join(p.path, 'etc', 'promise')
  const names = listDir(dir)
  if (names.length === 0) {
    p.log.debug('No promise.')
    return []
  }
  const user = dropTo(p.owner, p.rootCheck)
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
    const result: PromiseResult = { name, title, failed, message, durationMs: Date.now() - start }
    results.push(result)
    if (failed) p.log.error(promiseFailureMessage(result))
    else p.log.info(`Promise ${name} succeeded`)
    saveResult(p, file, result, now(), user)
  }
  return results
}

/** The error text sent to the master for a failed promise (grid.md §7.2 step 6). */
export function promiseFailureMessage(r: PromiseResult): string {
  return `Promise '${r.name}' failed with output: ${r.message}`
}

/** First failure of a run, or undefined when every promise succeeded. */
export function firstFailure(results: PromiseResult[]): PromiseResult | undefined {
  return results.find((r) => r.failed)
}

// --- internal ---

let pluginWarningGiven = false

function warnPlugins(p: PromiseRun): void {
  if (pluginWarningGiven) return
  const plugins = listDir(join(p.path, 'etc', 'plugin')).filter((n) => n.endsWith('.py') && !n.startsWith('__init__'))
  if (plugins.length === 0) return
  pluginWarningGiven = true
  p.log.warning(
    `promise plugins (etc/plugin/*.py, e.g. ${plugins[0]}) are not run by this version: only etc/promise executables are checked`,
  )
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort()
  } catch {
    return []
  }
}

function titleOf(name: string): string {
  const ext = extname(name)
  return ext && ext !== name ? name.slice(0, -ext.length) : name
}

/** Privileges of the promise: the partition owner when we are root (grid-common.ts asUser rules). */
function dropTo(owner: PromiseOwner, rootCheck: boolean): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {}
  if (owner.uid !== 0) return { uid: owner.uid, gid: owner.gid }
  if (!rootCheck) return {}
  throw new Error(`partition owned by root: refusing to run its promises as root (set root_check = false for a node owned by root)`)
}

function saveResult(p: PromiseRun, file: string, r: PromiseResult, date: Date, user: { uid?: number; gid?: number }): void {
  const base = join(p.path, '.slapgrid', 'promise')
  const resultDir = join(base, 'result')
  const logDir = join(base, 'log')
  for (const d of [join(p.path, '.slapgrid'), base, resultDir, logDir]) {
    mkdirSync(d, { recursive: true })
    if (user.uid !== undefined) chownSync(d, user.uid, user.gid ?? user.uid)
  }
  // like the original, long messages keep their end
  const message = r.message.length > 5000 ? '...' + r.message.slice(-5000) : r.message
  const json = pyJson({
    title: r.title,
    name: r.name,
    path: file,
    'execution-time': r.durationMs / 1000,
    result: { type: 'Test Result', failed: r.failed, date: isoDate(date), message },
  })
  const target = join(resultDir, `${r.title}.status.json`)
  const tmp = `${target}.${process.pid}.tmp`
  writeFileSync(tmp, json)
  if (user.uid !== undefined) chownSync(tmp, user.uid, user.gid ?? user.uid)
  renameSync(tmp, target)
  const txn = `${Math.floor(date.getTime() / 1000)}-${String(Math.floor(Math.random() * 1000)).padStart(3, '0')}`
  const line = `${isoDate(date).slice(0, 19).replace('T', ' ')} - ${r.failed ? 'ERROR' : 'INFO'} - ${txn} - ${r.message || 'OK'}\n`
  const logFile = join(logDir, `${r.title}.log`)
  appendFileSync(logFile, line)
  if (user.uid !== undefined) chownSync(logFile, user.uid, user.gid ?? user.uid)
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
