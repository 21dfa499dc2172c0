// Benchmark of `slapos node format`: the built binary formats N partitions (default 100) as
// root in a private network + mount namespace (veth pair, private /etc), then re-runs with
// nothing to change. Prints both runs beside what no format can go below, measured in the same
// run: the start of `node -e 0` (the same node binary) and of `slapos --version`, the
// kernel's duplicate address detection of N new IPv6 addresses added at once (a first run waits
// for it, as the original does), and the N + 1 `groupadd` + `useradd` pairs alone (a first run
// makes the users during that wait). Each round runs twice: with the kernel's defaults, and with
// optimistic duplicate address detection turned on for the interface (the operator's sysctl
// net.ipv6.conf.<if>.optimistic_dad = 1: format then adds the addresses `optimistic`, and the
// floor is measured the same way). With --baseline, another build runs in alternate rounds.
// Usage: node scripts/bench-format.ts [partitions] [--rounds N] [--baseline path/to/slapos]
// (needs root and a built dist/slapos)
import { spawnSync } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { SLAPOS, tempDir } from '../test/helpers.ts'
import { canUseNamespaces, formatInNamespace } from '../test/netns.ts'

const args = process.argv.slice(2)
const option = (name: string): string | undefined => {
  const i = args.indexOf(name)
  if (i < 0) return undefined
  const v = args[i + 1]
  args.splice(i, 2)
  return v
}
const baseline = option('--baseline')
const rounds = Number(option('--rounds') ?? 3)
const partitions = Number(args[0] ?? 100)
if (!canUseNamespaces()) {
  console.error('bench-format: needs root and unshare --net --mount')
  process.exit(1)
}

interface Figures {
  first: number[]
  second: number[]
  dad: number[]
  users: number[]
}
const binaries: [string, string][] = [['dist/slapos', SLAPOS], ...(baseline ? [['baseline', baseline] as [string, string]] : [])]
const settings = [
  ['kernel defaults', false],
  ['optimistic_dad = 1', true],
] as const
const key = (name: string, setting: string) => `${name}\0${setting}`
const figures = new Map<string, Figures>(binaries.flatMap(([name]) => settings.map(([setting]) => [key(name, setting), { first: [], second: [], dad: [], users: [] }] as [string, Figures])))
const floors = { node: [] as number[], version: [] as number[] }

for (let round = 0; round < rounds; round++) {
  for (const [name, binary] of binaries) for (const [setting, optimisticDad] of settings) {
    floors.node.push(wallMs(process.execPath, ['-e', '0']))
    floors.version.push(wallMs(binary, ['--version']))
    const dir = tempDir('slapos-bench-format-')
    const run = await formatInNamespace(dir, { partitions, runs: 2, verbose: false, slapos: binary, dadFloor: partitions, userFloor: partitions, optimisticDad })
    if (run.code !== 0 || run.formatCodes.length !== 2 || run.formatCodes.some((c) => c !== 0)) {
      console.error(run.output)
      console.error(readFileSync(join(dir, 'state', 'format.1.log'), 'utf8').split('\n').slice(-20).join('\n'))
      process.exit(1)
    }
    const f = figures.get(key(name, setting)) as Figures
    f.first.push(run.formatMs[0] ?? NaN)
    f.second.push(run.formatMs[1] ?? NaN)
    if (run.dadFloorMs !== undefined) f.dad.push(run.dadFloorMs)
    if (run.userFloorMs !== undefined) f.users.push(run.userFloorMs)
    rmSync(dir, { recursive: true, force: true })
  }
}

const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`
console.log(`node format, ${partitions} partitions (users, IPv4 + IPv6 per partition, IPv6 ranges, real kernel), median of ${rounds} round(s):`)
console.log(`  floors        node -e 0 ${median(floors.node).toFixed(0)} ms, slapos --version ${median(floors.version).toFixed(0)} ms`)
const users = [...figures.values()].flatMap((f) => f.users)
console.log(`  floor         the ${partitions + 1} groupadd + useradd pairs alone, one after the other: ${s(median(users))} (${users.map(s).join(', ')}; a first run makes them while the kernel checks the addresses)`)
for (const [setting] of settings) {
  const dad = binaries.flatMap(([name]) => figures.get(key(name, setting))?.dad ?? [])
  console.log(`  ${setting}: kernel's duplicate address detection of ${partitions} new IPv6 addresses ${s(median(dad))} (a first run waits for it)`)
  for (const [name] of binaries) {
    const f = figures.get(key(name, setting)) as Figures
    console.log(`    ${name.padEnd(12)}  first run ${s(median(f.first))}  second run ${s(median(f.second))}   (first: ${f.first.map(s).join(', ')}; second: ${f.second.map(s).join(', ')})`)
  }
}
console.log('  targets       first run <= 2 s, second run <= 0.3 s (the original: ~414 s for the first)')

function wallMs(cmd: string, argv: string[]): number {
  const t = process.hrtime.bigint()
  spawnSync(cmd, argv, { stdio: 'ignore' })
  return Number(process.hrtime.bigint() - t) / 1e6
}

function median(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b)
  if (!v.length) return NaN
  const m = v.length >> 1
  return v.length % 2 ? (v[m] as number) : ((v[m - 1] as number) + (v[m] as number)) / 2
}
