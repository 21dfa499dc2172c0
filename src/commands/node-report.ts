// slapos node report (old name slapgrid-ur): run the partitions' usage report scripts, send
// the usage to the master, then destroy the partitions it marked destroyed. The work is in
// grid-report.ts; this file maps the options and the pid file.
import type { CommandModule } from '../command.ts'
import { nodeCommonOptions, startNodeRun } from '../grid-common.ts'
import { loadRunManagers } from '../manager-registry.ts'
import { reportAndDestroy } from '../grid-report.ts'

const nodeReport: CommandModule = {
  cfg: 'node',
  description:
    'Run the usage report scripts of every partition (etc/report/*), send the usage to the master, then destroy ' +
    'the partitions the master marked destroyed: stop their services, run sbin/destroy as the partition user, ' +
    'delete their certificates and empty their directory (kept, mode 0750), then tell the master it may reuse them. ' +
    'A partition under a retention lock is kept until its date. Exit status: 0 done, 1 a report script or a ' +
    'destruction failed or the master could not be reached, 5 not root, 10 another report is running.',
  options: (y) => nodeCommonOptions(y),
  async run(args, ctx) {
    const run = await startNodeRun('report', args, ctx)
    await loadRunManagers(run, ctx.runner)
    try {
      const { exitCode } = await reportAndDestroy(run, ctx)
      return exitCode
    } finally {
      run.release()
    }
  },
}
export default nodeReport
