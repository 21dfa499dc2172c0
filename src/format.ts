// Effectful part of `slapos node format` (commands/node-format.ts calls formatNode): reads
// what exists on the host (user databases, addresses, routes: once), asks format-plan.ts what
// to do, applies the steps through the Runner (network commands as `ip -batch`) and node:fs,
// waits for duplicate address detection of the new IPv6 addresses, writes slapos.xml (with its
// zip history), slapos.json and the .slapos-resource files, then posts the computer to the master.
// A run that fails before slapos.xml is written deletes the addresses it drew.
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { networkInterfaces, release, arch } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { crc32, deflateRawSync } from 'node:zlib'
import type { FormatConfig } from './config.ts'
import { SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { computerDict, FormatError, parseIpv6, planFormat, routeKey, type AccountFacts, type ComputerModel, type GroupFacts, type HostAddress, type HostFacts, type HostRoute, type IpLine, type Ipv6Check, type Plan, type Step } from './format-plan.ts'
import type { Logger } from './log.ts'
import { runHook, type Manager } from './managers.ts'
import { dumps, loads, type PyDict } from './slap-protocol.ts'
import { escapeControls, quote } from './names.ts'
import { realRunner, type ManyResult, type Runner } from './system.ts'

declare const SLAPOS_VERSION: string

/** The user and group databases; the real one reads `<etc>/passwd`, `group`, `shadow`, `gshadow` when they change. */
export interface UserDb {
  user(name: string): { uid: number; gid: number } | undefined
  groups(): Set<string>
  users(): Set<string>
  /** whether the user's password is locked (`!...` in shadow); undefined when unknown */
  locked?(name: string): boolean | undefined
  /** what lets a re-run skip the commands that would change nothing (format-plan.ts HostFacts) */
  details?(): { accounts: Map<string, AccountFacts>; groupInfo: Map<string, GroupFacts>; locked?: Set<string> }
}

/** One IPv6 address of an interface with its duplicate address detection state (/proc/net/if_inet6). */
export interface Ipv6State {
  iface: string
  addr: bigint
  prefixlen: number
  tentative: boolean
  dadfailed: boolean
}

export interface FormatDeps {
  runner: Runner
  log: Logger
  now(): Date
  /** progress lines for a person (stderr) */
  progress?: (line: string) => void
  users?: UserDb
  /** what exists on the host; the real reader by default */
  readHost?: (cfg: FormatConfig, users: UserDb) => HostFacts | Promise<HostFacts>
  /** the IPv6 addresses of every interface; /proc/net/if_inet6 by default */
  ipv6Addresses?: () => Ipv6State[]
  random?: () => number
  /** posts the computer; the SLAP client by default */
  post?: (cfg: FormatConfig, dict: PyDict) => Promise<void>
  /** longest wait for IPv6 duplicate address detection of all new addresses together */
  dadTimeoutMs?: number
  sleep?: (ms: number) => Promise<void>
  /** the managers of manager_list (node-extras §1.2: format before the partitions, formatTearDown after) */
  managers?: Manager[]
}

export interface FormatResult {
  exitCode: number
  computer: ComputerModel
  /** every command run (or, in dry-run, that would have run); each line of an `ip -batch` as its own `ip ...` */
  commands: string[][]
}

/** Formats the node as configured. Returns exit 0 (posted), 2 (post failed); throws on failure (exit 1). */
export async function formatNode(cfg: FormatConfig, deps: FormatDeps): Promise<FormatResult> {
  const log = deps.log
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)))
  const users = deps.users ?? etcUserDb('/etc')
  if (!cfg.now) {
    const s = (deps.random ?? Math.random)() * 3600
    log.info(`Sleeping for ${s.toFixed(3)} seconds. To disable this feature, use with --now parameter in manual.`)
    await sleep(s * 1000)
  }
  if (cfg.dryRun) log.info('Dry-run mode enabled.')
  // reading the host only reads: it runs while the binaries are probed
  const factsRead = Promise.resolve().then(() => (deps.readHost ?? readHostFacts)(cfg, users))
  factsRead.catch(() => undefined)
  if (!cfg.dryRun) await probeBinaries(cfg, deps.runner)
  let stored = null
  if (existsSync(cfg.computerXml)) {
    log.debug(`Loading previous computer data from '${cfg.computerXml}'`)
    try {
      stored = loads(readFileSync(cfg.computerXml, 'utf8'))
    } catch (err) {
      throw new FormatError(`${cfg.computerXml} cannot be read: ${(err as Error).message}`, `restore it from ${cfg.computerXml}.zip or move it away to start afresh`)
    }
  } else {
    log.warning(`Creating new computer data with id '${cfg.computerId}'`)
  }
  const facts = await factsRead
  const plan = planFormat(cfg, {
    stored,
    facts,
    random: deps.random ?? Math.random,
    osType: osType(),
    pythonVersion: '',
    slaposVersion: typeof SLAPOS_VERSION === 'string' ? SLAPOS_VERSION : '0.0.0-dev',
  })
  if (plan.added) log.info(`Adding ${plan.added} new partitions`)
  else log.info('Updating computer')
  if (cfg.createTap && cfg.alterNetwork) log.info(`Tap creation mode enabled (${cfg.tapIpv6 ? 'with' : 'without'} IPv6).`)
  for (const [name, uid] of facts.tunOwners) {
    const p = plan.computer.partition_list.find((x) => x.tap.name === name || x.tun?.name === name)
    if (!p) continue
    const want = facts.uidOf(p.user.name) ?? 0
    if (uid !== want) log.warning(`Wrong owner of TUN/TAP interface ${name}! Not touching it. Expected ${want} got ${uid}`)
  }
  const applier = new Applier(cfg, deps, users, sleep)
  const managers = cfg.dryRun ? [] : (deps.managers ?? [])
  const computer = { instanceRoot: cfg.instanceRoot, softwareRoot: cfg.softwareRoot, log }
  let dict: PyDict
  await runHook(managers, 'format', computer)
  try {
    try {
      await applier.apply(plan)
    } finally {
      await runHook(managers, 'formatTearDown', computer)
    }
    if (cfg.certificateRepositoryPath && !existsSync(cfg.certificateRepositoryPath)) {
      mkdirSync(cfg.certificateRepositoryPath, { recursive: true, mode: 0o700 })
    }
    dict = computerDict(plan.computer)
    if (cfg.dryRun) return { exitCode: EXIT.OK, computer: plan.computer, commands: applier.commands }
    writePartitionResources(plan, log)
    writeComputerXml(cfg.computerXml, dumps(dict, { pretty: true }), deps.now(), log)
  } catch (err) {
    // until slapos.xml holds them, the addresses drawn by this run are known nowhere: the
    // next run (node boot retries every few seconds) would draw others and leave these
    await applier.undo()
    throw err
  }
  if (cfg.computerJson) atomicWrite(cfg.computerJson, pyJson(dict, 1) + '\n')
  log.info(`Posting information to '${cfg.masterUrl}'`)
  let exitCode: number = EXIT.OK
  try {
    await (deps.post ?? postComputer)(cfg, dict)
  } catch (err) {
    log.error(`failed to transfer information to '${cfg.masterUrl}': ${err instanceof Error ? err.message : String(err)}`)
    exitCode = EXIT.FORMAT_POST_FAILED
  }
  log.info('slapos successfully prepared the computer.')
  return { exitCode, computer: plan.computer, commands: applier.commands }
}

