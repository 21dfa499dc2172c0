// The built node against hostile master data and a hostile partition user, end to end as
// root with a real proxy and a real supervisord (docs/operations.md, Security). The master's
// rows are written into the proxy's database directly: our proxy refuses such identifiers
// over HTTP, a hostile or broken master would send them all the same.
import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { suite, test } from 'uvu'
import * as assert from 'uvu/assert'
import { md5hex } from '../src/grid-common.ts'
import { checkPartitionUsage, collectUsage } from '../src/grid-report.ts'
import { createLogger } from '../src/log.ts'
import { skip, tempDir } from './helpers.ts'
import { makeNode, waitFor, type TestNode } from './node-helpers.ts'

const isRoot = process.getuid?.() === 0
const NOBODY = 65534

/** Rows a hostile master would serve, written straight into the proxy's database. */
function masterRows(node: TestNode, sql: string, ...args: (string | null)[]): void {
  const db = new DatabaseSync(node.proxy.dbPath)
  try {
    db.prepare(sql).run(...args)
  } finally {
    db.close()
  }
}

/** A busy partition row of the computer with this (unchecked) reference. */
function hostilePartition(node: TestNode, reference: string, url: string, state: 'started' | 'destroyed'): void {
  masterRows(
    node,
    "INSERT INTO partition17 (reference, computer_reference, slap_state, software_release, xml, software_type, partition_reference, requested_by, requested_state) VALUES (?, ?, 'busy', ?, ?, 'default', ?, '', ?)",
    reference,
    node.computerId,
    url,
    '<?xml version="1.0" encoding="utf-8"?>\n<instance>\n</instance>',
    `title ${reference}`,
    state,
  )
}

/** Every file below `dir` with its content (or link target) and mode: what must not change. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name)
      const st = lstatSync(p)
      if (st.isDirectory()) {
        out[p] = `dir ${(st.mode & 0o7777).toString(8)} ${st.uid}`
        walk(p)
      } else out[p] = `${(st.mode & 0o7777).toString(8)} ${st.uid} ${st.isSymbolicLink() ? 'link' : readFileSync(p, 'utf8')}`
    }
  }
  out[dir] = `dir ${(statSync(dir).mode & 0o7777).toString(8)}`
  walk(dir)
  return out
}

/** A root-owned directory beside the instance root, with files a destruction would remove. */
function victim(node: TestNode, name: string): string {
  const dir = join(node.dir, name)
  mkdirSync(join(dir, 'sub'), { recursive: true })
  chmodSync(dir, 0o700)
  writeFileSync(join(dir, 'buildout.cfg'), 'ORIGINAL\n', { mode: 0o600 })
  writeFileSync(join(dir, 'sub', 'data'), 'precious\n', { mode: 0o644 })
  return dir
}

interface Ctx {
  node: TestNode
}
const t = suite<Ctx>('node against hostile master data and partition users')
t.before.each(async (c) => {
  if (!isRoot) return skip('needs root')
  c.node = await makeNode({ partitions: 2 })
})
t.after.each(async (c) => {
  await c.node?.stop()
})

t('a partition reference ../victim: node report destroys nothing outside the instance root, the others go on', async ({ node }) => {
  if (!isRoot) return skip('needs root')
  const target = victim(node, 'victim')
  const before = snapshot(target)
  hostilePartition(node, '../victim', node.srUrl, 'destroyed')
  hostilePartition(node, '../../../../etc/slapos-hostile-X', node.srUrl, 'destroyed')
  const r = await node.run(['node', 'report', '--now'])
  assert.equal(snapshot(target), before, r.stderr)
  assert.not.ok(existsSync('/etc/slapos-hostile-X.conf'))
  assert.match(r.stderr, /refused: partition id '\.\.\/victim' is not a safe identifier/)
  // the master is told
  const errors = node.calls().filter((call) => call.name === 'softwareInstanceError')
  assert.ok(errors.some((call) => call.fields.computer_partition_id === '../victim' && /not a safe identifier/.test(call.fields.error_log ?? '')), JSON.stringify(errors))
})

t('a partition reference ../victim2: node instance writes nothing there; the valid partitions are processed', async ({ node }) => {
  if (!isRoot) return skip('needs root')
  const target = victim(node, 'victim2')
  const before = snapshot(target)
  hostilePartition(node, '../victim2', node.srUrl, 'started')
  const r = await node.run(['node', 'instance', '--now', '--json'])
  assert.equal(snapshot(target), before, r.stderr)
  assert.is(r.code, 1, r.stderr)
  const json = JSON.parse(r.stdout) as { items: { id: string; result: string; message?: string }[] }
  const refused = json.items.find((p) => p.id === '../victim2')
  assert.is(refused?.result, 'failed')
  assert.match(refused?.message ?? '', 'is not a safe identifier')
  // slappart0 and slappart1 were looked at as usual (free here)
  assert.equal(json.items.filter((p) => p.id.startsWith('slappart')).map((p) => p.result), ['free', 'free'])
  assert.not.ok(existsSync(join(node.certificateRepository, '..', 'victim2.crt')))
})

