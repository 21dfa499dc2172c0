// destroyPartition and the usage-report helpers of grid-report.ts on real temp partitions
// (grid.md §5.1, §5.2): retention lock, sbin/destroy as the partition user and its failure,
// the wipe (directory kept with owner and mode, read-only content, links not followed),
// resuming an interrupted destruction, report scripts and usage XML checks.
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import type { Owner } from '../src/grid-common.ts'
import { deploymentRecordFile, promiseStatusFile } from '../src/grid-plan.ts'
import {
  buildUsageJournal,
  checkComputerUsage,
  checkPartitionUsage,
  collectUsage,
  destroyMarkerPath,
  DestroyError,
  destroyPartition,
  emptyDirectory,
  RETENTION_DATE_FILE,
  RETENTION_DELAY_FILE,
  retentionLock,
  runReportScripts,
  type DestroyDeps,
} from '../src/grid-report.ts'
import { createLogger } from '../src/log.ts'
import { realRunner } from '../src/system.ts'
import { skip, tempDir } from './helpers.ts'

const NOBODY: Owner = { uid: 65534, gid: 65534, name: 'nobody', home: '/nonexistent', groups: [] }
const log = createLogger({ level: 'critical' })

interface Fixture {
  root: string
  path: string
  repo: string
  /** a software release directory the partition links to: must survive */
  sr: string
  /** world-writable directory outside the partition, for scripts to leave traces */
  outside: string
  removed: string[]
}

/** A partition as format + node instance leave it, owned by nobody, mode 0750. */
function partition(id = 'slappart0'): Fixture {
  const root = tempDir('slapos-destroy-')
  chmodSync(root, 0o755)
  const path = join(root, id)
  const repo = join(root, 'cert')
  const sr = join(root, 'software', 'abc')
  const outside = join(root, 'outside')
  for (const d of [path, repo, sr, outside]) mkdirSync(d, { recursive: true })
  chmodSync(outside, 0o777)
  writeFileSync(join(sr, 'instance.cfg'), '[buildout]\n')
  writeFileSync(join(repo, `${id}.crt`), 'CERT')
  writeFileSync(join(repo, `${id}.key`), 'KEY')
  writeFileSync(join(repo, 'slappart9.crt'), 'OTHER')
  symlinkSync(sr, join(path, 'software_release'))
  writeFileSync(join(path, '.slapos-resource'), '{}')
  writeFileSync(join(path, 'buildout.cfg'), '[buildout]\n')
  writeFileSync(join(path, '.timestamp'), '123')
  mkdirSync(join(path, 'etc', 'service'), { recursive: true })
  writeFileSync(join(path, 'etc', 'service', 'daemon'), '#!/bin/sh\n', { mode: 0o755 })
  mkdirSync(join(path, 'srv', 'deep', 'er'), { recursive: true })
  writeFileSync(join(path, 'srv', 'deep', 'er', 'data'), 'x'.repeat(1000))
  // a link to a file outside: removed, its target kept
  writeFileSync(join(outside, 'precious'), 'keep me')
  symlinkSync(join(outside, 'precious'), join(path, 'srv', 'link-out'))
  // read-only content, as some software releases leave it
  mkdirSync(join(path, 'ro', 'sub'), { recursive: true })
  writeFileSync(join(path, 'ro', 'sub', 'file'), 'ro', { mode: 0o400 })
  chmodSync(join(path, 'ro', 'sub'), 0o500)
  chmodSync(join(path, 'ro'), 0o500)
  chownTree(path, NOBODY.uid, NOBODY.gid)
  chmodSync(path, 0o750)
  return { root, path, repo, sr, outside, removed: [] }
}

function chownTree(p: string, uid: number, gid: number): void {
  const st = lstatSync(p)
  if (st.isDirectory()) for (const n of readdirSync(p)) chownTree(join(p, n), uid, gid)
  lchownSync(p, uid, gid)
}

function deps(f: Fixture, now = new Date('2026-01-01T00:00:00Z')): DestroyDeps {
  return {
    runner: realRunner,
    log,
    now: () => now,
    env: { PATH: '/usr/bin:/bin' },
    rootCheck: true,
    removeServices: async (id) => void f.removed.push(id),
  }
}

/**
 * A partition user's racing loop (python3 argv: NAME TARGET): NAME exchanged with a link to
 * TARGET (renameat2 RENAME_EXCHANGE, atomic, both ways), the link made again when it is gone.
 */
