// Runs the built `slapos node format` for real inside a fresh network namespace and a
// mount namespace with a private copy of /etc, so useradd and ip change nothing on the host.
// Used by test/format-netns.test.ts and scripts/bench-format.ts (not a test file itself).
// Also makes a lab of several network namespaces on a bridge (makeLab), for test/cluster.test.ts.
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SLAPOS, type Result } from './helpers.ts'

export const BASE_IPV6 = 'fd00:5a:0:1::1'

/** True when this process may create network and mount namespaces (root, unshare present). */
export function canUseNamespaces(): boolean {
  if (process.getuid?.() !== 0) return false
  const r = spawnSync('unshare', ['--net', '--mount', '--fork', 'true'], { encoding: 'utf8' })
  return r.status === 0
}

export interface NetnsRun {
  code: number | null
  /** output of the whole script (format runs, proxy start) */
  output: string
  /** wall time of each format run, milliseconds */
  formatMs: number[]
  /** exit status of each format run */
  formatCodes: number[]
  /** with opts.dadFloor: milliseconds from adding the addresses to none being tentative */
  dadFloorMs?: number
  /** with opts.userFloor: milliseconds of the groupadd + useradd pairs alone */
  userFloorMs?: number
}

/**
 * Writes `<dir>/slapos.cfg` for `partitions` partitions (the 3-partition fixture's layout:
 * interface eth0 = one end of a veth pair, create_tap = false, 10.44.0.0/16), then in the
 * namespaces: starts our proxy on 127.0.0.1 (database `<dir>/proxy.db`), runs format `runs`
 * times, and after each run i dumps `ip -j addr` to `<dir>/state/addr.<i>.json` and the local
 * routes to `<dir>/state/routes.<i>.txt` (and every route, `ip -j`, to `routes4.<i>.json` and
 * `routes6.<i>.json`, links with details to `links.<i>.json`). The private /etc stays in `<dir>/etc`. `slapos` runs another binary (a
 * benchmark's baseline); `dadFloor` first times, on a veth pair of its own, how long the kernel
 * takes to end duplicate address detection of that many IPv6 addresses added in one batch
 * (milliseconds in NetnsRun.dadFloorMs). `optimisticDad` turns on net.ipv6.conf.eth0.optimistic_dad
 * (and dad0's, whose addresses are then added `optimistic`, as format does). `userFloor` first
 * times the `groupadd` + `useradd` pairs format runs for a software user and that many
 * partitions, one after the other, on a private copy of /etc of their own (NetnsRun.userFloorMs). `setup` is shell run in the namespaces before the
 * first format (e.g. a stale lock in the private /etc, a device in the way), `afterRun` after
 * each run's dumps, with the run's number in `$n`.
 */
