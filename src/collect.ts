// `slapos node collect` (node-extras.md §3): one run samples the partition users' processes
// and the computer, stores them in `<instance_root>/var/data-log/collector.db` (the original's
// schema), rewrites the day's system CSV series, exports and archives past days, writes the
// partitions' monitor files of the previous minute and the daily consumption XML that
// `node report` sends with /useComputer. Used by commands/node-collect.ts; sampling is in
// collect-sample.ts.
//
// Files that other programs read (monitor JSON, CSV, XML) keep the original's formats,
// numbers written as Python writes them (`1.0`, `5e-05`). Every file is written to a temporary
// name and renamed: a reader never sees half a file, including the monitor series that the
// original grows in place.
import { closeSync, constants, copyFileSync, existsSync, fchownSync, fstatSync, lstatSync, opendirSync, openSync, readlinkSync, realpathSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import type { Dir, Stats } from 'node:fs'
import type { DatabaseSync, SQLInputValue } from 'node:sqlite'
import {
  bootTime,
  parseSensors,
  processCpuPercent,
  readCpuTicks,
  readAccounts,
  round,
  sampleDisks,
  sampleProcess,
  sampleProcesses,
  sampleSystem,
  systemCpuPercent,
  type DiskSample,
  type ProcessSample,
  type SystemSample,
  type Temperature,
} from './collect-sample.ts'
import { SlapError } from './errors.ts'
import type { Logger } from './log.ts'
import { runSync, type Runner } from './system.ts'

// --- the database (§3.5) ---

type ColumnType = 'text' | 'real' | 'integer' | 'name'
/** Tables in the original's creation order, each with its columns before `date, time, reported`. */
export const COLLECT_TABLES: ReadonlyArray<{ name: string; columns: ReadonlyArray<[string, ColumnType]> }> = [
  {
    name: 'user',
    columns: [
      ['partition', 'text'],
      ['pid', 'real'],
      ['process', 'text'],
      ['cpu_percent', 'real'],
      ['cpu_time', 'real'],
      ['cpu_num_threads', 'real'],
      ['memory_percent', 'real'],
      ['memory_rss', 'real'],
      ['io_rw_counter', 'real'],
      ['io_cycles_counter', 'real'],
    ],
  },
  { name: 'folder', columns: [['partition', 'text'], ['disk_used', 'real']] },
  {
    name: 'computer',
    columns: [
      ['cpu_num_core', 'real'],
      ['cpu_frequency', 'real'],
      ['cpu_type', 'text'],
      ['memory_size', 'real'],
      ['memory_type', 'text'],
      ['partition_list', 'text'],
    ],
  },
  {
    name: 'system',
    columns: [
      ['loadavg', 'real'],
      ['cpu_percent', 'real'],
      ['memory_used', 'real'],
      ['memory_free', 'real'],
      ['net_in_bytes', 'real'],
      ['net_in_errors', 'real'],
      ['net_in_dropped', 'real'],
      ['net_out_bytes', 'real'],
      ['net_out_errors', 'real'],
      ['net_out_dropped', 'real'],
    ],
  },
  { name: 'disk', columns: [['partition', 'text'], ['used', 'text'], ['free', 'text'], ['mountpoint', 'text']] },
  { name: 'temperature', columns: [['sensor_id', 'name'], ['temperature', 'real'], ['alarm', 'integer']] },
  {
    name: 'heating',
    columns: [
      ['model_id', 'name'],
      ['sensor_id', 'name'],
      ['initial_temperature', 'real'],
      ['final_temperature', 'real'],
      ['delta_time', 'real'],
      ['zero_emission_ratio', 'real'],
    ],
  },
]

const ALL_COLUMNS = (t: (typeof COLLECT_TABLES)[number]): Array<[string, ColumnType]> => [
  ...t.columns,
  ['date', 'text'],
  ['time', 'text'],
  ['reported', 'integer'],
]

export function collectSchemaSql(): string {
  const out: string[] = []
  for (const t of COLLECT_TABLES) {
    const cols = t.columns.map(([n, ty]) => `${n} ${ty}`).join(', ')
    out.push(`CREATE TABLE IF NOT EXISTS ${t.name} (${cols}, date text, time text, reported integer NULL DEFAULT 0);`)
  }
  out.push('CREATE INDEX IF NOT EXISTS user_partition_date_time ON user(partition, date, time);')
  for (const t of COLLECT_TABLES) out.push(`CREATE INDEX IF NOT EXISTS ${t.name}_date_reported_index ON ${t.name}(date, reported);`)
  return out.join('\n')
}

export function openCollectDb(path: string): DatabaseSync {
  const { DatabaseSync } = process.getBuiltinModule('node:sqlite') as typeof import('node:sqlite')
  const db = new DatabaseSync(path, { timeout: 30_000 })
  // a rollback journal, not WAL: a reader without root (node collect --show) cannot make WAL's
  // shared-memory file in root's directory
  db.exec('PRAGMA journal_mode = DELETE; PRAGMA temp_store = MEMORY; PRAGMA cache_size = 100000;')
  db.exec(collectSchemaSql())
  return db
}

function transaction<T>(db: DatabaseSync, fn: () => T): T {
  db.exec('BEGIN IMMEDIATE')
  try {
    const r = fn()
    db.exec('COMMIT')
    return r
  } catch (err) {
    db.exec('ROLLBACK')
    throw err
  }
}

function insert(db: DatabaseSync, table: string, values: Record<string, SQLInputValue>): void {
  const keys = Object.keys(values)
  db.prepare(`INSERT INTO ${table} (${keys.join(', ')}) VALUES (${keys.map(() => '?').join(', ')})`).run(...keys.map((k) => values[k] ?? null))
}

// --- Python's ways of writing numbers ---

/** Python 3 `str()`/`repr()` of a float: shortest round trip, `.0` on integers, exponent outside [1e-4, 1e16). */
export function pyFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan'
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf'
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0'
  const abs = Math.abs(x)
  if (abs >= 1e16 || abs < 1e-4) {
    const [mantissa, exp = '+0'] = x.toExponential().split('e')
    return `${mantissa}e${exp[0]}${exp.slice(1).padStart(2, '0')}`
  }
  const s = String(x)
  return s.includes('.') ? s : `${s}.0`
}

