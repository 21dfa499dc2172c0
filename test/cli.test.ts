// The command-line frame, through the built binary: help, version, exit codes, legacy names.
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { COMMANDS } from '../src/commands/index.ts'
import { skip, slapos, SLAPOS, tempDir } from './helpers.ts'
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

test('slapos node --help and slapos help node list the node commands and say that slapos node alone is node status', () => {
  for (const args of [['node', '--help'], ['help', 'node'], ['node', '-h']]) {
    const r = slapos(args)
    assert.is(r.code, 0, r.stderr)
    assert.match(r.stdout, '`slapos node` alone is `slapos node status`.')
    for (const c of COMMANDS.filter((x) => x.name.startsWith('node '))) assert.match(r.stdout, `  ${c.name} `, `${args.join(' ')} lists ${c.name}`)
  }
  // one node command's own help is unchanged
  assert.match(slapos(['node', 'status', '--help']).stdout, 'usage: slapos node status')
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

test('complete: a bash script (COMPREPLY) that completes command words, fish with __fish_seen_subcommand_from', () => {
  const bash = slapos(['complete'])
  assert.is(bash.code, 0, bash.stderr)
  assert.match(bash.stdout, 'COMPREPLY')
  const script = join(tempDir(), 'slapos.bash')
  writeFileSync(script, bash.stdout)
  const ask = (words: string[]) =>
    spawnSync('bash', ['-c', `source ${script}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _slapos_complete; echo "\${COMPREPLY[@]}"`], { encoding: 'utf8' }).stdout.trim()
  assert.is(ask(['slapos', 'node', 'in']), 'instance')
  assert.is(ask(['slapos', 'proxy', 's']), 'show start')
  assert.ok(ask(['slapos', '']).split(' ').includes('node'))
  assert.is(ask(['slapos', '-v', 'node', 'sup']), 'supervisorctl supervisord')
  const fish = slapos(['complete', '--shell=fish'])
  assert.is(fish.code, 0)
  assert.match(fish.stdout, '__fish_seen_subcommand_from')
  const none = slapos(['complete', '--shell', 'none']).stdout.split('\n')
  for (const c of COMMANDS) assert.ok(none.includes(c.name), c.name)
})

test("complete: every command's options, and the node's partitions, services and software releases, in bash and fish", () => {
  // a node: two partitions, one supervisord group, one software release
  const dir = tempDir()
  const inst = join(dir, 'srv')
  const soft = join(dir, 'opt')
  for (const d of ['slappart0', 'slappart1', 'etc/supervisord.conf.d']) mkdirSync(join(inst, d), { recursive: true })
  mkdirSync(join(soft, '0123456789abcdef0123456789abcdef'), { recursive: true })
  writeFileSync(join(inst, 'etc/supervisord.conf.d/slappart0.conf'), '[group:slappart0]\nprograms=slappart0_web,slappart0_db\n\n[program:slappart0_web]\ncommand=x\n')
  const cfg = join(dir, 'slapos.cfg')
  writeFileSync(cfg, `[slapos]\ncomputer_id = c\nmaster_url = http://127.0.0.1:9/\ninstance_root = ${inst}\nsoftware_root = ${soft}\n`)
  const list = (kind: string) => slapos(['complete', '--list', kind, '--cfg', cfg]).stdout.trim().split('\n')
  assert.equal(list('partitions'), ['slappart0', 'slappart1'])
  assert.equal(list('services'), ['slappart0:*', 'slappart0:slappart0_db', 'slappart0:slappart0_web'])
  assert.equal(list('software'), ['0123456789abcdef0123456789abcdef'])
  // without a configuration: nothing, quietly
  const none = slapos(['complete', '--list', 'partitions', '--cfg', join(dir, 'missing.cfg')])
  assert.equal([none.code, none.stdout, none.stderr], [0, '', ''])

  // the scripts run `slapos` from PATH, as an installed node has it
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  symlinkSync(SLAPOS, join(bin, 'slapos'))
  const env = { PATH: `${bin}:/usr/bin:/bin`, HOME: dir }
  const script = join(dir, 'slapos.bash')
  writeFileSync(script, slapos(['complete']).stdout)
  const bash = (words: string[]) =>
    spawnSync('bash', ['-c', `source ${script}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _slapos_complete; echo "\${COMPREPLY[@]}"`], { encoding: 'utf8', env }).stdout.trim()
  assert.is(bash(['slapos', 'node', 'instance', '--fo']), '--force --force-stop')
  assert.ok(bash(['slapos', 'request', '--']).split(' ').includes('--parameters-file'))
  assert.is(bash(['slapos', 'node', 'instance', '--cfg', cfg, '--only-cp', '']), 'slappart0 slappart1')
  assert.is(bash(['slapos', 'node', 'software', '--cfg', cfg, '--only-sr', '']), '0123456789abcdef0123456789abcdef')
  assert.is(bash(['slapos', 'node', 'stop', '--cfg', cfg, 'slappart0:']), 'slappart0:* slappart0:slappart0_db slappart0:slappart0_web')

  const fishScript = join(dir, 'slapos.fish')
  writeFileSync(fishScript, slapos(['complete', '--shell', 'fish']).stdout)
  if (spawnSync('fish', ['--version']).status !== 0) return skip('fish is not installed')
  const fish = (line: string) =>
    spawnSync('fish', ['--no-config', '-c', `source ${fishScript}; complete -C '${line}'`], { encoding: 'utf8', env }).stdout.trim().split('\n').map((l) => l.split('\t')[0])
  assert.equal(fish('slapos node instance --fo'), ['--force', '--force-stop'])
  assert.equal(fish(`slapos node instance --cfg ${cfg} --only-cp `), ['slappart0', 'slappart1'])
  assert.equal(fish(`slapos node restart --cfg ${cfg} slappart0:`), ['slappart0:*', 'slappart0:slappart0_db', 'slappart0:slappart0_web'])
  assert.equal(fish('slapos proxy s'), ['show', 'start'])
})

test('slapos help lists node instance with the original description (cli.md checklist 2)', () => {
  const r = slapos(['help'])
  assert.is(r.code, 0)
  assert.is(r.stderr, '')
  assert.match(r.stdout, /node instance\s+run instance deployment/)
})

test.run()
