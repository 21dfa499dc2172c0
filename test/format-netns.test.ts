// `slapos node format` for real: the built binary as root in a private network namespace
// (a veth pair, both ends inside) and a mount namespace with a private copy of /etc. Checks
// users, directory owners and modes, addresses and local routes, slapos.json against the
// original's 3-partition output, what the proxy received, idempotence, and that the host's
// users and interfaces are untouched. The end state (user databases byte for byte,
// directories, addresses with their flags, every route, TUN/TAP devices) is compared with
// what the original's commands leave when run one by one in the same kind of namespace.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parseIpv6 } from '../src/format-plan.ts'
import { SlapClient } from '../src/slap-client.ts'
import { FIXTURES, skip, startProxy, tempDir } from './helpers.ts'
import { BASE_IPV6, canUseNamespaces, formatInNamespace, replayInNamespace } from './netns.ts'

function hostSnapshot(): string {
  const files = ['/etc/passwd', '/etc/group', '/etc/shadow'].map((f) => (existsSync(f) ? readFileSync(f, 'utf8') : ''))
  const links = readdirSync('/sys/class/net').sort()
  const addrs = Object.entries(networkInterfaces()).map(([n, l]) => `${n}:${(l ?? []).map((a) => a.cidr).sort().join(',')}`).sort()
  return JSON.stringify({ files, links, addrs })
}

function passwd(dir: string): Map<string, { uid: number; gid: number; home: string; shell: string }> {
  const m = new Map<string, { uid: number; gid: number; home: string; shell: string }>()
  for (const l of readFileSync(join(dir, 'etc', 'passwd'), 'utf8').split('\n').filter(Boolean)) {
    const [name, , uid, gid, , home, shell] = l.split(':')
    m.set(name ?? '', { uid: Number(uid), gid: Number(gid), home: home ?? '', shell: shell ?? '' })
  }
  return m
}

/**
 * What format decides in an `ip -j addr` dump: per interface, whether it is up and its
 * addresses. What the kernel decides on its own is left out: link-local fe80:: addresses,
 * duplicate address detection (`tentative`, `dadfailed`), lifetimes, carrier flags.
 */
function addressesSetByFormat(file: string): unknown {
  const links = JSON.parse(readFileSync(file, 'utf8')) as { ifname: string; flags?: string[]; addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[] }[]
  return links
    .map((l) => ({
      ifname: l.ifname,
      up: (l.flags ?? []).includes('UP'),
      addresses: (l.addr_info ?? [])
        .filter((a) => !(a.family === 'inet6' && /^fe80:/i.test(a.local)))
        .map((a) => `${a.family} ${a.local}/${a.prefixlen} ${a.scope ?? ''}`)
        .sort(),
    }))
    .sort((a, b) => a.ifname.localeCompare(b.ifname))
}

/**
 * The routes of a snapshot that format decides: the kernel's own routes for link-local
 * addresses (`local fe80::...`, added when IPv6 autoconfiguration gets to an interface, at a
 * moment that varies) are left out.
 */
function routesSetByFormat(file: string): string {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => !/^\s*local fe80:/i.test(l))
    .join('\n')
}

interface FormattedPartition {
  reference: string
  user: { name: string }
  address_list: { addr: string; netmask: string }[]
  ipv6_range: { network?: string }
  tap: Record<string, string>
  tun: Record<string, string> | null
}

/**
 * The original's commands for the computer format wrote to slapos.json, one by one and in its
 * order (format.md §4, §10), with `root` in place of format's directory: what format's batches
 * and skipped no-ops must end up equal to.
 */