/** An integer in Python output (a count), where plain numbers are floats. */
export class PyInt {
  constructor(readonly value: number) {}
}

/** Python `str()` of a value of these files: floats as pyFloat, PyInt and strings as they are. */
function pyStr(v: number | PyInt | string): string {
  return v instanceof PyInt ? String(v.value) : typeof v === 'number' ? pyFloat(v) : v
}

type PyJson = number | PyInt | string | boolean | null | PyJson[] | { [k: string]: PyJson }

/** Python `json.dumps` with its default separators (`, ` and `: `). */
export function pyJson(v: PyJson): string {
  if (v === null) return 'null'
  if (typeof v === 'boolean') return v ? 'true' : 'false'
  if (typeof v === 'number' || v instanceof PyInt) return pyStr(v)
  if (typeof v === 'string') return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
  if (Array.isArray(v)) return `[${v.map(pyJson).join(', ')}]`
  return `{${Object.entries(v).map(([k, x]) => `${pyJson(k)}: ${pyJson(x)}`).join(', ')}}`
}

/** A CSV field as Python's csv module writes it (quoted only when it must be). */
function csvField(v: string): string {
  return /[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v
}

/** A database value as the original's CSV dump writes it (REAL columns as floats). */
function dbValue(v: unknown, type: ColumnType): string {
  if (v === null || v === undefined) return ''
  if (typeof v === 'number' && type === 'real') return pyFloat(v)
  return String(v)
}

// --- writing files ---

function writeAtomic(path: string, text: string, mode = 0o644): void {
  const tmp = `${path}.${process.pid}.tmp`
  // whatever is in the way (a FIFO or a link planted by a partition user) goes, the new file is ours
  rmSync(tmp, { force: true })
  writeFileSync(tmp, text, { mode, flag: 'wx' })
  renameSync(tmp, path)
}

function ensureDir(path: string, mode = 0o755): void {
  mkdirSync(path, { recursive: true, mode })
}

// --- one run ---

export interface CollectOptions {
  instanceRoot: string
  computerId: string
  /** `<user_base_name><i>` in index order, with the partition home of each */
  users: ReadonlyArray<{ user: string; home: string }>
  /** days of exported rows kept (`collect_cache`) */
  collectCache: number
  reportDiskUsage: boolean
  /** seconds between two `du` of a partition */
  diskSnapshotCycle: number
  /** where `<user>_disk_size.pid` lives */
  diskPidFolder: string
  now: Date
  log: Logger
  runner: Runner
  env: NodeJS.ProcessEnv
  /** how long the system CPU is measured (the original: 5 s) */
  intervalMs?: number
  /** the account database (tests give their own) */
  passwd?: string
}

export interface CollectResult {
  date: string
  time: string
  durationMs: number
  computer: { cpuCount: number; memoryTotal: number; cpuPercent: number; loadavg: number; memoryUsed: number }
  disks: Array<{ device: string; mountpoint: string; used: number; free: number }>
  temperatures: number
  users: Array<{ user: string; processes: number; cpuPercent: number; memoryRss: number; diskUsedKiB?: number }>
  /** days exported to `<day>/dump_*.csv` and archived */
  exported: string[]
  /** consumption reports written (`var/consumption-report/<day>.xml`) */
  reports: string[]
  /** partitions whose monitor files were written */
  monitored: string[]
}

const dayOf = (d: Date) => d.toISOString().slice(0, 10)
const timeOf = (d: Date) => d.toISOString().slice(11, 19)
const addDays = (day: string, n: number) => dayOf(new Date(Date.parse(`${day}T00:00:00Z`) + n * 86_400_000))

export async function collect(o: CollectOptions): Promise<CollectResult> {
  const started = performance.now()
  const { log } = o
  const date = dayOf(o.now)
  const time = timeOf(o.now)
  log.info('Collecting data...')
  const boot = bootTime()
  const accounts = readAccounts(
    o.users.map((u) => u.user),
    o.passwd,
  )
  const uids = new Map([...accounts].map(([name, a]) => [a.uid, name]))
  const processes = sampleProcesses(uids, boot)

  const dataLog = join(o.instanceRoot, 'var', 'data-log')
  const reportDir = join(o.instanceRoot, 'var', 'consumption-report')
  const xmlDir = join(o.instanceRoot, 'var', 'xml_report', o.computerId)
  for (const d of [dataLog, reportDir, xmlDir]) ensureDir(d)
  if ((statSync(dataLog).mode & 0o777) !== 0o755) chmodSync(dataLog, 0o755)

  // the computer's CPU and the processes' CPU % are measured over the interval; what does not
  // need this run's samples (disk usage, past days, the previous minute) is done meanwhile
  const before = readCpuTicks()
  const measured = new Promise((r) => setTimeout(r, o.intervalMs ?? 5000))
  const temperaturesRead = readTemperatures(o)
  temperaturesRead.catch(() => undefined) // awaited below; not an unhandled rejection meanwhile
  const folders = new Map<string, number>()
  let db: DatabaseSync
  try {
    db = openCollectDb(join(dataLog, 'collector.db'))
  } catch (err) {
    throw new SlapError(`cannot open the collect database ${join(dataLog, 'collector.db')}: ${(err as Error).message}`, {
      hint: 'if the file is damaged, move it away: the next run starts a new one',
    })
  }
  try {
    if (o.reportDiskUsage) {
      for (const u of o.users) {
        const kib = await diskUsage(db, u.user, u.home, o, accounts.get(u.user))
        if (kib !== undefined) folders.set(u.user, kib)
      }
    }
    log.info('Writing csv, XML and JSON files...')
    const exported = exportDays(db, dataLog, date, o)
    const reports = writeConsumptionReports(db, o, reportDir, xmlDir, date)
    const monitored = writeMonitorFiles(db, o, boot, accounts)
    await measured
    const cpuPercent = systemCpuPercent(before, readCpuTicks())
    const perProcess = processes.map((p) => ({ p, cpu: processCpuPercent(p, sampleProcess(p.pid, p.user, boot)) }))
    const system = sampleSystem()
    const disks = sampleDisks()
    const temperatures = await temperaturesRead
    log.info('Inserting computer information into database...')
    transaction(db, () => {
      insertComputer(db, system, cpuPercent, disks, temperatures, date, time)
      log.info('Inserting user information into database...')
      // per user in index order: its processes, then its size
      for (const { user } of o.users) {
        for (const { p, cpu } of perProcess) if (p.user === user) insertProcess(db, p, cpu, system.memoryTotal, date, time)
        const kib = folders.get(user)
        if (kib !== undefined) insert(db, 'folder', { partition: user, disk_used: kib, date, time })
      }
    })
    writeSystemCsv(db, dataLog, date)
    retention(db, date, o.collectCache)
    log.info('Finished collecting.')
    return {
      date,
      time,
      durationMs: Math.round(performance.now() - started),
      computer: { cpuCount: system.cpuCount, memoryTotal: system.memoryTotal, cpuPercent, loadavg: system.loadavg, memoryUsed: system.memoryTotal - system.memoryAvailable },
      disks: disks.map((d) => ({ device: d.device, mountpoint: d.mountpoint, used: d.used, free: d.free })),
      temperatures: temperatures.length,
      users: o.users.map(({ user }) => {
        const mine = perProcess.filter((x) => x.p.user === user)
        const kib = folders.get(user)
        return {
          user,
          processes: mine.length,
          cpuPercent: round(mine.reduce((a, x) => a + x.cpu, 0), 1),
          memoryRss: mine.reduce((a, x) => a + x.p.rss, 0),
          ...(kib === undefined ? {} : { diskUsedKiB: kib }),
        }
      }),
      exported,
      reports,
      monitored,
    }
  } finally {
    db.close()
  }
}

/** `sensors -u` when installed; "No sensors found!" is no sensor, another failure an error. */
async function readTemperatures(o: CollectOptions): Promise<Temperature[]> {
  const path = (o.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').map((d) => join(d, 'sensors')).find((p) => existsSync(p))
  if (!path) {
    o.log.debug('sensors is not installed: no temperature sampled')
    return []
  }
  const r = await o.runner.run([path, '-u'], { timeoutMs: 30_000, env: o.env })
  if (r.code === 0) return parseSensors(r.stdout)
  if (/No sensors found/.test(r.stdout + r.stderr)) return []
  throw new SlapError(`sensors -u failed (exit ${r.code ?? r.signal}): ${(r.stderr || r.stdout).trim().split('\n')[0] ?? ''}`, {
    hint: 'run sensors-detect, or uninstall lm-sensors if this machine has no sensor',
  })
}

function insertComputer(db: DatabaseSync, s: SystemSample, cpuPercent: number, disks: DiskSample[], temps: Temperature[], date: string, time: string): void {
  insert(db, 'computer', {
    cpu_num_core: s.cpuCount,
    cpu_frequency: 0,
    cpu_type: '0',
    memory_size: s.memoryTotal,
    memory_type: '0',
    partition_list: disks.map((d) => `${d.device}=${d.total}`).join(';'),
    date,
    time,
  })
  insert(db, 'system', {
    loadavg: s.loadavg,
    cpu_percent: cpuPercent,
    memory_used: s.memoryTotal - s.memoryAvailable,
    memory_free: s.memoryAvailable,
    net_in_bytes: s.netInBytes,
    net_in_errors: s.netInErrors,
    net_in_dropped: s.netInDropped,
    net_out_bytes: s.netOutBytes,
    net_out_errors: s.netOutErrors,
    net_out_dropped: s.netOutDropped,
    date,
    time,
  })
  for (const d of disks) insert(db, 'disk', { partition: d.device, used: String(d.used), free: String(d.free), mountpoint: d.mountpoint, date, time })
  for (const t of temps) insert(db, 'temperature', { sensor_id: t.sensorId, temperature: t.temperature, alarm: t.alarm, date, time })
}

function insertProcess(db: DatabaseSync, p: ProcessSample, cpu: number, memoryTotal: number, date: string, time: string): void {
  insert(db, 'user', {
    partition: p.user,
    pid: p.pid,
    process: `${p.pid}-${pyFloat(p.createTime)}`,
    cpu_percent: cpu,
    cpu_time: p.cpuTime,
    cpu_num_threads: p.threads,
    memory_percent: memoryTotal ? (p.rss / memoryTotal) * 100 : 0,
    memory_rss: p.rss,
    io_rw_counter: p.ioRw,
    io_cycles_counter: p.ioCycles,
    date,
    time,
  })
}

/**
 * The partition's size in KiB (`du -s` of its home plus of each directory linked from
 * `DATA/`), or undefined when not measured this run: the last measure is younger than the
 * cycle, a previous `du` still runs, or the total is 1 MiB or less.
 */
async function diskUsage(db: DatabaseSync, user: string, home: string, o: CollectOptions, account: { uid: number; gid: number } | undefined): Promise<number | undefined> {
  if (!existsSync(home)) return undefined
  const last = db.prepare('SELECT date, time FROM folder WHERE partition = ? ORDER BY date DESC, time DESC LIMIT 1').get(user) as { date: string; time: string } | undefined
  if (last) {
    const age = (o.now.getTime() - Date.parse(`${last.date}T${last.time}Z`)) / 1000
    if (age >= 0 && age < o.diskSnapshotCycle) {
      o.log.info(`Time cycle is not over (${Math.round(o.diskSnapshotCycle - age)} seconds remaining) for ${user}: disk usage not measured`)
      return undefined
    }
  }
  const pidFile = join(o.diskPidFolder, `${user}_disk_size.pid`)
  const running = readLivePid(pidFile)
  if (running !== undefined) {
    o.log.warning(`Process ${running} still in progress. Try later.`)
    return undefined
  }
  // the pid file is written at each measure: a partition under 1 MiB (no row kept) is not
  // measured again before the cycle is over either (the original runs `du` on it every minute)
  try {
    const age = (o.now.getTime() - statSync(pidFile).mtimeMs) / 1000
    if (age >= 0 && age < o.diskSnapshotCycle) {
      o.log.debug(`${user} was measured ${Math.round(age)} s ago: disk usage not measured`)
      return undefined
    }
  } catch {
    // never measured
  }
  ensureDir(o.diskPidFolder)
  // the home, and each link in DATA/ to a directory (its target measured, `du -s <link>/`, as
  // the partition user: a link may point anywhere)
  const targets: Array<{ path: string; asUser: boolean }> = [{ path: home, asUser: false }]
  const data = join(home, 'DATA')
  if (lstatOrUndefined(data)?.isDirectory()) {
    try {
      for (const name of readdirSync(data)) {
        const p = join(data, name)
        if (!lstatOrUndefined(p)?.isSymbolicLink()) continue // a plain directory is inside the home's total
        try {
          if (statSync(p).isDirectory()) targets.push({ path: `${p}/`, asUser: true })
        } catch {
          // a dangling link
        }
      }
    } catch {
      // unreadable
    }
  }
  let total = 0
  for (const t of targets) {
    // a small tree is measured here; a large one by du, as the original does
    const small = t.path === home ? treeKiB(home, 5000) : undefined
    if (small !== undefined) {
      writeAtomic(pidFile, '') // no process to wait for; its time says when the partition was measured
      total += small
      continue
    }
    if (t.asUser && !account) continue
    const r = await o.runner.run(['du', '-s', t.path], {
      env: o.env,
      timeoutMs: 3_600_000,
      ...(t.asUser && account ? { uid: account.uid, gid: account.gid, groups: [account.gid] } : {}),
      onSpawn: (pid) => writeAtomic(pidFile, String(pid)),
    })
    writeAtomic(pidFile, '') // du is over: its pid may be another process's tomorrow
    const kib = Number(/^(\d+)/.exec(r.stdout)?.[1])
    if (Number.isFinite(kib)) total += kib
    else o.log.warning(`du -s ${t.path} failed: ${r.stderr.trim().split('\n')[0] ?? ''}`)
  }
  return total > 1024 ? total : undefined
}

/**
 * `du -s` of a tree with at most `limit` entries, in KiB: allocated blocks, links not followed,
 * a file with several hard links counted once; undefined when the tree is larger.
 */
export function treeKiB(root: string, limit: number): number | undefined {
  const seen = new Set<string>()
  let blocks = 0
  let entries = 0
  const stack = [root]
  while (stack.length) {
    const path = stack.pop() as string
    let st: Stats
    try {
      st = lstatSync(path)
    } catch {
      continue // gone meanwhile
    }
    if (++entries > limit) return undefined
    if (st.nlink > 1 && !st.isDirectory()) {
      const key = `${st.dev}:${st.ino}`
      if (seen.has(key)) continue
      seen.add(key)
    }
    blocks += st.blocks
    if (st.isDirectory()) {
      let dir: Dir | undefined
      try {
        dir = opendirSync(path)
        // read entry by entry: a directory of millions stops at the limit, not in memory
        for (let e = dir.readSync(); e; e = dir.readSync()) {
          stack.push(join(path, e.name))
          if (entries + stack.length > limit) return undefined
        }
      } catch {
        // unreadable: its own size only, as du (which also complains)
      } finally {
        dir?.closeSync()
      }
    }
  }
  return Math.ceil((blocks * 512) / 1024)
}

function readLivePid(file: string): number | undefined {
  let pid: number
  try {
    pid = Number(readFileSync(file, 'utf8').trim())
  } catch {
    return undefined
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined
  try {
    process.kill(pid, 0)
    return pid
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined
  }
}

// --- var/data-log (§3.6) ---

/** Today's system series, rewritten every run; the first row of the day is only a base. */
function writeSystemCsv(db: DatabaseSync, dataLog: string, today: string): void {
  const rows = db.prepare('SELECT * FROM system WHERE date = ? ORDER BY time').all(today) as Array<Record<string, number | string>>
  const series = (name: string, value: (r: Record<string, number | string>, prev: Record<string, number | string>) => number) => {
    const lines = ['time,entry']
    for (let i = 1; i < rows.length; i++) {
      const r = rows[i] as Record<string, number | string>
      lines.push(`${r.date} ${r.time},${pyFloat(value(r, rows[i - 1] as Record<string, number | string>))}`)
    }
    writeAtomic(join(dataLog, `system_${name}.csv`), lines.map((l) => `${l}\r\n`).join(''))
  }
  const n = (r: Record<string, number | string>, k: string) => Number(r[k] ?? 0)
  series('loadavg', (r) => n(r, 'loadavg'))
  series('cpu_percent', (r) => n(r, 'cpu_percent'))
  series('memory_used', (r) => n(r, 'memory_used') / 1024)
  series('memory_free', (r) => n(r, 'memory_free') / 1024)
  series('net_in_bytes', (r, p) => (n(r, 'net_in_bytes') - n(p, 'net_in_bytes')) / 1024)
  series('net_out_bytes', (r, p) => (n(r, 'net_out_bytes') - n(p, 'net_out_bytes')) / 1024)
  for (const k of ['net_in_errors', 'net_in_dropped', 'net_out_errors', 'net_out_dropped']) series(k, (r) => n(r, k))
  const disks = db.prepare('SELECT partition, used, free, date, time FROM disk WHERE date = ? ORDER BY time').all(today) as Array<Record<string, string>>
  for (const device of [...new Set(disks.map((d) => d.partition ?? ''))]) {
    const id = device.replace(/[-/]/g, '_')
    for (const k of ['used', 'free'] as const) {
      const lines = ['time,entry', ...disks.filter((d) => d.partition === device).map((d) => `${d.date} ${d.time},${pyFloat(Number(d[k]) / 1024)}`)]
      writeAtomic(join(dataLog, `system_disk_memory_${k}_${id}.csv`), lines.map((l) => `${l}\r\n`).join(''))
    }
  }
}

/** Past days with unexported system rows: `<day>/dump_<table>.csv`, rows marked, `<day>.tar.gz`. */
function exportDays(db: DatabaseSync, dataLog: string, today: string, o: CollectOptions): string[] {
  const days = (db.prepare('SELECT DISTINCT date FROM system WHERE reported = 0 AND date != ? ORDER BY date').all(today) as Array<{ date: string }>).map((r) => r.date)
  const exported: string[] = []
  for (const day of days) {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) continue
    const dir = join(dataLog, day)
    ensureDir(dir)
    for (const t of COLLECT_TABLES) {
      const cols = ALL_COLUMNS(t)
      const rows = db.prepare(`SELECT ${cols.map(([c]) => c).join(', ')} FROM ${t.name} WHERE date = ?`).all(day) as Array<Record<string, unknown>>
      const text = rows.map((r) => cols.map(([c, ty]) => csvField(dbValue(r[c], ty))).join(',') + '\r\n').join('')
      writeAtomic(join(dir, `dump_${t.name}.csv`), text)
    }
    transaction(db, () => {
      for (const t of COLLECT_TABLES) db.prepare(`UPDATE ${t.name} SET reported = 1 WHERE date = ?`).run(day)
    })
    exported.push(day)
  }
  // every dated directory (also one left by an interrupted run) becomes an archive
  for (const name of readdirSync(dataLog)) {
    if (!/^[^.]*-.*-/.test(name) || !lstatOrUndefined(join(dataLog, name))?.isDirectory()) continue
    archiveDay(dataLog, name, o)
  }
  return exported
}

/** `<name>.tar.gz` with members `<name>/…` (replacing an older archive), then the directory goes. */
function archiveDay(dataLog: string, name: string, o: CollectOptions): void {
  const tmp = join(dataLog, `.${name}.tar.gz.${process.pid}.tmp`)
  const r = runSyncTar(['tar', '-C', dataLog, '-czf', tmp, name])
  if (r !== undefined) {
    rmSync(tmp, { force: true })
    o.log.warning(`Cannot archive ${join(dataLog, name)}: ${r}`)
    return
  }
  renameSync(tmp, join(dataLog, `${name}.tar.gz`))
  rmSync(join(dataLog, name), { recursive: true, force: true })
}

function runSyncTar(argv: string[]): string | undefined {
  const r = runSync(argv)
  return r.code === 0 ? undefined : (r.stderr.trim().split('\n')[0] ?? `exit ${r.code}`)
}

// --- consumption reports (§3.8) ---

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

/** The report of one day, as the original writes it (one line, Python numbers). */
export function consumptionXml(db: DatabaseSync, computerId: string, users: readonly string[], day: string): string {
  const movement = (resource: string, title: string, reference: string, quantity: string) =>
    `<movement><resource>${resource}</resource><title>${escapeXml(title)}</title><reference>${escapeXml(reference)}</reference>` +
    `<quantity>${quantity}</quantity><price>0.0</price><VAT></VAT><category></category></movement>`
  const out = [
    "<?xml version='1.0' encoding='utf-8'?>",
    '<journal><transaction type="Sale Packing List">',
    `<title>Eco Information for ${escapeXml(computerId)} </title>`,
    `<start_date>${day} 00:00:00</start_date><stop_date>${day} 23:59:59</stop_date>`,
    `<reference>${day}-global</reference><currency></currency><payment_mode></payment_mode><category></category>`,
    '<arrow type="Destination"/>',
  ]
  const sys = db.prepare('SELECT COUNT(*) AS n, AVG(cpu_percent) AS cpu, AVG(memory_used) AS mem FROM system WHERE date = ?').get(day) as { n: number; cpu: number; mem: number }
  if (sys.n > 0) {
    out.push(movement('service_module/cpu_load_percent', 'CPU Load Percent Average', computerId, pyFloat(sys.cpu)))
    out.push(movement('service_module/memory_used', 'Used Memory', computerId, pyFloat(sys.mem)))
  }
  const heat = db.prepare('SELECT zero_emission_ratio AS r FROM heating WHERE date = ? ORDER BY time DESC LIMIT 1').get(day) as { r: number } | undefined
  out.push(movement('service_module/zero_emission_ratio', 'Zero Emission Ratio', computerId, heat ? pyFloat(heat.r) : '-1'))
  const perUser = db.prepare('SELECT SUM(cpu_percent) AS cpu, SUM(memory_rss) AS mem, COUNT(DISTINCT time) AS n FROM user WHERE partition = ? AND date = ?')
  const perFolder = db.prepare('SELECT SUM(disk_used) AS disk, COUNT(DISTINCT time) AS n FROM folder WHERE partition = ? AND date = ?')
  const usage = users.map((u) => ({ u, p: perUser.get(u, day) as { cpu: number; mem: number; n: number }, f: perFolder.get(u, day) as { disk: number; n: number } }))
  for (const { u, p } of usage) if (p.n > 0) out.push(movement('service_module/cpu_load_percent', `CPU Load Percent Average for ${u}`, u, pyFloat(p.cpu / p.n)))
  for (const { u, p } of usage) if (p.n > 0) out.push(movement('service_module/memory_used', `Memory Used Average for ${u}`, u, pyFloat(p.mem / p.n / 2 ** 20)))
  for (const { u, f } of usage) if (f.n > 0) out.push(movement('service_module/disk_used', `Partition Disk Used Average for ${u}`, u, pyFloat(f.disk / f.n / 1024)))
  out.push('</transaction></journal>')
  return out.join('')
}

/** Yesterday's and the day before's reports, once each, copied where `node report` sends them from. */
function writeConsumptionReports(db: DatabaseSync, o: CollectOptions, reportDir: string, xmlDir: string, today: string): string[] {
  const written: string[] = []
  for (const day of [addDays(today, -1), addDays(today, -2)]) {
    const file = join(reportDir, `${day}.xml`)
    if (existsSync(file) || existsSync(`${file}.uploaded`)) continue
    const xml = consumptionXml(
      db,
      o.computerId,
      o.users.map((u) => u.user),
      day,
    )
    writeAtomic(file, xml)
    const copy = join(xmlDir, `${day}.xml`)
    copyFileSync(file, `${copy}.${process.pid}.tmp`)
    renameSync(`${copy}.${process.pid}.tmp`, copy)
    written.push(day)
  }
  return written
}

// --- partition monitor files (§3.7) ---

const SERIES = [
  { file: 'monitor_resource_process.data.json', header: 'date, total process, CPU percent, CPU time, CPU threads', keys: ['total_process', 'cpu_percent', 'cpu_time', 'cpu_num_threads'], when: 'total_process' },
  { file: 'monitor_resource_memory.data.json', header: 'date, memory used percent, memory used', keys: ['memory_percent', 'memory_rss'], when: 'memory_rss' },
  { file: 'monitor_resource_io.data.json', header: 'date, io rw counter, io cycles counter, disk used', keys: ['io_rw_counter', 'io_cycles_counter', 'disk_used'], when: 'io_rw_counter' },
] as const

/** The previous minute (UTC), for the samples of the previous cron run. */
export function previousMinute(now: Date): { day: string; from: string; to: string; label: string } {
  const d = new Date(now.getTime() - 60_000)
  const hm = timeOf(d).slice(0, 5)
  return { day: dayOf(d), from: `${hm}:00`, to: `${hm}:59`, label: `${dayOf(d)} ${hm}:00` }
}

function writeMonitorFiles(db: DatabaseSync, o: CollectOptions, boot: number, accounts: Map<string, { uid: number; gid: number }>): string[] {
  const w = previousMinute(o.now)
  const done: string[] = []
  const totals = db.prepare(
    'SELECT COUNT(*) AS n, SUM(cpu_percent) AS cpu_percent, SUM(cpu_time) AS cpu_time, SUM(cpu_num_threads) AS cpu_num_threads, SUM(memory_percent) AS memory_percent, ' +
      'SUM(memory_rss) AS memory_rss, SUM(io_rw_counter) AS io_rw_counter, SUM(io_cycles_counter) AS io_cycles_counter FROM user WHERE partition = ? AND date = ? AND time BETWEEN ? AND ?',
  )
  const disk = db.prepare('SELECT SUM(disk_used) AS d FROM folder WHERE partition = ? AND date = ? AND time BETWEEN ? AND ?')
  const perPid = db.prepare(
    'SELECT pid, process, COUNT(*) AS n, SUM(cpu_percent) AS cpu_percent, SUM(cpu_time) AS cpu_time, MAX(cpu_num_threads) AS cpu_num_threads, SUM(memory_percent) AS memory_percent, ' +
      'SUM(memory_rss) AS memory_rss, SUM(io_rw_counter) AS io_rw_counter, SUM(io_cycles_counter) AS io_cycles_counter FROM user WHERE partition = ? AND date = ? AND time BETWEEN ? AND ? ' +
      'GROUP BY pid ORDER BY SUM(cpu_percent) DESC, pid',
  )
  for (const { user, home } of o.users) {
    // the partition's files belong to its user, who may have made any of them a link: they are
    // written with the user's identity, so a link leads nowhere the user could not write
    const account = accounts.get(user)
    const slapgrid = lstatOrUndefined(join(home, '.slapgrid'))
    if (!slapgrid?.isDirectory()) continue
    if (!account) {
      o.log.debug(`${user} is not in the account database: no monitor files for ${home}`)
      continue
    }
    const dir = join(home, '.slapgrid', 'monitor')
    // directories made by root (the original writes as root) are handed to the user first
    if (slapgrid.uid !== account.uid) giveDirectory(join(home, '.slapgrid'), account)
    if (lstatOrUndefined(dir)?.isDirectory()) giveDirectory(dir, account)
    const writes: Array<() => void> = []
    const t = totals.get(user, w.day, w.from, w.to) as Record<string, number>
    const d = disk.get(user, w.day, w.from, w.to) as { d: number | null }
    const n = t.n ?? 0
    const values: Record<string, number | PyInt | string> = {
      date: w.label,
      total_process: new PyInt(n),
      cpu_percent: round(t.cpu_percent ?? 0, 2),
      cpu_time: round((t.cpu_time ?? 0) / 60, 2),
      cpu_num_threads: round(t.cpu_num_threads ?? 0, 2),
      memory_percent: round(t.memory_percent ?? 0, 2),
      memory_rss: round((t.memory_rss ?? 0) / 2 ** 20, 2),
      io_rw_counter: round(t.io_rw_counter ?? 0, 2),
      io_cycles_counter: round(t.io_cycles_counter ?? 0, 2),
      disk_used: d.d === null ? new PyInt(0) : round(d.d / 1024, 2),
    }
    const status: Record<string, PyJson> = {}
    for (const s of SERIES) {
      const v = values[s.when]
      if (v === undefined || (v instanceof PyInt ? v.value : Number(v)) === 0) continue
      const entry = [w.label, ...s.keys.map((k) => pyStr(values[k] ?? 0))].join(', ')
      writes.push(() => appendSeries(join(dir, s.file), s.header, entry, o.now))
      status.date = w.label
      for (const k of s.keys) status[k] = values[k] ?? 0
    }
    writes.push(() => writeAtomic(join(dir, 'monitor_resource.status.json'), pyJson(status)))
    const rows = perPid.all(user, w.day, w.from, w.to) as Array<Record<string, number | string>>
    if (rows.length) {
      const list = rows.map((r) => {
        const count = Number(r.n) || 1
        const item: Record<string, PyJson> = {
          pid: Number(r.pid),
          cpu_percent: round(Number(r.cpu_percent) / count, 2),
          memory_percent: round(Number(r.memory_percent) / count, 2),
          io_rw_counter: round(Number(r.io_rw_counter) / count, 2),
          io_cycles_counter: round(Number(r.io_cycles_counter) / count, 2),
          cpu_num_threads: round(Number(r.cpu_num_threads) / count, 2),
          cpu_time: round(Number(r.cpu_time) / 60, 2),
          memory_rss: round(Number(r.memory_rss) / 2 ** 20, 2),
        }
        Object.assign(item, aliveProcess(Number(r.pid), String(r.process), user, boot))
        return item
      })
      writes.push(() => writeAtomic(join(dir, 'monitor_process_resource.status.json'), pyJson(list)))
    }
    try {
      asAccount(account, () => {
        ensureDir(dir)
        for (const write of writes) write()
      })
      done.push(user)
    } catch (err) {
      o.log.warning(`Cannot write the monitor files of ${user} in ${dir}: ${(err as Error).message}`)
    }
  }
  return done
}

/**
 * Hands a directory of a partition to its user when root owns it: opened without following a
 * final link, and changed only if the opened directory is the one named (the user may have
 * swapped a directory on the way for a link at any moment).
 */
function giveDirectory(path: string, account: { uid: number; gid: number }): void {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW)
  } catch {
    return // a link or something else: the user's own business
  }
  try {
    const st = fstatSync(fd)
    if (st.uid === account.uid) return
    const parent = realpathSync(dirname(dirname(path)))
    if (readlinkSync(`/proc/self/fd/${fd}`) === join(parent, relative(dirname(dirname(path)), path))) fchownSync(fd, account.uid, account.gid)
  } finally {
    closeSync(fd)
  }
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path)
  } catch {
    return undefined
  }
}

