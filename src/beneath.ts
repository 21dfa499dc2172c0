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
import { closeSync, constants, fchmodSync, fchownSync, fstatSync, mkdirSync, openSync, readdirSync, renameSync, rmdirSync, unlinkSync, writeSync } from 'node:fs'
import { SlapError } from './errors.ts'
import { readUserFile, type UserFile } from './managers.ts'

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
      if (own.uid !== undefined || own.gid !== undefined) fchownSync(fd, own.uid ?? -1, own.gid ?? -1)
      fchmodSync(fd, mode)
      writeSync(fd, typeof text === 'string' ? Buffer.from(text) : text)
    } finally {
      closeSync(fd)
    }
    renameSync(this.at(tmp), this.at(name))
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
      if (own.uid !== undefined && (st.uid !== own.uid || (own.gid !== undefined && st.gid !== own.gid))) fchownSync(fd, own.uid, own.gid ?? -1)
      writeSync(fd, text)
    } finally {
      closeSync(fd)
    }
  }

  /** Renames `from` to `to` in this directory (a link under either name is what is renamed). */
  rename(from: string, to: string): void {
    renameSync(this.at(from), this.at(to))
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
  throw new SlapError(`${shown} keeps being replaced while it is made: left alone`, { code: 'E_RACE', hint: 'a process of the partition replaces it; stop it and run again' })
}

/** Unlinks a name that is not a directory (a link itself, never its target); absent is fine. */
function removeFile(path: string): void {
  try {
    unlinkSync(path)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
  }
}

