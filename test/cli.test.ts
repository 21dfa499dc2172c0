// The command-line frame, through the built binary: help, version, exit codes, legacy names.
import { symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { COMMANDS } from '../src/commands/index.ts'
import { slapos, SLAPOS, tempDir } from './helpers.ts'
import { spawnSync } from 'node:child_process'

import pkg from "../package.json" with { type: "json" }

test('--version prints the package version without Node on PATH', () => {
  const r = spawnSync(SLAPOS, ['--version'], { env: { PATH: '/usr/bin:/bin' }, encoding: 'utf8' })
  assert.is(r.status, 0)
  assert.is(r.stdout.trim(), `slapos ${pkg.version}`)
})

test('no argument and --help print the global help listing every command', () => {
  for (const args of [[], ['--help'], ['-h']]) {
    const r = slapos(args)
    assert.is(r.code, 0)
    for (const c of COMMANDS) assert.ok(r.stdout.includes(`  ${c.name} `), `${c.name} listed`)
  }
})

test('every registered command renders its own help', () => {
  for (const c of COMMANDS) {
    for (const args of [[...c.name.split(' '), '--help'], ['help', ...c.name.split(' ')]]) {
      const r = slapos(args)
      assert.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`)
      assert.ok(r.stdout.startsWith(`usage: slapos ${c.name}`), `${args.join(' ')} shows its usage: ${r.stdout.slice(0, 80)}`)
    }
  }
})

test('unknown command: one line, exit 5', () => {
  const r = slapos(['frobnicate', 'now'])
  assert.is(r.code, 5)
  assert.match(r.stderr, /the command 'frobnicate now' does not exist/)
  assert.is(r.stderr.trim().split('\n').length, 1)
})

test('an option before the command: exit 5', () => {
  const r = slapos(['--foo', 'help'])
  assert.is(r.code, 5)
  assert.match(r.stderr, /invalid option '--foo'/)
})

test('legacy program names run the matching command', () => {
  const dir = tempDir()
  const link = join(dir, 'slapproxy')
  symlinkSync(SLAPOS, link)
  const r = spawnSync(link, ['--help'], { encoding: 'utf8' })
  assert.is(r.status, 0)
  assert.ok(r.stdout.startsWith('usage: slapos proxy start'), r.stdout.slice(0, 80))
})

test.run()
