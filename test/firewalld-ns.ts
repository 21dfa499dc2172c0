// A real firewalld for the tests, in a network and mount namespace of its own: a private
// D-Bus system bus (our own bus configuration, socket in a temp directory), firewalld with a
// private system configuration directory, and `firewall-cmd` talking to it. Nothing on the
// host changes: rules land in the namespace's netfilter tables, /etc/firewalld is not
// touched, /run is a private tmpfs. Used by test/firewall.test.ts and
// test/manager-whitelistfirewall.test.ts (not a test file itself).
//
//   holder: unshare --net --mount sh (mounts, lo up) -> sleep   (keeps the namespaces)
//   nsenter -t <holder> -n -m dbus-daemon --config-file=<dir>/bus.conf
//   nsenter -t <holder> -n -m env DBUS_SYSTEM_BUS_ADDRESS=... firewalld --nofork --nopid
//   firewallCmd = "nsenter -t <holder> -n -m env DBUS_SYSTEM_BUS_ADDRESS=... firewall-cmd"
import { type ChildProcess, spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** Why a real firewalld cannot run here, or undefined when it can. */
export function firewalldProblem(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, firewalld)'
  for (const p of ['/usr/sbin/firewalld', '/usr/bin/firewall-cmd', '/usr/bin/dbus-daemon', '/usr/bin/nsenter', '/usr/bin/unshare']) {
    if (!existsSync(p)) return `${p} is missing (apt-get install firewalld dbus-daemon util-linux)`
  }
  const r = spawnSync('unshare', ['--net', '--mount', 'true'], { encoding: 'utf8' })
  if (r.status !== 0) return `cannot create network namespaces: ${r.stderr.trim()}`
  return undefined
}

export interface FirewalldNs {
  dir: string
  /** pid of the process that holds the namespaces */
  holder: number
  /** argv prefix that runs a command in the namespaces */
  enter: string[]
  /** the `[firewall] firewall_cmd` value that reaches this firewalld */
  firewallCmd: string
  /** `dbus-daemon` of this namespace as one command line (for a supervisord program) */
  dbusCommand: string
  /** `firewalld` of this namespace as one command line (for a supervisord program) */
  firewalldCommand: string
  /** runs `firewall-cmd <args>` against this firewalld, synchronously */
  firewall(args: string[]): SpawnSyncReturns<string>
  /** runs argv in the namespaces, synchronously */
  run(argv: string[], opts?: { uid?: number; gid?: number; timeoutMs?: number }): SpawnSyncReturns<string>
  /** a TCP server on address:port in the namespace that answers `ok` to every connection */
  listen(address: string, port: number): Promise<void>
  /** connects to address:port (from a source address, as a uid); `ok` when the server answered */
  connect(address: string, port: number, opts?: { from?: string; uid?: number }): { ok: boolean; output: string }
  /** starts dbus-daemon and firewalld and waits until `firewall-cmd --state` says running */
  startDaemons(): Promise<void>
  /** stops the daemons and the holder (the namespaces go with the last of them) */
  stop(): Promise<void>
}

const live = new Set<ChildProcess>()
let exitHook = false

/**
 * Creates the namespaces (loopback up) under `dir`; call startDaemons() to run dbus and
 * firewalld there, or run them yourself with dbusCommand/firewalldCommand. Always stop().
 */
