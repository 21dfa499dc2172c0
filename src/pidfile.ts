// Pid files of node software/instance/report/promise/prune (spec grid.md §1.7 step 6, §2.5):
// one run of each kind at a time. Used through grid-common.ts startNodeRun, and by prune.
import { existsSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { LockedError } from './errors.ts'

/**
 * Takes the pid file at `path`. If it names a live process other than us whose command line
 * contains "slapos", throws LockedError (exit 10). Otherwise (absent, stale, or a recycled pid
 * now used by an unrelated program) writes our pid: decimal, no newline, temp + rename, so a
 * reader never sees a half-written file. Returns release(), which removes the file only if it
 * still holds our pid (a later run may have taken it over after a crash).
 */
export function acquirePidfile(path: string): () => void {
  const holder = readPid(path)
  if (holder !== undefined && holder !== process.pid && isLiveSlapos(holder)) throw new LockedError(path, holder)
  mkdirSync(dirname(path), { recursive: true })
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, String(process.pid))
  renameSync(tmp, path)
  let released = false
  return () => {
    if (released) return
    released = true
    if (readPid(path) === process.pid) {
      try {
        unlinkSync(path)
      } catch {
        /* already gone */
      }
    }
  }
}

/** The pid a pid file holds, or undefined (absent, unreadable, not a positive number). `node doctor` reads it too. */
export function readPid(path: string): number | undefined {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
  const pid = Number.parseInt(text.trim(), 10)
  return Number.isInteger(pid) && pid > 0 ? pid : undefined
}

/** Like slapgrid's check (HEAD): alive, and "slapos" in /proc/<pid>/cmdline. */
export function isLiveSlapos(pid: number): boolean {
  const proc = `/proc/${pid}/cmdline`
  if (!existsSync(proc)) return false
  try {
    const cmdline = readFileSync(proc, 'utf8')
    // a zombie has an empty command line: it no longer runs anything
    return cmdline.includes('slapos')
  } catch {
    return false
  }
}
