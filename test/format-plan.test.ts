// Unit tests of format-plan.ts and format.ts: the IPv6 arithmetic of format.md §9 (worked
// examples), and the exact command list of format.md §10 (2 partitions, first run and
// re-run) recorded through a FAKE runner that simulates ip/useradd. The same code path runs
// for real in a network namespace in test/format-netns.test.ts.
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ConfigFile, loadFormatConfig, type FormatConfig } from '../src/config.ts'
import { formatNode, ipTakesOptimistic, parseIfInet6, parseIpRoutes, type FormatDeps, type Ipv6State, type UserDb } from '../src/format.ts'
import {
  chooseBaseIpv6,
  FormatError,
  formatIpv6,
  getIpv6RangeFirstAddr,
  getPartitionIpv6Addr,
  getPartitionIpv6Range,
  getTapIpv6Range,
  getTunIpv6Range,
  ipLineProblem,
  lenNetmaskIpv6,
  netmaskFromLenIPv6,
  parseIpv6,
  planFormat,
  routeKey,
  tunIpv4,
  type HostAddress,
  type HostFacts,
  type HostRoute,
} from '../src/format-plan.ts'
import type { Logger } from '../src/log.ts'
import { realRunner, type ManyResult, type Runner, type RunOptions, type RunResult } from '../src/system.ts'
import { tempDir } from './helpers.ts'

// --- format.md §9 ---

const ipv6 = suite('IPv6 helpers (format.md §9 worked examples)')