function originalCommands(json: { partition_list: FormattedPartition[] }, root: string): string[][] {
  const c: string[][] = [
    ['mkdir', '-m', '755', `${root}/inst`],
    ['mkdir', '-m', '755', `${root}/soft`],
    ['groupadd', 'slapsoft'],
    ['useradd', '-d', `${root}/soft`, '-g', 'slapsoft', '-s', '/bin/sh', '-r', 'slapsoft'],
    ['passwd', '-l', 'slapsoft'],
    ['chown', 'slapsoft:slapsoft', `${root}/soft`],
    ['sysctl', 'net.ipv6.ip_nonlocal_bind=1'],
  ]
  for (const p of json.partition_list) {
    const u = p.user.name
    const home = `${root}/inst/${p.reference}`
    c.push(['groupadd', u], ['useradd', '-d', home, '-g', u, '-s', '/bin/sh', '-r', '-G', 'slapsoft', u], ['passwd', '-l', u])
    if (p.tap.ipv6_addr) {
      const t = p.tap
      c.push(['ip', 'tuntap', 'add', 'dev', t.name ?? '', 'mode', 'tap', 'user', u], ['ip', 'link', 'set', t.name ?? '', 'up'])
      c.push(['ip', 'addr', 'add', `${t.ipv6_addr}/${t.ipv6_network?.split('/')[1]}`, 'dev', t.name ?? '', 'noprefixroute'])
      c.push(['ip', '-6', 'route', 'add', t.ipv6_gateway ?? '', 'dev', t.name ?? ''])
      c.push(['ip', '-6', 'route', 'add', t.ipv6_network ?? '', 'dev', t.name ?? '', 'via', t.ipv6_gateway ?? ''])
    }
    if (p.tun) {
      const t = p.tun
      c.push(['ip', 'tuntap', 'add', 'dev', t.name ?? '', 'mode', 'tun', 'user', u], ['ip', 'link', 'set', t.name ?? '', 'up'])
      for (const net of [t.ipv4_network, t.ipv6_network]) if (net) c.push(['ip', 'addr', 'add', net, 'dev', t.name ?? ''])
    }
    for (const a of p.address_list) c.push(['ip', 'addr', 'add', `${a.addr}/${a.addr.includes(':') ? 64 : 32}`, 'dev', 'eth0'])
    if (p.ipv6_range.network) c.push(['ip', '-6', 'route', 'add', 'local', p.ipv6_range.network, 'dev', 'lo'])
    c.push(['mkdir', home], ['chown', `${u}:${u}`, home], ['chmod', '750', home])
  }
  return c
}

/** Every address with its flags and every link with its flags, as `ip -j addr` shows them (link-local left out). */
function addressState(file: string): unknown {
  const links = JSON.parse(readFileSync(file, 'utf8')) as { ifname: string; flags?: string[]; addr_info?: Record<string, unknown>[] }[]
  const drop = new Set(['valid_life_time', 'preferred_life_time'])
  return links
    .map((l) => ({
      ifname: l.ifname,
      flags: [...(l.flags ?? [])].sort(),
      addresses: (l.addr_info ?? [])
        .filter((a) => !(a.family === 'inet6' && /^fe80:/i.test(String(a.local))))
        .map((a) => JSON.stringify(Object.fromEntries(Object.entries(a).filter(([k]) => !drop.has(k)).sort(([x], [y]) => x.localeCompare(y)))))
        .sort(),
    }))
    .sort((a, b) => a.ifname.localeCompare(b.ifname))
}

/** The TUN/TAP devices: kind, owner, flags (`ip -d -j link`). */
function deviceState(file: string): unknown {
  const links = JSON.parse(readFileSync(file, 'utf8')) as { ifname: string; flags?: string[]; mtu?: number; linkinfo?: { info_kind?: string; info_data?: unknown } }[]
  return links
    .filter((l) => l.linkinfo?.info_kind === 'tun')
    .map((l) => ({ ifname: l.ifname, flags: [...(l.flags ?? [])].sort(), mtu: l.mtu, info: l.linkinfo?.info_data }))
    .sort((a, b) => a.ifname.localeCompare(b.ifname))
}

/** Every route of every table (`ip -j route show table all`) but those of link-local addresses, which differ per MAC. */
function routeState(file: string): string[] {
  const routes = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>[]
  return routes
    .filter((r) => !(/^fe80:/i.test(String(r.dst)) && r.dst !== 'fe80::/64'))
    .map((r) => JSON.stringify(Object.fromEntries(Object.entries(r).sort(([x], [y]) => x.localeCompare(y)))))
    .sort()
}

