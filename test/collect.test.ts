// `slapos node collect` (node-extras.md §3, checklist 48-61): three partition users running
// real CPU, memory and I/O loads, sampled from /proc. Runs a minute and days apart use an
// injected clock through collect() itself; the built binary is run for real inside a mount
// namespace whose /etc/passwd names the partition users; the next `node report` sends the
// daily reports to our proxy, which keeps them.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chownSync, existsSync, lchownSync, linkSync, lstatSync, mkdirSync, renameSync, rmSync, statSync, symlinkSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { collect, collectSchemaSql, pyFloat, pyJson, PyInt, treeKiB, type CollectOptions } from '../src/collect.ts'
import { parseSensors } from '../src/collect-sample.ts'
import { createLogger, type Logger } from '../src/log.ts'
import { ProxyDb } from '../src/proxy-db.ts'
import { realRunner } from '../src/system.ts'
import { SLAPOS, skip, tempDir } from './helpers.ts'
import { canUseNamespaces } from './netns.ts'
import { baseEnv, makeNode, runAs, waitFor, type TestNode } from './node-helpers.ts'

const formats = suite('node collect: formats')

formats('numbers are written as Python writes floats', () => {
  const cases: Array<[number, string]> = [
    [1, '1.0'],
    [0, '0.0'],
    [419, '419.0'],
    [3.2, '3.2'],
    [76.43714285714286, '76.43714285714286'],
    [5e-5, '5e-05'],
    [0.0001, '0.0001'],
    [1e16, '1e+16'],
    [14211174517, '14211174517.0'],
    [-1.5, '-1.5'],
  ]
  for (const [x, s] of cases) assert.is(pyFloat(x), s, String(x))
  assert.is(pyJson({ a: 1, b: new PyInt(104), c: 'x', d: [0.5] }), '{"a": 1.0, "b": 104, "c": "x", "d": [0.5]}')
})

formats('sensors -u: sensor ids, values and alarm levels', () => {
  const text = [
    'coretemp-isa-0000',
    'Adapter: ISA adapter',
    'Package id 0:',
    '  temp1_input: 45.000',
    '  temp1_max: 80.000',
    '  temp1_crit: 100.000',
    'Core 0:',
    '  temp2_input: 85.000',
    '  temp2_max: 80.000',
    '  temp2_crit: 100.000',
    '',
    'acpitz-acpi-0',
    'Adapter: ACPI interface',
    'temp1:',
    '  temp1_input: 27.800',
  ].join('\n')
  assert.equal(parseSensors(text), [
    { sensorId: 'coretemp-isa-0000 Package id 0:', temperature: 45, alarm: 0 },
    { sensorId: 'coretemp-isa-0000 Core 0:', temperature: 85, alarm: 1 },
    { sensorId: 'acpitz-acpi-0 temp1:', temperature: 27.8, alarm: 0 },
  ])
})

formats('the schema: seven tables with the original columns, the indexes', () => {
  const db = new DatabaseSync(':memory:')
  db.exec(collectSchemaSql())
  const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid").all() as Array<{ name: string }>).map((r) => r.name)
  assert.equal(tables, ['user', 'folder', 'computer', 'system', 'disk', 'temperature', 'heating'])
  const cols = (t: string) => (db.prepare(`PRAGMA table_info(${t})`).all() as Array<{ name: string; type: string }>).map((c) => `${c.name} ${c.type.toLowerCase()}`)
  assert.equal(cols('user'), [
    'partition text',
    'pid real',
    'process text',
    'cpu_percent real',
    'cpu_time real',
    'cpu_num_threads real',
    'memory_percent real',
    'memory_rss real',
    'io_rw_counter real',
    'io_cycles_counter real',
    'date text',
    'time text',
    'reported integer',
  ])
  assert.equal(cols('temperature'), ['sensor_id name', 'temperature real', 'alarm integer', 'date text', 'time text', 'reported integer'])
  const indexes = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name").all() as Array<{ name: string }>).map((r) => r.name)
  assert.equal(indexes, [
    'computer_date_reported_index',
    'disk_date_reported_index',
    'folder_date_reported_index',
    'heating_date_reported_index',
    'system_date_reported_index',
    'temperature_date_reported_index',
    'user_date_reported_index',
    'user_partition_date_time',
  ])
  db.close()
})

