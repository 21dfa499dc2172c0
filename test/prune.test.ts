// `slapos node prune` with the built binary on a real software root and shared parts tree
// (grid.md §9.2, checklist 122-124): what keeps a part, chains removed pass after pass,
// --dry-run, --additional-software-directory, nested nodes, and the 255 refusals.
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { skip, SLAPOS, slapos, slaposAsync, tempDir } from './helpers.ts'

interface Tree {
  dir: string
  cfg: string
  shared: string
  part(name: string, hash: string): string
  pidfile: string
}

/**
 *   software/aaa/.installed.cfg      -> gcc/G1, zlib/Z1
 *   software/bbb/bin/python          -> python/P1
 *   shared/python/P1/.slapos.recipe.cmmi.signature -> zlib/Z2   (kept through P1)
 *   shared/zlib/Z0                   unused
 *   shared/app/A1 -> lib/L1 -> base/B1 (.buildout-shared.json): a chain nobody uses
 *   shared/ro/R1                     unused, read-only inside
 *   shared/extra/E1                  used only by extra/ccc/.installed.cfg
 *   shared/nested/N1                 used only by a node nested in slappart0
 */
function tree(extraCfg = ''): Tree {
  const dir = tempDir('slapos-prune-')
  const software = join(dir, 'software')
  const shared = join(dir, 'shared')
  const instance = join(dir, 'instance')
  // 32 characters as real part hashes: a short one (`L1`) may occur by chance in the random
  // name of the test's temporary directory, which every signature's text contains
  const part = (name: string, hash: string) => join(shared, name, `${hash}${'0123456789abcdef'.repeat(2)}`.slice(0, 32))
  const mk = (name: string, hash: string, files: Record<string, string> = {}) => {
    const p = part(name, hash)
    mkdirSync(p, { recursive: true })
    writeFileSync(join(p, 'lib.so'), 'binary')
    for (const [f, text] of Object.entries(files)) writeFileSync(join(p, f), text)
    return p
  }
  mkdirSync(join(software, 'aaa'), { recursive: true })
  writeFileSync(join(software, 'aaa', '.installed.cfg'), `[gcc]\nlocation = ${part('gcc', 'G1')}\n[zlib]\nlocation = ${part('zlib', 'Z1')}\n`)
  mkdirSync(join(software, 'bbb', 'bin'), { recursive: true })
  writeFileSync(join(software, 'bbb', 'bin', 'python'), `#!/bin/sh\nexec ${part('python', 'P1')}/bin/python "$@"\n`)
  mk('gcc', 'G1')
  mk('zlib', 'Z1')
  mk('zlib', 'Z2')
  mk('zlib', 'Z0')
  mk('python', 'P1', { '.slapos.recipe.cmmi.signature': `zlib-location = ${part('zlib', 'Z2')}\n` })
  mk('app', 'A1', { '.slapos.recipe.cmmi.signature': `lib = ${part('lib', 'L1')}\n` })
  mk('lib', 'L1', { '.buildout-shared.json': JSON.stringify({ base: part('base', 'B1') }) })
  mk('base', 'B1')
  const ro = mk('ro', 'R1')
  mkdirSync(join(ro, 'share'))
  writeFileSync(join(ro, 'share', 'doc'), 'x', { mode: 0o444 })
  chmodSync(join(ro, 'share'), 0o555)
  chmodSync(ro, 0o555)
  mk('extra', 'E1')
  mkdirSync(join(dir, 'extra', 'ccc'), { recursive: true })
  writeFileSync(join(dir, 'extra', 'ccc', '.installed.cfg'), `[x]\nlocation = ${part('extra', 'E1')}\n`)
  mk('nested', 'N1')
  const nestedSoftware = join(instance, 'slappart0', 'srv', 'runner', 'software')
  mkdirSync(join(nestedSoftware, 'ddd'), { recursive: true })
  writeFileSync(join(nestedSoftware, 'ddd', '.installed.cfg'), `[n]\nlocation = ${part('nested', 'N1')}\n`)
  mkdirSync(join(instance, 'slappart0', 'srv', 'runner', 'instance'), { recursive: true })
  writeFileSync(
    join(instance, 'slappart0', 'srv', 'runner', 'slapos.cfg'),
    `[slapos]\nsoftware_root = ${nestedSoftware}\ninstance_root = ${join(instance, 'slappart0', 'srv', 'runner', 'instance')}\n`,
  )
  const pidfile = join(dir, 'run', 'slapgrid-sr.pid')
  const cfg = join(dir, 'slapos.cfg')
  writeFileSync(
    cfg,
    `[slapos]\ncomputer_id = c\nmaster_url = http://127.0.0.1:1/\nsoftware_root = ${software}\ninstance_root = ${instance}\nroot_check = false\n` +
      `pidfile_software = ${pidfile}\nshared_part_list =\n  ${join(dir, 'read-only-shared')}\n  ${shared}\n${extraCfg}`,
  )
  return { dir, cfg, shared, part, pidfile }
}

