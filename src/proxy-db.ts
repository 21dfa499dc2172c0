// The local master's SQLite database: schema version 17 of the original slapproxy (same
// table names and columns, so either program opens the other's file), migration from
// versions 10..16, and every query the proxy runs. Used by proxy-server.ts and proxy show.
// This is the only module that imports node:sqlite.
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite'
import { chmodSync, closeSync, constants, openSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { SlapError } from './errors.ts'
import type { Logger } from './log.ts'

export const DB_VERSION = '17'

/** Base names of the tables; the real name is base + DB_VERSION (`partition17`). */
/** How many consumption reports the proxy keeps (two a day per node: a year of 100 nodes). */
export const CONSUMPTION_KEPT = 73_000

export const TABLES = ['config', 'software', 'computer', 'partition', 'slave', 'partition_network', 'forwarded_partition_request'] as const

export interface ComputerRow {
  reference: string
  address: string | null
  netmask: string | null
}

export interface SoftwareRow {
  url: string
  computerReference: string
  requestedState: string
}

export interface PartitionRow {
  /** partition id, e.g. slappart0 */
  reference: string
  computerReference: string
  slapState: string
  softwareRelease: string | null
  /** instance parameters, instance-XML form */
  xml: string | null
  connectionXml: string | null
  /** xml_marshaller document of the hosted shared instances */
  slaveInstanceList: string | null
  softwareType: string | null
  /** the instance title */
  partitionReference: string | null
  /** title of the root of the tree, '' for a root */
  requestedBy: string
  requestedState: string
  timestamp: number | null
}

export interface SlaveRow {
  reference: string
  computerReference: string
  connectionXml: string | null
  hostedBy: string | null
  askedBy: string | null
}

export interface AddressRow {
  partitionReference: string
  computerReference: string
  /** network interface name */
  reference: string
  address: string
  netmask: string | null
}

export interface FormatPartition {
  id: string
  addresses: { iface: string; address: string; netmask: string | null }[]
}

export type PartitionUpdate = Partial<Omit<PartitionRow, 'reference' | 'computerReference'>>

export class ProxyDbError extends SlapError {
  constructor(message: string, hint?: string) {
    super(message, { code: 'E_PROXY_DB', hint })
  }
}

export interface OpenOptions {
  path: string
  /** configured computer_id: default of every computer_reference column */
  computerId: string
  log?: Logger | undefined
  /** clock for backup file names */
  now?: () => Date
}

/**
 * One open database. node:sqlite is synchronous and the server handles one request at a
 * time on its event loop, so a write done inside `transaction()` is never interleaved
 * with another request's.
 */
export class ProxyDb {
  readonly path: string
  readonly computerId: string
  private readonly db: DatabaseSync
  private readonly stmts = new Map<string, StatementSync>()
  private gen = 0
  private lastDataVersion = -1
  /** commits of other connections seen, and our own writes to the software table */
  private externalChanges = 0
  private softwareChanges = 0
  /**
   * One entry per committed transaction that changed rows: the partitions it changed
   * (`<computer>\n<reference>`) when they are all it changed, else null (anything may have).
   * `journalBase` is the sequence number of journal[0].
   */
  private journal: (string[] | null)[] = []
  private journalBase = 0
  /** partitions changed by the transaction under way, one row each */
  private pending: string[] = []
  private depth = 0

  private constructor(path: string, computerId: string, db: DatabaseSync) {
    this.path = path
    this.computerId = computerId
    this.db = db
  }

  /** Opens (creating if needed) and brings the schema to version 17. */
  static open(opts: OpenOptions): ProxyDb {
    let db: DatabaseSync
    try {
      // the database holds connection parameters (passwords): only its owner may read it, and
      // SQLite gives the -wal and -shm files the mode of the database file
      ownerOnly(opts.path)
      db = new DatabaseSync(opts.path)
    } catch (err) {
      throw new ProxyDbError(`cannot open the proxy database ${opts.path}: ${(err as Error).message}`, 'check database_uri and that its directory exists and is writable')
    }
    const self = new ProxyDb(opts.path, opts.computerId, db)
    try {
      db.exec('PRAGMA busy_timeout = 5000')
      db.exec('PRAGMA journal_mode = WAL')
      db.exec('PRAGMA synchronous = FULL')
      self.upgrade(opts.log, opts.now ?? (() => new Date()))
    } catch (err) {
      db.close()
      if (err instanceof SlapError) throw err
      throw new ProxyDbError(`cannot use the proxy database ${opts.path}: ${(err as Error).message}`)
    }
    return self
  }

  /** Opens an existing file read-only, without touching its schema (proxy show). */
  static openReadOnly(path: string): ProxyDb {
    let db: DatabaseSync
    try {
      db = new DatabaseSync(path, { readOnly: true })
      db.exec('PRAGMA busy_timeout = 5000')
    } catch (err) {
      throw new ProxyDbError(`cannot open the proxy database ${path}: ${(err as Error).message}`, 'check database_uri')
    }
    return new ProxyDb(path, '', db)
  }

  close(): void {
    if (this.db.isOpen) this.db.close()
  }

  /**
   * Changes whenever the data may have changed: after each of our transactions and when
   * another process committed (PRAGMA data_version). Lets callers cache derived answers.
   */
  generation(): number {
    const v = (this.stmt('PRAGMA data_version').get() as { data_version: number }).data_version
    if (v !== this.lastDataVersion) {
      // a first look, or another process committed: anything may have changed
      if (this.lastDataVersion !== -1) this.record(null)
      this.lastDataVersion = v
      this.externalChanges++
      this.gen++
    }
    return this.gen
  }

  /**
   * Changes whenever the software table may have changed (our writes to it, any commit of
   * another process): lets callers keep what they derived from it across other writes.
   */
  softwareVersion(): string {
    this.generation()
    return `${this.externalChanges}:${this.softwareChanges}`
  }

  /** Runs fn inside BEGIN IMMEDIATE .. COMMIT; any throw rolls everything back. Nests. */
  transaction<T>(fn: () => T): T {
    if (this.depth > 0) return fn()
    this.db.exec('BEGIN IMMEDIATE')
    this.depth++
    this.pending = []
    const before = this.totalChanges()
    try {
      const r = fn()
      this.db.exec('COMMIT')
      const changed = this.totalChanges() - before
      // rows changed other than the partitions counted (or a count that does not add up): unknown
      if (changed > 0) this.record(changed === this.pending.length ? this.pending : null)
      return r
    } catch (err) {
      try {
        this.db.exec('ROLLBACK')
      } catch {
        // the transaction may already be gone (e.g. disk error); the original error matters
      }
      throw err
    } finally {
      this.depth--
      this.gen++
    }
  }

  private totalChanges(): number {
    return (this.stmt('SELECT total_changes() AS n').get() as { n: number }).n
  }

  private record(entry: string[] | null): void {
    this.journal.push(entry)
    if (this.journal.length > 256) {
      this.journal.shift()
      this.journalBase++
    }
  }

  /** Where the change journal ends now: give it to changedPartitions() later. */
  changeMark(): number {
    this.generation()
    return this.journalBase + this.journal.length
  }

  /**
   * The partitions (`<computer>\n<reference>`) changed since `mark`, when nothing else
   * changed; undefined when anything else may have (other rows, another process, a mark
   * older than the journal keeps).
   */
  changedPartitions(mark: number): Set<string> | undefined {
    this.generation()
    if (mark < this.journalBase) return undefined
    const keys = new Set<string>()
    for (let i = mark - this.journalBase; i < this.journal.length; i++) {
      const entry = this.journal[i]
      if (!entry) return undefined
      for (const k of entry) keys.add(k)
    }
    return keys
  }

  /** `PRAGMA integrity_check` result lines ('ok' when healthy). */
  integrityCheck(): string[] {
    return (this.db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[]).map((r) => r.integrity_check)
  }

  tableNames(): string[] {
    return tableList(this.db)
  }

  /** All rows of a table by its full name, columns as stored (proxy show, tests). */
  rawRows(table: string, where = ''): Record<string, SQLInputValue>[] {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(table)) throw new ProxyDbError(`bad table name ${table}`)
    return this.db.prepare(`SELECT * FROM ${table} ${where}`).all() as Record<string, SQLInputValue>[]
  }

  /** Column names of a table, in order. */
  columns(table: string): string[] {
    return (this.db.prepare(`PRAGMA table_info(${quoteIdent(table)})`).all() as { name: string }[]).map((c) => c.name)
  }

  /** Text dump like sqlite3's `.dump` (backups before migration or rebase). */
  dump(): string {
    return dumpDatabase(this.db)
  }

  // --- consumption reports (/useComputer) ---

  /**
   * Keeps a consumption report a node sent (the original proxy drops it). Its table is made on
   * first use, so a database that never received one is the original's schema exactly.
   */
  storeConsumption(computer: string, xml: string, receivedAt: string): void {
    this.db.exec(`CREATE TABLE IF NOT EXISTS consumption${DB_VERSION} (computer_reference VARCHAR(255), received VARCHAR(255), xml TEXT)`)
    this.transaction(() => {
      this.db.prepare(`INSERT INTO consumption${DB_VERSION} (computer_reference, received, xml) VALUES (?, ?, ?)`).run(computer, receivedAt, xml)
      // the newest reports only: a node sending without end cannot fill the disk
      this.db.exec(`DELETE FROM consumption${DB_VERSION} WHERE rowid <= (SELECT MAX(rowid) FROM consumption${DB_VERSION}) - ${CONSUMPTION_KEPT}`)
    })
  }

  /** The consumption reports received, oldest first (none when the table was never made). */
  listConsumption(): { computerReference: string; received: string; xml: string }[] {
    if (!tableList(this.db).includes(`consumption${DB_VERSION}`)) return []
    return this.db
      .prepare(`SELECT computer_reference AS computerReference, received, xml FROM consumption${DB_VERSION} ORDER BY rowid`)
      .all() as { computerReference: string; received: string; xml: string }[]
  }

  // --- config ---

  getConfig(name: string): string | undefined {
    const r = this.stmt(`SELECT value FROM config${DB_VERSION} WHERE name = ?`).get(name) as { value: string | null } | undefined
    return r?.value ?? undefined
  }

  setConfig(name: string, value: string): void {
    this.stmt(`INSERT OR REPLACE INTO config${DB_VERSION} (name, value) VALUES (?, ?)`).run(name, value)
  }

  // --- computers ---

  getComputer(reference: string): ComputerRow | undefined {
    return this.stmt(`SELECT reference, address, netmask FROM computer${DB_VERSION} WHERE reference = ?`).get(reference) as ComputerRow | undefined
  }

  listComputers(): ComputerRow[] {
    return this.stmt(`SELECT reference, address, netmask FROM computer${DB_VERSION} ORDER BY rowid`).all() as unknown as ComputerRow[]
  }

  /** loadComputerConfigurationFromXML (proxy.md §3.1), in one transaction. */
  formatComputer(reference: string, address: string | null, netmask: string | null, partitions: FormatPartition[]): void {
    this.transaction(() => {
      this.stmt(`INSERT OR REPLACE INTO computer${DB_VERSION} (reference, address, netmask) VALUES (?, ?, ?)`).run(reference, address, netmask)
      // the kept references as one JSON parameter: any number of partitions in one statement
      const ids = JSON.stringify(partitions.map((p) => p.id))
      this.stmt(`DELETE FROM partition${DB_VERSION} WHERE computer_reference = ? AND reference NOT IN (SELECT value FROM json_each(?))`).run(reference, ids)
      this.stmt(`DELETE FROM slave${DB_VERSION} WHERE computer_reference = ? AND hosted_by NOT IN (SELECT value FROM json_each(?))`).run(reference, ids)
      this.stmt(`DELETE FROM partition_network${DB_VERSION} WHERE computer_reference = ?`).run(reference)
      const addPartition = this.stmt(`INSERT OR IGNORE INTO partition${DB_VERSION} (reference, computer_reference) VALUES (?, ?)`)
      const addAddress = this.stmt(
        `INSERT INTO partition_network${DB_VERSION} (reference, partition_reference, computer_reference, address, netmask) VALUES (?, ?, ?, ?, ?)`,
      )
      for (const p of partitions) {
        addPartition.run(p.id, reference)
        for (const a of p.addresses) addAddress.run(a.iface, p.id, reference, a.address, a.netmask)
      }
    })
  }

  // --- software ---

  listSoftware(computer: string): SoftwareRow[] {
    return this.stmt(
      `SELECT url, computer_reference AS computerReference, requested_state AS requestedState FROM software${DB_VERSION} WHERE computer_reference = ? ORDER BY rowid`,
    ).all(computer) as unknown as SoftwareRow[]
  }

  listAllSoftware(): SoftwareRow[] {
    return this.stmt(
      `SELECT url, computer_reference AS computerReference, requested_state AS requestedState FROM software${DB_VERSION} ORDER BY rowid`,
    ).all() as unknown as SoftwareRow[]
  }

  /** Whether `url` was supplied to any computer (whatever its state since). */
  isSoftwareKnown(url: string): boolean {
    return this.stmt(`SELECT 1 FROM software${DB_VERSION} WHERE url = ? LIMIT 1`).get(url) !== undefined
  }

  supplySoftware(url: string, computer: string, state: string): void {
    this.transaction(() => {
      this.softwareChanges++
      this.stmt(`INSERT OR REPLACE INTO software${DB_VERSION} (url, computer_reference, requested_state) VALUES (?, ?, ?)`).run(url, computer, state)
    })
  }

  deleteSoftware(url: string, computer: string): void {
    this.transaction(() => {
      this.softwareChanges++
      this.stmt(`DELETE FROM software${DB_VERSION} WHERE url = ? AND computer_reference = ?`).run(url, computer)
    })
  }

  // --- partitions ---

  listPartitions(computer: string): PartitionRow[] {
    return this.stmt(`${SELECT_PARTITION} WHERE computer_reference = ? ORDER BY rowid`).all(computer) as unknown as PartitionRow[]
  }

  listAllPartitions(): PartitionRow[] {
    return this.stmt(`${SELECT_PARTITION} ORDER BY rowid`).all() as unknown as PartitionRow[]
  }

  getPartition(reference: string, computer: string): PartitionRow | undefined {
    return this.stmt(`${SELECT_PARTITION} WHERE reference = ? AND computer_reference = ?`).get(reference, computer) as PartitionRow | undefined
  }

  /** The instance with this title in this tree, on any computer (getAllocatedInstance). */
  findInstance(title: string, requestedBy: string): PartitionRow | undefined {
    return this.stmt(`${SELECT_PARTITION} WHERE partition_reference = ? AND requested_by = ? ORDER BY rowid LIMIT 1`).get(title, requestedBy) as
      | PartitionRow
      | undefined
  }

  /** First partition with this title, any tree (hateoas documents). */
  findByTitle(title: string): PartitionRow | undefined {
    return this.stmt(`${SELECT_PARTITION} WHERE partition_reference = ? ORDER BY rowid LIMIT 1`).get(title) as PartitionRow | undefined
  }

  firstFreePartition(computer: string): PartitionRow | undefined {
    return this.stmt(`${SELECT_PARTITION} WHERE slap_state = 'free' AND computer_reference = ? ORDER BY rowid LIMIT 1`).get(computer) as
      | PartitionRow
      | undefined
  }

  /** Host of a shared instance (requestSlave step 1). */
  findSlaveHost(softwareRelease: string, computer: string, softwareType: string, partitionId: string | undefined): PartitionRow | undefined {
    let q = `${SELECT_PARTITION} WHERE software_release = ? AND computer_reference = ?`
    const args: SQLInputValue[] = [softwareRelease, computer]
    if (softwareType) {
      q += ' AND software_type = ?'
      args.push(softwareType)
    }
    if (partitionId !== undefined) {
      q += ' AND reference = ?'
      args.push(partitionId)
    }
    return this.stmt(`${q} ORDER BY rowid LIMIT 1`).get(...args) as PartitionRow | undefined
  }

  /** Busy root instances (requested by a person), in table order. */
  listRootInstances(): PartitionRow[] {
    return this.stmt(`${SELECT_PARTITION} WHERE slap_state != 'free' AND requested_by = '' ORDER BY rowid`).all() as unknown as PartitionRow[]
  }

  /** Titles of the members of a tree (rows whose requested_by is the root title), sorted. */
  treeMemberTitles(rootTitle: string): string[] {
    return (
      this.stmt(`SELECT partition_reference AS t FROM partition${DB_VERSION} WHERE requested_by = ? ORDER BY partition_reference`).all(rootTitle) as {
        t: string | null
      }[]
    ).map((r) => r.t ?? '')
  }

  updatePartition(reference: string, computer: string, fields: PartitionUpdate): void {
    const sets: string[] = []
    const args: SQLInputValue[] = []
    for (const [k, v] of Object.entries(fields)) {
      const col = PARTITION_COLUMNS[k]
      if (!col) throw new ProxyDbError(`unknown partition field ${k}`)
      sets.push(`${col} = ?`)
      args.push(v as SQLInputValue)
    }
    if (!sets.length) return
    this.transaction(() => {
      const r = this.stmt(`UPDATE partition${DB_VERSION} SET ${sets.join(', ')} WHERE reference = ? AND computer_reference = ?`).run(...args, reference, computer)
      if (Number(r.changes) === 1) this.pending.push(`${computer}\n${reference}`)
    })
  }

  /** destroyedComputerPartition on a leaf: the partition is free again (proxy.md §5.1). */
  freePartition(reference: string, computer: string): void {
    this.transaction(() => {
      this.stmt(
        `UPDATE partition${DB_VERSION} SET slap_state = 'free', software_release = NULL, xml = NULL, connection_xml = NULL, slave_instance_list = NULL, software_type = NULL, partition_reference = NULL, requested_by = '', requested_state = 'started' WHERE reference = ? AND computer_reference = ?`,
      ).run(reference, computer)
    })
  }

  /** Every member of a tree (any computer) gets this requested state. */
  setTreeState(rootTitle: string, state: string): void {
    this.transaction(() => {
      this.stmt(`UPDATE partition${DB_VERSION} SET requested_state = ? WHERE requested_by = ?`).run(state, rootTitle)
    })
  }

  /** softwareInstanceBang: the root and every member of its tree get the same timestamp. */
  bumpTree(rootTitle: string, timestamp: number): void {
    this.transaction(() => {
      this.stmt(`UPDATE partition${DB_VERSION} SET timestamp = ? WHERE partition_reference = ? AND requested_by = ''`).run(timestamp, rootTitle)
      this.stmt(`UPDATE partition${DB_VERSION} SET timestamp = ? WHERE requested_by = ?`).run(timestamp, rootTitle)
    })
  }

  /** softwareInstanceRename (proxy.md §5.2): a root's tree follows its new title. */
  renameInstance(reference: string, computer: string, newTitle: string): boolean {
    return this.transaction(() => {
      const row = this.getPartition(reference, computer)
      if (!row) return false
      if (row.requestedBy === '' && row.partitionReference !== null) {
        this.stmt(`UPDATE partition${DB_VERSION} SET requested_by = ? WHERE requested_by = ?`).run(newTitle, row.partitionReference)
      }
      this.stmt(`UPDATE partition${DB_VERSION} SET partition_reference = ? WHERE reference = ? AND computer_reference = ?`).run(newTitle, reference, computer)
      return true
    })
  }

  // --- network ---

  /** Addresses of every partition of a computer, in table order. */
  listAddresses(computer: string): AddressRow[] {
    return this.stmt(`${SELECT_ADDRESS} WHERE computer_reference = ? ORDER BY rowid`).all(computer) as unknown as AddressRow[]
  }

  listAllAddresses(): AddressRow[] {
    return this.stmt(`${SELECT_ADDRESS} ORDER BY rowid`).all() as unknown as AddressRow[]
  }

  /** Addresses of a partition id; with `computer` undefined, on every computer (requestNotSlave quirk). */
  partitionAddresses(partition: string, computer: string | undefined): AddressRow[] {
    if (computer === undefined) return this.stmt(`${SELECT_ADDRESS} WHERE partition_reference = ? ORDER BY rowid`).all(partition) as unknown as AddressRow[]
    return this.stmt(`${SELECT_ADDRESS} WHERE partition_reference = ? AND computer_reference = ? ORDER BY rowid`).all(
      partition,
      computer,
    ) as unknown as AddressRow[]
  }

  // --- shared instances ---

  getSlave(reference: string, computer: string): SlaveRow | undefined {
    return this.stmt(`${SELECT_SLAVE} WHERE reference = ? AND computer_reference = ? ORDER BY rowid LIMIT 1`).get(reference, computer) as SlaveRow | undefined
  }

  findSlave(reference: string): SlaveRow | undefined {
    return this.stmt(`${SELECT_SLAVE} WHERE reference = ? ORDER BY rowid LIMIT 1`).get(reference) as SlaveRow | undefined
  }

  listSlaves(): SlaveRow[] {
    return this.stmt(`${SELECT_SLAVE} ORDER BY rowid`).all() as unknown as SlaveRow[]
  }

  insertSlave(reference: string, computer: string, askedBy: string, hostedBy: string): void {
    this.transaction(() => {
      this.stmt(`INSERT INTO slave${DB_VERSION} (reference, computer_reference, asked_by, hosted_by) VALUES (?, ?, ?, ?)`).run(reference, computer, askedBy, hostedBy)
    })
  }

  /** Connection parameters published for a shared instance (any computer). */
  setSlaveConnection(reference: string, connectionXml: string, hostedBy: string): void {
    this.transaction(() => {
      this.stmt(`UPDATE slave${DB_VERSION} SET connection_xml = ?, hosted_by = ? WHERE reference = ?`).run(connectionXml, hostedBy, reference)
    })
  }

  // --- multimaster bookkeeping ---

  recordForwarded(reference: string, masterUrl: string): void {
    this.transaction(() => {
      this.stmt(`INSERT OR REPLACE INTO forwarded_partition_request${DB_VERSION} (partition_reference, master_url) VALUES (?, ?)`).run(reference, masterUrl)
    })
  }

  forgetForwarded(reference: string, masterUrl: string): void {
    this.transaction(() => {
      this.stmt(`DELETE FROM forwarded_partition_request${DB_VERSION} WHERE partition_reference = ? AND master_url = ?`).run(reference, masterUrl)
    })
  }

  listForwarded(): { partitionReference: string; masterUrl: string }[] {
    return this.stmt(`SELECT partition_reference AS partitionReference, master_url AS masterUrl FROM forwarded_partition_request${DB_VERSION} ORDER BY rowid`).all() as unknown as {
      partitionReference: string
      masterUrl: string
    }[]
  }

  // --- local software release root rebasing (proxy.md §7) ---

  /** Rewrites the URL columns with `map` (null = keep), in one transaction. */
  rewriteSoftwareUrls(map: (url: string) => string | null): number {
    return this.transaction(() => {
      let n = 0
      for (const r of this.listAllSoftware()) {
        const to = map(r.url)
        if (to !== null && to !== r.url) {
          this.softwareChanges++
          this.stmt(`UPDATE OR REPLACE software${DB_VERSION} SET url = ? WHERE url = ? AND computer_reference = ?`).run(to, r.url, r.computerReference)
          n++
        }
      }
      for (const p of this.listAllPartitions()) {
        if (p.softwareRelease === null) continue
        const to = map(p.softwareRelease)
        if (to !== null && to !== p.softwareRelease) {
          this.updatePartition(p.reference, p.computerReference, { softwareRelease: to })
          n++
        }
      }
      return n
    })
  }

  // --- internal ---

  private stmt(sql: string): StatementSync {
    let s = this.stmts.get(sql)
    if (!s) {
      s = this.db.prepare(sql)
      this.stmts.set(sql, s)
    }
    return s
  }

  /** Schema creation and migration (proxy.md §2.3). */
  private upgrade(log: Logger | undefined, now: () => Date): void {
    const tables = tableList(this.db)
    if (tables.length === 0) {
      this.transaction(() => this.db.exec(schemaSql(this.computerId)))
      return
    }
    const versions = new Set(tables.map((t) => /(\d+)$/.exec(t)?.[1] ?? ''))
    if (versions.size !== 1 || versions.has('')) {
      throw new ProxyDbError(
        `${this.path} is not a proxy database of a single schema version (tables: ${tables.join(', ')})`,
        'point database_uri to a slapproxy database or to a new file',
      )
    }
    const old = [...versions][0] ?? ''
    if (old === DB_VERSION) return
    const oldNum = Number(old)
    if (oldNum > Number(DB_VERSION)) {
      throw new ProxyDbError(`${this.path} has schema version ${old}, newer than this program's ${DB_VERSION}`, 'use a newer slapos, or another database file')
    }
    const backup = `${this.path}-backup-${old}to${DB_VERSION}-${isoLocal(now())}.sql`
    log?.info(`Old schema detected: Creating a backup of current tables at ${backup}`)
    writeFileSync(`${backup}.tmp`, this.dump())
    renameSync(`${backup}.tmp`, backup)
    this.transaction(() => {
      this.db.exec(schemaSql(this.computerId))
      log?.info('Old schema detected: Migrating old tables...')
      const newCols = new Map(TABLES.map((b) => [b, new Set(this.columns(`${b}${DB_VERSION}`))]))
      for (const oldTable of tables) {
        let base = oldTable.slice(0, -old.length)
        if (base === 'consumption') {
          // ours only, with no column to migrate: it keeps its rows under the new version
          this.db.exec(`ALTER TABLE ${quoteIdent(oldTable)} RENAME TO consumption${DB_VERSION}`)
          continue
        }
        let rows = this.db.prepare(`SELECT * FROM ${quoteIdent(oldTable)} ORDER BY rowid`).all() as Record<string, SQLInputValue>[]
        if (oldNum < 17 && base === 'local_software_release_root') {
          const paths = new Set(rows.map((r) => r.path))
          if (paths.size > 1) throw new ProxyDbError(`${oldTable} holds several roots (${[...paths].join(', ')}); cannot migrate`)
          rows = rows.length ? [{ name: 'local_software_release_root', value: rows[0]?.path ?? null }] : []
          base = 'config'
        } else if (oldNum < 17 && base === 'partition') {
          rows = rootRequesters(rows)
        }
        const cols = newCols.get(base as (typeof TABLES)[number])
        if (!cols) throw new ProxyDbError(`${this.path}: unknown table ${oldTable}; cannot migrate`)
        for (const row of rows) {
          const keys = Object.keys(row).filter((k) => cols.has(k))
          if (!keys.length) continue
          this.db
            .prepare(`INSERT OR REPLACE INTO ${base}${DB_VERSION} (${keys.map(quoteIdent).join(', ')}) VALUES (${keys.map(() => '?').join(', ')})`)
            .run(...keys.map((k) => row[k] ?? null))
        }
        this.db.exec(`DROP TABLE ${quoteIdent(oldTable)}`)
      }
    })
  }
}