formats('a small tree is measured as du -s measures it; a large one is left to du', () => {
  const dir = tempDir('slapos-collect-du-')
  mkdirSync(join(dir, 'a', 'b'), { recursive: true })
  writeFileSync(join(dir, 'a', 'f'), Buffer.alloc(300_000, 1))
  writeFileSync(join(dir, 'a', 'b', 'g'), 'x')
  linkSync(join(dir, 'a', 'f'), join(dir, 'hard'))
  symlinkSync('/usr', join(dir, 'link'))
  const du = Number(/^(\d+)/.exec(spawnSync('du', ['-s', dir], { encoding: 'utf8' }).stdout)?.[1])
  assert.is(treeKiB(dir, 100), du)
  assert.is(treeKiB(dir, 3), undefined)
})

formats.run()

// --- end to end ---

const e2e = suite('node collect: three partitions under load, node report, the proxy')

const UIDS = [61000, 61001, 61002]
const USERS = ['slapuser0', 'slapuser1', 'slapuser2']
const MiB = 2 ** 20
const between = (v: unknown, lo: number, hi: number) => Number(v) >= lo && Number(v) <= hi

interface World {
  node: TestNode
  passwd: string
  homes: string[]
  loads: ChildProcess[]
  log: Logger
  opts: (now: string, extra?: Partial<CollectOptions>) => CollectOptions
}
let w: World | undefined

/** A load as partition user `i`; resolves once it printed `ready`. */
function load(i: number, argv: string[], home: string): Promise<ChildProcess> {
  const uid = UIDS[i] ?? 0
  const child = spawn(argv[0] ?? '', argv.slice(1), { uid, gid: uid, cwd: home, env: baseEnv({ HOME: home }), stdio: ['ignore', 'pipe', 'inherit'] })
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      if (s.includes('ready')) resolve(child)
    })
  })
}

e2e.before(async () => {
  if (process.getuid?.() !== 0) return
  for (const uid of UIDS) {
    if (spawnSync('getent', ['passwd', String(uid)]).status === 0) throw new Error(`uid ${uid} is taken on this machine; the test needs it free`)
  }
  const node = await makeNode({ partitions: 3, computerId: 'COMP-collect' })
  const dir = tempDir('slapos-collect-')
  const passwd = join(dir, 'passwd')
  writeFileSync(passwd, readFileSync('/etc/passwd', 'utf8') + USERS.map((u, i) => `${u}:x:${UIDS[i]}:${UIDS[i]}::${join(node.instanceRoot, `slappart${i}`)}:/bin/sh\n`).join(''))
  const homes = USERS.map((_, i) => join(node.instanceRoot, `slappart${i}`))
  homes.forEach((h, i) => {
    mkdirSync(join(h, '.slapgrid'), { recursive: true })
    chownSync(h, UIDS[i] ?? 0, UIDS[i] ?? 0)
  })
  // slapuser0 also has 2 MiB on disk, but a `du` of a previous run "still going" (our pid)
  writeFileSync(join(homes[0] ?? '', 'data'), Buffer.alloc(2 * MiB, 1))
  mkdirSync(join(node.instanceRoot, 'var', 'run'), { recursive: true })
  writeFileSync(join(node.instanceRoot, 'var', 'run', 'slapuser0_disk_size.pid'), String(process.pid))
  const py = (code: string) => ['python3', '-c', code]
  const loads = await Promise.all([
    load(0, ['sh', '-c', 'echo ready; while :; do :; done'], homes[0] ?? ''),
    load(1, py("import time, sys\nb = b'x' * (200 << 20)\nprint('ready', flush=True)\ntime.sleep(600)"), homes[1] ?? ''),
    load(
      2,
      py("import os, time\nf = open('io.bin', 'wb')\nfor _ in range(40): f.write(b'y' * (1 << 20))\nf.flush(); os.fsync(f.fileno()); f.close()\nprint('ready', flush=True)\ntime.sleep(600)"),
      homes[2] ?? '',
    ),
    load(2, ['sh', '-c', 'echo ready; exec sleep 600'], homes[2] ?? ''),
  ])
  const log = createLogger({ level: 'critical' })
  w = {
    node,
    passwd,
    homes,
    loads,
    log,
    opts: (now, extra = {}) => ({
      instanceRoot: node.instanceRoot,
      computerId: node.computerId,
      users: USERS.map((user, i) => ({ user, home: homes[i] ?? '' })),
      collectCache: 15,
      reportDiskUsage: true,
      diskSnapshotCycle: 86400,
      diskPidFolder: join(node.instanceRoot, 'var', 'run'),
      now: new Date(now),
      log,
      runner: realRunner,
      env: baseEnv(),
      intervalMs: 2000,
      passwd,
      ...extra,
    }),
  }
})

