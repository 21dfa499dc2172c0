// What `slapos node collect` measures (node-extras.md §3.4), read from /proc, /sys and
// statfs directly: the original uses psutil, whose units, time base and rounding are kept
// here (CPU % of a process over the 5 s of the system measurement, not divided by the
// number of CPUs; create times as seconds since the epoch with the tick's precision).
// Used by collect.ts. Everything read here is written by the kernel, except the account
// database (/etc/passwd), read to know which uids are partition users.
import { readdirSync, readFileSync, statfsSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { parsePasswd } from './passwd.ts'

/** USER_HZ: the unit of the times in /proc/<pid>/stat and /proc/stat (100 on every Linux ABI). */
const CLOCK_TICKS = 100
/** The unit of the resident set size in /proc/<pid>/stat when VmRSS is not there (pages). */
const PAGE_SIZE = 4096

/** One process of a partition user, as the original's process snapshot holds it. */
export interface ProcessSample {
  pid: number
  user: string
  /** seconds since the epoch, tick precision (psutil `create_time()`) */
  createTime: number
  /** user + system ticks, for the CPU % between two samples */
  ticks: number
  /** user + system + children's user and system + I/O wait, seconds (psutil `cpu_times()` summed) */
  cpuTime: number
  threads: number
  /** bytes */
  rss: number
  /** read + written bytes at the storage layer */
  ioRw: number
  /** read + write system calls */
  ioCycles: number
  /** when this sample was read (ms, monotonic) */
  at: number
}

/** The accounts wanted, from the account database (`/etc/passwd` format): name → uid and gid. */
export function readAccounts(names: readonly string[], passwd = '/etc/passwd'): Map<string, { uid: number; gid: number }> {
  const wanted = new Set(names)
  const out = new Map<string, { uid: number; gid: number }>()
  let text = ''
  try {
    text = readFileSync(passwd, 'utf8')
  } catch {
    return out
  }
  for (const { name, uid, gid } of parsePasswd(text)) {
    if (wanted.has(name) && !out.has(name)) out.set(name, { uid, gid })
  }
  return out
}

/** The pid file of `node collect` (one run at a time), which `node doctor` looks at too. */
export function collectPidfile(instanceRoot: string): string {
  return join(instanceRoot, 'var', 'run', 'slapos-node-collect.pid')
}

/** Seconds since the epoch at which the system booted (`btime` of /proc/stat). */
export function bootTime(): number {
  const m = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))
  return m ? Number(m[1]) : 0
}

/**
 * Every process whose real uid is one of `users` (the original matches psutil's `username()`,
 * the name of the real uid). Processes that end while being read are left out.
 */
export function sampleProcesses(users: Map<number, string>, boot: number): ProcessSample[] {
  const out: ProcessSample[] = []
  if (users.size === 0) return out
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const pid = Number(name)
    let status: string
    try {
      status = readFileSync(`/proc/${name}/status`, 'latin1')
    } catch {
      continue
    }
    const m = /^Uid:\s+(\d+)/m.exec(status)
    const user = m ? users.get(Number(m[1])) : undefined
    if (user === undefined) continue
    const s = sampleProcess(pid, user, boot)
    if (!s) continue
    // the resident set in kB from the kernel, whatever the page size
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(status)
    if (rss) s.rss = Number(rss[1]) * 1024
    out.push(s)
  }
  return out
}

/** Reads one process again (its CPU ticks now); undefined once it is gone. */
export function sampleProcess(pid: number, user: string, boot: number): ProcessSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    // the command name (field 2) may hold spaces and parentheses: fields start after the last ')'
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const field = (n: number) => Number(f[n - 3] ?? 0)
    let io = ''
    try {
      io = readFileSync(`/proc/${pid}/io`, 'latin1')
    } catch {
      // not readable (not root, or a kernel without task I/O accounting): counted as 0
    }
    const ioField = (k: string) => Number(new RegExp(`^${k}: (\\d+)$`, 'm').exec(io)?.[1] ?? 0)
    return {
      pid,
      user,
      createTime: boot + field(22) / CLOCK_TICKS,
      ticks: field(14) + field(15),
      cpuTime: (field(14) + field(15) + field(16) + field(17) + field(42)) / CLOCK_TICKS,
      threads: field(20),
      rss: field(24) * PAGE_SIZE,
      ioRw: ioField('read_bytes') + ioField('write_bytes'),
      ioCycles: ioField('syscr') + ioField('syscw'),
      at: performance.now(),
    }
  } catch {
    return undefined
  }
}

/** CPU % of a process between two samples (psutil `cpu_percent()`: 1 decimal, 0.0 if it died). */
export function processCpuPercent(before: ProcessSample, after: ProcessSample | undefined): number {
  if (!after || after.createTime !== before.createTime) return 0
  const seconds = (after.at - before.at) / 1000
  if (seconds <= 0) return 0
  return round(((after.ticks - before.ticks) / CLOCK_TICKS / seconds) * 100, 1)
}

/** The first line of /proc/stat: idle and total ticks of all CPUs. */
export interface CpuTicks {
  idle: number
  total: number
}

