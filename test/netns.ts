// Runs the built `slapos node format` for real inside a fresh network namespace and a
// mount namespace with a private copy of /etc, so useradd and ip change nothing on the host.
// Used by test/format-netns.test.ts and scripts/bench-format.ts (not a test file itself).
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SLAPOS } from './helpers.ts'

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
}

/**
 * Writes `<dir>/slapos.cfg` for `partitions` partitions (the 3-partition fixture's layout:
 * interface eth0 = one end of a veth pair, create_tap = false, 10.44.0.0/16), then in the
 * namespaces: starts our proxy on 127.0.0.1 (database `<dir>/proxy.db`), runs format `runs`
 * times, and after each run i dumps `ip -j addr` to `<dir>/state/addr.<i>.json` and the local
 * routes to `<dir>/state/routes.<i>.txt`. The private /etc stays in `<dir>/etc`.
 */
export function formatInNamespace(dir: string, opts: { partitions: number; runs: number; extraFormatCfg?: string; verbose?: boolean }): Promise<NetnsRun> {
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
D="$1"; SLAPOS="$2"; RUNS="$3"; VERBOSE="$4"
mount --make-rprivate /
CPUSET=$(test -e /sys/fs/cgroup/cpuset/cpuset.cpus && echo yes || true)
mount -t sysfs sysfs /sys
# the machine's cgroup v1 cpuset hierarchy again, under the namespace's own /sys (cpuset manager)
if [ -n "$CPUSET" ]; then
  mount -t tmpfs cgroup /sys/fs/cgroup && mkdir /sys/fs/cgroup/cpuset && mount -t cgroup -o cpuset cgroup /sys/fs/cgroup/cpuset
fi
mkdir -p "$D/etc"
cp -a /etc/. "$D/etc/"
mount --bind "$D/etc" /etc
ip link set lo up
ip link add eth0 type veth peer name eth0p
ip link set eth0 up
ip link set eth0p up
ip -6 addr add ${BASE_IPV6}/64 dev eth0 nodad
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
n=1
while [ $n -le "$RUNS" ]; do
  start=$(date +%s%N)
  rc=0
  "$SLAPOS" node format --cfg "$D/slapos.cfg" --now --log-time $VERBOSE > "$D/state/format.$n.log" 2>&1 || rc=$?
  end=$(date +%s%N)
  echo "$rc $(( (end - start) / 1000000 ))" > "$D/state/format.$n.result"
  ip -j addr > "$D/state/addr.$n.json"
  ip -6 route show table local > "$D/state/routes.$n.txt"
  sysctl -n net.ipv6.ip_nonlocal_bind > "$D/state/nonlocal.$n.txt"
  cat /etc/passwd /etc/group > "$D/state/users.$n.txt"
  n=$((n+1))
done
`
  writeFileSync(join(dir, 'netns.sh'), script)
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', ['--net', '--mount', '--fork', 'sh', join(dir, 'netns.sh'), dir, SLAPOS, String(opts.runs), opts.verbose === false ? '' : '-v'], {
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
      resolve({ code, output, formatMs, formatCodes })
    })
  })
}
