// Files below a directory whose content an untrusted user controls (a partition), used by
// root without following a link at any level. readUserFile (managers.ts) refuses a link in
// the last component of a path; a directory above it may still be a link, or be swapped for
// one between a check and the use, and root would then create, append to, chown or delete a
// file of the same name anywhere. Here each directory is opened from the one above it
// (O_DIRECTORY | O_NOFOLLOW) and everything happens relative to the open directory, through
// `/proc/self/fd/<n>/<name>` (Node has no openat): a link planted before or during the
// operation is never followed, and a directory moved away meanwhile is still the user's own.
// Used by promise.ts (the `.slapgrid/promise` files), grid-instance.ts (the partition's log,
// the cleaning of a free partition), doctor.ts (the promise results it reads), grid-report.ts
// (usage reports, a destroyed partition's DATA) and prune.ts (the shared parts, below a
// shared root the software user fills).
import { closeSync, constants, fchmodSync, fchownSync, fstatSync, mkdirSync, openSync, readdirSync, readlinkSync, renameSync, rmdirSync, statSync, unlinkSync, writeSync, type Stats } from 'node:fs'
import { SlapError } from './errors.ts'
import { readUserFile, type UserFile } from './managers.ts'
import { runSync } from './system.ts'

/** uid and gid given to what is made (unset: kept as made, by this process) */
export interface Own {
  uid?: number | undefined
  gid?: number | undefined
}

/** How a missing directory is made: its owner, and its mode (default 0750). */
export interface Make extends Own {
  mode?: number | undefined
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW
/** open(2)'s O_PATH (Linux): a descriptor that names a file without opening it (no device is woken) */
const O_PATH = 0o10000000
/** directories below the start a removal goes down at most (each holds one descriptor) */
const MAX_DEPTH = 64

/** A directory opened beneath a trusted one; `close()` it when done. */
export class OpenDir {
  constructor(
    readonly fd: number,
    /** its path as first reached, for messages only */
    readonly path: string,
  ) {}

  /** The path of `name` in this directory, whatever happened to the names above it since. */
  at(name: string): string {
    if (!name || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
      throw new SlapError(`${JSON.stringify(name)} is not a file name`, { code: 'E_BAD_NAME' })
    }
    return `/proc/self/fd/${this.fd}/${name}`
  }

  close(): void {
    closeSync(this.fd)
  }

  /** This directory's own path through /proc, for what takes a directory path (opendir, listing). */
  get proc(): string {
    return `/proc/self/fd/${this.fd}`
  }

  /** The names in this directory; [] when it cannot be listed. */
  list(): string[] {
    try {
      return readdirSync(this.proc)
    } catch {
      return []
    }
  }

  /** The subdirectory `name`, opened without following a link; undefined when it is anything else. */
  sub(name: string, make?: Make): OpenDir | undefined {
    return openBelow(this, name, make)
  }

  /** readUserFile of `name` (bounded, regular files only; `tail`: the last `maxBytes` of a larger one). */
  read(name: string, maxBytes: number, opts: { tail?: boolean } = {}): UserFile {
    return readUserFile(this.at(name), maxBytes, undefined, opts)
  }

