// The yargs-free parser of plain command lines against yargs itself: on lines generated from
// every command's declarations, whenever the fast parser answers, yargs accepts the line and
// gives the same object (same keys, aliases, camelCase forms, coerced values).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { declarations, fastParse, type Declarations } from '../src/argv-fast.ts'
import { commandParser } from '../src/cli.ts'
import type { CommandModule, CommandSpec } from '../src/command.ts'
import { UsageError } from '../src/errors.ts'
import { COMMANDS } from '../src/commands/index.ts'

interface Loaded {
  spec: CommandSpec
  mod: CommandModule
  decl: Declarations
}

async function eligible(): Promise<Loaded[]> {
  const out: Loaded[] = []
  for (const spec of COMMANDS) {
    const { default: mod } = await spec.load()
    const decl = declarations(mod)
    if (decl) out.push({ spec, mod, decl })
  }
  return out
}

/** yargs' answer: the parsed object, or the error it raised. */
async function viaYargs(c: Loaded, args: string[]): Promise<{ ok: true; value: Record<string, unknown> } | { ok: false; error: unknown }> {
  try {
    const y = await commandParser(c.spec, c.mod, args)
    return { ok: true, value: (await y.parseAsync()) as Record<string, unknown> }
  } catch (error) {
    return { ok: false, error }
  }
}

async function same(c: Loaded, args: string[]): Promise<boolean> {
  const fast = fastParse(c.decl, args, `slapos ${c.spec.name}`)
  if (fast === undefined) return false
  const slow = await viaYargs(c, args)
  assert.ok(slow.ok, `${c.spec.name} ${JSON.stringify(args)}: the fast parser answered, yargs refused: ${slow.ok ? '' : String(slow.error)}`)
  if (slow.ok) assert.equal(fast, slow.value, `${c.spec.name} ${JSON.stringify(args)}`)
  return true
}

// a small deterministic generator (the same lines on every run)
let seed = 0x2545f491
const rand = (n: number): number => {
  seed ^= seed << 13
  seed ^= seed >>> 17
  seed ^= seed << 5
  return (seed >>> 0) % n
}
const pick = <T>(xs: T[]): T => xs[rand(xs.length)] as T

const VALUES = ['x', '3', '0', '-1', '007', ' 7 ', '1e3', '0x10', 'slappart3,slappart5', '', 'a=b', 'foo bar', '/etc/opt/slapos/slapos.cfg', 'true', 'false', '--now', '-j', 'é']
const NOISE = ['extra', '--bogus', '--', '-x', '-j2', '--no-now', '--now=false', '--now', 'true', '-h', '--cfg', '2']

function line(decl: Declarations): string[] {
  const spellings = [...decl.flags.keys()]
  const words: string[] = []
  const n = rand(5)
  for (let i = 0; i < n; i++) {
    const flag = pick(spellings)
    const d = decl.flags.get(flag)
    const style = rand(10)
    if (d?.type === 'boolean') {
      if (style === 0) words.push(`${flag}=${pick(['true', 'false', 'x'])}`)
      else if (style === 1) words.push(flag, pick(['true', 'false']))
      else words.push(flag)
    } else if (style < 3 && flag.startsWith('--')) words.push(`${flag}=${pick(VALUES)}`)
    else if (style === 3) words.push(flag)
    else words.push(flag, pick(VALUES))
  }
  if (rand(4) === 0) words.splice(rand(words.length + 1), 0, pick(NOISE))
  return words
}

test('the commands cron and scripts run are parsed without yargs', async () => {
  const all = await eligible()
  const names = all.map((c) => c.spec.name)
  for (const n of ['node instance', 'node software', 'node report']) assert.ok(names.includes(n), `${n} takes the fast path`)
  const instance = all.find((c) => c.spec.name === 'node instance') as Loaded
  for (const args of [
    [],
    ['--now'],
    ['--now', '--cfg', '/etc/opt/slapos/slapos.cfg'],
    ['--cfg=/etc/opt/slapos/slapos.cfg', '--now', '--only-cp', 'slappart3,slappart5'],
    ['--only', 'slappart3', '-j', '4', '--json', '--force'],
    ['--maximal_delay', '0', '--maximum-periodicity', '86400', '--pidfile', '/run/slapos-instance.pid'],
  ]) {
    assert.ok(await same(instance, args), `answered without yargs: ${args.join(' ')}`)
  }
  // the line supervisord runs for the watchdog: its two demanded options present
  const watchdog = all.find((c) => c.spec.name === 'node watchdog') as Loaded
  assert.ok(watchdog, 'node watchdog takes the fast path')
  for (const args of [
    ['--master-url', 'https://slap.example:443/', '--computer-id', 'COMP-1'],
    ['--master-url', 'http://127.0.0.1:8080', '--computer-id', 'c', '--certificate-repository-path', '/etc/ssl/pki', '--instance-root', '/srv/slapgrid'],
    ['--master-url', 'x', '--computer-id', 'c', '--instance-root-path', '/srv', '--handle-event'],
  ]) {
    assert.ok(await same(watchdog, args), `answered without yargs: ${args.join(' ')}`)
  }
  // one missing: yargs says which
  for (const args of [[], ['--master-url', 'x'], ['--computer-id', 'c', '--in-process']]) {
    assert.is(fastParse(watchdog.decl, args, 'slapos node watchdog'), undefined, args.join(' '))
    assert.not.ok((await viaYargs(watchdog, args)).ok, args.join(' '))
  }
})