/**
 * The user and group databases of `<etc>`. A file is read again only when it changed (useradd
 * replaces it): chown of a hundred partition directories reads /etc/passwd once.
 */
export function etcUserDb(etc: string): UserDb {
  const cache = new Map<string, { key: string; rows: string[][] }>()
  /** the file's lines split at ':', or undefined when it cannot be read (shadow files as a user) */
  const read = (f: string): string[][] | undefined => {
    const file = join(etc, f)
    try {
      const st = statSync(file)
      const key = `${st.ino}:${st.size}:${st.mtimeMs}`
      const hit = cache.get(f)
      if (hit?.key === key) return hit.rows
      const rows = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => l.split(':'))
      cache.set(f, { key, rows })
      return rows
    } catch {
      return undefined
    }
  }
  const rows = (f: string) => read(f) ?? []
  const members = (field: string | undefined) => (field ? field.split(',').filter(Boolean) : [])
  return {
    user(name) {
      const r = rows('passwd').find((x) => x[0] === name)
      return r ? { uid: Number(r[2]), gid: Number(r[3]) } : undefined
    },
    users: () => new Set(rows('passwd').map((x) => x[0] ?? '')),
    groups: () => new Set(rows('group').map((x) => x[0] ?? '')),
    locked(name) {
      const r = read('shadow')?.find((x) => x[0] === name)
      return r === undefined ? undefined : (r[1] ?? '').startsWith('!')
    },
    details() {
      const accounts = new Map<string, AccountFacts>(rows('passwd').map((r) => [r[0] ?? '', { home: r[5] ?? '', gid: Number(r[3]), shell: r[6] ?? '' }]))
      const gshadow = read('gshadow')
      const shadowMembers = new Map((gshadow ?? []).map((r) => [r[0] ?? '', members(r[3])]))
      const groupInfo = new Map<string, GroupFacts>(
        rows('group').map((r) => {
          const name = r[0] ?? ''
          const sm = gshadow === undefined ? undefined : shadowMembers.get(name)
          return [name, { gid: Number(r[2]), members: members(r[3]), ...(sm === undefined ? {} : { shadowMembers: sm }) }]
        }),
      )
      const shadow = read('shadow')
      const locked = shadow === undefined ? undefined : new Set(shadow.filter((r) => (r[1] ?? '').startsWith('!')).map((r) => r[0] ?? ''))
      return { accounts, groupInfo, ...(locked ? { locked } : {}) }
    },
  }
}

/**
 * Interfaces and addresses (node's getifaddrs view plus /sys for address-less links), TUN
 * owners, users, and, when format may change the network, every route and the
 * ip_nonlocal_bind setting: read once, so that the plan asks nothing per partition.
 */
