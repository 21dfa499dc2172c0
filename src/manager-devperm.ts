// The devperm manager (node-extras §1.5): a partition that runs virtual machines asks, in
// `<partition>/.slapos-disk-permission`, for host block devices to be given to its user,
// so that its qemu can open them without root:
//
//   [{"disk": "/dev/sdb"}, {"disk": "/dev/disk/by-id/ata-XYZ"}]
//
// Each requested device, found by lsblk and allowed by `[manager:devperm]
// allowed-disk-for-vm`, is chowned to (partition user, group `disk`). It runs at the start
// and at the end of every processing of the partition (instance and instanceTearDown).
//
// The file is the partition user's, and owning a device is root for whoever owns it (the
// root disk, a disk of another partition): the file is read without following a link, the
// requested path is resolved and must be a block device under /dev/ that lsblk lists as a
// disk, a loop device or one of their partitions, and a device in use by the host (mounted,
// swap, holding a mounted partition, held by LVM/RAID/dm-crypt) is never handed out.
// Used through managers.ts.
import { closeSync, constants, fstatSync, lchownSync, lstatSync, openSync, readFileSync, readSync, realpathSync } from 'node:fs'
import { isAbsolute, join } from 'node:path'
import { SlapError } from './errors.ts'
import type { Manager, ManagerOptions, ManagerPartition } from './managers.ts'
import { escapeControls, quote } from './names.ts'
import type { Runner } from './system.ts'

export const DISK_PERMISSION_FILE = '.slapos-disk-permission'
/** Largest `.slapos-disk-permission` read: a few hundred entries are already far more than a node has disks. */
export const MAX_DISK_FILE_BYTES = 64 * 1024
/** lsblk only reads sysfs and udev's database; a minute means something is badly wrong. */
const LSBLK_TIMEOUT_MS = 60_000

export function devpermManager(options: ManagerOptions): Manager {
  const allowed = allowedDisks(options.sections.get('devperm'))
  const apply = (p: ManagerPartition): Promise<void> => applyDiskPermissions(p, allowed, options.runner)
  // the original does the same work at both hook points; report (ours) gives the disks back
  return { name: 'devperm', instance: apply, instanceTearDown: apply, report: returnDisks }
}

/**
 * Before a partition is destroyed, the devices of its `.slapos-disk-permission` that its user
 * owns go back to root (group `disk`): the next instance of this partition, whose user has
 * the same uid, must not find the previous one's disks. (The original leaves them.) Only
 * devices the partition user owns are touched.
 */
export function returnDisks(p: ManagerPartition): void {
  const file = readUserFile(join(p.path, DISK_PERMISSION_FILE), MAX_DISK_FILE_BYTES)
  if (file.kind !== 'text') return
  let list: unknown
  try {
    list = JSON.parse(file.text)
  } catch {
    return
  }
  if (!Array.isArray(list)) return
  for (const item of list) {
    const disk = record(item)?.disk
    if (typeof disk !== 'string' || !isAbsolute(disk) || disk.includes('\0')) continue
    let path: string
    try {
      path = realpathSync(disk)
    } catch {
      continue
    }
    const st = lstatSync(path, { throwIfNoEntry: false })
    if (!st?.isBlockDevice() || !path.startsWith('/dev/') || st.uid !== p.owner.uid || p.owner.uid === 0) continue
    p.log.info(`Giving ${escapeControls(path)} back to root: ${escapeControls(p.id)} is being destroyed`)
    lchownSync(path, 0, diskGid())
  }
}

/**
 * `allowed-disk-for-vm` as a list: one path a line, stripped, blank lines dropped.
 * Undefined (no restriction) when the key or the section is absent; an empty list (nothing
 * allowed) when the key is present but empty.
 */
export function allowedDisks(section: ReadonlyMap<string, string> | undefined): string[] | undefined {
  const value = section?.get('allowed-disk-for-vm')
  if (value === undefined) return undefined
  return value
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
}

/** One device lsblk lists and devperm may hand out, with why it must not be (in use by the host). */
export interface BlockDevice {
  path: string
  /** e.g. `is mounted on /srv`: the device is refused */
  busy: string | undefined
}

/**
 * The devices of `lsblk --json --output-all` that can be given: every top-level `disk` (as
 * the original) or `loop` (a disk image attached with losetup), and their direct children
 * of type `part`. Undefined when the output has no `blockdevices` list.
 */
