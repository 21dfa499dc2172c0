// Shared by the node tests (software, instance, report, watchdog): a buildout wrapper that
// works on this OS, the offline test Software Release, and a whole test node (directories,
// slapos.cfg, a real proxy with the computer loaded, a tap recording every master call).
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, get as httpGet, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createTcpServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SlapClient } from '../src/slap-client.ts'
import type { PyValue } from '../src/slap-protocol.ts'
import { FIXTURES, SLAPOS, startProxy, tempDir, type Result, type StartedProxy } from './helpers.ts'

export const SR_FIXTURE = join(FIXTURES, 'software-release')

/**
 * Debian's zc.buildout 2.13 fails on Python 3.11 (collections.MutableMapping). Writes
 * `<dir>/python/sitecustomize.py` fixing that and an executable `<dir>/bin/buildout` that runs
 * /usr/bin/buildout with it on PYTHONPATH. Returns the wrapper's path. Test set-up only: the
 * product runs whatever buildout slapos.cfg names.
 */
export function buildoutShim(dir: string): string {
  mkdirSync(join(dir, 'python'), { recursive: true })
  mkdirSync(join(dir, 'bin'), { recursive: true })
  writeFileSync(
    join(dir, 'python', 'sitecustomize.py'),
    [
      'import collections, collections.abc',
      "for _n in ('MutableMapping', 'Mapping', 'Sequence', 'MutableSequence', 'Callable'):",
      '    if not hasattr(collections, _n):',
      '        setattr(collections, _n, getattr(collections.abc, _n))',
      '',
    ].join('\n'),
  )
  const wrapper = join(dir, 'bin', 'buildout')
  writeFileSync(wrapper, `#!/bin/sh\nPYTHONPATH='${join(dir, 'python')}'\nexport PYTHONPATH\nexec /usr/bin/buildout "$@"\n`, { mode: 0o755 })
  // a privilege-dropped buildout (nobody) must be able to reach both files
  for (const d of [dir, join(dir, 'python'), join(dir, 'bin')]) chmodSync(d, 0o755)
  return wrapper
}

/**
 * Copies the test Software Release into `dir` (created) and renders software.cfg.in into
 * software.cfg with absolute paths (zc.buildout 2.13 has no ${:_profile_base_location_}).
 * Returns the Software Release URL: the absolute path of software.cfg.
 */
export function renderSoftwareRelease(dir: string, slapPythonPath = ''): string {
  mkdirSync(dir, { recursive: true })
  cpSync(SR_FIXTURE, dir, { recursive: true })
  const text = readFileSync(join(dir, 'software.cfg.in'), 'utf8').replaceAll('@SR_DIR@', dir).replaceAll('@SLAP_PYTHON_PATH@', slapPythonPath)
  const url = join(dir, 'software.cfg')
  writeFileSync(url, text)
  return url
}

/** One request the node (or an instance) made to the master, as seen by the tap. */
export interface MasterCall {
  verb: string
  /** endpoint name, e.g. `buildingSoftwareRelease` */
  name: string
  /** query (GET) or form (POST) fields, decoded */
  fields: Record<string, string>
  status: number
}

export interface TestNode {
  dir: string
  cfgPath: string
  proxy: StartedProxy
  /** what the node talks to: the recording tap in front of the proxy */
  masterUrl: string
  computerId: string
  softwareRoot: string
  instanceRoot: string
  certificateRepository: string
  buildout: string
  /** URL of the rendered test Software Release */
  srUrl: string
  /** `{ partition id: IPv4 address }` as loaded into the proxy */
  addresses: Record<string, string>
  pidfiles: { software: string; instance: string; report: string }
  /** a SLAP client on the proxy itself (calls made with it are not recorded) */
  client: SlapClient
  /** runs `dist/slapos <args> --cfg <cfgPath>` (no --cfg when `noCfg`) */
  run(args: string[], opts?: RunOpts): Promise<Result>
  /** supplies a Software Release to this computer (default: the test SR, available) */
  supply(url?: string, state?: 'available' | 'destroyed'): Promise<void>
  /**
   * The node's state now (instance root, certificates, the proxy's database, which groups
   * supervisord runs), so that each test can start from it: `restore(snapshot)`.
   */
  snapshot(): Promise<NodeSnapshot>
  /** Back to a snapshot: supervisord stopped, files and database put back, the groups started again. */
  restore(snapshot: NodeSnapshot): Promise<void>
  /** master calls recorded since the start or the last clearCalls() */
  calls(): MasterCall[]
  clearCalls(): void
  /**
   * From now on the tap answers a call with the status `answer` gives (a master that fails:
   * 503, ...) instead of passing it on; undefined passes it on. No argument: all pass again.
   * `restore` clears it too.
   */
  failCalls(answer?: (call: MasterCall) => number | undefined): void
  /** shuts supervisord down (if started), stops the proxy and the tap, removes the directory unless `keep` */
  stop(opts?: { keep?: boolean }): Promise<void>
}