export async function readHostFacts(cfg: FormatConfig, users: UserDb): Promise<HostFacts> {
  // one `ip -j -batch -` prints one JSON document per line: the addresses, the IPv4 routes and
  // (`root ::/0` selects the IPv6 family) the IPv6 routes of every table
  const [addrs, routes4, routes6] = await ipJsonBatch(cfg.alterNetwork ? ['addr', 'route show table all', 'route show table all root ::/0'] : ['addr'])
  const interfaces = new Map<string, HostAddress[]>()
  for (const name of safeReaddir('/sys/class/net')) interfaces.set(name, [])
  for (const [name, list] of Object.entries(networkInterfaces())) {
    const l = interfaces.get(name) ?? []
    for (const a of list ?? []) l.push({ addr: a.address.split('%')[0] ?? a.address, prefixlen: Number(a.cidr?.split('/')[1] ?? (a.family === 'IPv6' ? 128 : 32)) })
    interfaces.set(name, l)
  }
  // node's view (libuv) skips links without carrier, such as TAPs: prefer iproute2's when present
  const ip = addrs === undefined ? undefined : parseIpAddr(addrs)
  if (ip) for (const [name, list] of ip) interfaces.set(name, list)
  const tunOwners = new Map<string, number>()
  for (const name of safeReaddir('/sys/devices/virtual/net')) {
    try {
      const v = readFileSync(`/sys/devices/virtual/net/${name}/owner`, 'utf8').trim()
      tunOwners.set(name, /^-?\d+$/.test(v) ? Number(v) : (users.user(v)?.uid ?? -1))
    } catch {
      // not a TUN/TAP device
    }
  }
  const storageDirs = cfg.instanceStorageHome ? safeReaddir(cfg.instanceStorageHome).filter((d) => /^data\d+$/.test(d)).map((d) => join(cfg.instanceStorageHome ?? '', d)) : []
  const facts: HostFacts = { users: users.users(), groups: users.groups(), interfaces, tunOwners, uidOf: (n) => users.user(n)?.uid, storageDirs, ...users.details?.() }
  if (cfg.alterNetwork) {
    if (routes4 === undefined || routes6 === undefined) {
      if (!cfg.dryRun) throw new FormatError('cannot read the addresses and routes with `ip -j -batch -`', 'install a recent iproute2 (with JSON output)')
    } else facts.routes = [...parseIpRoutes(routes4), ...parseIpRoutes(routes6)]
    try {
      facts.nonlocalBind = readFileSync('/proc/sys/net/ipv6/ip_nonlocal_bind', 'utf8').trim() === '1'
    } catch {
      // no IPv6: the sysctl runs (and fails) as in the original
    }
    facts.optimisticDad = await optimisticDad(cfg.ipv6Interface ?? cfg.interfaceName)
  }
  return facts
}

/**
 * The routes of `ip -j route show table all`, destinations as format-plan.ts `routeKey`; a
 * multipath route (`nexthops`) gives one HostRoute per next hop, with that hop's device.
 */
export function parseIpRoutes(json: unknown): HostRoute[] {
  if (!Array.isArray(json)) return []
  type Hop = { dev?: unknown; gateway?: unknown }
  const out: HostRoute[] = []
  for (const r of json as (Hop & { dst?: unknown; table?: unknown; nexthops?: unknown } | null)[]) {
    if (r === null || typeof r !== 'object' || typeof r.dst !== 'string' || r.dst === 'default') continue
    let dst: string
    try {
      dst = routeKey(r.dst)
    } catch {
      continue // a destination format does not write (multicast, broadcast of other families)
    }
    const hops: Hop[] = typeof r.dev === 'string' ? [r] : Array.isArray(r.nexthops) ? (r.nexthops as Hop[]) : []
    for (const h of hops) {
      if (h === null || typeof h !== 'object' || typeof h.dev !== 'string') continue
      out.push({ table: typeof r.table === 'string' ? r.table : 'main', dst, dev: h.dev, gateway: typeof h.gateway === 'string' ? h.gateway : null })
    }
  }
  return out
}

/** /proc/net/if_inet6: address, ifindex, prefix length, scope, flags (hex), name per line. */
export function parseIfInet6(text: string): Ipv6State[] {
  const out: Ipv6State[] = []
  for (const line of text.split('\n')) {
    const [hex, , len, , flags, iface] = line.trim().split(/\s+/)
    if (!hex || hex.length !== 32 || !iface || len === undefined || flags === undefined) continue
    const f = Number.parseInt(flags, 16)
    out.push({ iface, addr: BigInt(`0x${hex}`), prefixlen: Number.parseInt(len, 16), tentative: (f & IFA_F_TENTATIVE) !== 0, dadfailed: (f & IFA_F_DADFAILED) !== 0 })
  }
  return out
}

// --- internal ---

// linux/if_addr.h
const IFA_F_DADFAILED = 0x08
const IFA_F_TENTATIVE = 0x40
/** how often the addresses are read while waiting for duplicate address detection */
const DAD_POLL_MS = 20

