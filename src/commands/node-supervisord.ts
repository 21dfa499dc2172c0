// slapos node supervisord [-n] (old name slapgrid-supervisord): write the node's
// etc/supervisord.conf and start supervisord if it is not running. No root check, like
// the original. The work is in supervisor.ts.
import type { CommandModule } from '../command.ts'
import { readConfig } from '../command.ts'
import { EXIT } from '../exit-codes.ts'
import { prepareSupervisordFromConfig, Supervisor } from '../supervisor.ts'

const nodeSupervisord: CommandModule = {
  cfg: 'node',
  description:
    "Write <instance_root>/etc/supervisord.conf and start the node's supervisord if it is not already running. " +
    'With -n it runs in the foreground until it stops.',
  options: (y) => y.option('nodaemon', { alias: 'n', type: 'boolean', describe: 'run supervisord in the foreground' }),
  async run(args, ctx) {
    const file = readConfig('node', args.cfg, ctx.env)
    const paths = prepareSupervisordFromConfig(file)
    await new Supervisor(paths, ctx.log, ctx.runner).launch({ nodaemon: args.nodaemon === true })
    return EXIT.OK
  },
}
export default nodeSupervisord
