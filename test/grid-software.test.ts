// slapos node software against the real proxy with real buildout (through the test wrapper):
// what is built, what the master is told and in which order, what stays on disk, exit codes.
import { spawn } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { md5hex } from '../src/grid-common.ts'
import { errorLine, softwareBuildoutArgs, softwareBuildoutCfg } from '../src/grid-software.ts'
import { skip, SLAPOS } from './helpers.ts'
import { makeNode, renderSoftwareRelease, type MasterCall, type TestNode } from './node-helpers.ts'

const isRoot = process.getuid?.() === 0
const names = (calls: MasterCall[]) => calls.map((c) => c.name)

async function withNode(fn: (node: TestNode) => Promise<void>, opts: { extraSlapos?: string; extraCfg?: string } = {}): Promise<void> {
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
    // each report reached the proxy (200); like the original proxy it keeps the requested state
    for (const c of node.calls().slice(1)) assert.equal([c.fields, c.status], [{ url: node.srUrl, computer_id: 'computer' }, 200])
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
    const out = JSON.parse(again.stdout) as { exitCode: number; durationMs: number; items: Array<Record<string, unknown>> }
    assert.equal(Object.keys(out), ['exitCode', 'durationMs', 'items'])
    assert.is(out.exitCode, 0)
    assert.is(out.items.length, 1)
    assert.equal({ ...out.items[0], durationMs: 0 }, { id: md5hex(node.srUrl), url: node.srUrl, state: 'available', result: 'up-to-date', durationMs: 0 })
  }))

test('--force (and --all) rebuild a completed SR and run buildout without -N', () =>
  withNode(async (node) => {
    await node.supply()
    const first = await node.run(['node', 'software', '--now'])
    assert.is(first.code, 0, first.stderr)
    assert.match(first.stderr, / -N -c /)
    const path = join(node.softwareRoot, md5hex(node.srUrl))
    // the generated buildout.cfg is never overwritten
    writeFileSync(join(path, 'buildout.cfg'), `[buildout]\nextends = ${node.srUrl}\n# edited by hand\n`)
    for (const flag of ['--force', '--all']) {
      node.clearCalls()
      const r = await node.run(['node', 'software', '--now', flag])
      assert.is(r.code, 0, r.stderr)
      assert.equal(names(node.calls()), ['getFullComputerInformation', 'buildingSoftwareRelease', 'availableSoftwareRelease'], flag)
      const running = r.stderr.split('\n').find((l) => l.includes('Running ')) ?? ''
      assert.match(running, / -U /)
      assert.not.match(running, / -N /, flag)
      assert.match(running, / -c \S+\/buildout\.cfg$/)
    }
    assert.match(readFileSync(join(path, 'buildout.cfg'), 'utf8'), '# edited by hand')
    assert.ok(existsSync(join(path, '.completed')))
  }))

test('a broken SR: softwareReleaseError with the buildout output, no .completed, exit 1; a good SR in the same run is built', () =>
  withNode(async (node) => {
    const broken = brokenSoftwareRelease(node)
    await node.supply(broken)
    await node.supply()
    const r = await node.run(['node', 'software', '--now', '--json'])
    assert.is(r.code, 1, r.stderr)
    const calls = node.calls()
    const forBroken = calls.filter((c) => c.fields.url === broken)
    assert.equal(names(forBroken), ['buildingSoftwareRelease', 'softwareReleaseError'])
    assert.is(forBroken[1]?.status, 200, 'the proxy accepted the error report')
    const log = forBroken[1]?.fields.error_log ?? ''
    const brokenPath = join(node.softwareRoot, md5hex(broken))
    assert.match(log, `Failed to run buildout profile in directory '${brokenPath}':\n`)
    assert.match(log, 'missing-profile.cfg')
    assert.match(log, 'While:')
    assert.not.ok(existsSync(join(brokenPath, '.completed')))
    // the good one was still installed and reported
    assert.equal(names(calls.filter((c) => c.fields.url === node.srUrl)), ['buildingSoftwareRelease', 'availableSoftwareRelease'])
    assert.ok(existsSync(join(node.softwareRoot, md5hex(node.srUrl), '.completed')))
    // one clear line per failed SR at the end, and the JSON results
    const last = r.stderr.trimEnd().split('\n').pop() ?? ''
    assert.match(last, `ERROR ${broken} failed: `)
    assert.match(last, /missing-profile\.cfg/)
    const out = JSON.parse(r.stdout) as { exitCode: number; items: Array<{ url: string; result: string; message?: string }> }
    assert.is(out.exitCode, 1)
    assert.equal(out.items.map((x) => [x.url, x.result]), [[broken, 'failed'], [node.srUrl, 'installed']])
    assert.is(out.items[0]?.message, log)
    assert.not.ok(existsSync(node.pidfiles.software), 'pid file removed after a failed run too')
    // the next run tries the broken one again, not the good one
    node.clearCalls()
    const again = await node.run(['node', 'software', '--now'])
    assert.is(again.code, 1)
    assert.equal(names(node.calls()), ['getFullComputerInformation', 'buildingSoftwareRelease', 'softwareReleaseError'])
  }))

