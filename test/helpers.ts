// Shared by the tests: run the built binary, make temp dirs. Fakes, when a test needs one,
// live here and say so in their name.
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { dumps, type PyDict } from '../src/slap-protocol.ts'

export const ROOT = resolve(import.meta.dirname, '..')
/**
 * The built binary under test. Tests run it as other users too (nobody): a clone inside a
 * directory only root can enter (root's home is 0700 on Debian) cannot give it to them, so
 * then the tests run a copy in a directory everyone can reach. SLAPOS_BIN (relative to the
 * repository, or absolute) chooses another binary, e.g. dist/slapos-bun.
 */
export const SLAPOS = reachableByAll(resolve(ROOT, process.env.SLAPOS_BIN || join('dist', 'slapos')))
/**
 * Whether the binary under test is a Bun executable (`SLAPOS_BIN=dist/slapos-bun`): the few
 * tests about Node itself (its SEA fuse, its module loader) say they are skipped, and why.
 */
export const UNDER_BUN = /(^|\/)slapos-bun$/.test(process.env.SLAPOS_BIN ?? '')
export const FIXTURES = join(ROOT, 'test', 'fixtures')

/**
 * Marks the running test as skipped, with why: `if (!isRoot) return skip('needs root')`.
 * scripts/test.ts counts it as skipped instead of passed, and as failed in strict mode
 * (SLAPOS_TEST_STRICT=1, what CI sets): a machine that lacks what a test needs is a problem there.
 */
export function skip(reason: string): void {
  // on a line of its own: uvu prints the previous tests' marks without a newline
  process.stdout.write(`\nSKIPPED: ${reason}\n`)
}

const madeDirs: string[] = []

/**
 * A new directory under the system's temporary directory, removed when this test file's
 * process exits with success (kept after a failure, or with SLAPOS_KEEP_TEST_DIRS=1, to look
 * at what the test left).
 */
export function tempDir(prefix = 'slapos-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  if (madeDirs.length === 0) {
    process.once('exit', (code) => {
      if (code !== 0 || process.exitCode || process.env.SLAPOS_KEEP_TEST_DIRS) return
      for (const d of madeDirs) {
        try {
          rmSync(d, { recursive: true, force: true })
        } catch {
          // a file still in use: the system's temporary directory cleaning will take it
        }
      }
    })
  }
  madeDirs.push(dir)
  return dir
}

export interface Result {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs dist/slapos synchronously (for short commands). */
export function slapos(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; argv0?: string } = {}): Result {
  const r = spawnSync(SLAPOS, args, {
    encoding: 'utf8',
    env: opts.env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
    cwd: opts.cwd,
    input: opts.input,
    argv0: opts.argv0,
    timeout: 120_000,
  })
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

/** Runs dist/slapos without blocking the event loop (needed when the test also serves HTTP). */
export function slaposAsync(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {}): Promise<Result> {
  return new Promise((res, rej) => {
    const child = spawn(SLAPOS, args, {
      env: opts.env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.stdin.end(opts.input ?? '')
    child.on('error', rej)
    child.on('close', (code) => res({ code, stdout, stderr }))
  })
}

export interface StartedProxy {
  /** base URL with a trailing slash, e.g. http://127.0.0.1:41234/ */
  url: string
  dir: string
  cfgPath: string
  dbPath: string
  /** pid of the proxy process */
  pid: number
  /** everything the proxy wrote on stderr so far */
  log(): string
  /** exit status once stopped (null while running or when killed by a signal) */
  exitCode(): number | null
  /** SIGTERM, then waits for the exit (SIGKILL after 10 s) */
  stop(): Promise<void>
}

/**
 * Starts the built `slapos proxy start` on 127.0.0.1, port 0, with a SQLite file in `dir`
 * (a new temp dir by default) and resolves once it listens. `extraCfg` is appended to the
 * configuration file (e.g. more [slapproxy] keys, or [multimaster/...] sections),
 * `slaposCfg` goes at the end of [slapos]; `computerId` defaults to `computer`. With `hosts`,
 * the proxy runs in its own mount namespace where that text is /etc/hosts (names of a test).
 */
export function startProxy(opts: { dir?: string; extraCfg?: string; slaposCfg?: string; computerId?: string; args?: string[]; hosts?: string } = {}): Promise<StartedProxy> {
  const dir = opts.dir ?? tempDir('slapos-proxy-')
  const cfgPath = join(dir, 'slapos-proxy.cfg')
  const dbPath = join(dir, 'proxy.db')
  writeFileSync(
    cfgPath,
    `[slapos]\ncomputer_id = ${opts.computerId ?? 'computer'}\n${opts.slaposCfg ?? ''}\n[slapproxy]\nhost = 127.0.0.1\nport = 0\ndatabase_uri = ${dbPath}\n${opts.extraCfg ?? ''}\n`,
  )
  const command = [SLAPOS, 'proxy', 'start', '--cfg', cfgPath, '--log-time', ...(opts.args ?? [])]
  if (opts.hosts !== undefined) {
    const hostsPath = join(dir, 'hosts')
    writeFileSync(hostsPath, opts.hosts)
    // unshare and sh exec: the pid is the proxy's
    command.unshift('unshare', '--mount', '--', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hostsPath)
  }
  const child = spawn(command[0]!, command.slice(1), {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  const exited = new Promise<void>((res) => child.once('exit', () => res()))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`proxy did not start within 20 s:\n${stderr}`))
    }, 20_000)
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s
      const m = /Listening on (http:\/\/\S+\/)/.exec(stderr)
      if (m && m[1]) {
        clearTimeout(timer)
        resolve({
          url: m[1],
          dir,
          cfgPath,
          dbPath,
          pid: child.pid ?? -1,
          log: () => stderr,
          exitCode: () => child.exitCode,
          async stop() {
            if (child.exitCode !== null || child.signalCode !== null) return
            const kill = setTimeout(() => child.kill('SIGKILL'), 10_000)
            child.kill('SIGTERM')
            await exited
            clearTimeout(kill)
          },
        })
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`proxy exited (${code}) before listening:\n${stderr}`))
    })
  })
}

