// Unit tests of format-plan.ts and format.ts: the IPv6 arithmetic of format.md §9 (worked
// examples), and the exact command list of format.md §10 (2 partitions, first run and
// re-run) recorded through a FAKE runner that simulates ip/useradd. The same code path runs
// for real in a network namespace in test/format-netns.test.ts.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ConfigFile, loadFormatConfig, type FormatConfig } from '../src/config.ts'
import { formatNode, type UserDb } from '../src/format.ts'
import {
  chooseBaseIpv6,
  formatIpv6,
  getIpv6RangeFirstAddr,
  getPartitionIpv6Addr,
  getPartitionIpv6Range,
  getTapIpv6Range,
  getTunIpv6Range,
  lenNetmaskIpv6,
  netmaskFromLenIPv6,
  parseIpv6,
  planFormat,
  tunIpv4,
  type HostAddress,
  type HostFacts,
} from '../src/format-plan.ts'
import type { Logger } from '../src/log.ts'
import type { Runner, RunResult } from '../src/system.ts'
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

/** FAKE (tests only): users, groups, interfaces, routes and TUN owners that the fake `ip`/`useradd` mutate. */
class FakeHost implements Runner, UserDb {
  recorded: string[] = []
  userList: string[] = []
  groupList: string[] = []
  ifaces = new Map<string, HostAddress[]>()
  routes: string[] = []
  owners = new Map<string, number>()

  async run(argv: string[]): Promise<RunResult> {
    const line = argv.join(' ')
    this.recorded.push(line)
    const ok = (stdout = 'UP'): RunResult => ({ code: 0, signal: null, stdout, stderr: '', timedOut: false })
    const fail = (stderr: string): RunResult => ({ code: 2, signal: null, stdout: '', stderr, timedOut: false })
    const [cmd, ...a] = argv
    if (cmd === 'groupadd' && a[0]) this.groupList.push(a[0])
    if (cmd === 'useradd' && a.length) this.userList.push(a[a.length - 1] ?? '')
    if (cmd !== 'ip') return ok()
    const words = a.join(' ')
    let m: RegExpExecArray | null
    if ((m = /^addr add (\S+)\/(\d+) dev (\S+)/.exec(words))) {
      const list = this.ifaces.get(m[3] ?? '') ?? []
      if (list.some((x) => x.addr === m?.[1])) return fail('Error: ipv4: Address already assigned.')
      list.push({ addr: m[1] ?? '', prefixlen: Number(m[2]) })
      this.ifaces.set(m[3] ?? '', list)
      return ok()
    }
    if ((m = /^-6 addr list (\S+)/.exec(words))) return ok((this.ifaces.get(m[1] ?? '') ?? []).map((x) => `    inet6 ${x.addr}/${x.prefixlen} scope global`).join('\n'))
    if ((m = /^tuntap add dev (\S+) mode \S+ user (\S+)/.exec(words))) {
      this.owners.set(m[1] ?? '', this.user(m[2] ?? '')?.uid ?? 0)
      this.ifaces.set(m[1] ?? '', [])
      return ok()
    }
    if ((m = /^-6 route add (.*)$/.exec(words))) {
      this.routes.push((m[1] ?? '').replace(/^local /, 'local '))
      return ok()
    }
    if ((m = /^-6 route show (?:table local )?(\S+)$/.exec(words))) {
      const key = m[1] ?? ''
      return ok(this.routes.filter((r) => r.split(' ').some((w) => w === key)).join('\n'))
    }
    return ok('OK')
  }

