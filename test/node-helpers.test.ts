// The node test set-up itself: the buildout wrapper installs the test Software Release
// offline by hand, and makeNode gives a proxy that knows the computer and its partitions.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { tempDir } from './helpers.ts'
import { buildoutShim, makeNode, renderSoftwareRelease, reserveAddresses } from './node-helpers.ts'

test('the buildout wrapper installs the test Software Release offline', () => {
  const dir = tempDir()
  try {
    const shim = buildoutShim(join(dir, 'shim'))
    const url = renderSoftwareRelease(join(dir, 'sr'))
    assert.not.match(readFileSync(url, 'utf8'), /@SR_DIR@|@SLAP_PYTHON_PATH@/)
    const work = join(dir, 'build')
    spawnSync('mkdir', [work])
    writeFileSync(join(work, 'buildout.cfg'), `[buildout]\nextends = ${url}\n`)
    const r = spawnSync(shim, ['-N', '-c', join(work, 'buildout.cfg')], { cwd: work, encoding: 'utf8', env: { PATH: '/usr/bin:/bin', HOME: work }, timeout: 120_000 })
    assert.is(r.status, 0, r.stdout + r.stderr)
    const instance = readFileSync(join(work, 'instance.cfg'), 'utf8')
    assert.match(instance, `eggs-directory = ${join(work, 'eggs')}`)
    assert.match(instance, 'recipe = slaptestrecipe:config')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('partition addresses: two test nodes never share one; a reservation of a process that is gone is taken over', () => {
  const a = reserveAddresses(3)
  const b = reserveAddresses(3)
  try {
    const range = (r: { base: number }) => [r.base, r.base + 1, r.base + 2]
    assert.equal(range(a).filter((o) => range(b).includes(o)), [])
    assert.throws(() => reserveAddresses(1, a.base), /held by another test node/)
  } finally {
    a.release()
    b.release()
  }
  // a reservation left by a process that no longer runs (pid 2^22 + 1 is above pid_max's default)
  const octet = 251
  const lock = join(tmpdir(), `slapos-test-address-127.0.1.${octet}`)
  rmSync(lock, { recursive: true, force: true })
  mkdirSync(lock)
  writeFileSync(join(lock, 'pid'), String(2 ** 22 + 1))
  const c = reserveAddresses(1, octet)
  assert.is(readFileSync(join(lock, 'pid'), 'utf8'), String(process.pid))
  c.release()
  assert.not.ok(existsSync(lock))
})

test('makeNode: partitions 0750, proxy knows them with 127.0.1.x addresses, calls go through the tap', async () => {
  const node = await makeNode({ partitions: 2 })
  try {
    for (const id of ['slappart0', 'slappart1']) assert.is(statSync(join(node.instanceRoot, id)).mode & 0o777, 0o750)
    const cfg = readFileSync(node.cfgPath, 'utf8')
    assert.match(cfg, 'root_check = false')
    assert.match(cfg, `buildout = ${node.buildout}`)
    assert.match(cfg, / node watchdog\n/)
    assert.ok(existsSync(node.srUrl))
    await node.supply()
    const computer = await node.client.getFullComputerInformation(node.computerId)
    assert.equal(computer._software_release_list.map((s) => [s._software_release, s._requested_state]), [[node.srUrl, 'available']])
    const ids = computer._computer_partition_list.map((p) => p._partition_id).sort()
    assert.equal(ids, ['slappart0', 'slappart1'])
    assert.match(node.addresses.slappart0 ?? '', /^127\.0\.1\.\d+$/)
    // a call through the tap is recorded with its decoded fields
    const r = await fetch(`${node.masterUrl}getFullComputerInformation?computer_id=${node.computerId}`)
    assert.is(r.status, 200)
    assert.match(await r.text(), 'slappart1')
    // an allocated partition carries its loopback address
    const inst = await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'probe' })
    const id = inst.slap_computer_partition_id ?? ''
    assert.equal(inst.ip_list.map(([, a]) => a), [node.addresses[id]])
    assert.equal(node.calls(), [{ verb: 'GET', name: 'getFullComputerInformation', fields: { computer_id: 'computer' }, status: 200 }])
  } finally {
    await node.stop()
  }
  assert.not.ok(existsSync(node.dir))
})

test.run()