function readIfInet6(): Ipv6State[] {
  try {
    return parseIfInet6(readFileSync('/proc/net/if_inet6', 'utf8'))
  } catch {
    return []
  }
}

/** The JSON output of each command, undefined for all when `ip` fails or is missing. */
async function ipJsonBatch(commands: string[]): Promise<unknown[]> {
  try {
    const r = await realRunner.run(['ip', '-j', '-batch', '-'], { input: commands.join('\n') + '\n' })
    const docs = r.stdout.split('\n').filter((l) => l.trim())
    if (r.code !== 0 || docs.length !== commands.length) return []
    return docs.map((d) => JSON.parse(d) as unknown)
  } catch {
    return []
  }
}

function parseIpAddr(json: unknown): Map<string, HostAddress[]> | undefined {
  if (!Array.isArray(json)) return undefined
  const m = new Map<string, HostAddress[]>()
  for (const l of json as { ifname?: string; addr_info?: { local?: string; prefixlen?: number }[] }[]) {
    if (!l.ifname) continue
    m.set(l.ifname, (l.addr_info ?? []).filter((a) => a.local).map((a) => ({ addr: a.local ?? '', prefixlen: a.prefixlen ?? 0 })))
  }
  return m
}

/**
 * The IPv6 interface, when its optimistic DAD is on (net.ipv6.conf.all or .<name>.optimistic_dad
 * not 0: the kernel ORs them) and `ip` takes the word `optimistic` (iproute2 5.8 and later;
 * older ones refuse the whole line); otherwise no interface.
 */
async function optimisticDad(iface: string | undefined): Promise<Set<string>> {
  const on = (name: string): boolean => {
    try {
      return !/^0?$/.test(readFileSync(`/proc/sys/net/ipv6/conf/${name}/optimistic_dad`, 'utf8').trim())
    } catch {
      return false // no IPv6 on it, or a kernel without optimistic DAD
    }
  }
  // an interface name from the configuration: kernel names have no '/' and are not '.' or '..'
  if (!iface || iface === '.' || iface === '..' || iface.includes('/') || !(on('all') || on(iface))) return new Set()
  try {
    const r = await realRunner.run(['ip', '-V'])
    return ipTakesOptimistic(`${r.stdout} ${r.stderr}`) ? new Set([iface]) : new Set()
  } catch {
    return new Set()
  }
}

/**
 * Whether `ip -V` names iproute2 5.8 or later (`iproute2-5.10.0`, `iproute2-v5.8.0-...`);
 * 5.7 and older print a snapshot date (`iproute2-ss200602`).
 */
export function ipTakesOptimistic(version: string): boolean {
  const m = /iproute2-v?(\d+)\.(\d+)/.exec(version)
  if (!m) return false
  const major = Number(m[1])
  return major > 5 || (major === 5 && Number(m[2]) >= 8)
}

function safeReaddir(d: string): string[] {
  try {
    return readdirSync(d)
  } catch {
    return []
  }
}

/**
 * Whether `ip -batch` reads the words of a line back as they are: it splits lines at blanks,
 * treats quotes and backslashes and stops at `#`. A line with any other word runs on its own.
 */
function batchable(args: string[]): boolean {
  return args.every((a) => /^[A-Za-z0-9_.:/@%+=,-]+$/.test(a))
}

/** The commands one shell may run in a row (Applier.runMany): the users'. */
const USER_COMMANDS = new Set(['groupadd', 'useradd', 'usermod'])

/**
 * How many steps from `i` one shell can run (Applier.runMany): user commands, and the
 * `passwd -l` checks of users a `useradd` among them creates; 0 when that is fewer than two
 * commands.
 */
function commandRun(steps: Step[], i: number): number {
  const created = new Set<string>()
  let n = 0
  let commands = 0
  for (let k = i; k < steps.length; k++) {
    const s = steps[k] as Step
    if (s.kind === 'run' && USER_COMMANDS.has(s.argv[0] ?? '')) {
      if (s.argv[0] === 'useradd') created.add(s.argv[s.argv.length - 1] ?? '')
      commands++
    } else if (s.kind !== 'lock' || !created.has(s.user)) break
    n++
  }
  return commands > 1 ? n : 0
}

class Applier {
  commands: string[][] = []
  private pendingDad: Ipv6Check[] = []
  private done = 0
  /** lines that ran and have an `undo`, in order */
  private undoable: IpLine[] = []

  constructor(
    readonly cfg: FormatConfig,
    readonly deps: FormatDeps,
    readonly users: UserDb,
    readonly sleep: (ms: number) => Promise<void>,
  ) {}

  get log(): Logger {
    return this.deps.log
  }