export interface NodeSnapshot {
  dir: string
  /** whether supervisord ran, and its groups with a running process, when the snapshot was taken */
  supervisord: boolean
  groups: string[]
}

export interface RunOpts {
  env?: NodeJS.ProcessEnv
  /** do not append `--cfg <cfgPath>` */
  noCfg?: boolean
  timeoutMs?: number
  /** program name the binary sees (legacy names such as slapgrid-sr) */
  argv0?: string
  /** run as this user (we are root): uid and gid */
  user?: { uid: number; gid: number }
}

export interface MakeNodeOptions {
  partitions: number
  computerId?: string
  /** appended inside [slapos] of slapos.cfg (e.g. `root_check = true`) */
  extraSlapos?: string
  /** appended after [slapos] (other sections) */
  extraCfg?: string
  /** last octet of the first partition address (127.0.1.<base + i>); by default a free range, reserved */
  ipv4Base?: number
  /**
   * The partitions' services bind no address (benchmarks whose service is a `sleep`): addresses
   * 127.2.x.y, as many as wanted (1,000 and more), none reserved.
   */
  unboundAddresses?: boolean
}

/**
 * A test node in a fresh temp directory:
 *   software/ instance/slappartN (0750) cert/ run/ (pid files) sr/ (the test SR) bin/buildout (shim)
 *   slapos.cfg  root_check = false, run_as_root = true, buildout = shim, watchdog_command = `<dist/slapos> node watchdog`
 * with a running proxy that knows the computer and its partitions (addresses 127.0.1.x, so
 * services bind without touching the network), reached through a tap that records each call.
 */
