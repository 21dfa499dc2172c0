// The only module that starts child processes. Format, grid and supervisor code call a
// Runner so that tests can record the exact command list (format) while the real one
// runs everything else. No shell: argv arrays only, so configuration values are never
// interpreted by a shell.
import type { ChildProcess } from 'node:child_process'

// loaded on first use: `slapos --version`, the client commands and the proxy never start a
// process, and node:child_process (with net and dgram behind it) costs milliseconds to load
const childProcess = (): typeof import('node:child_process') => process.getBuiltinModule('node:child_process')

/** Running under Bun (the Bun-compiled executable) rather than Node. */
const BUN = process.versions.bun !== undefined

export interface RunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  uid?: number
  gid?: number
  /**
   * supplementary groups of the child, with uid/gid when we are root (node's spawn can only
   * clear them: the child is started through util-linux `setpriv`, which sets them, then
   * execs the command)
   */
  groups?: number[]
  /** bytes written to the child's stdin */
  input?: string
  /** kill the child after this many milliseconds */
  timeoutMs?: number
  /**
   * run the child in its own process group; on timeout the whole group gets SIGTERM, then
   * SIGKILL `killGraceMs` later (default 1000), so grandchildren do not outlive it
   */
  processGroup?: boolean
  killGraceMs?: number
  /** called with each chunk of output as it arrives (stdout and stderr merged) */
  onOutput?: (chunk: string) => void
  /** file mode creation mask of the child (node has no spawn option: set around the fork) */
  umask?: number
  /** the child shares our terminal (stdin/stdout/stderr), e.g. buildout -D; output is not captured */
  interactive?: boolean
  /** when aborted, the child (its group with processGroup) gets SIGTERM, then SIGKILL `killGraceMs` later */
  abort?: AbortSignal
  /** called with the child's pid once it is started (node collect records the pid of its `du`) */
  onSpawn?: (pid: number) => void
}

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  timedOut: boolean
}

export interface Runner {
  run(argv: string[], opts?: RunOptions): Promise<RunResult>
  /**
   * Runs commands one after the other until one exits non-zero, each with stdin from
   * /dev/null and its stderr with its stdout: how many ran, and the exit code and output of
   * the last one that ran (code 0 when they all did). The same as calling `run` for each in
   * turn; a runner without it gets exactly that.
   */
  runMany?(argvs: string[][], opts?: Pick<RunOptions, 'env' | 'cwd'>): Promise<ManyResult>
}

export interface ManyResult {
  ran: number
  code: number
  output: string
}