const KEPT = [['gcc', 'G1'], ['zlib', 'Z1'], ['zlib', 'Z2'], ['python', 'P1'], ['nested', 'N1']] as const
const CHAIN = [['app', 'A1'], ['lib', 'L1'], ['base', 'B1']] as const

const prune = suite('node prune (built binary)')

prune('removes unused parts, whole chains in repeated passes, read-only ones too; keeps what is mentioned anywhere', () => {
  const t = tree()
  const r = slapos(['node', 'prune', '--cfg', t.cfg, '--additional-software-directory', join(t.dir, 'extra')])
  assert.is(r.code, 0, r.stderr)
  for (const [n, h] of KEPT) assert.ok(existsSync(t.part(n, h)), `${n}/${h} is used and kept`)
  assert.ok(existsSync(t.part('extra', 'E1')), 'kept by the additional software directory')
  for (const [n, h] of [...CHAIN, ['zlib', 'Z0'], ['ro', 'R1']] as const) assert.not.ok(existsSync(t.part(n, h)), `${n}/${h} removed`)
  assert.match(r.stderr, `Pruning shared directories at ${t.shared}`)
  assert.match(r.stderr, `Unused shared parts at ${t.part('base', 'B1')} ... removed`)
  // the chain needed three passes: app, then lib, then base
  const order = ['app', 'lib', 'base'].map((n) => r.stderr.indexOf(t.part(n, CHAIN.find((c) => c[0] === n)?.[1] ?? '')))
  assert.ok(order[0]! < order[1]! && order[1]! < order[2]!, r.stderr)
  assert.not.ok(existsSync(t.pidfile), 'the software pid file is released')
  // nothing more to do
  const again = slapos(['node', 'prune', '--cfg', t.cfg, '--additional-software-directory', join(t.dir, 'extra')])
  assert.is(again.code, 0)
  assert.not.match(again.stderr, 'Unused shared parts')
})

prune('without the additional software directory its part goes', () => {
  const t = tree()
  const r = slapos(['node', 'prune', '--cfg', t.cfg])
  assert.is(r.code, 0, r.stderr)
  assert.not.ok(existsSync(t.part('extra', 'E1')))
})

prune('--dry-run deletes nothing and still reports the whole chain', () => {
  const t = tree()
  const r = slapos(['node', 'prune', '--cfg', t.cfg, '--dry-run'])
  assert.is(r.code, 0, r.stderr)
  for (const [n, h] of [...KEPT, ...CHAIN, ['zlib', 'Z0'], ['ro', 'R1'], ['extra', 'E1']] as const) assert.ok(existsSync(t.part(n, h)))
  for (const [n, h] of [...CHAIN, ['zlib', 'Z0'], ['ro', 'R1'], ['extra', 'E1']] as const) {
    assert.match(r.stderr, `Unused shared parts at ${t.part(n, h)}\n`)
  }
  assert.not.match(r.stderr, 'removed')
})

prune('exit 255 without shared_part_list, or while the software pid file exists (dry run allowed)', () => {
  const t = tree()
  const noShared = join(t.dir, 'no-shared.cfg')
  writeFileSync(noShared, `[slapos]\nsoftware_root = ${t.dir}/software\ninstance_root = ${t.dir}/instance\nroot_check = false\n`)
  const r1 = slapos(['node', 'prune', '--cfg', noShared])
  assert.is(r1.code, 255)
  assert.match(r1.stderr, 'No shared_part_list')
  mkdirSync(join(t.dir, 'run'))
  writeFileSync(t.pidfile, '999999999')
  const r2 = slapos(['node', 'prune', '--cfg', t.cfg])
  assert.is(r2.code, 255)
  assert.match(r2.stderr, 'Cannot prune while software is running')
  assert.ok(existsSync(t.part('zlib', 'Z0')), 'nothing deleted')
  // a dry run only reads: the stale pid file is taken over and released
  const r3 = slapos(['node', 'prune', '--cfg', t.cfg, '--dry-run'])
  assert.is(r3.code, 0, r3.stderr)
  assert.ok(existsSync(t.part('zlib', 'Z0')))
})