const SWAP_LOOP = `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
name, target = sys.argv[1], sys.argv[2]
link = os.path.join(os.path.dirname(name), '.' + os.path.basename(name) + '.lnk')
while True:
    if not os.path.lexists(link):
        try: os.symlink(target, link)
        except OSError: pass
    for _ in range(100): libc.renameat2(-100, name.encode(), -100, link.encode(), 2)
`

/** Resolves once `check()` is true (polled every 10 ms, 10 s at most). */
async function waitUntil(check: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !check(); i++) await new Promise((r) => setTimeout(r, 10))
}

function target(f: Fixture, id = 'slappart0') {
  return { id, path: f.path, owner: NOBODY, certificateRepositoryPath: f.repo }
}

const destroy = suite('destroyPartition')

destroy('wipes the content, keeps the directory (owner, 0750), removes certificates, link and services', async () => {
  const f = partition()
  chmodSync(f.path, 0o755) // a wrong mode is put back to 0750
  const out = await destroyPartition(target(f), deps(f))
  assert.equal(out, { done: true })
  assert.equal(readdirSync(f.path), [])
  const st = statSync(f.path)
  assert.is(st.mode & 0o7777, 0o750)
  assert.is(st.uid, NOBODY.uid)
  assert.is(st.gid, NOBODY.gid)
  assert.not.ok(existsSync(join(f.repo, 'slappart0.crt')))
  assert.not.ok(existsSync(join(f.repo, 'slappart0.key')))
  assert.ok(existsSync(join(f.repo, 'slappart9.crt')), 'other partitions keep their certificates')
  assert.ok(existsSync(join(f.sr, 'instance.cfg')), 'the software release is not followed through the link')
  assert.is(readFileSync(join(f.outside, 'precious'), 'utf8'), 'keep me')
  assert.equal(f.removed, ['slappart0'])
})

destroy('read-only content owned by the partition user is removed by that user (no root rights)', async () => {
  const f = partition()
  // run the wipe with nobody's rights: only its own chmod can make ro/ writable again
  const { seteuid, setegid } = process
  if (!seteuid || !setegid) throw new Error('needs POSIX credentials')
  setegid(NOBODY.gid)
  seteuid(NOBODY.uid)
  try {
    await emptyDirectory(f.path)
  } finally {
    seteuid(0)
    setegid(0)
  }
  assert.equal(readdirSync(f.path), [])
  assert.is(statSync(f.path).mode & 0o7777, 0o750)
})

destroy('sbin/destroy runs as the partition user in the partition; the wipe follows', async () => {
  const f = partition()
  mkdirSync(join(f.path, 'sbin'))
  writeFileSync(join(f.path, 'sbin', 'destroy'), `#!/bin/sh\necho "$(id -u) $(pwd) $HOME" > ${f.outside}/destroy-ran\n`, { mode: 0o755 })
  chownTree(join(f.path, 'sbin'), NOBODY.uid, NOBODY.gid)
  const out = await destroyPartition(target(f), deps(f))
  assert.equal(out, { done: true })
  assert.is(readFileSync(join(f.outside, 'destroy-ran'), 'utf8').trim(), `65534 ${f.path} /nonexistent`)
  assert.equal(readdirSync(f.path), [])
})

destroy('a failing sbin/destroy keeps the partition, its certificates and services', async () => {
  const f = partition()
  mkdirSync(join(f.path, 'sbin'))
  writeFileSync(join(f.path, 'sbin', 'destroy'), '#!/bin/sh\necho cannot detach the disk >&2\nexit 3\n', { mode: 0o755 })
  chownTree(join(f.path, 'sbin'), NOBODY.uid, NOBODY.gid)
  const before = readdirSync(f.path).sort()
  try {
    await destroyPartition(target(f), deps(f))
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.instance(err, DestroyError)
    assert.is((err as DestroyError).message, `Failed to destroy Computer Partition in '${f.path}'.`)
    assert.match((err as DestroyError).output, 'cannot detach the disk')
  }
  assert.equal(readdirSync(f.path).sort(), before)
  assert.ok(existsSync(join(f.repo, 'slappart0.crt')))
  assert.ok(!existsSync(destroyMarkerPath(target(f))))
  assert.equal(f.removed, [])
})

