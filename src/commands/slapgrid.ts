// slapgrid CFG (0.35.1): node software, node instance and node report in one run, in that
// order, after one random delay (node-extras.md §5.1). A step that fails does not stop the
// next; an error that ends a step's run (configuration, pid file) ends the whole run. Exit: 1 if a
// step returned 1, else 2 if one returned 2 (a promise failed), else the first other non-zero, else 0.
import type { CommandModule, RunArgs } from '../command.ts'
import { EXIT } from '../exit-codes.ts'
import { nodeCommonOptions } from '../grid-common.ts'
import nodeInstance from './node-instance.ts'
import nodeReport from './node-report.ts'
import nodeSoftware from './node-software.ts'

const slapgrid: CommandModule = {
  cfg: 'node',
  description:
    'Run node software, node instance and node report in one process, as the 0.35.1 program slapgrid did (cron runs the ' +
    'three commands separately today). The random delay of maximal_delay is waited once; each step takes its own pid file. ' +
    'Options of the three commands are accepted; --all (or --develop) forces software and instance, --only-sr selects ' +
    'software releases, --only-cp partitions. Exit status: 1 if a step failed, else 2 if a promise failed, else 0.',
  usage: '[configuration file]',
  options: (y) =>
    nodeCommonOptions(y)
      .option('all', { type: 'boolean', describe: 'process installed software releases and up-to-date partitions too' })
      .option('develop', { type: 'boolean', hidden: true, describe: 'same as --all (0.35.1 name)' })
      .option('force', { type: 'boolean', hidden: true, describe: 'same as --all' })
      .option('only-sr', { alias: ['only_sr'], type: 'string', describe: 'only these software releases (comma-separated URLs or md5 hashes)' })
      .option('only-cp', { alias: ['only_cp'], type: 'string', describe: 'only these partitions (comma-separated ids)' })
      .option('console', { alias: 'c', type: 'boolean', hidden: true, describe: 'obsolete, ignored' }),
  async run(args, ctx) {
    const force = args.all === true || args.develop === true || args.force === true
    const codes: number[] = []
    const steps: [string, CommandModule, RunArgs][] = [
      ['software', nodeSoftware, { ...args, force, all: undefined, develop: undefined, onlyCp: undefined }],
      ['instance', nodeInstance, { ...args, now: true, force, all: undefined, develop: undefined, onlySr: undefined }],
      ['report', nodeReport, { ...args, now: true }],
    ]
    for (const [name, mod, stepArgs] of steps) {
      ctx.log.debug(`slapgrid: node ${name}`)
      codes.push(await mod.run(stepArgs, ctx))
    }
    if (codes.includes(EXIT.FAIL)) return EXIT.FAIL
    if (codes.includes(2)) return 2
    return codes.find((c) => c !== EXIT.OK) ?? EXIT.OK
  },
}
export default slapgrid