export function formatInNamespace(
  dir: string,
  opts: { partitions: number; runs: number; extraFormatCfg?: string; verbose?: boolean; slapos?: string; dadFloor?: number; userFloor?: number; optimisticDad?: boolean; setup?: string; afterRun?: string },
): Promise<NetnsRun> {
  mkdirSync(join(dir, 'state'), { recursive: true })
  writeFileSync(
    join(dir, 'proxy.cfg'),
    `[slapos]\ncomputer_id = computer\n\n[slapproxy]\nhost = 127.0.0.1\nport = 0\ndatabase_uri = ${dir}/proxy.db\n`,
  )
  const cfg = (url: string) => `[slapos]
software_root = ${dir}/soft
instance_root = ${dir}/inst
master_url = ${url}
computer_id = computer

[slapformat]
interface_name = eth0
${/^create_tap/m.test(opts.extraFormatCfg ?? '') ? '' : 'create_tap = false'}
partition_amount = ${opts.partitions}
computer_xml = ${dir}/slapos.xml
computer_json = ${dir}/slapos.json
partition_base_name = slappart
user_base_name = slapuser
tap_base_name = slaptap
ipv4_local_network = 10.44.0.0/16
${opts.extraFormatCfg ?? ''}
`
  writeFileSync(join(dir, 'slapos.cfg.in'), cfg('@URL@'))
  const script = `
set -e
D="$1"; SLAPOS="$2"; RUNS="$3"; VERBOSE="$4"; DADFLOOR="\${5:-0}"
mount --make-rprivate /
CPUSET=$(test -e /sys/fs/cgroup/cpuset/cpuset.cpus && echo yes || true)
mount -t sysfs sysfs /sys
# the machine's cgroup v1 cpuset hierarchy again, under the namespace's own /sys (cpuset manager)
if [ -n "$CPUSET" ]; then
  mount -t tmpfs cgroup /sys/fs/cgroup && mkdir /sys/fs/cgroup/cpuset && mount -t cgroup -o cpuset cgroup /sys/fs/cgroup/cpuset
fi
mkdir -p "$D/etc"
cp -a /etc/. "$D/etc/"
USERFLOOR=${opts.userFloor ?? 0}
if [ "$USERFLOOR" -gt 0 ]; then
  # the user commands format runs for that many partitions, alone, on a copy of /etc of their own
  mkdir -p "$D/etc-floor"
  cp -a /etc/. "$D/etc-floor/"
  mount --bind "$D/etc-floor" /etc
  start=$(date +%s%N)
  groupadd floorsoft
  useradd -d "$D/floor/soft" -g floorsoft -s /bin/sh -r floorsoft
  i=0; while [ $i -lt "$USERFLOOR" ]; do groupadd floor$i; useradd -d "$D/floor/p$i" -g floor$i -s /bin/sh -r -G floorsoft floor$i; i=$((i+1)); done
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 )) > "$D/state/users.ms"
  umount /etc
fi
mount --bind "$D/etc" /etc
ip link set lo up
ip link add eth0 type veth peer name eth0p
ip link set eth0 up
ip link set eth0p up
ip -6 addr add ${BASE_IPV6}/64 dev eth0 nodad
${opts.optimisticDad ? 'sysctl -qw net.ipv6.conf.eth0.optimistic_dad=1' : ''}
if [ "$DADFLOOR" -gt 0 ]; then
  ip link add dad0 type veth peer name dad0p
  ${opts.optimisticDad ? 'sysctl -qw net.ipv6.conf.dad0.optimistic_dad=1' : ''}
  ip link set dad0 up
  ip link set dad0p up
  i=0; while [ $i -lt "$DADFLOOR" ]; do printf 'addr add fd00:dad::%x/64 dev dad0${opts.optimisticDad ? ' optimistic' : ''}\\n' $((i + 2)); i=$((i+1)); done > "$D/state/dad.batch"
  start=$(date +%s%N)
  ip -batch "$D/state/dad.batch"
  while [ -n "$(ip -6 addr show dev dad0 scope global tentative)" ]; do sleep 0.01; done
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 )) > "$D/state/dad.ms"
  ip link del dad0
fi
"$SLAPOS" proxy start --cfg "$D/proxy.cfg" --log-time 2> "$D/state/proxy.log" &
PROXY=$!
trap 'kill $PROXY 2>/dev/null; wait $PROXY 2>/dev/null || true' EXIT
i=0
until grep -q 'Listening on' "$D/state/proxy.log"; do
  i=$((i+1)); [ $i -lt 200 ] || { cat "$D/state/proxy.log"; exit 90; }
  sleep 0.05
done
URL=$(sed -n 's/.*Listening on \\(http:[^ ]*\\).*/\\1/p' "$D/state/proxy.log" | head -1)
sed "s|@URL@|$URL|" "$D/slapos.cfg.in" > "$D/slapos.cfg"
${opts.setup ?? ''}
n=1
while [ $n -le "$RUNS" ]; do
  start=$(date +%s%N)
  rc=0
  "$SLAPOS" node format --cfg "$D/slapos.cfg" --now --log-time $VERBOSE > "$D/state/format.$n.log" 2>&1 || rc=$?
  end=$(date +%s%N)
  echo "$rc $(( (end - start) / 1000000 ))" > "$D/state/format.$n.result"
  ip -j addr > "$D/state/addr.$n.json"
  ip -6 route show table local > "$D/state/routes.$n.txt"
  ip -j route show table all > "$D/state/routes4.$n.json"
  ip -j -6 route show table all > "$D/state/routes6.$n.json"
  ip -d -j link > "$D/state/links.$n.json"
  sysctl -n net.ipv6.ip_nonlocal_bind > "$D/state/nonlocal.$n.txt"
  cat /etc/passwd /etc/group > "$D/state/users.$n.txt"
${opts.afterRun ?? ''}
  n=$((n+1))
done
`
  writeFileSync(join(dir, 'netns.sh'), script)
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', ['--net', '--mount', '--fork', 'sh', join(dir, 'netns.sh'), dir, opts.slapos ?? SLAPOS, String(opts.runs), opts.verbose === false ? '' : '-v', String(opts.dadFloor ?? 0)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root' },
    })
    let output = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s))
    child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s))
    child.on('error', reject)
    child.on('close', async (code) => {
      const { readFileSync, existsSync } = await import('node:fs')
      const formatMs: number[] = []
      const formatCodes: number[] = []
      for (let n = 1; n <= opts.runs; n++) {
        const f = join(dir, 'state', `format.${n}.result`)
        if (!existsSync(f)) break
        const [rc, ms] = readFileSync(f, 'utf8').trim().split(' ').map(Number)
        formatCodes.push(rc ?? -1)
        formatMs.push(ms ?? -1)
      }
      const floor = (name: string) => {
        const f = join(dir, 'state', name)
        return existsSync(f) ? Number(readFileSync(f, 'utf8').trim()) : undefined
      }
      const [dadFloorMs, userFloorMs] = [floor('dad.ms'), floor('users.ms')]
      resolve({ code, output, formatMs, formatCodes, ...(dadFloorMs === undefined ? {} : { dadFloorMs }), ...(userFloorMs === undefined ? {} : { userFloorMs }) })
    })
  })
}

