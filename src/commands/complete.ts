// slapos complete [--shell bash|fish|none] [--name PROG]: shell completion of the command
// words and of each command's options, generated from the command table (given by the frame)
// so it always matches this build; the partitions, services and software releases of the
// configured node come from `slapos complete --list KIND` when the shell asks.
// Install: `slapos complete > /etc/bash_completion.d/slapos`, or for fish
// `slapos complete --shell fish > ~/.config/fish/completions/slapos.fish`.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Argv } from 'yargs'
import { readConfig, type CommandModule, type CommandSpec } from '../command.ts'
import { loadNodeConfig } from '../config.ts'
import { EXIT } from '../exit-codes.ts'

/** For each typed prefix ('' for none), the words that may come next. */
export function completionTree(commands: readonly CommandSpec[]): Map<string, string[]> {
  const tree = new Map<string, Set<string>>()
  const add = (words: string[]) => {
    for (let i = 0; i < words.length; i++) {
      const prefix = words.slice(0, i).join(' ')
      const next = tree.get(prefix) ?? new Set<string>()
      next.add(words[i] ?? '')
      tree.set(prefix, next)
    }
  }
  for (const c of commands) {
    add(c.name.split(' '))
    for (const a of c.aliases ?? []) add(a.split(' '))
  }
  return new Map([...tree].map(([k, v]) => [k, [...v].sort()]))
}

/** The options a command declares (hidden ones left out), as typed: `--force`, `-j`. */
export function optionsOf(mod: CommandModule): string[] {
  const out = new Set<string>()
  const recorder: Argv = new Proxy({} as Argv, {
    get(_, method) {
      return (...a: unknown[]) => {
        const o = a[1] as { alias?: unknown; hidden?: unknown } | undefined
        if (method === 'option' && typeof a[0] === 'string' && o && o.hidden !== true) {
          const aliases = o.alias === undefined ? [] : Array.isArray(o.alias) ? o.alias.map(String) : [String(o.alias)]
          for (const n of [a[0], ...aliases]) out.add(n.length === 1 ? `-${n}` : `--${n}`)
        }
        return recorder
      }
    },
  })
  if (mod.cfg) out.add('--cfg')
  mod.options?.(recorder)
  return [...out].sort()
}

/** Every spelling of every command (aliases too) with its options. */
export async function commandOptions(commands: readonly CommandSpec[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>()
  for (const c of commands) {
    const options = optionsOf((await c.load()).default)
    for (const name of [c.name, ...(c.aliases ?? [])]) out.set(name, options)
  }
  return out
}

/** What the shell may ask about the configured node. */
export type ListKind = 'partitions' | 'services' | 'software'

/**
 * The partitions (directories `<partition_base_name>N` of the instance root), services
 * (`group:program` and `group:*` of supervisord's partition files) or software releases (md5
 * directories of the software root) of the node; words with shell-unsafe characters left out.
 */
export function nodeWords(kind: ListKind, cfg: { instanceRoot: string; softwareRoot: string; partitionBaseName: string }): string[] {
  const dirs = (path: string) => {
    try {
      return readdirSync(path, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name)
    } catch {
      return []
    }
  }
  let words: string[] = []
  if (kind === 'partitions') words = dirs(cfg.instanceRoot).filter((n) => n.startsWith(cfg.partitionBaseName) && /^\d+$/.test(n.slice(cfg.partitionBaseName.length)))
  else if (kind === 'software') words = dirs(cfg.softwareRoot).filter((n) => /^[0-9a-f]{32}$/.test(n))
  else {
    const confDir = join(cfg.instanceRoot, 'etc', 'supervisord.conf.d')
    let files: string[] = []
    try {
      files = readdirSync(confDir).filter((f) => f.endsWith('.conf'))
    } catch {
      // no supervisord configuration yet
    }
    for (const f of files) {
      let text = ''
      try {
        text = readFileSync(join(confDir, f), 'utf8')
      } catch {
        continue
      }
      let group: string | undefined
      for (const line of text.split('\n')) {
        const g = /^\[group:([^\]]+)\]/.exec(line)
        if (g) group = g[1]
        const p = /^programs\s*=\s*(.*)$/.exec(line)
        if (p && group) {
          words.push(`${group}:*`)
          for (const prog of (p[1] ?? '').split(',')) if (prog.trim()) words.push(`${group}:${prog.trim()}`)
        }
        const single = /^\[program:([^\]]+)\]/.exec(line)
        if (single && !text.includes('[group:')) words.push(single[1] ?? '')
      }
    }
  }
  return [...new Set(words.filter((w) => /^[\w.:@*+-]+$/.test(w)))].sort()
}