export async function makeNode(opts: MakeNodeOptions): Promise<TestNode> {
  const dir = tempDir('slapos-node-')
  chmodSync(dir, 0o755)
  const computerId = opts.computerId ?? 'computer'
  const softwareRoot = join(dir, 'software')
  const instanceRoot = join(dir, 'instance')
  const certificateRepository = join(dir, 'cert')
  const runDir = join(dir, 'run')
  for (const d of [softwareRoot, instanceRoot, certificateRepository, runDir]) mkdirSync(d, { recursive: true, mode: 0o755 })
  const addresses: Record<string, string> = {}
  const reserved = opts.unboundAddresses ? { base: 0, release: () => undefined } : reserveAddresses(opts.partitions, opts.ipv4Base)
  const base = reserved.base
  for (let i = 0; i < opts.partitions; i++) {
    const id = `slappart${i}`
    mkdirSync(join(instanceRoot, id))
    chmodSync(join(instanceRoot, id), 0o750)
    addresses[id] = opts.unboundAddresses ? `127.2.${(i + 1) >> 8}.${(i + 1) & 255}` : `127.0.1.${base + i}`
  }
  const buildout = buildoutShim(dir)
  const srUrl = renderSoftwareRelease(join(dir, 'sr'))

  mkdirSync(join(dir, 'proxy'))
  let proxy = await startProxy({ dir: join(dir, 'proxy'), computerId }).catch((e) => {
    rmSync(dir, { recursive: true, force: true })
    throw e
  })
  const tap = await startTap(proxy.url)
  const client = new SlapClient({ masterUrl: proxy.url })
  const partition_list: PyValue[] = Object.entries(addresses).map(([reference, addr]) => ({
    reference,
    tap: { name: reference },
    address_list: [{ addr, netmask: '255.255.255.0' }],
  }))
  await client.loadComputerConfigurationFromXML({ reference: computerId, address: '127.0.1.1', netmask: '255.255.255.0', partition_list })

  const pidfiles = { software: join(runDir, 'slapgrid-sr.pid'), instance: join(runDir, 'slapgrid-cp.pid'), report: join(runDir, 'slapgrid-ur.pid') }
  const cfgPath = join(dir, 'slapos.cfg')
  writeFileSync(
    cfgPath,
    [
      '[slapos]',
      `computer_id = ${computerId}`,
      `master_url = ${tap.url}`,
      `software_root = ${softwareRoot}`,
      `instance_root = ${instanceRoot}`,
      `certificate_repository_path = ${certificateRepository}`,
      'root_check = false',
      // the test node's directories belong to root (we are root on CI): said explicitly
      'run_as_root = true',
      `pidfile_software = ${pidfiles.software}`,
      `pidfile_instance = ${pidfiles.instance}`,
      `pidfile_report = ${pidfiles.report}`,
      `buildout = ${buildout}`,
      `watchdog_command = ${SLAPOS} node watchdog`,
      opts.extraSlapos ?? '',
      '',
      '[slapformat]',
      'partition_base_name = slappart',
      '',
      opts.extraCfg ?? '',
      '',
    ].join('\n'),
  )

  const port = new URL(proxy.url).port
  // cp -a: owners, modes, times and links as they are
  const copyTree = (from: string, to: string) => {
    rmSync(to, { recursive: true, force: true })
    const r = spawnSync('cp', ['-a', from, to], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`cp -a ${from} ${to}: ${r.stderr}`)
  }
  return {
    dir,
    cfgPath,
    get proxy() {
      return proxy
    },
    masterUrl: tap.url,
    computerId,
    softwareRoot,
    instanceRoot,
    certificateRepository,
    buildout,
    srUrl,
    addresses,
    pidfiles,
    client,
    run: (args, o = {}) => runSlapos(o.noCfg ? args : [...args, '--cfg', cfgPath], o),
    async supply(url = srUrl, state = 'available') {
      await client.supplySupply(url, computerId, state)
    },
    async snapshot() {
      const snap = tempDir('slapos-node-snapshot-')
      const { DatabaseSync } = await import('node:sqlite')
      const db = new DatabaseSync(proxy.dbPath, { readOnly: true })
      try {
        db.exec(`VACUUM INTO '${join(snap, 'proxy.db').replace(/'/g, "''")}'`)
      } finally {
        db.close()
      }
      copyTree(instanceRoot, join(snap, 'instance'))
      copyTree(certificateRepository, join(snap, 'cert'))
      const supervisord = existsSync(join(instanceRoot, 'var', 'run', 'supervisord.pid'))
      return { dir: snap, supervisord, groups: supervisord ? await runningGroups(instanceRoot) : [] }
    },
    async restore(snap) {
      await stopSupervisord(instanceRoot)
      await proxy.stop()
      for (const suffix of ['', '-wal', '-shm']) rmSync(proxy.dbPath + suffix, { force: true })
      cpSync(join(snap.dir, 'proxy.db'), proxy.dbPath)
      proxy = await startProxy({ dir: join(dir, 'proxy'), computerId, args: ['--port', port] })
      copyTree(join(snap.dir, 'instance'), instanceRoot)
      copyTree(join(snap.dir, 'cert'), certificateRepository)
      for (const f of ['supervisord.pid', 'supervisord.socket']) rmSync(join(instanceRoot, 'var', 'run', f), { force: true })
      for (const f of Object.values(pidfiles)) rmSync(f, { force: true })
      if (snap.supervisord) await startGroups(instanceRoot, snap.groups)
      tap.calls.length = 0
      tap.answer = undefined
    },
    calls: () => [...tap.calls],
    clearCalls: () => void (tap.calls.length = 0),
    failCalls: (answer) => void (tap.answer = answer),
    async stop(o = {}) {
      await stopSupervisord(instanceRoot)
      await proxy.stop()
      await new Promise<void>((res) => tap.server.close(() => res()))
      if (!o.keep) rmSync(dir, { recursive: true, force: true })
      reserved.release()
    },
  }
}

