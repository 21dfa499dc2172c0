// slapos help [command words]: the help of one command, or the global help.
import type { CommandModule } from '../command.ts'
import { EXIT } from '../exit-codes.ts'

const help: CommandModule = {
  usage: '[command words...]',
  passThrough: true,
  async run(args, ctx) {
    if (!args.helpText) throw new Error('help: run by a frame that gives no help text')
    ctx.io.out(await args.helpText(args._.map(String)))
    return EXIT.OK
  },
}
export default help
