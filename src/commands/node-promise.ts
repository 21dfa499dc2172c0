// slapos node promise: check the promises of the started partitions without deploying
// anything or telling the master. The work is in grid-promise.ts; this file maps options and
// holds the instance pid file (a promise check never runs beside node instance).
import type { CommandModule } from '../command.ts'
import { nodeCommonOptions, startNodeRun } from '../grid-common.ts'
import { loadRunManagers } from '../manager-registry.ts'
import { parseOnlyList } from '../grid-plan.ts'
import { checkPromises, promiseJson, promiseTable } from '../grid-promise.ts'

const nodePromise: CommandModule = {
  cfg: 'node',
  description:
    'Run the promises (plugins etc/plugin/*.py with the release\'s runner, and executables etc/promise/*) of every ' +
    'started partition, as node instance does after deploying, and nothing else: no buildout, no supervisord, nothing ' +
    'sent to the master. Stopped and destroyed partitions are ignored. Prints one line per promise (partition, promise, ' +
    'result, duration, message), or --json. Exit status: 0 all promises pass, 2 a promise failed, 1 the master could not be reached or an ' +
    '--only-cp id is unknown, 5 not root, 10 node instance is running.',
  options: (y) =>
    nodeCommonOptions(y)
      .option('only-cp', { type: 'string', alias: ['only', 'only_cp'], describe: 'comma-separated partition ids to check; the others are left alone' })
      .option('json', { type: 'boolean', describe: 'print the results as JSON on stdout' }),
  async run(args, ctx) {
    const run = await startNodeRun('promise', args, ctx)
    await loadRunManagers(run, ctx.runner)
    const started = Date.now()
    try {
      const { exitCode, checks } = await checkPromises(run, parseOnlyList(args.onlyCp as string | undefined), ctx)
      ctx.io.out(args.json === true ? JSON.stringify(promiseJson(exitCode, Date.now() - started, checks), null, 2) + '\n' : promiseTable(checks))
      return exitCode
    } finally {
      run.release()
    }
  },
}
export default nodePromise
