// What the CLI frame (cli.ts) and every command share: the shape of a command and of its
// parsed arguments, and reading the configuration a command names. Commands import this,
// never cli.ts, so that the frame sits above them.
import type { Argv } from 'yargs'
import { configPath, ConfigFile, type Family } from './config.ts'
import type { Ctx } from './context.ts'
import type { Level } from './log.ts'

export type Group = 'node' | 'client' | 'other' | 'cachelookup'

export interface CommandSpec {
  /** words of the command: 'node format', 'proxy start', 'request' */
  name: string
  group: Group
  /** one line, shown in the global help */
  summary: string
  /** other word sequences that select this command ('format', 'grid software') */
  aliases?: string[]
  load: () => Promise<{ default: CommandModule }>
}

export interface RunArgs {
  [key: string]: unknown
  _: (string | number)[]
  /** global options */
  global: GlobalOptions
  /** the global help (no words) or one command's, given by the frame (the help command uses it) */
  helpText?: (words: string[]) => Promise<string>
  /** the command table, given by the frame (shell completion lists it) */
  commands?: readonly CommandSpec[]
}

export interface CommandModule {
  /** which configuration family `--cfg` names; adds the option with its documented default */
  cfg?: Family
  /** longer description for `slapos help <command>` */
  description?: string
  /** positional part of the usage line, e.g. '<reference> <software-url>' */
  usage?: string
  options?: (y: Argv) => Argv
  /** let unknown words and options through to the command (supervisorctl) */
  passThrough?: boolean
  run(args: RunArgs, ctx: Ctx): Promise<number>
}

export interface GlobalOptions {
  verbosity: number
  logFile?: string | undefined
  logLevel?: Level | undefined
  logTime: boolean
  logColor: boolean
  help: boolean
  /** where -h/--help was among the remaining words (a pass-through command hands a later one on) */
  helpAt?: number | undefined
  version: boolean
}

/** Resolves `--cfg` (or its environment variable) and reads the file. */
export function readConfig(family: Family, cli: unknown, env: NodeJS.ProcessEnv): ConfigFile {
  return ConfigFile.load(configPath(family, typeof cli === 'string' ? cli : undefined, env), family)
}
