// slapos node bang -m MESSAGE (old name bang): computer-level bang. The work is in bang.ts.
import type { CommandModule } from '../command.ts'
import { readConfig } from '../command.ts'
import { bangComputer, bangConfig } from '../bang.ts'
import { NotRootError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'

const nodeBang: CommandModule = {
  cfg: 'node',
  description:
    'Tell the master that something happened to this whole node (e.g. a reboot): it bangs every instance hosted here, ' +
    'so the next `slapos node instance` re-processes them. Uses the node certificate (key_file, cert_file).',
  options: (y) => y.option('message', { alias: 'm', type: 'string', demandOption: true, describe: 'message sent with the bang' }),
  async run(args, ctx) {
    const file = readConfig('node', args.cfg, ctx.env)
    if (file.bool('slapos', 'root_check', true) && process.getuid?.() !== 0) throw new NotRootError()
    await bangComputer(bangConfig(file), String(args.message), ctx.log)
    return EXIT.OK
  },
}
export default nodeBang
