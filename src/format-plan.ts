// Pure part of `slapos node format`: the computer model (what slapos.xml stores), the IPv6
// arithmetic of slapos.core util.py, and planFormat(), which turns the configuration, the
// previous slapos.xml and what exists on the host into the ordered steps format.ts applies.
import { ConfigError, SlapError } from './errors.ts'
import type { FormatConfig } from './config.ts'
import { escapeControls, quote } from './names.ts'
import { isPyDict, type PyDict, type PyValue } from './slap-protocol.ts'

// The model uses the slapos.xml key names on purpose: it is written to disk and posted
// to the master as is, and masters read these exact names (format.md §7).
export interface AddressEntry {
  [k: string]: PyValue
  addr: string
  netmask: string
}
export interface Ipv6Range {
  [k: string]: PyValue
  addr: string
  netmask: string
  network: string
  prefixlen: number
}
export interface TapModel {
  [k: string]: string
  name: string
  ipv4_addr: string
  ipv4_netmask: string
  ipv4_gateway: string
  ipv4_network: string
  ipv6_addr: string
  ipv6_netmask: string
  ipv6_gateway: string
  ipv6_network: string
}
export interface UserModel {
  [k: string]: PyValue
  name: string
  shell: string
  additional_group_list: string[]
  path: string
}
export interface PartitionModel {
  address_list: AddressEntry[]
  external_storage_list: string[]
  ipv6_range: Ipv6Range | Record<string, never>
  path: string
  reference: string
  tap: TapModel
  tun: TapModel | null
  user: UserModel
  capability_list?: string[]
}
export interface ComputerModel {
  address: string | null
  instance_root: string
  instance_storage_home: string | null
  interface: { [k: string]: PyValue; ipv4_local_network: string | null; ipv6_interface: string | null; ipv6_prefixshift: number; name: string | null } | null
  ipv6_interface: string | null
  netmask: string | null
  os_type: string
  partition_has_ipv6_range: boolean
  partition_list: PartitionModel[]
  public_ipv4_address: string | null
  python_version: string
  reference: string
  slapos_version: string
  software_root: string
  software_user: string
  tap_gateway_interface: string
  tap_ipv6: boolean
}

/** One address on an interface, as read from the host. */
export interface HostAddress {
  addr: string
  prefixlen: number
}

/** A passwd entry, as far as `usermod -d H -g G -s S` would change it. */
export interface AccountFacts {
  home: string
  gid: number
  shell: string
}

/** A group: its gid and its members in the group database and, when readable, in gshadow. */
export interface GroupFacts {
  gid: number
  members: string[]
  shadowMembers?: string[]
}

/**
 * One route of any table, its destination normalised to `<network>/<len>` (`ip -j route`); a
 * multipath route is one HostRoute per next hop.
 */
export interface HostRoute {
  table: string
  dst: string
  dev: string
  gateway: string | null
}

/** What exists on the host before formatting (read by format.ts, faked in unit tests). */
export interface HostFacts {
  /** names in the password database */
  users: Set<string>
  /** names in the group database */
  groups: Set<string>
  /** interface name -> its addresses (IPv4 and IPv6); an interface without address maps to [] */
  interfaces: Map<string, HostAddress[]>
  /** TAP/TUN name -> uid in /sys/devices/virtual/net/<name>/owner, when that file exists */
  tunOwners: Map<string, number>
  /** uid of a user name (for the TAP owner comparison) */
  uidOf(name: string): number | undefined
  /** `data<N>` directories of instance_storage_home, in directory-listing order */
  storageDirs: string[]
  /** passwd entries; without them every existing user gets its `usermod` (a no-op when nothing differs) */
  accounts?: Map<string, AccountFacts>
  /** groups by name; without them `usermod` always runs */
  groupInfo?: Map<string, GroupFacts>
  /** users whose password is already locked (`!` in shadow); without it `passwd -l` always runs */
  locked?: Set<string>
  /** the routes of every table; without them every route format wants is added */
  routes?: HostRoute[]
  /** net.ipv6.ip_nonlocal_bind is already 1 (the `sysctl` would change nothing) */
  nonlocalBind?: boolean
  /**
   * the IPv6 interface, when the operator turned on optimistic duplicate address detection
   * for it (net.ipv6.conf.all or .<name>.optimistic_dad not 0) and `ip` takes the word: its
   * partition addresses are added `optimistic` (format.ts `optimisticDad`)
   */
  optimisticDad?: Set<string>
}

/** One line of an `ip -batch -` (the words after `ip`), what it is for, and whether its failure is fatal. */
export interface IpLine {
  args: string[]
  check: boolean
  /** the partition or device the line is for, named in the error message */
  item: string
  /** lines of one group stop at the first failure (the original's "speed hack") */
  group?: number
  /**
   * the words that take back what this line did, run when format fails after it: an address
   * drawn by this run is recorded nowhere until slapos.xml is written, and the next run would
   * draw another one
   */
  undo?: string[]
}

/** An IPv6 address that must be on its interface after a batch; non-TAP ones are waited for (DAD). */
export interface Ipv6Check {
  iface: string
  addr: string
  prefixlen: number
  tap: boolean
}

/**
 * One thing to do. `run` is one command (argv, never a shell string); `check` makes a
 * failure fatal. `lock` runs `passwd -l` unless the user's password is locked already.
 * `ip` runs its lines through one `ip -batch -` in order, stopping at a failing `check` line
 * (the original ran them one by one, see format.ts). `verify6` checks that IPv6 addresses
 * are on their interfaces and hands the ones still in duplicate address detection to the
 * final wait.
 */
export type Step =
  | { kind: 'rootdir'; path: string }
  | { kind: 'partdir'; path: string; owner: string | null }
  | { kind: 'chown'; path: string; user: string }
  | { kind: 'run'; argv: string[]; check: boolean }
  | { kind: 'lock'; user: string }
  | { kind: 'ip'; lines: IpLine[] }
  | { kind: 'verify6'; addrs: Ipv6Check[] }

export interface Plan {
  computer: ComputerModel
  steps: Step[]
  /** number of partitions added by this run */
  added: number
}