  async apply(plan: Plan): Promise<void> {
    const total = plan.computer.partition_list.length
    const steps = plan.steps
    for (let i = 0; i < steps.length; ) {
      const step = steps[i] as Step
      const n = this.cfg.dryRun || !this.deps.runner.runMany ? 0 : commandRun(steps, i)
      if (n > 1) {
        await this.runMany(steps.slice(i, i + n))
        i += n
        continue
      }
      await this.step(step)
      i++
      if (step.kind === 'partdir' && step.path.startsWith(plan.computer.instance_root + '/')) {
        this.done++
        this.deps.progress?.(`partition ${this.done}/${total} ready: ${basename(step.path)}`)
      }
    }
    await this.waitForDad()
  }

  /**
   * Consecutive commands (the users' groupadd, useradd, usermod) through one shell
   * (Runner.runMany): the same commands in the same order, stopped at the same failure. The
   * `passwd -l` checks of the users these commands create come after them: `useradd` leaves
   * the password locked, so they find nothing to do, as they would right after each user.
   */
  private async runMany(steps: Step[]): Promise<void> {
    const commands = steps.flatMap((s) => (s.kind === 'run' ? [s] : []))
    const locks = steps.flatMap((s) => (s.kind === 'lock' ? [s] : []))
    let todo = commands
    while (todo.length) {
      this.log.debug(`/bin/sh - (${todo.length} command${todo.length === 1 ? '' : 's'}):`)
      for (const c of todo) this.log.debug(`  ${c.argv.join(' ')}`)
      let r: ManyResult
      try {
        r = await (this.deps.runner.runMany as NonNullable<Runner['runMany']>)(todo.map((c) => c.argv))
      } catch (err) {
        throw new FormatError(`cannot run the user commands: ${(err as Error).message}`, 'check that /bin/sh runs, or set alter_user = false')
      }
      const ran = todo.slice(0, r.ran)
      this.commands.push(...ran.map((c) => c.argv))
      const failed = r.code === 0 ? undefined : ran[ran.length - 1]
      todo = todo.slice(r.ran)
      if (!failed) continue
      // the shell's answer for a command it could not find or start: as a spawn that failed
      if (r.code === 126 || r.code === 127) throw new FormatError(`cannot run ${failed.argv[0]}: ${oneLine(r.output)}`, `install ${failed.argv[0]} (passwd) or set alter_user = false`)
      if (failed.check) throw new FormatError(`'${failed.argv.join(' ')}' failed (exit ${r.code}): ${oneLine(r.output)}`)
      this.log.debug(`${failed.argv.join(' ')} failed (ignored, exit ${r.code}): ${oneLine(r.output)}`)
    }
    for (const l of locks) await this.step(l)
  }

  /** Logs and records a command; in dry-run that is all. */
  private record(argv: string[]): void {
    this.commands.push(argv)
    this.log.debug(argv.join(' '))
  }

  private async exec(argv: string[], input?: string): Promise<{ code: number; output: string; stderr: string }> {
    try {
      const r = await this.deps.runner.run(argv, input === undefined ? undefined : { input })
      return { code: r.code ?? 1, output: r.stdout + r.stderr, stderr: r.stderr }
    } catch (err) {
      throw new FormatError(`cannot run ${argv[0]}: ${(err as Error).message}`, `install ${argv[0]} (iproute2, passwd, procps) or set alter_user/alter_network = false`)
    }
  }

  private async run(argv: string[]): Promise<{ code: number; output: string }> {
    this.record(argv)
    if (this.cfg.dryRun) return { code: 0, output: '' }
    return this.exec(argv)
  }

  private async must(argv: string[]): Promise<string> {
    const r = await this.run(argv)
    if (r.code !== 0) throw new FormatError(`'${argv.join(' ')}' failed (exit ${r.code}): ${oneLine(r.output)}`)
    return r.output
  }

  private fsop(text: string, f: () => void): void {
    this.log.debug(text)
    if (!this.cfg.dryRun) f()
  }

  private ids(user: string): { uid: number; gid: number } {
    if (user === 'root') return { uid: 0, gid: 0 }
    const u = this.users.user(user)
    if (!u) {
      if (this.cfg.dryRun) return { uid: 12345, gid: 54321 }
      throw new FormatError(`user ${user} does not exist`, 'run with alter_user = true to create it')
    }
    return u
  }

  private async step(s: Step): Promise<void> {
    switch (s.kind) {
      case 'rootdir': {
        if (!existsSync(s.path)) this.fsop(`makedirs('${s.path}', 493)`, () => mkdirSync(s.path, { recursive: true, mode: 0o755 }))
        else if ((statSync(s.path).mode & 0o7777) !== 0o755) this.fsop(`chmod('${s.path}', 493)`, () => chmodSync(s.path, 0o755))
        return
      }
      case 'partdir': {
        if (!existsSync(s.path)) this.fsop(`mkdir('${s.path}', 488)`, () => mkdirSync(s.path, { mode: 0o750 }))
        if (s.owner) {
          const { uid, gid } = this.ids(s.owner)
          this.fsop(`chown('${s.path}', ${uid}, ${gid})`, () => chownSync(s.path, uid, gid))
        }
        this.fsop(`chmod('${s.path}', 488)`, () => chmodSync(s.path, 0o750))
        return
      }
      case 'chown': {
        const { uid, gid } = this.ids(s.user)
        this.fsop(`chown('${s.path}', ${uid}, ${gid})`, () => chownSync(s.path, uid, gid))
        return
      }
      case 'run': {
        if (s.check) await this.must(s.argv)
        else await this.run(s.argv)
        return
      }
      case 'lock': {
        // useradd leaves the password locked (`!`): `passwd -l` would only rewrite shadow as it is
        if (this.users.locked?.(s.user) === true) return
        await this.must(['passwd', '-l', s.user])
        return
      }
      case 'ip':
        await this.ipBatch(s.lines)
        return
      case 'verify6':
        await this.verify6(s.addrs)
        return
    }
  }

