// What the `slapos cachelookup` commands share (cli.md §9.3): the [networkcache] keys they
// read, the dashed table they print, and the look-up of a source entry for `cachelookup url`
// and `cachelookup pypi`. The shadir request and the signature check are networkcache.ts.
import type { X509Certificate } from 'node:crypto'
import type { ConfigFile } from './config.ts'
import { splitCertificates } from './config.ts'
import type { Io } from './context.ts'
import { ConfigError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import type { Logger } from './log.ts'
import { fetchDirectory, HttpError, listEntries, loadCertificates } from './networkcache.ts'

export interface LookupKeys {
  /** the directory (shadir) URL as configured */
  dirUrl: string
  certificates: X509Certificate[]
}

/**
 * `<prefix>-dir-url`, `<prefix>-cache-url` and `signature-certificate-list` of [networkcache]:
 * all three must be present, as the original reads them with `configp.get` (the cache URL is
 * not used by a look-up, but a missing one is an error there too).
 */
export function lookupKeys(file: ConfigFile, prefix: 'download' | 'download-binary', log: Logger): LookupKeys {
  const need = (key: string) => {
    const v = file.get('networkcache', key)
    if (v === undefined) throw new ConfigError(`${file.path}: [networkcache] ${key} is missing`, `set ${key} in the [networkcache] section`)
    return v
  }
  const dirUrl = need(`${prefix}-dir-url`).trim()
  need(`${prefix}-cache-url`)
  return { dirUrl, certificates: loadCertificates(splitCertificates(need('signature-certificate-list')), log) }
}

/** A prettytable with a frame of dashes, no vertical rules, no padding, centred cells. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const rule = '-' + widths.map((w) => '-'.repeat(w) + '-').join('')
  const line = (cells: string[]) => ' ' + widths.map((w, i) => centre(cells[i] ?? '', w) + ' ').join('')
  return [rule, line(header), rule, ...rows.map(line), rule]
}

export interface SourceLookup extends LookupKeys {
  /** the shadir key: `file-urlmd5:<md5>` or `pypi:<name>=<version>` */
  key: string
  /** the entry field shown in the first column: `url` or `basename` */
  field: string
  /** lines logged above the table */
  heading: string[]
  /** what the CRITICAL line says was looked up: `object <url>`, `egg <name> version <version>` */
  what: string
  log: Logger
  io: Io
}

/**
 * `cachelookup url` and `pypi` (slapos.core cli/cache_url.py, cache_pypi.py): every entry under
 * the key, trusted or not, as a `<field> | sha512 | signed` table on stdout (the headings stay
 * on the log). Returns the exit status: 0 found (or the key has no entry), 1 not found, the
 * cache failed or an entry cannot be read.
 */
export async function lookupSource(job: SourceLookup): Promise<number> {
  const { log } = job
  let rows: string[][]
  try {
    const entries = listEntries(await fetchDirectory(job.dirUrl, job.key), job.certificates)
    if (entries.length === 0) {
      log.info('Object found in cache, but has no entry.')
      return EXIT.OK
    }
    rows = entries.map((e, i) => {
      const entry = JSON.parse(e.text) as unknown
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new Error(`entry ${i} is not a JSON object`)
      const fields = entry as Record<string, unknown>
      for (const name of [job.field, 'sha512']) if (!(name in fields)) throw new Error(`entry ${i} has no ${name}`)
      return [pythonStr(fields[job.field]), pythonStr(fields.sha512), e.verified ? 'True' : 'False']
    })
  } catch (e) {
    if (e instanceof HttpError) {
      // like the original, any other HTTP status is reported as a connection problem
      log.info(e.status === 404 ? 'Object not found in cache.' : `Problem to connect to shacache. (${e.message})`)
    } else {
      log.critical(`Error while looking ${job.what}: ${e instanceof Error ? e.message : String(e)}`)
    }
    return EXIT.FAIL
  }
  for (const line of job.heading) log.info(line)
  // the original logs this line with a trailing newline: an empty line follows it
  log.info(`SHADIR URL: ${job.dirUrl}/${job.key}\n`)
  job.io.out(table([job.field, 'sha512', 'signed'], rows).join('\n') + '\n')
  return EXIT.OK
}

// --- internal ---

function centre(text: string, width: number): string {
  const excess = width - text.length
  if (excess % 2 === 0) return ' '.repeat(excess / 2) + text + ' '.repeat(excess / 2)
  const half = Math.floor(excess / 2)
  return text.length % 2 ? ' '.repeat(half) + text + ' '.repeat(half + 1) : ' '.repeat(half + 1) + text + ' '.repeat(half)
}

/** How Python's str() shows a JSON value in a table cell. */
function pythonStr(v: unknown): string {
  if (typeof v === 'string') return v
  if (v === null || v === undefined) return 'None'
  if (typeof v === 'boolean') return v ? 'True' : 'False'
  return JSON.stringify(v)
}