prune('a node kept by an unprivileged user (root_check = false): its parts, read-only ones included, are pruned by that user', () => {
  const t = tree()
  chownTree(t.dir, 65534)
  chmodSync(t.dir, 0o755)
  const r = spawnSync(SLAPOS, ['node', 'prune', '--cfg', t.cfg], { encoding: 'utf8', uid: 65534, gid: 65534, env: { PATH: '/usr/bin:/bin' }, timeout: 60_000 })
  assert.is(r.status, 0, r.stderr)
  for (const [n, h] of [...CHAIN, ['zlib', 'Z0'], ['ro', 'R1']] as const) assert.not.ok(existsSync(t.part(n, h)), `${n}/${h} removed`)
  for (const [n, h] of KEPT) assert.ok(existsSync(t.part(n, h)))
})

prune('a link the software user plants in the shared root is no part: nothing it leads to is deleted', () => {
  const t = tree()
  // `<shared>/evil` -> a directory of root's (as /var/lib), whose directories look like parts
  const outside = join(t.dir, 'outside')
  mkdirSync(join(outside, 'mysql'), { recursive: true })
  writeFileSync(join(outside, 'mysql', 'ibdata1'), 'rows')
  symlinkSync(outside, join(t.shared, 'evil'))
  const r = slapos(['node', 'prune', '--cfg', t.cfg])
  assert.is(r.code, 0, r.stderr)
  assert.ok(existsSync(join(outside, 'mysql', 'ibdata1')), r.stderr)
  assert.not.match(r.stderr, join(t.shared, 'evil'))
  assert.not.ok(existsSync(t.part('zlib', 'Z0')), 'the real unused parts still go')
})

prune('the software user swapping a name directory of the shared root for a link while prune runs: nothing it leads to is deleted', async () => {
  if (process.getuid?.() !== 0) return skip('needs root')
  const t = tree()
  // unused parts of the name, and a directory of root's holding directories of the same names
  const outside = join(t.dir, 'outside')
  const unused = Array.from({ length: 12 }, (_, i) => `U${i}`)
  for (const h of unused) mkdirSync(t.part('zlib', h))
  for (const h of ['Z0', 'Z1', 'Z2', 'X1', ...unused]) mkdirSync(join(outside, basename(t.part('zlib', h)), 'lib'), { recursive: true })
  const before = readdirSync(outside).sort()
  // the user: `<shared>/zlib` exchanged with a link to that directory (renameat2
  // RENAME_EXCHANGE, atomic) every half millisecond or so: long enough for a whole rm to see
  // one of the two
  const zlib = join(t.shared, 'zlib')
  const link = join(t.shared, '.zlib.lnk')
  symlinkSync(outside, link)
  const racer = spawn('python3', ['-c', `
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
while True:
    libc.renameat2(-100, a, -100, b, 2)
    time.sleep(0.0005)
`, zlib, link], { stdio: 'ignore' })
  const failed: string[] = []
  try {
    // started: the name is the link at times
    for (let i = 0; i < 1000 && !lstatSync(zlib).isSymbolicLink(); i++) await new Promise((r) => setTimeout(r, 10))
    for (let i = 0; i < 20 && readdirSync(outside).length === before.length; i++) {
      const r = await slaposAsync(['node', 'prune', '--cfg', t.cfg])
      if (r.code !== 0) failed.push(r.stderr)
    }
  } finally {
    racer.kill('SIGKILL')
  }
  assert.equal(readdirSync(outside).sort(), before)
  for (const h of before) assert.ok(existsSync(join(outside, h, 'lib')), h)
  assert.equal(failed, [], 'rm never met what the link leads to')
})

prune('root check: refused (5) as a user when root_check is on', () => {
  const t = tree()
  writeFileSync(t.cfg, `[slapos]\nsoftware_root = /x\ninstance_root = /y\nshared_part_list = /z\n`)
  chmodSync(t.dir, 0o755)
  const r = spawnSync(SLAPOS, ['node', 'prune', '--cfg', t.cfg], { encoding: 'utf8', uid: 65534, gid: 65534, env: { PATH: '/usr/bin:/bin' }, timeout: 60_000 })
  assert.is(r.status, 5, r.stderr)
  assert.match(r.stderr, 'must be run as root')
})

prune.run()

function chownTree(p: string, uid: number): void {
  const st = lstatSync(p)
  if (st.isDirectory()) for (const n of readdirSync(p)) chownTree(join(p, n), uid)
  lchownSync(p, uid, uid)
}