destroy('retention: the first attempt writes the lock date and keeps everything; after the date it goes', async () => {
  const f = partition()
  writeFileSync(join(f.path, RETENTION_DELAY_FILE), '2.0')
  mkdirSync(join(f.path, 'sbin'))
  writeFileSync(join(f.path, 'sbin', 'destroy'), `#!/bin/sh\ntouch ${f.outside}/destroy-ran\n`, { mode: 0o755 })
  chownTree(f.path, NOBODY.uid, NOBODY.gid)
  const t0 = new Date('2026-01-01T00:00:00Z')
  const first = await destroyPartition(target(f), deps(f, t0))
  assert.is(first.done, false)
  const date = readFileSync(join(f.path, RETENTION_DATE_FILE), 'utf8')
  assert.is(date, `${t0.getTime() / 1000 + 2 * 86400}.0`, 'Python float text of now + 2 days')
  assert.ok(existsSync(join(f.path, 'buildout.cfg')))
  assert.not.ok(existsSync(join(f.outside, 'destroy-ran')), 'sbin/destroy waits for the retention too')
  // one day later: still retained, the date does not move
  const second = await destroyPartition(target(f), deps(f, new Date(t0.getTime() + 86400_000)))
  assert.is(second.done, false)
  assert.is(readFileSync(join(f.path, RETENTION_DATE_FILE), 'utf8'), date)
  // after the date
  const third = await destroyPartition(target(f), deps(f, new Date(t0.getTime() + 2 * 86400_000 + 1000)))
  assert.equal(third, { done: true })
  assert.ok(existsSync(join(f.outside, 'destroy-ran')))
  assert.equal(readdirSync(f.path), [])
})

destroy('retention files are read as the partition user wrote them: a link or a FIFO is not followed', async () => {
  const f = partition()
  // a root-only file elsewhere that holds a number: never read through the user's link
  writeFileSync(join(f.outside, 'root-only'), '30.0', { mode: 0o600 })
  symlinkSync(join(f.outside, 'root-only'), join(f.path, RETENTION_DELAY_FILE))
  spawnSync('mkfifo', [join(f.path, RETENTION_DATE_FILE)])
  const out = await destroyPartition(target(f), deps(f))
  assert.equal(out, { done: true }, 'no retention read from the link, no wait on the FIFO')
  assert.is(readFileSync(join(f.outside, 'root-only'), 'utf8'), '30.0')
})

destroy("the partition's user putting a hard link to root's file under the retention date's temporary name: that file is not given to the user", async () => {
  if (process.getuid?.() !== 0) return skip('needs root')
  const f = partition()
  writeFileSync(join(f.path, RETENTION_DELAY_FILE), '2.0')
  // a file of root's the user may link to (read and write for all: fs.protected_hardlinks
  // allows that link)
  const victim = join(f.outside, 'shared-log')
  writeFileSync(victim, 'root\n', { mode: 0o666 })
  chmodSync(victim, 0o666)
  // the user (nobody): the moment the temporary file appears, a hard link to root's file is
  // renamed over it
  const tmp = join(f.path, `${RETENTION_DATE_FILE}.tmp-${process.pid}`)
  const racer = spawn(
    '/usr/bin/python3',
    ['-c', `
import os, sys
tmp, victim = sys.argv[1], sys.argv[2]
staged = os.path.join(os.path.dirname(tmp), '.staged')
ino = os.stat(victim).st_ino
while True:
    try:
        if not os.path.lexists(staged): os.link(victim, staged)
        if os.lstat(tmp).st_ino != ino: os.rename(staged, tmp)
    except OSError: pass
`, tmp, victim],
    { stdio: 'ignore', uid: NOBODY.uid, gid: NOBODY.gid },
  )
  try {
    await waitUntil(() => existsSync(join(f.path, '.staged')))
    for (let i = 0; i < 500 && statSync(victim).uid === 0; i++) {
      rmSync(join(f.path, RETENTION_DATE_FILE), { force: true })
      try {
        retentionLock({ path: f.path, owner: NOBODY }, new Date('2026-01-01T00:00:00Z'))
      } catch {
        // the user took the temporary name first: its own partition's lock is not written
      }
      await new Promise((r) => setImmediate(r))
    }
  } finally {
    racer.kill('SIGKILL')
  }
  const st = statSync(victim)
  assert.equal([st.uid, st.gid], [0, 0])
})