e2e.after(async () => {
  for (const c of w?.loads ?? []) c.kill('SIGKILL')
  await w?.node.stop()
})

const dbOf = (x: World) => new DatabaseSync(join(x.node.instanceRoot, 'var', 'data-log', 'collector.db'), { readOnly: true })
const rows = (x: World, sql: string, ...args: Array<string | number>) => {
  const db = dbOf(x)
  try {
    return (db.prepare(sql).all(...args) as Array<Record<string, number | string | null>>).map((r) => ({ ...r }))
  } finally {
    db.close()
  }
}
const monitor = (x: World, i: number, f: string) => readFileSync(join(x.homes[i] ?? '', '.slapgrid', 'monitor', f), 'utf8')

e2e('two runs a minute apart: rows per process, the computer, disks, folder sizes, CSV series, monitor files of the previous minute', async () => {
  if (!w) return skip('needs root (partition users run the loads)')
  const first = await collect(w.opts('2026-12-02T10:00:10Z'))
  assert.equal(
    first.users.map((u) => u.processes),
    [1, 1, 2],
  )
  assert.ok((first.users[0]?.cpuPercent ?? 0) > 10, `the busy loop's CPU: ${first.users[0]?.cpuPercent}`)
  assert.ok(between(first.users[1]?.memoryRss, 190 * MiB, 260 * MiB), `200 MiB held (bytes): ${first.users[1]?.memoryRss}`)
  assert.is(first.date, '2026-12-02')
  assert.is(first.time, '10:00:10')

  const user = rows(w, "SELECT * FROM user WHERE date = '2026-12-02' ORDER BY partition, pid")
  assert.equal(
    user.map((r) => r.partition),
    ['slapuser0', 'slapuser1', 'slapuser2', 'slapuser2'],
  )
  for (const r of user) {
    assert.match(String(r.process), new RegExp(`^${r.pid}-\\d+\\.\\d+$`), 'process = <pid>-<create time>')
    assert.is(r.time, '10:00:10')
    assert.is(r.reported, 0)
  }
  const io = user.find((r) => r.partition === 'slapuser2' && Number(r.io_rw_counter) > 0)
  assert.ok(between(io?.io_rw_counter, 40 * MiB, 200 * MiB), `40 MiB written and synced (bytes): ${io?.io_rw_counter}`)
  assert.is(rows(w, 'SELECT * FROM computer').length, 1)
  assert.is(rows(w, 'SELECT * FROM system').length, 1)
  const disks = rows(w, 'SELECT * FROM disk')
  assert.ok(disks.length >= 1 && disks.every((d) => typeof d.used === 'string' && /^\d+$/.test(String(d.used))), 'one disk row per device, numbers in the text columns')
  // only slapuser2 is measured: slapuser0's `du` "still runs", slapuser1 has less than 1 MiB
  const folders = rows(w, 'SELECT partition, disk_used FROM folder')
  assert.equal(
    folders.map((f) => f.partition),
    ['slapuser2'],
  )
  assert.ok(between(folders[0]?.disk_used, 40 * 1024, 60 * 1024), `KiB: ${folders[0]?.disk_used}`)

  const second = await collect(w.opts('2026-12-02T10:01:10Z'))
  assert.equal(
    second.users.map((u) => u.processes),
    [1, 1, 2],
  )
  assert.is(rows(w, 'SELECT * FROM folder').length, 1, 'within disk_snapshot_time_cycle: no second du')
  const dataLog = join(w.node.instanceRoot, 'var', 'data-log')
  const load = readFileSync(join(dataLog, 'system_loadavg.csv'), 'utf8')
  assert.match(load, /^time,entry\r\n2026-12-02 10:01:10,\d+\.\d+\r\n$/, 'the first sample of the day is only a base')
  assert.match(readFileSync(join(dataLog, 'system_memory_used.csv'), 'utf8'), /^time,entry\r\n2026-12-02 10:01:10,\d+\.\d+\r\n$/)
  const diskFile = readdirSync(dataLog).find((f) => f.startsWith('system_disk_memory_used_'))
  assert.ok(diskFile && /^system_disk_memory_used__dev_[a-z0-9_]+\.csv$/.test(diskFile), `${diskFile}: / and - become _`)
  assert.is(readFileSync(join(dataLog, diskFile), 'utf8').split('\r\n').filter(Boolean).length, 3, 'every disk row of the day')

  // the monitor files of the second run describe the first run's minute
  const process0 = JSON.parse(monitor(w, 0, 'monitor_resource_process.data.json')) as { date: number; data: string[] }
  assert.is(process0.data[0], 'date, total process, CPU percent, CPU time, CPU threads')
  assert.is(process0.data.length, 2, 'the header, then the entry of the minute of the first run (the first run had none before it)')
  assert.match(process0.data[1] ?? '', /^2026-12-02 10:00:00, 1, \d+(\.\d+)?, \d+\.\d+, 1\.0$/)
  const status1 = JSON.parse(monitor(w, 1, 'monitor_resource.status.json')) as Record<string, number | string>
  assert.is(status1.date, '2026-12-02 10:00:00')
  assert.is(status1.total_process, 1)
  assert.ok(between(status1.memory_rss, 190, 260), `MiB: ${status1.memory_rss}`)
  const io2 = monitor(w, 2, 'monitor_resource_io.data.json')
  assert.match(io2, /"date, io rw counter, io cycles counter, disk used"/)
  const perPid = JSON.parse(monitor(w, 0, 'monitor_process_resource.status.json')) as Array<Record<string, unknown>>
  assert.is(perPid.length, 1)
  assert.is(perPid[0]?.user, 'slapuser0', 'a process still running gets its name, command and user')
  assert.equal(perPid[0]?.command, ['sh', '-c', 'echo ready; while :; do :; done'])
  assert.match(monitor(w, 0, 'monitor_process_resource.status.json'), /"pid": \d+\.0/, 'pid written as the REAL column holds it')

  // a third run: each series grows by one entry, the file stays whole JSON
  await collect(w.opts('2026-12-02T10:02:10Z'))
  const grown = JSON.parse(monitor(w, 0, 'monitor_resource_process.data.json')) as { date: number; data: string[] }
  assert.is(grown.date, process0.date, 'the creation date stays')
  assert.equal(grown.data.slice(0, 2), process0.data)
  assert.match(grown.data[2] ?? '', /^2026-12-02 10:01:00, 1, /)
})

