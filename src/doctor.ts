// `slapos node doctor`: one look at everything a node needs, each check a line saying ok,
// warning or problem, and what to do. Called by commands/node-doctor.ts.
//
// It changes nothing. The configuration, the roots, the cron file and the pid files are
// stat'ed and read; the master is asked one read (getFullComputerInformation); supervisord
// is asked its state and its processes, never started; buildout is run with --version only,
// as node software would run it (the owner of the software root), writing no bytecode; the
// files of partitions (their users are not trusted) are read with bounded readers that never
// follow a link. Thresholds are in THRESHOLDS; warnings alone keep the exit status 0.
import { existsSync, lstatSync, readdirSync, readFileSync, statfsSync, statSync, type Stats } from 'node:fs'
import { delimiter, join } from 'node:path'
import { ConfigFile, loadNodeConfig, type NodeConfig } from './config.ts'
import { AuthorizationError, NotFoundError, SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { asUser, cleanEnv, ownerOf, refuseRoot } from './grid-common.ts'
import type { Logger } from './log.ts'
import { readPartitionJson, readUserFile } from './managers.ts'
import { md5hex } from './md5.ts'
import { escapeControls, isSafeId, quote } from './names.ts'
import { isLiveSlapos, readPid } from './pidfile.ts'
import { SlapClient, type Computer, type ComputerPartition } from './slap-client.ts'
import { Supervisor, supervisorPaths, type ProcessInfo } from './supervisor.ts'
import type { Runner } from './system.ts'

declare const SLAPOS_NODE_CRON: string

export type CheckStatus = 'ok' | 'warning' | 'problem'

export interface Check {
  /** stable name: `configuration`, `master`, `partition slappart0`, ... */
  name: string
  status: CheckStatus
  /** what was found, one line */
  message: string
  /** what to do, for a warning or a problem */
  hint?: string | undefined
}

/** Where the packages install the node's cron entries. */
export const DEFAULT_CRON_FILE = '/etc/cron.d/slapos-node'

/** Where warnings end and problems begin (docs/operations.md lists them). */
export const THRESHOLDS = {
  /** a certificate expiring within this many days is a warning; an expired one a problem */
  certificateWarningDays: 30,
  /** free space or inodes of a root below this percentage: warning */
  diskWarningPercent: 10,
  /** ... below this one: problem */
  diskProblemPercent: 2,
  /** a node run holding its pid file longer than this: warning */
  pidfileWarningHours: 24,
  /** the master's answer */
  masterTimeoutMs: 20_000,
  /** supervisord's answer to getState */
  supervisordTimeoutMs: 5_000,
  /** `buildout --version` */
  buildoutTimeoutMs: 30_000,
} as const

export interface DoctorOptions {
  /** the node configuration (already resolved from --cfg, the environment or the default) */
  cfgPath: string
  /** the cron file compared with the package's */
  cronFile: string
  runner: Runner
  env: NodeJS.ProcessEnv
  now: Date
  log: Logger
  /** the package's cron file text; default: the one built into this executable */
  packagedCron?: string | undefined
}

/** Runs every check, in the order they are printed. Never throws for what it finds. */
export async function diagnose(o: DoctorOptions): Promise<Check[]> {
  const checks: Check[] = []
  const { check: configCheck, cfg } = configurationCheck(o.cfgPath)
  checks.push(configCheck)
  if (!cfg) {
    // nothing else can be located without the configuration; the cron file still can
    checks.push(cronCheck(o.cronFile, o.packagedCron ?? builtInCron()))
    return checks
  }
  const softwareUser = cfg.file.get('slapformat', 'software_user')?.trim() || 'slapsoft'
  checks.push(rootDirCheck('software root', 'software_root', cfg.softwareRoot, cfg, [softwareUser]))
  checks.push(rootDirCheck('instance root', 'instance_root', cfg.instanceRoot, cfg, []))
  if (cfg.certificateRepositoryPath) checks.push(certificateRepositoryCheck(cfg.certificateRepositoryPath, cfg))
  checks.push(tlsCheck(cfg, o.now))
  // the three slow ones at once: the master, supervisord and buildout
  const [master, sup, buildout] = await Promise.all([masterCheck(cfg), supervisordChecks(cfg, o.log), buildoutCheck(cfg, o.runner, o.env)])
  checks.push(master.check, ...sup.checks)
  checks.push(cronCheck(o.cronFile, o.packagedCron ?? builtInCron()))
  const pidfiles: Array<[string, string]> = [
    ['software', cfg.pidfileSoftware],
    ['instance', cfg.pidfileInstance],
    ['report', cfg.pidfileReport],
    ['collect', join(cfg.instanceRoot, 'var', 'run', 'slapos-node-collect.pid')],
  ]
  // node promise shares the instance pid file: one file, one check
  const seen = new Set<string>()
  for (const [kind, path] of pidfiles) {
    if (seen.has(path)) continue
    seen.add(path)
    checks.push(pidfileCheck(kind, path, o.now))
  }
  checks.push(diskCheck('disk software root', cfg.softwareRoot, softwareMinFree(cfg)))
  checks.push(diskCheck('disk instance root', cfg.instanceRoot))
  checks.push(buildout)
  const building = pidHeldBySlapos(cfg.pidfileSoftware)
  checks.push(...softwareChecks(cfg, master.computer, building))
  checks.push(...partitionChecks(cfg, master.computer, sup.processes))
  return checks
}

/** 0 without problems (warnings allowed), 1 with at least one. */
export function doctorExitCode(checks: readonly Check[]): number {
  return checks.some((c) => c.status === 'problem') ? EXIT.FAIL : EXIT.OK
}

export interface DoctorSummary {
  checks: number
  ok: number
  warning: number
  problem: number
  exitCode: number
}

export function doctorSummary(checks: readonly Check[]): DoctorSummary {
  const count = (s: CheckStatus) => checks.filter((c) => c.status === s).length
  return { checks: checks.length, ok: count('ok'), warning: count('warning'), problem: count('problem'), exitCode: doctorExitCode(checks) }
}

/** One line per check (`problem  master: ... — what to do`), then the summary line. */
export function doctorText(checks: readonly Check[]): string {
  const lines = checks.map((c) => `${c.status.padEnd(7)}  ${c.name}: ${c.message}${c.hint ? ` \u2014 ${c.hint}` : ''}`)
  const s = doctorSummary(checks)
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`
  lines.push(`${plural(s.checks, 'check')}: ${s.ok} ok, ${plural(s.warning, 'warning')}, ${plural(s.problem, 'problem')}`)
  return lines.join('\n') + '\n'
}

/** The `--json` document: every check (hint null when there is none) and the summary. */
export function doctorJson(checks: readonly Check[]): { checks: Array<{ name: string; status: CheckStatus; message: string; hint: string | null }>; summary: DoctorSummary } {
  return { checks: checks.map((c) => ({ name: c.name, status: c.status, message: c.message, hint: c.hint ?? null })), summary: doctorSummary(checks) }
}

/**
 * The meaningful lines of two cron files compared: comments and blank lines dropped, runs of
 * blanks made one. `missing`: the package's lines not in the installed file; `extra`: the
 * installed file's lines the package does not have. Pure.
 */
export function compareCron(packaged: string, installed: string): { missing: string[]; extra: string[] } {
  const lines = (text: string) =>
    text
      .split('\n')
      .map((l) => l.trim().replace(/\s+/g, ' '))
      .filter((l) => l !== '' && !l.startsWith('#'))
  const want = lines(packaged)
  const have = lines(installed)
  return { missing: want.filter((l) => !have.includes(l)), extra: have.filter((l) => !want.includes(l)) }
}

/** Status of a free share (percent) against the disk thresholds. Pure. */
export function diskLevel(percentFree: number): CheckStatus {
  if (percentFree < THRESHOLDS.diskProblemPercent) return 'problem'
  if (percentFree < THRESHOLDS.diskWarningPercent) return 'warning'
  return 'ok'
}

// --- internal ---

const RANK: Record<CheckStatus, number> = { ok: 0, warning: 1, problem: 2 }

/** Several findings of one check: the worst status, every message, the hint of the first worst. */
function merge(name: string, findings: Array<Omit<Check, 'name'>>, okMessage: string): Check {
  const bad = findings.filter((f) => f.status !== 'ok')
  if (bad.length === 0) return { name, status: 'ok', message: okMessage }
  const worst = bad.reduce((a, b) => (RANK[b.status] > RANK[a.status] ? b : a))
  return { name, status: worst.status, message: bad.map((f) => f.message).join('; '), hint: worst.hint }
}

function builtInCron(): string | undefined {
  return typeof SLAPOS_NODE_CRON === 'string' ? SLAPOS_NODE_CRON : undefined
}

/** A value from outside, made safe for one line and cut to `max` characters. */
function shown(s: string, max = 200): string {
  const one = escapeControls(s.trim())
  return one.length > max ? `${one.slice(0, max)}...` : one
}

function mode(st: Stats): string {
  return `0${(st.mode & 0o7777).toString(8)}`
}

/** /etc/passwd as uid -> name and name -> uid (read directly, as grid-common.ts ownerOf does). */
function passwd(): { nameOf(uid: number): string; uidOf(name: string): number | undefined } {
  const byUid = new Map<number, string>()
  const byName = new Map<string, number>()
  let text = ''
  try {
    text = readFileSync('/etc/passwd', 'utf8')
  } catch {
    // no names: uids are shown as numbers
  }
  for (const line of text.split('\n')) {
    const f = line.split(':')
    if (f.length < 7) continue
    const uid = Number(f[2])
    if (!byUid.has(uid)) byUid.set(uid, f[0] ?? '')
    byName.set(f[0] ?? '', uid)
  }
  return { nameOf: (uid) => byUid.get(uid) ?? String(uid), uidOf: (name) => byName.get(name) }
}

function myUid(): number {
  return process.getuid?.() ?? 0
}

// --- configuration and directories ---

function configurationCheck(path: string): { check: Check; cfg?: NodeConfig } {
  const name = 'configuration'
  let file: ConfigFile
  let cfg: NodeConfig
  try {
    file = ConfigFile.load(path, 'node')
    cfg = loadNodeConfig(file)
  } catch (e) {
    const hint = e instanceof SlapError && e.hint ? e.hint : `fix ${path}, or give the node configuration with --cfg`
    return { check: { name, status: 'problem', message: e instanceof Error ? e.message : String(e), hint } }
  }
  const findings: Array<Omit<Check, 'name'>> = []
  const st = statSync(path)
  const users = passwd()
  if (st.uid !== 0 && st.uid !== myUid()) {
    findings.push({ status: 'problem', message: `${path} belongs to ${users.nameOf(st.uid)}, who can change what the node runs as root`, hint: `chown root ${path}` })
  }
  if (st.mode & 0o022) {
    findings.push({ status: 'problem', message: `${path} is writable by group or others (mode ${mode(st)})`, hint: `chmod go-w ${path}` })
  }
  // the files the node commands require (grid.md §1.3), as startNodeRun checks them
  const files: Array<[string, string | undefined]> = [
    ['key_file', cfg.keyFile],
    ['cert_file', cfg.certFile],
    ['master_ca_file', cfg.masterCaFile],
  ]
  const flat = new Map([...file.section('slapos'), ...file.section('networkcache')])
  for (const key of ['signature-private-key-file', 'signature_private_key_file', 'shacache-ca-file', 'shacache-cert-file', 'shacache-key-file', 'shadir-ca-file', 'shadir-cert-file', 'shadir-key-file']) {
    const v = flat.get(key)?.trim()
    if (v) files.push([key, v])
  }
  for (const [key, p] of files) {
    if (p !== undefined && !existsSync(p)) findings.push({ status: 'problem', message: `${key} ${p} does not exist`, hint: `fix ${key} in ${path}` })
  }
  if (cfg.rootCheck && myUid() !== 0) {
    findings.push({ status: 'warning', message: 'the doctor runs without root: files of partitions and keys may be unreadable to it', hint: 'run it as root (sudo slapos node doctor)' })
  }
  return { check: merge(name, findings, `${path}: computer ${quote(cfg.computerId)}, master ${shown(cfg.masterUrl)}, mandatory keys set`), cfg }
}

/**
 * A root directory: it exists, belongs to root, to the user running the node (a node without
 * root) or to one of `users`, and nobody else can write in it (the node acts there as root).
 */
function rootDirCheck(name: string, key: string, path: string, cfg: NodeConfig, users: string[]): Check {
  let st: Stats
  try {
    st = statSync(path)
  } catch {
    return { name, status: 'problem', message: `${path} does not exist`, hint: `run \`slapos node format\` (it creates it), or fix ${key} in ${cfg.file.path}` }
  }
  if (!st.isDirectory()) return { name, status: 'problem', message: `${path} is not a directory`, hint: `fix ${key} in ${cfg.file.path}` }
  const pw = passwd()
  const allowed = new Set([0, myUid(), ...users.map((u) => pw.uidOf(u)).filter((u): u is number => u !== undefined)])
  const findings: Array<Omit<Check, 'name'>> = []
  const expected = ['root', ...users.filter((u) => pw.uidOf(u) !== undefined)].join(' or ')
  if (!allowed.has(st.uid)) findings.push({ status: 'problem', message: `${path} belongs to ${pw.nameOf(st.uid)}, not to ${expected}`, hint: `chown ${users.find((u) => pw.uidOf(u) !== undefined) ?? 'root'} ${path}` })
  if (st.mode & 0o022) findings.push({ status: 'problem', message: `${path} is writable by group or others (mode ${mode(st)})`, hint: `chmod 755 ${path}` })
  return merge(name, findings, `${path}: owner ${pw.nameOf(st.uid)}, mode ${mode(st)}`)
}

