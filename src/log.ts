// Logging for every command: human lines on stderr (results go to stdout), and every
// record in --log-file. Formats follow the original (spec cli.md §5) so log scrapers keep
// working; colour only when stderr is a terminal.
import { appendFileSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { escapeControls } from './names.ts'
import { isTTY, writeOut } from './stdio.ts'

export type Level = 'debug' | 'info' | 'warning' | 'error' | 'critical'
const RANK: Record<Level, number> = { debug: 10, info: 20, warning: 30, error: 40, critical: 50 }

export interface Logger {
  debug(msg: string): void
  info(msg: string): void
  warning(msg: string): void
  error(msg: string): void
  critical(msg: string): void
  /** A logger whose lines start with `[prefix] `, for one partition or one software. */
  child(prefix: string): Logger
}

export interface LogOptions {
  /** console threshold */
  level: Level
  /** also append every record (debug included) to this file */
  file?: string | undefined
  /** drop the timestamp from console lines (the original's --log-time) */
  noTime?: boolean
  /** colours: only honoured when the stream is a terminal */
  color?: boolean
  write?: (line: string) => void
  isTTY?: boolean
  name?: string
}

const COLOR: Record<Level, string> = { debug: '32', info: '0', warning: '33', error: '31', critical: '31' }

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n)
}
function stamp(d: Date): string {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
}

export function createLogger(opts: LogOptions): Logger {
  const write = opts.write ?? ((line: string) => writeOut(2, line))
  // asked only when a line is written in colour or not (a logger made and not used asks nothing)
  let color: boolean | undefined = opts.color === false ? false : opts.isTTY
  const colored = (): boolean => (color ??= isTTY(2))
  const name = opts.name ?? 'slapos'
  const threshold = RANK[opts.level]
  let fileReady = false

  function emit(level: Level, prefix: string, msg: string): void {
    const now = new Date()
    const text = prefix + msg
    if (RANK[level] >= threshold) {
      const head = `${name}[${process.pid}] ${level.toUpperCase()}`
      const time = opts.noTime ? '' : stamp(now) + ' '
      const line = colored()
        ? `${opts.noTime ? '' : `\x1b[32m${stamp(now)}\x1b[0m `}\x1b[34m${name}\x1b[0m[${process.pid}] \x1b[1m${level.toUpperCase()}\x1b[0m \x1b[${COLOR[level]}m${text}\x1b[0m\n`
        : `${time}${head} ${text}\n`
      write(line)
    }
    if (opts.file) {
      if (!fileReady) {
        mkdirSync(dirname(opts.file), { recursive: true })
        fileReady = true
      }
      const ms = String(now.getMilliseconds()).padStart(3, '0')
      appendFileSync(opts.file, `[${stamp(now)},${ms}] ${level.toUpperCase().padEnd(8)} ${text}\n`)
    }
  }

  function make(prefix: string): Logger {
    return {
      debug: (m) => emit('debug', prefix, m),
      info: (m) => emit('info', prefix, m),
      warning: (m) => emit('warning', prefix, m),
      error: (m) => emit('error', prefix, m),
      critical: (m) => emit('critical', prefix, m),
      child: (p) => make(`${prefix}[${p}] `),
    }
  }
  return make('')
}

/** Verbosity as the original counts it: 0 → warning, 1 (default) → info, 2+ → debug. */
export function levelFromVerbosity(v: number): Level {
  return v <= 0 ? 'warning' : v === 1 ? 'info' : 'debug'
}

/**
 * A logger that writes every message with its control characters escaped (`\n`, `\x1b` ...):
 * for servers whose messages carry values from requests, which must never forge a line.
 */
export function escapingLogger(log: Logger): Logger {
  return {
    debug: (m) => log.debug(escapeControls(m)),
    info: (m) => log.info(escapeControls(m)),
    warning: (m) => log.warning(escapeControls(m)),
    error: (m) => log.error(escapeControls(m)),
    critical: (m) => log.critical(escapeControls(m)),
    child: (p) => escapingLogger(log.child(escapeControls(p))),
  }
}