/** The version-17 schema; `computerId` is the default of every computer_reference column. */
export function schemaSql(computerId: string): string {
  const c = quoteLiteral(computerId)
  const v = DB_VERSION
  return `CREATE TABLE IF NOT EXISTS config${v} (
  name TEXT PRIMARY KEY,
  value TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS software${v} (
  url VARCHAR(255),
  computer_reference VARCHAR(255) DEFAULT ${c},
  requested_state VARCHAR(255) DEFAULT 'available',
  PRIMARY KEY (url, computer_reference)
);
CREATE TABLE IF NOT EXISTS computer${v} (
  reference VARCHAR(255) DEFAULT ${c},
  address VARCHAR(255),
  netmask VARCHAR(255),
  PRIMARY KEY (reference)
);
CREATE TABLE IF NOT EXISTS partition${v} (
  reference VARCHAR(255),
  computer_reference VARCHAR(255) DEFAULT ${c},
  slap_state VARCHAR(255) DEFAULT 'free',
  software_release VARCHAR(255),
  xml TEXT,
  connection_xml TEXT,
  slave_instance_list TEXT,
  software_type VARCHAR(255),
  partition_reference VARCHAR(255),
  requested_by VARCHAR(255) NOT NULL DEFAULT '',
  requested_state VARCHAR(255) NOT NULL DEFAULT 'started',
  timestamp REAL,
  PRIMARY KEY (reference, computer_reference)
);
CREATE TABLE IF NOT EXISTS slave${v} (
  reference VARCHAR(255),
  computer_reference VARCHAR(255) DEFAULT ${c},
  connection_xml TEXT,
  hosted_by VARCHAR(255),
  asked_by VARCHAR(255)
);
CREATE TABLE IF NOT EXISTS partition_network${v} (
  partition_reference VARCHAR(255),
  computer_reference VARCHAR(255) DEFAULT ${c},
  reference VARCHAR(255),
  address VARCHAR(255),
  netmask VARCHAR(255)
);
CREATE TABLE IF NOT EXISTS forwarded_partition_request${v} (
  partition_reference VARCHAR(255),
  master_url VARCHAR(255),
  PRIMARY KEY (partition_reference, master_url)
);
`
}