e2e('the next day: past rows exported and archived, the consumption report of each day once', async () => {
  if (!w) return skip('needs root')
  const third = await collect(w.opts('2026-12-03T00:00:30Z'))
  assert.equal(third.exported, ['2026-12-02'])
  assert.equal(third.reports, ['2026-12-02'], 'the day before it (2026-12-01) was written by the first run')
  const dataLog = join(w.node.instanceRoot, 'var', 'data-log')
  assert.ok(existsSync(join(dataLog, '2026-12-02.tar.gz')) && !existsSync(join(dataLog, '2026-12-02')))
  const members = spawnSync('tar', ['-tzf', join(dataLog, '2026-12-02.tar.gz')], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).sort()
  assert.equal(members, ['2026-12-02/', ...['computer', 'disk', 'folder', 'heating', 'system', 'temperature', 'user'].map((t) => `2026-12-02/dump_${t}.csv`)])
  const dumpUser = spawnSync('tar', ['-xzOf', join(dataLog, '2026-12-02.tar.gz'), '2026-12-02/dump_user.csv'], { encoding: 'utf8' }).stdout
  const lines = dumpUser.split('\r\n').filter(Boolean)
  assert.is(lines.length, 12, 'four processes, three runs, no header')
  assert.ok(lines.every((l) => /^slapuser\d,\d+\.0,\d+-[\d.]+,.*,2026-12-02,10:0[012]:10,0$/.test(l)), lines[0])
  assert.equal(rows(w, "SELECT DISTINCT reported FROM user WHERE date = '2026-12-02'"), [{ reported: 1 }])
  assert.match(readFileSync(join(dataLog, 'system_loadavg.csv'), 'utf8'), /^time,entry\r\n$/, 'a new day starts a new series')

  const xml = readFileSync(join(w.node.instanceRoot, 'var', 'consumption-report', '2026-12-02.xml'), 'utf8')
  assert.is(readFileSync(join(w.node.instanceRoot, 'var', 'xml_report', w.node.computerId, '2026-12-02.xml'), 'utf8'), xml)
  assert.ok(xml.startsWith("<?xml version='1.0' encoding='utf-8'?><journal><transaction type=\"Sale Packing List\"><title>Eco Information for COMP-collect </title>"))
  const movements = [...xml.matchAll(/<movement><resource>([^<]+)<\/resource><title>([^<]+)<\/title><reference>([^<]+)<\/reference><quantity>([^<]+)<\/quantity>/g)].map((m) => ({
    resource: m[1],
    title: m[2],
    quantity: Number(m[4]),
  }))
  assert.equal(
    movements.map((m) => m.title),
    [
      'CPU Load Percent Average',
      'Used Memory',
      'Zero Emission Ratio',
      'CPU Load Percent Average for slapuser0',
      'CPU Load Percent Average for slapuser1',
      'CPU Load Percent Average for slapuser2',
      'Memory Used Average for slapuser0',
      'Memory Used Average for slapuser1',
      'Memory Used Average for slapuser2',
      'Partition Disk Used Average for slapuser2',
    ],
  )
  assert.is(movements[2]?.quantity, -1)
  assert.ok((movements[3]?.quantity ?? 0) > 10, 'the busy loop')
  assert.ok(between(movements[7]?.quantity, 190, 260), `MiB held by slapuser1: ${movements[7]?.quantity}`)
  assert.ok(between(movements[9]?.quantity, 40, 60), `MiB on slapuser2 disk: ${movements[9]?.quantity}`)
  const before = readFileSync(join(w.node.instanceRoot, 'var', 'consumption-report', '2026-12-01.xml'), 'utf8')
  assert.match(before, /Zero Emission Ratio/, 'a day without samples still has its report')
})

