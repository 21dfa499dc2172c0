// The proxy database: schema 17 as the original's, migration of every older version
// (10..16) without losing rows, transactions that leave nothing behind on error.
import { DatabaseSync } from 'node:sqlite'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Logger } from '../src/log.ts'
import { DB_VERSION, ProxyDb } from '../src/proxy-db.ts'
import { FIXTURES, tempDir } from './helpers.ts'

const DUMPS = join(FIXTURES, 'proxy-db')
const TABLES17 = ['computer17', 'config17', 'forwarded_partition_request17', 'partition17', 'partition_network17', 'slave17', 'software17']

function recordingLog(): Logger & { lines: string[] } {
  const lines: string[] = []
  const l = {
    lines,
    debug: (m: string) => void lines.push(`DEBUG ${m}`),
    info: (m: string) => void lines.push(`INFO ${m}`),
    warning: (m: string) => void lines.push(`WARNING ${m}`),
    error: (m: string) => void lines.push(`ERROR ${m}`),
    critical: (m: string) => void lines.push(`CRITICAL ${m}`),
    child: () => l,
  }
  return l
}

function loadDump(version: string): string {
  const dir = tempDir('slapos-proxydb-')
  const path = join(dir, 'proxy.db')
  const raw = new DatabaseSync(path)
  raw.exec(readFileSync(join(DUMPS, `database_dump_version_${version}.sql`), 'utf8'))
  raw.close()
  return path
}

function columnsOf(db: DatabaseSync, table: string): { name: string; type: string; notnull: number; dflt_value: string | null; pk: number }[] {
  return (db.prepare(`PRAGMA table_info(${table})`).all() as { name: string; type: string; notnull: number; dflt_value: string | null; pk: number }[]).map(
    (c) => ({ name: c.name, type: c.type, notnull: c.notnull, dflt_value: c.dflt_value, pk: c.pk }),
  )
}

