// The command line: global options (accepted anywhere, as the original), command lookup
// by words with the original's exit 5 errors, legacy program names (slapgrid-cp, ...),
// then the command's own options through yargs, and errors turned into one line.
// Called only by main.ts; returns an exit status and never exits the process.
import { readFileSync, statSync } from 'node:fs'
import type { Argv } from 'yargs'
import { declarations, fastParse } from './argv-fast.ts'
import { COMMANDS } from './commands/index.ts'
import type { CommandModule, CommandSpec, GlobalOptions, Group, RunArgs } from './command.ts'
import type { Ctx } from './context.ts'
import { describeError, SlapError, UsageError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { LEGACY_NAMES } from './legacy-names.ts'
import { createLogger, levelFromVerbosity, type Level } from './log.ts'
import { isTTY, writeOut } from './stdio.ts'
import { realRunner } from './system.ts'

declare const SLAPOS_VERSION: string
export const VERSION: string = typeof SLAPOS_VERSION === 'string' ? SLAPOS_VERSION : '0.0.0-dev'

const LEVELS: Level[] = ['debug', 'info', 'warning', 'error', 'critical']

/** Takes the global options out of argv, wherever they are (spec cli.md §2.2). */
export function splitGlobal(argv: string[]): { global: GlobalOptions; rest: string[] } {
  const global: GlobalOptions = { verbosity: 1, logTime: false, logColor: true, help: false, version: false }
  const rest: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? ''
    if (a === '--') {
      rest.push(...argv.slice(i))
      break
    }
    const eq = a.indexOf('=')
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a
    const inline = a.startsWith('--') && eq > 0 ? a.slice(eq + 1) : undefined
    const value = (): string => {
      if (inline !== undefined) return inline
      const v = argv[++i]
      if (v === undefined) throw new UsageError(`${name} needs a value`)
      return v
    }
    if (/^-v+$/.test(a)) global.verbosity += a.length - 1
    else if (a === '--verbose') global.verbosity += 1
    else if (a === '-q' || a === '--quiet') global.verbosity = 0
    else if (name === '--log-file' || name === '--logfile' || name === '--log_file') global.logFile = value()
    else if (name === '--log-level') {
      const l = value().toLowerCase() as Level
      if (!LEVELS.includes(l)) throw new UsageError(`--log-level must be one of ${LEVELS.join(', ')}`)
      global.logLevel = l
    } else if (a === '--log-time') global.logTime = true
    else if (a === '--log-color') global.logColor = true
    else if (a === '--no-log-color') global.logColor = false
    else if (a === '--debug') continue
    else if (a === '-h' || a === '--help') {
      global.help = true
      global.helpAt ??= rest.length
    }
    else if (a === '--version') global.version = true
    else rest.push(a)
  }
  return { global, rest }
}

/** Finds the command the words name (spec cli.md §2.4). */
export function lookup(rest: string[]): { spec: CommandSpec; args: string[] } {
  const words = rest.length === 1 && rest[0] === 'node' ? ['node', 'status'] : rest
  const names = new Map<string, CommandSpec>()
  for (const c of COMMANDS) {
    names.set(c.name, c)
    for (const a of c.aliases ?? []) names.set(a, c)
  }
  const taken: string[] = []
  for (let i = 0; i < words.length; i++) {
    const w = words[i] ?? ''
    if (w.startsWith('-')) {
      throw new SlapError(`slapos: invalid option '${w}'`, {
        code: 'E_UNKNOWN_OPTION',
        exitCode: EXIT.UNKNOWN_COMMAND,
        hint: 'options come after the command words, e.g. slapos node instance --now',
      })
    }
    taken.push(w)
    const spec = names.get(taken.join(' '))
    if (spec) return { spec, args: words.slice(i + 1) }
  }
  throw new SlapError(`slapos: the command '${taken.join(' ')}' does not exist or is not yet implemented.`, {
    code: 'E_UNKNOWN_COMMAND',
    exitCode: EXIT.UNKNOWN_COMMAND,
    hint: 'run `slapos --help` for the list of commands',
  })
}

/** The global help: usage, global options, then commands by group (spec cli.md §4, made readable). */
export function globalHelp(): string {
  const lines = [
    `usage: slapos [global options] <command> [options]`,
    ``,
    `SlapOS node tools ${VERSION}: local master (proxy), node, format and client in one program.`,
    ``,
    `global options (accepted anywhere on the line):`,
    `  --cfg PATH            configuration file of the command`,
    `  --log-file PATH       also write every log record to PATH`,
    `  --log-level LEVEL     console level: debug, info, warning, error, critical`,
    `  -v, --verbose         more output (repeatable); -q, --quiet: warnings only`,
    `  --log-time            no timestamps on console lines`,
    `  --log-color           colours on a terminal (the default)`,
    `  --version             print the version`,
    `  -h, --help            this help, or the help of the command it follows`,
  ]
  const groups: Group[] = ['cachelookup', 'client', 'node', 'other']
  const width = Math.max(13, ...COMMANDS.map((c) => c.name.length))
  for (const g of groups) {
    // plain code-point order (the names are lowercase ASCII): localeCompare would load ICU's collation, ~10 ms
    const cmds = COMMANDS.filter((c) => c.group === g).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    if (!cmds.length) continue
    lines.push('', `${g} commands:`)
    for (const c of cmds) lines.push(`  ${c.name.padEnd(width)}  ${c.summary}`)
  }
  lines.push('', `Run \`slapos help <command>\` or \`slapos <command> --help\` for the options of a command.`)
  return lines.join('\n') + '\n'
}

