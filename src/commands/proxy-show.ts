// slapos proxy show (old name slapproxy-query): print the proxy database's computers,
// software, partitions, shared instances, published parameters and addresses like the
// original (proxy.md §11), or as JSON with --json. Reads the file; never changes it.
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import type { CommandModule } from '../command.ts'
import { readConfig } from '../command.ts'
import { loadProxyConfig } from '../config.ts'
import { ConfigError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'
import { DB_VERSION, ProxyDb } from '../proxy-db.ts'
import { parseInstanceXml, pyFloatRepr } from '../slap-protocol.ts'

type Row = Record<string, unknown>
const SECTIONS = ['computers', 'software', 'partitions', 'slaves', 'params', 'network'] as const
type Section = (typeof SECTIONS)[number]

const proxyShow: CommandModule = {
  cfg: 'node',
  description: 'Display the instances, parameters and addresses stored in the proxy database. No flag shows every section.',
  options: (y) =>
    y
      .option('database-uri', { alias: 'u', type: 'string', describe: 'SQLite file of the proxy (default: [slapproxy] database_uri)' })
      .option('computers', { type: 'boolean', describe: 'view computer information' })
      .option('software', { type: 'boolean', describe: 'view software releases' })
      .option('partitions', { type: 'boolean', alias: 'show-instances', describe: 'view partitions' })
      .option('slaves', { type: 'boolean', describe: 'view slave (shared) instances' })
      .option('params', { type: 'boolean', alias: 'show-params', describe: 'view published parameters' })
      .option('network', { type: 'boolean', alias: 'show-network', describe: 'view network settings' })
      .option('consumption', { type: 'boolean', describe: 'view the consumption reports nodes sent (node report, /useComputer); only with this flag' })
      .option('show-all', { type: 'boolean', hidden: true, describe: 'every section (old slapproxy-query flag)' })
      .option('json', { type: 'boolean', describe: 'print one JSON document instead of tables' }),
  async run(args, ctx) {
    const file = readConfig('node', args.cfg, ctx.env)
    const config = loadProxyConfig(file, { database_uri: args.databaseUri as string | undefined }, [])
    if (!existsSync(config.databaseUri)) {
      throw new ConfigError(`proxy database ${config.databaseUri} does not exist`, 'start the proxy once (slapos proxy start) or fix database_uri')
    }
    const chosen = SECTIONS.filter((s) => args[s] === true)
    const consumption = args.consumption === true
    const sections = (chosen.length || consumption) && args.showAll !== true ? chosen : [...SECTIONS]
    const db = ProxyDb.openReadOnly(config.databaseUri)
    try {
      if (!db.tableNames().includes(`partition${DB_VERSION}`)) {
        throw new ConfigError(`${config.databaseUri} has no schema ${DB_VERSION} tables`, 'start `slapos proxy start` once to create or migrate them')
      }
      if (args.json === true) {
        const out: Record<string, unknown> = { database: config.databaseUri }
        for (const s of sections) out[s] = JSON_SECTIONS[s](db)
        if (consumption) out.consumption = db.listConsumption()
        ctx.io.out(JSON.stringify(out, null, 2) + '\n')
      } else {
        const lines = [`Using database: ${config.databaseUri}`]
        sections.forEach((s, i) => {
          TEXT_SECTIONS[s](db, lines)
          if (i < sections.length - 1) lines.push(' ')
        })
        if (consumption) {
          if (sections.length) lines.push(' ')
          const reports = db.listConsumption()
          lines.push(`consumption reports: ${reports.length}`)
          for (const r of reports) lines.push(`${r.received}  ${r.computerReference}  ${r.xml.length} bytes  ${reportTitle(r.xml)}`)
        }
        ctx.io.out(lines.join('\n') + '\n')
      }
    } finally {
      db.close()
    }
    return EXIT.OK
  },
}
export default proxyShow

// --- internal ---

/** What a consumption report is about: its transaction's title and reference (the day of node collect's). */
function reportTitle(xml: string): string {
  const tag = (t: string) => new RegExp(`<${t}>([^<]*)</${t}>`).exec(xml)?.[1]?.trim() ?? ''
  return [tag('title'), tag('reference')].filter(Boolean).join(', ').replace(/[\x00-\x1f\x7f]/g, '?')
}

const T = (base: string) => `${base}${DB_VERSION}`

function softwareRows(db: ProxyDb): Row[] {
  return db.rawRows(T('software'), 'ORDER BY rowid').map((r) => ({ ...r, md5: createHash('md5').update(String(r.url ?? ''), 'utf8').digest('hex') }))
}

function partitionRows(db: ProxyDb): Row[] {
  return db.rawRows(T('partition'), "WHERE slap_state <> 'free' ORDER BY rowid")
}

function paramsOf(db: ProxyDb): { reference: string; title: unknown; type: unknown; parameters: Record<string, string | null> }[] {
  return db
    .rawRows(T('partition'), 'ORDER BY rowid')
    .filter((r) => typeof r.connection_xml === 'string' && r.connection_xml !== '')
    .map((r) => ({ reference: String(r.reference), title: r.partition_reference, type: r.software_type, parameters: parseInstanceXml(String(r.connection_xml)) }))
}

function networkOf(db: ProxyDb): Map<string, string[]> {
  const free = new Set(db.rawRows(T('partition'), "WHERE slap_state = 'free'").map((r) => String(r.reference)))
  const m = new Map<string, string[]>()
  for (const a of db.rawRows(T('partition_network'), 'ORDER BY rowid')) {
    const p = String(a.partition_reference)
    if (free.has(p)) continue
    const l = m.get(p) ?? []
    l.push(String(a.address))
    m.set(p, l)
  }
  return new Map([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

const TEXT_SECTIONS: Record<Section, (db: ProxyDb, out: string[]) => void> = {
  computers: (db, out) => table(out, T('computer'), db.columns(T('computer')), db.rawRows(T('computer'), 'ORDER BY rowid')),
  software: (db, out) => table(out, T('software'), [...db.columns(T('software')), 'md5'], softwareRows(db)),
  partitions: (db, out) => table(out, T('partition'), db.columns(T('partition')), partitionRows(db), ['xml', 'connection_xml', 'slave_instance_list']),
  slaves: (db, out) => table(out, T('slave'), db.columns(T('slave')), db.rawRows(T('slave'), 'ORDER BY rowid'), ['connection_xml']),
  params: (db, out) => {
    for (const p of paramsOf(db)) {
      out.push(`${p.reference}: ${pyText(p.title)} (type ${pyText(p.type)})`)
      for (const [name, value] of Object.entries(p.parameters)) out.push(`    ${name} = ${showParameter(name, value)}`)
    }
  },
  network: (db, out) => {
    for (const [p, addrs] of networkOf(db)) out.push(`${p}: ${addrs.join(', ')}`)
  },
}

const JSON_SECTIONS: Record<Section, (db: ProxyDb) => unknown> = {
  computers: (db) => db.rawRows(T('computer'), 'ORDER BY rowid'),
  software: softwareRows,
  partitions: (db) => partitionRows(db),
  slaves: (db) => db.rawRows(T('slave'), 'ORDER BY rowid'),
  params: (db) => paramsOf(db).map((p) => ({ ...p, parameters: { ...p.parameters } })),
  network: (db) => Object.fromEntries(networkOf(db)),
}

/** A parameter as the original prints it: ssh keys shortened, a JSON `_` re-indented. */
function showParameter(name: string, value: string | null): string {
  if (value === null) return 'None'
  if (name === 'ssh-key' || name === 'ssh-public-key') return `${value.slice(0, 20)}...${value.slice(-20)}`
  if (name === '_') {
    try {
      return pyJsonPretty(JSON.parse(value))
        .split('\n')
        .map((l) => l.trimEnd())
        .join('\n')
    } catch {
      return value
    }
  }
  return value
}

/** json.dumps(v, indent=2, sort_keys=True) of Python (ASCII escapes, floats as Python writes them). */
function pyJsonPretty(v: unknown, depth = 0): string {
  const pad = '  '.repeat(depth + 1)
  const end = '  '.repeat(depth)
  if (Array.isArray(v)) return v.length ? `[\n${v.map((x) => pad + pyJsonPretty(x, depth + 1)).join(',\n')}\n${end}]` : '[]'
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v).sort()
    return keys.length ? `{\n${keys.map((k) => `${pad}${jsonString(k)}: ${pyJsonPretty((v as Row)[k], depth + 1)}`).join(',\n')}\n${end}}` : '{}'
  }
  if (typeof v === 'string') return jsonString(v)
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : pyFloatRepr(v)
  return JSON.stringify(v)
}

function jsonString(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** str() of a cell as Python prints it (REAL columns as Python floats). */
function pyText(v: unknown): string {
  if (v === null || v === undefined) return 'None'
  if (typeof v === 'number') return Number.isInteger(v) && !String(v).includes('e') ? String(v) : pyFloatRepr(v)
  return String(v)
}

/**
 * A table like prettytable's get_string(border=True, padding_width=0, vrules=NONE): a
 * dashed frame, centred cells, NULL shown as '-'.
 */
function table(out: string[], name: string, columns: string[], rows: Row[], skip: string[] = []): void {
  const cols = columns.filter((c) => !skip.includes(c))
  if (!rows.length) {
    out.push(`table ${name}: empty`)
    return
  }
  out.push(skip.length ? `table ${name}: skipping ${skip.join(', ')}` : `table ${name}`)
  const cells = rows.map((r) => cols.map((c) => (r[c] === null || r[c] === undefined ? '-' : typeof r[c] === 'number' && !Number.isInteger(r[c]) ? pyFloatRepr(r[c]) : String(r[c]))))
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((r) => (r[i] ?? '').length)))
  const rule = '-'.repeat(widths.reduce((a, w) => a + w + 1, 1))
  const line = (vals: string[]) => ' ' + vals.map((v, i) => center(v, widths[i] ?? 0)).join(' ') + ' '
  out.push(rule, line(cols), rule)
  for (const r of cells) out.push(line(r))
  out.push(rule)
}

/** prettytable's centring: the odd space goes right for odd-length text, left otherwise. */
function center(text: string, width: number): string {
  const excess = width - text.length
  if (excess <= 0) return text
  const half = Math.floor(excess / 2)
  if (excess % 2 === 0) return ' '.repeat(half) + text + ' '.repeat(half)
  return text.length % 2 ? ' '.repeat(half) + text + ' '.repeat(half + 1) : ' '.repeat(half + 1) + text + ' '.repeat(half)
}