export interface PlanEnv {
  /** the decoded previous slapos.xml, or null on a first run */
  stored: PyValue | null
  facts: HostFacts
  /** uniform [0, 1); Math.random in production, a scripted sequence in tests */
  random: () => number
  osType: string
  pythonVersion: string
  slaposVersion: string
}

export class FormatError extends SlapError {
  constructor(message: string, hint?: string) {
    super(message, { code: 'E_FORMAT', hint })
  }
}

/** Builds the model and the ordered steps (format.md §3.2, §4). Throws FormatError/ConfigError. */
export function planFormat(cfg: FormatConfig, env: PlanEnv): Plan {
  const computer = loadModel(cfg, env)
  const E = computer.partition_list.length
  const N = cfg.partitionAmount
  if (N < E) {
    throw new FormatError(`Requested amount of computer partitions (${N}) is lower than already configured (${E}), cannot continue`, 'partitions are never removed: set partition_amount back')
  }
  for (let i = E; i < N; i++) computer.partition_list.push(newPartition(cfg, computer, i))
  const p = new Planner(cfg, env, computer)
  p.plan()
  return { computer, steps: p.steps, added: N - E }
}

// --- IPv6 / IPv4 arithmetic (slapos.core util.py; format.md §9) ---

const ALL128 = (1n << 128n) - 1n

export function parseIpv6(text: string): bigint {
  let s = text.split('%')[0] ?? ''
  let tail: number[] = []
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s)
  if (v4 && v4[1]) {
    const n = parseIpv4(v4[1])
    tail = [(n >>> 16) & 0xffff, n & 0xffff]
    s = s.slice(0, -v4[1].length) + (s.endsWith('::' + v4[1]) ? '' : '0')
    if (s.endsWith(':0') && !text.includes('::' + v4[1])) s = s.slice(0, -2)
  }
  const halves = s.split('::')
  if (halves.length > 2) throw new ConfigError(`'${text}' is not an IPv6 address`)
  const part = (h: string | undefined) => (h ? h.split(':').filter((x) => x !== '') : [])
  const head = part(halves[0])
  const rest = part(halves[1])
  const wanted = 8 - tail.length
  let groups: string[]
  if (halves.length === 2) groups = [...head, ...Array<string>(Math.max(0, wanted - head.length - rest.length)).fill('0'), ...rest]
  else groups = head
  if (groups.length !== wanted || groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) throw new ConfigError(`'${text}' is not an IPv6 address`)
  let v = 0n
  for (const g of [...groups.map((g) => Number.parseInt(g, 16)), ...tail]) v = (v << 16n) | BigInt(g)
  return v
}

