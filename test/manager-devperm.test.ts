// The devperm manager (node-extras.md §1.5, checklist 14-18) on real loop devices: sparse
// images attached with losetup (some with an MBR and their partitions added), a partition
// directory owned by `nobody`, the real lsblk. Mounts are made in a private mount namespace
// (lsblk is run there through nsenter) so the host's mount table never changes; the swap
// test turns a loop device into swap for a moment. Every loop device is detached and given
// back its owner, even when a test fails. Partitions of other users have uids no account
// has (STRANGER...), so that giving disks back never touches another test's devices.
import { spawn, spawnSync } from 'node:child_process'
import { chownSync, closeSync, existsSync, lchownSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs'
import { basename } from 'node:path'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { ownerOf } from '../src/grid-common.ts'
import { createLogger } from '../src/log.ts'
import { allowedDisks, busyReason, devNumbers, devpermManager, diskInventory, gidOfGroup, holdersOf, MAX_DISK_FILE_BYTES } from '../src/manager-devperm.ts'
import type { Manager, ManagerPartition } from '../src/managers.ts'
import { Supervisor, supervisorPaths } from '../src/supervisor.ts'
import { realRunner, type Runner } from '../src/system.ts'
import { skip, tempDir } from './helpers.ts'

const NOBODY = 65534
/** uids no account has, unique to this run: the users of "other" partitions */
const STRANGER = 3_210_000_000 + (process.pid % 100_000) * 2
const STRANGER2 = STRANGER + 1
const isRoot = process.getuid?.() === 0

/** Runs a command of the test (never with partition text), throwing with its stderr when it fails. */
function sh(argv: string[]): string {
  const [cmd, ...args] = argv
  const r = spawnSync(cmd ?? 'false', args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${String(r.status ?? r.signal)}): ${r.stderr || r.error?.message}`)
  return r.stdout
}

function diskGroupGid(): number {
  return Number(sh(['getent', 'group', 'disk']).split(':')[2])
}

type Undo = () => void | Promise<void>

/** Runs `body` with a list of clean-up steps, run last first whatever happens. */
async function withCleanup(body: (undo: Undo[]) => Promise<void>): Promise<void> {
  const undo: Undo[] = []
  try {
    await body(undo)
  } finally {
    const errors: unknown[] = []
    for (const u of undo.reverse()) {
      try {
        await u()
      } catch (e) {
        errors.push(e)
      }
    }
    if (errors.length) throw errors[0] instanceof Error ? errors[0] : new Error(String(errors[0]))
  }
}

/** Owner of a path, lstat (the node or link itself). */
function own(path: string): [number, number] {
  const st = lstatSync(path)
  return [st.uid, st.gid]
}

/** Gives `path` back its current owner at clean-up (a device node outlives its loop device). */
function restoreOwner(undo: Undo[], path: string): void {
  const [uid, gid] = own(path)
  undo.push(() => {
    if (existsSync(path)) lchownSync(path, uid, gid)
  })
}

/** Writes an MBR with two Linux partitions (1-3 MiB, 3-7 MiB) at the start of an 8 MiB image. */
function writeMbr(image: string): void {
  const mbr = Buffer.alloc(512)
  const entry = (offset: number, start: number, sectors: number) => {
    mbr[offset + 4] = 0x83
    mbr.writeUInt32LE(start, offset + 8)
    mbr.writeUInt32LE(sectors, offset + 12)
  }
  entry(446, 2048, 4096)
  entry(462, 6144, 8192)
  mbr[510] = 0x55
  mbr[511] = 0xaa
  const fd = openSync(image, 'r+')
  try {
    writeSync(fd, mbr, 0, 512, 0)
  } finally {
    closeSync(fd)
  }
}

interface Loop {
  dev: string
  /** partition nodes (loopNp1, loopNp2) when asked for */
  parts: string[]
}

let images = 0

/** A sparse 8 MiB image attached to a free loop device, detached (and its owner restored) at clean-up. */
async function attachLoop(undo: Undo[], dir: string, opts: { partitions?: boolean; mkfs?: 'ext4' | 'swap' } = {}): Promise<Loop> {
  const image = join(dir, `disk-${++images}.img`)
  writeFileSync(image, '')
  truncateSync(image, 8 << 20)
  if (opts.partitions) writeMbr(image)
  const dev = sh(['losetup', '--find', '--show', ...(opts.partitions ? ['--partscan'] : []), image]).trim()
  assert.match(dev, /^\/dev\/loop\d+$/)
  undo.push(() => void sh(['losetup', '-d', dev]))
  restoreOwner(undo, dev)
  const parts: string[] = []
  if (opts.partitions) {
    // the kernel reads the table itself when it knows MBR; otherwise partx adds the partitions
    if (!existsSync(`${dev}p1`)) sh(['partx', '--add', dev])
    undo.push(() => void spawnSync('partx', ['--delete', dev]))
    for (const p of [`${dev}p1`, `${dev}p2`]) {
      for (let i = 0; i < 50 && !existsSync(p); i++) await new Promise((r) => setTimeout(r, 20))
      assert.ok(existsSync(p), `${p} exists`)
      parts.push(p)
    }
  }
  if (opts.mkfs === 'ext4') sh(['mkfs.ext4', '-q', '-F', dev])
  if (opts.mkfs === 'swap') sh(['mkswap', dev])
  return { dev, parts }
}

/**
 * A private mount namespace held by a `sleep`, ended at clean-up (its mounts go with it), and
 * a runner that runs commands (lsblk) inside it: the real lsblk sees the namespace's mounts.
 */
async function mountNamespace(undo: Undo[]): Promise<{ pid: number; runner: Runner }> {
  const holder = spawn('unshare', ['--mount', '--propagation', 'private', 'sleep', '600'], { stdio: 'ignore' })
  const exited = new Promise<void>((r) => holder.once('exit', () => r()))
  undo.push(async () => {
    holder.kill('SIGKILL')
    await exited
  })
  const pid = holder.pid
  assert.ok(pid !== undefined, 'unshare started')
  const ours = readlinkSync('/proc/self/ns/mnt')
  for (let i = 0; i < 100; i++) {
    try {
      if (readlinkSync(`/proc/${pid}/ns/mnt`) !== ours && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep') break
    } catch {
      // not there yet
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  assert.is.not(readlinkSync(`/proc/${pid}/ns/mnt`), ours, 'the holder has its own mount namespace')
  return { pid, runner: { run: (argv, o) => realRunner.run(['nsenter', '-t', String(pid), '-m', ...argv], o) } }
}

interface TestPartition {
  p: ManagerPartition
  lines: string[]
  warnings: () => string[]
  /** writes .slapos-disk-permission */
  request: (value: unknown) => void
}

/** A partition directory owned by `uid` (nobody), its owner read as the node reads it, and a logger that keeps its lines. */
function partition(dir: string, id = 'slappart0', uid = NOBODY): TestPartition {
  const path = join(dir, id)
  mkdirSync(path, { recursive: true })
  chownSync(path, uid, uid)
  const lines: string[] = []
  const log = createLogger({ level: 'debug', noTime: true, color: false, isTTY: false, write: (l) => lines.push(l) })
  const owner = ownerOf(path)
  const instanceRoot = dir
  const p: ManagerPartition = {
    id,
    path,
    owner,
    state: 'started',
    addresses: [],
    instanceRoot,
    sup: new Supervisor(supervisorPaths(instanceRoot), log),
    processes: { id, path, uid: owner.uid, gid: owner.gid, user: owner.name, home: owner.home },
    log,
    now: () => new Date(),
  }
  return {
    p,
    lines,
    warnings: () => lines.filter((l) => / WARNING /.test(l)),
    request: (value) => writeFileSync(join(path, '.slapos-disk-permission'), typeof value === 'string' ? value : JSON.stringify(value)),
  }
}

function devperm(allowed?: string, runner: Runner = realRunner): Manager {
  const sections = new Map<string, ReadonlyMap<string, string>>()
  if (allowed !== undefined) sections.set('devperm', new Map([['allowed-disk-for-vm', allowed]]))
  return devpermManager({ settings: new Map(), firewall: undefined, sections, runner })
}

async function instance(m: Manager, p: ManagerPartition): Promise<void> {
  assert.ok(m.instance, 'devperm has an instance hook')
  await m.instance(p)
}

function transfers(t: TestPartition): string[] {
  return t.warnings().filter((l) => l.includes('Transfer ownership of '))
}

// ---------------------------------------------------------------- pure parts

test('allowed-disk-for-vm: absent = no restriction, empty = nothing, lines stripped', () => {
  assert.is(allowedDisks(undefined), undefined)
  assert.is(allowedDisks(new Map()), undefined)
  assert.equal(allowedDisks(new Map([['allowed-disk-for-vm', '']])), [])
  assert.equal(allowedDisks(new Map([['allowed-disk-for-vm', '\n  /dev/sdb  \n\n/dev/sdc\n']])), ['/dev/sdb', '/dev/sdc'])
})

test('lsblk inventory: disks and loops with their partitions; busy devices say why', () => {
  const inv = diskInventory({
    blockdevices: [
      { path: '/dev/sda', type: 'disk', mountpoint: null, mountpoints: [null], children: [{ path: '/dev/sda1', type: 'part', mountpoints: ['/'] }, { path: '/dev/sda2', type: 'part', mountpoints: [null] }] },
      { path: '/dev/sdb', type: 'disk', children: [{ path: '/dev/sdb1', type: 'part', children: [{ name: 'vg-lv', path: '/dev/mapper/vg-lv', type: 'lvm' }] }] },
      { path: '/dev/sdc', type: 'disk', children: [{ path: '/dev/md0', type: 'raid1' }] },
      { path: '/dev/sdd', type: 'disk', fstype: 'swap', mountpoints: [null] },
      { path: '/dev/loop3', type: 'loop', mountpoint: '[SWAP]' },
      { path: '/dev/loop4', type: 'loop', mountpoints: [null] },
      { path: '/dev/sr0', type: 'rom' },
      { path: '/dev/dm-0', type: 'lvm' },
      'junk',
      { type: 'disk' },
    ],
  })
  assert.ok(inv)
  assert.equal([...inv.keys()].sort(), ['/dev/loop3', '/dev/loop4', '/dev/sda', '/dev/sda1', '/dev/sda2', '/dev/sdb', '/dev/sdb1', '/dev/sdc', '/dev/sdd'])
  assert.is(inv.get('/dev/sda')?.busy, 'has a partition /dev/sda1 that is mounted on /')
  assert.is(inv.get('/dev/sda1')?.busy, 'is mounted on /')
  assert.is(inv.get('/dev/sda2')?.busy, undefined)
  assert.is(inv.get('/dev/sdb')?.busy, 'has a partition /dev/sdb1 that is held by /dev/mapper/vg-lv (lvm)')
  assert.is(inv.get('/dev/sdb1')?.busy, 'is held by /dev/mapper/vg-lv (lvm)')
  assert.is(inv.get('/dev/sdc')?.busy, 'is held by /dev/md0 (raid1)')
  assert.is(inv.get('/dev/sdd')?.busy, 'is used as swap')
  assert.is(inv.get('/dev/loop3')?.busy, 'is used as swap')
  assert.is(inv.get('/dev/loop4')?.busy, undefined)
  assert.equal(inv.get('/dev/sda')?.parts, ['/dev/sda1', '/dev/sda2'], 'a disk knows its partitions (their signatures count)')
  assert.equal(inv.get('/dev/sda1')?.parts, [])
  assert.is(inv.get('/dev/sdd')?.fstype, 'swap')
  assert.is(inv.get('/dev/sda')?.fstype, undefined)
  assert.is(busyReason({ mountpoint: '/srv', mountpoints: ['/srv', '/mnt'] }), 'is mounted on /srv, /mnt')
  assert.is(diskInventory({}), undefined)
  assert.is(diskInventory([]), undefined)
  assert.is(diskInventory(undefined), undefined)
})

test('the disk group is read from /etc/group text', () => {
  const etc = 'root:x:0:\ndiskless:x:5:\ndisk:x:6:alice\nkvm:x:104:\n'
  assert.is(gidOfGroup(etc, 'disk'), 6)
  assert.is(gidOfGroup(etc, 'kvm'), 104)
  assert.is(gidOfGroup('root:x:0:\n', 'disk'), undefined)
  assert.is(gidOfGroup('disk:x:notanumber:\n', 'disk'), undefined)
})

// ---------------------------------------------------------------- real loop devices

test('a loop device lsblk lists is chowned to (partition uid, group disk), once (14, 17)', async () => {
  if (!isRoot) return skip('needs root (losetup, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    lchownSync(loop.dev, 0, 0)
    const mode = lstatSync(loop.dev).mode
    const t = partition(dir)
    t.request([{ disk: loop.dev }])
    const m = devperm()
    assert.is(m.name, 'devperm')
    await instance(m, t.p)
    assert.equal(own(loop.dev), [NOBODY, diskGroupGid()], 'owned by the partition user, group disk')
    assert.is(lstatSync(loop.dev).mode, mode, 'mode unchanged')
    assert.equal(transfers(t), [`slapos[${process.pid}] WARNING Transfer ownership of ${loop.dev} to nobody\n`])
    // instanceTearDown does the same work: the device is already the user's, nothing to do
    assert.ok(m.instanceTearDown)
    await m.instanceTearDown(t.p)
    assert.is(transfers(t).length, 1, 'no second transfer')
    assert.equal(own(loop.dev), [NOBODY, diskGroupGid()])
  })
})

test('a partition (lsblk part child) of a loop device is chowned; its loop device is not (14)', async () => {
  if (!isRoot) return skip('needs root (losetup, partx, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir, { partitions: true })
    const [p1, p2] = loop.parts as [string, string]
    const before = own(loop.dev)
    const beforeP2 = own(p2)
    const t = partition(dir)
    t.request([{ disk: p1 }])
    await instance(devperm(), t.p)
    assert.equal(own(p1), [NOBODY, diskGroupGid()])
    assert.equal(own(loop.dev), before, 'the whole device stays as it was')
    assert.equal(own(p2), beforeP2, 'the other partition stays as it was')
  })
})

test('a link to a device is resolved and the device chowned, not the link; a link to nothing changes nothing (15)', async () => {
  if (!isRoot) return skip('needs root (losetup, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    lchownSync(loop.dev, 0, 0)
    const t = partition(dir)
    const link = join(t.p.path, 'my-disk')
    symlinkSync(loop.dev, link)
    lchownSync(link, NOBODY, NOBODY)
    const dangling = join(t.p.path, 'gone')
    symlinkSync(`/dev/slapos-test-no-such-device-${process.pid}`, dangling)
    t.request([{ disk: dangling }, { disk: link }])
    await instance(devperm(), t.p)
    assert.equal(own(loop.dev), [NOBODY, diskGroupGid()], 'the device behind the link')
    assert.equal(own(link), [NOBODY, NOBODY], 'the link itself untouched')
    assert.equal(own(dangling), [0, 0], 'the dangling link untouched')
    assert.ok(
      t.warnings().some((l) => l.includes(`Disk '${dangling}' does not exist (ENOENT): nothing changed`)),
      t.lines.join(''),
    )
    assert.equal(transfers(t), [`slapos[${process.pid}] WARNING Transfer ownership of ${loop.dev} to nobody\n`], 'reported by its real path')
  })
})

test('allowed-disk-for-vm: empty blocks all, another device blocks this one, this device allows it (16)', async () => {
  if (!isRoot) return skip('needs root (losetup, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    const other = await attachLoop(undo, dir)
    lchownSync(loop.dev, 0, 0)
    lchownSync(other.dev, 0, 0)

    const empty = partition(dir, 'slappart0')
    empty.request([{ disk: loop.dev }])
    await instance(devperm(''), empty.p)
    assert.equal(own(loop.dev), [0, 0])
    assert.equal(empty.warnings(), [`slapos[${process.pid}] WARNING Disk ${loop.dev} not in allowed disk list \n`])

    const elsewhere = partition(dir, 'slappart1')
    elsewhere.request([{ disk: loop.dev }])
    await instance(devperm(`\n  ${other.dev}  \n\n/dev/zram99`), elsewhere.p)
    assert.equal(own(loop.dev), [0, 0])
    assert.equal(elsewhere.warnings(), [`slapos[${process.pid}] WARNING Disk ${loop.dev} not in allowed disk list ${other.dev}, /dev/zram99\n`])

    const allowed = partition(dir, 'slappart2')
    allowed.request([{ disk: loop.dev }])
    await instance(devperm(`${other.dev}\n  ${loop.dev}\n`), allowed.p)
    assert.equal(own(loop.dev), [NOBODY, diskGroupGid()])
    assert.equal(own(other.dev), [0, 0], 'the other allowed device was not asked for')
    assert.is(transfers(allowed).length, 1)
  })
})

test('a device the partition uid owns is left alone; devices lsblk does not list are refused (17)', async () => {
  if (!isRoot) return skip('needs root (losetup, mknod, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    // owned by the user already, with another group: not touched (the original compares the uid)
    lchownSync(loop.dev, NOBODY, 0)
    const t = partition(dir)
    const nullBefore = own('/dev/null')
    // a node of the same loop device outside /dev (root made it; lsblk does not list it)
    const st = statSync(loop.dev)
    const major = Math.floor(st.rdev / 256) & 0xfff
    const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)
    const alias = join(dir, 'alias')
    sh(['mknod', alias, 'b', String(major), String(minor)])
    const plain = join(dir, 'plain-file')
    writeFileSync(plain, 'x')
    t.request([{ disk: loop.dev }, { disk: '/dev/null' }, { disk: alias }, { disk: plain }])
    await instance(devperm(), t.p)
    assert.equal(own(loop.dev), [NOBODY, 0], "already the user's: unchanged")
    assert.equal(own('/dev/null'), nullBefore)
    assert.equal(own(alias), [0, 0])
    assert.equal(own(plain), [0, 0])
    assert.equal(transfers(t), [])
    const w = t.warnings()
    assert.is(w.length, 3, w.join(''))
    assert.match(w[0] ?? '', /WARNING Disk '\/dev\/null' is not detected by lsblk list \['/)
    assert.ok(w[0]?.includes(`'${loop.dev}'`), 'the list shows the devices lsblk found')
    assert.ok(w[1]?.includes(`Disk '${alias}' is not detected by lsblk list [`))
    assert.ok(w[2]?.includes(`Disk '${plain}' is not detected by lsblk list [`))
  })
})

test('invalid JSON, a non-list and bad entries are warnings; the good entries still apply (18)', async () => {
  if (!isRoot) return skip('needs root (losetup, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    lchownSync(loop.dev, 0, 0)
    const t = partition(dir)

    t.request(`[{"disk": "${loop.dev}"`)
    await instance(devperm(), t.p)
    assert.equal(own(loop.dev), [0, 0])
    assert.is(t.warnings().length, 1)
    assert.match(t.warnings()[0] ?? '', /WARNING Bad disk configuration file: /)

    t.lines.length = 0
    t.request({ disk: loop.dev })
    await instance(devperm(), t.p)
    assert.equal(own(loop.dev), [0, 0])
    assert.equal(t.warnings(), [`slapos[${process.pid}] WARNING Bad disk configuration file: not a JSON list\n`])

    t.lines.length = 0
    t.request([1, 'x', { other: 1 }, { disk: 5 }, { disk: 'dev/relative' }, { disk: '/dev/x\nslapos[1] ERROR forged' }, { disk: loop.dev }])
    await instance(devperm(), t.p)
    assert.equal(own(loop.dev), [NOBODY, diskGroupGid()], 'the valid entry was applied')
    const w = t.warnings()
    assert.is(w.length, 7, w.join(''))
    assert.ok(w[0]?.includes('Bad disk configuration entry (not an object): 1'))
    assert.ok(w[1]?.includes('Bad disk configuration entry (not an object): "x"'))
    assert.ok(w[2]?.includes('Disk is None: [1,"x",{"other":1}'))
    assert.ok(w[3]?.includes('Bad disk configuration entry (disk must be an absolute path): {"disk":5}'))
    assert.ok(w[4]?.includes('Bad disk configuration entry (disk must be an absolute path): {"disk":"dev/relative"}'))
    assert.ok(w[5]?.includes(`Disk '/dev/x\\nslapos[1] ERROR forged' does not exist`), w[5])
    assert.ok(w[6]?.includes('Transfer ownership'))
    assert.ok(!t.lines.join('').split('\n').some((l) => l.startsWith('slapos[1]')), 'no forged log line')
  })
})

test('.slapos-disk-permission must be a regular file of at most 64 KiB: a link, a FIFO, a big file are refused', async () => {
  if (!isRoot) return skip('needs root (losetup, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    lchownSync(loop.dev, 0, 0)
    const t = partition(dir)
    const file = join(t.p.path, '.slapos-disk-permission')
    // a root file the user could not write, reached through the user's link
    const elsewhere = join(dir, 'root-file.json')
    writeFileSync(elsewhere, JSON.stringify([{ disk: loop.dev }]))
    symlinkSync(elsewhere, file)
    await instance(devperm(), t.p)
    assert.equal(own(loop.dev), [0, 0])
    assert.equal(t.warnings(), [`slapos[${process.pid}] WARNING Bad disk configuration file: .slapos-disk-permission it is not a regular file (a symbolic link)\n`])

    t.lines.length = 0
    sh(['rm', file])
    sh(['mkfifo', file])
    await instance(devperm(), t.p)
    assert.equal(t.warnings(), [`slapos[${process.pid}] WARNING Bad disk configuration file: .slapos-disk-permission it is not a regular file\n`])

    t.lines.length = 0
    sh(['rm', file])
    const padded = JSON.stringify([{ disk: loop.dev, pad: 'x'.repeat(MAX_DISK_FILE_BYTES) }])
    t.request(padded)
    await instance(devperm(), t.p)
    assert.equal(t.warnings(), [`slapos[${process.pid}] WARNING Bad disk configuration file: .slapos-disk-permission it is larger than 65536 bytes\n`])
    assert.equal(own(loop.dev), [0, 0])

    t.lines.length = 0
    sh(['rm', file])
    await instance(devperm(), t.p)
    assert.equal(t.lines, [], 'no file: nothing, not even lsblk')
  })
})

test('a mounted device, a device with a mounted partition are refused; a free partition beside them is given', async () => {
  if (!isRoot) return skip('needs root (losetup, mkfs.ext4, unshare, mount)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const whole = await attachLoop(undo, dir, { mkfs: 'ext4' })
    const split = await attachLoop(undo, dir, { partitions: true })
    const [p1, p2] = split.parts as [string, string]
    sh(['mkfs.ext4', '-q', '-F', p1])
    for (const d of [whole.dev, split.dev, p1, p2]) lchownSync(d, 0, 0)
    const ns = await mountNamespace(undo)
    const mnt1 = join(dir, 'mnt1')
    const mnt2 = join(dir, 'mnt2')
    mkdirSync(mnt1)
    mkdirSync(mnt2)
    sh(['nsenter', '-t', String(ns.pid), '-m', 'mount', whole.dev, mnt1])
    sh(['nsenter', '-t', String(ns.pid), '-m', 'mount', p1, mnt2])
    const t = partition(dir)
    t.request([{ disk: whole.dev }, { disk: split.dev }, { disk: p1 }, { disk: p2 }])
    await instance(devperm(undefined, ns.runner), t.p)
    for (const d of [whole.dev, split.dev, p1]) assert.equal(own(d), [0, 0], `${d} stays root's`)
    assert.equal(own(p2), [NOBODY, diskGroupGid()], 'the free partition is given')
    const w = t.warnings()
    assert.is(w.length, 4, w.join(''))
    assert.ok(w[0]?.includes(`Disk '${whole.dev}' is mounted on ${mnt1}: it stays with the host`), w[0])
    assert.ok(w[1]?.includes(`Disk '${split.dev}' has a partition ${p1} that is mounted on ${mnt2}: it stays with the host`), w[1])
    assert.ok(w[2]?.includes(`Disk '${p1}' is mounted on ${mnt2}: it stays with the host`), w[2])
    assert.ok(w[3]?.includes(`Transfer ownership of ${p2} to nobody`), w[3])
  })
})

test('a loop device in use as swap is refused', async () => {
  if (!isRoot) return skip('needs root (losetup, mkswap, swapon)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir, { mkfs: 'swap' })
    lchownSync(loop.dev, 0, 0)
    sh(['swapon', loop.dev])
    undo.push(() => void sh(['swapoff', loop.dev]))
    const t = partition(dir)
    t.request([{ disk: loop.dev }])
    await instance(devperm(), t.p)
    assert.equal(own(loop.dev), [0, 0])
    assert.equal(t.warnings(), [`slapos[${process.pid}] WARNING Disk '${loop.dev}' is used as swap: it stays with the host\n`])
  })
})

test('lsblk failing: logged as the original, every disk refused', async () => {
  if (!isRoot) return skip('needs root (losetup, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    lchownSync(loop.dev, 0, 0)
    const t = partition(dir)
    t.request([{ disk: loop.dev }])
    // the real lsblk, given an option it does not know
    const failing: Runner = { run: (argv, o) => realRunner.run([...argv, '--no-such-option'], o) }
    await instance(devperm(undefined, failing), t.p)
    assert.equal(own(loop.dev), [0, 0])
    const text = t.lines.join('')
    assert.match(text, / INFO lsblk call failed\n/)
    assert.match(text, / INFO lsblk output not supported\n/)
    assert.ok(text.includes(`WARNING Disk '${loop.dev}' is not detected by lsblk list []`), text)
  })
})

