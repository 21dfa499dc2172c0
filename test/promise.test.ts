// Tests of promise.ts with real processes: legacy etc/promise executables, their results in
// .slapgrid/promise/result/<title>.status.json, the timeout killing the whole process group,
// the privilege drop to the partition owner (we run as root here), skipped entries.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { createLogger } from '../src/log.ts'
import { firstFailure, pluginImportPath, promiseFailureMessage, runPromises, softwarePython } from '../src/promise.ts'
import { spawn, spawnSync } from 'node:child_process'
import { realRunner } from '../src/system.ts'
import { FIXTURES, fixtureForAll, skip, tempDir } from './helpers.ts'

const lines: string[] = []
const log = createLogger({ level: 'debug', write: (l) => void lines.push(l), isTTY: false })
const ROOT_OWNER = { uid: 0, gid: 0, name: 'root', home: '/root' }

function partition(promises: Record<string, string | { text: string; mode: number }>): string {
  const dir = tempDir('slapos-promise-')
  chmodSync(dir, 0o755)
  mkdirSync(join(dir, 'etc', 'promise'), { recursive: true })
  chmodSync(join(dir, 'etc'), 0o755)
  chmodSync(join(dir, 'etc', 'promise'), 0o755)
  for (const [name, body] of Object.entries(promises)) {
    const text = typeof body === 'string' ? body : body.text
    const mode = typeof body === 'string' ? 0o755 : body.mode
    writeFileSync(join(dir, 'etc', 'promise', name), text)
    chmodSync(join(dir, 'etc', 'promise', name), mode)
  }
  return dir
}

const t = suite('promises (grid.md §7)')

t('success and failure: all run, results saved as the original writes them, state files of older versions removed (checklist 85, 86, 88)', async () => {
  const dir = partition({
    'a-ok': '#!/bin/sh\necho fine\n',
    'b-fail.sh': '#!/bin/sh\necho "port 8080 closed" >&2\nexit 3\n',
    'c-ok': '#!/bin/sh\nexit 0\n',
  })
  // state files of older slapos.core versions go (§4.3); a link among them is removed, not followed
  const old = join(dir, '.slapgrid/promise')
  mkdirSync(join(old, 'history'), { recursive: true })
  writeFileSync(join(old, 'history/a-ok.history.json'), '{}')
  for (const f of ['promise_status.json', 'global.json', 'public.json', 'a-ok.timestamp', 'b-fail.periodicity', 'kept.json']) writeFileSync(join(old, f), '{}')
  const outside = join(dir, 'outside.json')
  writeFileSync(outside, 'kept')
  symlinkSync(outside, join(old, 'promise_stats.json'))
  const fixed = new Date(Date.UTC(2026, 0, 2, 3, 4, 5))
  const res = await runPromises({ path: dir, id: 'slappart0', owner: ROOT_OWNER, timeoutSec: 5, runner: realRunner, log, rootCheck: false, now: () => fixed })
  assert.equal(res.map((r) => [r.name, r.failed]), [['a-ok', false], ['b-fail.sh', true], ['c-ok', false]])
  const f = firstFailure(res)
  assert.ok(f)
  assert.is(promiseFailureMessage(f!), "Promise 'b-fail.sh' failed with output: port 8080 closed")
  const status = readFileSync(join(dir, '.slapgrid/promise/result/b-fail.status.json'), 'utf8')
  const parsed = JSON.parse(status)
  assert.equal(Object.keys(parsed), ['title', 'name', 'path', 'execution-time', 'result'])
  assert.is(parsed.title, 'b-fail')
  assert.is(parsed.name, 'b-fail.sh')
  assert.is(parsed.path, join(dir, 'etc/promise/b-fail.sh'))
  assert.equal(parsed.result, { type: 'Test Result', failed: true, date: '2026-01-02T03:04:05+0000', message: 'port 8080 closed' })
  assert.match(status, /^\{"title": "b-fail", "name": "b-fail.sh", /)
  assert.ok(existsSync(join(dir, '.slapgrid/promise/result/a-ok.status.json')))
  assert.match(readFileSync(join(dir, '.slapgrid/promise/log/b-fail.log'), 'utf8'), /^2026-01-02 03:04:05 - ERROR - \d+-\d{3} - port 8080 closed\n$/)
  assert.ok(lines.some((l) => l.includes("Promise 'b-fail.sh' failed with output: port 8080 closed")), 'error logged')
  assert.equal(readdirSync(old).sort(), ['cache', 'kept.json', 'log', 'result'])
  assert.is(readFileSync(outside, 'utf8'), 'kept')
})

t('a message over 5000 characters keeps its last 5000 after "..." in the result file (node-extras checklist 75)', async () => {
  const dir = partition({ chatty: '#!/bin/sh\nprintf "%06000d" 0; echo END; exit 1\n' })
  const res = await runPromises({ path: dir, id: 'slappart0', owner: ROOT_OWNER, timeoutSec: 5, runner: realRunner, log, rootCheck: false })
  assert.is(res[0]?.failed, true)
  const saved = JSON.parse(readFileSync(join(dir, '.slapgrid/promise/result/chatty.status.json'), 'utf8')) as { result: { message: string } }
  assert.is(saved.result.message.length, 5003)
  assert.ok(saved.result.message.startsWith('...0') && saved.result.message.endsWith('0END'))
  assert.equal(readdirSync(join(dir, '.slapgrid/promise/result')), ['chatty.status.json'], 'no temp file left')
})

t('a promise running past the timeout is killed with its children and fails (checklist 87)', async () => {
  const dir = partition({ slow: '#!/bin/sh\nsleep 30 &\necho $! > child.pid\nsleep 30\n' })
  const start = Date.now()
  const res = await runPromises({ path: dir, id: 'p', owner: ROOT_OWNER, timeoutSec: 1, runner: realRunner, log, rootCheck: false })
  const took = Date.now() - start
  assert.ok(took < 5000, `took ${took} ms`)
  assert.is(res[0]?.failed, true)
  assert.is(res[0]?.message, 'Error: Promise timed out after 1 seconds')
  const child = Number(readFileSync(join(dir, 'child.pid'), 'utf8'))
  await new Promise((r) => setTimeout(r, 1500))
  // gone, or a zombie waiting for init to reap it (it no longer runs)
  let state = 'gone'
  try {
    state = readFileSync(`/proc/${child}/stat`, 'utf8').replace(/^.*\) /, '').charAt(0)
  } catch {
    /* gone */
  }
  assert.ok(state === 'gone' || state === 'Z', `the background child of the promise is gone (state ${state})`)
})

