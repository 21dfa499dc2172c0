// slapos node watchdog (old name slapos-watchdog): the event listener supervisord runs for
// the node. It reads events on stdin and answers on stdout; logs go to stderr, which
// supervisord keeps in var/log. The work is in watchdog.ts: this process replaces itself with
// the small shell loop there (same pid, so supervisord sees no change), which starts this
// command again with --handle-event for each event that may bang.
import { accessSync, constants, existsSync, statSync } from 'node:fs'
import { basename } from 'node:path'
import { LEGACY_NAMES } from '../legacy-names.ts'
import type { CommandModule, RunArgs } from '../command.ts'
import type { Ctx } from '../context.ts'
import { EXIT } from '../exit-codes.ts'
import { searchPath } from '../system.ts'
import { handleOneEvent, runWatchdog, shellListenerArgv, type WatchdogOptions } from '../watchdog.ts'

const nodeWatchdog: CommandModule = {
  description:
    'supervisord event listener: when a watched service of a partition (etc/service) exits or cannot start, ' +
    'bang that partition on the master so it is re-deployed, at most once per successful deployment. ' +
    'Started by supervisord from the [eventlistener:watchdog] entry that node instance writes; not meant to be run by hand.',
  options: (y) =>
    y
      .option('master-url', { type: 'string', demandOption: true, describe: 'URL of the SlapOS master' })
      .option('computer-id', { type: 'string', demandOption: true, describe: 'id of this computer on the master' })
      .option('certificate-repository-path', { type: 'string', describe: 'directory of the partition certificates (<partition>.crt, .key)' })
      .option('instance-root-path', { alias: 'instance-root', type: 'string', describe: 'instance root, to bang at most once per deployment' })
      .option('in-process', { type: 'boolean', describe: 'keep the listener loop in this process (about 40 MB) instead of a /bin/sh loop (about 2 MB) that starts slapos per watched event' })
      .option('handle-event', { type: 'boolean', hidden: true, describe: 'handle the one event on stdin (the shell loop runs this)' }),
  async run(args, ctx) {
    const opts: WatchdogOptions = {
      masterUrl: args.masterUrl as string,
      computerId: args.computerId as string,
      certificateRepositoryPath: (args.certificateRepositoryPath as string | undefined) || undefined,
      instanceRoot: (args.instanceRootPath as string | undefined) || undefined,
    }
    if (args.handleEvent) {
      try {
        await handleOneEvent(opts, process.stdin, ctx.log)
        return EXIT.OK
      } catch (e) {
        ctx.log.error(`watchdog: ${e instanceof Error ? e.message : String(e)}`)
        return EXIT.FAIL
      }
    }
    if (!args.inProcess) execShellListener(args, opts, ctx)
    await runWatchdog(opts, { input: process.stdin, write: (s) => ctx.io.out(s), log: ctx.log })
    return EXIT.OK
  },
}
export default nodeWatchdog

type Execve = (file: string, args: string[], env: NodeJS.ProcessEnv) => never

/**
 * Replaces this process with the shell loop; returns only when that cannot be done (a
 * runtime without process.execve, no /bin/sh), and the caller then runs the loop itself.
 * Nothing has read stdin yet: the shell gets every byte supervisord sent.
 */
function execShellListener(args: RunArgs, opts: WatchdogOptions, ctx: Ctx): void {
  const execve = (process as unknown as { execve?: Execve }).execve
  if (typeof execve !== 'function' || !existsSync('/bin/sh')) return
  const head = searchPath('head', process.env.PATH, (f) => statSync(f).isFile() && (accessSync(f, constants.X_OK), true))
  if (!head) {
    ctx.log.warning('watchdog: no `head` on PATH for the shell listener; listening in this process')
    return
  }
  // the program is started by its path: under an old name (a copy called slapos-watchdog)
  // it is already the watchdog; under another one it would run another command
  const legacy = LEGACY_NAMES[basename(ctx.self[0] ?? '')]
  if (legacy !== undefined && legacy !== 'node watchdog') return
  const words = legacy === undefined ? ['node', 'watchdog'] : []
  const handler = [...ctx.self, ...words, '--master-url', opts.masterUrl, '--computer-id', opts.computerId]
  if (opts.certificateRepositoryPath) handler.push('--certificate-repository-path', opts.certificateRepositoryPath)
  if (opts.instanceRoot) handler.push('--instance-root-path', opts.instanceRoot)
  handler.push(...globalArgs(args), '--handle-event')
  try {
    execve.call(process, '/bin/sh', shellListenerArgv(head, handler), process.env)
  } catch (e) {
    ctx.log.warning(`watchdog: cannot start the shell listener (${e instanceof Error ? e.message : String(e)}); listening in this process`)
  }
}

/** The logging options this process got, for the handler it starts. */
function globalArgs(args: RunArgs): string[] {
  const g = args.global
  const out: string[] = []
  if (g.logLevel) out.push('--log-level', g.logLevel)
  else if (g.verbosity === 0) out.push('-q')
  else if (g.verbosity > 1) out.push(`-${'v'.repeat(g.verbosity - 1)}`)
  if (g.logFile) out.push('--log-file', g.logFile)
  if (g.logTime) out.push('--log-time')
  if (!g.logColor) out.push('--no-log-color')
  return out
}