/** The user databases, the directories, the addresses and the routes format left equal what the original's commands leave. */
function assertSameEndState(dir: string, ref: string, run: number): void {
  for (const f of ['passwd', 'group', 'shadow', 'gshadow', 'subuid', 'subgid']) {
    const read = (d: string) => (existsSync(join(d, 'etc', f)) ? readFileSync(join(d, 'etc', f), 'utf8') : '')
    assert.is(read(dir).replaceAll(dir, '<root>'), read(ref).replaceAll(ref, '<root>'), `/etc/${f}`)
  }
  const json = JSON.parse(readFileSync(join(dir, 'slapos.json'), 'utf8')) as { partition_list: FormattedPartition[] }
  for (const d of ['inst', 'soft', ...json.partition_list.map((p) => `inst/${p.reference}`)]) {
    const mine = statSync(join(dir, d))
    const theirs = statSync(join(ref, d))
    assert.equal([mine.mode & 0o7777, mine.uid, mine.gid], [theirs.mode & 0o7777, theirs.uid, theirs.gid], d)
  }
  assert.equal(addressState(join(dir, 'state', `addr.${run}.json`)), addressState(join(ref, 'state', 'addr.ref.json')))
  for (const r of ['routes4', 'routes6']) assert.equal(routeState(join(dir, 'state', `${r}.${run}.json`)), routeState(join(ref, 'state', `${r}.ref.json`)), r)
  assert.is(readFileSync(join(dir, 'state', `nonlocal.${run}.txt`), 'utf8'), readFileSync(join(ref, 'state', 'nonlocal.ref.txt'), 'utf8'))
  assert.equal(deviceState(join(dir, 'state', `links.${run}.json`)), deviceState(join(ref, 'state', 'links.ref.json')))
}

const netns = suite('node format as root in network + mount namespaces (built binary)')

netns('3 partitions: users, directories, addresses, slapos.json, proxy; second run changes nothing', async () => {
  if (!canUseNamespaces()) return skip('needs root and unshare --net --mount')
  const before = hostSnapshot()
  const dir = tempDir()
  const run = await formatInNamespace(dir, { partitions: 3, runs: 2 })
  assert.is(run.code, 0, run.output)
  assert.equal(run.formatCodes, [0, 0], readFileSync(join(dir, 'state', 'format.1.log'), 'utf8'))
  const log1 = readFileSync(join(dir, 'state', 'format.1.log'), 'utf8')
  const log2 = readFileSync(join(dir, 'state', 'format.2.log'), 'utf8')

  // users in the private /etc, with the original's shape
  const users = passwd(dir)
  const soft = users.get('slapsoft')
  assert.ok(soft, 'slapsoft exists')
  assert.is(soft?.home, join(dir, 'soft'))
  const group = readFileSync(join(dir, 'etc', 'group'), 'utf8')
  for (const i of [0, 1, 2]) {
    const u = users.get(`slapuser${i}`)
    assert.ok(u, `slapuser${i} exists`)
    assert.is(u?.home, join(dir, 'inst', `slappart${i}`))
    assert.is(u?.shell, '/bin/sh')
    assert.match(group, new RegExp(`^slapsoft:x:\\d+:.*slapuser${i}`, 'm'))
    const st = statSync(join(dir, 'inst', `slappart${i}`))
    assert.is(st.mode & 0o777, 0o750)
    assert.is(st.uid, u?.uid)
    assert.is(st.gid, u?.gid)
  }
  assert.is(statSync(join(dir, 'soft')).uid, soft?.uid)
  assert.match(readFileSync(join(dir, 'etc', 'shadow'), 'utf8'), /^slapuser0:!/m)

  // slapos.json: the same document as the original's, except random IPv4s, paths and versions
  const json = JSON.parse(readFileSync(join(dir, 'slapos.json'), 'utf8')) as Record<string, unknown> & { partition_list: { address_list: { addr: string; netmask: string }[]; ipv6_range: { network: string } }[] }
  const fixture = JSON.parse(readFileSync(join(FIXTURES, 'slap-wire', 'computer-definitions', 'format-3-partitions', 'slapos.json'), 'utf8')) as typeof json
  const normalise = (j: typeof json, root: string) =>
    JSON.parse(
      JSON.stringify({ ...j, reference: 'computer', os_type: '', python_version: '', slapos_version: '', interface: { ...(j.interface as object), ipv6_interface: 'eth', name: 'eth' } })
        .replaceAll(root, '<root>')
        .replace(/10\.44\.\d+\.\d+/g, '10.44.x.x'),
    ) as unknown
  assert.equal(normalise(json, dir), normalise(fixture, '/srv/slapos-test'))
  assert.is(json.address, BASE_IPV6)

  // every address is on eth0, every range routed locally
  const addr = JSON.parse(readFileSync(join(dir, 'state', 'addr.1.json'), 'utf8')) as { ifname: string; addr_info: { local: string; prefixlen: number; tentative?: boolean }[] }[]
  const eth0 = addr.find((l) => l.ifname === 'eth0')?.addr_info ?? []
  const routes = readFileSync(join(dir, 'state', 'routes.1.txt'), 'utf8')
  for (const p of json.partition_list) {
    const [v4, v6] = p.address_list
    assert.ok(eth0.some((a) => a.local === v4?.addr && a.prefixlen === 32), `${v4?.addr}/32 on eth0`)
    assert.ok(eth0.some((a) => a.local === v6?.addr && a.prefixlen === 64 && !a.tentative), `${v6?.addr}/64 on eth0`)
    assert.match(routes, `local ${p.ipv6_range.network} dev lo`)
  }
  assert.is(readFileSync(join(dir, 'state', 'nonlocal.1.txt'), 'utf8').trim(), '1')

  // the second run: the same kernel state, users and model; nothing added
  assert.equal(addressesSetByFormat(join(dir, 'state', 'addr.2.json')), addressesSetByFormat(join(dir, 'state', 'addr.1.json')))
  assert.is(routesSetByFormat(join(dir, 'state', 'routes.2.txt')), routesSetByFormat(join(dir, 'state', 'routes.1.txt')))
  assert.is(readFileSync(join(dir, 'state', 'users.2.txt'), 'utf8'), readFileSync(join(dir, 'state', 'users.1.txt'), 'utf8'))
  assert.not.match(log2, /useradd|groupadd|route add|addr add \S+:/)
  assert.match(log1, 'useradd -d')
  assert.match(log1, 'Adding 3 new partitions')
  assert.match(log2, 'Updating computer')

  // the same end state as the original's commands run one by one, after either run
  const ref = tempDir()
  const replay = await replayInNamespace(ref, originalCommands(json as unknown as { partition_list: FormattedPartition[] }, ref))
  assert.is(replay.code, 0, replay.output)
  assertSameEndState(dir, ref, 2)
  assert.equal(addressState(join(dir, 'state', 'addr.1.json')), addressState(join(dir, 'state', 'addr.2.json')))

  // what the master received
  const proxy = await startProxy({ dir })
  try {
    const computer = await new SlapClient({ masterUrl: proxy.url }).getFullComputerInformation('computer')
    assert.equal(computer._computer_partition_list.map((p) => p._partition_id).sort(), ['slappart0', 'slappart1', 'slappart2'])
  } finally {
    await proxy.stop()
  }
  // the host saw none of it
  assert.is(hostSnapshot(), before)
})

