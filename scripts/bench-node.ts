// Benchmark of the built `slapos node instance` on a test node (real proxy, supervisord and
// buildout, the offline test Software Release with a `sleep` service so that 100 partitions
// stay light):
//   - median wall time of an idle run (every partition up to date) with 10 and 100 partitions;
//   - wall time of a first deployment of 20 partitions with --jobs 1 and with --jobs 2;
//   - plugins: 100 deployed partitions each with 3 promise plugins, all due (the anomaly check
//     of every partition runs them): the idle run without plugins, with them at --jobs 1 and 2,
//     beside the plugins' own Python time (one partition's runner, alone, x 100 / jobs) and the
//     Python start cost per partition;
//   - managers: 100 deployed partitions, idle runs alternating (a) this build with no manager,
//     (b) the build named by SLAPOS_BASELINE (an older dist/slapos) if given, (c) this build with
//     every manager listed (no partition asks anything of them) and [firewall].
//   - dryrun: 100 deployed partitions, idle runs alternating the real run and `--dry-run`
//     (target: the dry run takes no more than 1.2 x the real idle run).
//   - converge: a parent of the tree release (test/fixtures/software-release/tree.cfg) that requests
//     two instances of the sample release: from `slapos request` to the parent's published URLs in
//     one `node instance --converge`, beside the buildouts' own time and the start-up floor
//     (target: at most 5 s above the buildouts).
//   - scale: a node of 1,000 deployed partitions beside one of 10, idle `node instance` and idle
//     `node report` alternating between them (targets: at most 0.3 ms per partition above the
//     10-partition run), the proxy's getFullComputerInformation of the 1,000 partitions
//     (target: >= 500 requests/s), and a first deployment of 100 partitions with --jobs 1, 2
//     and 4 (targets: jobs 2 <= 0.6 x jobs 1; jobs 4 not slower than jobs 2), CPU beside each.
// Usage: node scripts/bench-node.ts [idle runs per size, default 15] [idle|jobs|plugins|managers|dryrun|converge|scale (default idle and jobs)]
import { spawn } from 'node:child_process'
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { directCfg, getRate, median, measured, prepare, teardown, type TestNode } from './bench-common.ts'
const { makeNode } = (await import('../test/node-helpers.ts')) as typeof import('../test/node-helpers.ts')

const RUNS = Number(process.argv[2] ?? 15)
const ONLY = process.argv[3]
const SLAPOS = resolve(import.meta.dirname, '..', 'dist', 'slapos')

/** CPU time (user + system, ms) of the last timed run, from /proc of the child (0 when unknown). */
let lastCpu = 0

async function timed(node: TestNode, args: string[], binary = SLAPOS, cfg = directCfg(node)): Promise<number> {
  const t0 = performance.now()
  const r = await runMeasured([binary, 'node', 'instance', '--now', ...args, '--cfg', cfg])
  const ms = performance.now() - t0
  if (r.code !== 0) throw new Error(`node instance ${args.join(' ')} exited ${r.code}:\n${r.stderr.slice(-3000)}`)
  return ms
}

/** Runs argv through /usr/bin/time to also get the CPU time it used (the machine may be busy: wall time alone misleads). */
function runMeasured(argv: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn('/usr/bin/time', ['-f', 'CPU %U %S', ...argv], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' }, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.on('error', rej)
    child.on('close', (code) => {
      const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(stderr)
      lastCpu = m ? (Number(m[1]) + Number(m[2])) * 1000 : 0
      res({ code, stderr })
    })
  })
}


const f = (ms: number) => ms.toFixed(0)
const out: string[] = []

// the floor under every figure: starting the executable at all, in the same conditions
{
  const wall: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now()
    await runMeasured([SLAPOS, '--version'])
    wall.push(performance.now() - t0)
  }
  console.log(`slapos --version (start-up floor): median ${f(median(wall))} ms wall; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`)
}