function identifier(name: string): string {
  return name.replace(/[^A-Za-z0-9_]/g, '_')
}

/** Which option's value, or which command's words, come from the node (shared by both shells). */
const DYNAMIC = {
  partitions: { options: ['--only-cp', '--only_cp', '--only'], commands: ['node instance', 'grid instance', 'slapgrid'] },
  software: { options: ['--only-sr', '--only_sr', '--only'], commands: ['node software', 'grid software', 'slapgrid'] },
  services: { commands: ['node start', 'node stop', 'node restart', 'node status', 'node tail', 'node supervisorctl'] },
}

const GLOBAL_OPTIONS = ['--help', '--log-file', '--log-level', '--quiet', '--verbose', '--version']

export function bashCompletion(name: string, commands: readonly CommandSpec[], options: Map<string, string[]>): string {
  const tree = completionTree(commands)
  const fn = `_${identifier(name)}_complete`
  const next = [...tree].map(([prefix, words]) => `    "${prefix}") echo "${words.join(' ')}" ;;`).join('\n')
  const opts = [...options].map(([command, o]) => `    "${command}") echo "${o.join(' ')}" ;;`).join('\n')
  const valueOf = (kind: 'partitions' | 'software') =>
    DYNAMIC[kind].commands.map((c) => DYNAMIC[kind].options.map((o) => `"${c}/${o}"`).join('|')).join('|')
  return `# bash completion for ${name} (generated by \`${name} complete\`): command words, options,
# and the partitions, services and software releases of the node (${name} complete --list KIND)
${fn}_next()
{
  case "$1" in
${next}
  esac
}
${fn}_options()
{
  case "$1" in
${opts}
  esac
}
${fn}()
{
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="" typed="" words="" w i
  local cfg=()
  COMPREPLY=()
  [ "$COMP_CWORD" -gt 0 ] && prev="\${COMP_WORDS[COMP_CWORD-1]}"
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    if [ "$w" = --cfg ]; then cfg=(--cfg "\${COMP_WORDS[i+1]}"); continue; fi
    case " $(${fn}_next "$typed") " in *" $w "*) typed="\${typed:+$typed }$w" ;; esac
  done
  case "$typed/$prev" in
    */--cfg|*/--log-file|*/--logfile) return 0 ;;
    ${valueOf('partitions')}) words=$(${name} complete --list partitions "\${cfg[@]}" 2>/dev/null) ;;
    ${valueOf('software')}) words=$(${name} complete --list software "\${cfg[@]}" 2>/dev/null) ;;
    *)
      if [[ "$cur" == -* ]]; then
        words="$(${fn}_options "$typed") ${GLOBAL_OPTIONS.join(' ')}"
      else
        words=$(${fn}_next "$typed")
        case "$typed" in ${DYNAMIC.services.commands.map((c) => `"${c}"`).join('|')}) words="$words $(${name} complete --list services "\${cfg[@]}" 2>/dev/null)" ;; esac
      fi ;;
  esac
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
  return 0
}
complete -o default -F ${fn} ${name}
`
}

