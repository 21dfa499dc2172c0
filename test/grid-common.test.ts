// Unit tests of the node's shared pieces: pid file, md5 names, owners, clean environment,
// privilege decision, and buildout runs (real buildout through the wrapper, real processes).
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { buildoutFailure, runBuildout } from '../src/buildout.ts'
import { ConfigFile, loadNodeConfig } from '../src/config.ts'
import { LockedError, SlapError } from '../src/errors.ts'
import { asUser, cleanEnv, md5hex, ownerOf, type Owner } from '../src/grid-common.ts'
import { acquirePidfile } from '../src/pidfile.ts'
import { privilegeDrop, realRunner } from '../src/system.ts'
import { skip, tempDir } from './helpers.ts'
import { buildoutShim, renderSoftwareRelease } from './node-helpers.ts'

const isRoot = process.getuid?.() === 0

test('md5hex: lowercase hex md5 of the UTF-8 URL (the software directory name)', () => {
  // values from Python's hashlib.md5(url.encode()).hexdigest()
  assert.is(md5hex('http://example.com/software.cfg'), '91d5c3732524c019b6f1d313793d8809')
  assert.is(md5hex(''), 'd41d8cd98f00b204e9800998ecf8427e')
  assert.is(md5hex('http://x/\u00e9.cfg'), '2bb6f06106f9fcda12f78505bd853c7e')
  // the JavaScript MD5 against OpenSSL's, across block boundaries and multi-byte characters
  const lengths = [1, 54, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000]
  const alphabet = 'a\u00e9\u65e5\u{1f44d}/:.'
  for (const n of lengths) {
    let text = ''
    for (let i = 0; i < n; i++) text += [...alphabet][(i * 7 + n) % [...alphabet].length]
    assert.is(md5hex(text), createHash('md5').update(text, 'utf8').digest('hex'), `length ${n}`)
  }
})

test('cleanEnv: drops Python, locale and temp variables, sets HOME and PYTHONNOUSERSITE', () => {
  const env = cleanEnv(
    {
      PATH: '/usr/bin',
      USER: 'slapsoft',
      PYTHONPATH: '/x',
      PYTHONHOME: '/y',
      PYTHONDONTWRITEBYTECODE: '1',
      LANG: 'C.UTF-8',
      LANGUAGE: 'en',
      LC_ALL: 'C',
      LC_CTYPE: 'C',
      TMPDIR: '/t',
      TMP: '/t',
      TEMP: '/t',
      LOGNAME: 'root',
      ENV: '/e',
      CONFIG_SITE: '/c',
      HOME: '/root',
      KEEP: 'yes',
    },
    '/srv/sr',
  )
  assert.equal(env, { PATH: '/usr/bin', USER: 'slapsoft', HOME: '/srv/sr', KEEP: 'yes', PYTHONNOUSERSITE: 'true' })
})