/**
 * Runs `fn` with the effective identity of an account (uid, gid, its group alone) when we are
 * root, then takes root's back. Only for synchronous file work: nothing else runs meanwhile.
 */
function asAccount<T>(account: { uid: number; gid: number }, fn: () => T): T {
  if (process.geteuid?.() !== 0 || !process.seteuid || !process.setegid || !process.setgroups || !process.getgroups) return fn()
  const groups = process.getgroups()
  process.setgroups([account.gid])
  process.setegid(account.gid)
  process.seteuid(account.uid)
  try {
    return fn()
  } finally {
    process.seteuid(0)
    process.setegid(0)
    process.setgroups(groups)
  }
}

/** Largest series file grown in place; a larger one (or a FIFO, a device, a link) starts again. */
const SERIES_MAX = 16 * 2 ** 20

function readSeries(file: string): string | undefined {
  let fd: number
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch {
    return undefined
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile() || st.size > SERIES_MAX) return undefined
    return readFileSync(fd, 'utf8')
  } finally {
    closeSync(fd)
  }
}

/** A series file: `{"date": <epoch>, "data": [<header>, ...]}`, one more entry each time. */
function appendSeries(file: string, header: string, entry: string, now: Date): void {
  let text = readSeries(file) ?? ''
  const tail = text.trimEnd()
  if (!tail.endsWith(']}')) text = `{"date": ${pyFloat(now.getTime() / 1000)}, "data": [${JSON.stringify(header)}]}`
  const body = text.trimEnd()
  writeAtomic(file, `${body.slice(0, -2)},${JSON.stringify(entry)}]}`)
}