test('a device another partition user owns is refused, naming its uid; partitions cannot take each other\'s disks', async () => {
  if (!isRoot) return skip('needs root (losetup, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    lchownSync(loop.dev, 0, 0)
    const a = partition(dir, 'slappart0')
    const b = partition(dir, 'slappart1', STRANGER)
    a.request([{ disk: loop.dev }])
    b.request([{ disk: loop.dev }])
    // both name the same disk, no allowed list: the first one gets it, and keeps it
    for (let run = 0; run < 2; run++) {
      await instance(devperm(), a.p)
      await instance(devperm(), b.p)
    }
    assert.equal(own(loop.dev), [NOBODY, diskGroupGid()], 'still the first partition user\'s')
    assert.is(transfers(a).length, 1, 'given once')
    assert.equal(transfers(b), [])
    const refusal = `slapos[${process.pid}] WARNING Disk '${loop.dev}' is owned by uid ${NOBODY}, not root: nothing changed (if it is free, give it back with chown root:disk)\n`
    assert.equal(b.warnings(), [refusal, refusal])
    // the same with the disk allowed to everyone: the list does not override another user's ownership
    b.lines.length = 0
    await instance(devperm(loop.dev), b.p)
    assert.equal(b.warnings(), [refusal])
    assert.equal(own(loop.dev), [NOBODY, diskGroupGid()])
  })
})