/** The help of `slapos node`: its commands, and what `slapos node` alone runs. */
export function nodeHelp(): string {
  const cmds = COMMANDS.filter((c) => c.name.startsWith('node ')).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  const width = Math.max(13, ...cmds.map((c) => c.name.length))
  return [
    'usage: slapos node <command> [options]',
    '',
    '`slapos node` alone is `slapos node status`.',
    '',
    'node commands:',
    ...cmds.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run `slapos node <command> --help` for the options of a command.',
    '',
  ].join('\n')
}

/** Builds the yargs parser of one command (also used to render its help). */
export async function commandParser(spec: CommandSpec, mod: CommandModule, args: string[]): Promise<Argv> {
  const { default: yargs } = await import('yargs')
  let y = yargs(args)
    .scriptName(`slapos ${spec.name}`)
    .usage(`usage: $0 [options]${mod.usage ? ' ' + mod.usage : ''}\n\n${mod.description ?? spec.summary}`)
    .version(false)
    .help(false)
    .exitProcess(false)
    .wrap(Math.min(100, process.stdout.columns || 100))
    .parserConfiguration({ 'unknown-options-as-args': mod.passThrough === true, 'halt-at-non-option': mod.passThrough === true, 'duplicate-arguments-array': false })
    .fail((msg, err) => {
      throw err instanceof SlapError ? err : new UsageError(`slapos ${spec.name}: error: ${msg ?? err?.message}`, `see \`slapos ${spec.name} --help\``)
    })
  if (!mod.passThrough) y = y.strict()
  if (mod.cfg) {
    y = y.option('cfg', {
      type: 'string',
      describe:
        mod.cfg === 'node'
          ? 'SlapOS configuration file (default: $SLAPOS_CONFIGURATION or /etc/opt/slapos/slapos.cfg)'
          : 'SlapOS configuration file (default: $SLAPOS_CLIENT_CONFIGURATION or ~/.slapos/slapos-client.cfg)',
    })
  }
  if (mod.options) y = mod.options(y)
  // an option that takes a value and has none (`--only-cp` at the end of the line) is
  // refused with the usage, as the original's argparse does, instead of running as if absent
  const declared = (y as unknown as { getOptions(): { string?: string[]; array?: string[]; number?: string[] } }).getOptions()
  const valued = [...(declared.string ?? []), ...(declared.array ?? []), ...(declared.number ?? [])]
  if (valued.length) y = y.requiresArg(valued)
  return y
}

export async function commandHelp(spec: CommandSpec): Promise<string> {
  const { default: mod } = await spec.load()
  const y = await commandParser(spec, mod, [])
  const text = await y.getHelp()
  const aliases = spec.aliases?.length ? `\n\nAlso available as: ${spec.aliases.map((a) => `slapos ${a}`).join(', ')}` : ''
  return text + aliases + '\n'
}

export interface RunOptions {
  /** basename of argv[0], for legacy names */
  programName?: string
  ctx?: Partial<Ctx>
}

/**
 * Options of the 0.35.1 tools that today's commands spell otherwise or do not have: every
 * slapgrid-* took the options of all three (`-c/--console` a no-op, `--develop` the old
 * `--all`), ignored where they meant nothing; slapformat's `-c` was a flag, and
 * slapformat and slapproxy took `-l/--log_file`.
 */
const LEGACY_OPTIONS: Record<string, { drop: string[]; dropValued: string[]; rename: Record<string, string> }> = {
  'node software': { drop: ['-c', '--console'], dropValued: ['--only-cp', '--only_cp'], rename: {} },
  'node instance': { drop: ['-c', '--console'], dropValued: ['--only-sr', '--only_sr'], rename: { '--develop': '--force' } },
  'node report': { drop: ['-c', '--console', '--all', '--develop'], dropValued: ['--only-sr', '--only_sr', '--only-cp', '--only_cp'], rename: {} },
  'node format': { drop: ['-c', '--console'], dropValued: [], rename: { '-l': '--log-file' } },
  slapgrid: { drop: [], dropValued: [], rename: {} },
  'proxy start': { drop: [], dropValued: [], rename: { '-l': '--log-file' } },
}

