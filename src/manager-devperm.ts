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
// disk, a loop device or one of their partitions; a device in use by the host (mounted,
// swap, holding a mounted partition, held by LVM/RAID/dm-crypt) is never handed out; only a
// device root owns is given (never one another partition's user holds); and, unless
// `allowed-disk-for-vm` names it, a device that carries a storage signature (file system,
// RAID/LVM/ZFS/Ceph member, LUKS: an unmounted part of the host's storage) is refused too.
// Used through managers.ts.
import { lchownSync, lstatSync, readdirSync, readFileSync, realpathSync } from 'node:fs'
import { isAbsolute, join } from 'node:path'
import { SlapError } from './errors.ts'
import { readUserFile, shown, type Manager, type ManagerOptions, type ManagerPartition } from './managers.ts'
import { escapeControls, quote } from './names.ts'
import type { Runner } from './system.ts'

export const DISK_PERMISSION_FILE = '.slapos-disk-permission'
/** Largest `.slapos-disk-permission` read: a few hundred entries are already far more than a node has disks. */
export const MAX_DISK_FILE_BYTES = 64 * 1024
/** lsblk only reads sysfs and udev's database; a minute means something is badly wrong. */
const LSBLK_TIMEOUT_MS = 60_000
/** blkid -p reads a few blocks of one device. */
const BLKID_TIMEOUT_MS = 60_000
/**
 * Where the device nodes devperm may have chowned live: lsblk's paths are /dev/<kernel name>,
 * or /dev/mapper/<name> for a device-mapper partition (a real node there without udev).
 */
const DEVICE_DIRS = ['/dev', '/dev/mapper']

export function devpermManager(options: ManagerOptions): Manager {
  const allowed = allowedDisks(options.sections.get('devperm'))
  const apply = (p: ManagerPartition): Promise<void> => applyDiskPermissions(p, allowed, options.runner)
  // the original does the same work at both hook points; report (ours) gives the disks back
  return { name: 'devperm', instance: apply, instanceTearDown: apply, report: returnDisks }
}

/**
 * Before a partition is destroyed, every block device its user owns goes back to root (group
 * `disk`): the next instance of this partition, whose user has the same uid, must not find
 * the previous one's disks. (The original leaves them.) The user's `.slapos-disk-permission`
 * is not consulted (the user may have emptied or deleted it): the nodes of /dev and
 * /dev/mapper are examined themselves, lstat (a link is never followed), and only block
 * devices of the partition's uid are touched, never when that uid is root's.
 */
