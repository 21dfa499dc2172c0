// slapos console (old name slapconsole): a console with the slap API of the client
// configuration, or a script run with it (cli.md §12). The work is in client-console.ts.
import { readConfig, type CommandModule } from '../command.ts'
import { Connection } from '../client.ts'
import { consoleNamespace, runRepl, runScript } from '../client-console.ts'
import { loadClientConfig } from '../config.ts'
import { UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'

const consoleCommand: CommandModule = {
  cfg: 'client',
  usage: '[script [args...]]',
  description:
    'Open a JavaScript console with `slap`, `request()`, `supply()`, `getInformation()` and `product` connected to the master of the configuration,\n' +
    'or run SCRIPT (a JavaScript file) with the same globals, `argv` = [SCRIPT, ARGS...] and `__file__`.',
  // the script's own options must reach it untouched
  passThrough: true,
  options: (y) =>
    y
      .option('master_url', { alias: ['u', 'master-url'], type: 'string', describe: 'accepted for compatibility; [slapos] master_url is what is used' })
      .option('key_file', { alias: ['k', 'key-file'], type: 'string', describe: 'your key (overrides [slapconsole] key_file)' })
      .option('cert_file', { alias: ['c', 'cert-file'], type: 'string', describe: 'your certificate (overrides [slapconsole] cert_file)' })
      .option('ipython', { alias: 'i', type: 'boolean', describe: 'interactive console (the original used IPython; same console here)' })
      .option('bpython', { alias: 'b', type: 'boolean', describe: 'interactive console (the original used bpython; same console here)' })
      .option('python', { alias: 'p', type: 'boolean', describe: 'interactive console, no banner' }),
  async run(args, ctx) {
    const words = args._.map(String)
    const shells = ['ipython', 'bpython', 'python'].filter((s) => args[s] === true)
    if (shells.length > 1) throw new UsageError(`slapos console: error: -${shells.map((s) => s[0]).join(' and -')} exclude each other`)
    if (shells.length === 1 && words.length > 0) throw new UsageError(`slapos console: error: -${shells[0]![0]} and a script exclude each other`)
    const config = loadClientConfig(readConfig('client', args.cfg, ctx.env), {
      key_file: args.key_file as string | undefined,
      cert_file: args.cert_file as string | undefined,
    })
    const ns = consoleNamespace(new Connection(config, ctx.log))
    if (words.length > 0) {
      await runScript(words[0]!, words.slice(1), ns, (s) => ctx.io.out(s))
      return EXIT.OK
    }
    // as a piped script goes on after a failed statement, its exit status still says so
    return (await runRepl(ns, { banner: args.python !== true })) ? EXIT.FAIL : EXIT.OK
  },
}
export default consoleCommand
