// Standard output and error without Node's stream objects where they are not needed: the
// first touch of process.stdout or process.stderr loads the stream machinery (~5 ms each),
// for a cron run that writes two log lines. Text for a pipe, a file or /dev/null is written
// to the descriptor directly; a terminal keeps its stream (Node's tty handling). A descriptor
// that would block (a non-blocking pipe set up by somebody else) hands that write and every
// later one to the stream, so the order of lines holds.
import { fstatSync, writeSync } from 'node:fs'

type Fd = 1 | 2
type Mode = 'direct' | 'stream' | 'closed'
const modes: { 1?: Mode; 2?: Mode } = {}
const ttys: { 1?: boolean; 2?: boolean } = {}
const listening: { 1?: boolean; 2?: boolean } = {}

/** process.stdout or process.stderr; a reader gone away (EPIPE) ends the output there too, instead of an unhandled error. */
function stream(fd: Fd): NodeJS.WriteStream {
  const s = fd === 1 ? process.stdout : process.stderr
  if (!listening[fd]) {
    listening[fd] = true
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') throw e
      modes[fd] = 'closed'
    })
  }
  return s
}

/** Whether fd is a terminal. A terminal is a character device: anything else (and /dev/null) is answered without loading node:tty. */
export function isTTY(fd: Fd): boolean {
  let tty = ttys[fd]
  if (tty === undefined) {
    let maybe = false
    try {
      const st = fstatSync(fd)
      // memory devices (major 1: /dev/null, /dev/zero, /dev/full) are character devices too
      maybe = st.isCharacterDevice() && Math.floor(st.rdev / 256) % 4096 !== 1
    } catch {
      /* closed: not a terminal */
    }
    tty = ttys[fd] = maybe && stream(fd).isTTY === true
  }
  return tty
}

/** Writes text on fd (1 or 2), synchronously when fd is not a terminal. A reader gone away (EPIPE) ends the output quietly. */
export function writeOut(fd: Fd, text: string): void {
  let mode = modes[fd]
  if (mode === undefined) mode = modes[fd] = isTTY(fd) ? 'stream' : 'direct'
  if (mode === 'closed') return
  if (mode === 'stream') {
    stream(fd).write(text)
    return
  }
  const bytes = Buffer.from(text, 'utf8')
  let done = 0
  try {
    while (done < bytes.length) done += writeSync(fd, bytes, done)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'EAGAIN') {
      modes[fd] = 'stream'
      stream(fd).write(bytes.subarray(done))
    } else if (code === 'EPIPE' || code === 'EBADF') modes[fd] = 'closed'
    else throw e
  }
}