function legacyOptions(argv: string[], command: string): string[] {
  const o = LEGACY_OPTIONS[command]
  if (!o) return argv
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? ''
    if (a === '--') {
      out.push(...argv.slice(i))
      break
    }
    const name = a.startsWith('--') && a.includes('=') ? a.slice(0, a.indexOf('=')) : a
    if (o.drop.includes(a)) continue
    if (o.dropValued.includes(name)) {
      if (name === a) i++
      continue
    }
    out.push(o.rename[a] ?? a)
  }
  return out
}

function isSlaposConfig(path: string): boolean {
  try {
    const st = statSync(path)
    return st.isFile() && st.size < 1 << 20 && /^\[slapos\]/m.test(readFileSync(path, 'utf8'))
  } catch {
    return false
  }
}

/** Legacy tools take the configuration file as a positional argument: turn it into --cfg. */
function legacyArgs(argv: string[], command: string): string[] {
  argv = legacyOptions(argv, command)
  if (command === 'node watchdog' || argv.includes('--cfg')) return argv
  // the last word naming a file with a [slapos] section (a software URL ends in .cfg too), else
  // a word ending in .cfg, the last word, or one that follows no option
  const words = argv.map((a, i) => ({ a, i })).filter(({ a }) => !a.startsWith('-'))
  const configFile = words.reverse().find(({ a }) => isSlaposConfig(a))?.i
  const idx = configFile ?? argv.findIndex((a, i) => !a.startsWith('-') && (a.endsWith('.cfg') || i === argv.length - 1 || !(argv[i - 1] ?? '').startsWith('-')))
  if (idx < 0) return argv
  return [...argv.slice(0, idx), '--cfg', argv[idx] ?? '', ...argv.slice(idx + 1)]
}

export async function run(argv: string[], opts: RunOptions = {}): Promise<number> {
  const io = opts.ctx?.io ?? {
    out: (s: string) => writeOut(1, s),
    err: (s: string) => writeOut(2, s),
    get isTTY() {
      return isTTY(1)
    },
  }
  let log = createLogger({ level: 'info' })
  try {
    const legacy = opts.programName ? LEGACY_NAMES[opts.programName] : undefined
    const words = legacy ? [...legacy.split(' '), ...legacyArgs(argv, legacy)] : argv
    const { global, rest } = splitGlobal(words)
    log = opts.ctx?.log ?? createLogger({ level: global.logLevel ?? levelFromVerbosity(global.verbosity), file: global.logFile, noTime: global.logTime, color: global.logColor })
    if (global.version) {
      io.out(`slapos ${VERSION}\n`)
      return EXIT.OK
    }
    if (rest.length === 0) {
      io.out(globalHelp())
      return EXIT.OK
    }
    if (global.help && rest.length === 1 && rest[0] === 'node') {
      io.out(nodeHelp())
      return EXIT.OK
    }
    const { spec, args } = lookup(rest)
    const { default: mod } = await spec.load()
    // `slapos node supervisorctl status -h`: a help flag after the command's own words is theirs
    const consumed = rest.length - args.length
    if (global.help && mod.passThrough && global.helpAt !== undefined && global.helpAt > consumed) {
      args.splice(global.helpAt - consumed, 0, '-h')
      global.help = false
    }
    if (global.help) {
      io.out(await commandHelp(spec))
      return EXIT.OK
    }
    // plain lines (what cron runs) without yargs; anything else, and every error, through it
    const decl = declarations(mod)
    const quick = decl && fastParse(decl, args, `slapos ${spec.name}`)
    const parsed = (quick ?? (await (await commandParser(spec, mod, args)).parseAsync())) as unknown as RunArgs
    parsed.global = global
    // the help command's text comes from here, which knows every command
    parsed.helpText = async (words) =>
      words.length === 0 ? globalHelp() : words.length === 1 && words[0] === 'node' ? nodeHelp() : await commandHelp(lookup(words).spec)
    parsed.commands = COMMANDS
    const ctx: Ctx = {
      io,
      log,
      runner: opts.ctx?.runner ?? realRunner,
      now: opts.ctx?.now ?? (() => new Date()),
      env: opts.ctx?.env ?? process.env,
      self: opts.ctx?.self ?? selfCommand(),
    }
    return await mod.run(parsed, ctx)
  } catch (err) {
    if (err instanceof SlapError) {
      log.error(describeError(err))
      return err.exitCode
    }
    log.error(describeError(err))
    if (err instanceof Error && err.stack) log.debug(err.stack)
    return EXIT.FAIL
  }
}

/** How to run this same program again (the SEA binary, or node + the bundle in development). */
export function selfCommand(): string[] {
  const script = process.argv[1]
  if (script && script !== process.execPath && /\.(c?js|ts)$/.test(script)) return [process.execPath, script]
  return [process.execPath]
}