t('non-executable and non-regular entries are skipped with a warning (checklist 92); none at all is fine', async () => {
  const dir = partition({ 'README': { text: 'not a promise', mode: 0o644 }, ok: '#!/bin/sh\nexit 0\n' })
  mkdirSync(join(dir, 'etc/promise/subdir'))
  lines.length = 0
  const res = await runPromises({ path: dir, id: 'p', owner: ROOT_OWNER, timeoutSec: 5, runner: realRunner, log, rootCheck: false })
  assert.equal(res.map((r) => r.name), ['ok'])
  assert.ok(lines.some((l) => l.includes('README is not an executable file')))
  assert.ok(lines.some((l) => l.includes('subdir is not an executable file')))
  const empty = tempDir('slapos-promise-')
  assert.equal(await runPromises({ path: empty, id: 'p', owner: ROOT_OWNER, timeoutSec: 5, runner: realRunner, log, rootCheck: false }), [])
})

t('promises run as the partition owner, result files belong to it', async () => {
  if (process.getuid?.() !== 0) return skip('needs root')
  const dir = partition({ who: '#!/bin/sh\nid -u; exit 1\n' })
  const nobody = { uid: 65534, gid: 65534, name: 'nobody', home: '/nonexistent' }
  const res = await runPromises({ path: dir, id: 'p', owner: nobody, timeoutSec: 5, runner: realRunner, log, rootCheck: true })
  assert.is(res[0]?.message, '65534')
  const { statSync } = await import('node:fs')
  assert.is(statSync(join(dir, '.slapgrid/promise/result/who.status.json')).uid, 65534)
  // a root-owned partition is refused unless run_as_root = true (rootCheck here: refuse root owners)
  let err: unknown
  try {
    await runPromises({ path: dir, id: 'p', owner: ROOT_OWNER, timeoutSec: 5, runner: realRunner, log, rootCheck: true })
  } catch (e) {
    err = e
  }
  assert.match(String(err), /Refusing to run as root .*too dangerous.*run_as_root = true/)
})