test('a destroyed SR: its directory is removed (read-only content too), then destroyedSoftwareRelease; sent even when absent', () =>
  withNode(async (node) => {
    await node.supply()
    assert.is((await node.run(['node', 'software', '--now'])).code, 0)
    const path = join(node.softwareRoot, md5hex(node.srUrl))
    mkdirSync(join(path, 'ro', 'deep'), { recursive: true })
    writeFileSync(join(path, 'ro', 'deep', 'file'), 'x')
    chmodSync(join(path, 'ro', 'deep', 'file'), 0o400)
    chmodSync(join(path, 'ro', 'deep'), 0o500)
    chmodSync(join(path, 'ro'), 0o500)
    const other = join(node.dir, 'other.cfg')
    await node.supply(node.srUrl, 'destroyed')
    await node.supply(other, 'destroyed') // never installed here
    node.clearCalls()
    const r = await node.run(['node', 'software', '--now', '--json'])
    assert.is(r.code, 0, r.stderr)
    assert.not.ok(existsSync(path))
    assert.equal(
      node.calls().map((c) => [c.name, c.fields.url]),
      [
        ['getFullComputerInformation', undefined],
        ['destroyedSoftwareRelease', node.srUrl],
        ['destroyedSoftwareRelease', other],
      ],
    )
    assert.equal((JSON.parse(r.stdout) as { items: Array<{ result: string }> }).items.map((x) => x.result), ['destroyed', 'destroyed'])
    // the proxy forgot them
    const computer = await node.client.getFullComputerInformation('computer')
    assert.equal(computer._software_release_list, [])
  }))

test('--only-sr by URL or md5 (comma list, --only and --only_sr spellings): every other SR is ignored, destroyed ones included', () =>
  withNode(async (node) => {
    const second = renderSoftwareRelease(join(node.dir, 'sr2'))
    const gone = join(node.dir, 'gone.cfg')
    await node.supply()
    await node.supply(second)
    await node.supply(gone, 'destroyed')
    const r1 = await node.run(['node', 'software', '--now', '--only-sr', second])
    assert.is(r1.code, 0, r1.stderr)
    assert.equal(names(node.calls()), ['getFullComputerInformation', 'buildingSoftwareRelease', 'availableSoftwareRelease'])
    assert.ok(node.calls().slice(1).every((c) => c.fields.url === second))
    assert.not.ok(existsSync(join(node.softwareRoot, md5hex(node.srUrl))))
    // by hash, with an unknown entry in the list
    node.clearCalls()
    const r2 = await node.run(['node', 'software', '--now', '--only', `0123456789abcdef0123456789abcdef,${md5hex(node.srUrl)}`])
    assert.is(r2.code, 0, r2.stderr)
    assert.equal(node.calls().map((c) => [c.name, c.fields.url]), [
      ['getFullComputerInformation', undefined],
      ['buildingSoftwareRelease', node.srUrl],
      ['availableSoftwareRelease', node.srUrl],
    ])
    // a listed, completed SR is not rebuilt without --force (HEAD)
    node.clearCalls()
    const r3 = await node.run(['node', 'software', '--now', '--only_sr', second, '--json'])
    assert.is(r3.code, 0, r3.stderr)
    assert.equal(names(node.calls()), ['getFullComputerInformation'])
    assert.equal((JSON.parse(r3.stdout) as { items: Array<{ result: string }> }).items.map((x) => x.result), ['skipped', 'up-to-date', 'skipped'])
    // --all and --only-sr together: refused by the parser (exit 2), before anything runs
    node.clearCalls()
    const r4 = await node.run(['node', 'software', '--now', '--all', '--only-sr', second])
    assert.is(r4.code, 2, r4.stderr)
    assert.equal(node.calls(), [])
  }))