// --- internal ---

const PARTITION_COLUMNS: Record<string, string> = {
  slapState: 'slap_state',
  softwareRelease: 'software_release',
  xml: 'xml',
  connectionXml: 'connection_xml',
  slaveInstanceList: 'slave_instance_list',
  softwareType: 'software_type',
  partitionReference: 'partition_reference',
  requestedBy: 'requested_by',
  requestedState: 'requested_state',
  timestamp: 'timestamp',
}

const SELECT_PARTITION = `SELECT reference, computer_reference AS computerReference, slap_state AS slapState, software_release AS softwareRelease, xml, connection_xml AS connectionXml, slave_instance_list AS slaveInstanceList, software_type AS softwareType, partition_reference AS partitionReference, requested_by AS requestedBy, requested_state AS requestedState, timestamp FROM partition${DB_VERSION}`
const SELECT_ADDRESS = `SELECT partition_reference AS partitionReference, computer_reference AS computerReference, reference, address, netmask FROM partition_network${DB_VERSION}`
const SELECT_SLAVE = `SELECT reference, computer_reference AS computerReference, connection_xml AS connectionXml, hosted_by AS hostedBy, asked_by AS askedBy FROM slave${DB_VERSION}`

function tableList(db: DatabaseSync): string[] {
  return (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid").all() as { name: string }[]).map(
    (r) => r.name,
  )
}