export function returnDisks(p: ManagerPartition): void {
  const uid = p.owner.uid
  if (uid === 0) return
  let gid: number | undefined
  for (const dir of DEVICE_DIRS) {
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch {
      continue // no /dev/mapper on this host
    }
    for (const name of names.sort()) {
      const path = join(dir, name)
      let st
      try {
        st = lstatSync(path)
      } catch {
        continue // gone meanwhile
      }
      if (!st.isBlockDevice() || st.uid !== uid) continue
      gid ??= diskGid()
      p.log.info(`Giving ${escapeControls(path)} back to root: ${escapeControls(p.id)} is being destroyed`)
      try {
        lchownSync(path, 0, gid)
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
      }
    }
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
  /** lsblk's `fstype` (from udev's database: absent on a host without udev) */
  fstype: string | undefined
  /** its partitions (lsblk `part` children), examined with it for signatures */
  parts: string[]
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
    const parts: string[] = []
    for (const c of children(disk)) {
      if (c.type === 'part' && typeof c.path === 'string') {
        devices.set(c.path, { path: c.path, busy: busyReason(c), fstype: fstypeOf(c), parts: [] })
        parts.push(c.path)
      }
    }
    if (typeof disk.path === 'string') devices.set(disk.path, { path: disk.path, busy: busyReason(disk), fstype: fstypeOf(disk), parts })
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

function fstypeOf(dev: Record<string, unknown>): string | undefined {
  return typeof dev.fstype === 'string' && dev.fstype !== '' ? dev.fstype : undefined
}

/**
 * Major and minor numbers of a device node's `rdev` (glibc's 64-bit encoding: major in bits
 * 8-19 and 32-63, minor in bits 0-7 and 20-31), as sysfs writes them: `7:3`.
 */
export function devNumbers(rdev: number): string {
  const lo = rdev % 2 ** 32
  const hi = Math.floor(rdev / 2 ** 32)
  const major = ((lo >>> 8) & 0xfff) + ((hi & 0xfffff000) >>> 0)
  const minor = (lo & 0xff) + ((lo >>> 20) & 0xfff) * 0x100 + (hi & 0xfff) * 0x100000
  return `${major}:${minor}`
}

/**
 * The kernel's holders of a device (`/sys/dev/block/M:m/holders`: device-mapper, md, bcache
 * built on it), by the node's `rdev`; `sys` is where sysfs is mounted.
 */
export function holdersOf(rdev: number, sys = '/sys'): string[] {
  return readdirSync(join(sys, 'dev', 'block', devNumbers(rdev), 'holders')).sort()
}

/**
 * What `blkid -p` (a low-level probe of the device's content, no cache, no udev) finds
 * there: the signature type (`ext4`, `zfs_member`, `LVM2_member`, `linux_raid_member`,
 * `crypto_LUKS`, `ceph_bluestore`, ...), undefined for none (a bare disk or one with only a
 * partition table). Throws when the probe fails: the device is then refused.
 */
export async function probeSignature(path: string, runner: Runner): Promise<string | undefined> {
  // path is a resolved device path under /dev/ (never an option), passed as one argument
  const r = await runner.run(['blkid', '-p', '-o', 'value', '-s', 'TYPE', path], { timeoutMs: BLKID_TIMEOUT_MS })
  if (r.code === 2) return undefined // nothing found
  if (r.code === 8) return 'several (blkid: ambivalent result)'
  if (r.code !== 0) throw new Error(`blkid -p exit ${String(r.code ?? r.signal)}${r.stderr.trim() ? `: ${r.stderr.trim().split('\n')[0] ?? ''}` : ''}`)
  const type = r.stdout.trim().split('\n')[0]?.trim() ?? ''
  return type === '' ? undefined : type.slice(0, 64)
}

/**
 * Why `device` may be part of the host's storage though nothing is mounted (a ZFS pool disk,
 * an inactive LVM PV, a RAID member, a LUKS container, a Ceph OSD), or undefined: the device
 * or one of its partitions has an lsblk `fstype`, a holder in sysfs, or a signature blkid
 * finds. lsblk's `fstype` comes from udev's database (empty without udev), hence the two
 * direct looks.
 */
export async function storageReason(device: BlockDevice, inventory: ReadonlyMap<string, BlockDevice>, runner: Runner): Promise<string | undefined> {
  for (const target of [device.path, ...device.parts]) {
    const that = target === device.path ? '' : `has a partition ${target} that `
    const fstype = inventory.get(target)?.fstype
    if (fstype !== undefined) return `${that}has a signature (${fstype})`
    let holders: string[]
    try {
      holders = holdersOf(lstatSync(target).rdev)
    } catch (e) {
      return `${that}cannot be examined in /sys (${(e as NodeJS.ErrnoException).code ?? String(e)})`
    }
    if (holders.length > 0) return `${that}is held by ${holders.join(', ')}`
    let type: string | undefined
    try {
      type = await probeSignature(target, runner)
    } catch (e) {
      return `${that}cannot be probed (${e instanceof Error ? e.message : String(e)})`
    }
    if (type !== undefined) return `${that}has a signature (${type})`
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
 * already owns it. Only a device root owns is given: one another partition's user has is
 * refused (else partitions could take each other's disks, or flip a disk they both name at
 * every run). Refusals are warnings; only a missing `disk` group throws.
 */
export async function applyDiskPermissions(p: ManagerPartition, allowed: readonly string[] | undefined, runner: Runner): Promise<void> {
  const file = readUserFile(join(p.path, DISK_PERMISSION_FILE), MAX_DISK_FILE_BYTES)
  if (file.kind === 'absent') return
  if (file.kind === 'refused') {
    p.log.warning(`Bad disk configuration file: ${DISK_PERMISSION_FILE} it is ${file.why}`)
    return
  }
  let list: unknown
  try {
    list = JSON.parse(file.bytes.toString('utf8'))
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
    if (st.uid !== 0) {
      p.log.warning(`Disk ${quote(path)} is owned by uid ${st.uid}, not root: nothing changed (if it is free, give it back with chown root:disk)`)
      continue
    }
    // a device the operator lists is meant to be given, whatever is written on it; a device
    // named only by the partition must not be an unmounted piece of the host's storage
    if (allowed === undefined || !allowed.includes(path)) {
      const why = await storageReason(device, inventory, runner)
      if (why !== undefined) {
        p.log.warning(`Disk ${quote(path)} ${escapeControls(why)}: it stays with the host (list it in allowed-disk-for-vm to give it anyway)`)
        continue
      }
    }
    const gid = diskGid()
    p.log.warning(`Transfer ownership of ${escapeControls(path)} to ${escapeControls(p.owner.name)}`)
    // path has no link left (realpath) and /dev is root's: lchown names exactly this node
    lchownSync(path, p.owner.uid, gid)
  }
}