/** certificate_repository_path holds the partitions' keys: nobody else writes there, no key is readable by others. */
function certificateRepositoryCheck(path: string, cfg: NodeConfig): Check {
  const name = 'certificate repository'
  const dir = rootDirCheck(name, 'certificate_repository_path', path, cfg, [])
  if (dir.status === 'problem' && !existsSync(path)) return dir
  const open: string[] = []
  let names: string[] = []
  try {
    names = readdirSync(path)
  } catch (e) {
    return { name, status: 'problem', message: `${path} cannot be listed (${(e as NodeJS.ErrnoException).code ?? String(e)})`, hint: 'run the doctor as root' }
  }
  for (const n of names) {
    if (!n.endsWith('.key')) continue
    const st = lstatSync(join(path, n), { throwIfNoEntry: false })
    if (st?.isFile() && st.mode & 0o077) open.push(n)
  }
  if (open.length === 0) return dir.status === 'ok' ? { ...dir, message: `${dir.message}, ${names.filter((n) => n.endsWith('.key')).length} partition keys, none readable by others` } : dir
  const keys: Check = {
    name,
    status: 'problem',
    message: `${open.length} partition key(s) readable by group or others: ${open.slice(0, 3).map((n) => shown(n, 80)).join(', ')}${open.length > 3 ? ', ...' : ''}`,
    hint: `chmod 400 ${join(path, '*.key')}`,
  }
  return dir.status === 'ok' ? keys : merge(name, [dir, keys], '')
}

