// slapos remove: ask the master to remove a software release from a node (client-cli.md §3).
import { readConfig, type CommandModule } from '../command.ts'
import { Connection, legacyConfigWord } from '../client.ts'
import { loadClientConfig } from '../config.ts'
import { UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'

const remove: CommandModule = {
  cfg: 'client',
  usage: '<software-url> <node>',
  description: 'Ask the master to remove SOFTWARE_URL from the node (computer) NODE.',
  // positionals are checked in run; unknown options are still refused
  options: (y) => y.strict(false).strictOptions().option('json', { type: 'boolean', describe: 'print the result as JSON on stdout' }),
  async run(args, ctx) {
    const { words, cfg } = legacyConfigWord(args._.map(String), 2, args.cfg)
    if (words.length !== 2) throw new UsageError('slapos remove: error: expected SOFTWARE_URL and NODE', 'example: slapos remove https://example.com/software.cfg COMP-1234')
    const [softwareText, node] = words as [string, string]
    const conn = new Connection(loadClientConfig(readConfig('client', cfg, ctx.env)), ctx.log)
    ctx.log.info(`Requesting deletion of ${softwareText} Software Release...`)
    // like the original, no product. shortcut here (an alias of the configuration is still honoured)
    const url = await conn.softwareUrl(softwareText, { products: false })
    await conn.supply(url, node, 'destroyed')
    ctx.log.info('Done.')
    if (args.json === true) ctx.io.out(JSON.stringify({ 'software-url': url, node, state: 'destroyed' }, null, 2) + '\n')
    return EXIT.OK
  },
}
export default remove