/**
 * Before version 17, requested_by named the requesting partition id; now it is the title
 * of the root of the tree. Follow the chain of partition ids up to the row that has no
 * requester (like the original's migration); an unknown id or a loop keeps the old value.
 */
function rootRequesters(rows: Record<string, SQLInputValue>[]): Record<string, SQLInputValue>[] {
  const byId = new Map<string, Record<string, SQLInputValue>>()
  for (const r of rows) byId.set(String(r.reference), r)
  return rows.map((r) => {
    if (!r.requested_by) return r
    const seen = new Set<string>()
    let cur: Record<string, SQLInputValue> | undefined = r
    while (cur && cur.requested_by && !seen.has(String(cur.requested_by))) {
      seen.add(String(cur.requested_by))
      cur = byId.get(String(cur.requested_by))
    }
    if (!cur || cur.requested_by) return r
    return { ...r, requested_by: cur.partition_reference ?? '' }
  })
}

function quoteIdent(s: string): string {
  return `"${s.replace(/"/g, '""')}"`
}

function quoteLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`
}

function sqlValue(v: SQLInputValue): string {
  if (v === null || v === undefined) return 'NULL'
  if (typeof v === 'number' || typeof v === 'bigint') return String(v)
  if (typeof v === 'string') return quoteLiteral(v)
  return `X'${Buffer.from(v as Uint8Array).toString('hex')}'`
}

function dumpDatabase(db: DatabaseSync): string {
  const out = ['BEGIN TRANSACTION;']
  const objs = db.prepare("SELECT type, name, sql FROM sqlite_master WHERE sql NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid").all() as {
    type: string
    name: string
    sql: string
  }[]
  for (const o of objs.filter((x) => x.type === 'table')) {
    out.push(`${o.sql};`)
    const stmt = db.prepare(`SELECT * FROM ${quoteIdent(o.name)}`)
    stmt.setReturnArrays(true)
    for (const row of stmt.iterate() as Iterable<SQLInputValue[]>) out.push(`INSERT INTO ${quoteIdent(o.name)} VALUES(${row.map(sqlValue).join(',')});`)
  }
  for (const o of objs.filter((x) => x.type !== 'table')) out.push(`${o.sql};`)
  out.push('COMMIT;')
  return out.join('\n') + '\n'
}

/** Local time like Python's datetime.now().isoformat(): 2024-01-31T14:05:00.123000 */
function isoLocal(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}000`
}

/** Creates the database file 0600, or takes group and other access away from it and its -wal and -shm files. */
function ownerOnly(path: string): void {
  if (path === ':memory:' || path.startsWith('file:')) return
  try {
    closeSync(openSync(path, constants.O_CREAT | constants.O_WRONLY, 0o600))
  } catch {
    return // DatabaseSync says what is wrong with the path
  }
  for (const f of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      const st = statSync(f)
      if (st.mode & 0o077) chmodSync(f, st.mode & 0o700)
    } catch {
      // absent, or not ours to change: SQLite opens it as it is
    }
  }
}