t("the partition's user swapping .slapgrid/promise and its directories for links while promises run: root writes, chowns and deletes nothing outside", async () => {
  if (process.getuid?.() !== 0) return skip('needs root')
  const dir = partition({ a: '#!/bin/sh\necho a; exit 1\n', b: '#!/bin/sh\nexit 0\n' })
  const nobody = { uid: 65534, gid: 65534, name: 'nobody', home: '/nonexistent' }
  // what root must leave alone: files of the names it writes, appends to and deletes in there
  const outside = tempDir('slapos-outside-')
  mkdirSync(join(outside, 'history'))
  const names = ['history/keep', 'global.json', 'a.timestamp', 'a.log', 'a.status.json', 'a', 'b']
  for (const n of names) writeFileSync(join(outside, n), `root's ${n}\n`, { mode: 0o600 })
  const before = () => JSON.stringify(spawnSync('find', [outside, '-printf', '%P %s %u %m\n']).stdout.toString().split('\n').sort())
  const expected = before()
  mkdirSync(join(dir, '.slapgrid', 'promise'), { recursive: true })
  // the user (as the partition's user): each directory exchanged with a link to the outside
  // (renameat2 RENAME_EXCHANGE, atomic) over and over, as fast as it can; a link root replaced
  // by a directory is put back
  spawnSync('chown', ['-R', `${nobody.uid}:${nobody.gid}`, join(dir, '.slapgrid')])
  const racer = spawn('python3', ['-c', `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
base, outside = sys.argv[1], sys.argv[2]
names = [os.path.join(base, '.slapgrid', n) for n in ('promise', 'promise/log', 'promise/result', 'promise/cache')]
i = 0
while True:
    for n in names:
        link = n + '.lnk'
        if not os.path.islink(link):
            i += 1
            try: os.rename(link, '%s.old%d' % (n, i))
            except OSError: pass
            try: os.symlink(outside, link)
            except OSError: pass
        for _ in range(2): libc.renameat2(-100, n.encode(), -100, link.encode(), 2)
`, dir, outside], { stdio: 'ignore', uid: nobody.uid, gid: nobody.gid })
  try {
    for (let i = 0; i < 80; i++) {
      try {
        await runPromises({ path: dir, id: 'p', owner: nobody, timeoutSec: 5, runner: realRunner, log, rootCheck: true, anomaly: i % 2 === 1 })
      } catch {
        // a run the user disturbed may fail: that is the user's own partition
      }
    }
  } finally {
    racer.kill('SIGKILL')
  }
  assert.is(before(), expected)
})

t('the Python of a software release, read from its bin/buildout like the original', () => {
  const sw = tempDir('slapos-sr-')
  assert.is(softwarePython(sw), undefined)
  mkdirSync(join(sw, 'bin'))
  writeFileSync(join(sw, 'bin/buildout'), '#!/opt/sr/bin/python3 -S\nimport sys\n')
  assert.is(softwarePython(sw), '/opt/sr/bin/python3')
  writeFileSync(join(sw, 'bin/buildout'), '#!/bin/sh\n"exec" "/opt/long/path/bin/python3" "-S" "$0" "$@"\n')
  assert.is(softwarePython(sw), '/opt/long/path/bin/python3')
  // a shell script without the exec line: the shell itself, as getPythonExecutableFromSoftwarePath answers
  writeFileSync(join(sw, 'bin/buildout'), '#!/bin/sh\necho hi\n')
  assert.is(softwarePython(sw), '/bin/sh')
  writeFileSync(join(sw, 'bin/buildout'), 'no shebang\n')
  assert.is(softwarePython(sw), undefined)
})

// A STAND-IN for slapos.core's slapos/grid/promise/runpromises.py (the real one needs
// slapos.core and its dependencies, absent here): it records its arguments and answers
// like the real runner would (exit 2 + message on stderr for a failing promise).
const FAKE_RUNPROMISES = `import os, sys, json
with open('runner-argv.json', 'w') as f:
    json.dump(sys.argv[1:], f)
mode = open('runner-mode').read().strip() if os.path.exists('runner-mode') else ''
print('checking 2 promises')
# one result file per promise, as the real launcher writes them
os.makedirs('.slapgrid/promise/result', exist_ok=True)
for title, failed, message in (('check-site', mode == 'fail', 'site is down' if mode == 'fail' else 'site is up'), ('legacy', False, '')):
    with open('.slapgrid/promise/result/%s.status.json' % title, 'w') as f:
        json.dump({'title': title, 'name': title + ('.py' if title == 'check-site' else ''), 'path': '', 'execution-time': 0.25,
                   'result': {'type': 'Test Result', 'failed': failed, 'date': '2026-01-01T00:00:00+0000', 'message': message}}, f)
if mode == 'fail':
    sys.stderr.write("Promise 'check-site' failed with output: site is down")
    sys.exit(2)
if mode == 'crash':
    sys.stderr.write('Traceback: ImportError')
    sys.exit(1)
if mode == 'warn':
    sys.stderr.write('DeprecationWarning: old egg')
if mode == 'hang':
    import time
    time.sleep(60)
`