test('pid file: held by a live slapos process -> exit 10, no master call; stale -> overwritten and removed at the end', () =>
  withNode(async (node) => {
    await node.supply()
    mkdirSync(join(node.dir, 'run'), { recursive: true })
    // the proxy is a live process whose command line contains "slapos"
    writeFileSync(node.pidfiles.software, String(node.proxy.pid))
    const r = await node.run(['node', 'software', '--now'])
    assert.is(r.code, 10, r.stderr)
    assert.equal(node.calls(), [])
    assert.is(readFileSync(node.pidfiles.software, 'utf8'), String(node.proxy.pid))
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr)
    // the instance pid file is another lock: node software is not blocked by it
    writeFileSync(node.pidfiles.software, '999999999')
    writeFileSync(node.pidfiles.instance, String(node.proxy.pid))
    const ok = await node.run(['node', 'software', '--now'])
    assert.is(ok.code, 0, ok.stderr)
    assert.not.ok(existsSync(node.pidfiles.software))
    assert.ok(existsSync(node.pidfiles.instance))
  }))

test('configuration errors: a missing mandatory key exits 1 with one line and no master call; a missing file too', () =>
  withNode(async (node) => {
    const text = readFileSync(node.cfgPath, 'utf8')
    writeFileSync(node.cfgPath, text.replace(/^software_root = .*\n/m, '').replace(/^computer_id = .*\n/m, ''))
    const r = await node.run(['node', 'software', '--now'])
    assert.is(r.code, 1)
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr)
    assert.match(r.stderr, 'Missing mandatory parameters: computer_id, software_root')
    assert.not.match(r.stderr, /\bat \w+ \(/)
    assert.equal(node.calls(), [])
    // the command line fills what the file lacks
    await node.supply()
    const ok = await node.run(['node', 'software', '--now', '--computer-id', 'computer', '--software-root', node.softwareRoot])
    assert.is(ok.code, 0, ok.stderr)
    // a configured key file that does not exist
    writeFileSync(node.cfgPath, text.replace('[slapos]\n', `[slapos]\nkey_file = ${node.dir}/nope.key\ncert_file = ${node.dir}/nope.crt\n`))
    node.clearCalls()
    const k = await node.run(['node', 'software', '--now'])
    assert.is(k.code, 1)
    assert.match(k.stderr, 'key_file file does not exist')
    assert.equal(node.calls(), [])
    // software_root that is not there
    writeFileSync(node.cfgPath, text.replace(/^software_root = .*$/m, `software_root = ${node.dir}/no-such-dir`))
    const s = await node.run(['node', 'software', '--now'])
    assert.is(s.code, 1)
    assert.match(s.stderr, `${node.dir}/no-such-dir does not exist.`)
    // the master cannot be reached: exit 1, one line, pid file removed
    writeFileSync(node.cfgPath, text.replace(/^master_url = .*$/m, 'master_url = http://127.0.0.1:9/'))
    const u = await node.run(['node', 'software', '--now'])
    assert.is(u.code, 1)
    assert.is(u.stderr.trim().split('\n').length, 1, u.stderr)
    assert.match(u.stderr, "Couldn't connect to the master")
    assert.not.ok(existsSync(node.pidfiles.software))
    // no configuration file at all
    const m = await node.run(['node', 'software', '--now', '--cfg', join(node.dir, 'missing.cfg')], { noCfg: true })
    assert.is(m.code, 1)
    assert.match(m.stderr, 'missing.cfg')
  }))