destroy('retention delay 0 (what node instance writes by default) destroys at once, with the records node instance keeps of it', async () => {
  const f = partition()
  writeFileSync(join(f.path, RETENTION_DELAY_FILE), '0.0')
  mkdirSync(join(f.root, 'var', 'run'), { recursive: true })
  const records = [deploymentRecordFile(f.root, 'slappart0'), promiseStatusFile(f.root, 'slappart0'), promiseStatusFile(f.root, 'slappart1')]
  for (const r of records) writeFileSync(r, 'ok')
  const out = await destroyPartition(target(f), deps(f))
  assert.equal(out, { done: true })
  assert.equal(readdirSync(f.path), [])
  assert.equal(records.map((r) => existsSync(r)), [false, false, true])
})

destroy('an interrupted destruction resumes: no retention, no second sbin/destroy, then done', async () => {
  const f = partition()
  // state left by a run killed in the middle of the wipe: marker present, some content gone,
  // a retention delay that would lock it again, and an sbin/destroy that would now fail
  mkdirSync(join(f.root, 'var', 'run'), { recursive: true })
  writeFileSync(destroyMarkerPath(target(f)), 'x')
  writeFileSync(join(f.path, RETENTION_DELAY_FILE), '5.0')
  mkdirSync(join(f.path, 'sbin'))
  writeFileSync(join(f.path, 'sbin', 'destroy'), '#!/bin/sh\nexit 1\n', { mode: 0o755 })
  const out = await destroyPartition(target(f), deps(f))
  assert.equal(out, { done: true })
  assert.equal(readdirSync(f.path), [])
  assert.equal(f.removed, ['slappart0'])
  assert.not.ok(existsSync(destroyMarkerPath(target(f))))
})

destroy('a marker written by the instance inside its partition changes nothing: retention still holds', async () => {
  const f = partition()
  writeFileSync(join(f.path, RETENTION_DELAY_FILE), '3.0')
  writeFileSync(join(f.path, '.slapos-destroy-in-progress'), 'x')
  writeFileSync(join(f.path, 'slappart0.destroying'), 'x')
  const out = await destroyPartition(target(f), deps(f))
  assert.is(out.done, false)
  assert.ok(existsSync(join(f.path, 'buildout.cfg')))
})

destroy('a failure while removing services leaves the marker, so the next run finishes the job', async () => {
  const f = partition()
  const d = deps(f)
  d.removeServices = async () => {
    throw new Error('supervisord went away')
  }
  await destroyPartition(target(f), d).then(
    () => assert.unreachable('should throw'),
    (e: Error) => assert.match(e.message, 'supervisord went away'),
  )
  assert.equal(readdirSync(f.path), [])
  assert.ok(existsSync(destroyMarkerPath(target(f))), 'the marker stays outside the partition')
  const out = await destroyPartition(target(f), deps(f))
  assert.equal(out, { done: true })
  assert.equal(readdirSync(f.path), [])
})

destroy('as root the wipe stays on the partition file system: a mount inside fails the destruction, the next run finishes', async () => {
  const f = partition()
  const mnt = join(f.path, 'srv', 'volume')
  mkdirSync(mnt, { recursive: true })
  const mount = spawnSync('mount', ['-t', 'tmpfs', 'none', mnt])
  if (mount.status !== 0) return // no mount rights here: nothing to show
  try {
    writeFileSync(join(mnt, 'on-the-volume'), 'kept')
    try {
      await destroyPartition(target(f), deps(f))
      assert.unreachable('should have thrown')
    } catch (err) {
      assert.match((err as Error).message, `Could not empty ${f.path}: srv remain`)
    }
    assert.is(readFileSync(join(mnt, 'on-the-volume'), 'utf8'), 'kept', 'nothing deleted across the mount')
    assert.ok(existsSync(destroyMarkerPath(target(f))))
  } finally {
    spawnSync('umount', [mnt])
  }
  const out = await destroyPartition(target(f), deps(f))
  assert.equal(out, { done: true })
  assert.equal(readdirSync(f.path), [])
})

