// slapos node software against the real proxy with real buildout (through the test wrapper):
// what is built, what the master is told and in which order, what stays on disk, exit codes.
import { spawn } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { md5hex } from '../src/grid-common.ts'
import { softwareBuildoutArgs, softwareBuildoutCfg, errorLine } from '../src/grid-software.ts'
import { SLAPOS, tempDir } from './helpers.ts'
import { makeNode, renderSoftwareRelease, type MasterCall, type TestNode } from './node-helpers.ts'

const isRoot = process.getuid?.() === 0
const names = (calls: MasterCall[]) => calls.map((c) => c.name)

async function withNode(fn: (node: TestNode) => Promise<void>, opts: { extraSlapos?: string } = {}): Promise<void> {
  const node = await makeNode({ partitions: 1, ...opts })
  try {
    await fn(node)
  } finally {
    await node.stop()
  }
}

/** A Software Release whose profile extends a file that does not exist. */
function brokenSoftwareRelease(node: TestNode): string {
  const dir = join(node.dir, 'broken')
  mkdirSync(dir)
  const url = join(dir, 'software.cfg')
  writeFileSync(url, `[buildout]\nextends = ${join(dir, 'missing-profile.cfg')}\nparts =\n`)
  return url
}

test('pure parts: buildout.cfg text, buildout arguments, one-line error', () => {
  assert.is(softwareBuildoutCfg('http://x/s.cfg', [], []), '[buildout]\nextends = http://x/s.cfg\nshared-part-list =\nbuild-time-part-list =\n')
  assert.is(softwareBuildoutCfg('u', ['/a', '/b'], ['/c']), '[buildout]\nextends = u\nshared-part-list = /a\n  /b\nbuild-time-part-list = /c\n')
  assert.equal(softwareBuildoutArgs('/s/h', new Map(), false, false), ['-U', 'buildout:extends-cache=/s/h/extends-cache', 'buildout:directory=/s/h', '-N', '-c', '/s/h/buildout.cfg'])
  assert.equal(softwareBuildoutArgs('/s/h', new Map(), true, true), ['-D', '-U', 'buildout:extends-cache=/s/h/extends-cache', 'buildout:directory=/s/h', '-c', '/s/h/buildout.cfg'])
  const nc = new Map([
    ['upload-cache-url', 'https://c/'],
    ['shadir-cert-file', '/k.crt'],
    ['download-cache-url', 'https://not-passed/'],
  ])
  assert.equal(softwareBuildoutArgs('/s/h', nc, false, false), [
    '-U',
    'buildout:extends-cache=/s/h/extends-cache',
    'buildout:directory=/s/h',
    'buildout:networkcache-section=networkcache',
    'networkcache:upload-cache-url=https://c/',
    'networkcache:shadir-cert-file=/k.crt',
    '-N',
    '-c',
    '/s/h/buildout.cfg',
  ])
  assert.is(errorLine("Failed to run buildout profile in directory '/x':\nWhile:\n  Installing.\nError: Couldn't find a distribution for 'a'.\n"), "Error: Couldn't find a distribution for 'a'.")
  assert.is(errorLine('Traceback ...\nFileNotFoundError: [Errno 2] No such file\nWhile:\n  Initializing.\n'), 'FileNotFoundError: [Errno 2] No such file')
})

test('supplied SR is built: building, buildout, available, then .completed; second run does nothing', () =>
  withNode(async (node) => {
    await node.supply()
    const r = await node.run(['node', 'software', '--now'])
    assert.is(r.code, 0, r.stderr)
    const path = join(node.softwareRoot, md5hex(node.srUrl))
    assert.equal(names(node.calls()), ['getFullComputerInformation', 'buildingSoftwareRelease', 'availableSoftwareRelease'])
    for (const c of node.calls().slice(1)) assert.equal(c.fields, { url: node.srUrl, computer_id: 'computer' })
    assert.ok(existsSync(join(path, '.completed')))
    assert.match(readFileSync(join(path, '.completed'), 'utf8'), /^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$/)
    assert.ok(existsSync(join(path, 'instance.cfg')))
    assert.match(readFileSync(join(path, 'instance.cfg'), 'utf8'), `eggs-directory = ${join(path, 'eggs')}`)
    assert.is(readFileSync(join(path, 'buildout.cfg'), 'utf8'), `[buildout]\nextends = ${node.srUrl}\nshared-part-list =\nbuild-time-part-list =\n`)
    assert.ok(statSync(join(path, 'extends-cache')).isDirectory())
    assert.is(statSync(path).mode & 0o777, 0o755)
    // progress: buildout's lines, prefixed with the hash; then the summary
    assert.match(r.stderr, `[${md5hex(node.srUrl)}] Installing instance-profile.`)
    assert.match(r.stderr, new RegExp(`${md5hex(node.srUrl)}  installed +\\d+\\.\\d s  ${node.srUrl}`))
    // instance root structure and supervisord configuration, supervisord not started
    assert.ok(existsSync(join(node.instanceRoot, 'etc', 'supervisord.conf')))
    assert.is(statSync(join(node.instanceRoot, 'etc')).mode & 0o777, 0o700)
    assert.not.ok(existsSync(join(node.instanceRoot, 'var', 'run', 'supervisord.pid')))
    // the pid file is gone at the end
    assert.not.ok(existsSync(node.pidfiles.software))
    // the master still lists it as available
    const computer = await node.client.getFullComputerInformation('computer')
    assert.equal(computer._software_release_list.map((s) => [s._software_release, s._requested_state]), [[node.srUrl, 'available']])

    // second run: no buildout, no call other than reading the computer
    node.clearCalls()
    const mtime = statSync(join(path, '.installed.cfg')).mtimeMs
    const again = await node.run(['node', 'software', '--now', '--json'])
    assert.is(again.code, 0, again.stderr)
    assert.equal(names(node.calls()), ['getFullComputerInformation'])
    assert.is(statSync(join(path, '.installed.cfg')).mtimeMs, mtime)
    const json = JSON.parse(again.stdout) as Array<Record<string, unknown>>
    assert.is(json.length, 1)
    assert.equal({ ...json[0], durationMs: 0 }, { url: node.srUrl, hash: md5hex(node.srUrl), state: 'available', result: 'up-to-date', durationMs: 0 })
  }))

test.run()
