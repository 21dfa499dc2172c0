// slapos node watchdog (old name slapos-watchdog): the event listener supervisord runs for
// the node. It reads events on stdin and answers on stdout; logs go to stderr, which
// supervisord keeps in var/log. The work is in watchdog.ts.
import type { CommandModule } from '../command.ts'
import { EXIT } from '../exit-codes.ts'
import { runWatchdog } from '../watchdog.ts'

const nodeWatchdog: CommandModule = {
  description:
    'supervisord event listener: when a watched service of a partition (etc/service) exits or cannot start, ' +
    'bang that partition on the master so it is re-deployed, at most once per successful deployment. ' +
    'Started by supervisord from the [eventlistener:watchdog] entry that node instance writes; not meant to be run by hand.',
  options: (y) =>
    y
      .option('master-url', { type: 'string', demandOption: true, describe: 'URL of the SlapOS master' })
      .option('computer-id', { type: 'string', demandOption: true, describe: 'id of this computer on the master' })
      .option('certificate-repository-path', { type: 'string', describe: 'directory of the partition certificates (<partition>.crt, .key)' })
      .option('instance-root-path', { alias: 'instance-root', type: 'string', describe: 'instance root, to bang at most once per deployment' }),
  async run(args, ctx) {
    await runWatchdog(
      {
        masterUrl: args.masterUrl as string,
        computerId: args.computerId as string,
        certificateRepositoryPath: (args.certificateRepositoryPath as string | undefined) || undefined,
        instanceRoot: (args.instanceRootPath as string | undefined) || undefined,
      },
      { input: process.stdin, write: (s) => ctx.io.out(s), log: ctx.log },
    )
    return EXIT.OK
  },
}
export default nodeWatchdog