destroy('DATA/ links are removed and their storage emptied (the storage directory stays)', async () => {
  const f = partition()
  const storage = join(f.root, 'storage')
  mkdirSync(join(storage, 'data1', 'slappart0', 'db'), { recursive: true })
  writeFileSync(join(storage, 'data1', 'slappart0', 'db', 'table'), 'rows')
  mkdirSync(join(storage, 'data1', 'slappart9'), { recursive: true })
  writeFileSync(join(storage, 'data1', 'slappart9', 'other'), 'kept')
  mkdirSync(join(f.path, 'DATA'))
  symlinkSync(join(storage, 'data1', 'slappart0'), join(f.path, 'DATA', 'data1'))
  const out = await destroyPartition({ ...target(f), instanceStorageHome: storage }, deps(f))
  assert.equal(out, { done: true })
  assert.equal(readdirSync(f.path), [])
  assert.equal(readdirSync(join(storage, 'data1', 'slappart0')), [])
  assert.equal(readdirSync(join(storage, 'data1', 'slappart9')), ['other'])
})

destroy('links planted by the instance lead nowhere: DATA as a link, a link in DATA, the retention temp file', async () => {
  const f = partition()
  const storage = join(f.root, 'storage')
  mkdirSync(storage)
  // DATA itself a link to a directory outside: neither listed nor emptied
  writeFileSync(join(f.outside, 'a'), 'kept')
  symlinkSync(f.outside, join(f.path, 'DATA'))
  // the temp name of the retention date file pointing at a file outside
  writeFileSync(join(f.outside, 'victim'), 'original')
  writeFileSync(join(f.path, RETENTION_DELAY_FILE), '1.0')
  symlinkSync(join(f.outside, 'victim'), join(f.path, `${RETENTION_DATE_FILE}.tmp-${process.pid}`))
  const first = await destroyPartition({ ...target(f), instanceStorageHome: storage }, deps(f))
  assert.is(first.done, false)
  assert.is(readFileSync(join(f.outside, 'victim'), 'utf8'), 'original')
  assert.ok(lstatSync(join(f.path, RETENTION_DATE_FILE)).isFile())
  const later = await destroyPartition({ ...target(f), instanceStorageHome: storage }, deps(f, new Date('2030-01-01T00:00:00Z')))
  assert.equal(later, { done: true })
  assert.equal(readdirSync(f.path), [])
  assert.is(readFileSync(join(f.outside, 'a'), 'utf8'), 'kept')
  assert.is(readFileSync(join(f.outside, 'victim'), 'utf8'), 'original')
})

destroy("the partition's user swapping DATA for a link while it is cleaned: root removes no link of the directory it leads to", async () => {
  if (process.getuid?.() !== 0) return skip('needs root')
  const f = partition()
  const storage = join(f.root, 'storage')
  mkdirSync(join(storage, 'data1', 'slappart0'), { recursive: true })
  // links of root's elsewhere (as /etc/localtime is), one of the name DATA holds
  const links = join(f.root, 'links')
  mkdirSync(links)
  for (const n of ['data1', ...Array.from({ length: 16 }, (_, i) => `l${i}`)]) symlinkSync('/usr/share/zoneinfo/UTC', join(links, n))
  const before = readdirSync(links).sort()
  // the user: DATA exchanged with a link to that directory (renameat2 RENAME_EXCHANGE, atomic)
  // over and over, as fast as it can
  const racer = spawn('python3', ['-c', SWAP_LOOP, join(f.path, 'DATA'), links], { stdio: 'ignore' })
  try {
    await waitUntil(() => existsSync(join(f.path, '.DATA.lnk')))
    for (let i = 0; i < 100 && readdirSync(links).length === before.length; i++) {
      // a DATA of the user's, made aside and moved in whole (what a disturbed wipe left under
      // the name, a link maybe, moved away first: the next wipe takes it)
      const staged = join(f.path, `DATA.${i}`)
      mkdirSync(staged)
      symlinkSync(join(storage, 'data1', 'slappart0'), join(staged, 'data1'))
      try {
        if (existsSync(join(f.path, 'DATA'))) renameSync(join(f.path, 'DATA'), join(f.path, `old.${i}`))
        renameSync(staged, join(f.path, 'DATA'))
        await destroyPartition({ ...target(f), instanceStorageHome: storage }, deps(f))
      } catch {
        // a run the user disturbed may fail: that is the user's own partition
      }
    }
  } finally {
    racer.kill('SIGKILL')
  }
  assert.equal(readdirSync(links).sort(), before)
})

destroy.run()

const usage = suite('usage reports')

const MOVEMENT = (ref: string, q: string) =>
  `<movement><resource>CPU Consumption</resource><title>CPU</title><reference>${ref}</reference><quantity>${q}</quantity><price>0.0</price><VAT>None</VAT><category>None</category></movement>`