test('root check: as a non-root user with the default root_check the run exits 5; root_check = false lets it run', async () => {
  if (!isRoot) return skip('needs root')
  await withNode(async (node) => {
    const text = readFileSync(node.cfgPath, 'utf8')
    writeFileSync(node.cfgPath, text.replace('root_check = false\n', ''))
    chmodSync(node.cfgPath, 0o644)
    const r = await node.run(['node', 'software', '--now'], { user: { uid: 65534, gid: 65534 } })
    assert.is(r.code, 5, r.stderr)
    assert.match(r.stderr, 'root')
    assert.equal(node.calls(), [])
    writeFileSync(node.cfgPath, text.replace('root_check = false\n', 'root_check = maybe\n'))
    const bad = await node.run(['node', 'software', '--now'])
    assert.is(bad.code, 1)
    assert.match(bad.stderr, "root_check")
  })
})

test('a node kept by an unprivileged user (no root): builds as that user and removes read-only content', async () => {
  if (!isRoot) return skip('needs root')
  await withNode(async (node) => {
    const nobody = { uid: 65534, gid: 65534 }
    for (const d of [node.softwareRoot, node.instanceRoot, join(node.dir, 'run'), join(node.dir, 'sr')]) chownTree(d, nobody.uid, nobody.gid)
    chmodSync(node.cfgPath, 0o644)
    await node.supply()
    const r = await node.run(['node', 'software', '--now'], { user: nobody })
    assert.is(r.code, 0, r.stderr)
    const path = join(node.softwareRoot, md5hex(node.srUrl))
    assert.is(statSync(join(path, 'instance.cfg')).uid, nobody.uid)
    mkdirSync(join(path, 'ro'))
    writeFileSync(join(path, 'ro', 'f'), 'x')
    chownTree(join(path, 'ro'), nobody.uid, nobody.gid)
    chmodSync(join(path, 'ro'), 0o500)
    await node.supply(node.srUrl, 'destroyed')
    node.clearCalls()
    const d = await node.run(['node', 'software', '--now'], { user: nobody })
    assert.is(d.code, 0, d.stderr)
    assert.not.ok(existsSync(path))
    assert.equal(names(node.calls()), ['getFullComputerInformation', 'destroyedSoftwareRelease'])
  })
})

test('as root, a software_root owned by nobody makes buildout run as nobody', async () => {
  if (!isRoot) return skip('needs root')
  await withNode(async (node) => {
    chownSync(node.softwareRoot, 65534, 65534)
    chownTree(join(node.dir, 'sr'), 65534, 65534) // the develop egg writes its egg-info there
    await node.supply()
    const r = await node.run(['node', 'software', '--now'])
    assert.is(r.code, 0, r.stderr)
    const path = join(node.softwareRoot, md5hex(node.srUrl))
    for (const f of ['', 'buildout.cfg', 'extends-cache', 'instance.cfg', '.installed.cfg', 'parts', 'eggs', 'develop-eggs']) {
      assert.is(statSync(join(path, f)).uid, 65534, `owner of ${f || 'the software directory'}`)
      assert.is(statSync(join(path, f)).gid, 65534, `group of ${f || 'the software directory'}`)
    }
    // umask 027 in the child
    assert.is(statSync(join(path, 'parts')).mode & 0o777, 0o750)
  })
})

test('as root, a software_root owned by root is refused unless run_as_root = true (root_check = false is not enough), with a warning on every run when it is', async () => {
  if (!isRoot) return skip('needs root')
  await withNode(async (node) => {
    const text = readFileSync(node.cfgPath, 'utf8')
    await node.supply()
    for (const cfg of [text.replace('root_check = false', 'root_check = true').replace('run_as_root = true\n', ''), text.replace('run_as_root = true\n', '')]) {
      writeFileSync(node.cfgPath, cfg)
      node.clearCalls()
      const r = await node.run(['node', 'software', '--now'])
      assert.is(r.code, 1)
      const err = node.calls().find((c) => c.name === 'softwareReleaseError')
      assert.match(err?.fields.error_log ?? '', 'too dangerous')
      assert.match(err?.fields.error_log ?? '', 'run_as_root = true')
      assert.not.match(r.stderr, 'run_as_root = true: software releases and partitions owned by root build and run as root')
    }
    writeFileSync(node.cfgPath, text)
    const r = await node.run(['node', 'software', '--now'])
    assert.is(r.code, 0, r.stderr)
    assert.match(r.stderr, /WARNING run_as_root = true: software releases and partitions owned by root build and run as root/)
  })
})