// --- the master and its certificate ---

/**
 * key_file and cert_file: both readable, the key the certificate's, the certificate valid
 * now and for more than THRESHOLDS.certificateWarningDays; master_ca_file readable and not
 * expired. Only the node's own certificate: the partitions' are the master's business.
 */
function tlsCheck(cfg: NodeConfig, now: Date): Check {
  const name = 'tls certificate'
  const https = cfg.masterUrl.startsWith('https')
  if (!cfg.certFile && !cfg.keyFile) {
    if (https) return { name, status: 'problem', message: `master_url is https but no cert_file and key_file are set: the master will refuse this node`, hint: `set cert_file and key_file in [slapos] of ${cfg.file.path} (slapos node register writes them)` }
    return { name, status: 'ok', message: 'no client certificate configured (the master is reached over http)' }
  }
  const { X509Certificate, createPrivateKey } = process.getBuiltinModule('node:crypto')
  const read = (p: string | undefined): string | undefined => {
    if (!p) return undefined
    try {
      const st = statSync(p)
      return st.isFile() && st.size <= 1 << 20 ? readFileSync(p, 'utf8') : undefined
    } catch {
      return undefined
    }
  }
  const certText = read(cfg.certFile)
  const keyText = read(cfg.keyFile)
  if (certText === undefined) return { name, status: 'problem', message: `cert_file ${cfg.certFile ?? '(not set)'} cannot be read`, hint: `fix cert_file in ${cfg.file.path}` }
  if (keyText === undefined) return { name, status: 'problem', message: `key_file ${cfg.keyFile ?? '(not set)'} cannot be read`, hint: `fix key_file in ${cfg.file.path}` }
  let cert: InstanceType<typeof X509Certificate>
  try {
    cert = new X509Certificate(certText)
  } catch (e) {
    return { name, status: 'problem', message: `cert_file ${cfg.certFile} is not a PEM certificate (${(e as Error).message})`, hint: `fix cert_file in ${cfg.file.path}` }
  }
  let matches: boolean
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyText))
  } catch (e) {
    return { name, status: 'problem', message: `key_file ${cfg.keyFile} is not a PEM private key (${(e as Error).message})`, hint: `fix key_file in ${cfg.file.path}` }
  }
  const findings: Array<Omit<Check, 'name'>> = []
  if (!matches) {
    findings.push({ status: 'problem', message: `key_file ${cfg.keyFile} is not the key of cert_file ${cfg.certFile}`, hint: 'give the key the certificate was made for (slapos node register writes both)' })
  }
  const renew = `get a new certificate for this computer from the master and set cert_file and key_file in ${cfg.file.path}`
  const days = (cert.validToDate.getTime() - now.getTime()) / 86_400_000
  const until = cert.validToDate.toISOString().slice(0, 10)
  if (cert.validFromDate.getTime() > now.getTime()) {
    findings.push({ status: 'problem', message: `cert_file is not valid before ${cert.validFromDate.toISOString().slice(0, 10)}`, hint: "check this machine's clock" })
  } else if (days < 0) {
    findings.push({ status: 'problem', message: `cert_file expired on ${until}`, hint: renew })
  } else if (days < THRESHOLDS.certificateWarningDays) {
    findings.push({ status: 'warning', message: `cert_file expires in ${Math.floor(days)} days (${until})`, hint: renew })
  }
  const keyStat = cfg.keyFile ? statSync(cfg.keyFile) : undefined
  if (keyStat && keyStat.mode & 0o077) {
    findings.push({ status: 'warning', message: `key_file ${cfg.keyFile} is readable by group or others (mode ${mode(keyStat)})`, hint: `chmod 600 ${cfg.keyFile}` })
  }
  const ca = read(cfg.masterCaFile)
  if (cfg.masterCaFile) {
    try {
      if (ca === undefined) throw new Error('cannot be read')
      const caCert = new X509Certificate(ca)
      if (caCert.validToDate.getTime() < now.getTime()) {
        findings.push({ status: 'problem', message: `master_ca_file expired on ${caCert.validToDate.toISOString().slice(0, 10)}`, hint: `give the master's current CA in master_ca_file of ${cfg.file.path}` })
      }
    } catch (e) {
      findings.push({ status: 'problem', message: `master_ca_file ${cfg.masterCaFile}: ${(e as Error).message}`, hint: `fix master_ca_file in ${cfg.file.path}` })
    }
  }
  return merge(name, findings, `${cfg.certFile}: the key matches, expires in ${Math.floor(days)} days (${until})`)
}