e2e('node report sends the reports to the master with /useComputer; the proxy keeps them', async () => {
  if (!w) return skip('needs root')
  await w.node.supply()
  const r = await w.node.run(['node', 'report'])
  assert.is(r.code, 0, r.stderr)
  const sent = w.node.calls().filter((c) => c.name === 'useComputer')
  assert.is(sent.length, 3, 'the reports of 2026-11-30, 2026-12-01 and 2026-12-02')
  assert.equal(readdirSync(join(w.node.instanceRoot, 'var', 'xml_report', w.node.computerId)), [], 'sent reports leave xml_report')
  assert.ok(existsSync(join(w.node.instanceRoot, 'var', 'consumption-report', '2026-12-02.xml')), 'the copy stays: each day is reported once')
  const db = ProxyDb.openReadOnly(w.node.proxy.dbPath)
  try {
    const kept = db.listConsumption()
    assert.is(kept.length, 3)
    assert.ok(kept.every((k) => k.computerReference === w?.node.computerId))
    assert.ok(kept.some((k) => k.xml.includes('CPU Load Percent Average for slapuser0')))
  } finally {
    db.close()
  }
  const show = await w.node.run(['proxy', 'show', '--consumption', '-u', w.node.proxy.dbPath])
  assert.is(show.code, 0, show.stderr)
  assert.match(show.stdout, /consumption reports: 3\n\d{4}-\d\d-\d\dT[\d:.]+Z {2}COMP-collect {2}\d+ bytes {2}Eco Information for COMP-collect, 2026-11-30-global\n/)
  const json = JSON.parse((await w.node.run(['proxy', 'show', '--consumption', '--json', '-u', w.node.proxy.dbPath])).stdout) as { consumption: unknown[]; partitions?: unknown }
  assert.is(json.consumption.length, 3)
  assert.is(json.partitions, undefined, 'only the section asked for')
})

