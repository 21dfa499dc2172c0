// slapos cachelookup pypi: whether the network cache holds a Python package NAME at VERSION
// (shadir key `pypi:<name>=<version>`), with each file's sha512 and whether a trusted
// certificate signed it (cli.md §9.3). The look-up is cachelookup.ts.
import { lookupKeys, lookupSource } from '../cachelookup.ts'
import { readConfig, type CommandModule } from '../command.ts'
import { UsageError } from '../errors.ts'

const cachelookupPypi: CommandModule = {
  cfg: 'node',
  usage: '<name> <version>',
  description:
    'Perform a query to the networkcache: check if a Python package is available to be downloaded from the cache. ' +
    'Prints a table of its entries (basename, sha512, signed) on stdout. ' +
    'Uses [networkcache] download-dir-url, download-cache-url and signature-certificate-list. ' +
    'Exit status: 0 found (or an entry list that is empty), 1 not found or error.',
  // positionals stay text: a version 1.10 or an all-digit md5 is not a number
  options: (y) => y.strict(false).strictOptions().parserConfiguration({ 'parse-positional-numbers': false }),
  async run(args, ctx) {
    const words = args._.map(String)
    if (words.length < 2) throw new UsageError(`slapos cachelookup pypi: error: the following arguments are required: ${['name', 'version'].slice(words.length).join(', ')}`)
    if (words.length > 2) throw new UsageError(`slapos cachelookup pypi: error: unrecognized arguments: ${words.slice(2).join(' ')}`)
    const [name = '', version = ''] = words
    const keys = lookupKeys(readConfig('node', args.cfg, ctx.env), 'download', ctx.log)
    return lookupSource({
      ...keys,
      key: `pypi:${name}=${version}`,
      field: 'basename',
      heading: [`Python egg ${name} version ${version}`],
      what: `egg ${name} version ${version}`,
      log: ctx.log,
      io: ctx.io,
    })
  },
}
export default cachelookupPypi
