// Running buildout for a software release (grid-software.ts) or a partition
// (grid-instance.ts): as the directory's owner, clean environment, umask 027, the whole
// process tree killed on timeout, output streamed line by line and kept for the error report
// (spec grid.md §3.4 steps 7-9, §4.5). No bootstrap: the configured buildout runs directly.
import { accessSync, constants, readSync, closeSync, statSync } from 'node:fs'
import { isAbsolute } from 'node:path'
import { openRegular } from './beneath.ts'
import { SlapError } from './errors.ts'
import { asUser, cleanEnv, type Owner } from './grid-common.ts'
import { searchPath, type Runner } from './system.ts'

export interface BuildoutRun {
  /** buildout executable: a path, or a name looked up on PATH */
  binary: string
  args: string[]
  cwd: string
  /** who runs it (when we are root) */
  owner: Owner
  /** HOME of the child */
  home: string
  /** default 0o027 */
  umask?: number
  /** kill the whole process tree after this long; none by default */
  timeoutMs?: number
  /** each complete output line (stdout and stderr merged), as it comes */
  onLine?: (line: string) => void
  runner: Runner
  rootCheck: boolean
  /** environment to clean (default: ours) */
  baseEnv?: NodeJS.ProcessEnv
  /** buildout -D: the child gets our terminal, nothing is captured */
  interactive?: boolean
  /** stops buildout (SIGTERM, then SIGKILL) when aborted */
  abort?: AbortSignal
}

export interface BuildoutResult {
  ok: boolean
  /** merged output, the last MiB at most */
  output: string
  timedOut: boolean
}

/** A failed buildout; its message is the text sent to the master (softwareReleaseError / softwareInstanceError). */
export class BuildoutError extends SlapError {
  constructor(message: string) {
    super(message, { code: 'E_BUILDOUT' })
  }
}

/**
 * Runs buildout once. argv = the shebang words of `binary` (when it is a script starting with
 * `#!`, as the original does for bin/buildout, so long interpreter paths beyond the kernel's
 * limit still work) + `binary` + args. Never throws for a buildout that fails or cannot start:
 * `ok` is false and `output` says why.
 */
export async function runBuildout(r: BuildoutRun): Promise<BuildoutResult> {
  const env = cleanEnv(r.baseEnv ?? process.env, r.home)
  const binary = which(r.binary, env.PATH) ?? r.binary
  const argv = [...shebang(binary), binary, ...r.args]
  const user = asUser(r.owner, r.rootCheck)
  const cap = 1 << 20
  let output = ''
  let partial = ''
  const onOutput = (chunk: string) => {
    output = output.length + chunk.length > cap ? (output + chunk).slice(-cap) : output + chunk
    if (!r.onLine) return
    const lines = (partial + chunk).split(/\r?\n|\r/)
    partial = lines.pop() ?? ''
    for (const l of lines) r.onLine(l)
  }
  try {
    const res = await r.runner.run(argv, {
      cwd: r.cwd,
      env,
      ...user,
      umask: r.umask ?? 0o027,
      timeoutMs: r.timeoutMs,
      // its own process group when it may have to be killed (timeout, interruption handled by
      // the caller), so its grandchildren go too; -D keeps our group, it needs the terminal
      processGroup: (r.timeoutMs !== undefined || r.abort !== undefined) && r.interactive !== true,
      interactive: r.interactive === true,
      abort: r.abort,
      onOutput,
    })
    if (partial && r.onLine) r.onLine(partial)
    if (r.abort?.aborted) output += `\nbuildout was stopped: ${String(r.abort.reason ?? 'interrupted')}\n`
    else if (res.timedOut) output += `\nbuildout was killed after ${Math.round((r.timeoutMs ?? 0) / 1000)} s (timeout)\n`
    else if (res.signal) output += `\nbuildout was killed by ${res.signal}\n`
    return { ok: res.code === 0 && !res.timedOut, output, timedOut: res.timedOut }
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    return { ok: false, output: `${output}cannot run ${argv.join(' ')}: ${e.code ?? ''} ${e.message}`.trim(), timedOut: false }
  }
}

/** The original's failure text (slapos.grid.utils, launchBuildout callers). */
export function buildoutFailure(path: string, output: string): string {
  return `Failed to run buildout profile in directory '${path}':\n${output}`
}

/**
 * An executable named without a slash, found on PATH like execvp would (the binary runBuildout
 * runs; node doctor checks the same one). A name with a slash: itself when absolute, else undefined.
 */
export function which(name: string, path: string | undefined): string | undefined {
  if (name.includes('/')) return isAbsolute(name) ? name : undefined
  return searchPath(name, path, (p) => {
    if (!statSync(p).isFile()) return false
    accessSync(p, constants.X_OK)
    return true
  })
}

// --- internal ---

/** The interpreter words of a `#!` script, or [] (binaries, unreadable files). */
export function shebang(path: string): string[] {
  let fd: number | undefined
  try {
    // often a file of the software user: only a regular file is opened (never a device or a FIFO)
    const opened = openRegular(path, true)
    if (typeof opened !== 'number') return []
    fd = opened
    const buf = Buffer.alloc(1024)
    const n = readSync(fd, buf, 0, buf.length, 0)
    const text = buf.subarray(0, n).toString('utf8')
    if (!text.startsWith('#!')) return []
    const line = text.slice(2).split('\n')[0] ?? ''
    return line.trim().split(/\s+/).filter(Boolean)
  } catch {
    return []
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}
