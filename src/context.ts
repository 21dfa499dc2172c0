// Ctx: the effects a command may use (output, logging, child processes, clock). main.ts
// builds the real one; tests build one with string buffers.
import type { Logger } from './log.ts'
import type { Runner } from './system.ts'

export interface Io {
  /** results: stdout */
  out(s: string): void
  /** messages for a person that are not log records (prompts, progress): stderr */
  err(s: string): void
  isTTY: boolean
}

export interface Ctx {
  io: Io
  log: Logger
  runner: Runner
  now(): Date
  env: NodeJS.ProcessEnv
  /** path of the running slapos executable (for the watchdog entry, legacy names) */
  self: string[]
}
