// slapos cachelookup binary-sr: which builds of a software release the binary cache holds, for
// which multiarch and distribution, whether this machine could use them and whether their
// signature is trusted (cli.md §9.3). The shadir look-up and the checks are networkcache.ts.
import { createHash } from 'node:crypto'
import { lookupKeys, table } from '../cachelookup.ts'
import { readConfig, type CommandModule } from '../command.ts'
import { UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'
import { fetchDirectory, HttpError, isCompatible, listEntries, machineInfo, readEntry, type ListedEntry } from '../networkcache.ts'

const cachelookupBinarySr: CommandModule = {
  cfg: 'node',
  usage: '[configuration file] <software_url>',
  description:
    'Perform a query to the networkcache. You can provide either a complete URL to the software release, ' +
    'or a corresponding MD5 hash value. The command reports which OS distribution/version have a binary cache ' +
    'of the software release, and which ones are compatible with the OS you are currently running. ' +
    'Uses [networkcache] download-binary-dir-url, download-binary-cache-url and signature-certificate-list. ' +
    'Exit status: 0 found (or no binary entry), 1 not found or error.',
  // positionals stay text: a version 1.10 or an all-digit md5 is not a number
  options: (y) => y.strict(false).strictOptions().parserConfiguration({ 'parse-positional-numbers': false }),
  async run(args, ctx) {
    let words = args._.map(String)
    let cfg = args.cfg
    // the 0.35.1 `slapos cache-lookup [CFG] URL_OR_MD5`
    if (words.length === 2 && cfg === undefined) {
      cfg = words[0]
      words = words.slice(1)
    }
    if (words.length !== 1) throw new UsageError('slapos cachelookup binary-sr: error: expected one SOFTWARE_URL (or its MD5 hash)')
    const software = words[0] ?? ''
    const { dirUrl, certificates } = lookupKeys(readConfig('node', cfg, ctx.env), 'download-binary', ctx.log)
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
    let entries: ListedEntry[]
    try {
      entries = listEntries(answer, certificates)
    } catch (e) {
      log.critical(`Error while looking object ${software}: ${e instanceof Error ? e.message : String(e)}`)
      return EXIT.FAIL
    }
    if (entries.length === 0) {
      log.info('Object found in cache, but has no binary entries.')
      return EXIT.OK
    }
    const machine = await machineInfo(ctx.runner, ctx.env)
    const rows: string[][] = []
    for (const { text, verified } of entries) {
      let entry
      try {
        entry = readEntry(text)
      } catch (e) {
        log.critical(`Error while looking object ${software}: ${e instanceof Error ? e.message : String(e)}`)
        return EXIT.FAIL
      }
      const os = Array.isArray(entry.os) ? entry.os.map(String) : [String(entry.os)]
      rows.push([entry.multiarch, ...os, isCompatible(machine, entry) ? 'yes' : 'no', verified ? 'yes' : 'no'])
    }
    rows.sort((a, b) => compareRows(a, b))
    const first = JSON.parse(entries[0]?.text ?? '{}') as Record<string, unknown>
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