/** One read of this computer: reachable, knows the computer id, accepts the certificate. */
async function masterCheck(cfg: NodeConfig): Promise<{ check: Check; computer?: Computer }> {
  const name = 'master'
  const url = shown(cfg.masterUrl)
  const client = new SlapClient({ masterUrl: cfg.masterUrl, keyFile: cfg.keyFile, certFile: cfg.certFile, caFile: cfg.masterCaFile, timeoutMs: THRESHOLDS.masterTimeoutMs })
  try {
    const computer = await client.getFullComputerInformation(cfg.computerId)
    const n = computer._computer_partition_list.length
    const message = `${url} answers for computer ${quote(cfg.computerId)}: ${computer._software_release_list.length} software release(s), ${n} partition(s)`
    return { check: { name, status: 'ok', message }, computer }
  } catch (e) {
    const message = shown(e instanceof Error ? e.message : String(e), 400)
    if (e instanceof NotFoundError) {
      return { check: { name, status: 'problem', message: `${url} does not know computer ${quote(cfg.computerId)} (${message})`, hint: `check computer_id in ${cfg.file.path}, or register this node (slapos node register)` } }
    }
    if (e instanceof AuthorizationError) return { check: { name, status: 'problem', message, hint: 'the master refuses this certificate: check cert_file and key_file' } }
    const hint = e instanceof SlapError && e.hint ? e.hint : `check master_url in ${cfg.file.path} and that the master answers`
    return { check: { name, status: 'problem', message, hint } }
  }
}

// --- supervisord ---

