// Privilege drop end to end, as root: the built `slapos node software` runs the buildout of a
// software root owned by nobody as nobody, with nobody's primary group and the supplementary
// groups /etc/group gives it (the original calls initgroups). The test gives nobody a group in
// a private copy of /etc/group, bind-mounted in a mount namespace of the node's own (unshare),
// so the machine's /etc is never touched.
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { md5hex } from '../src/grid-common.ts'
import { type Result, skip, SLAPOS } from './helpers.ts'
import { makeNode } from './node-helpers.ts'

const isRoot = process.getuid?.() === 0
const hasUnshare = spawnSync('unshare', ['--version']).status === 0

/** Runs dist/slapos in a new mount namespace where `group` is mounted over /etc/group. */
function slaposWithGroupFile(group: string, args: string[]): Promise<Result> {
  return new Promise((res, rej) => {
    const script = 'mount --bind "$0" /etc/group && exec "$@"'
    const child = spawn('unshare', ['-m', '--propagation', 'private', '--', '/bin/sh', '-c', script, group, SLAPOS, ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.on('error', rej)
    child.on('close', (code) => res({ code, stdout, stderr }))
  })
}

test('as root, buildout runs as the owner of software_root with its supplementary groups', async () => {
  if (!isRoot || !hasUnshare) return skip('needs root and unshare')
  const node = await makeNode({ partitions: 1 })
  try {
    // a buildout that records who it runs as, and succeeds without building anything
    const recorder = join(node.dir, 'bin', 'record-buildout')
    writeFileSync(recorder, '#!/bin/sh\n{ id -u; id -g; id -G; } > ids.txt\n', { mode: 0o755 })
    writeFileSync(node.cfgPath, readFileSync(node.cfgPath, 'utf8').replace(/^buildout = .*$/m, `buildout = ${recorder}`))
    chownSync(node.softwareRoot, 65534, 65534)
    chmodSync(node.softwareRoot, 0o755)
    const group = join(node.dir, 'group')
    writeFileSync(group, `${readFileSync('/etc/group', 'utf8').trimEnd()}\nslaptest:x:4242:root,nobody\nslapother:x:4343:root\n`)
    await node.supply()
    const r = await slaposWithGroupFile(group, ['node', 'software', '--now', '--cfg', node.cfgPath])
    assert.is(r.code, 0, r.stderr)
    const [uid, gid, groups] = readFileSync(join(node.softwareRoot, md5hex(node.srUrl), 'ids.txt'), 'utf8').trim().split('\n')
    assert.equal([uid, gid], ['65534', '65534'])
    const list = (groups ?? '').split(' ')
    assert.ok(list.includes('4242'), `supplementary group of nobody in ${groups}`)
    assert.not.ok(list.includes('4343'), `a group nobody is not in: ${groups}`)
    assert.not.ok(list.includes('0'), `none of root's groups: ${groups}`)
  } finally {
    await node.stop()
  }
})

test.run()