test('unmounted storage (file system, swap signature, on a partition) is refused unless allowed-disk-for-vm lists it', async () => {
  if (!isRoot) return skip('needs root (losetup, mkfs.ext4, mkswap, partx, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const fs = await attachLoop(undo, dir, { mkfs: 'ext4' })
    const swap = await attachLoop(undo, dir, { mkfs: 'swap' })
    const split = await attachLoop(undo, dir, { partitions: true })
    const bare = await attachLoop(undo, dir)
    const [p1, p2] = split.parts as [string, string]
    sh(['mkfs.ext4', '-q', '-F', p1])
    for (const d of [fs.dev, swap.dev, split.dev, p1, p2, bare.dev]) lchownSync(d, 0, 0)
    const t = partition(dir)
    t.request([{ disk: fs.dev }, { disk: swap.dev }, { disk: split.dev }, { disk: p1 }, { disk: p2 }, { disk: bare.dev }])
    await instance(devperm(), t.p)
    for (const d of [fs.dev, swap.dev, split.dev, p1]) assert.equal(own(d), [0, 0], `${d} stays root's`)
    assert.equal(own(p2), [NOBODY, diskGroupGid()], 'the partition without a signature is given')
    assert.equal(own(bare.dev), [NOBODY, diskGroupGid()], 'a blank disk is given')
    const hint = ': it stays with the host (list it in allowed-disk-for-vm to give it anyway)'
    const w = t.warnings().map((l) => l.replace(/^slapos\[\d+\] WARNING /, '').trimEnd())
    assert.equal(w, [
      `Disk '${fs.dev}' has a signature (ext4)${hint}`,
      `Disk '${swap.dev}' has a signature (swap)${hint}`,
      `Disk '${split.dev}' has a partition ${p1} that has a signature (ext4)${hint}`,
      `Disk '${p1}' has a signature (ext4)${hint}`,
      `Transfer ownership of ${p2} to nobody`,
      `Transfer ownership of ${bare.dev} to nobody`,
    ])

    // the operator lists the ext4 device: it is given, the others still are not
    const listed = partition(dir, 'slappart1')
    listed.request([{ disk: fs.dev }, { disk: swap.dev }])
    await instance(devperm(`${fs.dev}\n${swap.dev}`), listed.p)
    assert.equal(own(fs.dev), [NOBODY, diskGroupGid()], 'listed: given')
    assert.equal(own(swap.dev), [NOBODY, diskGroupGid()], 'listed, not in use as swap: given')
    assert.is(transfers(listed).length, 2)
  })
})