async function supervisordChecks(cfg: NodeConfig, log: Logger): Promise<{ checks: Check[]; processes?: ProcessInfo[] }> {
  const paths = supervisorPaths(cfg.instanceRoot)
  const start = 'run `slapos node supervisord` (node instance starts it too)'
  const down = (message: string): { checks: Check[] } => ({
    checks: [
      { name: 'supervisord', status: 'problem', message, hint: start },
      { name: 'watchdog', status: 'problem', message: 'not running: supervisord is not running', hint: start },
    ],
  })
  if (!existsSync(paths.socket)) return down(`not running: no socket ${paths.socket}`)
  const sup = new Supervisor(paths, log)
  let state: string
  try {
    state = await sup.getState(THRESHOLDS.supervisordTimeoutMs)
  } catch (e) {
    return down(`does not answer on ${paths.socket} (${shown(e instanceof Error ? e.message : String(e))})`)
  }
  if (state !== 'RUNNING') return down(`state ${shown(state)}, not RUNNING`)
  let processes: ProcessInfo[] | undefined
  let watchdog: ProcessInfo | undefined
  try {
    processes = await sup.processInfo()
    watchdog = await sup.processInfoOf('watchdog')
  } catch (e) {
    return down(`does not answer on ${paths.socket} (${shown(e instanceof Error ? e.message : String(e))})`)
  }
  const running = (processes ?? []).filter((p) => p.statename === 'RUNNING').length
  const checks: Check[] = [{ name: 'supervisord', status: 'ok', message: `running on ${paths.socket}, ${running} process(es) running` }]
  if (watchdog?.statename === 'RUNNING' || watchdog?.statename === 'STARTING') {
    checks.push({ name: 'watchdog', status: 'ok', message: 'the event listener that bangs partitions whose services die is running' })
  } else {
    checks.push({
      name: 'watchdog',
      status: 'problem',
      message: watchdog ? `the event listener is ${shown(watchdog.statename)}` : 'supervisord has no watchdog event listener',
      hint: `check watchdog_command in ${cfg.file.path} and ${paths.logfile}; the next node instance adds it again`,
    })
  }
  return { checks, processes }
}

// --- cron, pid files, disks, buildout ---

/** The installed cron file: present, taken by cron (root's, not writable by others), with the package's lines. */
function cronCheck(file: string, packaged: string | undefined): Check {
  const name = 'cron'
  const reinstall = `reinstall the slapos package, which installs ${DEFAULT_CRON_FILE}`
  let st: Stats
  try {
    st = statSync(file)
  } catch {
    return { name, status: 'problem', message: `${file} is missing: nothing runs node software, instance and report periodically`, hint: reinstall }
  }
  if (!st.isFile()) return { name, status: 'problem', message: `${file} is not a regular file`, hint: reinstall }
  if (st.uid !== 0) return { name, status: 'problem', message: `${file} belongs to ${passwd().nameOf(st.uid)}: cron ignores it`, hint: `chown root:root ${file}` }
  if (st.mode & 0o022) return { name, status: 'problem', message: `${file} is writable by group or others (mode ${mode(st)}): cron ignores it`, hint: `chmod 644 ${file}` }
  if (packaged === undefined) return { name, status: 'warning', message: `${file} is installed; this build carries no packaged cron file to compare it with`, hint: 'use a slapos executable built with make' }
  const read = readUserFile(file, 1 << 20)
  if (read.kind !== 'ok') return { name, status: 'problem', message: `${file} cannot be read (${read.kind === 'refused' ? read.why : 'absent'})`, hint: reinstall }
  const { missing, extra } = compareCron(packaged, read.bytes.toString('utf8'))
  if (missing.length === 0 && extra.length === 0) return { name, status: 'ok', message: `${file} has the package's lines` }
  const parts: string[] = []
  if (missing.length) parts.push(`${missing.length} of the package's lines missing or changed (first: ${shown(missing[0] ?? '', 160)})`)
  if (extra.length) parts.push(`${extra.length} line(s) the package does not write (first: ${shown(extra[0] ?? '', 160)})`)
  return { name, status: 'warning', message: `${file} differs from the package's: ${parts.join('; ')}`, hint: `restore the package's lines (${reinstall}), or keep the change knowingly` }
}

function pidHeldBySlapos(path: string): boolean {
  const pid = readPid(path)
  return pid !== undefined && isLiveSlapos(pid)
}

/** A pid file: absent (no run), held by a live slapos run (for how long), or stale. */
function pidfileCheck(kind: string, path: string, now: Date): Check {
  const name = `pidfile ${kind}`
  const st = lstatSync(path, { throwIfNoEntry: false })
  if (!st) return { name, status: 'ok', message: `no node ${kind} running (no ${path})` }
  const pid = readPid(path)
  const blocks = kind === 'software' ? ' (node prune refuses to run while it exists)' : ''
  if (pid === undefined) return { name, status: 'warning', message: `${path} holds no process id${blocks}`, hint: `remove ${path}` }
  if (!isLiveSlapos(pid)) {
    return { name, status: 'warning', message: `${path} is stale: process ${pid} is not a running slapos${blocks}`, hint: `the next node ${kind} takes it over; remove ${path} to tidy up` }
  }
  const hours = (now.getTime() - st.mtimeMs) / 3_600_000
  if (hours > THRESHOLDS.pidfileWarningHours) {
    return { name, status: 'warning', message: `node ${kind} (process ${pid}) has been running for ${Math.floor(hours)} hours`, hint: `see its log; if it hangs, stop it (kill ${pid})` }
  }
  return { name, status: 'ok', message: `node ${kind} running now (process ${pid})` }
}

