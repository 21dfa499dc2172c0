// Benchmark of the built proxy: a computer with 100 busy partitions (3 instance parameters
// and 2 published connection parameters each), then getFullComputerInformation with 1 and
// 8 concurrent keep-alive connections: requests/s, p99 latency, the proxy's CPU time per
// request, and the memory of the real dist/slapos process from /proc/<pid>/status: VmRSS
// sampled every 20 ms (idle, during each run, after), the kernel's peak VmHWM, and the split
// into private memory (RssAnon) and pages of the executable file (RssFile). The file part
// is clean and shared with every other slapos process; how much of it is mapped depends on
// the page cache (large folios map more than the pages touched), so it varies between runs.
// Requests/s also depend on the client, which runs on the same machine: CPU ms per request
// of the proxy is the steadier figure.
// Usage: node scripts/bench-proxy.ts [seconds per run, default 5] [path/to/slapos, default dist/slapos]
// (it registers tsx itself to import src)
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { dropFromPageCache } from './bench-common.ts'
// src modules use TypeScript syntax that Node's type stripping does not take: load them through tsx
const { register } = await import('tsx/esm/api')
register()
const { dumps } = (await import('../src/slap-protocol.ts')) as typeof import('../src/slap-protocol.ts')

const SECONDS = Number(process.argv[2] ?? 5)
const SLAPOS = resolve(process.argv[3] ?? resolve(import.meta.dirname, '..', 'dist', 'slapos'))
const PARTITIONS = 100
const SR = 'http://sr.example/bench/software.cfg'

const dir = mkdtempSync(join(tmpdir(), 'slapos-bench-proxy-'))
const cfg = join(dir, 'proxy.cfg')
writeFileSync(cfg, `[slapos]\ncomputer_id = computer\n[slapproxy]\nhost = 127.0.0.1\nport = 0\ndatabase_uri = ${join(dir, 'proxy.db')}\n`)
// start from the executable's pages out of the page cache, as after a reboot
dropFromPageCache(SLAPOS)
const child = spawn(SLAPOS, ['proxy', 'start', '--cfg', cfg, '-q'], { stdio: ['ignore', 'ignore', 'pipe'] })
// -q hides INFO, so find the port from /proc instead of the log line
const base = await listeningUrl(child.pid ?? 0)
const idle = memory()
const agent = new Agent({ keepAlive: true, maxSockets: 64 })

function call(method: 'GET' | 'POST', path: string, form: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const q = new URLSearchParams(form).toString()
  return new Promise((res, rej) => {
    const req = request(
      `${base}${path}${method === 'GET' && q ? `?${q}` : ''}`,
      { method, agent, headers: method === 'POST' ? { 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': Buffer.byteLength(q) } : {} },
      (r) => {
        const chunks: Buffer[] = []
        r.on('data', (c: Buffer) => chunks.push(c))
        r.on('end', () => res({ status: r.statusCode ?? 0, body: Buffer.concat(chunks).toString() }))
      },
    )
    req.on('error', rej)
    req.end(method === 'POST' ? q : undefined)
  })
}

/**
 * GET that checks the status and the length of the body and keeps nothing: decoding and
 * joining a 200 KB answer per request costs the client, which shares the machine with the
 * proxy, more CPU than the proxy spends answering it.
 */
function fetchDiscarding(path: string, expected: number): Promise<void> {
  return new Promise((res, rej) => {
    const req = request(`${base}${path}`, { agent }, (r) => {
      let n = 0
      r.on('data', (c: Buffer) => (n += c.length))
      r.on('end', () => (r.statusCode === 200 && n === expected ? res() : rej(new Error(`HTTP ${r.statusCode ?? '?'}, ${n} bytes instead of ${expected}`))))
    })
    req.on('error', rej)
    req.end()
  })
}

async function must(p: Promise<{ status: number; body: string }>): Promise<string> {
  const r = await p
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.slice(0, 200)}`)
  return r.body
}

const partition_list = Array.from({ length: PARTITIONS }, (_, i) => ({
  reference: `slappart${i}`,
  tap: { name: `slapuser${i}` },
  address_list: [
    { addr: `10.0.${Math.floor(i / 250)}.${(i % 250) + 2}`, netmask: '255.255.255.0' },
    { addr: `fd00::${(i + 2).toString(16)}`, netmask: 'ffff:ffff:ffff:ffff::' },
  ],
}))
await must(call('POST', 'loadComputerConfigurationFromXML', { xml: dumps({ reference: 'computer', address: '10.0.0.1', netmask: '255.255.255.0', partition_list }) }))
await must(call('POST', 'supplySupply', { url: SR, computer_id: 'computer', state: 'available' }))
for (let i = 0; i < PARTITIONS; i++) {
  await must(
    call('POST', 'requestComputerPartition', {
      software_release: SR,
      software_type: 'default',
      partition_reference: `instance-${i}`,
      partition_parameter_xml: dumps({ 'param-a': `value a ${i}`, 'param-b': `value b ${i}`, 'param-c': `${i}` }),
      filter_xml: dumps({}),
      state: dumps('started'),
      shared_xml: dumps(false),
    }),
  )
  await must(
    call('POST', 'setComputerPartitionConnectionXml', {
      computer_id: 'computer',
      computer_partition_id: `slappart${i}`,
      connection_xml: dumps({ url: `https://[fd00::${(i + 2).toString(16)}]:8443/`, password: `secret-${i}` }),
      slave_reference: 'None',
    }),
  )
}
const size = (await must(call('GET', 'getFullComputerInformation', { computer_id: 'computer' }))).length
const loaded = memory()