test('--garbage-collect removes md5-named directories with a buildout.cfg that are not supplied, keeps the rest', () =>
  withNode(async (node) => {
    await node.supply()
    const stale = join(node.softwareRoot, md5hex('http://old/software.cfg'))
    const notSr = join(node.softwareRoot, md5hex('http://other/software.cfg'))
    const odd = join(node.softwareRoot, 'not-a-hash')
    for (const d of [stale, notSr, odd]) mkdirSync(d)
    writeFileSync(join(stale, 'buildout.cfg'), '[buildout]\n')
    writeFileSync(join(odd, 'buildout.cfg'), '[buildout]\n')
    const r = await node.run(['node', 'software', '--now', '--garbage-collect'])
    assert.is(r.code, 0, r.stderr)
    assert.not.ok(existsSync(stale))
    assert.ok(existsSync(notSr))
    assert.ok(existsSync(odd))
    assert.ok(existsSync(join(node.softwareRoot, md5hex(node.srUrl), '.completed')))
  }))

test('legacy name slapgrid-sr with the configuration as positional argument; grid software alias', () =>
  withNode(async (node) => {
    await node.supply()
    const r = await node.run(['--now', node.cfgPath], { noCfg: true, argv0: 'slapgrid-sr' })
    assert.is(r.code, 0, r.stderr)
    assert.equal(names(node.calls()), ['getFullComputerInformation', 'buildingSoftwareRelease', 'availableSoftwareRelease'])
    node.clearCalls()
    const g = await node.run(['grid', 'software', '--now'])
    assert.is(g.code, 0, g.stderr)
    assert.equal(names(node.calls()), ['getFullComputerInformation'])
  }))

test('software_min_free_space: not enough space is an SR error naming the option', () =>
  withNode(
    async (node) => {
      await node.supply()
      const r = await node.run(['node', 'software', '--now'])
      assert.is(r.code, 1)
      const err = node.calls().find((c) => c.name === 'softwareReleaseError')
      assert.match(err?.fields.error_log ?? '', 'software_min_free_space')
      assert.match(r.stderr, /failed: Not enough free space/)
    },
    { extraSlapos: 'software_min_free_space = 900000T' },
  ))

test('a software user ~/.netrc is copied into the SR (0600) and removed there when it disappears', async () => {
  if (!isRoot) return skip('needs root')
  await withNode(async (node) => {
    // a uid without passwd entry has its home in the software root itself (see ownerOf)
    const uid = 54321
    chownSync(node.softwareRoot, uid, uid)
    chownTree(join(node.dir, 'sr'), uid, uid)
    writeFileSync(join(node.softwareRoot, '.netrc'), 'machine example.com login a password b\n')
    await node.supply()
    assert.is((await node.run(['node', 'software', '--now'])).code, 0)
    const copy = join(node.softwareRoot, md5hex(node.srUrl), '.netrc')
    assert.is(readFileSync(copy, 'utf8'), 'machine example.com login a password b\n')
    assert.is(statSync(copy).mode & 0o777, 0o600)
    assert.is(statSync(copy).uid, uid)
    rmSync(join(node.softwareRoot, '.netrc'))
    assert.is((await node.run(['node', 'software', '--now', '--force'])).code, 0)
    assert.not.ok(existsSync(copy))
  })
})

