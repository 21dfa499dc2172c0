// slapos configure local: a ready-to-use node with its own local master (proxy), in the
// original's layout as root, or standalone under one directory without root.
// The work is in configure-local.ts; this file maps the options.
import { homedir } from 'node:os'
import type { CommandModule } from '../command.ts'
import { checkMasterUrl, configureLocal, planLocal } from '../configure-local.ts'
import { NotRootError, UsageError } from '../errors.ts'
import { idProblem, quote } from '../names.ts'

const DEFAULT_LISTEN_IP = '127.0.0.1'
const DEFAULT_LISTEN_PORT = 8080

const configureLocalCommand: CommandModule = {
  // accepted as the original's configure commands accept it; configure local writes the
  // node's configuration rather than reading one
  cfg: 'node',
  description:
    'Configure a slapos node, from scratch to ready-to-use, using slapproxy (the local master).\n\n' +
    'Writes slapos.cfg (with [slapos], [slapformat] and [slapproxy]) and slapos-proxy.cfg in the ' +
    'configuration directory, creates the software, instance and log directories, registers the ' +
    'proxy as a supervisord program (<instance root>/etc/supervisord.conf.d/slapproxy.conf), links ' +
    '~/.slapos/slapos-client.cfg to the node configuration, then starts the node and formats it.\n\n' +
    'With --standalone DIR the same layout is made under DIR (DIR/etc/opt/slapos/slapos.cfg, ' +
    'DIR/opt/slapgrid, DIR/srv/slapgrid, DIR/opt/slapos) for the current user: no root needed, ' +
    'no system user or network change (alter_user, alter_network and root_check are false), ' +
    'partitions on loopback addresses, the home directory untouched, and the periodic runs ' +
    'written as a crontab in DIR/etc/cron.d/slapos-node.\n\n' +
    'With --master-url URL the node uses that master (another node\'s local master, a lab\'s ' +
    'master) instead of starting its own: no slapos-proxy.cfg, no proxy program; with ' +
    '--computer-id, several such nodes on one machine are the computers of one master.\n\n' +
    'Running it again with the same options changes nothing; an existing slapos.cfg with other ' +
    'content is never replaced.',
  options: (y) =>
    y
      .option('interface-name', { type: 'string', default: 'lo', describe: 'Primary network interface; partition addresses are added to it' })
      .option('partition-number', { type: 'number', default: 20, describe: 'Number of partitions of the node' })
      .option('ipv4-local-network', {
        type: 'string',
        describe: 'Private IPv4 network for partition addresses, unused elsewhere (default: 10.0.0.0/16; 127.0.1.0/24 with --standalone)',
      })
      // no yargs default: given with --master-url (no local master) they are refused
      .option('daemon-listen-ip', { type: 'string', describe: `Address the local master (slapproxy) listens on (default: ${DEFAULT_LISTEN_IP})` })
      .option('daemon-listen-port', { type: 'number', describe: `Port the local master (slapproxy) listens on (default: ${DEFAULT_LISTEN_PORT})` })
      .option('slapos-instance-root', { type: 'string', describe: 'Instance root: partitions and supervisord (default: /srv/slapgrid)' })
      .option('slapos-software-root', { type: 'string', describe: 'Software root: built software releases (default: /opt/slapgrid)' })
      .option('slapos-buildout-directory', {
        type: 'string',
        describe: 'Home of the node tools: logs, slapos.xml, proxy database, pid files (default: /opt/slapos)',
      })
      .option('slapos-configuration-directory', { type: 'string', describe: 'Where slapos.cfg and slapos-proxy.cfg go (default: /etc/opt/slapos)' })
      .option('standalone', { type: 'string', describe: 'Standalone node of the current user: every default path under this directory, no root' })
      .option('buildout', { type: 'string', describe: 'buildout executable written as [slapos] buildout (default: buildout from PATH)' })
      .option('run-as-root', {
        type: 'boolean',
        default: false,
        describe:
          'Write run_as_root = true: software releases and partitions owned by root build and run as root (a standalone node made by root). ' +
          'Without it such a node refuses to run them, and warns every run when it does',
      })
      .option('computer-id', { type: 'string', describe: 'Computer id of this node on its master (default: local_computer)' })
      .option('master-url', {
        type: 'string',
        describe: 'URL of an existing master for this node (e.g. a lab\'s slapos proxy); the node then starts no local master of its own',
      })
      .option('start', { type: 'boolean', default: true, describe: 'Start supervisord and format the node once configured; --no-start only writes the configuration' })
      .option('enable-shacache-proxy', {
        type: 'boolean',
        default: false,
        describe:
          'Enable the shacache/shadir proxy of the local master: its cache directories and signing key under <instance root>/shacache, ' +
          'the public caches as upstream, and the node downloading through it (/shacache/cache and /shacache/dir)',
      }),
  async run(args, ctx) {
    const standalone = typeof args.standalone === 'string' && args.standalone !== '' ? args.standalone : undefined
    // the original checks root before anything; a standalone node is made for a user
    if (!standalone && process.getuid?.() !== 0) throw new NotRootError()
    const port = (args.daemonListenPort as number | undefined) ?? DEFAULT_LISTEN_PORT
    const partitions = args.partitionNumber as number
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError('slapos configure local: error: --daemon-listen-port must be a port number (0-65535)')
    if (!Number.isInteger(partitions) || partitions < 0) throw new UsageError('slapos configure local: error: --partition-number must be a whole number')
    const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined)
    const computerId = args.computerId === undefined ? undefined : String(args.computerId)
    // an id starting with '-' would read as an option in the commands the node prints and runs
    const idError = computerId === undefined ? undefined : computerId.startsWith('-') ? `--computer-id ${quote(computerId)} must not start with '-'` : idProblem('--computer-id', computerId)
    if (idError) throw new UsageError(`slapos configure local: error: ${idError}`)
    let masterUrl: string | undefined
    if (args.masterUrl !== undefined) {
      const checked = checkMasterUrl(String(args.masterUrl))
      if ('problem' in checked) throw new UsageError(`slapos configure local: error: ${checked.problem}`)
      masterUrl = checked.url
      if (args.enableShacacheProxy === true) {
        throw new UsageError('slapos configure local: error: --enable-shacache-proxy needs the local master, not --master-url', 'enable the cache on the master the URL names instead')
      }
      const listen = [args.daemonListenIp === undefined ? '' : '--daemon-listen-ip', args.daemonListenPort === undefined ? '' : '--daemon-listen-port'].filter(Boolean)
      if (listen.length) throw new UsageError(`slapos configure local: error: ${listen.join(' and ')} ${listen.length === 1 ? 'configures' : 'configure'} the local master, which --master-url replaces`, 'leave them out, or leave --master-url out')
    }
    const runAsRoot = args.runAsRoot === true
    if (standalone && process.getuid?.() === 0 && !runAsRoot) {
      ctx.log.warning(
        'a standalone node made by root has root-owned partitions: the node will refuse to build and run them as root. ' +
          'Run configure local --standalone as a regular user, or without --standalone (a user per partition), or pass --run-as-root to allow it',
      )
    }
    const plan = planLocal({
      interfaceName: args.interfaceName as string,
      partitionNumber: partitions,
      ipv4LocalNetwork: str(args.ipv4LocalNetwork),
      daemonListenIp: (args.daemonListenIp as string | undefined) ?? DEFAULT_LISTEN_IP,
      daemonListenPort: port,
      instanceRoot: str(args.slaposInstanceRoot),
      softwareRoot: str(args.slaposSoftwareRoot),
      buildoutDirectory: str(args.slaposBuildoutDirectory),
      configurationDirectory: str(args.slaposConfigurationDirectory),
      standalone,
      buildout: str(args.buildout),
      home: ctx.env.HOME || homedir(),
      self: ctx.self,
      shacacheProxy: args.enableShacacheProxy === true,
      runAsRoot,
      computerId,
      masterUrl,
    })
    return configureLocal(plan, ctx, { start: args.start !== false, quiet: args.global.verbosity === 0 })
  },
}
export default configureLocalCommand