t('plugins run through slapos.core runpromises.py with the software release Python (grid.md 7.4)', async () => {
  const egg = tempDir('slapos-egg-')
  mkdirSync(join(egg, 'slapos/grid/promise'), { recursive: true })
  writeFileSync(join(egg, 'slapos/grid/promise/runpromises.py'), FAKE_RUNPROMISES)
  const sw = tempDir('slapos-sr-')
  mkdirSync(join(sw, 'bin'))
  writeFileSync(join(sw, 'bin/buildout'), '#!/bin/sh\n"exec" "/usr/bin/python3" "$0" "$@"\n')
  const dir = partition({ legacy: '#!/bin/sh\nexit 1\n' })
  mkdirSync(join(dir, 'etc/plugin'))
  writeFileSync(join(dir, 'etc/plugin/check-site.py'), `import sys\nsys.path[0:0] = [\n  '/nonexistent/egg',\n  '${egg}',\n  ]\n\nextra_config_dict = {}\n`)
  const base = { path: dir, id: 'slappart7', owner: ROOT_OWNER, timeoutSec: 7, runner: realRunner, log, rootCheck: false, softwarePath: sw, masterUrl: 'http://master/', computerId: 'COMP-1', certFile: '/c/slappart7.crt', keyFile: '/c/slappart7.key' }
  const ok = await runPromises(base)
  // the runner checked everything (the legacy promise included); its result files say how each went
  assert.equal(ok.map((r) => [r.name, r.failed, r.message, r.durationMs]), [['check-site.py', false, 'site is up', 250], ['legacy', false, '', 250]])
  assert.equal(JSON.parse(readFileSync(join(dir, 'runner-argv.json'), 'utf8')), [
    '--promise-folder', join(dir, 'etc/plugin'),
    '--legacy-promise-folder', join(dir, 'etc/promise'),
    '--promise-timeout', '7',
    '--partition-folder', dir,
    '--log-folder', join(dir, '.slapgrid/promise/log'),
    '--force',
    '--master-url', 'http://master/',
    '--partition-cert', '/c/slappart7.crt',
    '--partition-key', '/c/slappart7.key',
    '--partition-id', 'slappart7',
    '--computer-id', 'COMP-1',
  ])
  writeFileSync(join(dir, 'runner-mode'), 'fail')
  const failed = await runPromises(base)
  assert.is(failed.length, 2)
  assert.is(failed[0]?.failed, true)
  assert.is(promiseFailureMessage(failed[0]!), "Promise 'check-site' failed with output: site is down")
  // anomaly mode, no certificate repository, no master: --check-anomaly instead of --force,
  // and every option still given, empty, in the original's order
  writeFileSync(join(dir, 'runner-mode'), '')
  await runPromises({ ...base, anomaly: true, masterUrl: undefined, certFile: undefined, keyFile: undefined, computerId: undefined })
  assert.equal(JSON.parse(readFileSync(join(dir, 'runner-argv.json'), 'utf8')).slice(10), [
    '--check-anomaly',
    '--master-url', '',
    '--partition-cert', '',
    '--partition-key', '',
    '--partition-id', 'slappart7',
    '--computer-id', '',
  ])
  writeFileSync(join(dir, 'runner-mode'), 'fail')
  writeFileSync(join(dir, 'runner-mode'), 'crash')
  let err: unknown
  try {
    await runPromises(base)
  } catch (e) {
    err = e
  }
  assert.match(String(err), /Failed to run the promises of slappart7: exit 1\nTraceback: ImportError/)
  // exit 0 with something on stderr: a warning only (checklist 63)
  writeFileSync(join(dir, 'runner-mode'), 'warn')
  lines.length = 0
  const warned = await runPromises(base)
  assert.equal(warned.map((r) => r.failed), [false, false])
  assert.ok(lines.some((l) => /WARNING/.test(l) && l.includes('Unexpected promise runner output:')), lines.join('\n'))
  // a runner past (plugins + legacy) x timeout + 10 s is killed and fails the partition (checklist 64)
  writeFileSync(join(dir, 'runner-mode'), 'hang')
  const t0 = Date.now()
  err = undefined
  try {
    await runPromises({ ...base, timeoutSec: 1 })
  } catch (e) {
    err = e
  }
  assert.match(String(err), /Failed to run the promises of slappart7: timed out after 12 s/)
  assert.ok(Date.now() - t0 < 20_000)
})