netns('TAP and TUN per partition: devices, addresses, routes; second run adds nothing', async () => {
  if (!canUseNamespaces()) return skip('needs root and unshare --net --mount')
  const dir = tempDir()
  const run = await formatInNamespace(dir, { partitions: 2, runs: 2, extraFormatCfg: 'create_tap = true\ncreate_tun = true' })
  assert.is(run.code, 0, run.output)
  assert.equal(run.formatCodes, [0, 0], readFileSync(join(dir, 'state', 'format.2.log'), 'utf8'))
  const addr = JSON.parse(readFileSync(join(dir, 'state', 'addr.1.json'), 'utf8')) as { ifname: string; addr_info: { local: string; prefixlen: number }[] }[]
  const on = (ifname: string) => addr.find((l) => l.ifname === ifname)?.addr_info.map((a) => `${a.local}/${a.prefixlen}`) ?? []
  assert.ok(on('slaptap0').includes('fd00:5a:0:1:8001:ffff:ffff:ffff/80'), JSON.stringify(on('slaptap0')))
  assert.ok(on('slaptap1').includes('fd00:5a:0:1:8002:ffff:ffff:ffff/80'))
  assert.ok(on('slaptun0').includes('172.16.0.1/13'))
  assert.ok(on('slaptun1').includes('172.24.0.1/13'))
  assert.ok(on('slaptun1').includes('fd00:5a:0:1:c002::1/80'))
  const json = JSON.parse(readFileSync(join(dir, 'slapos.json'), 'utf8')) as { partition_list: { tap: Record<string, string>; tun: Record<string, string> }[] }
  assert.is(json.partition_list[0]?.tap.ipv6_network, 'fd00:5a:0:1:8001::1/80')
  assert.is(json.partition_list[1]?.tun.ipv4_network, '172.24.0.1/255.248.0.0')
  const log2 = readFileSync(join(dir, 'state', 'format.2.log'), 'utf8')
  assert.not.match(log2, /tuntap|route add|addr add \S+:|addr add 172/)
  assert.equal(addressesSetByFormat(join(dir, 'state', 'addr.2.json')), addressesSetByFormat(join(dir, 'state', 'addr.1.json')))
  assert.is(routesSetByFormat(join(dir, 'state', 'routes.2.txt')), routesSetByFormat(join(dir, 'state', 'routes.1.txt')))
  // devices, their owners, addresses and routes as the original's commands leave them
  const ref = tempDir()
  const replay = await replayInNamespace(ref, originalCommands(json as unknown as { partition_list: FormattedPartition[] }, ref))
  assert.is(replay.code, 0, replay.output)
  assertSameEndState(dir, ref, 2)
})

