// Values that come from outside (the master, a request, a partition's files) and end up
// naming a path, a config line or a log line. Pure: the proxy and the node both check with
// these before a value touches the disk, a configuration file or a log.

/** Longest partition or computer identifier accepted (the original's are well under 100). */
export const MAX_ID_LENGTH = 255

const ID_RE = /^[A-Za-z0-9._-]+$/

/**
 * A partition or computer identifier usable as one path component: letters, digits, `.`,
 * `_`, `-`, not `.` nor `..`, at most MAX_ID_LENGTH characters.
 */
export function isSafeId(id: unknown): id is string {
  return typeof id === 'string' && id.length <= MAX_ID_LENGTH && ID_RE.test(id) && id !== '.' && id !== '..'
}

/** Why `id` is refused, for a one-line error (`what` names the field), or undefined when it is safe. */
export function idProblem(what: string, id: unknown): string | undefined {
  if (isSafeId(id)) return undefined
  return `${what} ${typeof id === 'string' ? quote(id) : String(id)} is not a safe identifier (letters, digits, '.', '_' and '-', not '.' or '..', at most ${MAX_ID_LENGTH} characters)`
}

/** True when `s` has an ASCII control character (newline, NUL, ESC, DEL ...). */
export function hasControl(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u001f\u007f]/.test(s)
}

/**
 * `s` with every control character (C0, DEL, C1, and the Unicode line and paragraph separators)
 * written as an escape, so that a value from a request can never start a line of its own or
 * move the cursor of a terminal reading the log.
 */
export function escapeControls(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    if (c === '\n') return '\\n'
    if (c === '\r') return '\\r'
    if (c === '\t') return '\\t'
    const code = c.charCodeAt(0)
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`
  })
}

/** `s` quoted for a message, its controls escaped. */
export function quote(s: string): string {
  return `'${escapeControls(s)}'`
}
