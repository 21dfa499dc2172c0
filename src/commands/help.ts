// slapos help [command words]: the help of one command, or the global help.
import { commandHelp, globalHelp, lookup, type CommandModule } from '../cli.ts'
import { EXIT } from '../exit-codes.ts'

const help: CommandModule = {
  usage: '[command words...]',
  passThrough: true,
  async run(args, ctx) {
    const words = args._.map(String)
    if (words.length === 0) {
      ctx.io.out(globalHelp())
      return EXIT.OK
    }
    ctx.io.out(await commandHelp(lookup(words).spec))
    return EXIT.OK
  },
}
export default help