  /**
   * Runs the lines in order through `ip -batch -`, which stops at the first failing line and
   * names it (`Command failed -:N`). A failing `check` line stops format with its own error;
   * any other failure is ignored (with the rest of its group) and the batch goes on after it.
   * So the commands run and fail exactly as the original's one-by-one calls, in one process.
   */
  private async ipBatch(lines: IpLine[]): Promise<void> {
    this.log.debug(`ip -batch - (${lines.length} line${lines.length === 1 ? '' : 's'}):`)
    for (const l of lines) {
      this.commands.push(['ip', ...l.args])
      this.log.debug(`  ip ${l.args.join(' ')}`)
    }
    if (this.cfg.dryRun) return
    let todo = lines
    while (todo.length) {
      let n = 0
      while (n < todo.length && batchable(todo[n]?.args ?? [])) n++
      if (n === 0) {
        const line = todo[0] as IpLine
        const r = await this.exec(['ip', ...line.args])
        if (r.code === 0) this.ran([line])
        todo = r.code === 0 ? todo.slice(1) : this.failed(todo, r.output)
        continue
      }
      const chunk = todo.slice(0, n)
      const r = await this.exec(['ip', '-batch', '-'], chunk.map((l) => l.args.join(' ')).join('\n') + '\n')
      if (r.code === 0) {
        this.ran(chunk)
        todo = todo.slice(n)
        continue
      }
      const m = /^Command failed -:(\d+)$/m.exec(r.stderr)
      const k = m ? Number(m[1]) - 1 : -1
      if (k < 0 || k >= n) {
        // ip exited without naming a line (format-plan.ts checks the words ip refuses this way,
        // so this is unexpected): which lines ran is unknown, the chunk is all we can name
        const first = chunk[0] as IpLine
        const last = chunk[n - 1] as IpLine
        const range = n === 1 ? `at ${describe(first)}` : `between ${describe(first)} and ${describe(last)} (${n} lines)`
        throw new FormatError(`'ip -batch -' stopped (exit ${r.code}) ${range}: ${oneLine(r.output) || 'no message'}`, 'run node format -v to see every line, correct the value ip refuses, then run node format again')
      }
      this.ran(chunk.slice(0, k))
      const before = r.stderr.slice(0, m?.index ?? 0)
      todo = this.failed(todo.slice(k), before)
    }
  }

  private ran(lines: IpLine[]): void {
    for (const l of lines) if (l.undo) this.undoable.push(l)
  }

  /**
   * After a failure: deletes (best effort, last first) the addresses this run drew and added,
   * which no slapos.xml records yet. The original leaves them; its next run draws others.
   */
  async undo(): Promise<void> {
    const lines = this.undoable.reverse()
    this.undoable = []
    if (!lines.length || this.cfg.dryRun) return
    this.log.info(`Removing the ${lines.length} address(es) this run added, as it failed`)
    for (const l of lines) this.log.debug(`  ip ${(l.undo ?? []).join(' ')}`)
    try {
      // -force: go on after a line that fails (an address that is gone already)
      const r = await this.deps.runner.run(['ip', '-force', '-batch', '-'], { input: lines.map((l) => (l.undo ?? []).join(' ')).join('\n') + '\n' })
      if (r.code !== 0) this.log.warning(`some addresses this run added could not be removed: ${oneLine(r.stdout + r.stderr)}`)
    } catch (err) {
      this.log.warning(`the addresses this run added could not be removed: ${oneLine((err as Error).message)}`)
    }
  }

  /** After the failure of `todo[0]`: throws for a `check` line, else the lines still to run. */
  private failed(todo: IpLine[], output: string): IpLine[] {
    const [line, ...rest] = todo
    if (!line) return []
    const text = describe(line)
    if (line.check) throw new FormatError(`${text} failed: ${oneLine(output) || 'no message'}`, 'check the interfaces and routes named above, then run node format again')
    this.log.debug(`${text} failed (ignored): ${oneLine(output)}`)
    return line.group === undefined ? rest : rest.filter((l) => l.group !== line.group)
  }

