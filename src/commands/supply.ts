// slapos supply: ask the master to install a software release on a node (client-cli.md §3).
import { readConfig, type CommandModule } from '../command.ts'
import { Connection, legacyConfigWord } from '../client.ts'
import { loadClientConfig } from '../config.ts'
import { UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'

const supply: CommandModule = {
  cfg: 'client',
  usage: '<software-url> <node>',
  description: 'Ask the master to install SOFTWARE_URL on the node (computer) NODE.',
  // positionals are checked in run; unknown options are still refused
  options: (y) => y.strict(false).strictOptions().option('json', { type: 'boolean', describe: 'print the result as JSON on stdout' }),
  async run(args, ctx) {
    const { words, cfg } = legacyConfigWord(args._.map(String), 2, args.cfg)
    if (words.length !== 2) throw new UsageError('slapos supply: error: expected SOFTWARE_URL and NODE', 'example: slapos supply https://example.com/software.cfg COMP-1234')
    const [softwareText, node] = words as [string, string]
    const conn = new Connection(loadClientConfig(readConfig('client', cfg, ctx.env)), ctx.log)
    ctx.log.info(`Requesting software installation of ${softwareText}...`)
    const url = await conn.softwareUrl(softwareText)
    await conn.supply(url, node, 'available')
    ctx.log.info('Done.')
    if (args.json === true) ctx.io.out(JSON.stringify({ 'software-url': url, node, state: 'available' }, null, 2) + '\n')
    return EXIT.OK
  },
}
export default supply
