// slapos node instance (old names: slapgrid-cp, `slapos grid instance`): deploy, start and
// stop the partitions of this node as the master asks; cron runs it every minute. The work is
// in grid-instance.ts; this file maps options and releases the pid file.
import type { CommandModule } from '../command.ts'
import { UsageError } from '../errors.ts'
import { nodeCommonOptions, startNodeRun } from '../grid-common.ts'
import { loadRunManagers } from '../manager-registry.ts'
import { processPartitions } from '../grid-instance.ts'
import { parseOnlyList } from '../grid-plan.ts'

const nodeInstance: CommandModule = {
  cfg: 'node',
  description:
    'Bring every partition of this node to the state the master asks for: run the instance buildout of changed ' +
    'partitions as their owner, start or stop their services under supervisord, check their promises and report ' +
    'to the master. Unchanged partitions are skipped until maximum_periodicity has elapsed. ' +
    'Exit status: 0 done, 1 a partition failed, 2 only promises failed, 3 master unreachable (services restarted ' +
    'offline), 5 not root, 10 another run holds the pid file.',
  options: (y) =>
    nodeCommonOptions(y)
      .option('force', { type: 'boolean', describe: 'process every partition, even those that did not change' })
      .option('all', { type: 'boolean', hidden: true, describe: 'old name of --force' })
      .option('only-cp', { type: 'string', alias: ['only', 'only_cp'], describe: 'comma-separated partition ids to process; the others are left alone' })
      .option('force-stop', { type: 'boolean', describe: 'run buildout of started partitions but stop their services; no promise, no report, no .timestamp' })
      .option('buildout-debug', { type: 'boolean', describe: 'run buildout with -D (its debugger on failure), output not captured' })
      .option('jobs', { alias: 'j', type: 'string', describe: 'partitions processed at the same time (default 1)' })
      .option('json', { type: 'boolean', describe: 'print the summary of the run as JSON on stdout' })
      .conflicts('all', 'only-cp'),
  async run(args, ctx) {
    const jobsText = args.jobs === undefined ? '1' : String(args.jobs)
    if (!/^\d+$/.test(jobsText) || Number(jobsText) < 1) throw new UsageError(`argument --jobs: invalid value: '${jobsText}'`, 'give a number of partitions, 1 or more')
    const onlyText = args.onlyCp as string | undefined
    const run = await startNodeRun('instance', args, ctx)
    await loadRunManagers(run, ctx.runner)
    try {
      return await processPartitions(
        run,
        {
          force: args.force === true || args.all === true,
          forceStop: args.forceStop === true,
          only: parseOnlyList(onlyText),
          buildoutDebug: args.buildoutDebug === true,
          jobs: Number(jobsText),
          json: args.json === true,
          quiet: args.global.verbosity <= 0,
        },
        ctx,
      )
    } finally {
      run.release()
    }
  },
}
export default nodeInstance