t("the release's Python may be a wrapper script (bin/buildout's #! names a shell script that execs python3)", async () => {
  const egg = tempDir('slapos-egg-')
  mkdirSync(join(egg, 'slapos/grid/promise'), { recursive: true })
  writeFileSync(join(egg, 'slapos/grid/promise/runpromises.py'), FAKE_RUNPROMISES)
  const sw = tempDir('slapos-sr-')
  mkdirSync(join(sw, 'bin'))
  writeFileSync(join(sw, 'python'), '#!/bin/sh\nexec /usr/bin/python3 "$@"\n', { mode: 0o755 })
  writeFileSync(join(sw, 'bin/buildout'), `#!${sw}/python\nimport sys\n`)
  assert.is(softwarePython(sw), join(sw, 'python'))
  const dir = partition({ legacy: '#!/bin/sh\nexit 0\n' })
  mkdirSync(join(dir, 'etc/plugin'))
  writeFileSync(join(dir, 'etc/plugin/check-site.py'), `import sys\nsys.path[0:0] = ['${egg}']\n`)
  const r = await runPromises({ path: dir, id: 'slappart1', owner: ROOT_OWNER, timeoutSec: 5, runner: realRunner, log, rootCheck: false, softwarePath: sw })
  assert.ok(existsSync(join(dir, 'runner-argv.json')), 'the runner ran through the wrapper')
  assert.equal(r.map((x) => x.name), ['check-site.py', 'legacy'])
})

t('anomaly mode: a legacy promise runs once per 2 minutes (its saved result counts meanwhile) and fails only after three failed runs; test mode always runs it', async () => {
  const dir = partition({ 'check-disk': '#!/bin/sh\necho run >> runs\necho "disk full"\nexit 1\n' })
  const runs = () => readFileSync(join(dir, 'runs'), 'utf8').trim().split('\n').length
  let clock = Date.UTC(2026, 0, 1, 12, 0, 0)
  const base = { path: dir, id: 'slappart0', owner: ROOT_OWNER, timeoutSec: 5, runner: realRunner, log, rootCheck: false, now: () => new Date(clock), anomaly: true }
  const failedAt = async (minutes: number) => {
    clock = Date.UTC(2026, 0, 1, 12, minutes, 0)
    return (await runPromises(base)).map((r) => r.failed)
  }
  assert.equal(await failedAt(0), [false], 'one failed run: no anomaly yet')
  assert.equal(await failedAt(1), [false], 'not due: the saved result (no failure) counts')
  assert.is(runs(), 1)
  assert.equal(await failedAt(3), [false], 'two failed runs')
  assert.equal(await failedAt(6), [true], 'three failed runs: an anomaly')
  assert.is(runs(), 3)
  assert.equal(await failedAt(7), [true], 'not due: the saved failure still counts')
  assert.is(runs(), 3, 'and the promise did not run')
  const cache = JSON.parse(readFileSync(join(dir, '.slapgrid/promise/cache/check-disk'), 'utf8')) as { next_run_after: number; periodicity: number }
  assert.is(cache.next_run_after, Date.UTC(2026, 0, 1, 12, 8, 0) / 1000)
  // test mode: run at once whatever the cache says, one failed run is a failure
  assert.equal((await runPromises({ ...base, anomaly: false })).map((r) => r.failed), [true])
  assert.is(runs(), 4)
  // the log holds one line per run, in the original's format
  const lines = readFileSync(join(dir, '.slapgrid/promise/log/check-disk.log'), 'utf8').trim().split('\n')
  assert.is(lines.length, 4)
  assert.match(lines[0]!, /^2026-01-01 \d\d:00:00 - ERROR - \d+-\d{3} - disk full$/)
})

/** A plugin shaped like slapos.cookbook's: the import path line, then a GenericPromise subclass. */
function plugin(framework: string, sense: string): string {
  return [
    'import sys',
    'sys.path[0:0] = [',
    `  '${framework}',`,
    '  ]',
    'from slapos.grid.promise.generic import GenericPromise',
    '',
    'class RunPromise(GenericPromise):',
    '  def __init__(self, config):',
    '    super(RunPromise, self).__init__(config)',
    '    self.setPeriodicity(minute=float(self.getConfig("periodicity", 1)))',
    '',
    '  def sense(self):',
    `    ${sense}`,
    '',
  ].join('\n')
}

