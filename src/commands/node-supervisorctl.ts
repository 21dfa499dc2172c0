// slapos node supervisorctl ARGS... (old name slapgrid-supervisorctl) and its verbs
// `slapos node status|start|stop|restart|tail ARGS...`: supervisorctl on the node's
// supervisord (started first unless forbid_supervisord_automatic_launch is set).
// Process names are <partition>:<program>, e.g. slappart3:apache-on-watch.
import type { CommandModule } from '../command.ts'
import { readConfig } from '../command.ts'
import { NotRootError, SlapError } from '../errors.ts'
import { prepareSupervisordFromConfig, Supervisor } from '../supervisor.ts'

/** The command, or one of its verbs (`status`, `start`, ...) with the verb put first. */
export function supervisorctlCommand(verb?: string): CommandModule {
  return {
    cfg: 'node',
    passThrough: true,
    usage: verb ? '[supervisorctl arguments]' : '[supervisorctl command and arguments]',
    description: verb
      ? `supervisorctl ${verb} on the node's supervisord, e.g. \`slapos node ${verb}${verb === 'tail' ? ' -f' : ''} slappart0:*\`. Arguments are passed to supervisorctl.`
      : "Run supervisorctl on the node's supervisord with the given arguments (none: its interactive shell). " +
        'Process names are <partition>:<program>.',
    async run(args, ctx) {
      const { cfg, rest } = takeCfg(args._.map(String), args.cfg as string | undefined)
      const file = readConfig('node', cfg, ctx.env)
      if (file.bool('slapos', 'root_check', true) && process.getuid?.() !== 0) throw new NotRootError()
      const paths = prepareSupervisordFromConfig(file, { onlyIfMissing: true })
      const forbid = file.bool('slapos', 'forbid_supervisord_automatic_launch', false)
      await new Supervisor(paths, ctx.log, ctx.runner).launch({ forbid })
      const binary = Supervisor.which('supervisorctl')
      if (!binary) throw new SlapError('supervisorctl was not found on PATH', { code: 'E_NO_SUPERVISORCTL', hint: 'install supervisor (Debian: apt-get install supervisor)' })
      const r = await ctx.runner.run([binary, '-c', paths.conf, ...(verb ? [verb] : []), ...rest], { interactive: true })
      return r.code ?? 1
    },
  }
}

export default supervisorctlCommand()

// --- internal ---

/** `--cfg PATH` may come after the supervisorctl words: take it out of them. */
function takeCfg(words: string[], parsed: string | undefined): { cfg: string | undefined; rest: string[] } {
  let cfg = parsed
  const rest: string[] = []
  for (let i = 0; i < words.length; i++) {
    const w = words[i] ?? ''
    if (w === '--cfg' && i + 1 < words.length) cfg = words[++i]
    else if (w.startsWith('--cfg=')) cfg = w.slice('--cfg='.length)
    else rest.push(w)
  }
  return { cfg, rest }
}
