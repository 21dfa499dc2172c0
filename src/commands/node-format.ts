// slapos node format (old name slapformat): create users, partition directories and network
// addresses, write slapos.xml and post the computer to the master. The decisions are in
// format-plan.ts, the doing in format.ts; this file maps options and the root check.
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import type { CommandModule } from '../command.ts'
import { readConfig } from '../command.ts'
import { loadFormatConfig } from '../config.ts'
import { ConfigError, NotRootError } from '../errors.ts'
import { formatNode } from '../format.ts'
import { formatManagers } from '../manager-registry.ts'
import { createLogger, levelFromVerbosity } from '../log.ts'

const nodeFormat: CommandModule = {
  cfg: 'node',
  description:
    'Prepare this machine as a SlapOS node: the software user, one user and one directory per partition, ' +
    'one IPv4 and one IPv6 address (and an IPv6 range) per partition, then write slapos.xml and send the ' +
    'computer to the master. Re-running changes nothing that is already right. With alter_user = false and ' +
    'alter_network = false only directories and files are written (no root needed with root_check = false). ' +
    'Exit status: 0 done, 1 failed, 2 done but the master could not be told, 5 not root.',
  options: (y) =>
    y
      .option('computer_xml', { alias: 'x', type: 'string', describe: 'path of the computer definition slapos.xml (default: [slapformat] computer_xml)' })
      .option('computer_json', { type: 'string', describe: 'also write the computer as JSON here' })
      .option('input_definition_file', { alias: 'i', type: 'string', describe: 'computer definition file to use instead of slapos.xml (not supported yet)' })
      .option('output_definition_file', { alias: 'o', type: 'string', describe: 'write the computer definition file here (not supported yet)' })
      .option('alter_user', { type: 'string', choices: ['True', 'False'], describe: 'create and update users and groups, chown directories' })
      .option('alter_network', { type: 'string', choices: ['True', 'False'], describe: 'configure interfaces, addresses and routes' })
      .option('now', { type: 'boolean', describe: 'start at once instead of after a random delay of up to one hour' })
      .option('dry_run', { alias: 'n', type: 'boolean', describe: 'print what would be done, change nothing' })
      .option('console', { alias: 'c', type: 'string', hidden: true, describe: 'obsolete, ignored' }),
  async run(args, ctx) {
    const file = readConfig('node', args.cfg, ctx.env)
    // root check first, like the original: after reading the file, before validating it
    const rootCheck = (file.get('slapos', 'root_check') ?? file.get('slapformat', 'root_check') ?? 'true').trim().toLowerCase()
    if (rootCheck !== 'true' && rootCheck !== 'false' && rootCheck !== '') {
      throw new ConfigError(`Option 'root_check' needs to be "True" or "False", wrong value: '${rootCheck}'`, 'For help use --help')
    }
    if (rootCheck !== 'false' && process.getuid?.() !== 0) throw new NotRootError()
    if (args.input_definition_file || args.output_definition_file) {
      throw new ConfigError('input and output definition files (-i, -o) are not supported by this version', 'let node format build slapos.xml from the configuration')
    }
    const cfg = loadFormatConfig(file, {
      computer_xml: args.computer_xml as string | undefined,
      computer_json: args.computer_json as string | undefined,
      alter_user: args.alter_user as string | undefined,
      alter_network: args.alter_network as string | undefined,
      dry_run: args.dry_run === true,
      now: args.now === true,
    })
    const g = args.global
    let log = ctx.log
    if (cfg.logFile && !g.logFile) {
      mkdirSync(dirname(cfg.logFile), { recursive: true })
      log = createLogger({ level: g.logLevel ?? levelFromVerbosity(g.verbosity), file: cfg.logFile, noTime: g.logTime, color: g.logColor })
    }
    const managers = await formatManagers(file, ctx.runner)
    const result = await formatNode(cfg, {
      runner: ctx.runner,
      managers,
      log,
      now: ctx.now,
      progress: g.verbosity > 0 ? (line) => log.info(line) : undefined,
    })
    return result.exitCode
  },
}
export default nodeFormat