export async function firewalldNamespace(dir: string): Promise<FirewalldNs> {
  if (!exitHook) {
    exitHook = true
    // a failing test file must not leave daemons or namespaces behind
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL')
    })
  }
  const sysconf = join(dir, 'firewalld')
  mkdirSync(join(sysconf, 'zones'), { recursive: true })
  writeFileSync(
    join(sysconf, 'firewalld.conf'),
    'DefaultZone=public\nCleanupOnExit=yes\nLockdown=no\nIPv6_rpfilter=yes\nIndividualCalls=no\nLogDenied=off\nFirewallBackend=nftables\nFlushAllOnReload=yes\n',
  )
  const socket = join(dir, 'bus.sock')
  writeFileSync(
    join(dir, 'bus.conf'),
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`,
  )
  // the holder: unshare execs sh in the new namespaces (no fork: its pid is theirs)
  const holder = spawn('unshare', ['--net', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o mode=755 tmpfs /run && ip link set lo up && echo ready && exec sleep 100000'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  })
  live.add(holder)
  let said = ''
  await new Promise<void>((resolve, reject) => {
    holder.stdout.setEncoding('utf8').on('data', (s: string) => {
      said += s
      if (said.includes('ready')) resolve()
    })
    holder.stderr.setEncoding('utf8').on('data', (s: string) => (said += s))
    holder.on('exit', (code) => reject(new Error(`namespace holder exited (${code}): ${said}`)))
    holder.on('error', reject)
  })
  const pid = holder.pid!
  // absolute paths: supervisord runs the daemon commands with an empty environment
  const enter = ['/usr/bin/nsenter', '-t', String(pid), '-n', '-m']
  const bus = `DBUS_SYSTEM_BUS_ADDRESS=unix:path=${socket}`
  const daemonArgv = {
    dbus: [...enter, '/usr/bin/dbus-daemon', `--config-file=${join(dir, 'bus.conf')}`, '--nofork', '--nopidfile'],
    firewalld: [...enter, '/usr/bin/env', bus, '/usr/sbin/firewalld', '--nofork', '--nopid', '--system-config', sysconf, '--log-target', 'console'],
  }
  const firewallCmd = [...enter, '/usr/bin/env', bus, '/usr/bin/firewall-cmd'].join(' ')
  const daemons: ChildProcess[] = []
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }

  const run: FirewalldNs['run'] = (argv, opts = {}) =>
    spawnSync(enter[0]!, [...enter.slice(1), ...(opts.uid === undefined ? [] : ['-S', String(opts.uid), '-G', String(opts.gid ?? opts.uid)]), ...argv], {
      encoding: 'utf8',
      env,
      timeout: opts.timeoutMs ?? 60_000,
    })

  const startDaemon = (argv: string[], log: string): ChildProcess => {
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env })
    let out = ''
    c.stdout?.setEncoding('utf8').on('data', (s: string) => (out = (out + s).slice(-20_000)))
    c.stderr?.setEncoding('utf8').on('data', (s: string) => (out = (out + s).slice(-20_000)))
    c.on('exit', () => writeFileSync(join(dir, log), out))
    live.add(c)
    daemons.push(c)
    return c
  }

  return {
    dir,
    holder: pid,
    enter,
    firewallCmd,
    dbusCommand: daemonArgv.dbus.join(' '),
    firewalldCommand: daemonArgv.firewalld.join(' '),
    run,
    firewall: (args) => run(['/usr/bin/env', bus, '/usr/bin/firewall-cmd', ...args]),
    async listen(address, port) {
      startDaemon([...enter, 'socat', `TCP-LISTEN:${port},bind=${address},reuseaddr,fork`, 'SYSTEM:echo ok'], `socat-${port}.log`)
      for (let i = 0; !run(['ss', '-ltnH', `sport = :${port}`]).stdout.includes(`:${port}`); i++) {
        if (i > 100) throw new Error(`socat did not listen on ${address}:${port}`)
        await sleep(50)
      }
    },
    connect(address, port, opts = {}) {
      const target = `TCP:${address}:${port},connect-timeout=3${opts.from ? `,bind=${opts.from}` : ''}`
      const r = run(['socat', '-T', '3', 'STDIO', target], { uid: opts.uid, timeoutMs: 10_000 })
      return { ok: r.status === 0 && r.stdout.trim() === 'ok', output: `${r.stdout}${r.stderr}`.trim() }
    },
    async startDaemons() {
      startDaemon(daemonArgv.dbus, 'dbus.log')
      for (let i = 0; !existsSync(socket); i++) {
        if (i > 100) throw new Error('dbus-daemon did not create its socket')
        await sleep(50)
      }
      startDaemon(daemonArgv.firewalld, 'firewalld.log')
      for (let i = 0; ; i++) {
        const r = run(['/usr/bin/env', bus, '/usr/bin/firewall-cmd', '--state'])
        if (r.stdout.trim() === 'running') return
        if (i > 150) throw new Error(`firewalld did not start: ${r.stdout}${r.stderr}`)
        await sleep(100)
      }
    },
    async stop() {
      for (const c of [...daemons.reverse(), holder]) {
        if (c.exitCode === null && c.signalCode === null) {
          const gone = new Promise((r) => c.once('exit', r))
          c.kill('SIGTERM')
          const t = setTimeout(() => c.kill('SIGKILL'), 5000)
          await gone
          clearTimeout(t)
        }
        live.delete(c)
      }
    },
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/**
 * A wrapper in front of the namespace's real firewall-cmd that logs each call's arguments,
 * then runs it: `command` is the `[firewall] firewall_cmd` value to use, `take()` the
 * arguments of the calls since the last take() (the namespace prefix cut off).
 */
export function recordingFirewallCmd(ns: FirewalldNs, dir: string): { command: string; take(): string[] } {
  const log = join(dir, 'commands.log')
  const rec = join(dir, 'rec.sh')
  writeFileSync(rec, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${log}'\nexec "$@"\n`, { mode: 0o755 })
  const prefix = ns.firewallCmd.split(' ').length
  return {
    command: `${rec} ${ns.firewallCmd}`,
    take() {
      if (!existsSync(log)) return []
      const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean)
      rmSync(log)
      return lines.map((l) => l.split(' ').slice(prefix).join(' '))
    },
  }
}
