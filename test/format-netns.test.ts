// `slapos node format` for real: the built binary as root in a private network namespace
// (a veth pair, both ends inside) and a mount namespace with a private copy of /etc. Checks
// users, directory owners and modes, addresses and local routes, slapos.json against the
// original's 3-partition output, what the proxy received, idempotence, and that the host's
// users and interfaces are untouched.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { SlapClient } from '../src/slap-client.ts'
import { FIXTURES, skip, startProxy, tempDir } from './helpers.ts'
import { BASE_IPV6, canUseNamespaces, formatInNamespace } from './netns.ts'

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
})

netns.run()
