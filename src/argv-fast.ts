// A parser for the plain command lines cron and scripts run (`node instance --now --cfg X -j 2`)
// that spares loading and building yargs: about 20 ms of a run whose whole work may take 100.
// It reads a command's option declarations (the same `options(y)` function yargs gets) through
// a recorder, and answers only for a line yargs could not read otherwise: long options and
// one-letter aliases the command declares, each at most once, booleans bare, string values
// that do not look like options, every demanded option present. Anything else (help, positional words, repeats, `--no-x`,
// `--flag=value` on a boolean, grouped short flags, conflicts, a value a coerce function
// refuses, a declaration it does not know) returns undefined, and yargs parses the line.
// test/argv-fast.test.ts compares both on generated lines.
import type { Argv } from 'yargs'
import type { CommandModule } from './command.ts'

interface Declared {
  /** the name given to `.option()` */
  key: string
  type: 'string' | 'boolean'
  /** every name yargs sets: the key, its aliases, and the camelCase form of each dashed one */
  names: string[]
  coerce?: (v: unknown) => unknown
}

export interface Declarations {
  /** spellings on the command line (`--only-cp`, `--only`, `-j`) -> declaration */
  flags: Map<string, Declared>
  conflicts: [string, string][]
  /** keys of the options declared with demandOption: a line without one is yargs' to refuse */
  demanded: string[]
}

const KNOWN_KEYS = new Set(['type', 'alias', 'describe', 'hidden', 'coerce', 'demandOption'])

const camel = (s: string): string => s.replace(/-+([^-])/g, (_, c: string) => c.toUpperCase())

/**
 * The options a command declares, or undefined when a declaration is one this parser does not
 * reproduce (a default, a count, choices, an array...) or the command takes words through.
 */
export function declarations(mod: CommandModule): Declarations | undefined {
  if (mod.passThrough) return undefined
  const flags = new Map<string, Declared>()
  const conflicts: [string, string][] = []
  const demanded: string[] = []
  let plain = true
  const option = (key: string, o: Record<string, unknown>): void => {
    if (!Object.keys(o).every((k) => KNOWN_KEYS.has(k)) || (o.type !== 'string' && o.type !== 'boolean')) {
      plain = false
      return
    }
    // demandOption: a message (a string) is yargs' to print; true only
    if (o.demandOption !== undefined && o.demandOption !== true && o.demandOption !== false) {
      plain = false
      return
    }
    if (o.demandOption === true) demanded.push(key)
    const aliases = o.alias === undefined ? [] : Array.isArray(o.alias) ? o.alias.map(String) : [String(o.alias)]
    const spelled = [key, ...aliases]
    const names = [...spelled]
    for (const n of spelled) if (n.includes('-') && !names.includes(camel(n))) names.push(camel(n))
    const d: Declared = { key, type: o.type, names, coerce: typeof o.coerce === 'function' ? (o.coerce as (v: unknown) => unknown) : undefined }
    for (const n of spelled) {
      if (flags.has(n)) plain = false
      flags.set(n.length === 1 ? `-${n}` : `--${n}`, d)
    }
  }
  const recorder: Argv = new Proxy({} as Argv, {
    get(_, method) {
      return (...a: unknown[]) => {
        if (method === 'option' && typeof a[0] === 'string' && typeof a[1] === 'object' && a[1] !== null) option(a[0], a[1] as Record<string, unknown>)
        else if (method === 'conflicts' && typeof a[0] === 'string' && typeof a[1] === 'string') conflicts.push([a[0], a[1]])
        else plain = false
        return recorder
      }
    },
  })
  if (mod.cfg) option('cfg', { type: 'string' })
  mod.options?.(recorder)
  return plain ? { flags, conflicts, demanded } : undefined
}

/** What yargs would give the command for `args`, or undefined when yargs has to say it. */
export function fastParse(decl: Declarations, args: string[], scriptName: string): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = { _: [], $0: scriptName }
  const seen = new Set<string>()
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? ''
    const eq = a.startsWith('--') ? a.indexOf('=') : -1
    const spelled = eq > 0 ? a.slice(0, eq) : a
    const d = decl.flags.get(spelled)
    if (!d || seen.has(d.key)) return undefined
    seen.add(d.key)
    let value: unknown
    if (d.type === 'boolean') {
      if (eq > 0) return undefined
      value = true
    } else {
      const v = eq > 0 ? a.slice(eq + 1) : args[++i]
      if (v === undefined || (eq < 0 && v.startsWith('-'))) return undefined
      value = v
    }
    if (d.coerce) {
      try {
        value = d.coerce(value)
      } catch {
        return undefined
      }
    }
    for (const n of d.names) out[n] = value
  }
  const key = (n: string) => decl.flags.get(n.length === 1 ? `-${n}` : `--${n}`)?.key
  for (const [x, y] of decl.conflicts) if (seen.has(key(x) ?? x) && seen.has(key(y) ?? y)) return undefined
  if (decl.demanded.some((k) => !seen.has(k))) return undefined
  return out
}
