// slapos node boot: what cron runs at @reboot. Waits for the node's IPv6, runs node format
// until it succeeds, node bang -m Reboot until the master hears it, then deletes the
// partitions' .timestamp files so the next node instance restarts everything. The work is
// in boot.ts; this file reads the configuration and the root check.
import type { CommandModule } from '../command.ts'
import { readConfig } from '../command.ts'
import { BootError, bootNode } from '../boot.ts'
import { NODE_DEFAULTS } from '../config.ts'
import { NotRootError, SlapError, UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'

const nodeBoot: CommandModule = {
  cfg: 'node',
  description:
    'Bring the node back after a reboot: wait until [slapformat] ipv6_interface (else interface_name) has a global ' +
    'IPv6 address, run `slapos node format --now` until it succeeds (when the master is unreachable, wait until it ' +
    'answers), run `slapos node bang -m Reboot` until the master has it, then delete every ' +
    '<instance_root>/<partition_base_name>*/.timestamp so the next `slapos node instance` redeploys and restarts ' +
    'all partitions. Exit status: 0 done, 1 no IPv6 within --ipv6-timeout, 5 not root.',
  options: (y) =>
    y
      .option('message', { alias: 'm', type: 'string', describe: 'accepted for compatibility; the bang message is always "Reboot"' })
      .option('ipv6-timeout', { type: 'string', describe: 'stop waiting for IPv6 after this many seconds and exit 1 (default: wait for ever)' })
      .option('retry-interval', { type: 'string', describe: 'seconds between two attempts of format or bang (default 15)' }),
  async run(args, ctx) {
    const file = readConfig('node', args.cfg, ctx.env)
    if (file.bool('slapos', 'root_check', true) && process.getuid?.() !== 0) throw new NotRootError()
    const seconds = (name: string, dflt: number) => {
      const v = args[name]
      if (v === undefined) return dflt
      if (!/^\d+$/.test(String(v))) throw new UsageError(`argument --${name.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}: invalid int value: '${String(v)}'`)
      return Number(v)
    }
    const instanceRoot = file.path_('slapos', 'instance_root')
    const masterUrl = file.require('slapos', 'master_url')
    if (!instanceRoot) file.require('slapos', 'instance_root')
    const g = args.global
    const childArgs: string[] = []
    if (g.logFile) childArgs.push('--log-file', g.logFile)
    try {
      await bootNode({
        cfgPath: file.path,
        instanceRoot: instanceRoot ?? '',
        partitionBaseName: file.get('slapformat', 'partition_base_name')?.trim() || NODE_DEFAULTS.partitionBaseName,
        ipv6Interface: file.get('slapformat', 'ipv6_interface')?.trim() || file.get('slapformat', 'interface_name')?.trim() || undefined,
        masterUrl: masterUrl.trim(),
        self: ctx.self,
        childArgs,
        runner: ctx.runner,
        env: ctx.env,
        log: ctx.log,
        output: (s) => ctx.io.err(s),
        retrySec: seconds('retryInterval', 15),
        pollSec: 5,
        ipv6TimeoutSec: seconds('ipv6Timeout', 0),
      })
    } catch (err) {
      if (err instanceof BootError) throw new SlapError(err.message, { code: 'E_NO_IPV6', hint: `check the network of the interface; node boot waits for it (--ipv6-timeout)` })
      throw err
    }
    return EXIT.OK
  },
}
export default nodeBoot