  /**
   * The original read `ip -6 addr list <iface>` after each IPv6 address: it must be there, and
   * not tentative (TAPs, without carrier, stay tentative and are exempt). Addresses still in
   * duplicate address detection are waited for once, together, at the end.
   */
  private async verify6(addrs: Ipv6Check[]): Promise<void> {
    if (this.cfg.dryRun) return
    const state = (this.deps.ipv6Addresses ?? readIfInet6)()
    for (const a of addrs) {
      const e = findAddr(state, a)
      if (!e) throw new FormatError(`IPv6 ${a.addr} is not on ${a.iface} after adding it`, 'check the interface, then run node format again')
      if (a.tap) continue
      if (e.dadfailed) await this.dadFailed(a)
      if (e.tentative) this.pendingDad.push(a)
    }
  }

  /** One wait for all addresses still tentative; a failed DAD removes the address and fails. */
  private async waitForDad(): Promise<void> {
    if (!this.pendingDad.length) return
    const deadline = Date.now() + (this.deps.dadTimeoutMs ?? 5000)
    this.log.info(`Waiting for duplicate address detection of ${this.pendingDad.length} IPv6 address(es)`)
    while (this.pendingDad.length) {
      await this.sleep(DAD_POLL_MS)
      const state = (this.deps.ipv6Addresses ?? readIfInet6)()
      const still: Ipv6Check[] = []
      for (const p of this.pendingDad) {
        const e = findAddr(state, p)
        if (!e) throw new FormatError(`IPv6 ${p.addr} disappeared from ${p.iface} during duplicate address detection`, 'check the network, then run node format again')
        if (e.dadfailed || (e.tentative && Date.now() > deadline)) await this.dadFailed(p)
        if (e.tentative) still.push(p)
      }
      this.pendingDad = still
    }
  }

  private async dadFailed(p: Ipv6Check): Promise<never> {
    await this.run(['ip', 'addr', 'del', `${p.addr}/${p.prefixlen}`, 'dev', p.iface])
    this.undoable = this.undoable.filter((l) => l.args[2] !== `${p.addr}/${p.prefixlen}` || l.args[4] !== p.iface)
    throw new FormatError(`IPv6 ${p.addr} on ${p.iface} failed duplicate address detection (another host uses it?)`, 'check the network, then run node format again')
  }
}

function findAddr(state: Ipv6State[], a: Ipv6Check): Ipv6State | undefined {
  const v = parseIpv6(a.addr)
  return state.find((e) => e.iface === a.iface && e.addr === v)
}

/** A line of a batch and its partition, for a message: `'ip addr add ...' for slappart3`. */
function describe(l: IpLine): string {
  return `${quote(`ip ${l.args.join(' ')}`)} for ${escapeControls(l.item)}`
}

/** A command's output as one line of a message. */
function oneLine(s: string): string {
  return escapeControls(s.trim().split('\n').map((l) => l.trim()).filter(Boolean).join(' / '))
}

async function probeBinaries(cfg: FormatConfig, runner: Runner): Promise<void> {
  const probes: string[][] = []
  if (cfg.alterUser) probes.push(['groupadd'], ['useradd'], ['usermod'], ['passwd', '-h'])
  if (cfg.createTap || cfg.alterNetwork) probes.push(['ip'])
  const missing: string[] = []
  await Promise.all(
    probes.map(async (argv) => {
      try {
        await runner.run(argv)
      } catch {
        missing.push(argv[0] ?? '')
      }
    }),
  )
  if (missing.length) {
    throw new FormatError(`Some required binaries are missing or not functional: ${missing.sort().join(',')}`, 'install iproute2 and passwd, or set alter_user/alter_network = false')
  }
}

function osType(): string {
  let id = ''
  let version = ''
  let name = ''
  try {
    const text = readFileSync('/etc/os-release', 'utf8')
    const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm').exec(text)?.[1] ?? ''
    id = get('ID')
    version = get('VERSION_ID')
    name = get('NAME')
  } catch {
    // not Linux, or a minimal root
  }
  return JSON.stringify([`Linux-${release()}-${arch() === 'x64' ? 'x86_64' : arch()}`, id, version, name]).replace(/","/g, '", "')
}

async function postComputer(cfg: FormatConfig, dict: PyDict): Promise<void> {
  const { SlapClient } = await import('./slap-client.ts')
  const both = cfg.keyFile && cfg.certFile
  const client = new SlapClient({ masterUrl: cfg.masterUrl, keyFile: both ? cfg.keyFile : undefined, certFile: both ? cfg.certFile : undefined, caFile: cfg.masterCaFile })
  try {
    await client.loadComputerConfigurationFromXML(dict)
  } catch (err) {
    if (err instanceof SlapError && err.code === 'E_NOT_FOUND') {
      throw new FormatError(
        "This SlapOS node is not recognised by SlapOS Master and/or computer_id and certificates don't match. Please make sure computer_id of slapos.cfg looks like 'COMP-123' and is correct. Error is : 404 Not Found.",
      )
    }
    throw err
  }
}

/** Python json.dumps(v, indent, sort_keys=True): sorted keys, ASCII escapes. */
export function pyJson(v: unknown, indent: number): string {
  const sort = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(sort)
    if (x !== null && typeof x === 'object') return Object.fromEntries(Object.keys(x).sort().map((k) => [k, sort((x as Record<string, unknown>)[k])]))
    return x
  }
  return JSON.stringify(sort(v), null, indent).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

