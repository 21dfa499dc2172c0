// slapos computer token: a token to register a node with (`slapos node register --token`),
// from the master's HATEOAS API with the person's certificate (node-extras.md §5.2).
import { readConfig, type CommandModule } from '../command.ts'
import { Connection } from '../client.ts'
import { loadClientConfig } from '../config.ts'
import { ResourceNotReadyError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'

const computerToken: CommandModule = {
  cfg: 'client',
  description:
    'Ask the master for a computer token and print it (`Computer token: <token>`), for `slapos node register NAME --token TOKEN`. ' +
    'Needs the HATEOAS API ([slapos] master_rest_url). A local proxy has no tokens. ' +
    'Exit status: 0 printed, 1 error, 2 the master is not ready yet.',
  async run(args, ctx) {
    const conn = new Connection(loadClientConfig(readConfig('client', args.cfg, ctx.env)), ctx.log)
    try {
      const token = await (await conn.hateoas()).computerToken()
      ctx.io.out(`Computer token: ${token}\n`)
      return EXIT.OK
    } catch (e) {
      if (!(e instanceof ResourceNotReadyError)) throw e
      ctx.log.warning('Computer does not exist or is not ready yet.')
      return EXIT.NOT_READY
    }
  },
}
export default computerToken