/**
 * Partition addresses 127.0.1.<base>..<base + count - 1> that no other test node of any test
 * process holds: one directory per address under the temporary directory (mkdir is atomic),
 * holding the owner's pid; a directory whose process is gone is taken over. The services of
 * the sample release bind <address>:8080, so two nodes never share an address.
 */
export function reserveAddresses(count: number, wanted?: number): { base: number; release(): void } {
  const lock = (octet: number) => join(tmpdir(), `slapos-test-address-127.0.1.${octet}`)
  const take = (octet: number): boolean => {
    const path = lock(octet)
    try {
      mkdirSync(path)
    } catch {
      let owner = 0
      try {
        owner = Number(readFileSync(join(path, 'pid'), 'utf8'))
      } catch {
        return false // being made right now by another process
      }
      if (owner > 0 && isAlive(owner)) return false
      rmSync(path, { recursive: true, force: true })
      try {
        mkdirSync(path)
      } catch {
        return false
      }
    }
    writeFileSync(join(path, 'pid'), String(process.pid))
    return true
  }
  const span = Math.max(1, 250 - count)
  const first = wanted ?? 2 + Math.floor(Math.random() * span)
  for (let attempt = 0; attempt < span; attempt++) {
    const base = wanted ?? 2 + ((first - 2 + attempt) % span)
    const got: number[] = []
    for (let i = 0; i < count && take(base + i); i++) got.push(base + i)
    const release = () => {
      for (const o of got) rmSync(lock(o), { recursive: true, force: true })
    }
    if (got.length === count) return { base, release }
    release()
    if (wanted !== undefined) throw new Error(`127.0.1.${wanted}.. is held by another test node`)
  }
  throw new Error(`no ${count} free partition addresses in 127.0.1.0/24`)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Groups of the node's supervisord with a process running (none when it is not running). */
async function runningGroups(instanceRoot: string): Promise<string[]> {
  if (!existsSync(join(instanceRoot, 'var', 'run', 'supervisord.pid'))) return []
  const { createLogger } = await import('../src/log.ts')
  const { Supervisor, supervisorPaths } = await import('../src/supervisor.ts')
  const sup = new Supervisor(supervisorPaths(instanceRoot), createLogger({ level: 'critical', write: () => undefined }))
  const list = await sup.processInfo()
  return [...new Set(list.filter((p) => p.statename === 'RUNNING' && p.group !== 'watchdog').map((p) => p.group))].sort()
}

/** Launches the node's supervisord (as node instance does) and starts these groups. */
async function startGroups(instanceRoot: string, groups: string[]): Promise<void> {
  const { createLogger } = await import('../src/log.ts')
  const { Supervisor, supervisorPaths } = await import('../src/supervisor.ts')
  const sup = new Supervisor(supervisorPaths(instanceRoot), createLogger({ level: 'critical', write: () => undefined }))
  await sup.launch()
  for (const g of groups) await sup.startGroup(g)
  // ready as after a deployment: the partitions' etc/promise checks pass (the sample release's
  // waits for its port), so a test never sees a service that has not bound its port yet
  for (const g of groups) {
    const dir = join(instanceRoot, g, 'etc', 'promise')
    if (!existsSync(dir)) continue
    for (const name of readdirSync(dir)) {
      const r = spawnSync(join(dir, name), [], { cwd: join(instanceRoot, g), encoding: 'utf8', timeout: 30_000 })
      if (r.status !== 0) throw new Error(`restored ${g}: promise ${name} fails: ${r.stderr || r.stdout}`)
    }
  }
}

/** Environment for the binary under test: a plain PATH and HOME, nothing from the test runner. */
export function baseEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...extra }
}

// --- internal ---