test('the SR buildout: cwd and HOME = the SR directory, clean environment, umask 027, -U and the networkcache overrides, -D with --buildout-debug', () =>
  withNode(
    async (node) => {
      // a buildout that records how it was started (a real process, a shebang script)
      const fake = join(node.dir, 'record-buildout')
      writeFileSync(
        fake,
        '#!/bin/sh\n{ echo "cwd=$(pwd)"; echo "umask=$(umask)"; echo "uid=$(id -u)"; echo "args=$*"; env | sort; } > "$PWD/record.txt"\necho "fake buildout ran"\n',
      )
      chmodSync(fake, 0o755)
      writeFileSync(node.cfgPath, readFileSync(node.cfgPath, 'utf8').replace(/^buildout = .*$/m, `buildout = ${fake}`))
      await node.supply()
      const env = { PATH: '/usr/bin:/bin', HOME: '/root', PYTHONPATH: '/bad', LANG: 'C.UTF-8', LC_ALL: 'C', TMPDIR: '/tmp', KEEP_ME: '1' }
      const r = await node.run(['node', 'software', '--now'], { env })
      assert.is(r.code, 0, r.stderr)
      const path = join(node.softwareRoot, md5hex(node.srUrl))
      const rec = readFileSync(join(path, 'record.txt'), 'utf8')
      assert.match(rec, `cwd=${path}\n`)
      assert.match(rec, `\nHOME=${path}\n`)
      assert.match(rec, 'umask=0027\n')
      assert.match(rec, '\nPYTHONNOUSERSITE=true\n')
      assert.match(rec, '\nKEEP_ME=1\n')
      for (const v of ['PYTHONPATH', 'LANG', 'LC_ALL', 'TMPDIR']) assert.not.match(rec, new RegExp(`^${v}=`, 'm'), v)
      assert.match(
        rec,
        `args=-U buildout:extends-cache=${path}/extends-cache buildout:directory=${path} buildout:networkcache-section=networkcache ` +
          `networkcache:upload-cache-url=https://cache.example/ networkcache:upload-dir-url=https://dir.example/ -N -c ${path}/buildout.cfg\n`,
      )
      assert.match(r.stderr, `[${md5hex(node.srUrl)}] fake buildout ran`)
      // --buildout-debug: -D first, buildout on our terminal (its output is not in the log)
      const d = await node.run(['node', 'software', '--now', '--force', '--buildout-debug'], { env })
      assert.is(d.code, 0, d.stderr)
      assert.match(readFileSync(join(path, 'record.txt'), 'utf8'), 'args=-D -U ')
      assert.not.match(d.stderr, `[${md5hex(node.srUrl)}] fake buildout ran`)
      assert.match(d.stdout, 'fake buildout ran')
    },
    { extraCfg: '[networkcache]\nupload-cache-url = https://cache.example/\nupload-dir-url = https://dir.example/\ndownload-cache-url = https://not-passed.example/\n' },
  ))

test('start-up: $SLAPOS_CONFIGURATION, command-line values win over the file, --pidfile, maximal_delay and --now', () =>
  withNode(async (node) => {
    await node.supply()
    const text = readFileSync(node.cfgPath, 'utf8')
    // a wrong master in the file, the right one on the command line; no pidfile_software: --pidfile is used
    writeFileSync(node.cfgPath, text.replace(/^master_url = .*$/m, 'master_url = http://127.0.0.1:9/').replace(/^pidfile_software = .*\n/m, '').replace('[slapos]\n', '[slapos]\nmaximal_delay = 2\n'))
    const pid = join(node.dir, 'run', 'from-cli.pid')
    writeFileSync(pid, String(node.proxy.pid))
    const env = { PATH: '/usr/bin:/bin', HOME: '/root', SLAPOS_CONFIGURATION: node.cfgPath }
    const locked = await node.run(['node', 'software', '--now', '--master-url', node.masterUrl, '--pidfile', pid], { env, noCfg: true })
    assert.is(locked.code, 10, locked.stderr)
    rmSync(pid)
    const t0 = Date.now()
    const r = await node.run(['node', 'software', '--master-url', node.masterUrl, '--pidfile', pid], { env, noCfg: true })
    const took = Date.now() - t0
    assert.is(r.code, 0, r.stderr)
    assert.match(r.stderr, /Sleeping for [12] seconds?/)
    assert.ok(took >= 1000, `took ${took} ms`)
    assert.equal(names(node.calls()), ['getFullComputerInformation', 'buildingSoftwareRelease', 'availableSoftwareRelease'])
    assert.not.ok(existsSync(pid))
    const bad = await node.run(['node', 'software', '--now', '--maximal_delay', 'x'])
    assert.is(bad.code, 2, bad.stderr)
    assert.match(bad.stderr, "invalid int value: 'x'")
  }))

test('certificates: key_file without cert_file, or a certificate repository that is not a directory, exit 1 before any call', () =>
  withNode(async (node) => {
    const text = readFileSync(node.cfgPath, 'utf8')
    writeFileSync(join(node.dir, 'node.key'), 'k')
    writeFileSync(node.cfgPath, text.replace('[slapos]\n', `[slapos]\nkey_file = ${node.dir}/node.key\n`))
    const r = await node.run(['node', 'software', '--now'])
    assert.is(r.code, 1)
    assert.match(r.stderr, 'cert_file')
    writeFileSync(node.cfgPath, text.replace(/^certificate_repository_path = .*$/m, `certificate_repository_path = ${node.cfgPath}`))
    const c = await node.run(['node', 'software', '--now'])
    assert.is(c.code, 1)
    assert.match(c.stderr, 'certificate_repository_path is not a directory')
    assert.equal(node.calls(), [])
  }))