ipv6('netmasks and lengths', () => {
  assert.is(netmaskFromLenIPv6(64), 'ffff:ffff:ffff:ffff::')
  assert.is(netmaskFromLenIPv6(80), 'ffff:ffff:ffff:ffff:ffff::')
  assert.is(netmaskFromLenIPv6(128), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')
  assert.is(lenNetmaskIpv6('ffff:ffff:ffff:ffff::'), 64)
  assert.is(lenNetmaskIpv6('ffff::/16'), 16)
  assert.is(lenNetmaskIpv6('255.255.255.255'), 32)
  assert.is(formatIpv6(parseIpv6('2001:0db8:0000:0000:4100:0:0:0')), '2001:db8:0:0:4100::')
  assert.is(formatIpv6(parseIpv6('::ffff:10.0.0.1')), '::ffff:a00:1')
})

const rows64: [number, string, string, string, string, string, string][] = [
  [0, '2001:db8:1234:5678::2', '2001:db8:1234:5678:4001::', '2001:db8:1234:5678:8001:ffff:ffff:ffff', '2001:db8:1234:5678:8001::1', '2001:db8:1234:5678:c001::', '2001:db8:1234:5678:c001::1'],
  [1, '2001:db8:1234:5678::3', '2001:db8:1234:5678:4002::', '2001:db8:1234:5678:8002:ffff:ffff:ffff', '2001:db8:1234:5678:8002::1', '2001:db8:1234:5678:c002::', '2001:db8:1234:5678:c002::1'],
  [9, '2001:db8:1234:5678::b', '2001:db8:1234:5678:400a::', '2001:db8:1234:5678:800a:ffff:ffff:ffff', '2001:db8:1234:5678:800a::1', '2001:db8:1234:5678:c00a::', '2001:db8:1234:5678:c00a::1'],
]
ipv6('base 2001:db8:1234:5678::1/64, shift 16', () => {
  const b = { addr: '2001:db8:1234:5678::1', prefixlen: 64 }
  for (const [i, addr, range, tap, gw, tun, tunAddr] of rows64) {
    assert.equal(getPartitionIpv6Addr(b, i), { addr, prefixlen: 64 })
    assert.equal(getPartitionIpv6Range(b, i, 16), { addr: range, prefixlen: 80 })
    assert.equal(getTapIpv6Range(b, i, 16), { addr: tap, prefixlen: 80 })
    assert.is(getIpv6RangeFirstAddr(tap, 80), gw)
    assert.equal(getTunIpv6Range(b, i, 16), { addr: tun, prefixlen: 80 })
    assert.is(getIpv6RangeFirstAddr(tun, 80), tunAddr)
  }
})

ipv6('base 2a01:e35:2e27::e59c/64, /56, /48 and other shifts', () => {
  const u = { addr: '2a01:e35:2e27::e59c', prefixlen: 64 }
  assert.is(getPartitionIpv6Addr(u, 0).addr, '2a01:e35:2e27::2')
  assert.is(getPartitionIpv6Range(u, 0, 16).addr, '2a01:e35:2e27:0:4001::')
  assert.is(getTapIpv6Range(u, 0, 16).addr, '2a01:e35:2e27:0:8001:ffff:ffff:ffff')
  assert.is(getIpv6RangeFirstAddr('2a01:e35:2e27:0:8001:ffff:ffff:ffff', 80), '2a01:e35:2e27:0:8001::1')
  assert.is(getTunIpv6Range(u, 0, 16).addr, '2a01:e35:2e27:0:c001::')
  const b56 = { addr: '2001:db8:0:ab00::1', prefixlen: 56 }
  const t56: [number, string, string, string, string, string][] = [
    [0, '2001:db8:0:ab00::2', '2001:db8:0:ab40:100::', '2001:db8:0:ab80:1ff:ffff:ffff:ffff', '2001:db8:0:ab80:100::1', '2001:db8:0:abc0:100::'],
    [1, '2001:db8:0:ab00::3', '2001:db8:0:ab40:200::', '2001:db8:0:ab80:2ff:ffff:ffff:ffff', '2001:db8:0:ab80:200::1', '2001:db8:0:abc0:200::'],
  ]
  for (const [i, a, r, t, g, tun] of t56) {
    assert.is(getPartitionIpv6Addr(b56, i).addr, a)
    assert.equal(getPartitionIpv6Range(b56, i, 16), { addr: r, prefixlen: 72 })
    assert.is(getTapIpv6Range(b56, i, 16).addr, t)
    assert.is(getIpv6RangeFirstAddr(t, 72), g)
    assert.is(getTunIpv6Range(b56, i, 16).addr, tun)
  }
  const b48 = { addr: '2001:db8::1', prefixlen: 48 }
  assert.is(getPartitionIpv6Addr(b48, 0).addr, '2001:db8::2')
  assert.equal(getPartitionIpv6Range(b48, 0, 16), { addr: '2001:db8:0:4001::', prefixlen: 64 })
  assert.is(getTapIpv6Range(b48, 0, 16).addr, '2001:db8:0:8001:ffff:ffff:ffff:ffff')
  assert.is(getTunIpv6Range(b48, 0, 16).addr, '2001:db8:0:c001::')
  const b = { addr: '2001:db8::1', prefixlen: 64 }
  assert.equal(getPartitionIpv6Range(b, 0, 8), { addr: '2001:db8:0:0:4100::', prefixlen: 72 })
  assert.is(getTapIpv6Range(b, 0, 8).addr, '2001:db8::81ff:ffff:ffff:ffff')
  assert.is(getTunIpv6Range(b, 0, 8).addr, '2001:db8:0:0:c100::')
  assert.equal(getPartitionIpv6Range(b, 5, 4), { addr: '2001:db8:0:0:a000::', prefixlen: 68 })
  assert.throws(() => getPartitionIpv6Range({ addr: '2001:db8::1', prefixlen: 120 }, 0, 16), /too big for generating IPv6 range/)
})

ipv6('partition address edge cases', () => {
  assert.is(getPartitionIpv6Addr({ addr: '2001:db8::1', prefixlen: 126 }, 0).addr, '2001:db8::2')
  assert.is(getPartitionIpv6Addr({ addr: '2001:db8::1', prefixlen: 126 }, 2).addr, '2001:db8::2')
  assert.is(getPartitionIpv6Addr({ addr: '2001:db8::1', prefixlen: 127 }, 0).addr, '2001:db8::')
  assert.is(getPartitionIpv6Addr({ addr: '2001:db8::1', prefixlen: 128 }, 0).addr, '2001:db8::1')
})

ipv6('base address choice (checklist 53, 54) and TUN IPv4 (34, 35)', () => {
  const a = (addr: string, prefixlen: number): HostAddress => ({ addr, prefixlen })
  assert.is(chooseBaseIpv6([a('2a01:e35:1234::1', 96), a('2a01:e35:2e27::1', 64), a('2a01:e35:5678::1', 80), a('fe80::1', 64)])?.addr, '2a01:e35:2e27::1')
  assert.is(chooseBaseIpv6([a('2a01:e35:1111::1', 64), a('2a01:e35:2e27::1', 64)], '2a01:e35:2e27::1')?.addr, '2a01:e35:2e27::1')
  assert.is(chooseBaseIpv6([a('fe80::1', 64), a('::1', 128)]), undefined)
  assert.equal([0, 1].map((i) => tunIpv4(i, 2).network), ['172.16.0.1/255.248.0.0', '172.24.0.1/255.248.0.0'])
  assert.equal([0, 1, 2].map((i) => tunIpv4(i, 10).network), ['172.16.0.1/255.255.0.0', '172.17.0.1/255.255.0.0', '172.18.0.1/255.255.0.0'])
  assert.is(tunIpv4(0, 1).network, '172.16.0.1/255.240.0.0')
  assert.is(tunIpv4(2, 3).network, '172.24.0.1/255.252.0.0')
})

ipv6.run()

// --- a FAKE host for command-order tests only (format.md §11.2) ---

interface FakeUser {
  name: string
  uid: number
  gid: number
  home: string
  shell: string
  password: string
}

/**
 * FAKE (tests only): users, groups, interfaces, routes and TUN owners that the fake `ip`,
 * `ip -batch -`, `groupadd`, `useradd`, `usermod` and `passwd -l` mutate. A batch is recorded
 * as `ip -batch -` followed by its lines, each as `| <line>`.
 */
class FakeHost implements Runner, UserDb {
  recorded: string[] = []
  userList: FakeUser[] = []
  groupList: { name: string; gid: number; members: string[] }[] = []
  ifaces = new Map<string, HostAddress[]>()
  routes: HostRoute[] = []
  owners = new Map<string, number>()
  nonlocalBind = false
  optimisticDad?: Set<string>
  /** a line that fails like the kernel would refuse it, with its error text */
  refuse: { line: RegExp; error: string } | undefined
  /** a line whose words `ip` refuses while parsing: it exits at once (255) without naming the line */
  badWord: RegExp | undefined
  /** a command (not `ip`) that fails, with its exit status and message */
  failing: { command: RegExp; code: number; error: string } | undefined

  async run(argv: string[], opts?: RunOptions): Promise<RunResult> {
    this.recorded.push(argv.join(' '))
    const done = (code: number, stdout = '', stderr = ''): RunResult => ({ code, signal: null, stdout, stderr, timedOut: false })
    const [cmd, ...a] = argv
    const force = cmd === 'ip' && a[0] === '-force'
    if (cmd === 'ip' && a[force ? 1 : 0] === '-batch' && a[force ? 2 : 1] === '-') {
      const lines = (opts?.input ?? '').split('\n').filter(Boolean)
      let failed = false
      for (const [k, line] of lines.entries()) {
        this.recorded.push(`| ${line}`)
        if (this.badWord?.test(line)) return done(255, '', `Error: argument "${line.split(' ')[2]}" is wrong: invalid prefix\n`)
        const err = this.ip(line.split(' '))
        if (err !== undefined && !force) return done(1, '', `${err}\nCommand failed -:${k + 1}\n`)
        failed ||= err !== undefined
      }
      return done(failed ? 1 : 0)
    }
    if (this.failing?.command.test(argv.join(' '))) return done(this.failing.code, '', this.failing.error)
    if (cmd === 'ip') {
      const err = this.ip(a)
      return err === undefined ? done(0, 'OK') : done(2, '', err)
    }
    if (cmd === 'sysctl') this.nonlocalBind = true
    if (cmd === 'groupadd' && a[0]) this.groupList.push({ name: a[0], gid: 1000 + this.groupList.length, members: [] })
    if (cmd === 'useradd' && a.length) {
      const name = a[a.length - 1] ?? ''
      const group = this.groupList.find((g) => g.name === a[a.indexOf('-g') + 1])
      this.userList.push({ name, uid: 1000 + this.userList.length, gid: group?.gid ?? -1, home: a[a.indexOf('-d') + 1] ?? '', shell: a[a.indexOf('-s') + 1] ?? '', password: '!' })
      const extra = a.indexOf('-G')
      if (extra >= 0) for (const g of (a[extra + 1] ?? '').split(',')) this.groupList.find((x) => x.name === g)?.members.push(name)
    }
    if (cmd === 'passwd' && a[0] === '-l') {
      const u = this.userList.find((x) => x.name === a[1])
      if (u && !u.password.startsWith('!')) u.password = `!${u.password}`
    }
    return done(0)
  }

  /** one `ip` command: undefined when it worked, else its error text */
  private ip(a: string[]): string | undefined {
    const words = a.join(' ')
    if (this.refuse?.line.test(words)) return this.refuse.error
    let m: RegExpExecArray | null
    if ((m = /^addr add (\S+)\/(\S+) dev (\S+)/.exec(words))) {
      const list = this.ifaces.get(m[3] ?? '') ?? []
      if (list.some((x) => x.addr === m?.[1])) return 'Error: ipv4: Address already assigned.'
      const len = m[2] ?? ''
      list.push({ addr: m[1] ?? '', prefixlen: len.includes('.') ? lenNetmaskIpv6(len) : Number(len) })
      this.ifaces.set(m[3] ?? '', list)
      return undefined
    }
    if ((m = /^addr del (\S+)\/\S+ dev (\S+)$/.exec(words))) {
      const list = this.ifaces.get(m[2] ?? '') ?? []
      const k = list.findIndex((x) => x.addr === m?.[1])
      if (k < 0) return 'Error: ipv4: Address not found.'
      list.splice(k, 1)
      return undefined
    }
    if ((m = /^tuntap add dev (\S+) mode \S+ user (\S+)/.exec(words))) {
      this.owners.set(m[1] ?? '', this.user(m[2] ?? '')?.uid ?? 0)
      this.ifaces.set(m[1] ?? '', [])
      return undefined
    }
    if ((m = /^route add (local )?(\S+) dev (\S+)(?: via (\S+))?$/.exec(words))) {
      const r = { table: m[1] ? 'local' : 'main', dst: routeKey(m[2] ?? ''), dev: m[3] ?? '', gateway: m[4] ?? null }
      if (this.routes.some((x) => x.table === r.table && x.dst === r.dst && x.dev === r.dev)) return 'RTNETLINK answers: File exists'
      this.routes.push(r)
      return undefined
    }
    return undefined
  }

  user(name: string): { uid: number; gid: number } | undefined {
    const u = this.userList.find((x) => x.name === name)
    return u ? { uid: u.uid, gid: u.gid } : undefined
  }
  users(): Set<string> {
    return new Set(this.userList.map((u) => u.name))
  }
  groups(): Set<string> {
    return new Set(this.groupList.map((g) => g.name))
  }
  locked(name: string): boolean | undefined {
    return this.userList.find((u) => u.name === name)?.password.startsWith('!')
  }
  ipv6State(): Ipv6State[] {
    return [...this.ifaces].flatMap(([iface, list]) => list.filter((a) => a.addr.includes(':')).map((a) => ({ iface, addr: parseIpv6(a.addr), prefixlen: a.prefixlen, tentative: false, dadfailed: false })))
  }
  facts(cfg: FormatConfig): HostFacts {
    return {
      users: this.users(),
      groups: this.groups(),
      interfaces: new Map([...this.ifaces].map(([k, v]) => [k, [...v]])),
      tunOwners: new Map(this.owners),
      uidOf: (n) => this.user(n)?.uid,
      storageDirs: cfg.instanceStorageHome ? [] : [],
      accounts: new Map(this.userList.map((u) => [u.name, { home: u.home, gid: u.gid, shell: u.shell }])),
      groupInfo: new Map(this.groupList.map((g) => [g.name, { gid: g.gid, members: [...g.members] }])),
      locked: new Set(this.userList.filter((u) => u.password.startsWith('!')).map((u) => u.name)),
      routes: this.routes.map((r) => ({ ...r })),
      nonlocalBind: this.nonlocalBind,
      ...(this.optimisticDad ? { optimisticDad: new Set(this.optimisticDad) } : {}),
    }
  }
}

function recordingLogger(lines: string[]): Logger {
  const l: Logger = {
    debug: (m) => void lines.push(m),
    info: () => undefined,
    warning: () => undefined,
    error: (m) => void lines.push(`ERROR ${m}`),
    critical: () => undefined,
    child: () => l,
  }
  return l
}

function section10Config(T: string, extra = ''): FormatConfig {
  const set = new Map(extra.split('\n').filter(Boolean).map((l) => l.split(' = ') as [string, string]))
  const text = `[slapos]
computer_id = COMP-1234
master_url = https://slap.example.net/
software_root = ${T}/opt/slapgrid
instance_root = ${T}/srv/slapgrid

[slapformat]
interface_name = eth0
ipv4_local_network = 10.0.0.0/16
partition_amount = 2
create_tap = true
tap_ipv6 = true
partition_base_name = slappart
user_base_name = slapuser
tap_base_name = slaptap
computer_xml = ${T}/opt/slapos/slapos.xml
`
  const lines = text.split('\n').map((l) => {
    const k = l.split(' = ')[0] ?? ''
    const v = set.get(k)
    set.delete(k)
    return v === undefined ? l : `${k} = ${v}`
  })
  lines.push(...[...set].map(([k, v]) => `${k} = ${v}`))
  return loadFormatConfig(ConfigFile.fromText(lines.join('\n'), join(T, 'slapos.cfg')), { now: true })
}

/** A FakeHost whose runner also has runMany, as the real one: each batch is recorded, then its commands run in turn. */
class BatchingHost extends FakeHost {
  batches: string[][] = []
  async runMany(argvs: string[][]): Promise<ManyResult> {
    this.batches.push(argvs.map((a) => a.join(' ')))
    let last = { code: 0, output: '' }
    let ran = 0
    for (const argv of argvs) {
      const r = await this.run(argv)
      ran++
      last = { code: r.code ?? 1, output: r.stdout + r.stderr }
      if (last.code !== 0) break
    }
    return { ran, ...last }
  }
}

async function runFake(host: FakeHost, cfg: FormatConfig, randoms: number[], over: Partial<FormatDeps> = {}) {
  const fs: string[] = []
  const posted: unknown[] = []
  let k = 0
  const result = await formatNode(cfg, {
    runner: host,
    users: host,
    log: recordingLogger(fs),
    now: () => new Date(2024, 0, 31, 14, 5),
    readHost: (c) => host.facts(c),
    random: () => randoms[k++ % randoms.length] ?? 0,
    post: async (_c, dict) => void posted.push(dict),
    sleep: async () => undefined,
    ipv6Addresses: () => host.ipv6State(),
    ...over,
  })
  return { result, fs, posted }
}

const golden = suite('format.md §10: exact command list, 2 partitions (fake host)')

golden('first run, then re-run (§10.1)', async () => {
  const T = tempDir()
  mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
  const host = new FakeHost()
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  host.ifaces.set('lo', [{ addr: '127.0.0.1', prefixlen: 8 }])
  const cfg = section10Config(T)
  const first = await runFake(host, cfg, [0.25, 0.75])
  const R0 = '10.0.64.0'
  const R1 = '10.0.192.0'
  const probes = ['groupadd', 'useradd', 'usermod', 'passwd -h', 'ip']
  // the original's per-partition commands in phases: addresses and ranges in one batch, the
  // users (useradd leaves the password locked: no `passwd -l`), the TAPs in a second batch
  const network = (i: number, r: string) => [
    `| addr add ${r}/32 dev eth0`,
    `| addr add 2001:db8:1234:5678::${i + 2}/64 dev eth0`,
    `| route add local 2001:db8:1234:5678:400${i + 1}::/80 dev lo`,
  ]
  const user = (i: number) => [`groupadd slapuser${i}`, `useradd -d ${T}/srv/slapgrid/slappart${i} -g slapuser${i} -s /bin/sh -r -G slapsoft slapuser${i}`]
  const tap = (i: number) => [
    `| tuntap add dev slaptap${i} mode tap user slapuser${i}`,
    `| link set slaptap${i} up`,
    `| addr add 2001:db8:1234:5678:800${i + 1}:ffff:ffff:ffff/80 dev slaptap${i} noprefixroute`,
    `| route add 2001:db8:1234:5678:800${i + 1}::1 dev slaptap${i}`,
    `| route add 2001:db8:1234:5678:800${i + 1}::1/80 dev slaptap${i} via 2001:db8:1234:5678:800${i + 1}::1`,
  ]
  assert.equal(host.recorded, [
    ...probes,
    'sysctl net.ipv6.ip_nonlocal_bind=1',
    'ip -batch -',
    ...network(0, R0),
    ...network(1, R1),
    'groupadd slapsoft',
    `useradd -d ${T}/opt/slapgrid -g slapsoft -s /bin/sh -r slapsoft`,
    ...user(0),
    ...user(1),
    'ip -batch -',
    ...tap(0),
    ...tap(1),
  ])
  // what a dry run prints: every line of a batch as its own `ip` command
  assert.ok(first.result.commands.some((c) => c.join(' ') === `ip addr add ${R0}/32 dev eth0`))
  const fsOps = (lines: string[]) => lines.filter((l) => /^(makedirs|mkdir|chmod|chown)\(/.test(l))
  assert.equal(fsOps(first.fs), [
    `makedirs('${T}/srv/slapgrid', 493)`,
    `makedirs('${T}/opt/slapgrid', 493)`,
    `chown('${T}/opt/slapgrid', 1000, 1000)`,
    `mkdir('${T}/srv/slapgrid/slappart0', 488)`,
    `chown('${T}/srv/slapgrid/slappart0', 1001, 1001)`,
    `chmod('${T}/srv/slapgrid/slappart0', 488)`,
    `mkdir('${T}/srv/slapgrid/slappart1', 488)`,
    `chown('${T}/srv/slapgrid/slappart1', 1002, 1002)`,
    `chmod('${T}/srv/slapgrid/slappart1', 488)`,
  ])
  assert.is(first.result.exitCode, 0)
  const c = first.result.computer
  assert.is(c.address, '2001:db8:1234:5678::1')
  assert.is(c.netmask, 'ffff:ffff:ffff:ffff::')
  const p0 = c.partition_list[0]
  assert.equal(p0?.address_list, [
    { addr: R0, netmask: '255.255.255.255' },
    { addr: '2001:db8:1234:5678::2', netmask: 'ffff:ffff:ffff:ffff::' },
  ])
  assert.equal(p0?.ipv6_range, { addr: '2001:db8:1234:5678:4001::', netmask: 'ffff:ffff:ffff:ffff:ffff::', network: '2001:db8:1234:5678:4001::/80', prefixlen: 80 })
  assert.equal(p0?.tap, {
    name: 'slaptap0',
    ipv4_addr: '',
    ipv4_netmask: '',
    ipv4_gateway: '',
    ipv4_network: '',
    ipv6_addr: '2001:db8:1234:5678:8001:ffff:ffff:ffff',
    ipv6_netmask: 'ffff:ffff:ffff:ffff:ffff::',
    ipv6_gateway: '2001:db8:1234:5678:8001::1',
    ipv6_network: '2001:db8:1234:5678:8001::1/80',
  })
  assert.is(first.posted.length, 1)

  // §10.1: the same command, nothing changed on the host
  host.recorded = []
  const second = await runFake(host, cfg, [0.5])
  // the original's re-run commands (usermod, passwd -l, the speed hack's failing `ip addr add`,
  // route shows) would all change nothing: only the binary probes run
  assert.equal(host.recorded, probes)
  assert.equal(fsOps(second.fs), [
    `chown('${T}/opt/slapgrid', 1000, 1000)`,
    `chown('${T}/srv/slapgrid/slappart0', 1001, 1001)`,
    `chmod('${T}/srv/slapgrid/slappart0', 488)`,
    `chown('${T}/srv/slapgrid/slappart1', 1002, 1002)`,
    `chmod('${T}/srv/slapgrid/slappart1', 488)`,
  ])
  assert.equal(second.posted, first.posted)
})

golden('ip -batch: a failing line is named with its partition; ignored failures skip their group only', async () => {
  const T = tempDir()
  mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
  const host = new FakeHost()
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  const cfg = section10Config(T, 'create_tap = false')
  assert.is((await runFake(host, cfg, [0.25, 0.75])).result.exitCode, 0)

  // after a reboot the stored addresses are gone: the speed hack re-adds them; one refused
  // address stops its partition's group (as the original's loop), the batch goes on after it
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  host.refuse = { line: /^addr add 10\.0\.64\.0\/32/, error: 'Error: ipv4: Invalid prefix.' }
  host.recorded = []
  assert.is((await runFake(host, cfg, [0.5])).result.exitCode, 0)
  const batches = host.recorded.filter((l) => l.startsWith('ip ') || l.startsWith('| '))
  assert.equal(batches, [
    'ip -batch -',
    '| addr add 10.0.64.0/32 dev eth0',
    'ip -batch -',
    '| addr add 10.0.192.0/32 dev eth0',
    '| addr add 2001:db8:1234:5678::3/64 dev eth0',
  ])

  // a line whose failure is fatal stops format with one line naming the command and the partition
  const fresh = new FakeHost()
  fresh.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  fresh.refuse = { line: /^route add local 2001:db8:1234:5678:4002::\/80/, error: 'RTNETLINK answers: Permission denied' }
  const T2 = tempDir()
  mkdirSync(join(T2, 'opt', 'slapos'), { recursive: true })
  try {
    await runFake(fresh, section10Config(T2, 'create_tap = false'), [0.25, 0.75])
    assert.unreachable('format should fail')
  } catch (err) {
    assert.instance(err, FormatError)
    assert.is((err as Error).message, "'ip route add local 2001:db8:1234:5678:4002::/80 dev lo' for slappart1 failed: RTNETLINK answers: Permission denied")
  }
  // nothing after the failed line ran: no user was created
  assert.not.ok(fresh.recorded.some((l) => l.startsWith('useradd ')))
})

golden('duplicate address detection: one wait for all new addresses; a duplicate removes its address and fails', async () => {
  const T = tempDir()
  mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
  const host = new FakeHost()
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  const cfg = section10Config(T, 'create_tap = false')
  // the kernel keeps the new addresses tentative for the first three reads
  let reads = 0
  const tentative = (flag: 'tentative' | 'dadfailed', until: number) => () => {
    reads++
    return host.ipv6State().map((a) => (a.addr === parseIpv6('2001:db8:1234:5678::1') ? a : { ...a, [flag]: reads < until, tentative: reads < until }))
  }
  const ok = await runFake(host, cfg, [0.25, 0.75], { ipv6Addresses: tentative('tentative', 3) })
  assert.is(ok.result.exitCode, 0)
  assert.is(reads, 3, 'read once after the batch, then until none is tentative')

  const dup = new FakeHost()
  dup.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  const T2 = tempDir()
  mkdirSync(join(T2, 'opt', 'slapos'), { recursive: true })
  reads = 0
  const failing = () => {
    reads++
    return dup.ipv6State().map((a) => (a.addr === parseIpv6('2001:db8:1234:5678::3') && reads > 1 ? { ...a, dadfailed: true } : { ...a, tentative: a.addr !== parseIpv6('2001:db8:1234:5678::1') }))
  }
  try {
    await runFake(dup, section10Config(T2, 'create_tap = false'), [0.25, 0.75], { ipv6Addresses: failing })
    assert.unreachable('format should fail')
  } catch (err) {
    assert.instance(err, FormatError)
    assert.match((err as Error).message, 'IPv6 2001:db8:1234:5678::3 on eth0 failed duplicate address detection')
  }
  assert.ok(dup.recorded.includes('ip addr del 2001:db8:1234:5678::3/64 dev eth0'))
})

golden('what is read from the host: /proc/net/if_inet6 and `ip -j route`', () => {
  const inet6 = [
    'fe8000000000000000fc00fffe000001 04 40 20 80     eth0',
    '00000000000000000000000000000001 01 80 10 80       lo',
    'fd00005a000000010000000000000002 1a2 40 00 40     eth0',
    'fd00005a000000010000000000000003 04 40 00 08 slaptap12',
    '',
  ].join('\n')
  assert.equal(parseIfInet6(inet6).map((a) => [a.iface, formatIpv6(a.addr), a.prefixlen, a.tentative, a.dadfailed]), [
    ['eth0', 'fe80::fc:ff:fe00:1', 64, false, false],
    ['lo', '::1', 128, false, false],
    ['eth0', 'fd00:5a:0:1::2', 64, true, false],
    ['slaptap12', 'fd00:5a:0:1::3', 64, false, true],
  ])
  const routes = parseIpRoutes([
    { dst: 'default', gateway: '10.0.0.1', dev: 'eth0' },
    { dst: '10.8.0.2', dev: 'slaptap0', scope: 'link' },
    { type: 'local', dst: 'fd00:5a:0:1:4001::/80', dev: 'lo', table: 'local' },
    { dst: 'fd00:5a:0:1:8001::/80', gateway: 'fd00:5a:0:1:8001::1', dev: 'slaptap0' },
    { dst: 'fd00:5a:0:1:8001::1', dev: 'slaptap0' },
    { dst: 'not an address', dev: 'x' },
    // a multipath route: one per next hop, with the hop's device
    { dst: '10.8.0.3', nexthops: [{ gateway: '10.1.0.1', dev: 'eth0', weight: 1 }, { dev: 'slaptap1', weight: 1 }, 'junk'] },
  ])
  assert.equal(routes, [
    { table: 'main', dst: '10.8.0.2/32', dev: 'slaptap0', gateway: null },
    { table: 'local', dst: 'fd00:5a:0:1:4001::/80', dev: 'lo', gateway: null },
    { table: 'main', dst: 'fd00:5a:0:1:8001::/80', dev: 'slaptap0', gateway: 'fd00:5a:0:1:8001::1' },
    { table: 'main', dst: 'fd00:5a:0:1:8001::1/128', dev: 'slaptap0', gateway: null },
    { table: 'main', dst: '10.8.0.3/32', dev: 'eth0', gateway: '10.1.0.1' },
    { table: 'main', dst: '10.8.0.3/32', dev: 'slaptap1', gateway: null },
  ])
  // what format writes (the TAP network keeps its gateway's host bits) names the same route
  assert.is(routeKey('fd00:5a:0:1:8001::1/80'), 'fd00:5a:0:1:8001::/80')
  assert.is(routeKey('172.16.0.1/255.248.0.0'), '172.16.0.0/13')
})

golden('create_tap = false and alter_* = false (checklist 11, 12, 56)', async () => {
  const T = tempDir()
  mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
  const host = new FakeHost()
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  const r = await runFake(host, section10Config(T, 'alter_user = false\nalter_network = false'), [0.1, 0.2])
  // only the binary probe of `ip` (create_tap is still true), no change
  assert.equal(host.recorded, ['ip'])
  assert.equal(
    r.fs.filter((l) => /^(makedirs|mkdir|chmod|chown)\(/.test(l)),
    [`makedirs('${T}/srv/slapgrid', 493)`, `makedirs('${T}/opt/slapgrid', 493)`, `mkdir('${T}/srv/slapgrid/slappart0', 488)`, `chmod('${T}/srv/slapgrid/slappart0', 488)`, `mkdir('${T}/srv/slapgrid/slappart1', 488)`, `chmod('${T}/srv/slapgrid/slappart1', 488)`],
  )
})

golden('users: exact useradd/usermod/groupadd lines (checklist 1-6, 9, 10)', () => {
  const T = tempDir()
  const cfg = section10Config(T, 'alter_network = false\npartition_amount = 1')
  const facts = (users: string[], groups: string[]): HostFacts => ({ users: new Set(users), groups: new Set(groups), interfaces: new Map(), tunOwners: new Map(), uidOf: () => undefined, storageDirs: [] })
  const env = (f: HostFacts) => ({ stored: null, facts: f, random: () => 0.5, osType: '', pythonVersion: '', slaposVersion: '' })
  // `lock` is `passwd -l` unless the password is locked when it is reached (format.ts)
  const runs = (f: HostFacts) => planFormat({ ...cfg, partitionAmount: 1 }, env(f)).steps.flatMap((s) => (s.kind === 'run' ? [s.argv.join(' ')] : s.kind === 'lock' ? [`lock ${s.user}`] : []))
  assert.equal(runs(facts([], [])), [
    'groupadd slapsoft',
    `useradd -d ${T}/opt/slapgrid -g slapsoft -s /bin/sh -r slapsoft`,
    'lock slapsoft',
    'groupadd slapuser0',
    `useradd -d ${T}/srv/slapgrid/slappart0 -g slapuser0 -s /bin/sh -r -G slapsoft slapuser0`,
    'lock slapuser0',
  ])
  // what the user database holds is unknown: the original's usermod and passwd -l
  assert.equal(runs(facts(['slapsoft', 'slapuser0'], ['slapsoft'])), [
    `usermod -d ${T}/opt/slapgrid -g slapsoft -s /bin/sh slapsoft`,
    'lock slapsoft',
    'groupadd slapuser0',
    `usermod -d ${T}/srv/slapgrid/slappart0 -g slapuser0 -s /bin/sh -aG slapsoft slapuser0`,
    'lock slapuser0',
  ])
  // known: only what would change something runs
  const known = (over: Partial<{ shell: string; members: string[]; shadowMembers: string[]; locked: string[] }>): HostFacts => ({
    ...facts(['slapsoft', 'slapuser0'], ['slapsoft', 'slapuser0']),
    accounts: new Map([
      ['slapsoft', { home: `${T}/opt/slapgrid`, gid: 1001, shell: '/bin/sh' }],
      ['slapuser0', { home: `${T}/srv/slapgrid/slappart0`, gid: 1002, shell: over.shell ?? '/bin/sh' }],
    ]),
    groupInfo: new Map([
      ['slapsoft', { gid: 1001, members: over.members ?? ['slapuser0'], shadowMembers: over.shadowMembers ?? ['slapuser0'] }],
      ['slapuser0', { gid: 1002, members: [] }],
    ]),
    locked: new Set(over.locked ?? ['slapsoft', 'slapuser0']),
  })
  assert.equal(runs(known({})), [])
  const usermod0 = `usermod -d ${T}/srv/slapgrid/slappart0 -g slapuser0 -s /bin/sh -aG slapsoft slapuser0`
  assert.equal(runs(known({ shell: '/bin/bash' })), [usermod0])
  assert.equal(runs(known({ members: [] })), [usermod0])
  assert.equal(runs(known({ shadowMembers: ['other'] })), [usermod0])
  assert.equal(runs(known({ locked: ['slapsoft'] })), ['lock slapuser0'])
  const steps = planFormat({ ...cfg, partitionAmount: 1 }, env(facts(['slapsoft'], ['slapsoft', 'slapuser0']))).steps
  const u = steps.find((s) => s.kind === 'run' && s.argv[0] === 'usermod')
  assert.ok(u && u.kind === 'run' && u.check === false, 'usermod failures do not abort')
  const g = steps.find((s) => s.kind === 'run' && s.argv[0] === 'useradd')
  assert.ok(g && g.kind === 'run' && g.check === true)
})

golden('ipv6_prefixshift too small, no IPv6 on the interface (checklist 52, 55)', () => {
  const T = tempDir()
  assert.throws(() => section10Config(T, 'ipv6_prefixshift = 2'), /ipv6_prefixshift 2 is too small for partition_amount 2/)
  const cfg = section10Config(T)
  const f: HostFacts = { users: new Set(), groups: new Set(), interfaces: new Map([['eth0', [{ addr: '10.1.1.1', prefixlen: 24 }]]]), tunOwners: new Map(), uidOf: () => undefined, storageDirs: [] }
  assert.throws(() => planFormat(cfg, { stored: null, facts: f, random: () => 0.5, osType: '', pythonVersion: '', slaposVersion: '' }), /eth0 must have at least one IPv6 address assigned/)
})

golden('optimistic DAD on the interface: its new IPv6 addresses are added `optimistic`, IPv4 and TAP ones are not', async () => {
  const lines = async (optimistic?: Set<string>) => {
    const T = tempDir()
    mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
    const host = new FakeHost()
    host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
    if (optimistic) host.optimisticDad = optimistic
    const r = await runFake(host, section10Config(T), [0.25, 0.75])
    assert.is(r.result.exitCode, 0)
    return host.recorded.filter((l) => l.startsWith('| addr add'))
  }
  const plain = await lines()
  const on = await lines(new Set(['eth0']))
  assert.ok(plain.includes('| addr add 2001:db8:1234:5678::2/64 dev eth0'), plain.join('\n'))
  // the same lines, the partitions' IPv6 addresses on eth0 with one more word
  assert.equal(on, plain.map((l) => (/^\| addr add [0-9a-f:]+\/64 dev eth0$/.test(l) ? `${l} optimistic` : l)))
  assert.ok(on.includes('| addr add 2001:db8:1234:5678::3/64 dev eth0 optimistic'), on.join('\n'))
  assert.ok(on.some((l) => / dev slaptap\d+ noprefixroute$/.test(l)), 'TAP addresses unchanged')
  assert.ok(on.some((l) => /^\| addr add 10\.[0-9.]+\/32 dev eth0$/.test(l)), 'IPv4 addresses unchanged')
  // another interface's setting does not count
  assert.equal(await lines(new Set(['eth1'])), plain)
})

golden('the word `optimistic` only for an ip of iproute2 5.8 or later (older ones refuse the line)', () => {
  const cases: [string, boolean][] = [
    ['ip utility, iproute2-6.1.0, libbpf 1.1.2', true],
    ['ip utility, iproute2-5.10.0', true],
    ['ip utility, iproute2-v5.8.0-12-gabcdef', true],
    ['ip utility, iproute2-5.7.0', false],
    ['ip utility, iproute2-ss200602', false], // 5.7 and older print a snapshot date
    ['ip utility, iproute2-ss190107', false],
    ['ip utility, iproute2-4.20.0', false],
    ['', false],
  ]
  for (const [text, want] of cases) assert.is(ipTakesOptimistic(text), want, text)
})

golden('partition_has_ipv6_range = false, create_tun (checklist 36, 51)', async () => {
  const T = tempDir()
  mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
  const host = new FakeHost()
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  const r = await runFake(host, section10Config(T, 'partition_has_ipv6_range = false\ncreate_tap = false\ncreate_tun = true\nalter_user = false'), [0.25, 0.75])
  assert.not.ok(host.recorded.some((l) => l.startsWith('sysctl') || l.includes('table local')))
  assert.ok(host.recorded.includes('| tuntap add dev slaptun0 mode tun user root'))
  assert.ok(host.recorded.includes('| addr add 172.16.0.1/255.248.0.0 dev slaptun0'))
  assert.ok(host.recorded.includes('| addr add 2001:db8:1234:5678:c002::1/80 dev slaptun1'))
  assert.equal(r.result.computer.partition_list[0]?.ipv6_range, {})
  assert.is(r.result.computer.partition_list[1]?.tun?.ipv4_network, '172.24.0.1/255.248.0.0')
})

golden('a failed run takes back the addresses it drew; stored ones stay (fake host)', async () => {
  const T = tempDir()
  mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
  const host = new FakeHost()
  const base = { addr: '2001:db8:1234:5678::1', prefixlen: 64 }
  host.ifaces.set('eth0', [base])
  const cfg = section10Config(T, 'create_tap = false')
  const eth0 = () => (host.ifaces.get('eth0') ?? []).map((a) => `${a.addr}/${a.prefixlen}`)
  // the user phase fails after the network batch: twice, as node boot retries
  host.failing = { command: /^groupadd slapsoft$/, code: 10, error: 'groupadd: cannot lock /etc/group; try again later.' }
  for (const randoms of [[0.25, 0.75], [0.5, 0.125]]) {
    host.recorded = []
    try {
      await runFake(host, cfg, randoms)
      assert.unreachable('format should fail')
    } catch (err) {
      assert.instance(err, FormatError)
      assert.is((err as Error).message, "'groupadd slapsoft' failed (exit 10): groupadd: cannot lock /etc/group; try again later.")
    }
    assert.equal(eth0(), ['2001:db8:1234:5678::1/64'], 'no address left behind')
    const r = randoms.map((x) => `10.0.${Math.floor(x * 256)}.0`)
    // the last added first, in one `ip -force -batch -` (a line that fails does not stop the others)
    assert.equal(host.recorded.slice(host.recorded.indexOf('ip -force -batch -')), [
      'ip -force -batch -',
      '| addr del 2001:db8:1234:5678::3/64 dev eth0',
      `| addr del ${r[1]}/32 dev eth0`,
      '| addr del 2001:db8:1234:5678::2/64 dev eth0',
      `| addr del ${r[0]}/32 dev eth0`,
    ])
  }
  // the ranges' local routes stay: the next run finds them and adds nothing twice
  host.failing = undefined
  const ok = await runFake(host, cfg, [0.25, 0.75])
  assert.is(ok.result.exitCode, 0)
  assert.is(eth0().length, 5)

  // one more partition fails at its user: its new addresses go, the stored ones (re-added
  // after a reboot by the speed hack, recorded in slapos.xml) stay
  host.ifaces.set('eth0', [base])
  host.failing = { command: /^groupadd slapuser2$/, code: 10, error: 'groupadd: cannot lock /etc/group; try again later.' }
  try {
    await runFake(host, section10Config(T, 'create_tap = false\npartition_amount = 3'), [0.5])
    assert.unreachable('format should fail')
  } catch (err) {
    assert.match((err as Error).message, 'groupadd slapuser2')
  }
  assert.equal(eth0().sort(), ['10.0.192.0/32', '10.0.64.0/32', '2001:db8:1234:5678::1/64', '2001:db8:1234:5678::2/64', '2001:db8:1234:5678::3/64'])
})

golden('speed hack: a stored address found on another interface only is added to its own, and kept', async () => {
  const T = tempDir()
  mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
  const host = new FakeHost()
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  const cfg = section10Config(T, 'create_tap = false')
  assert.is((await runFake(host, cfg, [0.25, 0.75])).result.exitCode, 0)
  // after a reboot, partition 0's IPv4 is on another interface (and nowhere else)
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  host.ifaces.set('eth1', [{ addr: '10.0.64.0', prefixlen: 32 }])
  host.recorded = []
  const again = await runFake(host, cfg, [0.5])
  assert.ok(host.recorded.includes('| addr add 10.0.64.0/32 dev eth0'), host.recorded.join('\n'))
  assert.is(again.result.computer.partition_list[0]?.address_list[0]?.addr, '10.0.64.0', 'the stored IPv4, not a new one')
})

golden('words ip would refuse are caught when planning, naming the partition; an unnamed ip exit names the chunk', async () => {
  const T = tempDir()
  mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
  assert.is(ipLineProblem(['addr', 'add', '172.16.0.1/255.248.0.0', 'dev', 'slaptun0']), undefined)
  assert.is(ipLineProblem(['route', 'add', 'local', 'fd00:5a:0:1:4001::/80', 'dev', 'lo']), undefined)
  assert.is(ipLineProblem(['route', 'add', 'fd00::1/80', 'dev', 'slaptap0', 'via', 'fd00::1']), undefined)
  assert.is(ipLineProblem(['tuntap', 'add', 'dev', 'slaptap0', 'mode', 'tap', 'user', 'slapuser0']), undefined)
  assert.match(ipLineProblem(['addr', 'add', '10.0.0.1/33', 'dev', 'eth0']) ?? '', "'10.0.0.1/33' is not an address")
  assert.match(ipLineProblem(['addr', 'add', '172.16.0.1/255.0.255.0', 'dev', 'eth0']) ?? '', 'is not an address or a network')
  assert.match(ipLineProblem(['addr', 'add', 'fd00::2/NaN', 'dev', 'eth0']) ?? '', "'fd00::2/NaN'")
  assert.match(ipLineProblem(['addr', 'add', '10.0.0.1/32', 'dev', 'slaptap-much-too-long']) ?? '', 'is not an interface name')
  assert.match(ipLineProblem(['route', 'add', 'fd00::/80', 'dev', 'slaptap0', 'via', 'gateway']) ?? '', "'gateway' is not an address")
  assert.match(ipLineProblem(['tuntap', 'add', 'dev', 'slaptap0', 'mode', 'tap', 'user', '-x']) ?? '', 'is not a user name')

  const cfg = section10Config(T, 'create_tap = false\npartition_amount = 1')
  const facts: HostFacts = { users: new Set(), groups: new Set(), interfaces: new Map([['eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }]]]), tunOwners: new Map(), uidOf: () => undefined, storageDirs: [] }
  const stored = (netmask: string) => ({
    partition_list: [
      {
        reference: 'slappart0',
        address_list: [
          { addr: '10.0.1.2', netmask: '255.255.255.255' },
          { addr: '2001:db8:1234:5678::2', netmask },
        ],
        user: { name: 'slapuser0' },
        tap: { name: 'slaptap0' },
      },
    ],
  })
  const plan = (netmask: string, over: Partial<FormatConfig> = {}) => () => planFormat({ ...cfg, ...over }, { stored: stored(netmask), facts, random: () => 0.5, osType: '', pythonVersion: '', slaposVersion: '' })
  plan('ffff:ffff:ffff:ffff::')()
  assert.throws(plan('ffff::/abc'), (e: Error) => e instanceof FormatError && e.message === "slappart0: netmask 'ffff::/abc' is not a netmask" && /slapos\.xml/.test((e as FormatError).hint ?? ''))
  assert.throws(plan('garbage'), /^slappart0: netmask 'garbage' is not a netmask$/)
  // a stored IPv6 range whose network is missing or no prefix: one line, not a TypeError
  for (const network of [undefined, '2001:db8::/abc', 42]) {
    const withRange = () => {
      const st = stored('ffff:ffff:ffff:ffff::')
      Object.assign(st.partition_list[0]!, { ipv6_range: { addr: '2001:db8:1234:5678:4001::', netmask: 'ffff:ffff:ffff:ffff:ffff::', prefixlen: 80, ...(network === undefined ? {} : { network }) } })
      return planFormat(cfg, { stored: st, facts, random: () => 0.5, osType: '', pythonVersion: '', slaposVersion: '' })
    }
    assert.throws(withRange, (e: Error) => e instanceof FormatError && /^stored IPv6 range of slappart0 is not valid: network /.test(e.message))
  }
  const longTap = section10Config(T, 'tap_base_name = slaptap-much-too-long\npartition_amount = 1')
  assert.throws(
    () => planFormat(longTap, { stored: null, facts, random: () => 0.5, osType: '', pythonVersion: '', slaposVersion: '' }),
    /^slappart0: 'slaptap-much-too-long0' is not an interface name .* in 'ip tuntap add dev slaptap-much-too-long0 mode tap user slapuser0'$/,
  )

  // should ip still exit without naming a line, the message names the chunk's ends
  const host = new FakeHost()
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  host.badWord = /^route add local 2001:db8:1234:5678:4001::/
  try {
    await runFake(host, section10Config(T, 'create_tap = false'), [0.25, 0.75])
    assert.unreachable('format should fail')
  } catch (err) {
    assert.instance(err, FormatError)
    assert.is(
      (err as Error).message,
      "'ip -batch -' stopped (exit 255) between 'ip addr add 10.0.64.0/32 dev eth0' for slappart0 and 'ip route add local 2001:db8:1234:5678:4002::/80 dev lo' for slappart1 (6 lines): Error: argument \"local\" is wrong: invalid prefix",
    )
  }
})

golden('realRunner: a command that exits before reading its input (EPIPE) gives its exit status', async () => {
  // more than a pipe buffer (64 KiB): writing it fails once the command is gone
  const r = await realRunner.run(['sh', '-c', 'exit 3'], { input: 'addr add 10.0.0.1/32 dev eth0\n'.repeat(40_000) })
  assert.is(r.code, 3)
  const cat = await realRunner.run(['sh', '-c', 'head -c 10; exit 4'], { input: 'x'.repeat(1 << 20) })
  assert.equal([cat.code, cat.stdout], [4, 'xxxxxxxxxx'])
})

golden('the users\' commands through runMany: the same commands, results and messages as one at a time', async () => {
  const fresh = <H extends FakeHost>(host: H) => {
    host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
    return host
  }
  // each host formats its own directory (its slapos.xml is the next run's); paths read <T>
  const dirs = new Map<FakeHost, string>()
  const outcome = async (host: FakeHost) => {
    let T = dirs.get(host)
    if (!T) {
      T = tempDir()
      mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
      dirs.set(host, T)
    }
    const t = (x: string) => x.replaceAll(T, '<T>')
    try {
      const r = await runFake(host, section10Config(T, 'create_tap = false'), [0.25, 0.75])
      return { exitCode: r.result.exitCode, commands: r.result.commands.map((c) => t(c.join(' '))), recorded: host.recorded.map(t), log: r.fs.map(t) }
    } catch (err) {
      return { error: t((err as Error).message), recorded: host.recorded.map(t) }
    }
  }
  const onlyUsers = (b: BatchingHost) => b.batches.every((batch) => batch.every((c) => /^(groupadd|useradd|usermod) /.test(c)))
  // the log lists a batch's commands under one heading before they run (again for the rest
  // after an ignored failure, which it names): the command lines are compared through
  // `commands` and `recorded`, the rest of the log as it is
  const strip = (o: Awaited<ReturnType<typeof outcome>>) => ({ ...o, log: 'log' in o ? o.log?.filter((l) => !/^(\/bin\/sh - \(| {0,2}(groupadd|useradd|usermod) )/.test(l)) : undefined })

  // a first run: the software user's 2 commands (its directory is given to it next), then the 4 of the 2 partitions
  const one = fresh(new FakeHost())
  const many = fresh(new BatchingHost())
  assert.equal(strip(await outcome(many)), strip(await outcome(one)))
  assert.equal(many.batches.map((b) => b.length), [2, 4])
  assert.ok(onlyUsers(many))

  // a re-run where the homes differ (usermod for each) and the sysctl runs again; the
  // usermod of slapuser0 fails, which the original ignores: the next one still runs
  for (const h of [one, many]) {
    for (const u of h.userList) u.home = `${u.home}-moved`
    h.nonlocalBind = false
    h.failing = { command: /^usermod .* slapuser0$/, code: 6, error: 'usermod: cannot lock /etc/passwd' }
    h.recorded = []
  }
  many.batches = []
  const again = strip(await outcome(many))
  assert.equal(again, strip(await outcome(one)))
  assert.ok(again.recorded.some((c) => /^usermod .* slapuser1$/.test(c)), again.recorded.join('\n'))
  assert.ok(again.recorded.includes('sysctl net.ipv6.ip_nonlocal_bind=1'))
  assert.ok(onlyUsers(many), JSON.stringify(many.batches))
  // the software user's usermod runs alone (its directory comes next), then the partitions' two
  assert.equal(many.batches.map((b) => b.length), [2, 1], 'a second batch after the ignored failure')

  // a checked command failing after the first one: the same message, nothing after it
  const failA = fresh(new FakeHost())
  const failB = fresh(new BatchingHost())
  for (const h of [failA, failB]) h.failing = { command: /^useradd .* slapuser0$/, code: 9, error: 'useradd: user slapuser0 exists' }
  const a = await outcome(failA)
  assert.equal(await outcome(failB), a)
  assert.is(a.error, "'useradd -d <T>/srv/slapgrid/slappart0 -g slapuser0 -s /bin/sh -r -G slapsoft slapuser0' failed (exit 9): useradd: user slapuser0 exists")

  // a command the shell cannot find: as a spawn that failed
  const gone = fresh(new BatchingHost())
  gone.failing = { command: /^groupadd slapuser1$/, code: 127, error: 'sh: 1: groupadd: not found' }
  assert.match((await outcome(gone)).error ?? '', 'cannot run groupadd: sh: 1: groupadd: not found')
})

golden('realRunner.runMany: the words as given, stdin empty, stderr with stdout, stops at the first failure', async () => {
  const T = tempDir()
  const words = ["it's", 'two words', '$HOME', '`id`', 'a\nb', '*', '\\', '"', '-n', '', '%s']
  const all = await realRunner.runMany!([['printf', '[%s]', ...words], ['cat'], ['sh', '-c', 'echo out; echo err >&2']])
  assert.equal(all, { ran: 3, code: 0, output: 'out\nerr\n' })
  const one = await realRunner.runMany!([['printf', '[%s]', ...words]])
  assert.is(one.output, words.map((w) => `[${w}]`).join(''))
  // a line of output that looks like the separator of another run changes nothing
  const stop = await realRunner.runMany!([['echo', '@x@ 5 0'], ['sh', '-c', 'echo why; exit 7'], ['touch', join(T, 'after')]])
  assert.equal(stop, { ran: 2, code: 7, output: 'why\n' })
  assert.not.ok(existsSync(join(T, 'after')), 'nothing after the failing command ran')
  const missing = await realRunner.runMany!([['true'], ['slapos-no-such-command']])
  assert.is(missing.ran, 2)
  assert.is(missing.code, 127)
  assert.match(missing.output, 'not found')
  const refused = await realRunner.runMany!([['echo', 'a\0b']]).then(
    () => 'ran',
    (err: Error) => err.message,
  )
  assert.match(refused, 'cannot pass')
})

golden.run()

const config = suite('FormatConfig (checklist 75, 76, 81, 82, 83)')

config('defaults, precedence of [slapos] over [slapformat], command line over both', () => {
  const T = tempDir()
  const base = section10Config(T)
  assert.is(base.alterNetwork, true)
  assert.is(base.alterUser, true)
  assert.is(base.createTun, false)
  assert.is(base.ipv6Prefixshift, 16)
  assert.is(base.softwareUser, 'slapsoft')
  const text = (extraSlapos: string, extraFormat: string) => `[slapos]\ncomputer_id = C\nmaster_url = http://m/\nsoftware_root = /s\ninstance_root = /i\n${extraSlapos}\n[slapformat]\npartition_amount = 1\ncomputer_xml = /x.xml\ndry_run = true\n${extraFormat}\n`
  const both = loadFormatConfig(ConfigFile.fromText(text('interface_name = from-slapos', 'interface_name = from-slapformat')), {})
  assert.is(both.interfaceName, 'from-slapos')
  assert.is(both.dryRun, false, 'dry_run in the file has no effect')
  const cli = loadFormatConfig(ConfigFile.fromText(text('', 'alter_user = false')), { alter_network: 'False', alter_user: 'True', dry_run: true })
  assert.is(cli.alterNetwork, false)
  assert.is(cli.alterUser, true)
  assert.is(cli.dryRun, true)
  assert.throws(() => loadFormatConfig(ConfigFile.fromText(text('key_file = /nonexistent/key', ''))), /File '\/nonexistent\/key' does not exist or is not readable./)
  assert.throws(() => loadFormatConfig(ConfigFile.fromText(text('', 'partition_amount_x = 1').replace('partition_amount = 1\n', ''))), /partition_amount is not set/)
})

config.run()