/**
 * The reference end state for format: in the same kind of namespaces as formatInNamespace
 * (eth0 with BASE_IPV6, a private copy of /etc in `<dir>/etc`), runs `commands` one after the
 * other as the original slapformat does (each an argv, its words quoted), waits until no
 * global IPv6 address of eth0 is tentative (TAPs and TUNs have no carrier), then dumps what formatInNamespace dumps after a run, named
 * `ref`: `<dir>/state/addr.ref.json`, `routes4.ref.json`, `routes6.ref.json`, `links.ref.json`,
 * `nonlocal.ref.txt`.
 */
export function replayInNamespace(dir: string, commands: string[][]): Promise<{ code: number | null; output: string }> {
  mkdirSync(join(dir, 'state'), { recursive: true })
  const q = (w: string) => `'${w.replaceAll("'", `'\\''`)}'`
  const script = `
set -e
D="$1"
mount --make-rprivate /
mount -t sysfs sysfs /sys
mkdir -p "$D/etc"
cp -a /etc/. "$D/etc/"
mount --bind "$D/etc" /etc
ip link set lo up
ip link add eth0 type veth peer name eth0p
ip link set eth0 up
ip link set eth0p up
ip -6 addr add ${BASE_IPV6}/64 dev eth0 nodad
${commands.map((c) => c.map(q).join(' ')).join('\n')}
while [ -n "$(ip -6 addr show dev eth0 scope global tentative)" ]; do sleep 0.05; done
ip -j addr > "$D/state/addr.ref.json"
ip -j route show table all > "$D/state/routes4.ref.json"
ip -j -6 route show table all > "$D/state/routes6.ref.json"
ip -d -j link > "$D/state/links.ref.json"
sysctl -n net.ipv6.ip_nonlocal_bind > "$D/state/nonlocal.ref.txt"
`
  writeFileSync(join(dir, 'replay.sh'), script)
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', ['--net', '--mount', '--fork', 'sh', join(dir, 'replay.sh'), dir], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root' } })
    let output = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s))
    child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, output }))
  })
}

// --- a lab of several network namespaces joined to the host by a bridge ---

/** One namespace of a lab: where a node lives. */
export interface LabNamespace {
  /** network namespace name (`ip netns exec <name> ...`) */
  name: string
  /** its address on the lab's bridge (interface eth0 inside) */
  address: string
  /**
   * the node's private IPv4 network (ipv4_local_network): local to the namespace (a `local`
   * route on lo, so partition services bind any address of it), routed from the host
   */
  network: string
}

export interface Lab {
  /** the host's address on the bridge: a master listening there is reachable from every namespace */
  hostAddress: string
  namespaces: LabNamespace[]
  /** runs argv in namespace `i` (a plain environment, as the binary's tests use) */
  exec(i: number, argv: string[], opts?: { env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Result>
  /** the pids of the processes living in namespace `i` */
  pids(i: number): number[]
  /**
   * Kills what is left in the namespaces, deletes them, their veth pairs, the bridge and the
   * host routes. Synchronous and idempotent: also run when the process exits.
   */
  remove(): void
}

/**
 * `count` network namespaces, each with a veth pair whose host end is on a new bridge. The lab
 * takes a free 10.<x>.0.0/16 (x in 200..249, not used by any address or route of the host,
 * reserved against other test processes by a lock directory): the bridge is 10.<x>.0.1/24,
 * namespace i is 10.<x>.0.<i + 2> and owns 10.<x>.<10 + i>.0/24 for its partitions.
 */
export function makeLab(count: number): Lab {
  const x = reserveLabNetwork()
  const tag = `${process.pid.toString(36).slice(-4)}${x.octet.toString(36)}`
  const bridge = `slab${tag}b`
  const hostAddress = `10.${x.octet}.0.1`
  const namespaces: LabNamespace[] = Array.from({ length: count }, (_, i) => ({
    name: `slapos-lab-${tag}-${i}`,
    address: `10.${x.octet}.0.${i + 2}`,
    network: `10.${x.octet}.${10 + i}.0/24`,
  }))
  const hostEnd = (i: number) => `slab${tag}h${i}`
  let removed = false
  const pids = (i: number): number[] => {
    const r = spawnSync('ip', ['netns', 'pids', namespaces[i]!.name], { encoding: 'utf8' })
    return r.status === 0 ? r.stdout.split('\n').filter(Boolean).map(Number) : []
  }
  const remove = () => {
    if (removed) return
    removed = true
    for (let i = 0; i < namespaces.length; i++) {
      // what the lab's nodes left running (their supervisord's children, a killed supervisord's
      // orphans): a process may fork while the others are killed, so again until none is left
      for (let round = 0; round < 10; round++) {
        const left = pids(i)
        if (!left.length) break
        for (const pid of left) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            // already gone
          }
        }
        spawnSync('sleep', ['0.05'])
      }
      spawnSync('ip', ['netns', 'del', namespaces[i]!.name])
      spawnSync('ip', ['link', 'del', hostEnd(i)])
      spawnSync('ip', ['route', 'del', namespaces[i]!.network])
    }
    spawnSync('ip', ['link', 'del', bridge])
    x.release()
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('SIGINT', onSignal)
  }
  process.once('exit', remove)
  // the test runner's time limit ends a file with SIGTERM, a person with ^C (SIGINT): the
  // nodes' supervisords left the process group when they daemonized, so they go with the
  // namespaces here, then the signal ends the process as it would have
  const onSignal = (signal: NodeJS.Signals) => {
    remove()
    process.kill(process.pid, signal)
  }
  process.once('SIGTERM', onSignal)
  process.once('SIGINT', onSignal)
  const ip = (...args: string[]) => {
    const r = spawnSync('ip', args, { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`)
  }
  try {
    ip('link', 'add', bridge, 'type', 'bridge', 'forward_delay', '0')
    ip('addr', 'add', `${hostAddress}/24`, 'dev', bridge)
    ip('link', 'set', bridge, 'up')
    namespaces.forEach((ns, i) => {
      ip('netns', 'add', ns.name)
      ip('link', 'add', hostEnd(i), 'type', 'veth', 'peer', 'name', `slab${tag}n${i}`)
      ip('link', 'set', hostEnd(i), 'master', bridge)
      ip('link', 'set', hostEnd(i), 'up')
      ip('link', 'set', `slab${tag}n${i}`, 'netns', ns.name)
      ip('-n', ns.name, 'link', 'set', `slab${tag}n${i}`, 'name', 'eth0')
      ip('-n', ns.name, 'addr', 'add', `${ns.address}/24`, 'dev', 'eth0')
      ip('-n', ns.name, 'link', 'set', 'eth0', 'up')
      ip('-n', ns.name, 'link', 'set', 'lo', 'up')
      ip('-n', ns.name, 'route', 'add', 'local', ns.network, 'dev', 'lo')
      ip('route', 'add', ns.network, 'via', ns.address, 'dev', bridge)
    })
  } catch (e) {
    remove()
    throw e
  }
  return {
    hostAddress,
    namespaces,
    pids,
    remove,
    exec: (i, argv, opts = {}) =>
      new Promise((resolve, reject) => {
        const child = spawn('ip', ['netns', 'exec', namespaces[i]!.name, ...argv], {
          env: opts.env ?? { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root' },
          stdio: ['ignore', 'pipe', 'pipe'],
        })
        let stdout = ''
        let stderr = ''
        const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000)
        child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
        child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
        child.on('error', (e) => {
          clearTimeout(timer)
          reject(e)
        })
        child.on('close', (code) => {
          clearTimeout(timer)
          resolve({ code, stdout, stderr })
        })
      }),
  }
}