test('SIGTERM during buildout: buildout is stopped, the error reported, no further SR, pid file removed, exit 1', () =>
  withNode(async (node) => {
    const fake = join(node.dir, 'slow-buildout')
    writeFileSync(fake, '#!/bin/sh\necho "slow buildout started"\nsleep 30\necho "not reached"\n')
    chmodSync(fake, 0o755)
    writeFileSync(node.cfgPath, readFileSync(node.cfgPath, 'utf8').replace(/^buildout = .*$/m, `buildout = ${fake}`))
    const second = join(node.dir, 'second.cfg')
    await node.supply()
    await node.supply(second)
    const child = spawn(SLAPOS, ['node', 'software', '--now', '--cfg', node.cfgPath], { env: { PATH: '/usr/bin:/bin', HOME: '/root' }, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)))
    await new Promise<void>((res, rej) => {
      const t = setTimeout(() => rej(new Error(`buildout did not start:\n${stderr}`)), 20_000)
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr += d
        if (stderr.includes('slow buildout started')) {
          clearTimeout(t)
          res()
        }
      })
    })
    const t0 = Date.now()
    child.kill('SIGTERM')
    const code = await exited
    assert.ok(Date.now() - t0 < 10_000, 'stopped promptly')
    assert.is(code, 1, stderr)
    assert.equal(names(node.calls()), ['getFullComputerInformation', 'buildingSoftwareRelease', 'softwareReleaseError'])
    assert.match(node.calls()[2]?.fields.error_log ?? '', 'SIGTERM received')
    assert.not.ok(stderr.includes('not reached'))
    assert.not.ok(existsSync(node.pidfiles.software))
    assert.not.ok(existsSync(join(node.softwareRoot, md5hex(node.srUrl), '.completed')))
  }))

function chownTree(p: string, uid: number, gid: number): void {
  chownSync(p, uid, gid)
  if (!statSync(p).isDirectory()) return
  for (const n of readdirSync(p)) chownTree(join(p, n), uid, gid)
}


test('.completed is written only once the master accepted availableSoftwareRelease; a refused report is sent again next run', () =>
  withNode(async (node) => {
    // a front of the master that fails availableSoftwareRelease and forwards the rest
    const { createServer, request } = await import('node:http')
    let refuse = true
    const seen: string[] = []
    const front = createServer((req, res) => {
      const name = new URL(req.url ?? '/', 'http://x').pathname.slice(1)
      seen.push(name)
      if (refuse && name === 'availableSoftwareRelease') {
        req.resume()
        return void res.writeHead(500).end('refused')
      }
      const up = new URL(node.masterUrl)
      const fwd = request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: { ...req.headers, host: up.host } }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers)
        r.pipe(res)
      })
      req.pipe(fwd)
    })
    await new Promise<void>((ok) => front.listen(0, '127.0.0.1', ok))
    try {
      const port = (front.address() as { port: number }).port
      writeFileSync(node.cfgPath, readFileSync(node.cfgPath, 'utf8').replace(/^master_url = .*$/m, `master_url = http://127.0.0.1:${port}/`))
      const dir = join(node.dir, 'empty-sr')
      mkdirSync(dir)
      const url = join(dir, 'software.cfg')
      writeFileSync(url, '[buildout]\nparts =\n')
      await node.supply(url)
      const first = await node.run(['node', 'software', '--now'])
      assert.is(first.code, 1, first.stderr)
      assert.not.ok(existsSync(join(node.softwareRoot, md5hex(url), '.completed')))
      refuse = false
      seen.length = 0
      const second = await node.run(['node', 'software', '--now'])
      assert.is(second.code, 0, second.stderr)
      assert.ok(seen.includes('availableSoftwareRelease'), seen.join(', '))
      assert.ok(existsSync(join(node.softwareRoot, md5hex(url), '.completed')))
    } finally {
      await new Promise<void>((ok) => front.close(() => ok()))
    }
  }))

test.run()