/** name, command, user and start date of a process still running (the same one: its create time matches). */
function aliveProcess(pid: number, process_: string, user: string, boot: number): Record<string, PyJson> {
  const now = sampleProcess(pid, user, boot)
  if (!now || `${pid}-${pyFloat(now.createTime)}` !== process_) return {}
  try {
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
    const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s, i, a) => s !== '' || i < a.length - 1)
    const start = new Date(now.createTime * 1000)
    const p2 = (n: number) => String(n).padStart(2, '0')
    const date = `${start.getFullYear()}-${p2(start.getMonth() + 1)}-${p2(start.getDate())} ${p2(start.getHours())}:${p2(start.getMinutes())}:${p2(start.getSeconds())}`
    return { name: comm, command, user, date }
  } catch {
    return {}
  }
}

// --- retention (§3.9) ---

/** Exported rows older than `days` days (or dated after today) go; the database shrinks if any went. */
function retention(db: DatabaseSync, today: string, days: number): void {
  const cutoff = addDays(today, -(days - 1))
  let deleted = 0
  transaction(db, () => {
    for (const t of COLLECT_TABLES) {
      if (t.name === 'heating') continue
      deleted += Number(db.prepare(`DELETE FROM ${t.name} WHERE reported = 1 AND (date < ? OR date > ?)`).run(cutoff, today).changes)
    }
  })
  if (deleted > 0) db.exec('VACUUM')
}

