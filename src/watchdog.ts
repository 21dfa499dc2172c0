// The supervisord event listener of the node (`slapos node watchdog`, old name
// slapos-watchdog): when a watched service (etc/service, process name `*-on-watch`) exits
// or fails to start, it bangs the partition's instance so the master re-deploys it (spec
// grid.md §6.1). supervisord starts it; it only needs the filesystem and, to bang, the
// SLAP client, which is loaded at the first bang.
//
// What stays running is small: `slapos node watchdog` replaces itself (execve, same pid) with
// a /bin/sh loop that speaks the protocol and starts `slapos node watchdog --handle-event` only
// for an EXITED/FATAL event whose payload names a `-on-watch` process; that child decides and
// bangs (handleEvent), then exits. `--in-process` keeps the whole loop in this process.
//
// Listener protocol on stdin/stdout (one event at a time):
//
//   -> READY\n
//   <- ver:3.0 server:supervisor serial:21 pool:watchdog poolserial:10 eventname:PROCESS_STATE_EXITED len:84\n
//   <- processname:web-on-watch groupname:slappart0 from_state:RUNNING expected:0 pid:2766   (len bytes)
//   -> RESULT 2\nOK      (then READY again)
import { join } from 'node:path'
import type { Logger } from './log.ts'
import { readUserFile, replaceFile } from './managers.ts'
import { escapeControls, isSafeId, quote } from './names.ts'

export interface WatchdogOptions {
  masterUrl: string
  computerId: string
  /** `<repo>/<partition>.crt` and `.key` authenticate the bang; none: no client certificate */
  certificateRepositoryPath?: string | undefined
  /** known: at most one bang per successful deployment (.slapos_latest_bang_timestamp) */
  instanceRoot?: string | undefined
}

/** Sends the bang of one partition; the default one uses SlapClient with the partition certificate. */
export type BangSender = (partitionId: string, message: string) => Promise<void>

export const BANG_TIMESTAMP_FILE = '.slapos_latest_bang_timestamp'

/** The events the listener subscribes to, and the only ones that may bang. */
export const WATCHED_EVENTS = ['PROCESS_STATE_EXITED', 'PROCESS_STATE_FATAL']

/**
 * Runs the listener until `input` ends. Each event is acknowledged even when the bang
 * fails (the failure is logged): a listener that dies would be restarted by supervisord
 * and miss events meanwhile.
 */
export async function runWatchdog(
  opts: WatchdogOptions,
  io: { input: NodeJS.ReadableStream; write(s: string): void; log: Logger; send?: BangSender },
): Promise<void> {
  const reader = new ByteReader(io.input)
  const send = io.send ?? slapBangSender(opts)
  for (;;) {
    io.write('READY\n')
    const line = await reader.line()
    if (line === null) return
    const header = parseTokens(line)
    const len = Number.parseInt(header.len ?? '0', 10)
    const payload = await reader.bytes(Number.isFinite(len) && len > 0 ? len : 0)
    if (payload === null) return
    try {
      await handleEvent(opts, header, parseTokens(payload.toString('utf8')), send, io.log)
    } catch (e) {
      io.log.error(`watchdog: ${e instanceof Error ? e.message : String(e)}`)
    }
    io.write('RESULT 2\nOK')
  }
}

/**
 * The listener loop of the shell (POSIX sh; `head -c`, given by its path as $1, reads the
 * payload). It never evaluates what it reads: the header and payload are matched by `case`
 * patterns and handed to the handler command (the other arguments) on its stdin; the
 * handler's output goes to stderr, never into the protocol. The shell's `read` takes one byte
 * at a time from a pipe and `head -c` exactly len bytes, and supervisord sends nothing more
 * before RESULT, so neither reads past the event. Ends at the end of input, like the
 * in-process loop. The patterns are a superset of handleEvent's rule; the handler decides.
 */
export const SHELL_LISTENER = [
  'head=$1',
  'shift',
  "while printf 'READY\\n' && IFS= read -r header; do",
  '  len=${header##*len:}',
  '  len=${len%%[!0-9]*}',
  '  case $header in',
  '  *eventname:PROCESS_STATE_EXITED|*eventname:PROCESS_STATE_EXITED\\ *|*eventname:PROCESS_STATE_FATAL|*eventname:PROCESS_STATE_FATAL\\ *)',
  '    payload=$("$head" -c "${len:-0}"; echo .)',
  '    payload=${payload%.}',
  '    case $payload in',
  '    *-on-watch*) printf \'%s\\n%s\' "$header" "$payload" | "$@" >&2 ;;',
  '    esac ;;',
  '  *) "$head" -c "${len:-0}" >/dev/null ;;',
  '  esac',
  "  printf 'RESULT 2\\nOK'",
  'done',
].join('\n')

/** The argv that runs SHELL_LISTENER with `head` (a path) and `handler` as the command for one event. */
export function shellListenerArgv(head: string, handler: readonly string[]): string[] {
  return ['/bin/sh', '-c', SHELL_LISTENER, 'slapos-watchdog', head, ...handler]
}

/** Largest event the handler reads (supervisord's process events are a few hundred bytes). */
const MAX_EVENT_BYTES = 64 * 1024

/**
 * `--handle-event`: one event on `input` (the header line, then the payload, as the shell
 * loop passes them), handled like one turn of runWatchdog. Returns whether it banged.
 */