t("without runpromises.py in the release's slapos.core, our runner drives its promise launcher (test mode, results, first failure)", async () => {
  const framework = fixtureForAll('promise-framework')
  const dir = partition({ 'legacy-ok': '#!/bin/sh\nexit 0\n' })
  mkdirSync(join(dir, 'etc/plugin'))
  writeFileSync(join(dir, 'etc/plugin/check-port.py'), plugin(framework, "self.logger.info('port 8080 open')"))
  writeFileSync(join(dir, 'etc/plugin/check-disk.py'), plugin(framework, "self.logger.error('disk full')"))
  // no software release Python: python3, the documented fallback
  const base = { path: dir, id: 'slappart2', owner: ROOT_OWNER, timeoutSec: 10, runner: realRunner, log, rootCheck: false }
  const results = await runPromises(base)
  assert.equal(results.map((r) => [r.name, r.failed, r.message]), [
    ['check-disk.py', true, 'disk full'],
    ['check-port.py', false, 'port 8080 open'],
    ['legacy-ok', false, ''],
  ])
  assert.is(promiseFailureMessage(firstFailure(results)!), "Promise 'check-disk.py' failed with output: disk full")
  const status = JSON.parse(readFileSync(join(dir, '.slapgrid/promise/result/check-port.status.json'), 'utf8')) as { result: { type: string } }
  assert.is(status.result.type, 'Test Result')
  // anomaly mode without --force: within their periodicity the saved results count, a saved failure too
  writeFileSync(join(dir, 'etc/plugin/check-disk.py'), plugin(framework, "self.logger.info('disk fine')"))
  const saved = await runPromises({ ...base, anomaly: true })
  assert.equal(saved.map((r) => r.failed), [true, false, false])
  // once due, anomaly mode reaches the plugins as such
  rmSync(join(dir, '.slapgrid/promise/cache'), { recursive: true })
  const anomaly = await runPromises({ ...base, anomaly: true })
  assert.equal(anomaly.map((r) => r.failed), [false, false, false])
  const again = JSON.parse(readFileSync(join(dir, '.slapgrid/promise/result/check-port.status.json'), 'utf8')) as { result: { type: string } }
  assert.is(again.result.type, 'Anomaly Result')
})

t('a release whose Python cannot import the promise framework: the plugin fails with a clear message; a plugin without its import path fails the partition', async () => {
  const dir = partition({})
  mkdirSync(join(dir, 'etc/plugin'))
  const empty = tempDir('slapos-no-framework-')
  writeFileSync(join(dir, 'etc/plugin/check-web.py'), plugin(empty, 'pass'))
  const base = { path: dir, id: 'slappart3', owner: ROOT_OWNER, timeoutSec: 10, runner: realRunner, log, rootCheck: false }
  const results = await runPromises(base)
  const failure = firstFailure(results)
  assert.ok(failure)
  assert.match(promiseFailureMessage(failure!), /^Promise 'check-web\.py' failed with output: the software release's Python cannot import slapos\.core's promise framework \(slapos\.grid\.promise\)/)
  writeFileSync(join(dir, 'etc/plugin/check-web.py'), 'x = 1\nimport sys\nsys.path[0:0] = []\n')
  let err: unknown
  try {
    await runPromises(base)
  } catch (e) {
    err = e
  }
  assert.match(String(err), /first assignment is not sys\.path\[0:0\]/)
})

t("the plugins' import path is the first top-level assignment, which must be sys.path[0:0] = [...]", () => {
  assert.equal(pluginImportPath("import sys\nsys.path[0:0] = [\n  '/a/egg',\n  \"/b/egg\",\n  ]\n\nextra_config_dict = {'x': 1}\n"), ['/a/egg', '/b/egg'])
  assert.equal(pluginImportPath("# comment\nimport sys\n\nsys.path[0:0] = ['/a']\n"), ['/a'])
  // indented lines (a function body) are not top level; == is no assignment
  assert.equal(pluginImportPath("if x == 1:\n    y = 2\nsys.path[0:0] = ['/a']\n"), ['/a'])
  // another assignment first: no import path (the runner refuses such a plugin)
  assert.is(pluginImportPath("x = 1\nsys.path[0:0] = ['/a']\n"), undefined)
  assert.is(pluginImportPath('import sys\n'), undefined)
})

t.run()