test('blkid failing: the device is refused, saying it cannot be probed', async () => {
  if (!isRoot) return skip('needs root (losetup, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    lchownSync(loop.dev, 0, 0)
    const t = partition(dir)
    t.request([{ disk: loop.dev }])
    // the real blkid, given an option it does not know (exit 1); lsblk as it is
    const failing: Runner = { run: (argv, o) => realRunner.run(argv[0] === 'blkid' ? ['blkid', '--no-such-option', ...argv.slice(1)] : argv, o) }
    await instance(devperm(undefined, failing), t.p)
    assert.equal(own(loop.dev), [0, 0])
    const w = t.warnings()
    assert.is(w.length, 1, w.join(''))
    assert.match(w[0] ?? '', new RegExp(`WARNING Disk '${loop.dev}' cannot be probed \\(blkid -p exit 1: blkid: unrecognized option '--no-such-option'\\): it stays with the host`))
  })
})

test('device numbers and sysfs holders of a real loop device; a holder is read from a sysfs-shaped tree', async () => {
  if (!isRoot) return skip('needs root (losetup)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const loop = await attachLoop(undo, dir)
    const rdev = lstatSync(loop.dev).rdev
    assert.is(devNumbers(rdev), readFileSync(`/sys/class/block/${basename(loop.dev)}/dev`, 'utf8').trim())
    assert.equal(holdersOf(rdev), [], 'nothing is built on a fresh loop device')
    // this machine has no device-mapper or md driver: a real holder cannot be made here
    const sys = join(dir, 'sys')
    mkdirSync(join(sys, 'dev', 'block', devNumbers(rdev), 'holders', 'dm-7'), { recursive: true })
    assert.equal(holdersOf(rdev, sys), ['dm-7'])
  })
  // the large-number encoding (major and minor above 12 and 20 bits), as glibc's makedev
  const makedev = (major: bigint, minor: bigint) =>
    Number(((major & 0xfffn) << 8n) | ((major & ~0xfffn) << 32n) | (minor & 0xffn) | ((minor & ~0xffn) << 12n))
  assert.is(devNumbers(makedev(259n, 1048575n)), '259:1048575')
  assert.is(devNumbers(makedev(5000n, 300n)), '5000:300')
  assert.is(devNumbers(makedev(8n, 16n)), '8:16')
})