/** `software_min_free_space` in bytes (default 1000M, as node software reads it), undefined when unreadable. */
function softwareMinFree(cfg: NodeConfig): { text: string; bytes: number } | undefined {
  const text = (cfg.file.get('slapos', 'software_min_free_space') ?? cfg.file.get('networkcache', 'software_min_free_space') ?? '1000M').trim()
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$/i.exec(text)
  if (!m) return undefined
  return { text, bytes: Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase()) }
}

function diskCheck(name: string, path: string, minFree?: { text: string; bytes: number }): Check {
  let fs
  try {
    fs = statfsSync(path)
  } catch (e) {
    return { name, status: 'problem', message: `${path} cannot be examined (${(e as NodeJS.ErrnoException).code ?? String(e)})`, hint: 'create it (slapos node format)' }
  }
  const free = fs.bavail * fs.bsize
  const spacePct = fs.blocks > 0 ? (fs.bavail / fs.blocks) * 100 : 100
  // some file systems (btrfs) have no fixed inode count: files = 0
  const inodePct = fs.files > 0 ? (fs.ffree / fs.files) * 100 : undefined
  const pct = (n: number) => `${n < 10 ? n.toFixed(1) : Math.floor(n)}%`
  const findings: Array<Omit<Check, 'name'>> = []
  const space = diskLevel(spacePct)
  if (space !== 'ok') findings.push({ status: space, message: `${path}: only ${pct(spacePct)} of the space free (${human(free)})`, hint: 'free space on this file system (old logs, destroyed partitions: node report removes them)' })
  const inodes = inodePct === undefined ? 'ok' : diskLevel(inodePct)
  if (inodes !== 'ok' && inodePct !== undefined) findings.push({ status: inodes, message: `${path}: only ${pct(inodePct)} of the inodes free`, hint: 'remove files on this file system (many small ones: caches, old software releases)' })
  if (minFree && free < minFree.bytes) {
    findings.push({ status: 'warning', message: `${path}: ${human(free)} free, below software_min_free_space (${minFree.text}): node software refuses to build`, hint: 'free space, or lower software_min_free_space' })
  }
  return merge(name, findings, `${path}: ${pct(spacePct)} of the space free (${human(free)})${inodePct === undefined ? '' : `, ${pct(inodePct)} of the inodes`}`)
}

function human(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

/**
 * The configured buildout exists, is executable and answers `--version`, run as node software
 * runs buildout (the software root's owner, clean environment) and writing no bytecode.
 */
async function buildoutCheck(cfg: NodeConfig, runner: Runner, env: NodeJS.ProcessEnv): Promise<Check> {
  const name = 'buildout'
  const fix = `set buildout in [slapos] of ${cfg.file.path} to a buildout that runs on this system (the packages install /opt/slapos/bin/buildout)`
  const bin = cfg.buildout
  const path = bin.includes('/') ? bin : findOnPath(bin, env.PATH)
  if (path === undefined) return { name, status: 'problem', message: `${shown(bin)} is not found on PATH`, hint: fix }
  const st = statSync(path, { throwIfNoEntry: false })
  if (!st) return { name, status: 'problem', message: `${path} does not exist`, hint: fix }
  if (!st.isFile() || (st.mode & 0o111) === 0) return { name, status: 'problem', message: `${path} is not an executable file`, hint: fix }
  let user: { uid?: number; gid?: number; groups?: number[] }
  let home = env.HOME ?? '/'
  try {
    const owner = ownerOf(cfg.softwareRoot)
    user = asUser(owner, refuseRoot(cfg))
    if (user.uid !== undefined) home = owner.home
  } catch (e) {
    if (e instanceof SlapError && e.code === 'E_ROOT_OWNER') {
      return { name, status: 'problem', message: `${path} exists, but node software refuses to run it: ${cfg.softwareRoot} belongs to root`, hint: 'give software_root to the software user (slapos node format does), or set run_as_root = true in [slapos]' }
    }
    return { name, status: 'problem', message: `${path} exists, but the owner of ${cfg.softwareRoot} cannot be found (${shown((e as Error).message)})`, hint: 'create software_root (slapos node format)' }
  }
  const r = await runner
    .run([path, '--version'], { cwd: '/', env: { ...cleanEnv(env, home), PYTHONDONTWRITEBYTECODE: '1' }, ...user, timeoutMs: THRESHOLDS.buildoutTimeoutMs, processGroup: true })
    .catch((e: unknown) => ({ code: null, signal: null, stdout: '', stderr: e instanceof Error ? e.message : String(e), timedOut: false }))
  const output = (r.stdout + '\n' + r.stderr).trim()
  if (r.timedOut) return { name, status: 'problem', message: `${path} --version did not answer within ${THRESHOLDS.buildoutTimeoutMs / 1000} s`, hint: fix }
  if (r.code !== 0) return { name, status: 'problem', message: `${path} --version fails: ${shown(lastErrorLine(output) || `exit ${r.code ?? r.signal}`)}`, hint: fix }
  return { name, status: 'ok', message: `${path}: ${shown(output.split('\n')[0] ?? '', 120)}` }
}

function findOnPath(name: string, pathVar: string | undefined): string | undefined {
  for (const dir of (pathVar ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue
    const p = join(dir, name)
    const st = statSync(p, { throwIfNoEntry: false })
    if (st?.isFile()) return p
  }
  return undefined
}

/** The last line naming an error (a Python traceback ends with one), else the last line. */
function lastErrorLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean)
  for (let i = lines.length - 1; i >= 0; i--) if (/^([\w.]*(Error|Exception)|Error)\b[^:]*:/.test(lines[i] ?? '')) return lines[i] ?? ''
  return lines[lines.length - 1] ?? ''
}