  /**
   * Gives `name` the content `text` by renaming a new file over it (created exclusively,
   * `mode`, owned by `own`): whatever was under the name (a link, a hard link to another
   * file) is replaced, never written through.
   */
  write(name: string, text: string | Uint8Array, mode: number, own: Own = {}): void {
    const tmp = `.${name}.${process.pid}.tmp`
    removeFile(this.at(tmp))
    const fd = openSync(this.at(tmp), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    try {
      try {
        if (own.uid !== undefined || own.gid !== undefined) fchownSync(fd, own.uid ?? -1, own.gid ?? -1)
        fchmodSync(fd, mode)
        writeSync(fd, typeof text === 'string' ? Buffer.from(text) : text)
      } finally {
        closeSync(fd)
      }
      renameSync(this.at(tmp), this.at(name))
    } catch (e) {
      // no half-written file left behind (a full disk, a directory under the name)
      removeFile(this.at(tmp))
      throw e
    }
  }

  /**
   * Appends `text` to `name` (made 0640 when missing, then owned by `own`). Only a regular
   * file with a single link: a hard link to a file elsewhere is refused, not appended to
   * nor given away.
   */
  append(name: string, text: string, own: Own = {}): void {
    const fd = openSync(this.at(name), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o640)
    try {
      const st = fstatSync(fd)
      if (!st.isFile() || st.nlink !== 1) {
        throw new SlapError(`${this.path}/${name} is not a regular file with one link: not written`, { code: 'E_NOT_REGULAR' })
      }
      writeSync(fd, text)
      if (own.uid !== undefined && (st.uid !== own.uid || (own.gid !== undefined && st.gid !== own.gid))) fchownSync(fd, own.uid, own.gid ?? -1)
    } finally {
      closeSync(fd)
    }
  }

  /** Renames `from` to `to` in this directory (a link under either name is what is renamed). */
  rename(from: string, to: string): void {
    renameSync(this.at(from), this.at(to))
  }

  /**
   * Removes `name` and everything in it, however deep. As root this is GNU `rm -rf
   * --one-file-system` given the name through our descriptor (`/proc/<pid>/fd/<n>/<name>`): rm
   * walks with openat/unlinkat and never follows a link, the name itself included. Otherwise
   * (we are the directory's user already) `remove`.
   */
  removeTree(name: string): void {
    this.at(name) // checks the name
    if (process.getuid?.() !== 0) return this.remove(name)
    const r = runSync(['rm', '-rf', '--one-file-system', '--', `${procOfChildren()}/fd/${this.fd}/${name}`], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } })
    if (r.code !== 0) throw new SlapError(`Could not remove ${this.path}/${name}: ${r.stderr.trim().split('\n').slice(-3).join('; ') || `exit ${r.code}`}`, { code: 'E_REMOVE' })
  }

  /**
   * Removes `name` and, for a directory, everything in it, each directory opened from its
   * parent without following links, never across a mount point (like `rm -rf
   * --one-file-system`); deeper than MAX_DEPTH directories is an error. Absent: nothing to do.
   */
  remove(name: string, depth = 0): void {
    const sub = this.sub(name)
    if (!sub) {
      removeFile(this.at(name))
      return
    }
    try {
      if (fstatSync(sub.fd).dev !== fstatSync(this.fd).dev) throw new SlapError(`${sub.path} is a mount point: not removed`, { code: 'E_MOUNT_POINT' })
      if (depth >= MAX_DEPTH) throw new SlapError(`${sub.path} is more than ${MAX_DEPTH} directories deep: not removed`, { code: 'E_TOO_DEEP' })
      for (const n of sub.list()) sub.remove(n, depth + 1)
    } finally {
      sub.close()
    }
    try {
      rmdirSync(this.at(name))
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
    }
  }
}

/**
 * Opens `root` (trusted: only root can change the names leading to it), then each of `parts`
 * below it without following a link. With `make`, a missing part is made (0750 or `make.mode`), and one that
 * is not a directory (a link, a file) is replaced by one; each is then owned by `make`.
 * Without it, undefined when a part is missing or not a directory.
 */