usage('partition report: well-formed journal of movements accepted, the rest refused with a reason', () => {
  assert.is(checkPartitionUsage(`<?xml version="1.0"?><journal>${MOVEMENT('x', '1.5')}</journal>`), undefined)
  assert.match(checkPartitionUsage('<journal><movement>') ?? '', 'not well-formed')
  assert.match(checkPartitionUsage('<report/>') ?? '', 'root element is <report>')
  assert.match(checkPartitionUsage('<journal></journal>') ?? '', 'no <movement>')
  assert.match(checkPartitionUsage(`<journal>${MOVEMENT('x', 'lots')}</journal>`) ?? '', 'not a number')
  assert.match(checkPartitionUsage(`<journal><movement><a><b/></a></movement></journal>`) ?? '', 'child elements')
})

usage('journal: one transaction, references replaced by partition ids, text escaped, valid', () => {
  const j = buildUsageJournal(
    'COMP-1',
    [
      { partitionId: 'slappart0', xml: `<journal>${MOVEMENT('whatever', '2')}</journal>` },
      { partitionId: 'slappart1', xml: `<journal>${MOVEMENT('y', '3')}${MOVEMENT('z', '4')}</journal>`.replace('CPU</title>', 'CPU &amp; RAM</title>') },
    ],
    new Date(2026, 0, 2, 3, 4, 5),
  )
  assert.ok(j.startsWith('<?xml version="1.0"?><journal><transaction type="Sale Packing List"><title>Resource consumptions</title><start_date></start_date><stop_date>2026-01-02 at 03:04:05</stop_date><reference>COMP-1</reference>'))
  assert.is(j.match(/<movement>/g)?.length, 3)
  assert.match(j, '<reference>slappart0</reference><quantity>2</quantity>')
  assert.match(j, '<title>CPU &amp; RAM</title>')
  assert.not.match(j, 'whatever')
  assert.ok(j.endsWith('</transaction></journal>'))
  assert.is(checkComputerUsage(j), undefined)
})

usage('report scripts run as the partition user with a fresh path; valid XML collected, invalid kept', async () => {
  const f = partition()
  mkdirSync(join(f.path, 'etc', 'report'), { recursive: true })
  writeFileSync(join(f.path, 'etc', 'report', 'a-good'), `#!/bin/sh\n[ "$(pwd)" = "${f.path}/etc/report" ] || exit 9\n[ ! -e "$1" ] || exit 8\necho '<journal>${MOVEMENT('r', '1')}</journal>' > "$1"\n`, { mode: 0o755 })
  writeFileSync(join(f.path, 'etc', 'report', 'b-bad-xml'), `#!/bin/sh\necho '<journal><movement>' > "$1"\n`, { mode: 0o755 })
  writeFileSync(join(f.path, 'etc', 'report', 'c-fails'), '#!/bin/sh\nexit 1\n', { mode: 0o755 })
  chownTree(join(f.path, 'etc'), NOBODY.uid, NOBODY.gid)
  const failures = await runReportScripts({ id: 'slappart0', path: f.path, owner: NOBODY }, { runner: realRunner, log, env: { PATH: '/usr/bin:/bin' }, rootCheck: true })
  assert.equal(failures, ["Script 'c-fails' failed."])
  const xmlDir = join(f.path, 'var', 'xml_report')
  const files = readdirSync(xmlDir)
  assert.is(files.length, 2)
  for (const name of files) {
    assert.match(name, /^slapreport\.\w+$/)
    assert.is(statSync(join(xmlDir, name)).uid, NOBODY.uid, 'written by the partition user')
  }
  assert.is(statSync(xmlDir).uid, NOBODY.uid, 'var/xml_report made by the partition user')
  // a link to a file outside is not read (root could be made to send any file)
  writeFileSync(join(f.outside, 'secret.xml'), `<journal>${MOVEMENT('s', '9')}</journal>`)
  symlinkSync(join(f.outside, 'secret.xml'), join(xmlDir, 'zz-link'))
  const found = collectUsage(f.root, 'slappart0', log)
  assert.is(found.length, 1)
  assert.match(found[0]?.xml ?? '', '<quantity>1</quantity>')
  // nothing deleted yet: the caller deletes once the master has the journal
  assert.is(readdirSync(xmlDir).length, 3)
})

usage.run()