/** The addresses on eth0 after run `run` but the base IPv6 and link-local ones. */
function partitionAddresses(dir: string, run: number): string[] {
  const addr = JSON.parse(readFileSync(join(dir, 'state', `addr.${run}.json`), 'utf8')) as { ifname: string; addr_info: { local: string; prefixlen: number }[] }[]
  return (addr.find((l) => l.ifname === 'eth0')?.addr_info ?? []).filter((a) => a.local !== BASE_IPV6 && !/^fe80:/i.test(a.local)).map((a) => `${a.local}/${a.prefixlen}`)
}

netns('a run that fails after adding the addresses takes them back: retries do not pile them up', async () => {
  if (!canUseNamespaces()) return skip('needs root and unshare --net --mount')
  const dir = tempDir()
  // a lock file without a pid in the private /etc: groupadd (the first user step) refuses to
  // go on; it is gone after the second run, as when a person removes it
  const run = await formatInNamespace(dir, {
    partitions: 5,
    runs: 3,
    setup: 'echo held > /etc/group.lock',
    afterRun: 'if [ "$n" -eq 2 ]; then rm -f /etc/group.lock; fi',
  })
  assert.is(run.code, 0, run.output)
  const log = (n: number) => readFileSync(join(dir, 'state', `format.${n}.log`), 'utf8')
  assert.equal(run.formatCodes, [1, 1, 0], log(3))
  for (const n of [1, 2]) {
    assert.match(log(n), "'groupadd slapsoft' failed", log(n))
    assert.match(log(n), 'Removing the 10 address(es) this run added')
    assert.equal(partitionAddresses(dir, n), [], `addresses left after failed run ${n}`)
  }
  const after = partitionAddresses(dir, 3)
  assert.is(after.filter((a) => a.startsWith('10.44.')).length, 5, after.join(' '))
  assert.is(after.length, 10)
})