export function readCpuTicks(): CpuTicks {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? ''
  const v = line.trim().split(/\s+/).slice(1).map(Number)
  // guest and guest_nice (9th, 10th) are already inside user and nice
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
  return { idle: v[3] ?? 0, total }
}

/** 100 − idle % between two readings (psutil `cpu_times_percent().idle`, 1 decimal). */
export function systemCpuPercent(a: CpuTicks, b: CpuTicks): number {
  const total = b.total - a.total
  if (total <= 0) return 0
  return round(100 - round(((b.idle - a.idle) / total) * 100, 1), 1)
}

export interface SystemSample {
  cpuCount: number
  loadavg: number
  memoryTotal: number
  memoryAvailable: number
  netInBytes: number
  netInErrors: number
  netInDropped: number
  netOutBytes: number
  netOutErrors: number
  netOutDropped: number
}

export function sampleSystem(): SystemSample {
  const load = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0] ?? 0)
  const mem = readFileSync('/proc/meminfo', 'utf8')
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(mem)?.[1] ?? 0) * 1024
  const net = { inBytes: 0, inErrors: 0, inDropped: 0, outBytes: 0, outErrors: 0, outDropped: 0 }
  // every interface, the loopback too (psutil `net_io_counters()` sums them all)
  for (const line of readFileSync('/proc/net/dev', 'utf8').split('\n').slice(2)) {
    const colon = line.indexOf(':')
    if (colon < 0) continue
    const v = line.slice(colon + 1).trim().split(/\s+/).map(Number)
    net.inBytes += v[0] ?? 0
    net.inErrors += v[2] ?? 0
    net.inDropped += v[3] ?? 0
    net.outBytes += v[8] ?? 0
    net.outErrors += v[10] ?? 0
    net.outDropped += v[11] ?? 0
  }
  return {
    cpuCount: cpus().length,
    loadavg: load,
    memoryTotal: kib('MemTotal'),
    memoryAvailable: kib('MemAvailable'),
    netInBytes: net.inBytes,
    netInErrors: net.inErrors,
    netInDropped: net.inDropped,
    netOutBytes: net.outBytes,
    netOutErrors: net.outErrors,
    netOutDropped: net.outDropped,
  }
}

export interface DiskSample {
  device: string
  mountpoint: string
  total: number
  used: number
  free: number
}

/**
 * Mounted block-device filesystems, the first mount of each device (psutil
 * `disk_partitions(all=False)`: file systems that /proc/filesystems does not mark `nodev`).
 */
export function sampleDisks(): DiskSample[] {
  const physical = new Set<string>()
  for (const line of readFileSync('/proc/filesystems', 'utf8').split('\n')) {
    const t = line.trim()
    if (t && !line.startsWith('nodev')) physical.add(t)
  }
  physical.add('zfs')
  const seen = new Set<string>()
  const out: DiskSample[] = []
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [device, mountpoint, fstype] = line.split(' ').map(unescapeMount)
    if (!device || !mountpoint || !fstype || device === 'none' || !physical.has(fstype) || seen.has(device)) continue
    seen.add(device)
    try {
      const s = statfsSync(mountpoint)
      out.push({ device, mountpoint, total: s.blocks * s.bsize, used: (s.blocks - s.bfree) * s.bsize, free: s.bavail * s.bsize })
    } catch {
      // a mount point that went away or that we may not stat: left out
    }
  }
  return out
}

/** Octal escapes of /proc/self/mounts (`\040` for a space). */
function unescapeMount(s: string | undefined): string | undefined {
  return s?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)))
}

export interface Temperature {
  sensorId: string
  temperature: number
  alarm: number
}

/**
 * `sensors -u` output: for each `tempN_input`, the sensor id `<chip> <label>` (the chip is the
 * line before `Adapter:`, the label the last line ending in `:` before the input), the value,
 * and an alarm level: one for reaching `tempN_max`, one more for `tempN_crit` (1000 if absent).
 */
export function parseSensors(text: string): Temperature[] {
  const lines = text.split('\n')
  const out: Temperature[] = []
  let chip = ''
  let label = ''
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? ''
    if (line.startsWith('Adapter:')) chip = (lines[i - 1] ?? '').trim()
    else if (/^\S.*:$/.test(line)) label = line.trim()
    const m = /^\s+temp(\d+)_input:\s+(-?[\d.]+)/.exec(line)
    if (!m) continue
    const n = m[1]
    const value = Number(m[2])
    const limit = (kind: string) => {
      for (const next of lines.slice(i + 1, i + 3)) {
        const l = new RegExp(`^\\s+temp${n}_${kind}:\\s+(-?[\\d.]+)`).exec(next)
        if (l) return Number(l[1])
      }
      return 1000
    }
    out.push({ sensorId: `${chip} ${label}`, temperature: value, alarm: (value >= limit('max') ? 1 : 0) + (value >= limit('crit') ? 1 : 0) })
  }
  return out
}

/** Python's round(x, n): halves to even when the product is exactly a half. */
export function round(x: number, n: number): number {
  const f = 10 ** n
  const y = x * f
  // an exact half goes to the even neighbour, as Python's round() does
  const r = Math.abs(y % 1) === 0.5 ? 2 * Math.round(y / 2) : Math.round(y)
  return r / f
}
