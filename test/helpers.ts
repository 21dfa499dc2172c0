// Shared by the tests: run the built binary, make temp dirs. Fakes, when a test needs one,
// live here and say so in their name.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

export const ROOT = resolve(import.meta.dirname, '..')
export const SLAPOS = join(ROOT, 'dist', 'slapos')
export const SHARED_FIXTURES = resolve(ROOT, '..', 'shared', 'fixtures')
export const FIXTURES = join(ROOT, 'test', 'fixtures')

export function tempDir(prefix = 'slapos-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

export interface Result {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs dist/slapos synchronously (for short commands). */
export function slapos(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; argv0?: string } = {}): Result {
  const r = spawnSync(SLAPOS, args, {
    encoding: 'utf8',
    env: opts.env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
    cwd: opts.cwd,
    input: opts.input,
    argv0: opts.argv0,
    timeout: 120_000,
  })
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

/** Runs dist/slapos without blocking the event loop (needed when the test also serves HTTP). */
export function slaposAsync(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {}): Promise<Result> {
  return new Promise((res, rej) => {
    const child = spawn(SLAPOS, args, {
      env: opts.env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.stdin.end(opts.input ?? '')
    child.on('error', rej)
    child.on('close', (code) => res({ code, stdout, stderr }))
  })
}
