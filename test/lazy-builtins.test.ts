// Some of Node's own modules cost every process that loads them: node:crypto ~1.4 MB of
// private memory and ~1 MB of code pages, node:child_process its load time. The bundle takes
// them on first use; these commands must not load them. Runs the bundle (dist/slapos.cjs, the
// very code of dist/slapos) under the same Node, with a preload that records what was loaded.
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { ROOT, skip, tempDir, UNDER_BUN } from './helpers.ts'

const BUNDLE = join(ROOT, 'dist', 'slapos.cjs')
/** Bun loads its builtins its own way and has no module load list: these figures are Node's. */
const NODE_ONLY = 'Node only: reads the module load list of the bundle run by Node, whereas the binary under test (SLAPOS_BIN) is a Bun executable'

function recorder(dir: string): { preload: string; out: string; loaded: () => string[] } {
  const out = join(dir, 'modules.txt')
  const preload = join(dir, 'record.cjs')
  writeFileSync(preload, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(out)}, process.moduleLoadList.join('\\n')))\n`)
  return { preload, out, loaded: () => readFileSync(out, 'utf8').split('\n') }
}

const builtin = (list: string[], name: string) => list.some((m) => m === `NativeModule ${name}` || m.startsWith(`NativeModule internal/${name}/`))

test('--version and --help load neither node:crypto nor node:child_process', () => {
  if (UNDER_BUN) return skip(NODE_ONLY)
  for (const arg of ['--version', '--help']) {
    const r = recorder(tempDir('slapos-lazy-'))
    const run = spawnSync(process.execPath, ['--require', r.preload, BUNDLE, arg], { encoding: 'utf8' })
    assert.is(run.status, 0, run.stderr)
    const list = r.loaded()
    assert.ok(builtin(list, 'http') || list.length > 50, 'the recorder saw the modules')
    assert.not.ok(builtin(list, 'crypto'), `${arg} loaded node:crypto`)
    assert.not.ok(builtin(list, 'child_process'), `${arg} loaded node:child_process`)
  }
})

test('node instance --help and node software --help do not load node:crypto (the software directory md5 is ours)', () => {
  if (UNDER_BUN) return skip(NODE_ONLY)
  for (const cmd of ['instance', 'software']) {
    const r = recorder(tempDir('slapos-lazy-'))
    const run = spawnSync(process.execPath, ['--require', r.preload, BUNDLE, 'node', cmd, '--help'], { encoding: 'utf8' })
    assert.is(run.status, 0, run.stderr)
    assert.not.ok(builtin(r.loaded(), 'crypto'), `node ${cmd} --help loaded node:crypto`)
  }
})

test('proxy start serving getFullComputerInformation does not load node:crypto', async () => {
  if (UNDER_BUN) return skip(NODE_ONLY)
  const dir = tempDir('slapos-lazy-')
  const r = recorder(dir)
  const cfg = join(dir, 'proxy.cfg')
  writeFileSync(cfg, `[slapos]\ncomputer_id = computer\n[slapproxy]\nhost = 127.0.0.1\nport = 0\ndatabase_uri = ${join(dir, 'proxy.db')}\n`)
  const child = spawn(process.execPath, ['--require', r.preload, BUNDLE, 'proxy', 'start', '--cfg', cfg], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line:\n${stderr}`)), 20_000)
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s
      const m = /Listening on (http:\/\/\S+\/)/.exec(stderr)
      if (m?.[1]) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
  })
  const form = { url: 'http://sr.example/lazy.cfg', computer_id: 'computer', state: 'available' }
  const supplied = await fetch(`${url}supplySupply`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form) })
  assert.is(supplied.status, 200)
  const answer = await fetch(`${url}getFullComputerInformation?computer_id=computer`)
  assert.match(await answer.text(), /lazy\.cfg/)
  const exited = new Promise((res) => child.once('exit', res))
  child.kill('SIGTERM')
  await exited
  const list = r.loaded()
  assert.ok(builtin(list, 'sqlite'), 'the recorder saw the proxy run')
  assert.not.ok(builtin(list, 'crypto'), 'the proxy loaded node:crypto')
})

test.run()
