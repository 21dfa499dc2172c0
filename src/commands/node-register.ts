// slapos node register: get a certificate for this node from a SlapOS Master and write
// its configuration directory (spec cli.md §11). The work is in register.ts.
import { dirname } from 'node:path'
import type { CommandModule } from '../command.ts'
import { configPath } from '../config.ts'
import { NotRootError, UsageError } from '../errors.ts'
import { registerNode, terminalPrompt } from '../register.ts'

const nodeRegister: CommandModule = {
  cfg: 'node',
  usage: '<node-name>',
  description:
    'Register a new computer on SlapOS Master.\n\n' +
    'Asks the master (--master-url-web) for a node certificate, with a token (the default: ' +
    '--token, or prompted) or an account login (--login/--password, --login-auth), then writes ' +
    'the configuration directory of --cfg: ssl/key and ssl/certificate (0600), ' +
    'ssl/partition_pki, and slapos.cfg with the given options. An existing slapos.cfg makes ' +
    'the whole directory move aside first (to <dir>.old, <dir>.old.1, ...). Must run as root.',
  options: (y) =>
    y
      .option('interface-name', { type: 'string', default: 'lo', describe: 'Primary network interface, written as interface_name' })
      .option('master-url', { type: 'string', default: 'https://slap.vifib.com', describe: 'URL of the SlapOS Master (SLAP API), written as master_url' })
      .option('master-url-web', { type: 'string', default: 'https://panel.rapid.space', describe: 'URL of the SlapOS Master web site that delivers certificates' })
      .option('partition-number', { type: 'number', default: 10, describe: 'Number of partitions, written as partition_amount' })
      .option('ipv4-local-network', { type: 'string', default: '10.0.0.0/16', describe: 'Private IPv4 network of the partitions, unused elsewhere' })
      .option('ipv6-interface', { type: 'string', describe: 'Interface with the global IPv6 addresses (e.g. a tunnel), written as ipv6_interface' })
      .option('software-root', { type: 'string', default: '/opt/slapgrid', describe: 'Where software releases are built, written as software_root' })
      .option('instance-root', { type: 'string', default: '/srv/slapgrid', describe: 'Where partitions live, written as instance_root' })
      .option('login-auth', { type: 'boolean', default: false, describe: 'Authenticate with an account login and password (prompted)' })
      .option('login', { type: 'string', describe: 'Account login (password prompted unless --password)' })
      .option('password', { type: 'string', describe: 'Account password (visible to other users in the process list: prefer the prompt)' })
      .option('token', { type: 'string', describe: 'Computer security token from the master (prompted when neither a token nor a login is given)' })
      .option('create-tap', { alias: 't', type: 'boolean', default: false, describe: 'Give each partition a tap interface (to host virtual machines)' })
      .option('dry-run', { alias: 'n', type: 'boolean', default: false, describe: 'Ask the master but write nothing' })
      .strict(false)
      .strictOptions(),
  async run(args, ctx) {
    // the original checks root before anything else, the configuration included
    if (process.getuid?.() !== 0) throw new NotRootError()
    const words = args._.map(String)
    if (words.length !== 1 || !words[0]) throw new UsageError('slapos node register: error: expected exactly one NODE_NAME', 'example: slapos node register my-node --token XXXX')
    const partitions = args.partitionNumber as number
    if (!Number.isInteger(partitions) || partitions < 0) throw new UsageError('slapos node register: error: --partition-number must be a whole number')
    if (args.password !== undefined && args.login === undefined) throw new UsageError('slapos node register: error: --password needs --login')
    return registerNode(
      {
        nodeName: words[0],
        configurationDirectory: dirname(configPath('node', args.cfg as string | undefined, ctx.env)),
        interfaceName: args.interfaceName as string,
        masterUrl: args.masterUrl as string,
        masterUrlWeb: args.masterUrlWeb as string,
        partitionNumber: partitions,
        ipv4LocalNetwork: args.ipv4LocalNetwork as string,
        ipv6Interface: args.ipv6Interface as string | undefined,
        softwareRoot: args.softwareRoot as string,
        instanceRoot: args.instanceRoot as string,
        createTap: args.createTap === true,
        dryRun: args.dryRun === true,
        token: args.token as string | undefined,
        loginAuth: args.loginAuth === true,
        login: args.login as string | undefined,
        password: args.password as string | undefined,
      },
      ctx,
      terminalPrompt(),
    )
  },
}
export default nodeRegister
