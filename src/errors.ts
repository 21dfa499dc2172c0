// Every error the product expects carries a machine code, an exit status and, when it
// helps, a hint. cli.ts turns them into one line for the operator (no stack trace).
import { EXIT } from './exit-codes.ts'

export class SlapError extends Error {
  readonly code: string
  readonly exitCode: number
  readonly hint: string | undefined
  constructor(message: string, opts: { code?: string; exitCode?: number; hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = new.target.name
    this.code = opts.code ?? 'E_SLAPOS'
    this.exitCode = opts.exitCode ?? EXIT.FAIL
    this.hint = opts.hint
  }
}

/** Bad command line: exit 2 like argparse. */
export class UsageError extends SlapError {
  constructor(message: string, hint?: string) {
    super(message, { code: 'E_USAGE', exitCode: EXIT.USAGE, hint })
  }
}

/** Missing, unreadable or invalid configuration: exit 1 like the original. */
export class ConfigError extends SlapError {
  constructor(message: string, hint?: string) {
    super(message, { code: 'E_CONFIG', exitCode: EXIT.FAIL, hint })
  }
}

/** A command that must run as root was run by another user: exit 5. */
export class NotRootError extends SlapError {
  constructor() {
    super('This slapos command must be run as root.', {
      code: 'E_NOT_ROOT',
      exitCode: EXIT.NOT_ROOT,
      hint: 'run it with sudo, or set root_check = false in [slapos] for a node without root',
    })
  }
}

/** Another process holds the pid file of this command: exit 10 like slapgrid. */
export class LockedError extends SlapError {
  constructor(pidFile: string, pid: number) {
    super(`another slapos process (pid ${pid}) is running: ${pidFile} is held`, {
      code: 'E_LOCKED',
      exitCode: EXIT.LOCKED,
      hint: 'wait for it to finish, or remove the pid file if that process is gone',
    })
  }
}

// --- errors of the SLAP protocol (names of slapos.core slap/exception.py) ---

/** HTTP 404 from the master. */
export class NotFoundError extends SlapError {
  constructor(message: string) {
    super(message, { code: 'E_NOT_FOUND', exitCode: EXIT.FAIL })
  }
}

/** HTTP 408: the master has not allocated or computed it yet. */
export class ResourceNotReadyError extends SlapError {
  constructor(message: string) {
    super(message, { code: 'E_NOT_READY', exitCode: EXIT.NOT_READY })
  }
}

/** HTTP 401/403. */
export class AuthorizationError extends SlapError {
  constructor(message: string) {
    super(message, {
      code: 'E_UNAUTHORIZED',
      exitCode: EXIT.FAIL,
      hint: 'check the certificate and key in the configuration',
    })
  }
}

/** HTTP 5xx or any other unexpected status. */
export class ServerError extends SlapError {
  readonly status: number
  constructor(message: string, status: number) {
    super(message, { code: 'E_SERVER', exitCode: EXIT.FAIL })
    this.status = status
  }
}

/** The master could not be reached at all (refused, DNS, TLS, timeout). */
export class ConnectionError extends SlapError {
  constructor(message: string, cause?: unknown) {
    super(message, {
      code: 'E_CONNECTION',
      exitCode: EXIT.FAIL,
      hint: 'check master_url and that the master (or `slapos proxy start`) is running',
      cause,
    })
  }
}

/** One line for the operator: the message, then what to try. */
export function describeError(err: unknown): string {
  if (err instanceof SlapError) return err.hint ? `${err.message} (${err.hint})` : err.message
  if (err instanceof Error) return err.message
  return String(err)
}