for (const n of ONLY === 'jobs' || ONLY === 'plugins' || ONLY === 'managers' || ONLY === 'dryrun' || ONLY === 'converge' || ONLY === 'scale' ? [] : [10, 100]) {
  const node = await prepare(n)
  try {
    const first = await timed(node, ['--jobs', '2'])
    const idle: number[] = []
    const cpu: number[] = []
    const above: number[] = []
    for (let i = 0; i < RUNS; i++) {
      // `slapos --version` just before each run: what the run costs above starting the
      // executable, on a machine whose speed varies from minute to minute
      const t0 = performance.now()
      await runMeasured([SLAPOS, '--version'])
      const floor = performance.now() - t0
      idle.push(await timed(node, []))
      cpu.push(lastCpu)
      above.push((idle.at(-1) ?? 0) - floor)
    }
    out.push(
      `idle node instance, ${n} deployed partitions: median ${f(median(idle))} ms wall, ${f(median(cpu))} ms CPU ` +
        `(min ${f(Math.min(...idle))}, max ${f(Math.max(...idle))}, ${RUNS} runs; median ${f(median(above))} ms above the \`slapos --version\` run before it; ` +
        `first deployment with --jobs 2 took ${f(first)} ms)`,
    )
  } finally {
    await teardown(node)
  }
  console.log(out.at(-1))
}