test('it leaves to yargs the lines yargs reads its own way', async () => {
  const instance = (await eligible()).find((c) => c.spec.name === 'node instance') as Loaded
  for (const args of [
    ['--now', 'true'],
    ['--now=false'],
    ['--no-now'],
    ['--now', '--now'],
    ['-j2'],
    ['--jobs', '--now'],
    ['--cfg'],
    ['extra'],
    ['--', '--now'],
    ['--all', '--only-cp', 'slappart1'],
    ['--maximal_delay', 'soon'],
    ['--bogus'],
  ]) {
    assert.is(fastParse(instance.decl, args, 'slapos node instance'), undefined, args.join(' '))
  }
})

test('whenever it answers, yargs gives the same object (generated lines, every eligible command)', async () => {
  const all = await eligible()
  let answered = 0
  let total = 0
  for (const c of all) {
    for (let i = 0; i < 150; i++) {
      total += 1
      if (await same(c, line(c.decl))) answered += 1
    }
  }
  // the generator makes plenty of both kinds: the comparison is not vacuous
  assert.ok(answered > total / 5, `answered ${answered} of ${total}`)
  assert.ok(answered < total, `left ${total - answered} of ${total} to yargs`)
  console.log(`  fast parser answered ${answered} of ${total} generated lines`)
})

test('a repeated option takes its last value, as the original argparse (no array, no TypeError)', async () => {
  const spec = COMMANDS.find((c) => c.name === 'node instance')!
  const { default: mod } = await spec.load()
  const line = ['--only-cp', 'slappart1', '--only-cp', 'slappart0', '--maximal_delay', '0', '--maximal_delay', '1', '--cfg', 'a.cfg', '--cfg', 'b.cfg']
  const decl = declarations(mod)
  assert.is(decl && fastParse(decl, line, 'slapos node instance'), undefined, 'repeats are left to yargs')
  const parsed = (await (await commandParser(spec, mod, line)).parseAsync()) as Record<string, unknown>
  assert.is(parsed.onlyCp, 'slappart0')
  assert.is(parsed.maximal_delay, 1)
  assert.is(parsed.cfg, 'b.cfg')
})

test('an option that needs a value and has none is refused (exit 2), not run as if absent', async () => {
  for (const [name, line] of [
    ['node instance', ['--now', '--only-cp']],
    ['request', ['x', 'http://sr/x.cfg', '--parameters']],
    ['node software', ['--maximal_delay']],
  ] as const) {
    const spec = COMMANDS.find((c) => c.name === name)!
    const { default: mod } = await spec.load()
    const decl = declarations(mod)
    assert.is(decl && fastParse(decl, [...line], `slapos ${name}`), undefined, `${name}: left to yargs`)
    let err: unknown
    try {
      await (await commandParser(spec, mod, [...line])).parseAsync()
    } catch (e) {
      err = e
    }
    assert.instance(err, UsageError, name)
    assert.is((err as UsageError).exitCode, 2)
    assert.match((err as Error).message, 'Not enough arguments following')
  }
})

/** Every option of every command that takes one value (string or number), with a value it accepts. */
type Valued = { spec: CommandSpec; mod: CommandModule; flag: string; key: string; values: [string, string]; required: string[] }
async function valuedOptions(): Promise<Valued[]> {
  const out: Valued[] = []
  for (const spec of COMMANDS) {
    const { default: mod } = await spec.load()
    if (mod.passThrough) continue
    const seen: [string, Record<string, unknown>][] = []
    const recorder = new Proxy({} as never, {
      get(_, method) {
        return (...a: unknown[]) => {
          if (method === 'option' && typeof a[0] === 'string' && a[1] && typeof a[1] === 'object') seen.push([a[0], a[1] as Record<string, unknown>])
          return recorder
        }
      },
    })
    mod.options?.(recorder)
    // the options the command demands, each with a value, so that only the one tested varies
    const demanded = seen.filter(([, o]) => o.demandOption === true || o.demand === true)
    for (const [key, o] of seen) {
      if (o.type !== 'string' && o.type !== 'number') continue
      const choices = Array.isArray(o.choices) ? o.choices.map(String) : undefined
      const values: [string, string] = choices && choices.length > 1 ? [choices[0]!, choices[1]!] : choices ? [choices[0]!, choices[0]!] : ['1', '2']
      const required = demanded.filter(([k]) => k !== key).flatMap(([k]) => [`--${k}`, 'x'])
      out.push({ spec, mod, flag: key.length === 1 ? `-${key}` : `--${key}`, key, values, required })
    }
  }
  return out
}

test('every command: an option that needs a value and has none exits 2; repeated, it takes its last value', async () => {
  const options = await valuedOptions()
  assert.ok(options.length > 60, `${options.length} options`)
  for (const { spec, mod, flag, key, values, required } of options) {
    let err: unknown
    try {
      await (await commandParser(spec, mod, [flag])).parseAsync()
    } catch (e) {
      err = e
    }
    assert.instance(err, UsageError, `${spec.name} ${flag}`)
    assert.is((err as UsageError).exitCode, 2, `${spec.name} ${flag}`)
    const parsed = (await (await commandParser(spec, mod, [...required, flag, values[0], flag, values[1]])).parseAsync()) as Record<string, unknown>
    assert.is(String(parsed[key]), values[1], `${spec.name} ${flag} ${values[0]} ${flag} ${values[1]}`)
  }
})

test.run()
