// The built node against a hostile software user, end to end as root with a real proxy and
// real buildout: the software root and every release in it belong to that user (format makes
// it so), who may leave links where root reads, writes or chowns (docs/operations.md, Security).
import { spawnSync } from 'node:child_process'
import { chownSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { md5hex } from '../src/grid-common.ts'
import { skip } from './helpers.ts'
import { makeNode, type TestNode } from './node-helpers.ts'

const isRoot = process.getuid?.() === 0
/** the software user: no account, so its home is the software root itself (as format makes it) */
const SOFTWARE_USER = 54321

interface Ctx {
  node: TestNode
  /** root's files the software user must never reach through root */
  secret: string
  victim: string
}
const t = suite<Ctx>('node against a hostile software user')
t.before.each(async (c) => {
  if (!isRoot) return skip('needs root')
  c.node = await makeNode({ partitions: 1 })
  spawnSync('chown', ['-R', `${SOFTWARE_USER}:${SOFTWARE_USER}`, c.node.softwareRoot, join(c.node.dir, 'sr')])
  c.secret = join(c.node.dir, 'root-secret')
  writeFileSync(c.secret, 'ROOT ONLY SECRET\n', { mode: 0o600 })
  c.victim = join(c.node.dir, 'root-victim')
  writeFileSync(c.victim, 'original\n', { mode: 0o644 })
})
t.after.each(async (c) => {
  await c.node?.stop()
})

/** content, owner and mode of a file */
function seen(file: string): string {
  const st = statSync(file)
  return `${readFileSync(file, 'utf8')} uid=${st.uid} mode=${(st.mode & 0o7777).toString(8)}`
}

t("~/.netrc and the release's .netrc as links: the secret is not copied, the file behind the release's link is not written nor given away", async ({ node, secret, victim }) => {
  if (!isRoot) return
  const before = { secret: seen(secret), victim: seen(victim) }
  symlinkSync(secret, join(node.softwareRoot, '.netrc'))
  const sr = join(node.softwareRoot, md5hex(node.srUrl))
  mkdirSync(sr)
  chownSync(sr, SOFTWARE_USER, SOFTWARE_USER)
  symlinkSync(victim, join(sr, '.netrc'))
  await node.supply()
  const r = await node.run(['node', 'software', '--now'])
  assert.equal({ secret: seen(secret), victim: seen(victim) }, before)
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, /\.netrc is not a regular file \(a symbolic link\): not copied/)
  assert.not.ok(lstatSync(join(sr, '.netrc'), { throwIfNoEntry: false }), "the release's link is removed")
})

t('~/.netrc a hard link to a root file: not copied', async ({ node, secret }) => {
  if (!isRoot) return
  linkSync(secret, join(node.softwareRoot, '.netrc'))
  await node.supply()
  const r = await node.run(['node', 'software', '--now'])
  assert.not.ok(existsSync(join(node.softwareRoot, md5hex(node.srUrl), '.netrc')))
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, /\.netrc is a file with other names: not copied/)
})

t('a real ~/.netrc is copied into the release, 0600, owned by the software user', async ({ node }) => {
  if (!isRoot) return
  writeFileSync(join(node.softwareRoot, '.netrc'), 'machine example.org login me password \xe9t\xe9\n')
  await node.supply()
  const r = await node.run(['node', 'software', '--now'])
  assert.is(r.code, 0, r.stderr)
  const copy = join(node.softwareRoot, md5hex(node.srUrl), '.netrc')
  assert.equal(readFileSync(copy), readFileSync(join(node.softwareRoot, '.netrc')))
  assert.is(seen(copy).replace(/^[^]*uid=/, ''), `${SOFTWARE_USER} mode=600`)
})

t("the release's directory a link to a root directory: replaced by a real directory, the root directory is neither chowned nor filled", async ({ node }) => {
  if (!isRoot) return
  const target = join(node.dir, 'root-dir')
  mkdirSync(target, { mode: 0o700 })
  const sr = join(node.softwareRoot, md5hex(node.srUrl))
  symlinkSync(target, sr)
  await node.supply()
  const r = await node.run(['node', 'software', '--now'])
  assert.is(r.code, 0, r.stderr)
  assert.is(statSync(target).uid, 0)
  assert.equal(readdirSync(target), [])
  assert.ok(lstatSync(sr).isDirectory())
  assert.is(lstatSync(sr).uid, SOFTWARE_USER)
  assert.is(lstatSync(sr).mode & 0o7777, 0o755)
  assert.ok(existsSync(join(sr, '.completed')))
})

/** A release without parts whose instance.cfg is what `make` leaves; slappart0 asks for it. */
function releaseWith(node: TestNode, make: (sr: string) => void): string {
  const url = 'http://sr.example/hostile/software.cfg'
  const sr = join(node.softwareRoot, md5hex(url))
  mkdirSync(sr, { mode: 0o755 })
  make(sr)
  spawnSync('chown', ['-hR', `${SOFTWARE_USER}:${SOFTWARE_USER}`, sr])
  const db = new DatabaseSync(node.proxy.dbPath)
  try {
    db.prepare("UPDATE partition17 SET slap_state = 'busy', software_release = ?, partition_reference = 'i', requested_state = 'started', software_type = 'default' WHERE reference = 'slappart0'").run(url)
  } finally {
    db.close()
  }
  return sr
}

t("the release's instance.cfg a link to a root file: refused, the partition fails, nothing of the file reaches the partition", async ({ node, secret }) => {
  if (!isRoot) return
  releaseWith(node, (sr) => symlinkSync(secret, join(sr, 'instance.cfg')))
  const r = await node.run(['node', 'instance', '--now'])
  const profile = join(node.instanceRoot, 'slappart0', 'buildout.cfg')
  assert.not.ok(existsSync(profile) && readFileSync(profile, 'utf8').includes('SECRET'))
  assert.not.match(JSON.stringify(node.calls()), 'SECRET')
  assert.is(r.code, 1, r.stderr)
  assert.match(r.stderr, /instance\.cfg leads outside the software root/)
})

t("the release's instance.cfg a link to a file of the release (as the original allows): used", async ({ node }) => {
  if (!isRoot) return
  releaseWith(node, (sr) => {
    writeFileSync(join(sr, 'real.cfg'), '[buildout]\nparts =\n')
    symlinkSync(join(sr, 'real.cfg'), join(sr, 'instance.cfg'))
  })
  const r = await node.run(['node', 'instance', '--now'])
  assert.is(r.code, 0, r.stderr)
  assert.match(readFileSync(join(node.instanceRoot, 'slappart0', 'buildout.cfg'), 'utf8'), /^\[buildout\]\nparts =\n/)
})

t.run()
