// slapos node instance (old names: slapgrid-cp, `slapos grid instance`): deploy, start and
// stop the partitions of this node as the master asks; cron runs it every minute. The work is
// in grid-instance.ts; this file maps options and releases the pid file.
import type { CommandModule } from '../command.ts'
import { UsageError } from '../errors.ts'
import { nodeCommonOptions, startNodeRun } from '../grid-common.ts'
import { loadRunManagers } from '../manager-registry.ts'
import { convergePartitions, DEFAULT_MAX_PASSES } from '../grid-converge.ts'
import { planPartitions, processPartitions } from '../grid-instance.ts'
import { parseOnlyList } from '../grid-plan.ts'

const nodeInstance: CommandModule = {
  cfg: 'node',
  description:
    'Bring every partition of this node to the state the master asks for: run the instance buildout of changed ' +
    'partitions as their owner, start or stop their services under supervisord, check their promises and report ' +
    'to the master. Unchanged partitions are skipped until maximum_periodicity has elapsed. ' +
    'With --dry-run, prints what a run would do to each partition and why, changing nothing. ' +
    'With --converge, runs again while the master\'s answer changes (an instance requested, new connection parameters ' +
    'to read), so that an instance tree is deployed in one call; exit 1 also when it has not settled after --max-passes. ' +
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
      .option('dry-run', {
        alias: 'n',
        type: 'boolean',
        describe: 'print what a run would do to each partition and why (deploy, start, stop, destroy, nothing...), change nothing: only reads, no pid file',
      })
      .option('converge', {
        type: 'boolean',
        describe:
          'run again while the master\'s answer changes, until the instance trees settle, a partition fails or --max-passes; ' +
          'failing promises do not stop it while the answer changes (exit 2 if they still fail once settled)',
      })
      .option('max-passes', { type: 'string', describe: `with --converge, runs at most (default ${DEFAULT_MAX_PASSES}); exit 1 when the trees have not settled by then` })
      .conflicts('all', 'only-cp')
      .conflicts('converge', 'only-cp')
      .conflicts('converge', 'force-stop')
      .conflicts('converge', 'dry-run'),
  async run(args, ctx) {
    const jobsText = args.jobs === undefined ? '1' : String(args.jobs)
    if (!/^\d+$/.test(jobsText) || Number(jobsText) < 1) throw new UsageError(`argument --jobs: invalid value: '${jobsText}'`, 'give a number of partitions, 1 or more')
    const onlyText = args.onlyCp as string | undefined
    const maxPasses = maxPassesOf(args.maxPasses, args.converge === true)
    if (args.dryRun === true) {
      const run = await startNodeRun('instance', args, ctx, { dryRun: true })
      const options = { force: args.force === true || args.all === true, forceStop: args.forceStop === true, only: parseOnlyList(onlyText), buildoutDebug: false, jobs: 1, json: args.json === true }
      return planPartitions(run, options, ctx)
    }
    const run = await startNodeRun('instance', args, ctx)
    await loadRunManagers(run, ctx.runner)
    try {
      const options = {
        force: args.force === true || args.all === true,
        forceStop: args.forceStop === true,
        only: parseOnlyList(onlyText),
        buildoutDebug: args.buildoutDebug === true,
        jobs: Number(jobsText),
        json: args.json === true,
        quiet: args.global.verbosity <= 0,
      }
      return await (maxPasses === undefined ? processPartitions(run, options, ctx) : convergePartitions(run, options, maxPasses, ctx))
    } finally {
      run.release()
    }
  },
}
export default nodeInstance

/**
 * --max-passes, checked before anything runs: undefined without --converge. --converge is
 * refused beside --only-cp (the instances a tree requests get partitions nobody can name
 * beforehand) and --force-stop (which records nothing, so no run would ever find the tree settled).
 */
function maxPassesOf(value: unknown, converge: boolean): number | undefined {
  if (!converge) {
    if (value !== undefined) throw new UsageError('argument --max-passes: only with --converge', 'add --converge, or leave --max-passes out')
    return undefined
  }
  const text = value === undefined ? String(DEFAULT_MAX_PASSES) : String(value)
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`argument --max-passes: invalid value: '${text}'`, 'give a number of runs, 1 or more')
  return Number(text)
}
