// Benchmark of `slapos node collect`: N partitions (default 100) whose users run P processes in
// all (default 1000, `sleep`), users known only in a mount namespace's /etc/passwd. Each round
// runs the built binary's collect, then its floor: the same binary printing its version in the
// same wrapper. CPU time is the children's user + system time (the shell's `times`), so the
// `du` of each partition and `tar` count too. Figures: CPU per run beside the floor, and wall
// time beside the limit (the 5 s CPU measurement + 300 ms).
// Usage: node scripts/bench-collect.ts [rounds] [partitions] [processes]   (root, built dist/slapos)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
// the test helpers import the sources, which need tsx's transform (not only type stripping)
const { register } = await import('tsx/esm/api')
register()
const { SLAPOS, tempDir } = (await import('../test/helpers.ts')) as typeof import('../test/helpers.ts')
const { canUseNamespaces } = (await import('../test/netns.ts')) as typeof import('../test/netns.ts')

const rounds = Number(process.argv[2] ?? 3)
const partitions = Number(process.argv[3] ?? 100)
const processes = Number(process.argv[4] ?? 1000)
const UID_BASE = 62000
if (!canUseNamespaces()) {
  console.error('bench-collect: needs root and unshare --mount')
  process.exit(1)
}
for (const uid of [UID_BASE, UID_BASE + partitions - 1]) {
  if (spawnSync('getent', ['passwd', String(uid)]).status === 0) {
    console.error(`bench-collect: uid ${uid} is taken on this machine`)
    process.exit(1)
  }
}

const dir = tempDir('slapos-bench-collect-')
const instanceRoot = join(dir, 'instance')
const passwd = join(dir, 'passwd')
let users = ''
for (let i = 0; i < partitions; i++) {
  const home = join(instanceRoot, `slappart${i}`)
  mkdirSync(join(home, '.slapgrid'), { recursive: true })
  users += `slapuser${i}:x:${UID_BASE + i}:${UID_BASE + i}::${home}:/bin/sh\n`
}
writeFileSync(passwd, readFileSync('/etc/passwd', 'utf8') + users)
const cfg = join(dir, 'slapos.cfg')
writeFileSync(
  cfg,
  `[slapos]\ninstance_root = ${instanceRoot}\ncomputer_id = COMP-bench\n\n[slapformat]\npartition_amount = ${partitions}\nuser_base_name = slapuser\npartition_base_name = slappart\n`,
)

const children: ChildProcess[] = []
for (let i = 0; i < processes; i++) {
  const uid = UID_BASE + (i % partitions)
  children.push(spawn('sleep', ['3600'], { uid, gid: uid, stdio: 'ignore' }))
}
const cleanup = () => {
  for (const c of children) c.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
}
process.on('exit', cleanup)

/** Runs the binary in the namespace; CPU of everything it started (ms) and wall time (ms). */
function measure(args: string[]): { cpuMs: number; wallMs: number; code: number | null; stderr: string } {
  const script = 'mount --bind "$0" /etc/passwd && "$@" >/dev/null 2>"$0.err"; rc=$?; times >&2; exit $rc'
  const t0 = performance.now()
  const r = spawnSync('unshare', ['--mount', '--', 'bash', '-c', script, passwd, SLAPOS, ...args], { encoding: 'utf8' })
  const wallMs = performance.now() - t0
  // the second line of `times`: children's user and system time, e.g. `0m0.041s 0m0.012s`
  const line = r.stderr.trim().split('\n').at(-1) ?? ''
  const secs = [...line.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]))
  return { cpuMs: ((secs[0] ?? 0) + (secs[1] ?? 0)) * 1000, wallMs, code: r.status, stderr: readFileSync(`${passwd}.err`, 'utf8') }
}

await new Promise((r) => setTimeout(r, 500)) // the sleeps started
console.log(`node collect, ${partitions} partitions, ${processes} processes of their users (plus this machine's own):`)
const rows: Array<{ cpu: number; floor: number; wall: number }> = []
for (let round = 1; round <= rounds; round++) {
  const run = measure(['node', 'collect', '--cfg', cfg])
  if (run.code !== 0) {
    console.error(run.stderr)
    process.exit(1)
  }
  const summary = /Collected (\d+) process/.exec(run.stderr)?.[1]
  if (Number(summary) !== processes) {
    console.error(`expected ${processes} processes, the run says: ${run.stderr.split('\n').at(-2)}`)
    process.exit(1)
  }
  const floor = measure(['--version'])
  rows.push({ cpu: run.cpuMs, floor: floor.cpuMs, wall: run.wallMs })
  console.log(
    `  run ${round}${round === 1 ? ' (every partition measured)' : '                          '}  CPU ${run.cpuMs.toFixed(0).padStart(4)} ms (floor ${floor.cpuMs.toFixed(0)} ms: the binary printing its version)` +
      `  wall ${run.wallMs.toFixed(0)} ms (limit 5000 + 300)`,
  )
}
const worst = rows.reduce((a, r) => Math.max(a, r.cpu), 0)
console.log(`  worst CPU ${worst.toFixed(0)} ms (target <= 300 ms); worst wall ${rows.reduce((a, r) => Math.max(a, r.wall), 0).toFixed(0)} ms`)