function runSlapos(args: string[], o: RunOpts): Promise<Result> {
  return new Promise((res, rej) => {
    const child = spawn(SLAPOS, args, { env: o.env ?? baseEnv(), stdio: ['ignore', 'pipe', 'pipe'], argv0: o.argv0, uid: o.user?.uid, gid: o.user?.gid })
    const timeoutMs = o.timeoutMs ?? 300_000
    let stdout = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.on('error', (e) => {
      clearTimeout(timer)
      rej(e)
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      res({ code, stdout, stderr })
    })
  })
}

interface Tap {
  url: string
  server: Server
  calls: MasterCall[]
  /** TestNode.failCalls */
  answer: ((call: MasterCall) => number | undefined) | undefined
}

/** An HTTP forwarder that records each request (endpoint and decoded fields) before passing it to the proxy. */
function startTap(target: string): Promise<Tap> {
  const upstream = new URL(target)
  const calls: MasterCall[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const url = new URL(req.url ?? '/', target)
      const fields: Record<string, string> = Object.fromEntries(url.searchParams)
      if (req.method === 'POST') Object.assign(fields, Object.fromEntries(new URLSearchParams(body.toString('utf8'))))
      const call: MasterCall = { verb: req.method ?? 'GET', name: url.pathname.replace(/^\/+/, ''), fields, status: 0 }
      calls.push(call)
      const failed = tap.answer?.(call)
      if (failed !== undefined) {
        call.status = failed
        res.writeHead(failed, { 'content-type': 'text/plain' })
        res.end(`answered ${failed} by the test`)
        return
      }
      const fwd = httpRequest(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
        (up) => {
          call.status = up.statusCode ?? 0
          res.writeHead(up.statusCode ?? 502, up.headers)
          up.pipe(res)
        },
      )
      fwd.on('error', (e) => {
        call.status = 502
        res.writeHead(502)
        res.end(String(e))
      })
      fwd.end(body)
    })
  })
  const tap: Tap = { url: '', server, calls, answer: undefined }
  return new Promise((res) => {
    server.listen(0, '127.0.0.1', () => {
      tap.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
      res(tap)
    })
  })
}

/** Kills the supervisord a node run may have started in `instanceRoot` and waits for it to go. */
/** Stops the supervisord of an instance root (its pid file), SIGKILL after 10 s. */
export async function stopSupervisord(instanceRoot: string): Promise<void> {
  const pidFile = join(instanceRoot, 'var', 'run', 'supervisord.pid')
  if (!existsSync(pidFile)) return
  const pid = Number.parseInt(readFileSync(pidFile, 'utf8'), 10)
  if (!Number.isInteger(pid) || pid <= 0) return
  try {
    process.kill(pid, 'SIGTERM')
  } catch {
    return
  }
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 100))
    try {
      process.kill(pid, 0)
    } catch {
      return
    }
  }
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    /* gone */
  }
}

/** Runs dist/slapos as another user (uid = gid), e.g. 65534 for the non-root paths. */
export function runAs(uid: number, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(SLAPOS, args, { env: baseEnv({ HOME: '/tmp' }), uid, gid: uid, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

/** Polls `fn` every 100 ms until it returns something other than undefined (or throws after `timeoutMs`). */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** `count` TCP ports of 127.0.0.1 that were free a moment ago (for services a test starts). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createTcpServer>>((res) => {
          const s = createTcpServer()
          s.listen(0, '127.0.0.1', () => res(s))
        }),
    ),
  )
  const ports = servers.map((s) => (s.address() as AddressInfo).port)
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}

/** The body of a 200 answer of `url`, asked again until one comes (the service may be starting). */
export async function httpBody(url: string): Promise<string> {
  return waitFor(
    `an answer from ${url}`,
    () =>
      new Promise<string | undefined>((res) => {
        const req = httpGet(url, (r) => {
          let body = ''
          r.setEncoding('utf8').on('data', (c: string) => (body += c))
          r.on('end', () => res(r.statusCode === 200 ? body : undefined))
        })
        req.on('error', () => res(undefined))
        req.setTimeout(2000, () => req.destroy())
      }),
  )
}