e2e('retention: exported rows older than collect_cache days go, unexported and heating rows stay', async () => {
  if (!w) return skip('needs root')
  const db = new DatabaseSync(join(w.node.instanceRoot, 'var', 'data-log', 'collector.db'))
  db.prepare("INSERT INTO heating (model_id, zero_emission_ratio, date, time, reported) VALUES ('m', 0.5, '2026-12-01', '00:00:00', 1)").run()
  db.close()
  await collect(w.opts('2026-12-04T00:00:30Z', { collectCache: 1 }))
  assert.equal(rows(w, 'SELECT DISTINCT date FROM user'), [{ date: '2026-12-04' }], 'only the rows of today remain')
  assert.equal(rows(w, 'SELECT DISTINCT date FROM system'), [{ date: '2026-12-04' }])
  assert.is(rows(w, 'SELECT * FROM heating').length, 1)
})

e2e('a partition user links its monitor files elsewhere: nothing is read or written there with root\'s rights', async () => {
  if (!w) return skip('needs root')
  const vault = tempDir('slapos-collect-vault-') // root's, 0700
  const secret = '{"date": 1.0, "data": ["secret"]}'
  writeFileSync(join(vault, 'secret.json'), secret, { mode: 0o600 })
  // slapuser1: its whole monitor directory is a link to root's directory
  const monitor1 = join(w.homes[1] ?? '', '.slapgrid', 'monitor')
  renameSync(monitor1, `${monitor1}.old`)
  symlinkSync(vault, monitor1)
  lchownSync(monitor1, UIDS[1] ?? 0, UIDS[1] ?? 0)
  // slapuser0: one series file is a link to a root-only file that looks like a series
  const series0 = join(w.homes[0] ?? '', '.slapgrid', 'monitor', 'monitor_resource_process.data.json')
  rmSync(series0)
  symlinkSync(join(vault, 'secret.json'), series0)
  lchownSync(series0, UIDS[0] ?? 0, UIDS[0] ?? 0)
  // slapuser2: a FIFO (a reader would wait forever), a link to an endless device, a FIFO where
  // the temporary file will be made
  const monitor2 = join(w.homes[2] ?? '', '.slapgrid', 'monitor')
  const asUser2 = (args: string[]) => spawnSync(args[0] ?? '', args.slice(1), { uid: UIDS[2], gid: UIDS[2] })
  rmSync(join(monitor2, 'monitor_resource_memory.data.json'), { force: true })
  asUser2(['mkfifo', join(monitor2, 'monitor_resource_memory.data.json')])
  rmSync(join(monitor2, 'monitor_resource_io.data.json'), { force: true })
  asUser2(['ln', '-s', '/dev/zero', join(monitor2, 'monitor_resource_io.data.json')])
  asUser2(['mkfifo', join(monitor2, `monitor_resource.status.json.${process.pid}.tmp`)])
  await collect(w.opts('2026-12-05T10:00:10Z'))
  await collect(w.opts('2026-12-05T10:01:10Z'))
  for (const f of ['monitor_resource_memory.data.json', 'monitor_resource_io.data.json', 'monitor_resource.status.json']) {
    assert.ok(lstatSync(join(monitor2, f)).isFile(), `${f} is a file again`)
  }
  assert.match(readFileSync(join(monitor2, 'monitor_resource_memory.data.json'), 'utf8'), /^\{"date": [\d.]+, "data": \["date, memory used percent, memory used","2026-12-05 10:00:00, /)
  assert.equal(readdirSync(vault), ['secret.json'], 'nothing written in root\'s directory')
  assert.is(readFileSync(join(vault, 'secret.json'), 'utf8'), secret)
  assert.ok(!lstatSync(series0).isSymbolicLink(), 'the link itself was replaced')
  const grown = readFileSync(series0, 'utf8')
  assert.not.match(grown, /secret/, 'the root-only file was not read')
  assert.match(grown, /2026-12-05 10:00:00, 1, /)
  assert.match(readFileSync(join(w.homes[2] ?? '', '.slapgrid', 'monitor', 'monitor_resource.status.json'), 'utf8'), /"date": "2026-12-05 10:00:00"/, 'the others are written')
  assert.is(lstatSync(series0).uid, UIDS[0], 'files of the partition belong to its user')
  rmSync(monitor1)
  renameSync(`${monitor1}.old`, monitor1)
})

e2e('partition sizes: DATA/ links measured through their target as the partition user; plain directories once', async () => {
  if (!w) return skip('needs root')
  const home = w.homes[2] ?? ''
  const elsewhere = tempDir('slapos-collect-data-')
  chownSync(elsewhere, UIDS[2] ?? 0, UIDS[2] ?? 0)
  writeFileSync(join(elsewhere, 'blob'), Buffer.alloc(3 * MiB, 2))
  const vault = tempDir('slapos-collect-vault2-') // root's, 0700: the user cannot measure it
  writeFileSync(join(vault, 'blob'), Buffer.alloc(5 * MiB, 3))
  mkdirSync(join(home, 'DATA', 'plain'), { recursive: true })
  writeFileSync(join(home, 'DATA', 'plain', 'blob'), Buffer.alloc(MiB, 4))
  symlinkSync(elsewhere, join(home, 'DATA', 'mine'))
  symlinkSync(vault, join(home, 'DATA', 'roots'))
  const du = (args: string[]) => Number(/^(\d+)/.exec(spawnSync('du', args, { encoding: 'utf8' }).stdout)?.[1])
  const expected = du(['-s', home]) + du(['-s', `${elsewhere}/`])
  // a month later: the cycle is over for every partition
  await collect(w.opts('2027-01-05T10:00:10Z'))
  const row = rows(w, "SELECT disk_used FROM folder WHERE partition = 'slapuser2' AND date = '2027-01-05'")
  // within a few blocks (a directory of the home may grow meanwhile): the 5 MiB of root's are not in it
  assert.ok(Math.abs(Number(row[0]?.disk_used) - expected) <= 16, `${row[0]?.disk_used} KiB: home ${du(['-s', home])} KiB + the linked directory, not the root-only one (${du(['-s', `${vault}/`])} KiB)`)
  assert.is(readFileSync(join(w.node.instanceRoot, 'var', 'run', 'slapuser2_disk_size.pid'), 'utf8'), '', 'no pid left once du is over')
  rmSync(join(home, 'DATA'), { recursive: true, force: true })
})

e2e('the built binary as root: real clock, partition users from /etc/passwd, --json, the summary line, --show', async () => {
  if (!w) return skip('needs root')
  if (!canUseNamespaces()) return skip('needs mount namespaces')
  const cfg = join(w.node.dir, 'collect.cfg')
  writeFileSync(
    cfg,
    `[slapos]\ninstance_root = ${w.node.instanceRoot}\ncomputer_id = ${w.node.computerId}\n\n[slapformat]\npartition_amount = 3\nuser_base_name = slapuser\npartition_base_name = slappart\n`,
  )
  // the partition users exist only in this mount namespace's /etc/passwd
  const inNamespace = (args: string[]) =>
    spawnSync('unshare', ['--mount', '--', 'sh', '-c', 'mount --bind "$0" /etc/passwd && exec "$@"', w?.passwd ?? '', SLAPOS, ...args], { encoding: 'utf8', env: baseEnv() })
  const pidFiles = [1, 2].map((i) => join(w?.node.instanceRoot ?? '', 'var', 'run', `slapuser${i}_disk_size.pid`))
  const measured = pidFiles.map((f) => statSync(f).mtimeMs)
  const r = inNamespace(['node', 'collect', '--cfg', cfg, '--json'])
  assert.is(r.status, 0, r.stderr)
  assert.equal(
    pidFiles.map((f) => statSync(f).mtimeMs),
    measured,
    'measured minutes ago, small or not: no du before the cycle is over',
  )
  const out = JSON.parse(r.stdout) as { users: Array<{ user: string; processes: number; cpuPercent: number; memoryRss: number }>; durationMs: number }
  assert.equal(
    out.users.map((u) => [u.user, u.processes]),
    [
      ['slapuser0', 1],
      ['slapuser1', 1],
      ['slapuser2', 2],
    ],
  )
  assert.ok((out.users[0]?.cpuPercent ?? 0) > 10)
  assert.match(r.stderr, /INFO Collected 4 process\(es\) of 3\/3 partition\(s\), CPU [\d.]+%, load [\d.]+, \d+ disk\(s\), 0 temperature\(s\) in \d+\.\d s/)
  assert.ok(out.durationMs >= 5000, 'the CPU is measured over 5 s')
  const show = inNamespace(['node', 'collect', '--cfg', cfg, '--show', 'slappart1'])
  assert.is(show.status, 0, show.stderr)
  const line = show.stdout.split('\n').find((l) => l.startsWith('slappart1'))
  assert.match(line ?? '', /^slappart1\s+slapuser1\s+[1-9]\d*\s+1(\.0)?\s+[\d.]+\s+(19\d|2\d\d)\.\d\s+[\d.]+$/, show.stdout)
  const nobody = await runAs(65534, ['node', 'collect', '--cfg', cfg, '--show'])
  assert.is(nobody.code, 0, `--show needs no root: ${nobody.stderr}`)
  assert.match(nobody.stdout, /^slappart0\s+slapuser0\s+[1-9]/m)
  const unknown = inNamespace(['node', 'collect', '--cfg', cfg, '--show', 'slappart9'])
  assert.is(unknown.status, 2)
  assert.match(unknown.stderr, /slappart9 is neither a partition nor a partition user of this node/)
})

e2e('not root: exit 5 before the configuration is read; a missing [slapformat] key: exit 1, one line', async () => {
  if (!w) return skip('needs root')
  const r = await runAs(65534, ['node', 'collect', '--cfg', '/nonexistent/slapos.cfg'])
  assert.is(r.code, 5)
  assert.match(r.stderr, /This slapos command must be run as root\./)
  const cfg = join(w.node.dir, 'collect-bad.cfg')
  writeFileSync(cfg, `[slapos]\ninstance_root = ${w.node.instanceRoot}\ncomputer_id = c\n\n[slapformat]\nuser_base_name = slapuser\npartition_base_name = slappart\n`)
  const bad = spawnSync(SLAPOS, ['node', 'collect', '--cfg', cfg], { encoding: 'utf8', env: baseEnv() })
  assert.is(bad.status, 1)
  assert.match(bad.stderr, /\[slapformat\] partition_amount is missing/)
  assert.not.match(bad.stderr, /\n\s+at /, 'no stack trace')
  const huge = join(w.node.dir, 'collect-huge.cfg')
  writeFileSync(huge, `[slapos]\ninstance_root = ${w.node.instanceRoot}\ncomputer_id = c\n\n[slapformat]\npartition_amount = 99999999999\nuser_base_name = slapuser\npartition_base_name = slappart\n`)
  const big = spawnSync(SLAPOS, ['node', 'collect', '--cfg', huge], { encoding: 'utf8', env: baseEnv() })
  assert.is(big.status, 1)
  assert.match(big.stderr, /partition_amount = 99999999999 is not an integer between 0 and 100000/)
  // a damaged database: one line, what to do, nothing else touched
  const root = tempDir('slapos-collect-damaged-')
  mkdirSync(join(root, 'var', 'data-log'), { recursive: true })
  writeFileSync(join(root, 'var', 'data-log', 'collector.db'), 'this is not a database, but it is long enough to be read as one'.repeat(100))
  const damagedCfg = join(root, 'slapos.cfg')
  writeFileSync(damagedCfg, `[slapos]\ninstance_root = ${root}\ncomputer_id = c\n\n[slapformat]\npartition_amount = 0\nuser_base_name = slapuser\npartition_base_name = slappart\n`)
  const damaged = spawnSync(SLAPOS, ['node', 'collect', '--cfg', damagedCfg], { encoding: 'utf8', env: baseEnv() })
  assert.is(damaged.status, 1)
  assert.match(damaged.stderr, /cannot open the collect database .*collector\.db: .*move it away/)
  assert.not.match(damaged.stderr, /\n\s+at /, 'no stack trace')
})

e2e('two runs never interleave: a run while another holds the lock exits 10', async () => {
  if (!w) return skip('needs root')
  const cfg = join(w.node.dir, 'collect.cfg')
  const first = spawn('unshare', ['--mount', '--', 'sh', '-c', 'mount --bind "$0" /etc/passwd && exec "$@"', w.passwd, SLAPOS, 'node', 'collect', '--cfg', cfg], { env: baseEnv(), stdio: 'ignore' })
  const pidFile = join(w.node.instanceRoot, 'var', 'run', 'slapos-node-collect.pid')
  await waitFor('the first run to hold the lock', async () => (existsSync(pidFile) ? true : undefined))
  const second = spawnSync(SLAPOS, ['node', 'collect', '--cfg', cfg], { encoding: 'utf8', env: baseEnv() })
  assert.is(second.status, 10, second.stderr)
  assert.match(second.stderr, /another slapos process \(pid \d+\) is running/)
  const code = await new Promise<number | null>((res) => first.on('close', res))
  assert.is(code, 0)
})

e2e.run()