export async function handleOneEvent(opts: WatchdogOptions, input: NodeJS.ReadableStream, log: Logger, send?: BangSender): Promise<boolean> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of input as AsyncIterable<Buffer | string>) {
    const b = typeof c === 'string' ? Buffer.from(c) : c
    size += b.length
    if (size > MAX_EVENT_BYTES) throw new Error(`event larger than ${MAX_EVENT_BYTES} bytes, ignored`)
    chunks.push(b)
  }
  const all = Buffer.concat(chunks)
  const nl = all.indexOf(0x0a)
  if (nl < 0) return false
  const header = parseTokens(all.subarray(0, nl).toString('utf8'))
  const payload = all.subarray(nl + 1)
  // the input ended inside the event: dropped, as the in-process loop drops it
  if (payload.length < Number.parseInt(header.len ?? '0', 10)) return false
  return handleEvent(opts, header, parseTokens(payload.toString('utf8')), send ?? slapBangSender(opts), log)
}

/**
 * One event: bangs when it is an EXITED/FATAL of a `-on-watch` process and the
 * de-duplication allows it. Returns true when a bang was sent.
 */
export async function handleEvent(opts: WatchdogOptions, header: Record<string, string>, payload: Record<string, string>, send: BangSender, log: Logger): Promise<boolean> {
  const event = header.eventname ?? ''
  const processName = payload.processname ?? ''
  const partitionId = payload.groupname ?? ''
  if (!WATCHED_EVENTS.includes(event) || !processName.includes('-on-watch') || !partitionId) return false
  // the group is a partition id: it names a directory below the instance root
  if (!isSafeId(partitionId)) {
    log.warning(`watchdog: ${quote(processName)} of group ${quote(partitionId)} stopped, but that group is not a partition id; not banging`)
    return false
  }
  const partitionPath = opts.instanceRoot ? join(opts.instanceRoot, partitionId) : undefined
  if (partitionPath && !bangAllowed(partitionPath)) {
    log.info(`${escapeControls(processName)} of ${partitionId} stopped (${event}); already banged since the last deployment, not banging again`)
    return false
  }
  const message = `${processName} process in partition ${partitionId} encountered a problem`
  log.info(`Banging ${partitionId}: ${escapeControls(message)}`)
  await send(partitionId, message)
  if (partitionPath) recordBang(partitionPath)
  return true
}

/**
 * HEAD's de-duplication: bang if no bang was recorded yet; never if the partition never
 * deployed successfully (no .timestamp) but already banged; else only when .timestamp is
 * newer than the value recorded at the last bang.
 */
export function bangAllowed(partitionPath: string): boolean {
  const last = readTrimmed(join(partitionPath, BANG_TIMESTAMP_FILE))
  if (last === undefined) return true
  const deployed = readTrimmed(join(partitionPath, '.timestamp'))
  if (deployed === undefined) return false
  return toNumber(deployed) > toNumber(last)
}

/**
 * After a bang: .slapos_latest_bang_timestamp = .timestamp (or 0). The directory belongs to
 * the partition's user: the file is replaced by a new one, never written through a link.
 */
export function recordBang(partitionPath: string): void {
  const value = readTrimmed(join(partitionPath, '.timestamp')) ?? '0'
  replaceFile(join(partitionPath, BANG_TIMESTAMP_FILE), value, 0o644)
}

/** `key:value key:value` tokens of a listener header or payload. */
export function parseTokens(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const token of text.split(/\s+/)) {
    const i = token.indexOf(':')
    if (i > 0) out[token.slice(0, i)] = token.slice(i + 1)
  }
  return out
}

// --- internal ---

function slapBangSender(opts: WatchdogOptions): BangSender {
  return async (partitionId, message) => {
    const { SlapClient } = await import('./slap-client.ts')
    const repo = opts.certificateRepositoryPath
    const client = new SlapClient({
      masterUrl: opts.masterUrl,
      keyFile: repo ? join(repo, `${partitionId}.key`) : undefined,
      certFile: repo ? join(repo, `${partitionId}.crt`) : undefined,
      timeoutMs: 30_000,
    })
    await client.softwareInstanceBang(opts.computerId, partitionId, message)
  }
}

/**
 * A timestamp file of the partition, trimmed: only a small regular file is read (the
 * partition's user may have put a link, a FIFO or a huge file there); anything else is absent.
 */
function readTrimmed(path: string): string | undefined {
  const f = readUserFile(path, 64)
  return f.kind === 'ok' ? f.bytes.toString('utf8').trim() : undefined
}

/** Timestamps are integers written by slapgrid; anything unreadable counts as 0. */
function toNumber(s: string): number {
  const n = Number.parseFloat(s)
  return Number.isFinite(n) ? n : 0
}

/** Reads lines and exact byte counts from a stream (the payload length is in bytes). */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0)
  private ended = false
  private wake: (() => void) | undefined

  constructor(stream: NodeJS.ReadableStream) {
    stream.on('data', (c: Buffer | string) => {
      this.buf = Buffer.concat([this.buf, typeof c === 'string' ? Buffer.from(c) : c])
      this.notify()
    })
    stream.on('end', () => {
      this.ended = true
      this.notify()
    })
    stream.on('error', () => {
      this.ended = true
      this.notify()
    })
  }

  /** The next line without its newline; null at the end of the stream. */
  async line(): Promise<string | null> {
    for (;;) {
      const i = this.buf.indexOf(0x0a)
      if (i >= 0) {
        const s = this.buf.subarray(0, i).toString('utf8')
        this.buf = this.buf.subarray(i + 1)
        return s
      }
      if (this.ended) return null
      await this.more()
    }
  }

  /** Exactly n bytes; null if the stream ends first. */
  async bytes(n: number): Promise<Buffer | null> {
    for (;;) {
      if (this.buf.length >= n) {
        const b = this.buf.subarray(0, n)
        this.buf = this.buf.subarray(n)
        return b
      }
      if (this.ended) return null
      await this.more()
    }
  }

  private more(): Promise<void> {
    return new Promise((r) => (this.wake = r))
  }

  private notify(): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }
}
