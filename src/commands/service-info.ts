// slapos service info: software, state and parameters of one instance tree (client-cli.md §4.2).
import { readConfig, type CommandModule } from '../command.ts'
import { Connection, serviceInformation } from '../client.ts'
import { loadClientConfig } from '../config.ts'
import { ResourceNotReadyError, UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'

const serviceInfo: CommandModule = {
  cfg: 'client',
  usage: '<reference>',
  description: 'Print as JSON the software release, type, state, parameters and connection parameters of the service REFERENCE.\nExit 2 when it does not exist.',
  // positionals are checked in run; unknown options are still refused
  options: (y) =>
    y
      .strict(false)
      .strictOptions()
      .option('news', { type: 'boolean', describe: 'also print the news (status history) of the instance' })
      .option('json', { type: 'boolean', describe: 'accepted for symmetry: the output is always JSON' }),
  async run(args, ctx) {
    const words = args._.map(String)
    if (words.length !== 1) throw new UsageError('slapos service info: error: expected REFERENCE', 'example: slapos service info my-instance')
    const reference = words[0]!
    const conn = new Connection(loadClientConfig(readConfig('client', args.cfg, ctx.env)), ctx.log)
    let info: Record<string, unknown> | undefined
    try {
      info = await serviceInformation(conn, reference, args.news === true)
    } catch (e) {
      if (!(e instanceof ResourceNotReadyError)) throw e
      ctx.log.warning('Instance does not exist or is not ready yet.')
      return EXIT.NOT_READY
    }
    if (!info) {
      ctx.log.warning(`Instance ${reference} does not exist.`)
      return EXIT.NOT_READY
    }
    ctx.io.out(JSON.stringify(info, null, 2) + '\n')
    return EXIT.OK
  },
}
export default serviceInfo
