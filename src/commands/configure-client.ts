// slapos configure client: set up ~/.slapos/slapos-client.cfg (or --cfg) for an existing
// account, from a token (spec cli.md §13.1). The work is in configure-client.ts.
import type { CommandModule } from '../command.ts'
import { configPath } from '../config.ts'
import { configureClient } from '../configure-client.ts'
import { terminalPrompt } from '../register.ts'

const configureClientCommand: CommandModule = {
  cfg: 'client',
  description:
    'configure slapos client with an existing account\n\n' +
    'Fetches the certificate and key of your account from the SlapOS Master web site with a ' +
    'token, and writes the client configuration (--cfg), client.crt and client.key in its ' +
    'directory, readable by you only. Existing files are never replaced.',
  options: (y) =>
    y
      .option('master-url', { type: 'string', default: 'https://slap.vifib.com', describe: 'URL of the SlapOS Master API, written as master_url' })
      .option('master-url-web', { type: 'string', default: 'https://panel.rapid.space', describe: 'URL of the SlapOS Master web site that delivers certificates' })
      .option('token', { type: 'string', describe: "Your account's credential security token (prompted when omitted)" }),
  async run(args, ctx) {
    return configureClient(
      {
        cfgPath: configPath('client', args.cfg as string | undefined, ctx.env),
        masterUrl: args.masterUrl as string,
        masterUrlWeb: args.masterUrlWeb as string,
        token: args.token as string | undefined,
      },
      ctx,
      terminalPrompt(),
    )
  },
}
export default configureClientCommand