// --- software releases and partitions ---

/**
 * Each software release the master supplies: `.completed` in its directory means installed;
 * a directory without it, a build that failed or was interrupted (node software leaves no
 * other trace on disk). Without the master's list, the directories on disk are looked at.
 */
function softwareChecks(cfg: NodeConfig, computer: Computer | undefined, building: boolean): Check[] {
  const retry = 'see the node software log (slapos-node-software.log), or run `slapos node software --now` to try again'
  const one = (hash: string, label: string, state: string): Check => {
    const name = `software release ${hash}`
    const path = join(cfg.softwareRoot, hash)
    const st = lstatSync(path, { throwIfNoEntry: false })
    if (state === 'destroyed') {
      return st ? { name, status: 'warning', message: `${label}: destroyed on the master, still in ${path}`, hint: 'the next node software removes it' } : { name, status: 'ok', message: `${label}: destroyed` }
    }
    if (!st) {
      if (building) return { name, status: 'ok', message: `${label}: being installed now` }
      return { name, status: 'warning', message: `${label}: not installed yet`, hint: 'node software installs it (cron runs it every minute)' }
    }
    if (!st.isDirectory()) return { name, status: 'problem', message: `${label}: ${path} is not a directory`, hint: `remove ${path}; node software installs it again` }
    // existsSync, as node software decides; the date inside is only shown
    if (existsSync(join(path, '.completed'))) {
      const done = readUserFile(join(path, '.completed'), 256)
      const when = done.kind === 'ok' ? shown(done.bytes.toString('utf8'), 40) : ''
      return { name, status: 'ok', message: `${label}: installed${when ? ` (${when})` : ''}` }
    }
    if (building) return { name, status: 'ok', message: `${label}: being built now` }
    return { name, status: 'problem', message: `${label}: not installed, its last build failed or was interrupted`, hint: retry }
  }
  if (computer) {
    const list = computer._software_release_list
    if (list.length === 0) return [{ name: 'software releases', status: 'ok', message: 'none supplied to this computer' }]
    return list.map((sr) => one(md5hex(sr._software_release), `'${shown(sr._software_release, 300)}'`, sr._requested_state ?? 'available'))
  }
  // the master did not answer: what the disk says
  let names: string[] = []
  try {
    names = readdirSync(cfg.softwareRoot).filter((n) => /^[0-9a-f]{32}$/.test(n)).sort()
  } catch {
    return []
  }
  return names.map((h) => one(h, `${h} (the master did not say which release this is)`, 'available'))
}

interface PromiseState {
  /** promises the partition defines (etc/promise, etc/plugin) */
  defined: number
  results: Array<{ name: string; failed: boolean; message: string }>
  refused?: string
}

/** The saved promise results of a partition, read without following links, each file bounded. */
function promiseState(path: string): PromiseState {
  const count = (dir: string) => {
    try {
      return lstatSync(dir).isDirectory() ? readdirSync(dir).filter((n) => !n.startsWith('__init__') && !n.startsWith('.')).length : 0
    } catch {
      return 0
    }
  }
  const defined = count(join(path, 'etc', 'promise')) + count(join(path, 'etc', 'plugin'))
  const dirs = [join(path, '.slapgrid'), join(path, '.slapgrid', 'promise'), join(path, '.slapgrid', 'promise', 'result')]
  for (const d of dirs) {
    const st = lstatSync(d, { throwIfNoEntry: false })
    if (!st) return { defined, results: [] }
    if (!st.isDirectory()) return { defined, results: [], refused: `${d} is not a directory` }
  }
  const resultDir = dirs[2] ?? ''
  let names: string[]
  try {
    names = readdirSync(resultDir).filter((n) => n.endsWith('.status.json')).sort().slice(0, 1000)
  } catch {
    return { defined, results: [] }
  }
  const results: PromiseState['results'] = []
  for (const n of names) {
    const j = readPartitionJson(join(resultDir, n))
    if (j.kind !== 'ok' || typeof j.value !== 'object' || j.value === null) continue
    const v = j.value as { name?: unknown; result?: { failed?: unknown; message?: unknown } }
    results.push({
      name: typeof v.name === 'string' ? v.name : n.slice(0, -'.status.json'.length),
      failed: v.result?.failed === true,
      message: typeof v.result?.message === 'string' ? v.result.message : '',
    })
  }
  return { defined, results }
}

/**
 * Each partition the master gave a software release: its directory, the last run's error
 * (`.slapgrid-<id>-error.log`), its promises, its services, whether it was ever deployed
 * (`.timestamp`). Free partitions are counted in one line.
 */