export function openBeneath(root: string, parts: readonly string[], make?: Make): OpenDir | undefined {
  let dir: OpenDir
  try {
    dir = new OpenDir(openSync(root, constants.O_RDONLY | constants.O_DIRECTORY), root)
  } catch (e) {
    if (!make && ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR')) return undefined
    throw e
  }
  try {
    checkProc(dir)
  } catch (e) {
    dir.close()
    throw e
  }
  for (const part of parts) {
    let next: OpenDir | undefined
    try {
      next = dir.sub(part, make)
    } finally {
      dir.close()
    }
    if (!next) return undefined
    dir = next
  }
  return dir
}

/** openBeneath, `f` on the last directory, then closed; undefined (f not called) when absent. */
export function inBeneath<T>(root: string, parts: readonly string[], make: Make | undefined, f: (dir: OpenDir) => T): T | undefined {
  const dir = openBeneath(root, parts, make)
  if (!dir) return undefined
  try {
    return f(dir)
  } finally {
    dir.close()
  }
}

function openBelow(parent: OpenDir, name: string, make?: Make): OpenDir | undefined {
  const path = parent.at(name)
  const shown = `${parent.path}/${name}`
  let made = false
  // a race with the user (it puts a link back each time) ends in an error, not in a loop
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number
    try {
      fd = openSync(path, DIR_FLAGS)
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      // ENOTDIR: a link (O_NOFOLLOW with O_DIRECTORY) or a file
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e
      if (!make) return undefined
      if (code === 'ENOTDIR') removeFile(path)
      try {
        mkdirSync(path, { mode: 0o750 })
        made = true
      } catch (m) {
        if ((m as NodeJS.ErrnoException).code !== 'EEXIST') throw m
      }
      continue
    }
    const dir = new OpenDir(fd, shown)
    try {
      // the mode asked for, whatever the umask; on the descriptor: never through a link swapped in
      if (made && make?.mode !== undefined) fchmodSync(fd, make.mode)
      if (make && (make.uid !== undefined || make.gid !== undefined)) {
        const st = fstatSync(fd)
        if ((make.uid !== undefined && st.uid !== make.uid) || (make.gid !== undefined && st.gid !== make.gid)) fchownSync(fd, make.uid ?? -1, make.gid ?? -1)
      }
    } catch (e) {
      dir.close()
      throw e
    }
    return dir
  }
  throw new SlapError(`${shown} keeps being replaced while it is made: left alone`, { code: 'E_RACE', hint: 'a process of its owner replaces it; stop that process and run again' })
}

/** Unlinks a name that is not a directory (a link itself, never its target); absent is fine. */
function removeFile(path: string): void {
  try {
    unlinkSync(path)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
  }
}

let procChecked = false

/**
 * Everything here goes through `/proc/self/fd`: without a /proc of this process's own (not
 * mounted, another PID namespace's), every name below would look absent and promises, results
 * and reports would be skipped in silence. Checked once, on the first directory opened.
 */
function checkProc(dir: OpenDir): void {
  if (procChecked) return
  const want = fstatSync(dir.fd)
  const seen = statSync(dir.proc, { throwIfNoEntry: false })
  if (!seen || seen.ino !== want.ino || seen.dev !== want.dev) {
    throw new SlapError(`/proc/self/fd does not show this process's open directories (${dir.path}): /proc is not mounted, or is another PID namespace's`, { code: 'E_NO_PROC', hint: 'mount /proc (mount -t proc proc /proc) where slapos runs' })
  }
  procChecked = true
}

let procSelf: string | undefined

/**
 * `/proc/<pid>` of this process as /proc knows it, for paths given to the commands it runs
 * (theirs is a `/proc/self` of their own). Not `process.pid`: in a PID namespace without a
 * /proc of its own, that number names another process.
 */
export function procOfChildren(): string {
  procSelf ??= `/proc/${readlinkSync('/proc/self')}`
  return procSelf
}

/**
 * Opens a regular file that another user controls, for reading (`O_NONBLOCK | O_NOCTTY`),
 * following a link at its name only when `follow`. The name is first resolved without opening
 * anything (O_PATH) and the file opened only when it is a regular file, so that a link to a
 * device (`/dev/watchdog`, a terminal) or a FIFO never makes root open one; `check` may refuse
 * it from that descriptor (its stat and its real path): a reason, or undefined. Returns the
 * descriptor, `absent`, or why it is refused.
 */
export function openRegular(path: string, follow: boolean, check?: (st: Stats, real: string) => string | undefined): number | 'absent' | { refused: string } {
  let pathFd: number
  try {
    pathFd = openSync(path, O_PATH | (follow ? 0 : constants.O_NOFOLLOW))
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'absent' : { refused: `cannot be opened (${code ?? String(e)})` }
  }
  try {
    const st = fstatSync(pathFd)
    if (!st.isFile()) return { refused: st.isSymbolicLink() ? 'is a symbolic link' : 'is not a regular file' }
    const why = check?.(st, readlinkSync(`/proc/self/fd/${pathFd}`))
    if (why) return { refused: why }
    // the same file, opened now through the descriptor that named it
    return openSync(`/proc/self/fd/${pathFd}`, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
  } catch (e) {
    return { refused: `cannot be opened (${(e as NodeJS.ErrnoException).code ?? String(e)})` }
  } finally {
    closeSync(pathFd)
  }
}