const first: Record<number, number> = {}
for (const jobs of ONLY === 'idle' || ONLY === 'plugins' || ONLY === 'managers' || ONLY === 'dryrun' || ONLY === 'converge' || ONLY === 'scale' ? [] : [1, 2]) {
  const node = await prepare(20)
  try {
    first[jobs] = await timed(node, ['--jobs', String(jobs)])
  } finally {
    await teardown(node)
  }
  // CPU of slapos and of the buildouts it waited for (supervisord and its services not included)
  out.push(`first deployment of 20 partitions with --jobs ${jobs}: ${f(first[jobs] ?? 0)} ms (${f(lastCpu)} ms CPU)`)
  console.log(out.at(-1))
}
if (ONLY === 'plugins') await benchPlugins(100)
if (ONLY === 'managers') await benchManagers(100)
if (ONLY === 'dryrun') await benchDryRun(100)
if (ONLY === 'converge') await benchConverge()
if (ONLY === 'scale') await benchScale()
if (first[1] && first[2]) console.log(`jobs 2 / jobs 1 = ${(first[2] / first[1]).toFixed(2)}`)
console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(1)).join(' ')} (${(await import('node:os')).cpus().length} CPUs)`)
console.log('targets: idle with 100 partitions <= 120 ms; jobs 2 <= 0.6 x jobs 1')

/** A wall time in ms of `argv` run to its end (exit status ignored: measured only). */
function wallOf(argv: string[], cwd?: string): Promise<number> {
  return new Promise((res, rej) => {
    const t0 = performance.now()
    const child = spawn(argv[0] ?? '', argv.slice(1), { cwd, stdio: 'ignore' })
    child.on('error', rej)
    child.on('close', () => res(performance.now() - t0))
  })
}

async function benchPlugins(n: number): Promise<void> {
  const { RUNNER } = (await import('../src/promise-runner.ts')) as typeof import('../src/promise-runner.ts')
  const node = await prepare(n)
  try {
    await timed(node, ['--jobs', '2'])
    const framework = join(node.dir, 'promise-framework')
    cpSync(resolve(import.meta.dirname, '..', 'test', 'fixtures', 'promise-framework'), framework, { recursive: true })
    const parts = Array.from({ length: n }, (_, i) => join(node.instanceRoot, `slappart${i}`))
    const dueAll = () => {
      for (const p of parts) rmSync(join(p, '.slapgrid', 'promise', 'cache'), { recursive: true, force: true })
    }
    const measure = async (args: string[]) => {
      const xs: number[] = []
      for (let i = 0; i < RUNS; i++) {
        dueAll()
        xs.push(await timed(node, args))
      }
      return median(xs)
    }
    const bare = await measure([])
    for (const p of parts) {
      mkdirSync(join(p, 'etc', 'plugin'), { recursive: true })
      for (const name of ['check-service', 'check-disk', 'check-log']) {
        writeFileSync(
          join(p, 'etc', 'plugin', `${name}.py`),
          `import sys\nsys.path[0:0] = [\n  '${framework}',\n  ]\nfrom slapos.grid.promise.generic import GenericPromise\n\nclass RunPromise(GenericPromise):\n  def sense(self):\n    self.logger.info('fine')\n`,
        )
      }
    }
    // the plugins' own Python time: one partition's runner alone, as the node starts it,
    // measured between the node runs (the machine's speed varies from minute to minute)
    const p0 = parts[0] ?? ''
    const runnerArgs = ['--promise-folder', join(p0, 'etc', 'plugin'), '--legacy-promise-folder', join(p0, 'etc', 'promise'), '--promise-timeout', '20', '--partition-folder', p0, '--log-folder', join(p0, '.slapgrid', 'promise', 'log'), '--check-anomaly', '--master-url', '', '--partition-cert', '', '--partition-key', '', '--partition-id', 'slappart0', '--computer-id', node.computerId]
    const runner: number[] = []
    const start: number[] = []
    const alone = async () => {
      for (let i = 0; i < 3; i++) {
        rmSync(join(p0, '.slapgrid', 'promise', 'cache'), { recursive: true, force: true })
        runner.push(await wallOf(['python3', '-c', RUNNER, ...runnerArgs], p0))
        start.push(await wallOf(['python3', '-c', `import sys; sys.path[0:0] = ['${framework}']; import slapos.grid.promise`]))
      }
    }
    const jobs1: number[] = []
    const jobs2: number[] = []
    for (let i = 0; i < RUNS; i++) {
      await alone()
      dueAll()
      jobs1.push(await timed(node, ['--jobs', '1']))
      await alone()
      dueAll()
      jobs2.push(await timed(node, ['--jobs', '2']))
    }
    const one = median(runner)
    out.push(
      `${n} partitions x 3 plugins, all due (anomaly checks): idle run without plugins ${f(bare)} ms; with them --jobs 1 ${f(median(jobs1))} ms (+${f(median(jobs1) - bare)}), ` +
        `--jobs 2 ${f(median(jobs2))} ms (+${f(median(jobs2) - bare)}); the plugins' own Python time: one partition's runner ${f(one)} ms alone, ` +
        `x ${n} = ${f(one * n)} ms, / 2 jobs = ${f((one * n) / 2)} ms; of which Python start and framework import ${f(median(start))} ms per partition`,
    )
    console.log(out.at(-1))
  } finally {
    await teardown(node)
  }
}

/**
 * Idle runs of one node with `n` deployed partitions, alternating between this build without
 * managers, the baseline build (SLAPOS_BASELINE) and this build with every manager and
 * [firewall] configured, so that all three see the same machine at the same moments.
 */
async function benchManagers(n: number): Promise<void> {
  const node = await prepare(n)
  try {
    await timed(node, ['--jobs', '2'])
    const plain = directCfg(node)
    const managed = join(node.dir, 'slapos-managers.cfg')
    writeFileSync(
      managed,
      readFileSync(plain, 'utf8').replace('[slapos]\n', '[slapos]\nmanager_list = cpuset devperm portredir prerm whitelistfirewall\n') +
        '\n[firewall]\nfirewall_cmd = /bin/false\nreload_config_cmd = /bin/false\ntesting = true\n',
    )
    const baseline = process.env.SLAPOS_BASELINE
    const variants: Array<[string, string, string]> = [['this build, no manager', SLAPOS, plain]]
    if (baseline) variants.push([`baseline ${baseline}, no manager`, resolve(baseline), plain])
    variants.push(['this build, every manager and [firewall]', SLAPOS, managed])
    const wall = variants.map(() => [] as number[])
    const cpu = variants.map(() => [] as number[])
    const floor: number[] = []
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now()
      await runMeasured([SLAPOS, '--version'])
      floor.push(performance.now() - t0)
      for (const [v, [, binary, cfg]] of variants.entries()) {
        wall[v]?.push(await timed(node, [], binary, cfg))
        cpu[v]?.push(lastCpu)
      }
    }
    console.log(`floor (slapos --version): median ${f(median(floor))} ms wall`)
    for (const [v, [name]] of variants.entries()) {
      console.log(`idle node instance, ${n} partitions, ${name}: median ${f(median(wall[v] ?? []))} ms wall, ${f(median(cpu[v] ?? []))} ms CPU (${RUNS} runs, alternating)`)
    }
  } finally {
    await teardown(node)
  }
}

/**
 * `node instance --dry-run` beside the real idle run on one node with `n` deployed partitions,
 * alternating (the machine's speed varies from minute to minute), each pair after a
 * `slapos --version` (the start-up floor).
 */
async function benchDryRun(n: number): Promise<void> {
  const node = await prepare(n)
  try {
    await timed(node, ['--jobs', '2'])
    const floor: number[] = []
    const real: number[] = []
    const realCpu: number[] = []
    const dry: number[] = []
    const dryCpu: number[] = []
    const ratio: number[] = []
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now()
      await runMeasured([SLAPOS, '--version'])
      floor.push(performance.now() - t0)
      real.push(await timed(node, []))
      realCpu.push(lastCpu)
      dry.push(await timed(node, ['--dry-run']))
      dryCpu.push(lastCpu)
      ratio.push((dry.at(-1) ?? 0) / (real.at(-1) ?? 1))
    }
    console.log(`floor (slapos --version): median ${f(median(floor))} ms wall`)
    console.log(`idle node instance, ${n} partitions: median ${f(median(real))} ms wall, ${f(median(realCpu))} ms CPU (${RUNS} runs, alternating)`)
    console.log(`node instance --dry-run, same node: median ${f(median(dry))} ms wall, ${f(median(dryCpu))} ms CPU`)
    console.log(`dry run / real idle run: ${(median(dry) / median(real)).toFixed(2)} (ratio of the medians; median of the per-pair ratios ${median(ratio).toFixed(2)}); target <= 1.2`)
  } finally {
    await teardown(node)
  }
}

/**
 * From `slapos request` of a tree's root to its published URLs in one `node instance
 * --converge` (3 partitions: the parent and its two children), on a node whose releases are
 * built and where nothing is requested (a snapshot restored before each run). The buildouts'
 * own time: the configured buildout runs through a wrapper that appends each run's wall time.
 */
async function benchConverge(): Promise<void> {
  const node = await makeNode({ partitions: 3 })
  try {
    const treeUrl = join(node.dir, 'sr', 'tree.cfg')
    await node.supply()
    await node.supply(treeUrl)
    const sw = await node.run(['node', 'software', '--now'])
    if (sw.code !== 0) throw new Error(`node software failed:\n${sw.stderr}`)
    const times = join(node.dir, 'buildout-times')
    const wrapper = join(node.dir, 'bin', 'buildout-timed')
    writeFileSync(
      wrapper,
      `#!/bin/sh\nstart=$(date +%s%N)\n'${node.buildout}' "$@"\nrc=$?\necho $(( ($(date +%s%N) - start) / 1000000 )) >> '${times}'\nexit $rc\n`,
      { mode: 0o755 },
    )
    const cfg = join(node.dir, 'slapos-converge.cfg')
    writeFileSync(cfg, readFileSync(directCfg(node), 'utf8').replace(/^buildout = .*$/m, `buildout = ${wrapper}`))
    const clientCfg = join(node.dir, 'client.cfg')
    writeFileSync(clientCfg, `[slapos]\nmaster_url = ${node.proxy.url}\n`)
    const clean = await node.snapshot()
    const floor: number[] = []
    const total: number[] = []
    const buildouts: number[] = []
    const above: number[] = []
    let passes = 0
    for (let i = 0; i < RUNS; i++) {
      await node.restore(clean)
      rmSync(times, { force: true })
      const f0 = performance.now()
      await runMeasured([SLAPOS, '--version'])
      floor.push(performance.now() - f0)
      const t0 = performance.now()
      const requested = await runMeasured([SLAPOS, 'request', 'parent', treeUrl, '--cfg', clientCfg])
      if (requested.code !== 0) throw new Error(`slapos request exited ${requested.code}:\n${requested.stderr}`)
      const run = await runMeasured([SLAPOS, 'node', 'instance', '--now', '--converge', '--cfg', cfg])
      total.push(performance.now() - t0)
      if (run.code !== 0) throw new Error(`node instance --converge exited ${run.code}:\n${run.stderr.slice(-3000)}`)
      passes = run.stderr.split('\n').filter((l) => l.includes('converge pass ')).length
      const urls = await publishedUrls(clientCfg, treeUrl)
      if (!urls.every((u) => /^http:/.test(u))) throw new Error(`the parent did not publish both URLs: ${JSON.stringify(urls)}`)
      const own = readFileSync(times, 'utf8').split('\n').filter(Boolean).map(Number).reduce((a, b) => a + b, 0)
      buildouts.push(own)
      above.push((total.at(-1) ?? 0) - own)
    }
    console.log(
      `converge, a parent and 2 children (${passes} passes, ${RUNS} runs): from \`slapos request\` to the published URLs median ${f(median(total))} ms; ` +
        `the buildouts' own time ${f(median(buildouts))} ms; above the buildouts ${f(median(above))} ms (min ${f(Math.min(...above))}, max ${f(Math.max(...above))}; target <= 5000); ` +
        `floor \`slapos --version\` ${f(median(floor))} ms`,
    )
  } finally {
    await teardown(node)
  }
}