function partitionChecks(cfg: NodeConfig, computer: Computer | undefined, processes: ProcessInfo[] | undefined): Check[] {
  const checks: Check[] = []
  if (!computer) {
    // the master did not answer: the partitions on disk that were ever processed
    let names: string[] = []
    try {
      names = readdirSync(cfg.instanceRoot).filter((n) => isSafeId(n) && n.startsWith(cfg.partitionBaseName)).sort()
    } catch {
      return []
    }
    for (const id of names) {
      const path = join(cfg.instanceRoot, id)
      if (lstatSync(join(path, '.timestamp'), { throwIfNoEntry: false }) || lstatSync(join(path, `.slapgrid-${id}-error.log`), { throwIfNoEntry: false })) {
        checks.push(partitionCheck(cfg, id, undefined, processes))
      }
    }
    return checks
  }
  let free = 0
  let used = 0
  const unsafe: string[] = []
  const mine: Array<{ id: string; state: string }> = []
  for (const p of computer._computer_partition_list) {
    const id = p._partition_id ?? ''
    if (!isSafeId(id)) {
      unsafe.push(shown(String(id), 60))
      continue
    }
    if (!softwareUrl(p)) {
      free++
      continue
    }
    used++
    mine.push({ id, state: p._requested_state ?? 'destroyed' })
  }
  const summary: Check = { name: 'partitions', status: 'ok', message: `${used} in use, ${free} free` }
  if (used + free + unsafe.length === 0) Object.assign(summary, { status: 'warning', message: 'the master knows no partition of this computer', hint: 'run `slapos node format`: it creates the partitions and sends them to the master' })
  if (unsafe.length) Object.assign(summary, { status: 'problem', message: `${summary.message}; the master names ${unsafe.length} partition(s) with ids that are not safe: ${unsafe.slice(0, 3).join(', ')}`, hint: 'those partitions are never processed; see with the master' })
  checks.push(summary)
  for (const { id, state } of mine) checks.push(partitionCheck(cfg, id, state, processes))
  return checks
}

function softwareUrl(p: ComputerPartition): string | undefined {
  const doc = p._software_release_document
  return (typeof doc === 'string' ? doc : doc?._software_release) || undefined
}

function partitionCheck(cfg: NodeConfig, id: string, state: string | undefined, processes: ProcessInfo[] | undefined): Check {
  const name = `partition ${id}`
  const path = join(cfg.instanceRoot, id)
  const st = lstatSync(path, { throwIfNoEntry: false })
  if (!st?.isDirectory()) return { name, status: 'problem', message: `${path} ${st ? 'is not a directory' : 'does not exist'}`, hint: 'run `slapos node format`: it creates the partitions' }
  const retry = `\`slapos node instance --now --only-cp ${id}\` tries again`
  const findings: Array<Omit<Check, 'name'>> = []
  const errorLog = readUserFile(join(path, `.slapgrid-${id}-error.log`), 64 << 10)
  if (errorLog.kind === 'ok') {
    findings.push({ status: 'problem', message: `its last run failed: ${shown(lastErrorLine(errorLog.bytes.toString('utf8')) || '(empty error log)')}`, hint: `see ${join(path, '.slapgrid', 'log', 'instance.log')}; ${retry}` })
  } else if (errorLog.kind === 'refused' && !/larger than/.test(errorLog.why)) {
    findings.push({ status: 'warning', message: `its error log is ${errorLog.why}`, hint: retry })
  } else if (errorLog.kind === 'refused') {
    findings.push({ status: 'problem', message: 'its last run failed (the error log is too large to show)', hint: retry })
  }
  const timestamp = readUserFile(join(path, '.timestamp'), 256)
  let detail = state ?? 'state unknown (no answer from the master)'
  if (state === 'started' || state === undefined) {
    const promises = promiseState(path)
    const failed = promises.results.filter((r) => r.failed)
    if (promises.refused) findings.push({ status: 'warning', message: `its promise results cannot be read: ${promises.refused}`, hint: retry })
    if (failed.length) {
      const f = failed[0]
      findings.push({
        status: 'problem',
        message: `promise ${quote(f?.name ?? '')} fails: ${shown(f?.message ?? '', 200) || '(no output)'}${failed.length > 1 ? ` (and ${failed.length - 1} more)` : ''}`,
        hint: `\`slapos node promise --now --only-cp ${id}\` checks again; see ${join(path, '.slapgrid', 'promise', 'log')}`,
      })
    } else if (state === 'started' && promises.defined > 0 && promises.results.length === 0 && timestamp.kind === 'ok') {
      findings.push({ status: 'warning', message: 'its promises have no result yet', hint: `\`slapos node promise --now --only-cp ${id}\` checks them` })
    }
    if (promises.results.length) detail += `, ${promises.results.length - failed.length}/${promises.results.length} promise(s) pass`
  }
  if (state === 'started' && processes) {
    const mine = processes.filter((p) => p.group === id)
    const down = mine.filter((p) => p.statename !== 'RUNNING' && p.statename !== 'STARTING')
    if (down.length) {
      findings.push({
        status: 'problem',
        message: `service(s) not running: ${down.slice(0, 3).map((p) => `${shown(p.name, 80)} ${shown(p.statename, 20)}`).join(', ')}${down.length > 3 ? ', ...' : ''}`,
        hint: `see \`slapos node status\` and the service's log in ${path}; ${retry}`,
      })
    }
    if (mine.length) detail += `, ${mine.length - down.length}/${mine.length} service(s) running`
  }
  if (timestamp.kind !== 'ok' && errorLog.kind === 'absent' && state !== 'destroyed' && state !== undefined) {
    findings.push({ status: 'warning', message: 'not deployed yet (no .timestamp)', hint: 'node instance deploys it (cron runs it every minute)' })
  }
  if (state === 'destroyed') detail += ': node report removes it'
  const check = merge(name, findings, detail)
  return check.status === 'ok' || state === undefined ? check : { ...check, message: `${state}: ${check.message}` }
}
