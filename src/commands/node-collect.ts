// slapos node collect: sample the partitions' processes and the computer into the collect
// database and write the files read by the monitor stack and by node report (collect.ts).
// Root is checked before the configuration is read, whatever root_check says, as the
// original does: reading every process's I/O counters needs it.
import { join } from 'node:path'
import type { CommandModule } from '../command.ts'
import { readConfig } from '../command.ts'
import { collect, lastHourUsage, type CollectResult, type UsageLine } from '../collect.ts'
import { collectPidfile } from '../collect-sample.ts'
import { ConfigError, NotRootError, UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'
import { acquirePidfile } from '../pidfile.ts'

const nodeCollect: CommandModule = {
  cfg: 'node',
  usage: '[--show [PARTITION]]',
  description:
    'Sample the processes of every partition user (<user_base_name>0 .. <partition_amount - 1>) and the computer ' +
    '(CPU over 5 seconds, load, memory, network, disks, temperatures when lm-sensors is installed) into ' +
    '<instance_root>/var/data-log/collector.db; rewrite the day\'s system_*.csv, export and archive past days, write ' +
    'each partition\'s .slapgrid/monitor/ files for the previous minute and the daily consumption report that the next ' +
    'node report sends to the master. Run by cron every minute, as root. --show prints the last hour per partition ' +
    'from the database instead (no sampling, no root needed). Exit status: 0 done, 1 error, 5 not root, 10 another ' +
    'collect runs.',
  options: (y) =>
    y
      // a partition may follow --show: positional words allowed, unknown options still refused
      .strict(false)
      .strictOptions()
      .option('show', { type: 'boolean', describe: 'print the last hour of usage per partition (or of the PARTITION given: slappartN or its user) and exit' })
      .option('json', { type: 'boolean', describe: 'print what was sampled (or shown) as JSON on stdout' }),
  async run(args, ctx) {
    const words = args._.map(String)
    if (words.length > 1 || (words.length && args.show !== true)) throw new UsageError(`unexpected argument: ${words.join(' ')}`, 'a partition is given after --show: slapos node collect --show slappart3')
    const show = args.show === true ? (words[0] ?? '') : undefined
    if (show === undefined && process.getuid?.() !== 0) throw new NotRootError()
    const file = readConfig('node', args.cfg, ctx.env)
    const instanceRoot = file.path_('slapos', 'instance_root')
    if (!instanceRoot) throw new ConfigError(`${file.path}: [slapos] instance_root is missing`, 'set instance_root in the [slapos] section')
    const computerId = file.require('slapos', 'computer_id')
    const amountText = file.require('slapformat', 'partition_amount')
    const userBase = file.require('slapformat', 'user_base_name')
    const partitionBase = file.require('slapformat', 'partition_base_name')
    const amount = Number(amountText)
    if (!/^\s*\d+\s*$/.test(amountText) || amount > 100_000) {
      throw new ConfigError(`${file.path}: [slapformat] partition_amount = ${amountText} is not an integer between 0 and 100000`)
    }
    const users = Array.from({ length: amount }, (_, i) => ({ user: `${userBase}${i}`, partition: `${partitionBase}${i}`, home: join(instanceRoot, `${partitionBase}${i}`) }))
    const dbPath = join(instanceRoot, 'var', 'data-log', 'collector.db')

    if (show !== undefined) {
      const selected = show === '' ? users : users.filter((u) => u.user === show || u.partition === show)
      if (!selected.length) throw new UsageError(`${show} is neither a partition nor a partition user of this node`, `give one of ${users[0]?.partition ?? 'slappart0'} .. or its user`)
      let lines: UsageLine[]
      try {
        lines = lastHourUsage(dbPath, selected.map((u) => u.user), ctx.now())
      } catch (err) {
        throw new ConfigError(`cannot read ${dbPath}: ${(err as Error).message}`, 'run slapos node collect first (cron runs it every minute)')
      }
      const partitionOf = new Map(users.map((u) => [u.user, u.partition]))
      ctx.io.out(args.json === true ? JSON.stringify(lines.map((l) => ({ partition: partitionOf.get(l.user), ...l })), null, 2) + '\n' : usageTable(lines, partitionOf))
      return EXIT.OK
    }

    const collectCache = file.int('slapos', 'collect_cache', 15)
    if (collectCache < 0 || collectCache > 36_500) throw new ConfigError(`${file.path}: [slapos] collect_cache = ${collectCache} is not a number of days between 0 and 36500`)
    const release = acquirePidfile(collectPidfile(instanceRoot))
    try {
      const result = await collect({
        instanceRoot,
        computerId,
        users,
        collectCache,
        // the original: true, on or 1 in any case is true, anything else false
        reportDiskUsage: /^(true|on|1)$/i.test(file.str('collect', 'report_disk_usage', 'true').trim()),
        diskSnapshotCycle: file.int('collect', 'disk_snapshot_time_cycle', 86400),
        diskPidFolder: file.path_('collect', 'disk_snapshot_process_pid_foder') ?? join(instanceRoot, 'var', 'run'),
        now: ctx.now(),
        log: ctx.log,
        runner: ctx.runner,
        env: ctx.env,
      })
      ctx.log.info(summaryLine(result))
      if (args.json === true) ctx.io.out(JSON.stringify(result, null, 2) + '\n')
      return EXIT.OK
    } finally {
      release()
    }
  },
}
export default nodeCollect

function summaryLine(r: CollectResult): string {
  const processes = r.users.reduce((a, u) => a + u.processes, 0)
  const busy = r.users.filter((u) => u.processes > 0).length
  const extra = [
    r.exported.length ? `exported ${r.exported.join(', ')}` : '',
    r.reports.length ? `consumption report of ${r.reports.join(', ')}` : '',
  ].filter(Boolean)
  return (
    `Collected ${processes} process(es) of ${busy}/${r.users.length} partition(s), CPU ${r.computer.cpuPercent}%, ` +
    `load ${r.computer.loadavg}, ${r.disks.length} disk(s), ${r.temperatures} temperature(s) in ${(r.durationMs / 1000).toFixed(1)} s` +
    (extra.length ? `; ${extra.join('; ')}` : '')
  )
}

function usageTable(lines: UsageLine[], partitionOf: Map<string, string>): string {
  const head = ['PARTITION', 'USER', 'SAMPLES', 'PROCESSES', 'CPU %', 'MEMORY MiB', 'I/O MiB']
  const rows = lines.map((l) => [partitionOf.get(l.user) ?? '', l.user, String(l.samples), String(l.processes), String(l.cpuPercent), String(l.memoryMiB), String(l.ioMiB)])
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const fmt = (r: string[]) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ').trimEnd()
  return [fmt(head), ...rows.map(fmt)].join('\n') + '\n' + 'averages per sample over the last hour; I/O: read + written since each process started, at the last sample\n'
}