netns('optimistic DAD on eth0: new and re-added addresses go optimistic and end as without; a duplicate still fails; an old ip gets plain lines', async () => {
  if (!canUseNamespaces()) return skip('needs root and unshare --net --mount')
  // the operator's setting, a sampler of the kernel's address flags while format runs, and
  // every background process stopped when the script ends, whatever happens
  const setup = (sysctl: string, more = '') => `trap 'kill $PROXY \${SAMPLER:-} \${OTHER:-} 2>/dev/null; wait $PROXY 2>/dev/null || true' EXIT
sysctl -qw ${sysctl}=1
${more}
( while :; do cat /proc/net/if_inet6; sleep 0.02; done ) > "$D/state/inet6.txt" 2>/dev/null &
SAMPLER=$!`
  // after run 1, the partitions' IPv6 addresses go, as after a reboot: run 2 adds them again
  // (the stored addresses the "speed hack" re-adds)
  const reboot = `if [ "$n" -eq 1 ]; then
  for a in $(ip -6 -o addr show dev eth0 scope global | awk '{print $4}'); do [ "$a" = "${BASE_IPV6}/64" ] || ip addr del "$a" dev eth0; done
fi`
  const dir = tempDir()
  const run = await formatInNamespace(dir, { partitions: 2, runs: 2, setup: setup('net.ipv6.conf.eth0.optimistic_dad'), afterRun: reboot })
  assert.is(run.code, 0, run.output)
  const log = (d: string, n: number) => readFileSync(join(d, 'state', `format.${n}.log`), 'utf8')
  assert.equal(run.formatCodes, [0, 0], log(dir, 1) + log(dir, 2))
  const v6 = partitionAddresses(dir, 1).filter((a) => a.includes(':'))
  assert.is(v6.length, 2, v6.join(' '))
  assert.equal(partitionAddresses(dir, 2), partitionAddresses(dir, 1), 'run 2 put back the same addresses')
  for (const a of v6) {
    for (const n of [1, 2]) assert.ok(log(dir, n).includes(`ip addr add ${a} dev eth0 optimistic`), `run ${n}: ${a} not added optimistic`)
  }
  // /proc/net/if_inet6: address, ifindex, prefix length, scope, flags (0x04 optimistic, 0x40 tentative)
  const samples = readFileSync(join(dir, 'state', 'inet6.txt'), 'utf8').split('\n')
  const optimisticTimes = (a: string) =>
    samples.filter((l) => l.startsWith(parseIpv6(a).toString(16).padStart(32, '0')) && (Number.parseInt(l.split(/\s+/)[4] ?? '0', 16) & 0x44) === 0x44).length
  for (const a of v6) assert.ok(optimisticTimes(a.split('/')[0] ?? '') > 0, `${a} was never seen optimistic and tentative`)
  type Info = { local: string; scope: string; tentative?: boolean; optimistic?: boolean; dadfailed?: boolean }
  for (const n of [1, 2]) {
    const addr = JSON.parse(readFileSync(join(dir, 'state', `addr.${n}.json`), 'utf8')) as { ifname: string; addr_info: Info[] }[]
    const flagged = (addr.find((l) => l.ifname === 'eth0')?.addr_info ?? []).filter((a) => a.scope === 'global' && (a.tentative || a.optimistic || a.dadfailed))
    assert.equal(flagged, [], `run ${n}: the addresses end non-tentative, as without the setting`)
  }

  // the setting for all interfaces; another host, behind the other end of the veth, already
  // uses the address slappart0 gets
  const dup = tempDir()
  const other = `unshare -n sleep 60 & OTHER=$!
i=0
while [ "$(readlink /proc/$OTHER/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do i=$((i+1)); [ $i -lt 250 ] || exit 91; sleep 0.02; done
ip link set eth0p netns $OTHER
nsenter -t $OTHER -n sh -c 'ip link set eth0p up && ip -6 addr add fd00:5a:0:1::2/64 dev eth0p nodad'`
  const failed = await formatInNamespace(dup, { partitions: 2, runs: 1, setup: setup('net.ipv6.conf.all.optimistic_dad', other) })
  assert.is(failed.code, 0, failed.output)
  assert.equal(failed.formatCodes, [1], log(dup, 1))
  assert.match(log(dup, 1), 'ip addr add fd00:5a:0:1::2/64 dev eth0 optimistic')
  assert.match(log(dup, 1), 'IPv6 fd00:5a:0:1::2 on eth0 failed duplicate address detection')
  assert.equal(partitionAddresses(dup, 1), [], 'the run took back the addresses it added')

  // an ip older than iproute2 5.8 refuses the word: the lines are the original's
  const old = tempDir()
  const oldIp = `mkdir -p "$D/bin"
printf '#!/bin/sh\\n[ "$1" = -V ] && { echo "ip utility, iproute2-ss190107"; exit 0; }\\nexec %s "$@"\\n' "$(command -v ip)" > "$D/bin/ip"
chmod 755 "$D/bin/ip"
PATH="$D/bin:$PATH"`
  const plain = await formatInNamespace(old, { partitions: 2, runs: 1, setup: setup('net.ipv6.conf.eth0.optimistic_dad', oldIp) })
  assert.is(plain.code, 0, plain.output)
  assert.equal(plain.formatCodes, [0], log(old, 1))
  assert.match(log(old, 1), /ip addr add fd00:5a:0:1::2\/64 dev eth0\n/)
  assert.not.match(log(old, 1), 'optimistic')
})

netns('a failing line of a batch (tuntap add over an existing veth) is named with its partition', async () => {
  if (!canUseNamespaces()) return skip('needs root and unshare --net --mount')
  const dir = tempDir()
  const run = await formatInNamespace(dir, { partitions: 2, runs: 1, extraFormatCfg: 'create_tun = true', setup: 'ip link add slaptun0 type veth peer name slaptun0p' })
  assert.is(run.code, 0, run.output)
  const log = readFileSync(join(dir, 'state', 'format.1.log'), 'utf8')
  assert.equal(run.formatCodes, [1], log)
  assert.match(log, /'ip tuntap add dev slaptun0 mode tun user slapuser0' for slappart0 failed: \S/)
  // nothing after the failing line ran, and the addresses of the new partitions went
  const links = JSON.parse(readFileSync(join(dir, 'state', 'links.1.json'), 'utf8')) as { ifname: string }[]
  assert.not.ok(links.some((l) => l.ifname === 'slaptun1'))
  assert.equal(partitionAddresses(dir, 1), [])
})

netns.run()