/** The parent's child-1-url and child-2-url, as `slapos request --json` gives them. */
async function publishedUrls(clientCfg: string, treeUrl: string): Promise<string[]> {
  const out = await new Promise<string>((res, rej) => {
    const child = spawn(SLAPOS, ['request', 'parent', treeUrl, '--cfg', clientCfg, '--json'], { stdio: ['ignore', 'pipe', 'ignore'] })
    let text = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (text += s))
    child.on('error', rej)
    child.on('close', () => res(text))
  })
  const published = (JSON.parse(out) as { 'connection-parameters': Record<string, unknown> })['connection-parameters']
  return ['child-1-url', 'child-2-url'].map((k) => String(published[k] ?? ''))
}

/** One idle run of `node <cmd>` (instance or report) of `node`, measured. */
async function idleRun(node: TestNode, cmd: 'instance' | 'report'): Promise<{ wallMs: number; cpuMs: number }> {
  const r = await measured([SLAPOS, 'node', cmd, ...(cmd === 'instance' ? ['--now'] : []), '--cfg', directCfg(node)])
  if (r.code !== 0) throw new Error(`node ${cmd} exited ${r.code}:\n${r.stderr.slice(-3000)}`)
  return r
}

async function benchScale(): Promise<void> {
  const big = 1000
  const t0 = performance.now()
  const small = await prepare(10)
  const large = await prepare(big)
  try {
    console.log(`prepared nodes of 10 and ${big} partitions in ${f(performance.now() - t0)} ms`)
    await timed(small, ['--jobs', '2'])
    const first = await timed(large, ['--jobs', '4'])
    console.log(`first deployment of ${big} partitions with --jobs 4: ${f(first)} ms (${f(lastCpu)} ms CPU)`)
    for (const cmd of ['instance', 'report'] as const) {
      await idleRun(small, cmd)
      await idleRun(large, cmd)
      const wall = { small: [] as number[], large: [] as number[] }
      const cpu = { small: [] as number[], large: [] as number[] }
      const floor: number[] = []
      for (let i = 0; i < RUNS; i++) {
        floor.push((await measured([SLAPOS, '--version'])).wallMs)
        // alternating which goes first, so that the machine's moods fall on both
        for (const side of i % 2 === 0 ? (['small', 'large'] as const) : (['large', 'small'] as const)) {
          const r = await idleRun(side === 'small' ? small : large, cmd)
          wall[side].push(r.wallMs)
          cpu[side].push(r.cpuMs)
        }
      }
      const per = (median(wall.large) - median(wall.small)) / (big - 10)
      console.log(
        `idle node ${cmd}: 10 partitions ${f(median(wall.small))} ms wall, ${f(median(cpu.small))} ms CPU; ${big} partitions ${f(median(wall.large))} ms wall, ` +
          `${f(median(cpu.large))} ms CPU; ${per.toFixed(3)} ms per partition above the 10-partition run (target <= 0.3); floor slapos --version ${f(median(floor))} ms (${RUNS} runs each)`,
      )
    }
    for (const [name, node] of [['10', small], [String(big), large]] as const) {
      const rates: number[] = []
      let bytes = 0
      for (let i = 0; i < 3; i++) {
        const r = await getRate(`${node.proxy.url}/getFullComputerInformation?computer_id=${node.computerId}`, 3)
        rates.push(r.rps)
        bytes = r.bytes
      }
      console.log(`proxy getFullComputerInformation of ${name} partitions (${f(bytes / 1024)} KiB), 8 keep-alive connections: median ${f(median(rates))} requests/s of 3 x 3 s${name === String(big) ? ' (target >= 500)' : ''}`)
    }
  } finally {
    await teardown(large)
    await teardown(small)
  }
  const deploy: Record<number, { wall: number; cpu: number }> = {}
  for (const jobs of [1, 2, 4]) {
    const node = await prepare(100)
    try {
      deploy[jobs] = { wall: await timed(node, ['--jobs', String(jobs)]), cpu: lastCpu }
    } finally {
      await teardown(node)
    }
    console.log(`first deployment of 100 partitions with --jobs ${jobs}: ${f(deploy[jobs]?.wall ?? 0)} ms (${f(deploy[jobs]?.cpu ?? 0)} ms CPU of slapos and its buildouts)`)
  }
  const [j1, j2, j4] = [deploy[1]?.wall ?? 0, deploy[2]?.wall ?? 0, deploy[4]?.wall ?? 0]
  console.log(`jobs 2 / jobs 1 = ${(j2 / j1).toFixed(2)} (target <= 0.6); jobs 4 / jobs 2 = ${(j4 / j2).toFixed(2)} (target <= 1)`)
}