test('report gives back every block device the partition uid owns, without its file, never through a link, never for root', async () => {
  if (!isRoot) return skip('needs root (losetup, chown)')
  await withCleanup(async (undo) => {
    const dir = tempDir('slapos-devperm-')
    const given = await attachLoop(undo, dir)
    const part = await attachLoop(undo, dir, { partitions: true })
    const others = await attachLoop(undo, dir)
    const roots = await attachLoop(undo, dir)
    const [p1] = part.parts as [string, string]
    restoreOwner(undo, p1)
    lchownSync(given.dev, 0, 0)
    lchownSync(p1, 0, 0)
    lchownSync(others.dev, STRANGER2, 0)
    lchownSync(roots.dev, 0, 0)
    const t = partition(dir, 'slappart0', STRANGER)
    t.request([{ disk: given.dev }, { disk: p1 }])
    await instance(devperm(), t.p)
    assert.equal(own(given.dev), [STRANGER, diskGroupGid()])
    assert.equal(own(p1), [STRANGER, diskGroupGid()])
    // the user deletes its file before destruction; it also planted a link in /dev (as if
    // it could) pointing at a root device
    unlinkSync(join(t.p.path, '.slapos-disk-permission'))
    const link = `/dev/slapos-test-devperm-${process.pid}`
    symlinkSync(roots.dev, link)
    undo.push(() => rmSync(link, { force: true }))
    lchownSync(link, STRANGER, STRANGER)
    t.lines.length = 0
    const m = devperm()
    assert.ok(m.report, 'devperm has a report hook')
    await m.report(t.p)
    assert.equal(own(given.dev), [0, diskGroupGid()], 'given back to root:disk')
    assert.equal(own(p1), [0, diskGroupGid()], 'the partition too')
    assert.equal(own(others.dev), [STRANGER2, 0], "another partition user's device is untouched")
    assert.equal(own(roots.dev), [0, 0], 'nothing through the link')
    assert.equal(own(link), [STRANGER, STRANGER], 'the link is not a block device: left')
    const info = t.lines.filter((l) => l.includes(' INFO ')).map((l) => l.replace(/^slapos\[\d+\] INFO /, '').trimEnd())
    assert.equal(info.sort(), [given.dev, p1].sort().map((d) => `Giving ${d} back to root: slappart0 is being destroyed`))

    // a partition of root (uid 0): nothing is ever "given back"
    const r = partition(dir, 'slappart9', 0)
    await m.report(r.p)
    assert.equal(own(roots.dev), [0, 0], 'root:root stays root:root')
    assert.equal(r.lines, [])
  })
})

test.run()