export function fishCompletion(name: string, commands: readonly CommandSpec[], options: Map<string, string[]>): string {
  const tree = completionTree(commands)
  const id = identifier(name)
  const lines = [
    `# fish completion for ${name} (generated by \`${name} complete --shell fish\`): command words, options,`,
    `# and the partitions, services and software releases of the node (${name} complete --list KIND)`,
    `complete -c ${name} -f`,
    // the command words typed so far (options and their values left out)
    `function __${id}_typed`,
    `  set -l typed`,
    `  set -l skip 0`,
    `  for w in (commandline -opc)[2..-1]`,
    `    if test $skip = 1; set skip 0; continue; end`,
    `    if contains -- $w --cfg --log-file --log-level ${[...DYNAMIC.partitions.options, ...DYNAMIC.software.options].join(' ')}; set skip 1; continue; end`,
    `    string match -q -- '-*' $w; and continue`,
    `    set -a typed $w`,
    `  end`,
    `  string join ' ' -- $typed`,
    `end`,
    `function __${id}_is`,
    `  contains -- (__${id}_typed) $argv`,
    `end`,
    `function __${id}_cfg`,
    `  set -l words (commandline -opc)`,
    `  set -l i (contains -i -- --cfg $words); and printf '%s\\n' --cfg $words[(math $i + 1)]`,
    `end`,
  ]
  const top = tree.get('') ?? []
  lines.push(`complete -c ${name} -n "not __fish_seen_subcommand_from ${top.join(' ')}" -a "${top.join(' ')}"`)
  for (const [prefix, next] of tree) {
    if (prefix === '') continue
    lines.push(`complete -c ${name} -n "__${id}_is '${prefix}'" -a "${next.join(' ')}"`)
  }
  for (const [command, opts] of options) {
    for (const o of opts) {
      if (o === '--cfg') continue
      const flag = o.startsWith('--') ? `-l ${o.slice(2)}` : `-s ${o.slice(1)}`
      const kind = (['partitions', 'software'] as const).find((k) => DYNAMIC[k].commands.includes(command) && DYNAMIC[k].options.includes(o))
      const values = kind ? ` -x -a "(${name} complete --list ${kind} (__${id}_cfg) 2>/dev/null)"` : ''
      lines.push(`complete -c ${name} -n "__${id}_is '${command}'" ${flag}${values}`)
    }
  }
  lines.push(`complete -c ${name} -n "__${id}_is ${DYNAMIC.services.commands.map((c) => `'${c}'`).join(' ')}" -a "(${name} complete --list services (__${id}_cfg) 2>/dev/null)"`)
  lines.push(`complete -c ${name} -l cfg -r -F -d 'configuration file'`, `complete -c ${name} -s h -l help -d 'help'`, '')
  return lines.join('\n')
}

const complete: CommandModule = {
  cfg: 'node',
  description:
    'Print a shell completion script for the command words and options of this build. Bash: `slapos complete > /etc/bash_completion.d/slapos`; ' +
    'fish: `slapos complete --shell fish > ~/.config/fish/completions/slapos.fish`. The scripts complete --only-cp, --only-sr and the ' +
    'services of node start|stop|restart|status|tail with what `slapos complete --list partitions|software|services` reads from the node.',
  options: (y) =>
    y
      .option('shell', { type: 'string', choices: ['bash', 'none', 'fish'], default: 'bash', describe: 'the shell to complete for (none: the command words, one per line)' })
      .option('name', { type: 'string', default: 'slapos', describe: 'program name to complete' })
      .option('list', { type: 'string', choices: ['partitions', 'services', 'software'], describe: "print the node's partitions, services or software releases (md5), one per line" }),
  async run(args, ctx) {
    if (args.list !== undefined) {
      // asked by a shell while the user types: nothing on error, never a message
      try {
        const cfg = loadNodeConfig(readConfig('node', args.cfg, ctx.env))
        const words = nodeWords(args.list as ListKind, cfg)
        if (words.length) ctx.io.out(words.join('\n') + '\n')
      } catch {
        // no configuration: nothing to offer
      }
      return EXIT.OK
    }
    const name = String(args.name)
    const commands = args.commands ?? []
    if (args.shell === 'none') {
      ctx.io.out([...new Set(commands.flatMap((c) => [c.name, ...(c.aliases ?? [])]))].sort().join('\n') + '\n')
      return EXIT.OK
    }
    const options = await commandOptions(commands)
    ctx.io.out(args.shell === 'fish' ? fishCompletion(name, commands, options) : bashCompletion(name, commands, options))
    return EXIT.OK
  },
}
export default complete