interface Run {
  rps: number
  p99: number
  p50: number
  /** CPU time of the proxy (user + system) per request, ms */
  cpu: number
  /** largest VmRSS sample during the run */
  peak: Memory
}

async function run(connections: number): Promise<Run> {
  const latencies: number[] = []
  let peak = memory()
  const sampler = setInterval(() => {
    const m = memory()
    if (m.rss > peak.rss) peak = m
  }, 20)
  const cpu0 = cpuMs()
  const end = performance.now() + SECONDS * 1000
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < end) {
        const t = performance.now()
        await fetchDiscarding(`getFullComputerInformation?computer_id=computer`, answerSize)
        latencies.push(performance.now() - t)
      }
    }),
  )
  clearInterval(sampler)
  const cpu = (cpuMs() - cpu0) / Math.max(1, latencies.length)
  latencies.sort((a, b) => a - b)
  const pct = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0
  return { rps: latencies.length / SECONDS, p99: pct(0.99), p50: pct(0.5), cpu, peak }
}

// cost of a fresh answer (the proxy caches it until the database changes)
const cold: number[] = []
for (let i = 0; i < 50; i++) {
  await must(call('POST', 'softwareInstanceBang', { computer_id: 'computer', computer_partition_id: `slappart${i}`, message: 'bench' }))
  const t = performance.now()
  await must(call('GET', 'getFullComputerInformation', { computer_id: 'computer' }))
  cold.push(performance.now() - t)
}
cold.sort((a, b) => a - b)

// the bangs above changed the answer: its length now, for the runs to check
const answerSize = (await must(call('GET', 'getFullComputerInformation', { computer_id: 'computer' }))).length
const one = await run(1)
const eight = await run(8)
const wrk = await runWrk(8)
await new Promise((r) => setTimeout(r, 1000))
const after = memory()
// A computer with 1,000 supplied software releases besides its 100 busy partitions: a write
// (one partition's connection parameters) then a read of the computer, the proxy's CPU per
// pair; beside it the floor, the same number of trivial requests (getRunId and an ignored
// POST) that only cross the HTTP layer.
for (let i = 0; i < 1000; i++) await must(call('POST', 'supplySupply', { url: `http://sr.example/many/${i}/software.cfg`, computer_id: 'computer', state: 'available' }))
const PAIRS = 400
async function writeRead(i: number): Promise<void> {
  const connection_xml = dumps({ url: `https://[fd00::2]:8443/${i}`, password: `secret-${i}` })
  await must(call('POST', 'setComputerPartitionConnectionXml', { computer_id: 'computer', computer_partition_id: `slappart${i % PARTITIONS}`, connection_xml, slave_reference: 'None' }))
  await must(call('GET', 'getFullComputerInformation', { computer_id: 'computer' }))
}
async function trivialPair(): Promise<void> {
  await must(call('POST', 'buildingSoftwareRelease', { url: SR, computer_id: 'computer' }))
  await must(call('GET', 'getRunId'))
}
for (let i = 0; i < 50; i++) await writeRead(i)
// alternate the two measures, so that the machine's moods fall on both
let writeReadCpu = 0
let floorCpu = 0
for (let round = 0; round < 4; round++) {
  let c0 = cpuMs()
  for (let i = 0; i < PAIRS / 4; i++) await writeRead(round * 1000 + i)
  writeReadCpu += cpuMs() - c0
  c0 = cpuMs()
  for (let i = 0; i < PAIRS / 4; i++) await trivialPair()
  floorCpu += cpuMs() - c0
}
const bigSize = (await must(call('GET', 'getFullComputerInformation', { computer_id: 'computer' }))).length
// the two halves alone: the write without a read, the kept answer read without a write
let c0 = cpuMs()
for (let i = 0; i < PAIRS; i++) {
  const connection_xml = dumps({ url: `https://[fd00::2]:8443/w${i}`, password: `secret-${i}` })
  await must(call('POST', 'setComputerPartitionConnectionXml', { computer_id: 'computer', computer_partition_id: `slappart${i % PARTITIONS}`, connection_xml, slave_reference: 'None' }))
}
const writeOnlyCpu = cpuMs() - c0
c0 = cpuMs()
for (let i = 0; i < PAIRS; i++) await must(call('GET', 'getFullComputerInformation', { computer_id: 'computer' }))
const readOnlyCpu = cpuMs() - c0

agent.destroy()
child.kill('SIGTERM')
await new Promise((r) => child.once('exit', r))
rmSync(dir, { recursive: true, force: true })