export function diskInventory(lsblk: unknown): Map<string, BlockDevice> | undefined {
  const top = record(lsblk)?.blockdevices
  if (!Array.isArray(top)) return undefined
  const devices = new Map<string, BlockDevice>()
  for (const d of top) {
    const disk = record(d)
    if (!disk || (disk.type !== 'disk' && disk.type !== 'loop')) continue
    if (typeof disk.path === 'string') devices.set(disk.path, { path: disk.path, busy: busyReason(disk) })
    for (const c of children(disk)) {
      if (c.type === 'part' && typeof c.path === 'string') devices.set(c.path, { path: c.path, busy: busyReason(c) })
    }
  }
  return devices
}

/**
 * Why the host uses `dev` (lsblk entry), or undefined: mounted (any mount point, `[SWAP]`
 * for an active swap), a swap signature, a partition that is itself in use, or any other
 * device on top of it (LVM, RAID, dm-crypt, a partition holding one of those).
 */
export function busyReason(dev: Record<string, unknown>): string | undefined {
  const points = mountpoints(dev)
  if (points.includes('[SWAP]') || dev.fstype === 'swap') return 'is used as swap'
  if (points.length > 0) return `is mounted on ${points.join(', ')}`
  for (const c of children(dev)) {
    const name = typeof c.path === 'string' ? c.path : typeof c.name === 'string' ? c.name : '?'
    if (c.type !== 'part') return `is held by ${name} (${String(c.type)})`
    const why = busyReason(c)
    if (why !== undefined) return `has a partition ${name} that ${why}`
  }
  return undefined
}

function mountpoints(dev: Record<string, unknown>): string[] {
  const points = new Set<string>()
  if (typeof dev.mountpoint === 'string') points.add(dev.mountpoint)
  if (Array.isArray(dev.mountpoints)) for (const m of dev.mountpoints) if (typeof m === 'string') points.add(m)
  return [...points]
}

function children(dev: Record<string, unknown>): Array<Record<string, unknown>> {
  return Array.isArray(dev.children) ? dev.children.map(record).filter((c) => c !== undefined) : []
}

function record(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
}

/** The gid of group `name` in the text of /etc/group, or undefined. */
export function gidOfGroup(etcGroup: string, name: string): number | undefined {
  for (const line of etcGroup.split('\n')) {
    const f = line.split(':')
    if (f.length >= 3 && f[0] === name && /^\d+$/.test(f[2] ?? '')) return Number(f[2])
  }
  return undefined
}

function diskGid(): number {
  const gid = gidOfGroup(readFileSync('/etc/group', 'utf8'), 'disk')
  if (gid === undefined) throw new SlapError("devperm: group 'disk' does not exist in /etc/group", { code: 'E_NO_DISK_GROUP', hint: 'create it (groupadd --system disk) or remove devperm from manager_list' })
  return gid
}

/** What the partition's file gave: nothing, a reason to ignore it, or its text. */
type UserFile = { kind: 'absent' } | { kind: 'refused'; why: string } | { kind: 'text'; text: string }

/**
 * Reads a file of the partition user as root without letting the user choose what is read:
 * a regular file only (not a link, a FIFO or a device), at most `max` bytes, and the file
 * opened is the one checked (O_NOFOLLOW, O_NONBLOCK, same inode).
 */
export function readUserFile(path: string, max: number): UserFile {
  let st
  try {
    st = lstatSync(path)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' }
    return { kind: 'refused', why: `cannot be read (${(e as NodeJS.ErrnoException).code ?? String(e)})` }
  }
  if (st.isSymbolicLink()) return { kind: 'refused', why: 'it is a symbolic link' }
  if (!st.isFile()) return { kind: 'refused', why: 'it is not a regular file' }
  if (st.size > max) return { kind: 'refused', why: `it is larger than ${max} bytes` }
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (e) {
    return { kind: 'refused', why: `cannot be opened (${(e as NodeJS.ErrnoException).code ?? String(e)})` }
  }
  try {
    const opened = fstatSync(fd)
    if (!opened.isFile() || opened.ino !== st.ino || opened.dev !== st.dev) return { kind: 'refused', why: 'it was replaced while being read' }
    const buf = Buffer.alloc(max + 1)
    let n = 0
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null)
      if (got === 0) break
      n += got
      if (n > max) return { kind: 'refused', why: `it is larger than ${max} bytes` }
    }
    return { kind: 'text', text: buf.subarray(0, n).toString('utf8') }
  } finally {
    closeSync(fd)
  }
}

/** A value of the user's file for a log line: JSON, controls escaped, at most 200 characters. */
function shown(v: unknown): string {
  let s: string
  try {
    s = JSON.stringify(v) ?? String(v)
  } catch {
    s = String(v)
  }
  return escapeControls(s.length > 200 ? `${s.slice(0, 200)}...` : s)
}