  user(name: string): { uid: number; gid: number } | undefined {
    const i = this.userList.indexOf(name)
    return i < 0 ? undefined : { uid: 1000 + i, gid: 1000 + i }
  }
  users(): Set<string> {
    return new Set(this.userList)
  }
  groups(): Set<string> {
    return new Set(this.groupList)
  }
  facts(cfg: FormatConfig): HostFacts {
    return {
      users: this.users(),
      groups: this.groups(),
      interfaces: new Map([...this.ifaces].map(([k, v]) => [k, [...v]])),
      tunOwners: new Map(this.owners),
      uidOf: (n) => this.user(n)?.uid,
      storageDirs: cfg.instanceStorageHome ? [] : [],
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

async function runFake(host: FakeHost, cfg: FormatConfig, randoms: number[]) {
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
  const part = (i: number, r: string) => [
    `groupadd slapuser${i}`,
    `useradd -d ${T}/srv/slapgrid/slappart${i} -g slapuser${i} -s /bin/sh -r -G slapsoft slapuser${i}`,
    `passwd -l slapuser${i}`,
    `ip tuntap add dev slaptap${i} mode tap user slapuser${i}`,
    `ip link set slaptap${i} up`,
    `ip addr add 2001:db8:1234:5678:800${i + 1}:ffff:ffff:ffff/80 dev slaptap${i} noprefixroute`,
    `ip -6 addr list slaptap${i}`,
    `ip -6 route show 2001:db8:1234:5678:800${i + 1}::1`,
    `ip -6 route add 2001:db8:1234:5678:800${i + 1}::1 dev slaptap${i}`,
    `ip -6 route show 2001:db8:1234:5678:800${i + 1}::1/80`,
    `ip -6 route add 2001:db8:1234:5678:800${i + 1}::1/80 dev slaptap${i} via 2001:db8:1234:5678:800${i + 1}::1`,
    `ip addr add ${r}/32 dev eth0`,
    `ip addr add 2001:db8:1234:5678::${i + 2}/64 dev eth0`,
    `ip -6 addr list eth0`,
    `ip -6 route show table local 2001:db8:1234:5678:400${i + 1}::/80`,
    `ip -6 route add local 2001:db8:1234:5678:400${i + 1}::/80 dev lo`,
  ]
  assert.equal(host.recorded, [
    ...probes,
    'groupadd slapsoft',
    `useradd -d ${T}/opt/slapgrid -g slapsoft -s /bin/sh -r slapsoft`,
    'passwd -l slapsoft',
    'sysctl net.ipv6.ip_nonlocal_bind=1',
    ...part(0, R0),
    ...part(1, R1),
  ])
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
  const rerun = (i: number) => [
    `usermod -d ${T}/srv/slapgrid/slappart${i} -g slapuser${i} -s /bin/sh -aG slapsoft slapuser${i}`,
    `passwd -l slapuser${i}`,
    `ip -6 route show 2001:db8:1234:5678:800${i + 1}::1`,
    `ip -6 route show 2001:db8:1234:5678:800${i + 1}::1/80`,
    `ip -6 route show table local 2001:db8:1234:5678:400${i + 1}::/80`,
  ]
  assert.equal(host.recorded, [
    ...probes,
    `usermod -d ${T}/opt/slapgrid -g slapsoft -s /bin/sh slapsoft`,
    'passwd -l slapsoft',
    'sysctl net.ipv6.ip_nonlocal_bind=1',
    `ip addr add ${R0}/32 dev eth0`,
    `ip addr add ${R1}/32 dev eth0`,
    ...rerun(0),
    ...rerun(1),
  ])
  assert.equal(fsOps(second.fs), [
    `chown('${T}/opt/slapgrid', 1000, 1000)`,
    `chown('${T}/srv/slapgrid/slappart0', 1001, 1001)`,
    `chmod('${T}/srv/slapgrid/slappart0', 488)`,
    `chown('${T}/srv/slapgrid/slappart1', 1002, 1002)`,
    `chmod('${T}/srv/slapgrid/slappart1', 488)`,
  ])
  assert.equal(second.posted, first.posted)
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
  const runs = (f: HostFacts) => planFormat({ ...cfg, partitionAmount: 1 }, env(f)).steps.flatMap((s) => (s.kind === 'run' ? [s.argv.join(' ')] : []))
  assert.equal(runs(facts([], [])), [
    'groupadd slapsoft',
    `useradd -d ${T}/opt/slapgrid -g slapsoft -s /bin/sh -r slapsoft`,
    'passwd -l slapsoft',
    'groupadd slapuser0',
    `useradd -d ${T}/srv/slapgrid/slappart0 -g slapuser0 -s /bin/sh -r -G slapsoft slapuser0`,
    'passwd -l slapuser0',
  ])
  assert.equal(runs(facts(['slapsoft', 'slapuser0'], ['slapsoft'])), [
    `usermod -d ${T}/opt/slapgrid -g slapsoft -s /bin/sh slapsoft`,
    'passwd -l slapsoft',
    'groupadd slapuser0',
    `usermod -d ${T}/srv/slapgrid/slappart0 -g slapuser0 -s /bin/sh -aG slapsoft slapuser0`,
    'passwd -l slapuser0',
  ])
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

golden('partition_has_ipv6_range = false, create_tun (checklist 36, 51)', async () => {
  const T = tempDir()
  mkdirSync(join(T, 'opt', 'slapos'), { recursive: true })
  const host = new FakeHost()
  host.ifaces.set('eth0', [{ addr: '2001:db8:1234:5678::1', prefixlen: 64 }])
  const r = await runFake(host, section10Config(T, 'partition_has_ipv6_range = false\ncreate_tap = false\ncreate_tun = true\nalter_user = false'), [0.25, 0.75])
  assert.not.ok(host.recorded.some((l) => l.startsWith('sysctl') || l.includes('table local')))
  assert.ok(host.recorded.includes('ip tuntap add dev slaptun0 mode tun user root'))
  assert.ok(host.recorded.includes('ip addr add 172.16.0.1/255.248.0.0 dev slaptun0'))
  assert.ok(host.recorded.includes('ip addr add 2001:db8:1234:5678:c002::1/80 dev slaptun1'))
  assert.equal(r.result.computer.partition_list[0]?.ipv6_range, {})
  assert.is(r.result.computer.partition_list[1]?.tun?.ipv4_network, '172.24.0.1/255.248.0.0')
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
