// Output written to the descriptor: complete through a pipe that would block, quiet when the
// reader went away, and the built program's lines in order on a file.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { SLAPOS, tempDir } from './helpers.ts'

const ROOT = join(import.meta.dirname, '..')

/** Runs a few lines of TypeScript using src/stdio.ts in a child Node, through sh -c `pipeline` (the child is "$@"). */
function child(code: string, pipeline: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('sh', ['-c', pipeline, 'sh', process.execPath, '--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const WRITE_4MB = `import { writeOut } from './src/stdio.ts'; for (let i = 0; i < 64; i++) writeOut(1, String(i % 10).repeat(65536)); writeOut(2, 'done\\n')`

test('a pipe made non-blocking by the other side: every byte arrives, in order', () => {
  // python sets O_NONBLOCK on the pipe (shared with the reader's end), then becomes the writer;
  // the reader starts late, so the pipe fills and a direct write meets EAGAIN
  const nonblocking = `import fcntl, os, sys; fl = fcntl.fcntl(1, fcntl.F_GETFL); fcntl.fcntl(1, fcntl.F_SETFL, fl | os.O_NONBLOCK); os.execv(sys.argv[1], sys.argv[1:])`
  const r = child(WRITE_4MB, `python3 -c '${nonblocking}' "$@" | (sleep 1; cat)`)
  assert.is(r.status, 0, r.stderr)
  assert.is(r.stdout.length, 64 * 65536)
  for (let i = 0; i < 64; i++) assert.is(r.stdout.slice(i * 65536, i * 65536 + 1), String(i % 10), `chunk ${i} in place`)
  assert.match(r.stderr, /done/)
})

test('a reader that went away (EPIPE): no error, no stack trace, exit 0', () => {
  const r = child(WRITE_4MB, `"$@" | head -c 10 >/dev/null; echo "exit $?"`)
  assert.match(r.stdout, /exit 0/)
  assert.not.match(r.stderr, /Error|EPIPE|at /)
})

test('the built program: log lines and output on a file, whole and in order', () => {
  const dir = tempDir()
  const out = join(dir, 'out.txt')
  const r = spawnSync('sh', ['-c', `"$1" --version >"$2" 2>&1; "$1" node instance --cfg /nonexistent/slapos.cfg >>"$2" 2>&1; exit 0`, 'sh', SLAPOS, out], { encoding: 'utf8' })
  assert.is(r.status, 0)
  const lines = readFileSync(out, 'utf8').split('\n')
  assert.match(lines[0] ?? '', /^slapos \d/)
  assert.match(lines[1] ?? '', /ERROR .*slapos\.cfg/)
})

test.run()