/** True when `ip netns` works here (root, iproute2 with netns support, a writable /run/netns). */
export function canMakeLab(): boolean {
  if (process.getuid?.() !== 0) return false
  const name = `slapos-lab-probe-${process.pid}`
  const r = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' })
  if (r.status !== 0) return false
  spawnSync('ip', ['netns', 'del', name])
  return true
}

/**
 * A 10.<x>.0.0/16 the host does not use, held by this process (a lock directory per network):
 * no address's network and no route (a 10.0.0.0/8 of a VPN, a host route) of any table
 * overlaps it. The default route and the lab's own are not in the way.
 */
function reserveLabNetwork(): { octet: number; release(): void } {
  const used = hostIpv4Networks()
  for (let octet = 200; octet < 250; octet++) {
    const first = ((10 << 24) | (octet << 16)) >>> 0
    if (used.some((n) => overlaps(n, { first, last: (first | 0xffff) >>> 0 }))) continue
    const lock = join(tmpdir(), `slapos-test-lab-10.${octet}`)
    try {
      mkdirSync(lock)
    } catch {
      let owner = 0
      try {
        owner = Number(readFileSync(join(lock, 'pid'), 'utf8'))
      } catch {
        continue // being made right now
      }
      if (owner > 0 && processAlive(owner)) continue
      rmSync(lock, { recursive: true, force: true })
      try {
        mkdirSync(lock)
      } catch {
        continue
      }
    }
    writeFileSync(join(lock, 'pid'), String(process.pid))
    return { octet, release: () => rmSync(lock, { recursive: true, force: true }) }
  }
  throw new Error("no 10.x.0.0/16 (x in 200..249) for the lab: the host's addresses and routes (or other labs) cover them all")
}

