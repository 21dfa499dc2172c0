// The portredir manager (node-extras §1.6): a partition asks, in
// `<partition>/.slapos-port-redirect`, for ports of the host to be forwarded to its own
// addresses; each redirection becomes a `socat` program of the supervisord group
// `<id>-socat`, written at the end of every processing of the partition (instanceTearDown).
//
//   [{"srcPort": 8080, "destPort": 8080, "destAddress": "10.0.0.2"}, {"type": "udp", ...}]
//
// The file is the partition user's: every entry is checked (ports 1-65535, addresses that
// parse as IPv4/IPv6) before it becomes a command argument of a program supervisord runs,
// as root for ports below 1024. Used through managers.ts.
import { isIP } from 'node:net'
import { join } from 'node:path'
import { SlapError } from './errors.ts'
import { readPartitionJson, shown, type Manager, type ManagerOptions, type ManagerPartition } from './managers.ts'
import { Supervisor, writeManagerGroup, type ManagerProgram } from './supervisor.ts'

export const PORT_REDIRECT_FILE = '.slapos-port-redirect'
/** Redirections taken from one partition: each is a program supervisord runs (some as root). */
export const MAX_REDIRECTIONS = 64

/** One valid redirection. */
export interface Redirection {
  type: 'tcp' | 'udp'
  srcPort: number
  srcAddress: string | undefined
  destPort: number
  destAddress: string
}

export function portredirManager(_options: ManagerOptions): Manager {
  return {
    name: 'portredir',
    async instanceTearDown(p) {
      await applyRedirections(p, process.env.PATH ?? '')
    },
  }
}

/**
 * Reads the partition's redirections and makes `<id>-socat.conf` say exactly them: new
 * programs are started, changed ones restarted (supervisord re-adds a changed group), and an
 * empty list removes the group. No file: nothing is touched (as the original).
 */
export async function applyRedirections(p: ManagerPartition, path: string): Promise<void> {
  const read = readPartitionJson(join(p.path, PORT_REDIRECT_FILE))
  // no file: no redirection (the group of an earlier file goes, as the original's next
  // processing of the partition removed it)
  if (read.kind === 'absent') {
    if (writeManagerGroup(p.instanceRoot, p.processes, 'socat', [])) await p.sup.applyChanges()
    return
  }
  if (read.kind === 'refused') {
    p.log.warning(`Bad port redirection config file: ${read.why}`)
    return
  }
  if (!Array.isArray(read.value)) {
    p.log.warning('Bad port redirection config file: not a JSON list')
    return
  }
  const redirections = redirectionsOf(read.value, p.addresses, (m) => p.log.warning(m))
  let socat: string | undefined
  if (redirections.length > 0) {
    socat = findSocat(path)
    if (!socat) throw new SlapError('Path to socat executable does not exist', { code: 'E_NO_SOCAT', hint: 'install socat (Debian and RHEL package socat) on the node' })
  }
  const programs = redirections.map((r) => socatProgram(socat ?? 'socat', r))
  const changed = writeManagerGroup(p.instanceRoot, p.processes, 'socat', programs)
  if (changed) await p.sup.applyChanges()
  for (const prog of programs) {
    const name = `${p.id}-socat:${prog.name}`
    const info = await p.sup.processInfoOf(name)
    // never started (a new or re-added group), or ended (its port was busy, it crashed): start
    // it; a running one is left alone
    if (info && (info.start === 0 || ENDED.includes(info.statename))) await p.sup.startProcess(name)
  }
}

/** The valid redirections of the file's list, at most MAX_REDIRECTIONS; `warn` hears why others are skipped. */
export function redirectionsOf(list: readonly unknown[], addresses: ManagerPartition['addresses'], warn: (message: string) => void): Redirection[] {
  if (list.length > MAX_REDIRECTIONS) warn(`${PORT_REDIRECT_FILE} asks for ${list.length} redirections: only the first ${MAX_REDIRECTIONS} are made`)
  const out: Redirection[] = []
  for (const entry of list.slice(0, MAX_REDIRECTIONS)) {
    const r = parseRedirection(entry, addresses)
    if (typeof r === 'string') warn(r)
    else out.push(r)
  }
  return out
}

/** A redirection of the file, or the warning that says why the entry is skipped (§1.6 table). */
export function parseRedirection(entry: unknown, addresses: ManagerPartition['addresses']): Redirection | string {
  if (!entry || typeof entry !== 'object' || Array.isArray(entry)) return `Bad port redirection entry: ${shown(entry)}`
  const e = entry as Record<string, unknown>
  const rawType = e.type === undefined ? 'tcp' : e.type
  const type = typeof rawType === 'string' ? rawType.toLowerCase() : ''
  if (type !== 'tcp' && type !== 'udp') return `Bad source redirection type: ${shown(rawType)}`
  const srcPort = port(e.srcPort)
  if (srcPort === undefined) return 'Bad source port provided'
  let srcAddress: string | undefined
  if (e.srcAddress !== undefined) {
    if (typeof e.srcAddress !== 'string' || !isIP(e.srcAddress)) return 'Bad source address provided'
    srcAddress = e.srcAddress
  }
  const destPort = port(e.destPort)
  if (destPort === undefined) return 'Bad source port provided'
  let destAddress: string | undefined
  if (e.destAddress !== undefined) {
    if (typeof e.destAddress !== 'string' || !isIP(e.destAddress)) return 'Bad source address provided'
    destAddress = e.destAddress
  } else {
    destAddress = addresses.map(([, a]) => a).find((a) => a.includes(':') && isIP(a) === 6)
    if (!destAddress) return 'Bad source address provided'
  }
  return { type, srcPort, srcAddress, destPort, destAddress }
}

/**
 * The socat program of a redirection: `socat TCP4-LISTEN:1234[,bind=A],fork TCP4:127.0.0.1:4321`
 * (IPv6 destinations bracketed), named `socat-<type>-<srcPort>`, as root below port 1024.
 */
export function socatProgram(socat: string, r: Redirection): ManagerProgram {
  const proto = r.type.toUpperCase()
  const listenVersion = r.srcAddress ? isIP(r.srcAddress) : 4
  const destVersion = isIP(r.destAddress)
  const listen = `${proto}${listenVersion}-LISTEN:${r.srcPort}${r.srcAddress ? `,bind=${r.srcAddress}` : ''},fork`
  const dest = `${proto}${destVersion}:${destVersion === 6 ? `[${r.destAddress}]` : r.destAddress}:${r.destPort}`
  return { name: `socat-${r.type}-${r.srcPort}`, argv: [socat, listen, dest], asRoot: r.srcPort < 1024 }
}

// --- internal ---

/** States of a program that is not running and will not start by itself (autorestart is off). */
const ENDED = ['EXITED', 'FATAL', 'STOPPED', 'BACKOFF']

/** An integer port 1-65535, given as a number or a string of digits. */
function port(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,5}$/.test(v) ? Number(v) : Number.NaN
  return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : undefined
}

function findSocat(path: string): string | undefined {
  return Supervisor.which('socat', path)
}