test('a new database gets the tables of version 17, with the columns of the original', () => {
  const dir = tempDir('slapos-proxydb-')
  const db = ProxyDb.open({ path: join(dir, 'new.db'), computerId: 'slaprunner' })
  assert.is(DB_VERSION, '17')
  assert.equal([...db.tableNames()].sort(), TABLES17)
  db.close()
  // the original's current dump, created by its own schema.sql with computer_id slaprunner
  const theirs = new DatabaseSync(loadDump('current'))
  const ours = new DatabaseSync(join(dir, 'new.db'))
  for (const t of TABLES17) assert.equal(columnsOf(ours, t), columnsOf(theirs, t), t)
  const withoutRowid = (d: DatabaseSync) => (d.prepare("SELECT sql FROM sqlite_master WHERE name = 'config17'").get() as { sql: string }).sql.includes('WITHOUT ROWID')
  assert.ok(withoutRowid(ours) && withoutRowid(theirs))
  assert.is((ours.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode, 'wal')
  ours.close()
  theirs.close()
})

test('a database of the original version 17 opens as is and keeps its rows', () => {
  const path = loadDump('current')
  const before = new DatabaseSync(path)
  const count = (d: DatabaseSync, t: string) => (d.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n
  const counts = TABLES17.map((t) => count(before, t))
  before.close()
  const log = recordingLog()
  const db = ProxyDb.open({ path, computerId: 'slaprunner', log })
  assert.equal(log.lines, [])
  db.close()
  const after = new DatabaseSync(path)
  assert.equal(TABLES17.map((t) => count(after, t)), counts)
  after.close()
})

for (const version of ['10', '11', '12', '13', '14', '15', '16']) {
  test(`migration from version ${version}: backup, log lines, every row kept, requested_by = root title`, () => {
    const path = loadDump(version)
    const old = new DatabaseSync(path)
    const oldRows = (t: string) => old.prepare(`SELECT * FROM ${t}${version}`).all() as Record<string, unknown>[]
    const oldPartitions = oldRows('partition')
    const oldNetwork = oldRows('partition_network')
    const oldSoftware = oldRows('software')
    old.close()
    const log = recordingLog()
    const db = ProxyDb.open({ path, computerId: 'computer', log })
    // the two messages of the original, the backup named as the original names it
    assert.is(log.lines.length, 2)
    const m = /^INFO Old schema detected: Creating a backup of current tables at (.*)$/.exec(log.lines[0] ?? '')
    assert.ok(m, log.lines[0])
    assert.is(log.lines[1], 'INFO Old schema detected: Migrating old tables...')
    const backup = m?.[1] ?? ''
    assert.match(backup, new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-backup-${version}to17-\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}\\.sql$`))
    const dump = readFileSync(backup, 'utf8')
    assert.ok(dump.includes('CREATE TABLE') && dump.includes('INSERT INTO'))
    assert.equal([...db.tableNames()].sort(), TABLES17)
    // no row lost, defaults for the new columns
    const parts = db.listAllPartitions()
    assert.is(parts.length, oldPartitions.length)
    assert.is(db.listAllAddresses().length, oldNetwork.length)
    assert.is(db.listAllSoftware().length, oldSoftware.length)
    assert.equal(
      db.listAllSoftware().map((s) => [s.computerReference, s.requestedState]),
      oldSoftware.map(() => ['computer', 'available']),
    )
    assert.equal(db.listComputers().map((c) => c.reference), ['computer'])
    for (const [i, p] of parts.entries()) {
      const o = oldPartitions[i] ?? {}
      assert.is(p.reference, o.reference)
      assert.is(p.computerReference, 'computer')
      assert.is(p.xml, o.xml)
      assert.is(p.connectionXml, o.connection_xml)
      assert.is(p.softwareType, o.software_type)
      assert.is(p.requestedState, o.requested_state ?? 'started')
      // children named the requesting partition (slappart0, titled "slapos"); now the root title
      assert.is(p.requestedBy, o.requested_by ? 'slapos' : '')
    }
    if (Number(version) >= 15) assert.is(db.getConfig('local_software_release_root'), '/')
    assert.equal(db.integrityCheck(), ['ok'])
    db.close()
  })
}

test('every old version is covered by a fixture', () => {
  const versions = readdirSync(DUMPS)
    .map((f) => /database_dump_version_(\d+)\.sql/.exec(f)?.[1])
    .filter(Boolean)
  assert.equal(versions.sort(), ['10', '11', '12', '13', '14', '15', '16'])
})

test('duplicate forwarded-request rows collapse to one after migration', () => {
  const path = loadDump('14')
  const raw = new DatabaseSync(path)
  raw.exec("INSERT INTO forwarded_partition_request14 VALUES ('user_a', 'http://m/'), ('user_a', 'http://m/')")
  raw.close()
  const db = ProxyDb.open({ path, computerId: 'computer' })
  assert.is(db.listForwarded().filter((r) => r.partitionReference === 'user_a').length, 1)
  db.close()
})

test('a file mixing schema versions is refused and left untouched', () => {
  const path = loadDump('16')
  const raw = new DatabaseSync(path)
  raw.exec('CREATE TABLE software9 (a INT)')
  raw.close()
  assert.throws(() => ProxyDb.open({ path, computerId: 'computer' }), /single schema version/)
  const again = new DatabaseSync(path)
  assert.ok(again.prepare("SELECT name FROM sqlite_master WHERE name = 'partition16'").get())
  assert.not.ok(again.prepare("SELECT name FROM sqlite_master WHERE name = 'partition17'").get())
  again.close()
  assert.not.ok(existsSync(`${path}-backup`))
})

test('a failing transaction leaves no row behind', () => {
  const db = ProxyDb.open({ path: join(tempDir('slapos-proxydb-'), 'p.db'), computerId: 'computer' })
  db.formatComputer('computer', null, null, [{ id: 'slappart0', addresses: [] }])
  assert.throws(() =>
    db.transaction(() => {
      db.supplySoftware('http://sr/a.cfg', 'computer', 'available')
      db.updatePartition('slappart0', 'computer', { slapState: 'busy' })
      throw new Error('boom')
    }),
  )
  assert.equal(db.listAllSoftware(), [])
  assert.is(db.getPartition('slappart0', 'computer')?.slapState, 'free')
  db.close()
})

test('format keeps allocated partitions, drops unlisted ones and their shared instances, replaces addresses', () => {
  const db = ProxyDb.open({ path: join(tempDir('slapos-proxydb-'), 'p.db'), computerId: 'computer' })
  const addr = (a: string) => ({ iface: 'tap0', address: a, netmask: '255.255.255.0' })
  db.formatComputer('C', '10.0.0.1', '255.255.255.0', [
    { id: 'p0', addresses: [addr('10.0.0.2')] },
    { id: 'p1', addresses: [addr('10.0.0.3')] },
  ])
  db.updatePartition('p0', 'C', { slapState: 'busy', softwareRelease: 'http://sr', partitionReference: 'main' })
  db.insertSlave('_s', 'C', '', 'p1')
  db.formatComputer('C', '10.0.0.1', '255.255.255.0', [{ id: 'p0', addresses: [addr('10.0.0.9')] }])
  assert.equal(db.listPartitions('C').map((p) => [p.reference, p.slapState, p.softwareRelease]), [['p0', 'busy', 'http://sr']])
  assert.equal(db.listAddresses('C').map((a) => a.address), ['10.0.0.9'])
  assert.equal(db.listSlaves(), [])
  db.formatComputer('C', null, null, [])
  assert.equal(db.listPartitions('C'), [])
  db.close()
})

test.run()
