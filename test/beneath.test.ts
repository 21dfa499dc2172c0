// Tests of beneath.ts on the real file system: directories a partition's user controls,
// replaced by links before and while root works in them. As root (CI), the made directories
// are given to nobody, as the node gives them to the partition's user.
import { existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { spawn, spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { inBeneath, openBeneath, openRegular } from '../src/beneath.ts'
import { shebang } from '../src/buildout.ts'
import { softwarePython } from '../src/promise.ts'
import { skip, tempDir } from './helpers.ts'

const t = suite('beneath: files below a directory of an untrusted user')
const asRoot = process.getuid?.() === 0
const nobody = asRoot ? { uid: 65534, gid: 65534 } : {}

/** A partition directory and, beside it, a directory its user must never reach through root. */
function setup(): { part: string; outside: string } {
  const base = tempDir('slapos-beneath-')
  const part = join(base, 'slappart0')
  const outside = join(base, 'outside')
  mkdirSync(part)
  mkdirSync(outside)
  writeFileSync(join(outside, 'x.log'), 'root data\n')
  return { part, outside }
}

t('a link in place of a directory is replaced by a real one, made for the user; the link target is untouched', () => {
  const { part, outside } = setup()
  mkdirSync(join(part, '.slapgrid'))
  symlinkSync(outside, join(part, '.slapgrid', 'promise'))
  inBeneath(part, ['.slapgrid', 'promise', 'log'], nobody, (d) => {
    d.append('x.log', 'line\n', nobody)
    d.write('y.status.json', '{}', 0o644, nobody)
  })
  const promise = lstatSync(join(part, '.slapgrid', 'promise'))
  assert.ok(promise.isDirectory(), 'a directory now, not the link')
  assert.is(readFileSync(join(part, '.slapgrid/promise/log/x.log'), 'utf8'), 'line\n')
  assert.is(readFileSync(join(outside, 'x.log'), 'utf8'), 'root data\n')
  assert.equal(readdirSync(outside), ['x.log'])
  if (asRoot) {
    for (const p of ['.slapgrid', '.slapgrid/promise', '.slapgrid/promise/log', '.slapgrid/promise/log/x.log', '.slapgrid/promise/log/y.status.json']) {
      assert.is(statSync(join(part, p)).uid, 65534, p)
    }
    assert.is(statSync(join(outside, 'x.log')).uid, 0)
  }
  // without `make`, a link is not a directory: nothing opened
  symlinkSync(outside, join(part, 'etc'))
  assert.is(openBeneath(part, ['etc']), undefined)
  assert.is(inBeneath(part, ['absent', 'below'], undefined, () => 'called'), undefined)
})

t('a directory swapped for a link after it was opened: what follows still happens in the directory that was opened', () => {
  const { part, outside } = setup()
  mkdirSync(join(part, 'log'))
  const dir = openBeneath(part, ['log'], nobody)!
  try {
    // the user moves the directory away and puts a link to the outside under its name
    renameSync(join(part, 'log'), join(part, 'moved'))
    symlinkSync(outside, join(part, 'log'))
    dir.append('x.log', 'appended\n', nobody)
    dir.write('new.json', '{}', 0o644, nobody)
    dir.rename('new.json', 'renamed.json')
    assert.is(dir.read('x.log', 100).kind, 'ok')
  } finally {
    dir.close()
  }
  assert.is(readFileSync(join(outside, 'x.log'), 'utf8'), 'root data\n')
  assert.equal(readdirSync(outside), ['x.log'])
  assert.equal(readdirSync(join(part, 'moved')).sort(), ['renamed.json', 'x.log'])
})

t('append: a hard link to another file, a FIFO or a link is refused, never written nor given away; a name with a slash is no name', () => {
  const { part, outside } = setup()
  const dir = openBeneath(part, [], nobody)!
  try {
    linkSync(join(outside, 'x.log'), join(part, 'hard.log'))
    assert.throws(() => dir.append('hard.log', 'no\n', nobody), /not a regular file with one link/)
    assert.is(spawnSync('mkfifo', [join(part, 'fifo.log')]).status, 0)
    assert.throws(() => dir.append('fifo.log', 'no\n', nobody))
    symlinkSync(join(outside, 'x.log'), join(part, 'link.log'))
    assert.throws(() => dir.append('link.log', 'no\n', nobody))
    assert.throws(() => dir.append('../outside/x.log', 'no\n'), /is not a file name/)
    assert.throws(() => dir.at('..'), /is not a file name/)
    // a directory under the name: an error, and no temporary file left
    mkdirSync(join(part, 'dir.json'))
    assert.throws(() => dir.write('dir.json', '{}', 0o644))
    assert.equal(readdirSync(part).filter((n) => n.endsWith('.tmp')), [])
    // write replaces a hard link under its name (the other name keeps the old content)
    dir.write('hard.log', 'replaced\n', 0o644, nobody)
    assert.is(readFileSync(join(part, 'hard.log'), 'utf8'), 'replaced\n')
  } finally {
    dir.close()
  }
  assert.is(readFileSync(join(outside, 'x.log'), 'utf8'), 'root data\n')
  if (asRoot) assert.is(statSync(join(outside, 'x.log')).uid, 0)
})

t('remove: a whole tree goes, links in it are removed and never followed; a tree too deep is refused', () => {
  const { part, outside } = setup()
  mkdirSync(join(part, 'history', 'a', 'b'), { recursive: true })
  writeFileSync(join(part, 'history', 'a', 'b', 'f'), 'x')
  symlinkSync(outside, join(part, 'history', 'a', 'to-outside'))
  symlinkSync(join(outside, 'x.log'), join(part, 'history', 'x.log'))
  inBeneath(part, [], undefined, (d) => {
    d.remove('history')
    d.remove('absent')
  })
  assert.not.ok(existsSync(join(part, 'history')))
  assert.equal(readdirSync(outside), ['x.log'])
  // 70 levels: refused past 64, the directory of the outside untouched either way
  let deep = join(part, 'deep')
  for (let i = 0; i < 70; i++) deep = join(deep, 'd')
  mkdirSync(deep, { recursive: true })
  symlinkSync(outside, join(deep, 'l'))
  assert.throws(() => inBeneath(part, [], undefined, (d) => d.remove('deep')), /more than 64 directories deep/)
  assert.equal(readdirSync(outside), ['x.log'])
})

t('removeTree: a tree deeper than remove goes (as root, by rm given the descriptor), links in it not followed', () => {
  if (!asRoot) return skip('needs root')
  const { part, outside } = setup()
  let deep = join(part, '.slapgrid')
  for (let i = 0; i < 200; i++) deep = join(deep, 'd')
  mkdirSync(deep, { recursive: true })
  symlinkSync(outside, join(deep, 'l'))
  symlinkSync(outside, join(part, '.timestamp'))
  inBeneath(part, [], undefined, (d) => {
    d.removeTree('.slapgrid')
    d.removeTree('.timestamp')
  })
  assert.equal(readdirSync(part), [])
  assert.equal(readdirSync(outside), ['x.log'])
})

t('openRegular: a link to a FIFO (or any file but a regular one) is never opened; a regular file through a link is, when asked', async () => {
  const { part, outside } = setup()
  const fifo = join(outside, 'fifo')
  assert.is(spawnSync('mkfifo', [fifo]).status, 0)
  symlinkSync(fifo, join(part, 'buildout'))
  mkdirSync(join(part, 'sr', 'bin'), { recursive: true })
  symlinkSync(fifo, join(part, 'sr', 'bin', 'buildout'))
  // a writer that goes on only once someone opens the FIFO for reading
  const marker = join(outside, 'opened')
  const writer = spawn('sh', ['-c', 'exec 3>"$1"; echo yes > "$2"', 'writer', fifo, marker], { stdio: 'ignore' })
  try {
    assert.equal(openRegular(join(part, 'buildout'), true), { refused: 'is not a regular file' })
    assert.equal(shebang(join(part, 'buildout')), [])
    assert.is(softwarePython(join(part, 'sr')), undefined)
    await new Promise((r) => setTimeout(r, 200))
    assert.not.ok(existsSync(marker), 'the FIFO was opened')
  } finally {
    writer.kill('SIGKILL')
  }
  writeFileSync(join(outside, 'script'), '#!/usr/bin/python3 -u\n')
  symlinkSync(join(outside, 'script'), join(part, 'script'))
  assert.equal(shebang(join(part, 'script')), ['/usr/bin/python3', '-u'])
  assert.equal(openRegular(join(part, 'script'), false), { refused: 'is a symbolic link' })
  assert.equal(openRegular(join(part, 'script'), true, (_, real) => (real.startsWith(part) ? undefined : `leads to ${real}`)), { refused: `leads to ${join(outside, 'script')}` })
  assert.is(openRegular(join(part, 'absent'), true), 'absent')
})

t('without a /proc of its own, opening a directory fails saying so (nothing read as absent in silence)', () => {
  if (!asRoot) return skip('needs root (a mount namespace)')
  const { part } = setup()
  mkdirSync(join(part, 'etc', 'promise'), { recursive: true })
  const code = `import('${join(import.meta.dirname, '..', 'src', 'beneath.ts')}').then((m) => { try { console.log(JSON.stringify(m.inBeneath(process.argv[1], ['etc', 'promise'], undefined, (d) => d.list()))) } catch (e) { console.log(e.code, e.message) } })`
  const r = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs none /proc && exec "$@"', 'sh', process.execPath, '--import', 'tsx', '-e', code, part], { encoding: 'utf8' })
  assert.match(r.stdout, /^E_NO_PROC \/proc\/self\/fd does not show this process's open directories/, r.stderr)
  // with /proc, the same call lists the directory
  assert.equal(spawnSync(process.execPath, ['--import', 'tsx', '-e', code, part], { encoding: 'utf8' }).stdout.trim(), '[]')
})

t.run()