const f = (x: number) => x.toFixed(2)
const mb = (m: Memory) => `${m.rss.toFixed(1)} MB (private ${m.anon.toFixed(1)}, executable file ${m.file.toFixed(1)})`
const peak = [one.peak, eight.peak, ...(wrk ? [wrk.peak] : [])].reduce((a, b) => (b.rss > a.rss ? b : a))
console.log(`proxy getFullComputerInformation, ${PARTITIONS} busy partitions, answer ${size} bytes, ${SECONDS} s per run`)
console.log(`  1 connection : ${one.rps.toFixed(0)} req/s, p50 ${f(one.p50)} ms, p99 ${f(one.p99)} ms, proxy CPU ${f(one.cpu)} ms/request`)
console.log(`  8 connections: ${eight.rps.toFixed(0)} req/s, p50 ${f(eight.p50)} ms, p99 ${f(eight.p99)} ms, proxy CPU ${f(eight.cpu)} ms/request`)
if (wrk) console.log(`  8 connections, wrk as the client: ${wrk.rps.toFixed(0)} req/s, p99 ${wrk.p99} (this client costs less CPU on a machine shared with the proxy)`)
else console.log('  (install wrk to also measure with a load generator that costs less CPU than this script)')
console.log(`  fresh answer after a write: median ${f(cold[25] ?? 0)} ms, max ${f(cold[cold.length - 1] ?? 0)} ms`)
console.log(`  write + read with 1,000 software releases too (answer ${bigSize} bytes): proxy CPU ${f(writeReadCpu / PAIRS)} ms per pair (target: < 2 ms)`)
console.log(`    floors in the same run: two trivial requests ${f(floorCpu / PAIRS)} ms; the write alone ${f(writeOnlyCpu / PAIRS)} ms + the kept answer read alone ${f(readOnlyCpu / PAIRS)} ms`)
console.log(`  proxy RSS idle         : ${mb(idle)}`)
console.log(`  proxy RSS after set-up : ${mb(loaded)}`)
console.log(`  proxy RSS under load   : ${mb(peak)} at most (sampled every 20 ms)`)
console.log(`  proxy RSS 1 s after    : ${mb(after)}; VmHWM (kernel peak, set-up included) ${after.hwm.toFixed(1)} MB`)
console.log(`targets: >= 900 req/s with 8 connections, RSS <= 60 MB`)

/** The same load from wrk (a C load generator), when it is installed; undefined otherwise. */
async function runWrk(connections: number): Promise<{ rps: number; p99: string; peak: Memory } | undefined> {
  if (spawnSync('wrk', ['--version']).error) return undefined
  let peak = memory()
  const sampler = setInterval(() => {
    const m = memory()
    if (m.rss > peak.rss) peak = m
  }, 20)
  const out = await new Promise<string>((res) => {
    const c = spawn('wrk', ['-t', '2', '-c', String(connections), '-d', `${SECONDS}s`, '--latency', `${base}getFullComputerInformation?computer_id=computer`], { stdio: ['ignore', 'pipe', 'ignore'] })
    let text = ''
    c.stdout.setEncoding('utf8').on('data', (d: string) => (text += d))
    c.on('close', () => res(text))
  })
  clearInterval(sampler)
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0)
  const p99 = /99%\s+(\S+)/.exec(out)?.[1] ?? '?'
  // only whole, successful answers count
  if (/Non-2xx|Socket errors/.test(out)) throw new Error(`wrk saw failed requests:\n${out}`)
  const transfer = /Transfer\/sec:\s+(\S+)/.exec(out)?.[1] ?? '?'
  return rps > 0 ? { rps, p99: `${p99}, ${transfer}/s`, peak } : undefined
}

interface Memory {
  rss: number
  anon: number
  file: number
  hwm: number
}

/** The proxy's memory now, MB, from /proc/<pid>/status. */
function memory(): Memory {
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) / 1024
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') + kb('RssShmem'), hwm: kb('VmHWM') }
}

/** CPU time (user + system) the proxy used so far, ms (/proc/<pid>/stat, clock ticks of 10 ms). */
function cpuMs(): number {
  const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) * 10
}

/** The proxy's listening port, read from /proc/net/tcp for the sockets of its pid. */
async function listeningUrl(pid: number): Promise<string> {
  const { readdirSync, readlinkSync } = await import('node:fs')
  for (let tries = 0; tries < 200; tries++) {
    await new Promise((r) => setTimeout(r, 50))
    let inodes: Set<string>
    try {
      inodes = new Set(
        readdirSync(`/proc/${pid}/fd`)
          .map((fd) => {
            try {
              return /socket:\[(\d+)\]/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1]
            } catch {
              return undefined
            }
          })
          .filter((x): x is string => x !== undefined),
      )
    } catch {
      continue
    }
    for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols[3] === '0A' && inodes.has(cols[9] ?? '')) return `http://127.0.0.1:${Number.parseInt((cols[1] ?? '').split(':')[1] ?? '0', 16)}/`
    }
  }
  throw new Error('the proxy did not start listening')
}
