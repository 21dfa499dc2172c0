// slapos node doctor: every check of a node in one run, one line each (ok, warning, problem,
// and what to do), or --json. Ours: the original has no such command. The checks are in
// doctor.ts; this file maps the options and prints.
import type { CommandModule } from '../command.ts'
import { configPath } from '../config.ts'
import { DEFAULT_CRON_FILE, diagnose, doctorExitCode, doctorJson, doctorText, THRESHOLDS } from '../doctor.ts'

const nodeDoctor: CommandModule = {
  cfg: 'node',
  description:
    'Check this node and change nothing: the configuration (readable, mandatory keys, the files it names), the ' +
    'software and instance roots and the certificate repository (owners, modes), the TLS certificate (matches its key, ' +
    `days to expiry: warning under ${THRESHOLDS.certificateWarningDays}), the master (one read of this computer), ` +
    'supervisord and its watchdog listener, the cron file against the package\'s, the pid files, free space and inodes ' +
    `of the roots (warning under ${THRESHOLDS.diskWarningPercent}%, problem under ${THRESHOLDS.diskProblemPercent}%), buildout (--version), ` +
    "each software release's state and each partition's last run, promises and services. Prints one line per check " +
    '(ok, warning or problem, and what to do) and a summary, or --json. Run it as root: as another user, what it may not ' +
    'look at is a warning. Exit status: 0 no problem (warnings allowed), 1 a problem.',
  options: (y) =>
    y
      .option('json', { type: 'boolean', describe: 'print the checks as one JSON document on stdout' })
      .option('cron-file', { type: 'string', describe: `the installed cron file to compare with the package's (default: ${DEFAULT_CRON_FILE})` }),
  async run(args, ctx) {
    const cfgPath = configPath('node', typeof args.cfg === 'string' ? args.cfg : undefined, ctx.env)
    const cronFile = typeof args.cronFile === 'string' && args.cronFile !== '' ? args.cronFile : DEFAULT_CRON_FILE
    const checks = await diagnose({ cfgPath, cronFile, runner: ctx.runner, env: ctx.env, now: ctx.now(), log: ctx.log })
    ctx.io.out(args.json === true ? JSON.stringify(doctorJson(checks), null, 2) + '\n' : doctorText(checks))
    return doctorExitCode(checks)
  },
}
export default nodeDoctor