t('control characters in a software URL: no buildout.cfg is written (node software and node instance)', async ({ node }) => {
  if (!isRoot) return skip('needs root')
  const url = 'http://sr.example/x.cfg\n[buildout]\nparts = evil'
  masterRows(node, "INSERT INTO software17 (url, computer_reference, requested_state) VALUES (?, ?, 'available')", url, node.computerId)
  const sw = await node.run(['node', 'software', '--now'])
  assert.is(sw.code, 1, sw.stderr)
  assert.match(sw.stderr, /control characters/)
  assert.not.ok(existsSync(join(node.softwareRoot, md5hex(url))))
  masterRows(node, "UPDATE partition17 SET slap_state = 'busy', software_release = ?, partition_reference = 'i', requested_state = 'started' WHERE reference = 'slappart0'", url)
  const inst = await node.run(['node', 'instance', '--now'])
  assert.is(inst.code, 1, inst.stderr)
  assert.match(inst.stderr, /software release URL of slappart0 has control characters/)
  assert.not.ok(existsSync(join(node.instanceRoot, 'slappart0', 'buildout.cfg')))
})

t('a service file whose name injects supervisord sections: refused, the partition fails, nothing runs as root', async ({ node }) => {
  if (!isRoot) return skip('needs root')
  // a software release that installs nothing: an instance profile without parts
  const url = 'http://sr.example/hostile/software.cfg'
  const sr = join(node.softwareRoot, md5hex(url))
  mkdirSync(sr, { recursive: true })
  writeFileSync(join(sr, 'instance.cfg'), '[buildout]\nparts =\n')
  chmodSync(sr, 0o755)
  masterRows(node, "UPDATE partition17 SET slap_state = 'busy', software_release = ?, partition_reference = 'i', requested_state = 'started', software_type = 'default' WHERE reference = 'slappart0'", url)
  const path = join(node.instanceRoot, 'slappart0')
  // the partition belongs to an unprivileged user, who left these files
  mkdirSync(join(path, 'etc', 'run'), { recursive: true })
  const good = join(path, 'etc', 'run', 'good')
  writeFileSync(good, '#!/bin/sh\nexec sleep 300\n', { mode: 0o755 })
  const evil = 'a\n[program:slappart0_a]\ncommand=true\n[program:evil]\ncommand=sh -c "id > PWNED"\nautostart=true\nstartsecs=0\n[program:junk]\ncommand=true\n[program:junk'
  writeFileSync(join(path, 'etc', 'run', evil), '#!/bin/sh\nid > PWNED2\n', { mode: 0o755 })
  // and a link where supervisord (root) appends the good service's log
  const target = join(node.dir, 'root-file')
  writeFileSync(target, 'ROOT ONLY\n', { mode: 0o600 })
  symlinkSync(target, join(path, '.slappart0_good.log'))
  spawnSync('chown', ['-R', `${NOBODY}:${NOBODY}`, path])
  chownSync(path, NOBODY, NOBODY)
  const r = await node.run(['node', 'instance', '--now'])
  assert.is(r.code, 1, r.stderr)
  assert.match(r.stderr, /service file\(s\) of slappart0 have names that cannot be supervisord programs/)
  const group = readFileSync(join(node.instanceRoot, 'etc', 'supervisord.conf.d', 'slappart0.conf'), 'utf8')
  assert.equal(group.match(/^\[program:[^\]]*\]$/gm), ['[program:slappart0_good]'])
  assert.not.match(group, 'evil')
  // the good service runs, as the partition user; nothing supervisord started runs as root
  const pid = Number(readFileSync(join(node.instanceRoot, 'var', 'run', 'supervisord.pid'), 'utf8'))
  // the service's shell becomes `sleep 300` once it reached its exec: wait for that, not a moment
  const children = await waitFor('the good service to exec sleep', async () => {
    const list = spawnSync('ps', ['-o', 'uid=,args=', '--ppid', String(pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean)
    return list.some((l) => / sleep 300$/.test(l)) ? list : undefined
  })
  for (const l of children) {
    const uid = Number(l.trim().split(/\s+/)[0])
    // the watchdog event listener is the node's own program (root, as the original)
    if (!/node watchdog/.test(l)) assert.is.not(uid, 0, l)
  }
  for (const dir of [path, node.instanceRoot, '/']) {
    assert.not.ok(existsSync(join(dir, 'PWNED')), dir)
    assert.not.ok(existsSync(join(dir, 'PWNED2')), dir)
  }
  assert.is(readFileSync(target, 'utf8'), 'ROOT ONLY\n')
  // the master is told the partition failed
  assert.ok(node.calls().some((call) => call.name === 'softwareInstanceError' && call.fields.computer_partition_id === 'slappart0'))
})

t.run()

test('usage reports behind a link of the partition (var -> elsewhere) are neither read nor deleted', () => {
  const root = tempDir('slapos-usage-')
  const outside = tempDir('slapos-outside-')
  mkdirSync(join(root, 'slappart0'), { recursive: true })
  mkdirSync(join(outside, 'xml_report'), { recursive: true })
  const report = join(outside, 'xml_report', 'r.xml')
  writeFileSync(report, '<journal><movement><resource>CPU Consumption</resource><title>CPU</title><reference>slappart0</reference><quantity>1.0</quantity><price>0.0</price><VAT>None</VAT><category>None</category></movement></journal>')
  assert.is(checkPartitionUsage(readFileSync(report, 'utf8')), undefined)
  symlinkSync(outside, join(root, 'slappart0', 'var'))
  const found = collectUsage(root, 'slappart0', createLogger({ level: 'critical' }))
  assert.equal(found, [])
  assert.ok(existsSync(report))
  rmSync(root, { recursive: true, force: true })
  rmSync(outside, { recursive: true, force: true })
})

test.run()