/** One call of the proxy's JSON API (proxy.md §10.1); an answer other than 200 throws with its text. */
export async function jsonApi(p: StartedProxy, name: string, body: unknown = {}): Promise<any> {
  const res = await fetch(`${p.url}${name}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`${name}: HTTP ${res.status} ${text}`)
  return JSON.parse(text) as unknown
}

/** Formats computer `computer` through the JSON API: `count` partitions slappart0... on 10.0.0.2... */
export async function formatComputer(p: StartedProxy, count = 3): Promise<void> {
  await jsonApi(p, 'slapos.put.v0.compute_node_format', {
    computer_guid: 'computer',
    compute_partition_list: Array.from({ length: count }, (_, i) => ({
      partition_id: `slappart${i}`,
      ip_list: [{ 'ip-address': `10.0.0.${i + 2}`, 'network-interface': `tap${i}`, netmask: '255.255.255.0' }],
    })),
  })
}

/** Supplies a software release to computer `computer` through the JSON API. */
export async function supplyRelease(p: StartedProxy, url: string): Promise<void> {
  await jsonApi(p, 'slapos.post.v0.software_installation', { software_release_uri: url, computer_guid: 'computer' })
}

/** A requestComputerPartition as the slap library sends it (form fields, marshalled values). */
export interface RequestForm {
  title: string
  sr: string
  type?: string | undefined
  params?: PyDict | undefined
  filter?: PyDict | undefined
  state?: string | null | undefined
  shared?: boolean | undefined
  /** [computer id, partition id] of the requesting partition */
  from?: [string, string] | undefined
}

export function requestForm(r: RequestForm): Record<string, string> {
  const form: Record<string, string> = {
    software_release: r.sr,
    software_type: r.type ?? 'default',
    partition_reference: r.title,
    partition_parameter_xml: dumps(r.params ?? {}),
    filter_xml: dumps(r.filter ?? {}),
    state: dumps(r.state ?? null),
    shared_xml: dumps(r.shared ?? false),
  }
  if (r.from) {
    form.computer_id = r.from[0]
    form.computer_partition_id = r.from[1]
  }
  return form
}

/** mulberry32: a small seeded PRNG (floats in [0, 1)), so that a generated test can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** `file` itself when every directory above it lets others through, else a copy (one per build) that does. */
/**
 * A copy of a fixture directory every user can read, for what runs as a partition user (the
 * clone may sit under a directory only root can enter).
 */
export function fixtureForAll(name: string): string {
  const dir = tempDir('slapos-fixture-')
  chmodSync(dir, 0o755)
  cpSync(join(FIXTURES, name), join(dir, name), { recursive: true })
  spawnSync('chmod', ['-R', 'a+rX', dir])
  return join(dir, name)
}

function reachableByAll(file: string): string {
  let open = true
  for (let d = dirname(file); ; d = dirname(d)) {
    try {
      if ((statSync(d).mode & 0o001) === 0) open = false
    } catch {
      return file // not built yet: the tests say so themselves
    }
    if (d === dirname(d)) break
  }
  if (open || !existsSync(file)) return file
  const st = statSync(file)
  const name = `slapos-test-bin-${Math.floor(st.mtimeMs)}-${st.size}`
  const dir = join(tmpdir(), name)
  const copy = join(dir, 'slapos')
  if (existsSync(copy)) return copy
  // copies of earlier builds go; this one appears whole (temp + rename)
  for (const old of readdirSync(tmpdir())) if (old.startsWith('slapos-test-bin-') && old !== name) rmSync(join(tmpdir(), old), { recursive: true, force: true })
  mkdirSync(dir, { recursive: true, mode: 0o755 })
  const tmp = `${copy}.${process.pid}`
  copyFileSync(file, tmp)
  renameSync(tmp, copy)
  return copy
}
