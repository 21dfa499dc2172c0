// slapos cachelookup binary-sr: which builds of a software release the binary cache holds, for
// which multiarch and distribution, whether this machine could use them and whether their
// signature is trusted (cli.md §9.3). The shadir look-up and the checks are networkcache.ts.
import { createHash } from 'node:crypto'
import { readConfig, type CommandModule } from '../cli.ts'
import { splitCertificates } from '../config.ts'
import { ConfigError, UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'
import { fetchDirectory, HttpError, isCompatible, loadCertificates, machineInfo, readEntry, verifySignature } from '../networkcache.ts'

const cachelookupBinarySr: CommandModule = {
  cfg: 'node',
  usage: '<software_url>',
  description:
    'Perform a query to the networkcache. You can provide either a complete URL to the software release, ' +
    'or a corresponding MD5 hash value. The command reports which OS distribution/version have a binary cache ' +
    'of the software release, and which ones are compatible with the OS you are currently running. ' +
    'Uses [networkcache] download-binary-dir-url, download-binary-cache-url and signature-certificate-list. ' +
    'Exit status: 0 found (or no binary entry), 1 not found or error.',
  options: (y) => y.strict(false).strictOptions(),
  async run(args, ctx) {
    const words = args._.map(String)
    if (words.length !== 1) throw new UsageError('slapos cachelookup binary-sr: error: expected one SOFTWARE_URL (or its MD5 hash)')
    const software = words[0] ?? ''
    const file = readConfig('node', args.cfg, ctx.env)
    const need = (key: string) => {
      const v = file.get('networkcache', key)
      if (v === undefined) throw new ConfigError(`${file.path}: [networkcache] ${key} is missing`, `set ${key} in the [networkcache] section`)
      return v
    }
    const dirUrl = need('download-binary-dir-url').trim()
    need('download-binary-cache-url')
    const certificates = loadCertificates(splitCertificates(need('signature-certificate-list')), ctx.log)
    const md5 = /^[0-9a-f]{32}/.test(software) ? software : createHash('md5').update(software, 'utf8').digest('hex')
    const log = ctx.log
    let answer: unknown
    try {
      answer = await fetchDirectory(dirUrl, md5)
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) {
        log.info(`Software release not found in binary cache: ${software}`)
      } else {
        log.critical(`Problem occurred while connecting to shacache: ${e instanceof Error ? e.message : String(e)}`)
      }
      return EXIT.FAIL
    }
    if (!Array.isArray(answer) || !answer.every((x) => Array.isArray(x) && typeof x[0] === 'string')) {
      log.critical(`Error while looking object ${software}: the directory answer is not a list of [entry, signature]`)
      return EXIT.FAIL
    }
    const pairs = answer as Array<[string, unknown]>
    if (pairs.length === 0) {
      log.info('Object found in cache, but has no binary entries.')
      return EXIT.OK
    }
    const machine = await machineInfo(ctx.runner, ctx.env)
    const rows: string[][] = []
    for (const [text, signature] of pairs) {
      let entry
      try {
        entry = readEntry(text)
      } catch (e) {
        log.critical(`Error while looking object ${software}: ${e instanceof Error ? e.message : String(e)}`)
        return EXIT.FAIL
      }
      const os = Array.isArray(entry.os) ? entry.os.map(String) : [String(entry.os)]
      const verified = verifySignature(text, typeof signature === 'string' ? signature : '', certificates)
      rows.push([entry.multiarch, ...os, isCompatible(machine, entry) ? 'yes' : 'no', verified ? 'yes' : 'no'])
    }
    rows.sort((a, b) => compareRows(a, b))
    const first = JSON.parse(pairs[0]?.[0] ?? '{}') as Record<string, unknown>
    log.info(`Software URL: ${String(first.software_url)}`)
    log.info(`MD5:          ${md5}`)
    for (const line of table(['multiarch', 'distribution', 'version', 'id', 'compatible?', 'verified?'], rows)) log.info(line)
    return EXIT.OK
  },
}
export default cachelookupBinarySr

/** The original's sort of (multiarch, os, verified) tuples. */
function compareRows(a: string[], b: string[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (i === a.length - 2) continue // compatible? is not part of the sort key
    const x = a[i] ?? ''
    const y = b[i] ?? ''
    if (x !== y) return x < y ? -1 : 1
  }
  return 0
}

/** A prettytable with a frame of dashes, no vertical rules, no padding, centred cells. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const rule = '-' + widths.map((w) => '-'.repeat(w) + '-').join('')
  const line = (cells: string[]) => ' ' + widths.map((w, i) => centre(cells[i] ?? '', w) + ' ').join('')
  return [rule, line(header), rule, ...rows.map(line), rule]
}

function centre(text: string, width: number): string {
  const excess = width - text.length
  if (excess % 2 === 0) return ' '.repeat(excess / 2) + text + ' '.repeat(excess / 2)
  const half = Math.floor(excess / 2)
  return text.length % 2 ? ' '.repeat(half) + text + ' '.repeat(half + 1) : ' '.repeat(half + 1) + text + ' '.repeat(half)
}