function writePartitionResources(plan: Plan, log: Logger): void {
  for (const p of plan.computer.partition_list) {
    const file = join(p.path, '.slapos-resource')
    const text = pyJson(JSON.parse(JSON.stringify(p)), 4)
    let old: string | undefined
    try {
      old = readFileSync(file, 'utf8')
    } catch {
      old = undefined
    }
    if (old === text) continue
    atomicWrite(file, text, 0o644)
    log.debug(`Partition resources saved to ${p.reference}`)
  }
}

function atomicWrite(file: string, text: string, mode = 0o644): void {
  const tmp = `${file}.tmp-${process.pid}`
  writeFileSync(tmp, text, { mode })
  chmodSync(tmp, mode)
  renameSync(tmp, file)
}

function stampOf(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0')
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}:${p(d.getMinutes())}`
}

/** format.md §6.3: unchanged + zip present -> nothing; else archive the old file into the zip, write the new one. */
export function writeComputerXml(file: string, text: string, now: Date, log: Logger): void {
  const zip = `${file}.zip`
  let old: Buffer | undefined
  try {
    old = readFileSync(file)
  } catch {
    old = undefined
  }
  if (old !== undefined && existsSync(zip) && old.toString('utf8') === text) return
  mkdirSync(dirname(file), { recursive: true })
  if (old !== undefined) {
    const entry = `${basename(file)}.${stampOf(now)}`
    try {
      zipAppend(zip, entry, old)
    } catch {
      try {
        renameSync(zip, `${zip}_broken_${stampOf(now)}`)
        zipAppend(zip, entry, old)
      } catch (err) {
        log.error(`Can't backup ${file}: ${(err as Error).message}`)
      }
    }
  }
  atomicWrite(file, text)
}

/** Appends one deflated entry to a zip file (created when missing); throws on a corrupt zip. */
export function zipAppend(zip: string, name: string, data: Buffer): void {
  let entries: Buffer[] = [] // central directory records
  let body = Buffer.alloc(0)
  if (existsSync(zip)) {
    const buf = readFileSync(zip)
    const eocd = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]))
    if (eocd < 0 || eocd + 22 > buf.length) throw new Error(`${zip} is not a zip file`)
    const count = buf.readUInt16LE(eocd + 10)
    const cdSize = buf.readUInt32LE(eocd + 12)
    const cdOff = buf.readUInt32LE(eocd + 16)
    if (cdOff + cdSize > eocd) throw new Error(`${zip} is corrupt`)
    let o = cdOff
    for (let i = 0; i < count; i++) {
      if (buf.readUInt32LE(o) !== 0x02014b50) throw new Error(`${zip} is corrupt`)
      const len = 46 + buf.readUInt16LE(o + 28) + buf.readUInt16LE(o + 30) + buf.readUInt16LE(o + 32)
      entries.push(buf.subarray(o, o + len))
      o += len
    }
    body = buf.subarray(0, cdOff)
  }
  const nameBuf = Buffer.from(name, 'utf8')
  const comp = deflateRawSync(data)
  const crc = crc32(data)
  const d = new Date()
  const dosTime = (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1)
  const dosDate = ((d.getFullYear() - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate()
  const local = Buffer.alloc(30)
  local.writeUInt32LE(0x04034b50, 0)
  local.writeUInt16LE(20, 4)
  local.writeUInt16LE(0x0800, 6)
  local.writeUInt16LE(8, 8)
  local.writeUInt16LE(dosTime, 10)
  local.writeUInt16LE(dosDate, 12)
  local.writeUInt32LE(crc, 14)
  local.writeUInt32LE(comp.length, 18)
  local.writeUInt32LE(data.length, 22)
  local.writeUInt16LE(nameBuf.length, 26)
  local.writeUInt16LE(0, 28)
  const central = Buffer.alloc(46)
  central.writeUInt32LE(0x02014b50, 0)
  central.writeUInt16LE(20, 4)
  central.writeUInt16LE(20, 6)
  central.writeUInt16LE(0x0800, 8)
  central.writeUInt16LE(8, 10)
  central.writeUInt16LE(dosTime, 12)
  central.writeUInt16LE(dosDate, 14)
  central.writeUInt32LE(crc, 16)
  central.writeUInt32LE(comp.length, 20)
  central.writeUInt32LE(data.length, 24)
  central.writeUInt16LE(nameBuf.length, 28)
  central.writeUInt32LE(0o100644 * 65536, 38)
  central.writeUInt32LE(body.length, 42)
  entries = [...entries, Buffer.concat([central, nameBuf])]
  const newBody = Buffer.concat([body, local, nameBuf, comp])
  const cd = Buffer.concat(entries)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(entries.length, 8)
  end.writeUInt16LE(entries.length, 10)
  end.writeUInt32LE(cd.length, 12)
  end.writeUInt32LE(newBody.length, 16)
  const tmp = `${zip}.tmp-${process.pid}`
  writeFileSync(tmp, Buffer.concat([newBody, cd, end]))
  renameSync(tmp, zip)
}