// --- slapos node collect --show ---

export interface UsageLine {
  user: string
  samples: number
  processes: number
  cpuPercent: number
  memoryMiB: number
  ioMiB: number
}

/** Per partition user, the samples of the hour before `now`: averages per sample, I/O of the last one. */
export function lastHourUsage(dbPath: string, users: readonly string[], now: Date): UsageLine[] {
  const { DatabaseSync } = process.getBuiltinModule('node:sqlite') as typeof import('node:sqlite')
  const db = new DatabaseSync(dbPath, { readOnly: true })
  try {
    const since = new Date(now.getTime() - 3_600_000)
    const from = `${dayOf(since)} ${timeOf(since)}`
    const q = db.prepare(
      "SELECT date || ' ' || time AS t, COUNT(*) AS n, SUM(cpu_percent) AS cpu, SUM(memory_rss) AS mem, SUM(io_rw_counter) AS io FROM user " +
        "WHERE partition = ? AND date >= ? AND date || ' ' || time >= ? GROUP BY date, time ORDER BY date, time",
    )
    return users.map((user) => {
      const rows = q.all(user, dayOf(since), from) as Array<{ n: number; cpu: number; mem: number; io: number }>
      const k = rows.length || 1
      return {
        user,
        samples: rows.length,
        processes: round(rows.reduce((a, r) => a + r.n, 0) / k, 1),
        cpuPercent: round(rows.reduce((a, r) => a + r.cpu, 0) / k, 1),
        memoryMiB: round(rows.reduce((a, r) => a + r.mem, 0) / k / 2 ** 20, 1),
        ioMiB: round((rows.at(-1)?.io ?? 0) / 2 ** 20, 1),
      }
    })
  } finally {
    db.close()
  }
}
