// What the node benchmarks share (scripts/bench-node.ts, scripts/bench-runtime.ts): a test
// node with n deployed-to-be partitions of a light release, its configuration without the
// recording tap, its teardown, a command measured by /usr/bin/time, and the median.
import { spawn, spawnSync } from 'node:child_process'
import { closeSync, fsyncSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
// src and test modules use TypeScript syntax that Node's type stripping does not take: load them through tsx
const { register } = await import('tsx/esm/api')
register()
const { makeNode } = (await import('../test/node-helpers.ts')) as typeof import('../test/node-helpers.ts')
const { Supervisor, supervisorPaths } = (await import('../src/supervisor.ts')) as typeof import('../src/supervisor.ts')
const { createLogger } = (await import('../src/log.ts')) as typeof import('../src/log.ts')
export type TestNode = Awaited<ReturnType<typeof makeNode>>

/**
 * Drops an executable's pages from the page cache, as after a reboot: pages a build or a copy
 * wrote are cached in large folios, and a process mapping those counts ~20 MB more of RssFile.
 * Dirty pages cannot be dropped, so the file is written back first; pages another process maps
 * stay.
 */
export function dropFromPageCache(file: string): void {
  const fd = openSync(file, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  const r = spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none'], { encoding: 'utf8' })
  if (r.status !== 0) console.error(`warning: ${file} stays in the page cache (dd: ${r.error?.message ?? r.stderr.trim()}): its RSS figures may count large folios`)
}

/** The environment every measured command gets: nothing of the caller's but PATH and HOME. */
export const BENCH_ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' }

/**
 * A node with `n` partitions, the software release installed and `n` instances requested.
 * Its service is a `sleep` (100 of them stay light) and, since a `sleep` listens on no port,
 * the release's port promise goes too.
 */
export async function prepare(n: number, opts: { sr?: boolean } = {}): Promise<TestNode> {
  const node = await makeNode({ partitions: n, unboundAddresses: true })
  const tpl = join(node.dir, 'sr', 'instance.cfg.in')
  const text = readFileSync(tpl, 'utf8')
  const light = text.replace(/^command-line = .*$/m, 'command-line = /bin/sleep 100000000').replace(/^(parts = .*) promise$/m, '$1')
  // a template that changed shape would leave the promise in: 15 s of waiting per partition
  if (!/^command-line = \/bin\/sleep 100000000$/m.test(light) || /^parts = .*\bpromise\b/m.test(light)) throw new Error(`${tpl}: no command-line line or no promise part to take out`)
  writeFileSync(tpl, light)
  await node.supply()
  if (opts.sr === false) return node
  const sw = await node.run(['node', 'software', '--now'])
  if (sw.code !== 0) throw new Error(`node software failed:\n${sw.stderr}`)
  for (let i = 0; i < n; i++) {
    await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: `bench${i}`, partitionParameterKw: { n: String(i) }, state: 'started' })
  }
  return node
}

/**
 * The node's configuration with the proxy itself as master_url: the test node talks through a
 * recording tap (a Node HTTP relay in this process), which a real node does not have.
 */
export function directCfg(node: TestNode): string {
  const path = join(node.dir, 'slapos-direct.cfg')
  writeFileSync(path, readFileSync(node.cfgPath, 'utf8').replace(/^master_url = .*$/m, `master_url = ${node.proxy.url}`))
  return path
}

/**
 * Stops the node, and kills whatever service supervisord did not stop in time (shutting down
 * 100 services takes it longer than the test helper waits before its SIGKILL).
 */
export async function teardown(node: TestNode): Promise<void> {
  const sup = new Supervisor(supervisorPaths(node.instanceRoot), createLogger({ level: 'critical', write: () => undefined }))
  const pids = (await sup.processInfo().catch(() => [])).map((p) => p.pid).filter((pid) => pid > 0)
  await node.stop()
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      /* already gone */
    }
  }
}

export interface Measured {
  code: number | null
  wallMs: number
  /** user + system CPU time of the command and the children it waited for */
  cpuMs: number
  /** peak RSS of the process (or of the largest child it waited for), MB */
  maxRssMb: number
  stderr: string
}

/** Runs argv under /usr/bin/time: wall time around it, CPU time and peak RSS from time's own line. */
export function measured(argv: string[], env: NodeJS.ProcessEnv = BENCH_ENV): Promise<Measured> {
  return new Promise((res, rej) => {
    const t0 = performance.now()
    const child = spawn('/usr/bin/time', ['-f', 'TIME %U %S %M', ...argv], { env, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.on('error', rej)
    child.on('close', (code) => {
      const wallMs = performance.now() - t0
      const m = /TIME ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(stderr)
      if (!m) return rej(new Error(`no figures from /usr/bin/time for ${argv.join(' ')}:\n${stderr.slice(-2000)}`))
      res({ code, wallMs, cpuMs: (Number(m[1]) + Number(m[2])) * 1000, maxRssMb: Number(m[3]) / 1024, stderr })
    })
  })
}

/** measured(), failing with the command's last output when it exits non-zero. */
export async function mustRun(argv: string[], env?: NodeJS.ProcessEnv): Promise<Measured> {
  const r = await measured(argv, env)
  if (r.code !== 0) throw new Error(`${argv.join(' ')} exited ${r.code}:\n${r.stderr.slice(-3000)}`)
  return r
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length === 0 ? 0 : s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/**
 * Requests/s of GET `url` over `connections` keep-alive connections for `seconds` (this
 * process is the client: on a small machine it shares the CPUs with the server, as a node's
 * runs share them with its master). Every answer must be a 200 of the first answer's length.
 */
export async function getRate(url: string, seconds: number, connections = 8): Promise<{ rps: number; bytes: number }> {
  const { Agent, request } = await import('node:http')
  const agent = new Agent({ keepAlive: true, maxSockets: connections })
  const get = () =>
    new Promise<number>((res, rej) => {
      request(url, { agent }, (r) => {
        let n = 0
        r.on('data', (c: Buffer) => (n += c.length))
        r.on('end', () => (r.statusCode === 200 ? res(n) : rej(new Error(`HTTP ${r.statusCode ?? '?'} for ${url}`))))
      })
        .on('error', rej)
        .end()
    })
  const bytes = await get()
  let n = 0
  const end = performance.now() + seconds * 1000
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < end) {
        const got = await get()
        if (got !== bytes) throw new Error(`answer of ${got} bytes instead of ${bytes}`)
        n++
      }
    }),
  )
  agent.destroy()
  return { rps: n / seconds, bytes }
}
