// slapos cachelookup url: whether the network cache holds a source file downloaded from URL
// (shadir key `file-urlmd5:<md5 of the URL>`), with its sha512 and whether a trusted certificate
// signed it (cli.md §9.3). The look-up is cachelookup.ts.
import { createHash } from 'node:crypto'
import { lookupKeys, lookupSource } from '../cachelookup.ts'
import { readConfig, type CommandModule } from '../command.ts'
import { UsageError } from '../errors.ts'

const cachelookupUrl: CommandModule = {
  cfg: 'node',
  usage: '<url>',
  description:
    'Perform a query to the networkcache: check if a source URL is available to be downloaded from the cache. ' +
    'Prints a table of its entries (url, sha512, signed) on stdout. ' +
    'Uses [networkcache] download-dir-url, download-cache-url and signature-certificate-list. ' +
    'Exit status: 0 found (or an entry list that is empty), 1 not found or error.',
  // positionals stay text: a version 1.10 or an all-digit md5 is not a number
  options: (y) => y.strict(false).strictOptions().parserConfiguration({ 'parse-positional-numbers': false }),
  async run(args, ctx) {
    const words = args._.map(String)
    if (words.length === 0) throw new UsageError('slapos cachelookup url: error: the following arguments are required: url')
    if (words.length > 1) throw new UsageError(`slapos cachelookup url: error: unrecognized arguments: ${words.slice(1).join(' ')}`)
    const url = words[0] ?? ''
    const keys = lookupKeys(readConfig('node', args.cfg, ctx.env), 'download', ctx.log)
    return lookupSource({
      ...keys,
      key: `file-urlmd5:${createHash('md5').update(url, 'utf8').digest('hex')}`,
      field: 'url',
      heading: [`Software source URL: ${url}`],
      what: `object ${url}`,
      log: ctx.log,
      io: ctx.io,
    })
  },
}
export default cachelookupUrl