/** The IPv4 networks of the host's addresses and of its routes of every table (`ip -j`), default routes left out. */
export function hostIpv4Networks(): { first: number; last: number }[] {
  const json = (args: string[]): unknown[] => {
    const r = spawnSync('ip', ['-j', '-4', ...args], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`ip -j -4 ${args.join(' ')}: ${r.stderr.trim()}`)
    return JSON.parse(r.stdout || '[]') as unknown[]
  }
  const out: { first: number; last: number }[] = []
  for (const l of json(['addr']) as { addr_info?: { local?: string; prefixlen?: number }[] }[]) {
    for (const a of l.addr_info ?? []) if (a.local) out.push(ipv4Range(`${a.local}/${a.prefixlen ?? 32}`))
  }
  for (const r of json(['route', 'show', 'table', 'all']) as { dst?: string }[]) {
    if (r.dst && r.dst !== 'default') out.push(ipv4Range(r.dst))
  }
  return out
}

/** `a.b.c.d[/len]` -> its first and last address. */
export function ipv4Range(cidr: string): { first: number; last: number } {
  const [a = '', l] = cidr.split('/')
  const len = l === undefined ? 32 : Number(l)
  const v = a.split('.').reduce((n, x) => (n << 8) | (Number(x) & 255), 0) >>> 0
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0
  const first = (v & mask) >>> 0
  return { first, last: (first | (~mask >>> 0)) >>> 0 }
}

function overlaps(x: { first: number; last: number }, y: { first: number; last: number }): boolean {
  return x.first <= y.last && y.first <= x.last
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}