test('ownerOf: stat owner named through /etc/passwd, groups from /etc/group', () => {
  const dir = tempDir()
  try {
    const root = ownerOf(dir)
    assert.is(root.uid, process.getuid?.())
    if (isRoot) {
      assert.is(root.name, 'root')
      assert.is(root.home, '/root')
      chownSync(dir, 65534, 65534)
      const nobody = ownerOf(dir)
      assert.equal([nobody.uid, nobody.gid, nobody.name, nobody.home], [65534, 65534, 'nobody', '/nonexistent'])
      assert.is(nobody.groups[0], 65534)
      // a uid without a passwd entry is named by its number, home = the path
      chownSync(dir, 54321, 54321)
      const anon = ownerOf(dir)
      assert.equal([anon.uid, anon.gid, anon.name, anon.home, anon.groups], [54321, 54321, '54321', dir, [54321]])
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('asUser: root drops to the owner; root-owned refused unless run_as_root = true', () => {
  const nobody: Owner = { uid: 65534, gid: 65534, name: 'nobody', home: '/', groups: [65534] }
  const root: Owner = { uid: 0, gid: 0, name: 'root', home: '/root', groups: [0] }
  if (!isRoot) {
    assert.equal(asUser(nobody, true), {})
    return
  }
  assert.equal(asUser(nobody, true), { uid: 65534, gid: 65534, groups: [65534] })
  assert.equal(asUser({ ...nobody, groups: [65534, 4242] }, true), { uid: 65534, gid: 65534, groups: [65534, 4242] })
  assert.equal(asUser(root, false), {})
  assert.throws(() => asUser(root, true), (e: unknown) => e instanceof SlapError && /too dangerous/.test(e.message))
  assert.throws(() => asUser({ ...nobody, gid: 0 }, true), /too dangerous/)
})

test('privilegeDrop: setpriv only for supplementary groups, as root, when it is there', () => {
  const found = () => '/usr/bin/setpriv'
  const drop = { uid: 1001, gid: 1001, groups: [1001, 1000, 27] }
  if (isRoot) {
    assert.equal(privilegeDrop(drop, found), { argv: ['/usr/bin/setpriv', '--reuid=1001', '--regid=1001', '--groups=1001,1000,27', '--'] })
    // no supplementary group: spawn's own uid/gid (which clears them) is the same thing
    assert.equal(privilegeDrop({ uid: 1001, gid: 1001, groups: [1001] }, found), { argv: [], uid: 1001, gid: 1001 })
    // no setpriv on this system: the groups are cleared, as before
    assert.equal(privilegeDrop(drop, () => null), { argv: [], uid: 1001, gid: 1001 })
  } else assert.equal(privilegeDrop(drop, found), { argv: [], uid: 1001, gid: 1001 })
  assert.equal(privilegeDrop({}, found), { argv: [], uid: undefined, gid: undefined })
})

test('as root, a child gets the uid, gid and supplementary groups it is given (setpriv), cwd and umask kept', async () => {
  if (!isRoot) return skip('needs root')
  const dir = tempDir()
  try {
    chmodSync(dir, 0o755)
    const r = await realRunner.run(['/bin/sh', '-c', 'id -u; id -g; id -G; pwd; umask'], { uid: 65534, gid: 65534, groups: [65534, 4242, 4343], cwd: dir, umask: 0o027 })
    assert.is(r.code, 0, r.stderr)
    const [uid, gid, groups, cwd, umask] = r.stdout.trim().split('\n')
    assert.equal([uid, gid, cwd, umask], ['65534', '65534', dir, '0027'])
    assert.equal((groups ?? '').split(' ').sort(), ['4242', '4343', '65534'])
    // without supplementary groups: none at all (not root's)
    const plain = await realRunner.run(['id', '-G'], { uid: 65534, gid: 65534, groups: [65534] })
    assert.is(plain.stdout.trim(), '65534')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('pidfile: written without newline, released at the end; a live slapos holder gives LockedError (exit 10)', async () => {
  const dir = tempDir()
  const path = join(dir, 'sub', 'slapgrid-sr.pid')
  try {
    const release = acquirePidfile(path)
    assert.is(readFileSync(path, 'utf8'), String(process.pid))
    // taking it again from the same process is allowed (our own pid)
    acquirePidfile(path)
    release()
    assert.not.ok(existsSync(path))

    // stale: a dead pid is overwritten
    writeFileSync(path, '999999999')
    const r2 = acquirePidfile(path)
    assert.is(readFileSync(path, 'utf8'), String(process.pid))
    r2()

    // live, but not a slapos process (pid recycled): overwritten
    const sleeper = spawn('sleep', ['30'])
    writeFileSync(path, String(sleeper.pid))
    const r3 = acquirePidfile(path)
    assert.is(readFileSync(path, 'utf8'), String(process.pid))
    r3()
    sleeper.kill()

    // live slapos process: refused, file untouched
    const wrapped = spawn('sh', ['-c', 'sleep 30; true', 'slapos-node-software'], { stdio: 'ignore' })
    await new Promise((r) => setTimeout(r, 100))
    writeFileSync(path, String(wrapped.pid))
    try {
      acquirePidfile(path)
      assert.unreachable('should be locked')
    } catch (e) {
      assert.instance(e, LockedError)
      assert.is((e as LockedError).exitCode, 10)
    }
    assert.is(readFileSync(path, 'utf8'), String(wrapped.pid))
    await new Promise((r) => {
      wrapped.once('exit', r)
      wrapped.kill()
    })

    // release does not remove a file another run took over
    const r4 = acquirePidfile(path)
    writeFileSync(path, '12345')
    r4()
    assert.is(readFileSync(path, 'utf8'), '12345')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('runBuildout: real buildout through the wrapper, lines streamed, clean env, umask 027', async () => {
  const dir = tempDir()
  try {
    const shim = buildoutShim(join(dir, 'shim'))
    const url = renderSoftwareRelease(join(dir, 'sr'))
    const work = join(dir, 'software')
    mkdirSync(work)
    writeFileSync(join(work, 'buildout.cfg'), `[buildout]\nextends = ${url}\n`)
    const lines: string[] = []
    const res = await runBuildout({
      binary: shim,
      args: ['-U', `buildout:directory=${work}`, '-N', '-c', join(work, 'buildout.cfg')],
      cwd: work,
      owner: ownerOf(work),
      home: work,
      runner: realRunner,
      rootCheck: false,
      baseEnv: { PATH: '/usr/bin:/bin', PYTHONPATH: '/nonexistent-should-be-dropped', LANG: 'C' },
      onLine: (l) => lines.push(l),
    })
    assert.ok(res.ok, res.output)
    assert.not.ok(res.timedOut)
    assert.ok(lines.some((l) => l.includes('Installing instance-profile')), lines.join('\n'))
    assert.match(res.output, 'Installing instance-profile')
    assert.ok(existsSync(join(work, 'instance.cfg')))
    // umask 027: buildout's directories are not world-readable
    assert.is(statSync(join(work, 'parts')).mode & 0o777, 0o750)

    // a failing profile: ok false, the output says why
    writeFileSync(join(work, 'buildout.cfg'), `[buildout]\nextends = ${join(dir, 'missing.cfg')}\n`)
    const bad = await runBuildout({ binary: shim, args: ['-c', join(work, 'buildout.cfg')], cwd: work, owner: ownerOf(work), home: work, runner: realRunner, rootCheck: false })
    assert.not.ok(bad.ok)
    assert.match(bad.output, 'missing.cfg')
    assert.match(buildoutFailure(work, bad.output), `Failed to run buildout profile in directory '${work}':\n`)

    // an executable that does not exist: not ok, no exception
    const none = await runBuildout({ binary: join(dir, 'nope'), args: [], cwd: work, owner: ownerOf(work), home: work, runner: realRunner, rootCheck: false })
    assert.not.ok(none.ok)
    assert.match(none.output, 'ENOENT')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('runBuildout: the timeout kills the whole process tree', async () => {
  const dir = tempDir()
  try {
    const script = join(dir, 'fake-buildout')
    const marker = join(dir, 'grandchild.pid')
    writeFileSync(script, `#!/bin/sh\nsleep 60 &\necho $! > ${marker}\necho started\nwait\n`)
    chmodSync(script, 0o755)
    const t0 = Date.now()
    const res = await runBuildout({ binary: script, args: [], cwd: dir, owner: ownerOf(dir), home: dir, runner: realRunner, rootCheck: false, timeoutMs: 500 })
    assert.ok(Date.now() - t0 < 5000)
    assert.not.ok(res.ok)
    assert.ok(res.timedOut)
    assert.match(res.output, 'started')
    assert.match(res.output, 'timeout')
    const grandchild = Number(readFileSync(marker, 'utf8'))
    await new Promise((r) => setTimeout(r, 1500))
    // gone, or a zombie waiting for init to reap it (its parent was killed as well)
    let alive = true
    try {
      alive = !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${grandchild}/stat`, 'utf8'))
    } catch {
      alive = false
    }
    assert.not.ok(alive, 'the sleep started by the script must be killed too')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('default pid files: slapgrid-sr/-cp/-ur.pid in /opt/slapos; pidfile (--pidfile) only fills what the file does not name', () => {
  const base = '[slapos]\ncomputer_id = C\nmaster_url = http://m/\nsoftware_root = /s\ninstance_root = /i\n'
  const d = loadNodeConfig(ConfigFile.fromText(base, '/etc/slapos.cfg'))
  assert.equal([d.pidfileSoftware, d.pidfileInstance, d.pidfileReport], ['/opt/slapos/slapgrid-sr.pid', '/opt/slapos/slapgrid-cp.pid', '/opt/slapos/slapgrid-ur.pid'])
  const o = loadNodeConfig(ConfigFile.fromText(base + 'pidfile_software = /run/sr.pid\n', '/etc/slapos.cfg'), { pidfile: '/tmp/cli.pid' })
  assert.equal([o.pidfileSoftware, o.pidfileInstance, o.pidfileReport], ['/run/sr.pid', '/tmp/cli.pid', '/tmp/cli.pid'])
})

test.run()