/** Canonical text (inet_ntop): lower case, longest run of >= 2 zero groups as `::`. */
export function formatIpv6(v: bigint): string {
  const g: number[] = []
  for (let i = 7; i >= 0; i--) g.push(Number((v >> BigInt(i * 16)) & 0xffffn))
  let best = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && g[j] === 0) j++
    if (j - i > bestLen) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':')
  if (best < 0) return hex(g)
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`
}

export function isIpv6(s: string): boolean {
  try {
    parseIpv6(s)
    return s.includes(':')
  } catch {
    return false
  }
}

export function netmaskFromLenIPv6(len: number): string {
  return formatIpv6(len === 0 ? 0n : (ALL128 << BigInt(128 - len)) & ALL128)
}

/** Leading one-bits of a netmask (IPv6 text, `ffff::/16` form, or a dotted IPv4 mask). */
export function lenNetmaskIpv6(mask: string): number {
  const slash = mask.indexOf('/')
  if (slash >= 0) return Number.parseInt(mask.slice(slash + 1), 10)
  if (!mask.includes(':')) return lenNetmaskIpv4(mask)
  const v = parseIpv6(mask)
  let n = 0
  for (let b = 127n; b >= 0n && ((v >> b) & 1n) === 1n; b--) n++
  return n
}

function prefix(addr: bigint, len: number): bigint {
  return len === 0 ? 0n : addr & ((ALL128 << BigInt(128 - len)) & ALL128)
}

/** Partition address: the prefix, then i+2 in the host bits (…::1 is left to the host). */
export function getPartitionIpv6Addr(base: { addr: string; prefixlen: number }, i: number): { addr: string; prefixlen: number } {
  const L = base.prefixlen
  const hostBits = BigInt(128 - L)
  const size = 1n << hostBits
  let v = BigInt(i + 2)
  if (v >= size) v = hostBits >= 2n ? (BigInt(i) % (size - 2n)) + 2n : v & (size - 1n)
  return { addr: formatIpv6(prefix(parseIpv6(base.addr), L) | v), prefixlen: L }
}

function rangeFactory(k: number, fill: boolean) {
  return (base: { addr: string; prefixlen: number }, i: number, n: number): { addr: string; prefixlen: number } => {
    const L = base.prefixlen
    if (L + n >= 128) throw new FormatError(`The IPv6 range has prefixlen ${L + n} which is too big for generating IPv6 range for partitions.`)
    const low = 128 - L - n
    const field = (BigInt(k) << BigInt(n - 2)) + BigInt(i) + 1n
    const ones = fill ? (1n << BigInt(low)) - 1n : 0n
    return { addr: formatIpv6(prefix(parseIpv6(base.addr), L) | (field << BigInt(low)) | ones), prefixlen: L + n }
  }
}
export const getPartitionIpv6Range = rangeFactory(1, false)
export const getTapIpv6Range = rangeFactory(2, true)
export const getTunIpv6Range = rangeFactory(3, false)

export function getIpv6RangeFirstAddr(addr: string, len: number): string {
  return formatIpv6(prefix(parseIpv6(addr), len) | 1n)
}

export function parseIpv4(s: string): number {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s.trim())
  if (!m) throw new ConfigError(`'${s}' is not an IPv4 address`)
  const parts = m.slice(1, 5).map(Number)
  if (parts.some((x) => x > 255)) throw new ConfigError(`'${s}' is not an IPv4 address`)
  return (((parts[0] ?? 0) << 24) | ((parts[1] ?? 0) << 16) | ((parts[2] ?? 0) << 8) | (parts[3] ?? 0)) >>> 0
}
export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}
export function netmaskFromLenIPv4(len: number): string {
  return formatIpv4(len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0)
}
export function lenNetmaskIpv4(mask: string): number {
  const v = parseIpv4(mask)
  let n = 0
  for (let b = 31; b >= 0 && ((v >>> b) & 1) === 1; b--) n++
  return n
}
/** `10.0.0.0/16` -> first and last address (both included, like the original's draw). */
export function ipv4Network(cidr: string): { first: number; last: number; len: number } {
  const [a, l] = cidr.split('/')
  const len = l === undefined ? 32 : l.includes('.') ? lenNetmaskIpv4(l) : Number.parseInt(l, 10)
  if (!(len >= 0 && len <= 32)) throw new ConfigError(`ipv4_local_network '${cidr}' is not a network (a.b.c.d/len)`)
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0
  const first = (parseIpv4(a ?? '') & mask) >>> 0
  return { first, last: (first | (~mask >>> 0)) >>> 0, len }
}

/** TUN IPv4 of partition i among n (format.md §4.6). */
export function tunIpv4(i: number, n: number): { addr: string; netmask: string; network: string } {
  const shift = n <= 1 ? 0 : Math.ceil(Math.log2(n))
  const len = 12 + shift
  const base = parseIpv4('172.16.0.0')
  const subnet = (base + i * 2 ** (32 - len)) >>> 0
  const addr = formatIpv4(subnet + 1)
  const netmask = netmaskFromLenIPv4(len)
  return { addr, netmask, network: `${addr}/${netmask}` }
}

/**
 * The interface's base IPv6 (format.md §4.4.1): with a preferred address, the lowest
 * candidate whose network contains it; else the shortest prefix, then the lowest address.
 */
export function chooseBaseIpv6(addrs: HostAddress[], preferred?: string | null): HostAddress | undefined {
  const cands = addrs.filter((a) => isGlobalIpv6(a.addr))
  const byAddr = (x: HostAddress, y: HostAddress) => {
    const d = parseIpv6(x.addr) - parseIpv6(y.addr)
    return d < 0n ? -1 : d > 0n ? 1 : 0
  }
  if (preferred) {
    const p = parseIpv6(preferred)
    const containing = cands.filter((c) => prefix(parseIpv6(c.addr), c.prefixlen) === prefix(p, c.prefixlen)).sort(byAddr)
    if (containing[0]) return containing[0]
  }
  return [...cands].sort((x, y) => x.prefixlen - y.prefixlen || byAddr(x, y))[0]
}

function isGlobalIpv6(s: string): boolean {
  if (!s.includes(':')) return false
  const v = parseIpv6(s)
  if (v === 0n || v === 1n) return false
  const top16 = Number(v >> 112n)
  if ((top16 & 0xffc0) === 0xfe80) return false // link-local
  if ((top16 & 0xff00) === 0xff00) return false // multicast
  if (top16 === 0 && (v >> 32n) === 0xffffn) return false // v4-mapped
  return true
}

// --- internal ---

const EMPTY_TAP_FIELDS = ['ipv4_addr', 'ipv4_netmask', 'ipv4_gateway', 'ipv4_network', 'ipv6_addr', 'ipv6_netmask', 'ipv6_gateway', 'ipv6_network'] as const

function emptyTap(name: string): TapModel {
  const t: TapModel = { name } as TapModel
  for (const k of EMPTY_TAP_FIELDS) t[k] = ''
  return t
}

function str(v: PyValue | undefined): string {
  return typeof v === 'string' ? v : ''
}

function loadModel(cfg: FormatConfig, env: PlanEnv): ComputerModel {
  const s = isPyDict(env.stored) ? env.stored : undefined
  const interfaceRecord = {
    ipv4_local_network: cfg.ipv4LocalNetwork ?? null,
    ipv6_interface: cfg.ipv6Interface ?? cfg.interfaceName ?? null,
    ipv6_prefixshift: cfg.ipv6Prefixshift,
    name: cfg.interfaceName ?? null,
  }
  const computer: ComputerModel = {
    address: s ? (typeof s.address === 'string' ? s.address : null) : null,
    instance_root: (s && str(s.instance_root)) || cfg.instanceRoot,
    instance_storage_home: cfg.instanceStorageHome ?? null,
    interface: interfaceRecord,
    ipv6_interface: cfg.ipv6Interface ?? null,
    netmask: s && typeof s.netmask === 'string' ? (s.netmask.split('/')[0] ?? null) : null,
    os_type: env.osType,
    partition_has_ipv6_range: cfg.partitionHasIpv6Range,
    partition_list: [],
    public_ipv4_address: null,
    python_version: env.pythonVersion,
    reference: cfg.computerId,
    slapos_version: env.slaposVersion,
    software_root: (s && str(s.software_root)) || cfg.softwareRoot,
    software_user: (s && str(s.software_user)) || cfg.softwareUser,
    tap_gateway_interface: cfg.tapGatewayInterface,
    tap_ipv6: cfg.tapIpv6,
  }
  const stored = s && Array.isArray(s.partition_list) ? s.partition_list : []
  stored.forEach((raw, i) => {
    if (!isPyDict(raw)) throw new FormatError(`${cfg.computerXml}: partition ${i} is not a dictionary`, 'restore the file from its .zip backup')
    const reference = str(raw.reference)
    const u = isPyDict(raw.user) ? raw.user : undefined
    const t = isPyDict(raw.tap) ? raw.tap : undefined
    const tap = emptyTap(t ? str(t.name) : reference)
    if (t) for (const k of EMPTY_TAP_FIELDS) tap[k] = str(t[k])
    let tun: TapModel | null = null
    if (isPyDict(raw.tun)) {
      tun = emptyTap(str(raw.tun.name))
      const computed = tunIpv4(i, cfg.partitionAmount)
      tun.ipv4_addr = str(raw.tun.ipv4_addr) || computed.addr
      tun.ipv4_netmask = str(raw.tun.ipv4_addr) ? str(raw.tun.ipv4_netmask) : computed.netmask
      tun.ipv4_network = str(raw.tun.ipv4_addr) ? str(raw.tun.ipv4_network) : computed.network
      for (const k of ['ipv6_addr', 'ipv6_netmask', 'ipv6_network', 'ipv6_gateway'] as const) tun[k] = str(raw.tun[k])
    } else if (cfg.createTun) tun = newTun(i, cfg.partitionAmount)
    const range = isPyDict(raw.ipv6_range) && typeof raw.ipv6_range.addr === 'string' ? (raw.ipv6_range as Ipv6Range) : {}
    const p: PartitionModel = {
      address_list: Array.isArray(raw.address_list)
        ? raw.address_list.filter(isPyDict).map((a) => ({ addr: str(a.addr), netmask: str(a.netmask) }))
        : [],
      external_storage_list: [],
      ipv6_range: range,
      path: str(raw.path),
      reference,
      tap,
      tun,
      user: { name: (u && str(u.name)) || 'root', shell: '/bin/sh', additional_group_list: [], path: '' },
    }
    if (Array.isArray(raw.capability_list)) p.capability_list = raw.capability_list.map(String)
    computer.partition_list.push(p)
  })
  return computer
}

function newTun(i: number, n: number): TapModel {
  const t = emptyTap(`slaptun${i}`)
  const v4 = tunIpv4(i, n)
  t.ipv4_addr = v4.addr
  t.ipv4_netmask = v4.netmask
  t.ipv4_network = v4.network
  return t
}

function newPartition(cfg: FormatConfig, c: ComputerModel, i: number): PartitionModel {
  const reference = `${cfg.partitionBaseName}${i}`
  return {
    address_list: [],
    external_storage_list: [],
    ipv6_range: {},
    path: `${c.instance_root}/${reference}`,
    reference,
    tap: emptyTap(`${cfg.tapBaseName}${i}`),
    tun: cfg.createTun ? newTun(i, cfg.partitionAmount) : null,
    user: { name: `${cfg.userBaseName}${i}`, shell: '/bin/sh', additional_group_list: [], path: '' },
  }
}

/**
 * The steps of one phase: its own steps, then its `ip` lines as one batch, then the check of
 * the IPv6 addresses that batch added.
 */
interface Phase {
  steps: Step[]
  lines: IpLine[]
  verify: Ipv6Check[]
}

/**
 * Walks the model in the original's order, simulating each command's effect, and sorts the
 * commands into phases run one after the other:
 *
 *   root dirs -> network (addresses, ranges) -> users -> devices (TAP/TUN) -> partition dirs
 *
 * The partition addresses come first so that the kernel's duplicate address detection of
 * the new IPv6 addresses (one to two seconds, format.ts waits for it at the end) runs while
 * the users are created; TAP/TUN devices come after the users that own them. Within a phase
 * the original's per-partition order is kept. The original went partition by partition, so a
 * failure left the addresses of the partitions before it only; here a later failure would leave
 * every new partition's address, which is why those lines carry their `undo`.
 */
class Planner {
  private head: Step[] = []
  private network = newPhase()
  private accounts = newPhase()
  private devices = newPhase()
  private dirs = newPhase()
  private users: Set<string>
  private groups: Set<string>
  private ifaces: Map<string, HostAddress[]>
  private routes: HostRoute[]
  private reserved = new Set<string>()
  private base: HostAddress | undefined
  private tapCandidates: { addrs: string[]; netmask: string; gateway: string; network: string } | undefined
  private usedV4 = new Set<string>()
  private speedGroups = 0
  /** the partition being planned, named in error messages */
  private item = ''

  constructor(
    readonly cfg: FormatConfig,
    readonly env: PlanEnv,
    readonly c: ComputerModel,
  ) {
    this.users = new Set(env.facts.users)
    this.groups = new Set(env.facts.groups)
    this.ifaces = new Map([...env.facts.interfaces].map(([k, v]) => [k, [...v]]))
    this.routes = [...(env.facts.routes ?? [])]
  }

  get mainIface(): string {
    return this.cfg.interfaceName ?? ''
  }
  get v6Iface(): string {
    return this.cfg.ipv6Interface ?? this.cfg.interfaceName ?? ''
  }

  get steps(): Step[] {
    return [...this.head, ...[this.network, this.accounts, this.devices, this.dirs].flatMap(phaseSteps)]
  }

  plan(): void {
    const { cfg, c } = this
    for (const p of c.partition_list) for (const a of p.address_list) if (!a.addr.includes(':')) this.usedV4.add(a.addr)
    this.chooseComputerAddress()
    // 4.1 root directories, 4.2 software user
    this.head.push({ kind: 'rootdir', path: c.instance_root }, { kind: 'rootdir', path: c.software_root })
    if (cfg.alterUser) {
      this.createUser(c.software_user, c.software_root, [])
      this.accounts.steps.push({ kind: 'chown', path: c.software_root, user: c.software_user })
    }
    if (cfg.alterNetwork) this.storedValues(() => this.networkPreamble())
    c.partition_list.forEach((p, i) => this.storedValues(() => this.partition(p, i)))
    // a node that does not touch the network still gets addresses for new partitions
    // (like slapformat 0.35.1), so that instances have something to bind
    if (!cfg.alterNetwork) c.partition_list.forEach((p, i) => this.addressesWithoutNetwork(p, i))
  }

  private chooseComputerAddress(): void {
    const { c, cfg } = this
    const addrs = this.ifaces.get(this.v6Iface)
    if (!this.v6Iface || addrs === undefined) {
      if (cfg.alterNetwork) throw new FormatError(`interface '${this.v6Iface || '(none)'}' does not exist`, 'set interface_name (and ipv6_interface) in [slapformat] to an existing interface')
      return
    }
    const v6 = addrs.filter((a) => a.addr.includes(':'))
    this.base = chooseBaseIpv6(addrs, c.address)
    if (!this.base) {
      if (!cfg.alterNetwork) return
      if (!v6.length) throw new FormatError(`${this.v6Iface} must have at least one IPv6 address assigned`, 'add a global IPv6 address to the interface, or set alter_network = false')
      throw new FormatError(`No IPv6 found on interface ${this.v6Iface} to construct IPv6 with.`, 'add a global IPv6 address to the interface')
    }
    c.address = this.base.addr
    c.netmask = netmaskFromLenIPv6(this.base.prefixlen)
  }

  private createUser(name: string, home: string, groups: string[]): void {
    const steps = this.accounts.steps
    const existed = this.users.has(name)
    if (!this.groups.has(name)) {
      steps.push({ kind: 'run', argv: ['groupadd', name], check: true })
      this.groups.add(name)
    }
    if (!existed) {
      steps.push({ kind: 'run', argv: ['useradd', '-d', home, '-g', name, '-s', '/bin/sh', '-r', ...(groups.length ? ['-G', groups.join(',')] : []), name], check: true })
      this.users.add(name)
    } else if (!this.accountIs(name, home, groups)) {
      steps.push({ kind: 'run', argv: ['usermod', '-d', home, '-g', name, '-s', '/bin/sh', ...(groups.length ? ['-aG', groups.join(',')] : []), name], check: false })
    }
    // `passwd -l` of a locked password changes nothing (format.ts checks again before running it)
    if (!(existed && this.env.facts.locked?.has(name))) steps.push({ kind: 'lock', user: name })
  }

  /**
   * True when `usermod -d home -g name -s /bin/sh [-aG groups] name` would change nothing: the
   * original runs it on every run, we only when the user database differs.
   */
  private accountIs(name: string, home: string, groups: string[]): boolean {
    const { accounts, groupInfo } = this.env.facts
    const a = accounts?.get(name)
    const primary = groupInfo?.get(name)
    if (!a || !primary || a.home !== home || a.gid !== primary.gid || a.shell !== '/bin/sh') return false
    return groups.every((g) => {
      const info = groupInfo?.get(g)
      return info !== undefined && info.members.includes(name) && (info.shadowMembers === undefined || info.shadowMembers.includes(name))
    })
  }

  private networkPreamble(): void {
    const { cfg, c } = this
    if (cfg.createTap && cfg.tapGatewayInterface) {
      const gw = (this.ifaces.get(cfg.tapGatewayInterface) ?? []).find((a) => !a.addr.includes(':'))
      if (!gw) throw new FormatError(`Could not find interface called ${cfg.tapGatewayInterface} to use as gateway for tap network`)
      const net = ipv4Network(`${gw.addr}/${gw.prefixlen}`)
      const g = parseIpv4(gw.addr)
      const addrs: string[] = []
      for (let a = net.first; a <= net.last && addrs.length < c.partition_list.length + 1; a++) if (a !== net.first && a !== g) addrs.push(formatIpv4(a))
      if (addrs.length < c.partition_list.length) throw new FormatError(`Could not create ${c.partition_list.length} tap interfaces from address ${gw.addr}.`)
      this.tapCandidates = { addrs, netmask: netmaskFromLenIPv4(gw.prefixlen), gateway: gw.addr, network: formatIpv4(net.first) }
    }
    // the value is already 1 on every run after the first: setting it again changes nothing
    if (cfg.partitionHasIpv6Range && !this.env.facts.nonlocalBind) this.network.steps.push({ kind: 'run', argv: ['sysctl', 'net.ipv6.ip_nonlocal_bind=1'], check: true })
    // The original's speed hack re-adds every stored address of a partition and stops at the
    // first failure. On a formatted host that is the first address, already on its interface
    // ("already assigned"): we stop before it instead of running it. An address found only on
    // another interface is added like the original does (`ip addr add` on the target succeeds);
    // a line the kernel refuses for another reason still stops its group, at run time.
    for (const p of c.partition_list) {
      const group = this.speedGroups++
      this.item = p.reference
      for (const a of p.address_list) {
        const iface = a.addr.includes(':') ? this.v6Iface : this.mainIface
        if (this.ifaces.get(iface)?.some((x) => sameAddr(x.addr, a.addr))) break
        const len = this.storedLen(a.netmask)
        this.ifaces.get(iface)?.push({ addr: a.addr, prefixlen: len })
        this.line(this.network, { args: ['addr', 'add', `${a.addr}/${len}`, 'dev', iface, ...this.dadWords(iface, a.addr)], check: false, item: p.reference, group })
      }
    }
  }

  private partition(p: PartitionModel, i: number): void {
    const { cfg, c } = this
    this.item = p.reference
    p.path = `${c.instance_root}/${p.reference}`
    p.user.path = p.path
    p.user.additional_group_list = [c.software_user]
    p.external_storage_list = this.env.facts.storageDirs.map((d) => `${d}/${p.reference}`).reverse()
    if (cfg.alterUser && p.user.name !== 'root') this.createUser(p.user.name, p.path, [c.software_user])
    if (cfg.alterNetwork) {
      const owner = this.users.has(p.user.name) ? p.user.name : 'root'
      if (cfg.createTap) this.tap(p, i, owner)
      if (p.tun) this.tun(p, i, owner)
      this.addresses(p, i)
      this.range(p, i)
    }
    const owner = cfg.alterUser ? p.user.name || 'root' : null
    this.dirs.steps.push({ kind: 'partdir', path: p.path, owner })
    for (const d of p.external_storage_list) this.dirs.steps.push({ kind: 'partdir', path: d, owner })
  }

  /**
   * A value of a partition that is not an address, a netmask or a name (a ConfigError of the
   * arithmetic, or a word `ip` would refuse) stops format naming the partition and where such
   * values come from: the stored slapos.xml, or the names of [slapformat] for a new one.
   */
  private storedValues(f: () => void): void {
    try {
      f()
    } catch (err) {
      if (!(err instanceof ConfigError) || !this.item) throw err
      throw new FormatError(`${this.item}: ${err.message}`, `correct it in ${this.cfg.computerXml} (or restore that file from its .zip) or in [slapformat], then run node format again`)
    }
  }

  /** The prefix length of a stored netmask (`255.255.255.255`, `ffff:ffff::`, `ffff::/64`). */
  private storedLen(mask: string): number {
    let len = Number.NaN
    try {
      len = lenNetmaskIpv6(mask)
    } catch {
      // neither form: said below
    }
    if (!Number.isInteger(len) || len < 0 || len > 128) throw new ConfigError(`netmask ${quote(mask)} is not a netmask`)
    return len
  }

  /**
   * Adds a line to a phase, after checking its words as `ip` parses them: a word it refuses
   * there (a bad prefix, an interface name too long) makes it exit at once, without naming the
   * line, and would stop the batch with the lines after it, ignored ones included.
   */
  private line(phase: Phase, l: IpLine): void {
    const problem = ipLineProblem(l.args)
    if (problem) throw new ConfigError(`${problem} in 'ip ${l.args.map((w) => escapeControls(w)).join(' ')}'`)
    phase.lines.push(l)
  }

  private device(name: string, mode: 'tap' | 'tun', owner: string): void {
    const have = this.env.facts.tunOwners.get(name)
    if (have !== undefined) return // exists; a wrong owner is only warned about by format.ts
    this.line(this.devices, { args: ['tuntap', 'add', 'dev', name, 'mode', mode, 'user', owner], check: true, item: this.item })
    this.line(this.devices, { args: ['link', 'set', name, 'up'], check: true, item: this.item })
    if (!this.ifaces.has(name)) this.ifaces.set(name, [])
  }

  private tap(p: PartitionModel, i: number, owner: string): void {
    const t = p.tap
    this.device(t.name, 'tap', owner)
    if (this.tapCandidates) {
      const cand = this.tapCandidates.addrs.shift() ?? ''
      if (!t.ipv4_addr) {
        t.ipv4_addr = cand
        t.ipv4_netmask = this.tapCandidates.netmask
        t.ipv4_gateway = this.tapCandidates.gateway
        t.ipv4_network = this.tapCandidates.network
      }
    } else {
      t.ipv4_addr = t.ipv4_netmask = t.ipv4_gateway = t.ipv4_network = ''
    }
    if (this.c.tap_ipv6) {
      const base = this.requireBase()
      let addr = t.ipv6_addr
      let len: number
      if (addr && this.ifaces.get(t.name)?.some((a) => a.addr === addr)) {
        len = this.storedLen(t.ipv6_netmask)
      } else {
        const r = addr ? { addr, prefixlen: this.storedLen(t.ipv6_netmask) } : getTapIpv6Range(base, i, this.cfg.ipv6Prefixshift)
        addr = r.addr
        len = r.prefixlen
        this.reserved.add(`${getIpv6RangeFirstAddr(addr, len)}/${len}`)
        this.pushAddr(this.devices, t.name, addr, len, true)
      }
      t.ipv6_addr = addr
      t.ipv6_netmask = netmaskFromLenIPv6(len)
      const routeLen = base.prefixlen + 16
      t.ipv6_gateway = getIpv6RangeFirstAddr(addr, routeLen)
      t.ipv6_network = `${t.ipv6_gateway}/${routeLen}`
    } else {
      t.ipv6_addr = t.ipv6_netmask = t.ipv6_gateway = t.ipv6_network = ''
    }
    // createRoutes: `ip route show <dst>` lists the routes of exactly that destination; the
    // routes read once from the host answer the same questions. The original looks for the
    // TAP's name anywhere in that output; we look for it as the device of the route or of one
    // of its next hops (a longer name that contains it, slaptap10 for slaptap1, does not count)
    const route = (args: string[]) => this.line(this.devices, { args, check: true, item: this.item })
    if (t.ipv4_addr && !this.findRoutes('main', t.ipv4_addr).some((r) => r.dev === t.name)) {
      route(['route', 'add', t.ipv4_addr, 'dev', t.name])
      this.addRoute('main', t.ipv4_addr, t.name, null)
    }
    if (t.ipv6_network) {
      if (!this.findRoutes('main', t.ipv6_gateway).some((r) => r.dev === t.name)) {
        route(['route', 'add', t.ipv6_gateway, 'dev', t.name])
        this.addRoute('main', t.ipv6_gateway, t.name, null)
      }
      const net = this.findRoutes('main', t.ipv6_network)
      if (!net.some((r) => r.dev === t.name && r.gateway !== null && sameAddr(r.gateway, t.ipv6_gateway))) {
        if (net.some((r) => r.dev === t.name)) route(['route', 'del', t.ipv6_network, 'dev', t.name])
        route(['route', 'add', t.ipv6_network, 'dev', t.name, 'via', t.ipv6_gateway])
        this.addRoute('main', t.ipv6_network, t.name, t.ipv6_gateway)
      }
    }
  }

  private tun(p: PartitionModel, i: number, owner: string): void {
    const t = p.tun
    if (!t) return
    this.device(t.name, 'tun', owner)
    if (!t.ipv6_addr && this.cfg.tunIpv6) {
      const r = this.range6(getTunIpv6Range, i)
      t.ipv6_addr = getIpv6RangeFirstAddr(r.addr, r.prefixlen)
      t.ipv6_netmask = netmaskFromLenIPv6(r.prefixlen)
      t.ipv6_network = `${t.ipv6_addr}/${r.prefixlen}`
    }
    const present = this.ifaces.get(t.name) ?? []
    for (const net of [t.ipv4_network, t.ipv6_network]) {
      if (!net) continue
      const a = net.split('/')[0] ?? ''
      if (present.some((x) => x.addr === a)) continue
      // exit status ignored, like the original (which then slept a second)
      this.line(this.devices, { args: ['addr', 'add', net, 'dev', t.name], check: false, item: this.item })
    }
  }

  private requireBase(): HostAddress {
    if (!this.base) throw new FormatError(`No IPv6 found on interface ${this.v6Iface} to construct IPv6 with.`, 'add a global IPv6 address to the interface')
    return this.base
  }

  private onAnyIface(addr: string, except?: string): string | undefined {
    for (const [name, list] of this.ifaces) if (name !== except && list.some((a) => sameAddr(a.addr, addr))) return name
    return undefined
  }

  /**
   * `ip addr add` unless present (the original's `_addSystemAddress`); IPv6 ones are then
   * checked. `drawn`: the address is new in this run (slapos.xml does not hold it yet), so a
   * failure later in the run takes it back.
   */
  private pushAddr(phase: Phase, iface: string, addr: string, prefixlen: number, tap = false, drawn = false): void {
    const v6 = addr.includes(':')
    const present = this.ifaces.get(iface)?.some((a) => sameAddr(a.addr, addr)) === true
    if (!present) {
      if (!this.ifaces.has(iface)) this.ifaces.set(iface, [])
      this.ifaces.get(iface)?.push({ addr, prefixlen })
      const prefix = `${addr}/${prefixlen}`
      const words = tap ? (v6 ? ['noprefixroute'] : []) : this.dadWords(iface, addr)
      this.line(phase, { args: ['addr', 'add', prefix, 'dev', iface, ...words], check: true, item: this.item, ...(drawn ? { undo: ['addr', 'del', prefix, 'dev', iface] } : {}) })
    }
    if (v6) phase.verify.push({ iface, addr, prefixlen, tap })
  }

  /**
   * `optimistic` for an IPv6 address on an interface where optimistic DAD is on: its duplicate
   * address detection starts at once instead of after a random delay of up to 1 s
   * (router_solicitation_delay), so the one wait at the end is about 1 s shorter. The address
   * is still checked and still ends non-tentative; elsewhere the kernel would ignore the word.
   */
  private dadWords(iface: string, addr: string): string[] {
    return addr.includes(':') && this.env.facts.optimisticDad?.has(iface) ? ['optimistic'] : []
  }

  private findRoutes(table: string, dst: string): HostRoute[] {
    const want = routeKey(dst)
    return this.routes.filter((r) => r.table === table && r.dst === want)
  }

  private addRoute(table: string, dst: string, dev: string, gateway: string | null): void {
    this.routes.push({ table, dst: routeKey(dst), dev, gateway })
  }

  private randomIpv4(): string {
    const cidr = this.cfg.ipv4LocalNetwork
    if (!cidr) throw new FormatError('ipv4_local_network is not set', 'set ipv4_local_network in [slapformat], e.g. 10.0.0.0/16')
    const net = ipv4Network(cidr)
    const size = net.last - net.first + 1
    for (let tries = 0; tries < 100000; tries++) {
      const a = formatIpv4(net.first + Math.floor(this.env.random() * size))
      if (this.usedV4.has(a)) continue
      if (this.onAnyIface(a)) continue
      this.usedV4.add(a)
      return a
    }
    throw new FormatError(`no free IPv4 address left in ipv4_local_network ${cidr}`, 'use a larger ipv4_local_network')
  }

  private partitionIpv6(i: number): { addr: string; prefixlen: number } {
    const base = this.requireBase()
    const det = getPartitionIpv6Addr(base, i)
    const other = this.onAnyIface(det.addr, this.v6Iface)
    if (!other) return det
    if (this.cfg.ipv6Prefixshift !== 16) {
      throw new FormatError(`Address ${det.addr}/${det.prefixlen} for partition ${i} is already taken; aborting because IPv6 prefixshift is ${this.cfg.ipv6Prefixshift} != 16`)
    }
    const groups = base.addr.split(':')
    for (let t = 0; t < 10; t++) {
      const r = 1 + Math.floor(this.env.random() * 65000)
      const cand = formatIpv6(parseIpv6([...groups.slice(0, -1), r.toString(16)].join(':')))
      if (!this.onAnyIface(cand)) return { addr: cand, prefixlen: base.prefixlen }
    }
    throw new FormatError(`Generated IPv6 ${det.addr} seems not to be a valid IP.`)
  }

  private addresses(p: PartitionModel, i: number): void {
    if (!p.address_list.length) {
      const v4 = this.randomIpv4()
      this.pushAddr(this.network, this.mainIface, v4, 32, false, true)
      const v6 = this.partitionIpv6(i)
      this.pushAddr(this.network, this.v6Iface, v6.addr, v6.prefixlen, false, true)
      p.address_list = [
        { addr: v4, netmask: '255.255.255.255' },
        { addr: v6.addr, netmask: netmaskFromLenIPv6(v6.prefixlen) },
      ]
      return
    }
    const list = p.address_list
    if (list.length !== 2) throw new FormatError(`There should be exactly 2 stored addresses. Got: ${JSON.stringify(list)}`)
    if (!list.some((a) => isIpv6(a.addr))) throw new FormatError('No valid IPv6 address loaded from XML config')
    if (!list.some((a) => !a.addr.includes(':'))) throw new FormatError('No valid IPv4 address loaded from XML config')
    p.address_list = list.map((a) => {
      if (a.addr.includes(':')) {
        const len = this.storedLen(a.netmask)
        this.usedV6(a.addr)
        if (this.ifaces.get(this.v6Iface)?.some((x) => sameAddr(x.addr, a.addr))) return { addr: a.addr, netmask: a.netmask.split('/')[0] ?? '' }
        this.pushAddr(this.network, this.v6Iface, a.addr, len)
        return { addr: a.addr, netmask: netmaskFromLenIPv6(len) }
      }
      this.usedV4.add(a.addr)
      if (this.ifaces.get(this.mainIface)?.some((x) => x.addr === a.addr)) return { addr: a.addr, netmask: '255.255.255.255' }
      if (this.onAnyIface(a.addr, this.mainIface)) {
        const v4 = this.randomIpv4()
        this.pushAddr(this.network, this.mainIface, v4, 32, false, true)
        return { addr: v4, netmask: '255.255.255.255' }
      }
      this.pushAddr(this.network, this.mainIface, a.addr, 32)
      return { addr: a.addr, netmask: '255.255.255.255' }
    })
  }

  private usedV6(_addr: string): void {
    // stored partition addresses are not reserved, like the original (only ranges are)
  }

  private range6(fn: typeof getPartitionIpv6Range, i: number): { addr: string; prefixlen: number } {
    const base = this.requireBase()
    const r = fn({ addr: base.addr, prefixlen: base.prefixlen }, i, this.cfg.ipv6Prefixshift)
    const key = `${r.addr}/${r.prefixlen}`
    if (!this.reserved.has(key)) {
      this.reserved.add(key)
      return r
    }
    if (this.cfg.ipv6Prefixshift !== 16) throw new FormatError(`IPv6 range ${key} for partition ${i} is already taken; aborting because IPv6 prefixshift is ${this.cfg.ipv6Prefixshift} != 16`)
    for (let t = 0; t < 10; t++) {
      const field = BigInt(1 + Math.floor(this.env.random() * 65000))
      const cand = formatIpv6(prefix(parseIpv6(base.addr), base.prefixlen) | (field << BigInt(128 - base.prefixlen - 16)))
      const k = `${cand}/${base.prefixlen + 16}`
      if (!this.reserved.has(k)) {
        this.reserved.add(k)
        return { addr: cand, prefixlen: base.prefixlen + 16 }
      }
    }
    throw new FormatError(`Could not find a free IPv6 range for partition ${i}`)
  }

  private range(p: PartitionModel, i: number): void {
    if (!this.c.partition_has_ipv6_range) {
      p.ipv6_range = {}
      return
    }
    let r = p.ipv6_range
    if (!('addr' in r) || !r.addr) {
      const g = this.range6(getPartitionIpv6Range, i)
      r = { addr: g.addr, netmask: netmaskFromLenIPv6(g.prefixlen), network: `${g.addr}/${g.prefixlen}`, prefixlen: g.prefixlen }
      p.ipv6_range = r
    } else if (!isIpv6(r.addr)) {
      throw new FormatError(`stored IPv6 range of ${p.reference} is not valid: ${r.addr}`)
    } else if (typeof r.network !== 'string' || !r.network.includes(':') || !isPrefix(r.network)) {
      // looked up in the routes below before any line is checked
      throw new FormatError(`stored IPv6 range of ${p.reference} is not valid: network ${quote(String(r.network))}`)
    }
    // `ip -6 route show table local <range>` lacking `dev lo` -> `ip -6 route add local <range> dev lo`
    if (!this.findRoutes('local', r.network).some((x) => x.dev === 'lo')) {
      this.line(this.network, { args: ['route', 'add', 'local', r.network, 'dev', 'lo'], check: true, item: p.reference })
      this.addRoute('local', r.network, 'lo', null)
    }
  }

  /** alter_network = false: compute addresses for new partitions, put nothing on the host. */
  private addressesWithoutNetwork(p: PartitionModel, i: number): void {
    if (p.address_list.length) return
    if (this.cfg.ipv4LocalNetwork) p.address_list.push({ addr: this.randomIpv4(), netmask: '255.255.255.255' })
    if (this.base) {
      const v6 = getPartitionIpv6Addr(this.base, i)
      p.address_list.push({ addr: v6.addr, netmask: netmaskFromLenIPv6(v6.prefixlen) })
    }
  }
}

function newPhase(): Phase {
  return { steps: [], lines: [], verify: [] }
}

function phaseSteps(p: Phase): Step[] {
  const out = [...p.steps]
  if (p.lines.length) out.push({ kind: 'ip', lines: p.lines })
  if (p.verify.length) out.push({ kind: 'verify6', addrs: p.verify })
  return out
}

/**
 * Why `ip` would refuse a word of one of the lines format writes (`addr add|del <prefix> dev
 * <if> [noprefixroute|optimistic]`, `tuntap add dev <if> mode tap|tun user <name>`, `link set <if> up`,
 * `route add|del [local] <prefix> dev <if> [via <addr>]`), or undefined. Such a refusal exits
 * `ip` at once (exit 1 or 255) without `Command failed -:N`, so it is caught here instead.
 */
export function ipLineProblem(args: string[]): string | undefined {
  for (let k = 1; k < args.length; k++) {
    const w = args[k] ?? ''
    const prev = args[k - 1]
    if (prev === 'dev' && !isIfname(w)) return `${quote(w)} is not an interface name (1 to 15 characters, no '/' or blank)`
    if (prev === 'via' && !isAddress(w)) return `${quote(w)} is not an address`
    if (prev === 'user' && !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/.test(w)) return `${quote(w)} is not a user name`
  }
  const [obj, verb, first, second] = args
  if ((obj === 'addr' || obj === 'route') && (verb === 'add' || verb === 'del')) {
    const p = obj === 'route' && first === 'local' ? second : first
    if (p === undefined || !isPrefix(p)) return `${quote(p ?? '')} is not an address or a network`
  }
  return undefined
}

/** An interface name as the kernel takes it (IFNAMSIZ). */
function isIfname(s: string): boolean {
  return s.length >= 1 && s.length <= 15 && !/[/\s]/.test(s)
}

function isAddress(s: string): boolean {
  if (s.includes('%')) return false
  if (!s.includes(':')) return /^\d+\.\d+\.\d+\.\d+$/.test(s) && ipv4Valid(s)
  return ipv6Value(s) !== undefined
}

function ipv4Valid(s: string): boolean {
  try {
    parseIpv4(s)
    return true
  } catch {
    return false
  }
}

/** `<addr>`, `<addr>/<len>`, or for IPv4 `<addr>/<contiguous dotted netmask>`. */
function isPrefix(s: string): boolean {
  const [a = '', len, more] = s.split('/')
  if (more !== undefined || !isAddress(a)) return false
  if (len === undefined) return true
  const max = a.includes(':') ? 128 : 32
  if (/^\d{1,3}$/.test(len)) return Number(len) <= max
  return max === 32 && ipv4Valid(len) && netmaskFromLenIPv4(lenNetmaskIpv4(len)) === formatIpv4(parseIpv4(len))
}

/**
 * A route destination as `<network>/<len>` in canonical form, host bits cleared (what the
 * kernel stores and `ip -j route` prints; a bare address is a host route).
 */
export function routeKey(dst: string): string {
  const [a = '', l] = dst.split('/')
  if (a.includes(':')) {
    const len = l === undefined ? 128 : Number.parseInt(l, 10)
    return `${formatIpv6(prefix(parseIpv6(a), len))}/${len}`
  }
  const len = l === undefined ? 32 : l.includes('.') ? lenNetmaskIpv4(l) : Number.parseInt(l, 10)
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0
  return `${formatIpv4((parseIpv4(a) & mask) >>> 0)}/${len}`
}

function sameAddr(a: string, b: string): boolean {
  if (a.includes(':') !== b.includes(':')) return false
  if (!a.includes(':') || a === b) return a === b
  const x = ipv6Value(a)
  const y = ipv6Value(b)
  return x === undefined || y === undefined ? false : x === y
}

// The planner compares every new address with every address of every interface: parsing
// each text once keeps a hundred partitions in milliseconds.
const ipv6Values = new Map<string, bigint | undefined>()
function ipv6Value(s: string): bigint | undefined {
  if (ipv6Values.has(s)) return ipv6Values.get(s)
  let v: bigint | undefined
  try {
    v = parseIpv6(s)
  } catch {
    v = undefined
  }
  ipv6Values.set(s, v)
  return v
}

/** The computer as a plain dictionary for dumps(): optional keys left out, key order irrelevant. */
export function computerDict(c: ComputerModel): PyDict {
  return JSON.parse(JSON.stringify(c)) as PyDict
}
