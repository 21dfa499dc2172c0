// `slapos node doctor`: one look at everything a node needs, each check a line saying ok,
// warning or problem, and what to do. Called by commands/node-doctor.ts.
//
// It changes nothing. The configuration, the roots, the cron file and the pid files are
// stat'ed and read; the master is asked one read (getFullComputerInformation); supervisord
// is asked its state and its processes, never started; buildout is run with --version only,
// as node software would run it (the owner of the software root), writing no bytecode; the
// files of partitions (their users are not trusted) are read with bounded readers that never
// follow a link. Thresholds are in THRESHOLDS; warnings alone keep the exit status 0.
import { opendirSync, readFileSync, statfsSync, lstatSync, statSync, type Dir, type Stats } from 'node:fs'
import { join } from 'node:path'
import { inBeneath } from './beneath.ts'
import { shebang, which } from './buildout.ts'
import { collectPidfile } from './collect-sample.ts'
import { ConfigFile, loadNodeConfig, type NodeConfig } from './config.ts'
import { AuthorizationError, NotFoundError, SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { asUser, cleanEnv, nodeSettings, ownerOf, refuseRoot, requiredFiles } from './grid-common.ts'
import { readPasswd, type PasswdEntry } from './passwd.ts'
import { errorLine, humanSize, parseSize } from './grid-software.ts'
import type { Logger } from './log.ts'
import { readUserFile, type UserFile } from './managers.ts'
import { md5hex } from './md5.ts'
import { escapeControls, isSafeId } from './names.ts'
import { isLiveSlapos, readPid } from './pidfile.ts'
import { SlapClient, type Computer, type ComputerPartition } from './slap-client.ts'
import { shellQuote, Supervisor, supervisorPaths, type ProcessInfo } from './supervisor.ts'
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

/**
 * Runs every check, in the order they are printed. Never throws: what a check finds is its
 * line, and a check that stops on something unexpected (a file this user may not look at, a
 * race with a partition's user) becomes a problem line of its own, the others still made.
 */
export async function diagnose(o: DoctorOptions): Promise<Check[]> {
  const checks: Check[] = []
  // /etc/passwd once per run: owners are named and software_user found from it
  const users = accounts(readPasswd())
  const packaged = o.packagedCron ?? builtInCron()
  const { check: configCheck, cfg } = guard('configuration', () => configurationCheck(o.cfgPath, users), (c): { check: Check; cfg?: NodeConfig } => ({ check: c }))
  checks.push(configCheck)
  if (!cfg) {
    // nothing else can be located without the configuration; the cron file still can
    checks.push(one('cron', () => cronCheck(o.cronFile, packaged, users)))
    return checks
  }
  const softwareUser = cfg.file.get('slapformat', 'software_user')?.trim() || 'slapsoft'
  checks.push(one('software root', () => rootDirCheck('software root', 'software_root', cfg.softwareRoot, cfg, [softwareUser], users)))
  checks.push(one('instance root', () => rootDirCheck('instance root', 'instance_root', cfg.instanceRoot, cfg, [], users)))
  const repository = cfg.certificateRepositoryPath
  if (repository) checks.push(one('certificate repository', () => certificateRepositoryCheck(repository, cfg, users)))
  checks.push(one('tls certificate', () => tlsCheck(cfg, o.now)))
  // the three slow ones at once: the master, supervisord and buildout
  const [master, sup, buildout] = await Promise.all([
    masterCheck(cfg).catch((e: unknown): { check: Check; computer?: Computer } => ({ check: failed('master', e) })),
    supervisordChecks(cfg, o.log).catch((e: unknown): { checks: Check[]; processes?: ProcessInfo[] } => ({ checks: [failed('supervisord', e), failed('watchdog', e)] })),
    buildoutCheck(cfg, o.runner, o.env).catch((e: unknown) => failed('buildout', e)),
  ])
  checks.push(master.check, ...sup.checks)
  checks.push(one('cron', () => cronCheck(o.cronFile, packaged, users)))
  const pidfiles: Array<[string, string]> = [
    ['software', cfg.pidfileSoftware],
    ['instance', cfg.pidfileInstance],
    ['report', cfg.pidfileReport],
    ['collect', collectPidfile(cfg.instanceRoot)],
  ]
  // node promise shares the instance pid file: one file, one check
  const seen = new Set<string>()
  for (const [kind, path] of pidfiles) {
    if (seen.has(path)) continue
    seen.add(path)
    checks.push(one(`pidfile ${kind}`, () => pidfileCheck(kind, path, o.now)))
  }
  checks.push(one('disk software root', () => diskCheck('disk software root', cfg.softwareRoot, softwareMinFree(cfg))))
  checks.push(one('disk instance root', () => diskCheck('disk instance root', cfg.instanceRoot)))
  checks.push(buildout)
  const building = pidHeldBySlapos(cfg.pidfileSoftware)
  checks.push(...guard('software releases', () => softwareChecks(cfg, master.computer, building), (c) => [c]))
  checks.push(...guard('partitions', () => partitionChecks(cfg, master.computer, sup.processes), (c) => [c]))
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
  // one line each, whatever a path or a value from outside holds (escapeControls leaves clean text as it is)
  const lines = checks.map((c) => escapeControls(`${c.status.padEnd(7)}  ${c.name}: ${c.message}${c.hint ? ` \u2014 ${c.hint}` : ''}`))
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

/** Names read from one partition directory at most (promises, results): a directory of millions costs no more. */
const MAX_NAMES = 1000
/** Names read from a root (software or instance root, certificate repository) at most. */
const MAX_ROOT_NAMES = 100_000
/** The tail of a partition's error log read for its last error line. */
const ERROR_LOG_TAIL = 64 << 10
/** One saved promise result at most. */
const PROMISE_RESULT_MAX = 64 << 10

/** Several findings of one check: the worst status, every message, the hint of the first worst. */
function merge(name: string, findings: Array<Omit<Check, 'name'>>, okMessage: string): Check {
  const bad = findings.filter((f) => f.status !== 'ok')
  if (bad.length === 0) return { name, status: 'ok', message: okMessage }
  const worst = bad.reduce((a, b) => (RANK[b.status] > RANK[a.status] ? b : a))
  return { name, status: worst.status, message: bad.map((f) => f.message).join('; '), hint: worst.hint }
}

/** `fn`'s result, or, when it throws, what `onError` makes of the check's problem line. */
function guard<T>(name: string, fn: () => T, onError: (c: Check) => T): T {
  try {
    return fn()
  } catch (e) {
    return onError(failed(name, e))
  }
}

function one(name: string, fn: () => Check): Check {
  return guard(name, fn, (c) => c)
}

/** The line of a check that stopped on an exception: the report goes on without it. */
function failed(name: string, e: unknown): Check {
  const code = (e as NodeJS.ErrnoException | undefined)?.code
  return {
    name,
    status: 'problem',
    message: `could not be checked: ${clip(e instanceof Error ? e.message : String(e))}`,
    hint: code !== undefined && denied(code) ? 'run the doctor as root' : 'run the doctor as root; if this line stays, report it as a bug of slapos node doctor',
  }
}

function builtInCron(): string | undefined {
  return typeof SLAPOS_NODE_CRON === 'string' ? SLAPOS_NODE_CRON : undefined
}

/** A value from outside, trimmed, made safe for one line and cut to `max` characters. */
function clip(s: string, max = 200): string {
  const line = escapeControls(s.trim())
  return line.length > max ? `${line.slice(0, max)}...` : line
}

/** A path in a command of a hint, as a shell reads it back, on one line. */
function shq(path: string): string {
  return escapeControls(shellQuote(path))
}

function mode(st: Stats): string {
  return `0${(st.mode & 0o7777).toString(8)}`
}

/**
 * stat (lstat with `lstat`) that never throws: the Stats, 'absent' when nothing is there
 * (ENOENT), or the error code (EACCES for a directory this user may not search, ENOTDIR when a
 * parent is a file, ELOOP ...). The doctor runs as anyone: no such error may end the report.
 */
function statOrWhy(path: string, lstat = false): Stats | string {
  try {
    return lstat ? lstatSync(path) : statSync(path)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    return code === 'ENOENT' ? 'absent' : (code ?? String(e))
  }
}

function isStats(s: Stats | string): s is Stats {
  return typeof s !== 'string'
}

/** A permission error: another user (root) would see more, nothing is known to be wrong. */
function denied(code: string): boolean {
  return code === 'EACCES' || code === 'EPERM'
}

/**
 * A path that cannot be looked at: a warning when only permissions stop this user (root
 * would see it), else a problem with `hint`.
 */
function unexaminable(name: string, what: string, code: string, hint: string): Check {
  if (denied(code)) return { name, status: 'warning', message: `${what} cannot be examined by this user (${code})`, hint: 'run the doctor as root' }
  return { name, status: 'problem', message: `${what} cannot be examined (${code})`, hint }
}

/**
 * Up to `cap` names of `dir` that `keep` accepts, read one entry at a time (a huge directory
 * costs no more memory, and at most 100 times `cap` entries are looked at), or the error code.
 */
function listDir(dir: string, keep: (name: string) => boolean, cap: number): string[] | string {
  let d: Dir | undefined
  try {
    d = opendirSync(dir)
    const names: string[] = []
    let seen = 0
    for (let e = d.readSync(); e && names.length < cap && seen < cap * 100; e = d.readSync()) {
      seen++
      if (keep(e.name)) names.push(e.name)
    }
    return names
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e)
  } finally {
    d?.closeSync()
  }
}

interface Accounts {
  nameOf(uid: number): string
  uidOf(name: string): number | undefined
}

/** Names of uids and uids of names (the first account of a uid names it). */
function accounts(entries: readonly PasswdEntry[]): Accounts {
  const byUid = new Map<number, string>()
  const byName = new Map<string, number>()
  for (const a of entries) {
    if (!byUid.has(a.uid)) byUid.set(a.uid, a.name)
    byName.set(a.name, a.uid)
  }
  return { nameOf: (uid) => byUid.get(uid) ?? String(uid), uidOf: (name) => byName.get(name) }
}

function myUid(): number {
  return process.getuid?.() ?? 0
}

// --- configuration and directories ---

function configurationCheck(path: string, users: Accounts): { check: Check; cfg?: NodeConfig } {
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
  const st = statOrWhy(path)
  if (isStats(st)) {
    if (st.uid !== 0 && st.uid !== myUid()) {
      findings.push({ status: 'problem', message: `${path} belongs to ${users.nameOf(st.uid)}, who can change what the node runs as root`, hint: `chown root ${shq(path)}` })
    }
    if (st.mode & 0o022) {
      findings.push({ status: 'problem', message: `${path} is writable by group or others (mode ${mode(st)})`, hint: `chmod go-w ${shq(path)}` })
    }
  }
  // the files the node commands require (grid.md §1.3), the list startNodeRun checks
  for (const [key, p] of requiredFiles(cfg, nodeSettings(file))) {
    const f = statOrWhy(p)
    if (f === 'absent') findings.push({ status: 'problem', message: `${key} ${p} does not exist`, hint: `fix ${key} in ${path}` })
    else if (!isStats(f)) findings.push(unexaminable(name, `${key} ${p}`, f, `fix ${key} in ${path}`))
  }
  if (cfg.rootCheck && myUid() !== 0) {
    findings.push({ status: 'warning', message: 'the doctor runs without root: files of partitions and keys may be unreadable to it', hint: 'run it as root (sudo slapos node doctor)' })
  }
  return { check: merge(name, findings, `${path}: computer '${clip(cfg.computerId, 100)}', master ${clip(cfg.masterUrl)}, mandatory keys set`), cfg }
}

/**
 * A root directory: it exists, belongs to root, to the user running the node (a node without
 * root) or to one of `owners`, and nobody else can write in it (the node acts there as root).
 */
function rootDirCheck(name: string, key: string, path: string, cfg: NodeConfig, owners: string[], users: Accounts): Check {
  const st = statOrWhy(path)
  if (st === 'absent') return { name, status: 'problem', message: `${path} does not exist`, hint: `run \`slapos node format\` (it creates it), or fix ${key} in ${cfg.file.path}` }
  if (!isStats(st)) return unexaminable(name, path, st, `fix ${key} in ${cfg.file.path}`)
  if (!st.isDirectory()) return { name, status: 'problem', message: `${path} is not a directory`, hint: `fix ${key} in ${cfg.file.path}` }
  const known = owners.filter((u) => users.uidOf(u) !== undefined)
  const allowed = new Set([0, myUid(), ...known.map((u) => users.uidOf(u) ?? 0)])
  const findings: Array<Omit<Check, 'name'>> = []
  if (!allowed.has(st.uid)) {
    findings.push({ status: 'problem', message: `${path} belongs to ${users.nameOf(st.uid)}, not to ${['root', ...known].join(' or ')}`, hint: `chown ${known[0] ?? 'root'} ${shq(path)}` })
  }
  if (st.mode & 0o022) findings.push({ status: 'problem', message: `${path} is writable by group or others (mode ${mode(st)})`, hint: `chmod 755 ${shq(path)}` })
  return merge(name, findings, `${path}: owner ${users.nameOf(st.uid)}, mode ${mode(st)}`)
}

/** certificate_repository_path holds the partitions' keys: nobody else writes there, no key is readable by others. */
function certificateRepositoryCheck(path: string, cfg: NodeConfig, users: Accounts): Check {
  const name = 'certificate repository'
  const dir = rootDirCheck(name, 'certificate_repository_path', path, cfg, [], users)
  const st = statOrWhy(path)
  if (!isStats(st) || !st.isDirectory()) return dir
  const keys = listDir(path, (n) => n.endsWith('.key'), MAX_ROOT_NAMES)
  if (!Array.isArray(keys)) return dir.status === 'ok' ? unexaminable(name, `the keys in ${path}`, keys, `fix certificate_repository_path in ${cfg.file.path}`) : dir
  const open: string[] = []
  for (const n of keys) {
    const k = statOrWhy(join(path, n), true)
    if (isStats(k) && k.isFile() && k.mode & 0o077) open.push(n)
  }
  if (open.length === 0) return dir.status === 'ok' ? { ...dir, message: `${dir.message}, ${keys.length} partition keys, none readable by others` } : dir
  const loose: Check = {
    name,
    status: 'problem',
    message: `${open.length} partition key(s) readable by group or others: ${open.slice(0, 3).map((n) => clip(n, 80)).join(', ')}${open.length > 3 ? ', ...' : ''}`,
    hint: `chmod 400 ${shq(path)}/*.key`,
  }
  return dir.status === 'ok' ? loose : merge(name, [dir, loose], '')
}

// --- the master and its certificate ---

/** A small file of the configuration (a certificate, a key): its text, or why not. */
function readSmall(path: string): { text: string } | { why: string; code?: string } {
  const st = statOrWhy(path)
  if (st === 'absent') return { why: 'does not exist' }
  if (!isStats(st)) return { why: `cannot be read (${st})`, code: st }
  if (!st.isFile()) return { why: 'is not a regular file' }
  if (st.size > 1 << 20) return { why: 'is larger than 1 MiB' }
  try {
    return { text: readFileSync(path, 'utf8') }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e)
    return { why: `cannot be read (${code})`, code }
  }
}

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
  const unreadable = (key: string, path: string | undefined, r: { why: string; code?: string }): Check =>
    r.code && denied(r.code)
      ? { name, status: 'warning', message: `${key} ${path} cannot be read by this user (${r.code})`, hint: 'run the doctor as root' }
      : { name, status: 'problem', message: `${key} ${path ?? '(not set)'} ${path ? r.why : ''}`.trimEnd(), hint: `fix ${key} in ${cfg.file.path}` }
  const certRead = cfg.certFile ? readSmall(cfg.certFile) : { why: '' }
  if (!('text' in certRead)) return unreadable('cert_file', cfg.certFile, certRead)
  const keyRead = cfg.keyFile ? readSmall(cfg.keyFile) : { why: '' }
  if (!('text' in keyRead)) return unreadable('key_file', cfg.keyFile, keyRead)
  const { X509Certificate, createPrivateKey } = process.getBuiltinModule('node:crypto')
  let cert: InstanceType<typeof X509Certificate>
  try {
    cert = new X509Certificate(certRead.text)
  } catch (e) {
    return { name, status: 'problem', message: `cert_file ${cfg.certFile} is not a PEM certificate (${(e as Error).message})`, hint: `fix cert_file in ${cfg.file.path}` }
  }
  let matches: boolean
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyRead.text))
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
  const keyStat = cfg.keyFile ? statOrWhy(cfg.keyFile) : 'absent'
  if (isStats(keyStat) && keyStat.mode & 0o077) {
    findings.push({ status: 'warning', message: `key_file ${cfg.keyFile} is readable by group or others (mode ${mode(keyStat)})`, hint: `chmod 600 ${shq(cfg.keyFile ?? '')}` })
  }
  if (cfg.masterCaFile) {
    const ca = readSmall(cfg.masterCaFile)
    try {
      if (!('text' in ca)) throw new Error(ca.why)
      const caCert = new X509Certificate(ca.text)
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
  const url = clip(cfg.masterUrl)
  const id = `'${clip(cfg.computerId, 100)}'`
  const client = new SlapClient({ masterUrl: cfg.masterUrl, keyFile: cfg.keyFile, certFile: cfg.certFile, caFile: cfg.masterCaFile, timeoutMs: THRESHOLDS.masterTimeoutMs })
  try {
    const computer = await client.getFullComputerInformation(cfg.computerId)
    const n = computer._computer_partition_list.length
    const message = `${url} answers for computer ${id}: ${computer._software_release_list.length} software release(s), ${n} partition(s)`
    return { check: { name, status: 'ok', message }, computer }
  } catch (e) {
    const message = clip(e instanceof Error ? e.message : String(e), 400)
    if (e instanceof NotFoundError) {
      return { check: { name, status: 'problem', message: `${url} does not know computer ${id} (${message})`, hint: `check computer_id in ${cfg.file.path}, or register this node (slapos node register)` } }
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
  // var/run is root's (0700): another user cannot tell whether supervisord runs
  const hidden = (code: string): { checks: Check[] } => ({
    checks: [
      unexaminable('supervisord', paths.socket, code, start),
      unexaminable('watchdog', `supervisord's socket ${paths.socket}`, code, start),
    ],
  })
  const sock = statOrWhy(paths.socket)
  if (sock === 'absent') return down(`not running: no socket ${paths.socket}`)
  if (!isStats(sock)) return hidden(sock)
  const sup = new Supervisor(paths, log)
  const answer = (e: unknown) => {
    // the connection error wraps the socket's own (EACCES on root's 0700 socket)
    const code = (e instanceof Error && (e.cause as NodeJS.ErrnoException | undefined)?.code) || (e as NodeJS.ErrnoException).code
    return code !== undefined && denied(code) ? hidden(code) : down(`does not answer on ${paths.socket} (${clip(e instanceof Error ? e.message : String(e))})`)
  }
  let state: string
  try {
    state = await sup.getState(THRESHOLDS.supervisordTimeoutMs)
  } catch (e) {
    return answer(e)
  }
  if (state !== 'RUNNING') return down(`state ${clip(state)}, not RUNNING`)
  let processes: ProcessInfo[]
  try {
    processes = await sup.processInfo()
  } catch (e) {
    return answer(e)
  }
  // the event listener is in the same list (its pool is the group `watchdog`)
  const watchdog = processes.find((p) => p.group === 'watchdog' && p.name === 'watchdog')
  const running = processes.filter((p) => p.statename === 'RUNNING').length
  const checks: Check[] = [{ name: 'supervisord', status: 'ok', message: `running on ${paths.socket}, ${running} process(es) running` }]
  if (watchdog?.statename === 'RUNNING' || watchdog?.statename === 'STARTING') {
    checks.push({ name: 'watchdog', status: 'ok', message: 'the event listener that bangs partitions whose services die is running' })
  } else {
    checks.push({
      name: 'watchdog',
      status: 'problem',
      message: watchdog ? `the event listener is ${clip(watchdog.statename)}` : 'supervisord has no watchdog event listener',
      hint: `check watchdog_command in ${cfg.file.path} and ${paths.logfile}; the next node instance adds it again`,
    })
  }
  return { checks, processes }
}

// --- cron, pid files, disks, buildout ---

/** The installed cron file: present, taken by cron (root's, not writable by others), with the package's lines. */
function cronCheck(file: string, packaged: string | undefined, users: Accounts): Check {
  const name = 'cron'
  const reinstall = `reinstall the slapos package, which installs ${DEFAULT_CRON_FILE}`
  const st = statOrWhy(file)
  if (st === 'absent') return { name, status: 'problem', message: `${file} is missing: nothing runs node software, instance and report periodically`, hint: reinstall }
  if (!isStats(st)) return unexaminable(name, file, st, reinstall)
  if (!st.isFile()) return { name, status: 'problem', message: `${file} is not a regular file`, hint: reinstall }
  if (st.uid !== 0) return { name, status: 'problem', message: `${file} belongs to ${users.nameOf(st.uid)}: cron ignores it`, hint: `chown root:root ${shq(file)}` }
  if (st.mode & 0o022) return { name, status: 'problem', message: `${file} is writable by group or others (mode ${mode(st)}): cron ignores it`, hint: `chmod 644 ${shq(file)}` }
  if (packaged === undefined) return { name, status: 'warning', message: `${file} is installed; this build carries no packaged cron file to compare it with`, hint: 'use a slapos executable built with make' }
  const read = readUserFile(file, 1 << 20)
  if (read.kind !== 'ok') return { name, status: 'problem', message: `${file} cannot be read (${read.kind === 'refused' ? read.why : 'absent'})`, hint: reinstall }
  const { missing, extra } = compareCron(packaged, read.bytes.toString('utf8'))
  if (missing.length === 0 && extra.length === 0) return { name, status: 'ok', message: `${file} has the package's lines` }
  const parts: string[] = []
  if (missing.length) parts.push(`${missing.length} of the package's lines missing or changed (first: ${clip(missing[0] ?? '', 160)})`)
  if (extra.length) parts.push(`${extra.length} line(s) the package does not write (first: ${clip(extra[0] ?? '', 160)})`)
  return { name, status: 'warning', message: `${file} differs from the package's: ${parts.join('; ')}`, hint: `restore the package's lines (${reinstall}), or keep the change knowingly` }
}

function pidHeldBySlapos(path: string): boolean {
  const pid = readPid(path)
  return pid !== undefined && isLiveSlapos(pid)
}

/** A pid file: absent (no run), held by a live slapos run (for how long), or stale. */
function pidfileCheck(kind: string, path: string, now: Date): Check {
  const name = `pidfile ${kind}`
  const st = statOrWhy(path, true)
  if (st === 'absent') return { name, status: 'ok', message: `no node ${kind} running (no ${path})` }
  if (!isStats(st)) return unexaminable(name, path, st, `fix the directory of ${path}: node ${kind} cannot take its pid file`)
  const pid = readPid(path)
  const blocks = kind === 'software' ? ' (node prune refuses to run while it exists)' : ''
  if (pid === undefined) return { name, status: 'warning', message: `${path} holds no process id${blocks}`, hint: `rm ${shq(path)}` }
  if (!isLiveSlapos(pid)) {
    return { name, status: 'warning', message: `${path} is stale: process ${pid} is not a running slapos${blocks}`, hint: `the next node ${kind} takes it over; \`rm ${shq(path)}\` tidies up` }
  }
  const hours = (now.getTime() - st.mtimeMs) / 3_600_000
  if (hours > THRESHOLDS.pidfileWarningHours) {
    return { name, status: 'warning', message: `node ${kind} (process ${pid}) has been running for ${Math.floor(hours)} hours`, hint: `see its log; if it hangs, stop it (kill ${pid})` }
  }
  return { name, status: 'ok', message: `node ${kind} running now (process ${pid})` }
}

/**
 * `software_min_free_space` as node software reads it: from the same merged settings
 * (nodeSettings: [networkcache] wins over [slapos]), default 1000M, parsed by the same
 * parseSize. `bytes` undefined: not a size, and node software refuses to build.
 */
function softwareMinFree(cfg: NodeConfig): { text: string; bytes: number | undefined } {
  const text = (nodeSettings(cfg.file).get('software_min_free_space') ?? '1000M').trim()
  return { text, bytes: parseSize(text) }
}

function diskCheck(name: string, path: string, minFree?: { text: string; bytes: number | undefined }): Check {
  let fs
  try {
    fs = statfsSync(path)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e)
    if (code === 'ENOENT') return { name, status: 'problem', message: `${path} does not exist`, hint: 'create it (slapos node format)' }
    return unexaminable(name, path, code, 'fix the root in the configuration')
  }
  const free = fs.bavail * fs.bsize
  const spacePct = fs.blocks > 0 ? (fs.bavail / fs.blocks) * 100 : 100
  // some file systems (btrfs) have no fixed inode count: files = 0
  const inodePct = fs.files > 0 ? (fs.ffree / fs.files) * 100 : undefined
  const pct = (n: number) => `${n < 10 ? n.toFixed(1) : Math.floor(n)}%`
  const findings: Array<Omit<Check, 'name'>> = []
  const space = diskLevel(spacePct)
  if (space !== 'ok') findings.push({ status: space, message: `${path}: only ${pct(spacePct)} of the space free (${humanSize(free)})`, hint: 'free space on this file system (old logs, destroyed partitions: node report removes them)' })
  const inodes = inodePct === undefined ? 'ok' : diskLevel(inodePct)
  if (inodes !== 'ok' && inodePct !== undefined) findings.push({ status: inodes, message: `${path}: only ${pct(inodePct)} of the inodes free`, hint: 'remove files on this file system (many small ones: caches, old software releases)' })
  if (minFree && minFree.bytes === undefined) {
    findings.push({ status: 'problem', message: `software_min_free_space = ${clip(minFree.text, 40)} is not a size: node software refuses to build`, hint: 'write it as 1000M, 2G or a number of bytes' })
  } else if (minFree?.bytes !== undefined && free < minFree.bytes) {
    findings.push({ status: 'warning', message: `${path}: ${humanSize(free)} free, below software_min_free_space (${minFree.text}): node software refuses to build`, hint: 'free space, or lower software_min_free_space' })
  }
  return merge(name, findings, `${path}: ${pct(spacePct)} of the space free (${humanSize(free)})${inodePct === undefined ? '' : `, ${pct(inodePct)} of the inodes`}`)
}

/**
 * The configured buildout exists, is executable and answers `--version`, run as node software
 * runs buildout (the binary its `which` finds, the software root's owner, clean environment)
 * and writing no bytecode.
 */
async function buildoutCheck(cfg: NodeConfig, runner: Runner, env: NodeJS.ProcessEnv): Promise<Check> {
  const name = 'buildout'
  const fix = `set buildout in [slapos] of ${cfg.file.path} to a buildout that runs on this system (the packages install /opt/slapos/bin/buildout)`
  const bin = cfg.buildout
  // runBuildout looks it up on the PATH of the clean environment, which keeps the caller's
  const path = which(bin, env.PATH)
  if (path === undefined) return { name, status: 'problem', message: bin.includes('/') ? `${clip(bin)} is not an absolute path` : `${clip(bin)} is not found on PATH`, hint: fix }
  const st = statOrWhy(path)
  if (st === 'absent') return { name, status: 'problem', message: `${path} does not exist`, hint: fix }
  if (!isStats(st)) return unexaminable(name, path, st, fix)
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
    return { name, status: 'problem', message: `${path} exists, but the owner of ${cfg.softwareRoot} cannot be found (${clip((e as Error).message)})`, hint: 'create software_root (slapos node format)' }
  }
  const r = await runner
    .run([...shebang(path), path, '--version'], { cwd: '/', env: { ...cleanEnv(env, home), PYTHONDONTWRITEBYTECODE: '1' }, ...user, timeoutMs: THRESHOLDS.buildoutTimeoutMs, processGroup: true })
    .catch((e: unknown) => ({ code: null, signal: null, stdout: '', stderr: e instanceof Error ? e.message : String(e), timedOut: false }))
  const output = (r.stdout + '\n' + r.stderr).trim()
  if (r.timedOut) return { name, status: 'problem', message: `${path} --version did not answer within ${THRESHOLDS.buildoutTimeoutMs / 1000} s`, hint: fix }
  if (r.code !== 0) return { name, status: 'problem', message: `${path} --version fails: ${clip(errorLine(output) || `exit ${r.code ?? r.signal}`)}`, hint: fix }
  return { name, status: 'ok', message: `${path}: ${clip(output.split('\n')[0] ?? '', 120)}` }
}

// --- software releases and partitions ---

/**
 * Each software release the master supplies: `.completed` in its directory means installed;
 * a directory without it, a build that failed or was interrupted (node software leaves no
 * other trace on disk). Without the master's list, the directories on disk are looked at.
 */
function softwareChecks(cfg: NodeConfig, computer: Computer | undefined, building: boolean): Check[] {
  const retry = 'see the node software log (slapos-node-software.log), or run `slapos node software --now` to try again'
  const check = (hash: string, label: string, state: string): Check => {
    const name = `software release ${hash}`
    return one(name, () => {
      const path = join(cfg.softwareRoot, hash)
      const st = statOrWhy(path, true)
      // ENOTDIR: software_root is a file, which its own check says
      if (!isStats(st) && st !== 'absent') return unexaminable(name, `${label}: ${path}`, st, `fix software_root in ${cfg.file.path}`)
      if (state === 'destroyed') {
        return isStats(st) ? { name, status: 'warning', message: `${label}: destroyed on the master, still in ${path}`, hint: 'the next node software removes it' } : { name, status: 'ok', message: `${label}: destroyed` }
      }
      if (!isStats(st)) {
        if (building) return { name, status: 'ok', message: `${label}: being installed now` }
        return { name, status: 'warning', message: `${label}: not installed yet`, hint: 'node software installs it (cron runs it every minute)' }
      }
      if (!st.isDirectory()) return { name, status: 'problem', message: `${label}: ${path} is not a directory`, hint: `\`rm ${shq(path)}\`; node software installs it again` }
      // its existence decides, as in node software; the date inside is only shown
      const completed = join(path, '.completed')
      const done = statOrWhy(completed, true)
      if (isStats(done)) {
        const text = readUserFile(completed, 256)
        const when = text.kind === 'ok' ? clip(text.bytes.toString('utf8'), 40) : ''
        return { name, status: 'ok', message: `${label}: installed${when ? ` (${when})` : ''}` }
      }
      if (done !== 'absent') return unexaminable(name, `${label}: ${completed}`, done, retry)
      if (building) return { name, status: 'ok', message: `${label}: being built now` }
      return { name, status: 'problem', message: `${label}: not installed, its last build failed or was interrupted`, hint: retry }
    })
  }
  if (computer) {
    const list = computer._software_release_list
    if (list.length === 0) return [{ name: 'software releases', status: 'ok', message: 'none supplied to this computer' }]
    return list.map((sr) => check(md5hex(sr._software_release), `'${clip(sr._software_release, 300)}'`, sr._requested_state ?? 'available'))
  }
  // the master did not answer: what the disk says (the software root's own check says why it cannot be listed)
  const names = listDir(cfg.softwareRoot, (n) => /^[0-9a-f]{32}$/.test(n), MAX_ROOT_NAMES)
  if (!Array.isArray(names)) return []
  return names.sort().map((h) => check(h, `${h} (the master did not say which release this is)`, 'available'))
}

interface PromiseState {
  /** promises the partition defines (etc/promise, etc/plugin), counted up to MAX_NAMES each */
  defined: number
  results: Array<{ name: string; failed: boolean; message: string }>
  refused?: string
}

/** The saved promise results of a partition, read without following links, bounded in number and size. */
function promiseState(path: string): PromiseState {
  const count = (parts: string[]) => {
    const names = inBeneath(path, parts, undefined, (d) => listDir(d.proc, (n) => !n.startsWith('__init__') && !n.startsWith('.'), MAX_NAMES))
    return Array.isArray(names) ? names.length : 0
  }
  const defined = count(['etc', 'promise']) + count(['etc', 'plugin'])
  const resultDir = join(path, '.slapgrid', 'promise', 'result')
  for (const d of [join(path, '.slapgrid'), join(path, '.slapgrid', 'promise'), resultDir]) {
    const st = statOrWhy(d, true)
    if (st === 'absent') return { defined, results: [] }
    if (!isStats(st)) return { defined, results: [], refused: `${d} cannot be examined (${st})` }
    if (!st.isDirectory()) return { defined, results: [], refused: `${d} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}` }
  }
  // the checks above name what is wrong; the reading itself never follows a link (beneath.ts),
  // whatever the partition's user changes meanwhile
  const read = inBeneath(path, ['.slapgrid', 'promise', 'result'], undefined, (dir) => {
    const names = listDir(dir.proc, (n) => n.endsWith('.status.json'), MAX_NAMES)
    if (!Array.isArray(names)) return `${resultDir} cannot be listed (${names})`
    const results: PromiseState['results'] = []
    for (const n of names.sort()) {
      const j = parseJson(dir.read(n, PROMISE_RESULT_MAX))
      if (typeof j !== 'object' || j === null) continue
      const v = j as { name?: unknown; result?: { failed?: unknown; message?: unknown } }
      results.push({
        name: typeof v.name === 'string' ? v.name : n.slice(0, -'.status.json'.length),
        failed: v.result?.failed === true,
        message: typeof v.result?.message === 'string' ? v.result.message : '',
      })
    }
    return results
  })
  if (read === undefined) return { defined, results: [], refused: `${resultDir} was replaced while being read` }
  return typeof read === 'string' ? { defined, results: [], refused: read } : { defined, results: read }
}

/** The value of a JSON file read with readUserFile; undefined when it was not read or is not JSON. */
function parseJson(read: UserFile): unknown {
  if (read.kind !== 'ok') return undefined
  try {
    return JSON.parse(read.bytes.toString('utf8')) as unknown
  } catch {
    return undefined
  }
}

/**
 * Each partition the master gave a software release: its directory, the last run's error
 * (`.slapgrid-<id>-error.log`), its promises, its services, whether it was ever deployed
 * (`.timestamp`). Free partitions are counted in one line.
 */
function partitionChecks(cfg: NodeConfig, computer: Computer | undefined, processes: ProcessInfo[] | undefined): Check[] {
  const checks: Check[] = []
  const check = (id: string, state: string | undefined) => one(`partition ${id}`, () => partitionCheck(cfg, id, state, processes))
  if (!computer) {
    // the master did not answer: the partitions on disk that were ever processed (or that this user cannot look into)
    const names = listDir(cfg.instanceRoot, (n) => isSafeId(n) && n.startsWith(cfg.partitionBaseName), MAX_ROOT_NAMES)
    if (!Array.isArray(names)) return []
    for (const id of names.sort()) {
      const path = join(cfg.instanceRoot, id)
      if (statOrWhy(join(path, '.timestamp'), true) !== 'absent' || statOrWhy(join(path, `.slapgrid-${id}-error.log`), true) !== 'absent') checks.push(check(id, undefined))
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
      unsafe.push(clip(String(id), 60))
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
  for (const { id, state } of mine) checks.push(check(id, state))
  return checks
}

function softwareUrl(p: ComputerPartition): string | undefined {
  const doc = p._software_release_document
  return (typeof doc === 'string' ? doc : doc?._software_release) || undefined
}

function partitionCheck(cfg: NodeConfig, id: string, state: string | undefined, processes: ProcessInfo[] | undefined): Check {
  const name = `partition ${id}`
  const path = join(cfg.instanceRoot, id)
  const labelled = (c: Check): Check => (c.status === 'ok' || state === undefined ? c : { ...c, message: `${state}: ${c.message}` })
  const st = statOrWhy(path, true)
  if (!isStats(st) && st !== 'absent') return labelled(unexaminable(name, path, st, `fix instance_root in ${cfg.file.path}`))
  if (!isStats(st) || !st.isDirectory()) return { name, status: 'problem', message: `${path} ${isStats(st) ? 'is not a directory' : 'does not exist'}`, hint: 'run `slapos node format`: it creates the partitions' }
  // a partition is its user's (0750): another user than root sees nothing inside
  const probe = statOrWhy(join(path, '.timestamp'), true)
  if (!isStats(probe) && probe !== 'absent') return labelled(unexaminable(name, `the files of ${path}`, probe, 'run `slapos node format`: it gives partitions their modes'))
  const retry = `\`slapos node instance --now --only-cp ${id}\` tries again`
  const findings: Array<Omit<Check, 'name'>> = []
  // the last error line is at the end: the log's last 64 KiB are enough, however long it is
  const errorLog = readUserFile(join(path, `.slapgrid-${id}-error.log`), ERROR_LOG_TAIL, undefined, { tail: true })
  if (errorLog.kind === 'ok') {
    let text = errorLog.bytes.toString('utf8')
    if (errorLog.skipped) text = text.slice(text.indexOf('\n') + 1) // the first line read is cut
    findings.push({ status: 'problem', message: `its last run failed: ${clip(errorLine(text) || '(empty error log)')}`, hint: `see ${join(path, '.slapgrid', 'log', 'instance.log')}; ${retry}` })
  } else if (errorLog.kind === 'refused') {
    findings.push({ status: 'warning', message: `its error log is ${errorLog.why}`, hint: retry })
  }
  const timestamp = readUserFile(join(path, '.timestamp'), 256)
  let detail = state ?? 'state unknown (no answer from the master)'
  if (state === 'started' || state === undefined) {
    const promises = promiseState(path)
    const failed = promises.results.filter((r) => r.failed)
    if (promises.refused) findings.push({ status: 'warning', message: `its promise results cannot be read: ${promises.refused}`, hint: retry })
    const first = failed[0]
    if (first) {
      findings.push({
        status: 'problem',
        message: `promise '${clip(first.name, 80)}' fails: ${clip(first.message) || '(no output)'}${failed.length > 1 ? ` (and ${failed.length - 1} more)` : ''}`,
        hint: `\`slapos node promise --now --only-cp ${id}\` checks again; see ${join(path, '.slapgrid', 'promise', 'log')}`,
      })
    } else if (state === 'started' && promises.defined > 0 && promises.results.length === 0 && timestamp.kind === 'ok') {
      findings.push({ status: 'warning', message: 'its promises have no result yet', hint: `\`slapos node promise --now --only-cp ${id}\` checks them` })
    }
    if (promises.results.length) detail += `, ${promises.results.length - failed.length}/${promises.results.length} promise(s) pass`
  }
  if (state === 'started' && processes) {
    const own = processes.filter((p) => p.group === id)
    const down = own.filter((p) => p.statename !== 'RUNNING' && p.statename !== 'STARTING')
    if (down.length) {
      findings.push({
        status: 'problem',
        message: `service(s) not running: ${down.slice(0, 3).map((p) => `${clip(p.name, 80)} ${clip(p.statename, 20)}`).join(', ')}${down.length > 3 ? ', ...' : ''}`,
        hint: `see \`slapos node status\` and the service's log in ${path}; ${retry}`,
      })
    }
    if (own.length) detail += `, ${own.length - down.length}/${own.length} service(s) running`
  }
  if (timestamp.kind !== 'ok' && errorLog.kind === 'absent' && state !== 'destroyed' && state !== undefined) {
    findings.push({ status: 'warning', message: 'not deployed yet (no .timestamp)', hint: 'node instance deploys it (cron runs it every minute)' })
  }
  if (state === 'destroyed') detail += ': node report removes it'
  return labelled(merge(name, findings, detail))
}