/** A word for /bin/sh: single-quoted, its own single quotes closed, escaped and reopened. */
function shellWord(w: string): string {
  return `'${w.replaceAll("'", `'\\''`)}'`
}

/** Spawns real processes. Output is kept in memory, capped to its last 1 MiB. */
export const realRunner: Runner = {
  run(argv, opts = {}) {
    return new Promise((resolve, reject) => {
      const [cmd, ...args] = argv
      if (cmd === undefined) {
        reject(new Error('empty command'))
        return
      }
      const drop = privilegeDrop(opts)
      // spawn forks synchronously: the child inherits this umask, then ours is restored
      const savedUmask = opts.umask === undefined ? undefined : process.umask(opts.umask)
      let child: ChildProcess
      try {
        const env = opts.env ?? process.env
        // Bun's spawn with a uid fails with EACCES on the first PATH entry the new user cannot
        // search instead of going on as execvp does (Node's child does it right): under Bun a
        // bare name is looked up here first, for the uid and gid the child gets (no other group)
        const exe = BUN && drop.uid !== undefined && drop.argv.length === 0 ? onPath(cmd, env.PATH, drop.uid, [drop.gid ?? -1]) : cmd
        child = childProcess().spawn(drop.argv[0] ?? exe, [...drop.argv.slice(1), ...(drop.argv.length ? [cmd] : []), ...args], {
          cwd: opts.cwd,
          env,
          uid: drop.uid,
          gid: drop.gid,
          detached: opts.processGroup === true,
          stdio: opts.interactive ? 'inherit' : [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        })
      } finally {
        if (savedUmask !== undefined) process.umask(savedUmask)
      }
      if (child.pid !== undefined) opts.onSpawn?.(child.pid)
      const cap = 1 << 20
      let stdout = ''
      let stderr = ''
      let timedOut = false
      const timer =
        opts.timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              timedOut = true
              if (opts.processGroup && child.pid !== undefined) {
                const pgid = child.pid
                killGroup(pgid, 'SIGTERM')
                setTimeout(() => killGroup(pgid, 'SIGKILL'), opts.killGraceMs ?? 1000).unref()
              } else child.kill('SIGKILL')
            }, opts.timeoutMs)
      const onAbort = () => {
        const pid = child.pid
        if (pid === undefined) return
        const kill = (sig: NodeJS.Signals) => (opts.processGroup ? killGroup(pid, sig) : child.kill(sig))
        kill('SIGTERM')
        setTimeout(() => kill('SIGKILL'), opts.killGraceMs ?? 1000).unref()
      }
      if (opts.abort?.aborted) onAbort()
      else opts.abort?.addEventListener('abort', onAbort, { once: true })
      child.stdout?.setEncoding('utf8').on('data', (s: string) => {
        stdout = (stdout + s).slice(-cap)
        opts.onOutput?.(s)
      })
      child.stderr?.setEncoding('utf8').on('data', (s: string) => {
        stderr = (stderr + s).slice(-cap)
        opts.onOutput?.(s)
      })
      if (opts.input !== undefined) {
        // a child may exit (or stop reading) before it has read all its input, e.g. `ip -batch`
        // at its first failing line: the write then fails with EPIPE, and the exit status says
        // what happened
        child.stdin?.on('error', () => undefined)
        child.stdin?.end(opts.input)
      }
      child.on('error', (err) => {
        if (timer) clearTimeout(timer)
        opts.abort?.removeEventListener('abort', onAbort)
        reject(err)
      })
      child.on('close', (code, signal) => {
        if (timer) clearTimeout(timer)
        opts.abort?.removeEventListener('abort', onAbort)
        resolve({ code, signal, stdout, stderr, timedOut })
      })
    })
  },

  // One /bin/sh reads the commands as a script and starts each (a shell's fork and exec cost
  // a fraction of a spawn from this process: ~1.2 ms less per command, 0.25 s for the 202 user
  // commands of a 100-partition format). After each, a line `<nonce> <index> <status>` follows
  // its output; the first status that is not 0 ends the script.
  async runMany(argvs, opts = {}) {
    if (!argvs.length) return { ran: 0, code: 0, output: '' }
    for (const argv of argvs) {
      if (!argv.length || argv.some((w) => w.includes('\0'))) throw new Error(`cannot pass ${JSON.stringify(argv)} to a command`)
    }
    const nonce = `@${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}@`
    // `command` runs the program even if a function of that name came in the environment
    // (bash as sh imports BASH_FUNC_*); set +e whatever SHELLOPTS says
    const script = `set +e\n${argvs.map((argv, i) => `command -- ${argv.map(shellWord).join(' ')} </dev/null 2>&1; c=$?; printf '\\n%s %s %s\\n' ${nonce} ${i} "$c"; [ "$c" -eq 0 ] || exit 0\n`).join('')}`
    // variables that would change how a shell reads the script (nothing to the commands)
    const env = Object.fromEntries(Object.entries(opts.env ?? process.env).filter(([k]) => !/^(BASH_FUNC_.*|SHELLOPTS|BASHOPTS|BASH_ENV|ENV)$/.test(k)))
    const r = await realRunner.run(['/bin/sh', '-s'], { ...opts, env, input: script })
    const marker = new RegExp(`\\n${nonce} (\\d+) (\\d+)\\n`, 'g')
    let last: { index: number; code: number; start: number; end: number } | undefined
    let start = 0
    for (const m of r.stdout.matchAll(marker)) {
      last = { index: Number(m[1]), code: Number(m[2]), start, end: m.index }
      start = m.index + m[0].length
    }
    if (!last || r.code !== 0 || (last.code === 0 && last.index !== argvs.length - 1)) {
      throw new Error(`/bin/sh stopped after ${last ? last.index + 1 : 0} of ${argvs.length} commands (${r.signal ?? `exit ${r.code}`}): ${(r.stderr || r.stdout).trim().slice(-500)}`)
    }
    return { ran: last.index + 1, code: last.code, output: r.stdout.slice(last.start, last.end) }
  },
}

/**
 * The first `dir/name` of PATH's directories that `usable` accepts (a throw is a no), the
 * one search behind `which` (buildout), supervisord's binaries and a command run as another user.
 */
export function searchPath(name: string, path: string | undefined, usable: (file: string) => boolean): string | undefined {
  for (const dir of (path ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    if (!dir) continue
    const file = `${dir.replace(/\/+$/, '')}/${name}`
    try {
      if (usable(file)) return file
    } catch {
      /* not there: the next directory */
    }
  }
  return undefined
}

/**
 * `cmd` as execvp finds it for the user `uid` (groups `gids`): the first regular file in PATH
 * that user may run, every directory above it searchable by that user; `cmd` itself when it
 * has a slash or none is found.
 */
export function onPath(cmd: string, path: string | undefined, uid: number, gids: readonly number[]): string {
  if (cmd.includes('/') || !path) return cmd
  const { statSync } = process.getBuiltinModule('node:fs')
  const may = (p: string, file: boolean): boolean => {
    const st = statSync(p)
    if (file && !st.isFile()) return false
    const bits = uid === 0 ? st.mode | (st.mode >> 3) | (st.mode >> 6) : st.uid === uid ? st.mode >> 6 : gids.includes(st.gid) ? st.mode >> 3 : st.mode
    return (bits & 1) !== 0
  }
  const usable = (file: string): boolean => {
    if (!file.startsWith('/')) return false
    const parts = file.split('/').slice(1)
    return parts.slice(0, -1).every((_, i) => may('/' + parts.slice(0, i + 1).join('/'), false)) && may(file, true)
  }
  return searchPath(cmd, path, usable) ?? cmd
}

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv', '/usr/sbin/setpriv']
let setprivPath: string | null | undefined

/**
 * How to become opts.uid/gid with opts.groups: spawn's own uid/gid when there is no
 * supplementary group to set (or we are not root, or setpriv is missing: the groups are then
 * cleared, as node does), else a `setpriv` prefix that sets all three and execs the command.
 */
export function privilegeDrop(opts: Pick<RunOptions, 'uid' | 'gid' | 'groups'>, setpriv: () => string | null = findSetpriv): { argv: string[]; uid?: number; gid?: number } {
  const { uid, gid, groups } = opts
  const extra = (groups ?? []).filter((g) => g !== gid)
  if (uid === undefined || gid === undefined || extra.length === 0 || process.getuid?.() !== 0) return { argv: [], uid, gid }
  const path = setpriv()
  if (path === null) return { argv: [], uid, gid }
  return { argv: [path, `--reuid=${uid}`, `--regid=${gid}`, `--groups=${[gid, ...extra].join(',')}`, '--'] }
}

function findSetpriv(): string | null {
  if (setprivPath === undefined) {
    const { accessSync, constants } = process.getBuiltinModule('node:fs')
    setprivPath = SETPRIV.find((p) => {
      try {
        accessSync(p, constants.X_OK)
        return true
      } catch {
        return false
      }
    }) ?? null
  }
  return setprivPath
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal)
  } catch {
    // the group is already gone
  }
}

/** Synchronous variant for the few start-up checks that cannot be async. */
export function runSync(argv: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): RunResult {
  const [cmd, ...args] = argv
  const r = childProcess().spawnSync(cmd ?? '', args, { input: opts.input, env: opts.env ?? process.env, encoding: 'utf8' })
  return { code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '', timedOut: false }
}