/** A list as the original prints it (Python's repr of a list of str). */
function pyList(items: Iterable<string>): string {
  return `[${[...items].map(quote).join(', ')}]`
}

/**
 * Runs `lsblk --json --output-all` and keeps the devices that can be given. A failed or
 * unparsable run logs as the original and gives an empty inventory (every disk is refused).
 */
export async function lsblkInventory(runner: Runner, log: ManagerPartition['log']): Promise<Map<string, BlockDevice>> {
  let parsed: unknown
  try {
    const r = await runner.run(['lsblk', '--json', '--output-all'], { timeoutMs: LSBLK_TIMEOUT_MS })
    if (r.code !== 0) throw new Error(`exit ${String(r.code ?? r.signal)}`)
    parsed = JSON.parse(r.stdout)
  } catch {
    log.info('lsblk call failed')
  }
  const devices = diskInventory(parsed)
  if (devices === undefined) log.info('lsblk output not supported')
  return devices ?? new Map()
}

/**
 * §1.5 for one partition: every valid request of `.slapos-disk-permission` that passes the
 * checks gets its device chowned to (partition uid, group `disk`) unless the partition user
 * already owns it. Refusals are warnings; only a missing `disk` group throws.
 */
export async function applyDiskPermissions(p: ManagerPartition, allowed: readonly string[] | undefined, runner: Runner): Promise<void> {
  const file = readUserFile(join(p.path, DISK_PERMISSION_FILE), MAX_DISK_FILE_BYTES)
  if (file.kind === 'absent') return
  if (file.kind === 'refused') {
    p.log.warning(`Bad disk configuration file: ${DISK_PERMISSION_FILE} ${file.why}`)
    return
  }
  let list: unknown
  try {
    list = JSON.parse(file.text)
  } catch (e) {
    p.log.warning(`Bad disk configuration file: ${escapeControls(e instanceof Error ? e.message : String(e))}`)
    return
  }
  if (!Array.isArray(list)) {
    p.log.warning('Bad disk configuration file: not a JSON list')
    return
  }
  let inventory: Map<string, BlockDevice> | undefined
  for (const item of list) {
    const entry = record(item)
    if (!entry) {
      p.log.warning(`Bad disk configuration entry (not an object): ${shown(item)}`)
      continue
    }
    const disk = entry.disk
    if (disk === undefined || disk === null) {
      p.log.warning(`Disk is None: ${shown(list)}`)
      continue
    }
    if (typeof disk !== 'string' || !isAbsolute(disk) || disk.includes('\0')) {
      p.log.warning(`Bad disk configuration entry (disk must be an absolute path): ${shown(item)}`)
      continue
    }
    let path: string
    try {
      // the user's link (in the partition, in /dev/disk/by-*) is followed here, once: every
      // check and the chown then name the device itself
      path = realpathSync(disk)
    } catch (e) {
      p.log.warning(`Disk ${quote(disk)} does not exist (${(e as NodeJS.ErrnoException).code ?? 'error'}): nothing changed`)
      continue
    }
    if (allowed !== undefined && !allowed.includes(path)) {
      p.log.warning(`Disk ${escapeControls(path)} not in allowed disk list ${allowed.map(escapeControls).join(', ')}`)
      continue
    }
    inventory ??= await lsblkInventory(runner, p.log)
    const device = inventory.get(path)
    if (!device) {
      p.log.warning(`Disk ${quote(path)} is not detected by lsblk list ${pyList(inventory.keys())}`)
      continue
    }
    let st
    try {
      st = lstatSync(path)
    } catch (e) {
      p.log.warning(`Disk ${quote(path)} cannot be examined (${(e as NodeJS.ErrnoException).code ?? 'error'}): nothing changed`)
      continue
    }
    if (!st.isBlockDevice() || !path.startsWith('/dev/')) {
      p.log.warning(`Disk ${quote(path)} is not a block device under /dev/: nothing changed`)
      continue
    }
    if (device.busy !== undefined) {
      p.log.warning(`Disk ${quote(path)} ${escapeControls(device.busy)}: it stays with the host`)
      continue
    }
    if (st.uid === p.owner.uid) continue
    const gid = diskGid()
    p.log.warning(`Transfer ownership of ${escapeControls(path)} to ${escapeControls(p.owner.name)}`)
    // path has no link left (realpath) and /dev is root's: lchown names exactly this node
    lchownSync(path, p.owner.uid, gid)
  }
}
