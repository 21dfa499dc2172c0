// The `[firewall]` integration of slapgrid (node-extras §2): firewalld direct rules that let
// only the partition's instance tree and the authorised sources reach a partition's `route_*`
// IPv4 addresses, and the supervisord programs `firewall` and `dbus` of the node. Used by
// grid-instance.ts (rules, §2.3), by the structure creation of node software/instance/report
// (programs, §2.2) and by manager-whitelistfirewall.ts (commandPrefix).
//
//   addresses, tree, _filter_dict, [firewall]  --firewallRules-->  rule strings (pure)
//   rule strings  --applyFirewall-->  query/add, query/remove stale  --> reload --> rules file
//
// The rules file `<partition>/.slapos-firewalld-rules` lies in a directory of the partition's
// user, who can replace it: it is trusted only when it is a regular root-owned file, and each
// recorded rule only when it parses as one of the shapes this module writes. The user can
// also delete it: a destroyed partition's rules are recomputed from its current inputs as
// well. No rule text ever reaches a shell: firewall-cmd gets an argument list. Files in a
// partition's directory are read with readUserFile (bounded, no link followed) and written
// with replaceFile (renamed over, never written through) of managers.ts.
import { lstatSync, mkdirSync, readFileSync, statSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError, NotFoundError, SlapError } from './errors.ts'
import type { Logger } from './log.ts'
import { readUserFile, replaceFile, shown } from './managers.ts'
import { escapeControls, hasControl, quote } from './names.ts'
import { Tuple } from './slap-protocol.ts'
import { supervisorPaths } from './supervisor.ts'
import type { Runner } from './system.ts'

export const FIREWALL_RULES_FILE = '.slapos-firewalld-rules'

/** Largest rules file read back (a partition with thousands of sources stays far below). */
const MAX_RULES_FILE = 1 << 20
/** Each firewall-cmd call (a D-Bus round trip to firewalld) gets this long. */
const COMMAND_TIMEOUT_MS = 120_000

/** What the rule commands need of `[firewall]` (FirewallOptions of managers.ts has it). */
export interface FirewallCommandOptions {
  /** prefix of every rule command, split on whitespace (root's configuration) */
  firewallCmd: string
  /** run through `sh -c` after rules changed (root's configuration) */
  reloadConfigCmd: string
  /** `[firewall] authorized_sources`, as written */
  authorizedSources: readonly string[]
}

/** What the supervisord programs need of `[firewall]`. */
export interface FirewallProgramOptions {
  firewallExecutable: string
  dbusExecutable: string
  logFile: string
  dbusLogFile: string
  testing: boolean
}

/** The part of a partition the rules are about. */
export interface FirewallPartition {
  id: string
  /** the partition directory */
  path: string
  /** ip_list then full_ip_list: [interface, address] */
  addresses: ReadonlyArray<readonly [string, string]>
}

/** The firewall options of a partition's `_filter_dict` (§2.4 step 3). */
export interface FirewallFilter {
  /** false only for `fw_restricted_access = off` */
  restricted: boolean
  /** `fw_authorized_sources` split on single spaces */
  authorized: string[]
  /** `fw_rejected_sources` split on single spaces */
  rejected: string[]
}

// --- addresses ---

const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
const IPV4 = `${OCTET}(?:\\.${OCTET}){3}`
const IPV4_RE = new RegExp(`^${IPV4}$`)
const SOURCE_RE = new RegExp(`^${IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?$`)

/** A dotted IPv4 address in its usual form (four decimal bytes, no leading zero). */
export function isIPv4(s: unknown): s is string {
  return typeof s === 'string' && IPV4_RE.test(s)
}

/** A source of a rule: an IPv4 address, or a network `a.b.c.d/len` with len 0-32. */
export function isSource(s: unknown): s is string {
  return typeof s === 'string' && SOURCE_RE.test(s)
}

/** §2.4 step 1: the IPv4 addresses of interfaces named `route_*`, each once, in order. */
export function routeAddresses(addresses: FirewallPartition['addresses']): string[] {
  const out: string[] = []
  for (const [iface, address] of addresses) {
    if (typeof iface === 'string' && iface.startsWith('route_') && isIPv4(address) && !out.includes(address)) out.push(address)
  }
  return out
}

/**
 * §2.4 step 2: the IPv4 addresses of the instance tree, without `own`.
 * `/getHostingSubscriptionIpList` answers a list of `(interface, address)` tuples, which the
 * xml_marshaller decoder gives as Tuple objects; `[interface, address]` lists and bare
 * addresses are taken too.
 */
export function treeAddresses(raw: readonly unknown[], own: readonly string[]): string[] {
  const out: string[] = []
  for (const entry of raw) {
    const address = entry instanceof Tuple ? entry.items[1] : Array.isArray(entry) ? (entry as unknown[])[1] : entry
    if (isIPv4(address) && !own.includes(address) && !out.includes(address)) out.push(address)
  }
  return out
}

/**
 * §2.4 step 3 from the partition's `_filter_dict`. An absent or non-dict value gives the
 * defaults (restricted, no sources); a value that is not a string counts as empty.
 */
export function firewallFilter(dict: unknown): FirewallFilter {
  const d = dict && typeof dict === 'object' && !Array.isArray(dict) ? (dict as Record<string, unknown>) : {}
  const text = (k: string): string => (typeof d[k] === 'string' ? (d[k] as string) : '')
  return { restricted: text('fw_restricted_access') !== 'off', authorized: text('fw_authorized_sources').split(' '), rejected: text('fw_rejected_sources').split(' ') }
}

/**
 * Fetches the tree's addresses. slapproxy has no `/getHostingSubscriptionIpList` (404): that
 * is an empty tree, not a failure of every partition as in the original.
 */
export async function fetchTreeAddresses(fetch: () => Promise<readonly unknown[]>, log: Logger): Promise<unknown[]> {
  try {
    return [...(await fetch())]
  } catch (e) {
    if (!(e instanceof NotFoundError)) throw e
    log.debug(`The master does not give the addresses of the instance tree (${escapeControls(e.message)}): only the authorized sources are accepted.`)
    return []
  }
}

// --- rules ---

const BASE = ['--permanent', '--direct', '--add-rule', 'ipv4', 'filter']
const STATE = ['-m', 'state', '--state', 'ESTABLISHED,RELATED']

/** Input of firewallRules. */
export interface RuleInput {
  /** the partition's `route_*` IPv4 addresses (routeAddresses) */
  destinations: readonly string[]
  /** the tree's addresses (treeAddresses) */
  tree: readonly string[]
  filter: FirewallFilter
  /** `[firewall] authorized_sources` */
  authorizedSources: readonly string[]
}

/**
 * §2.4 step 4: the rule strings (no firewall_cmd prefix) for every destination, each once.
 * Sources that are not an IPv4 address or network are warned about once and left out;
 * empty ones are dropped silently.
 */
export function firewallRules(input: RuleInput, warn: (msg: string) => void): string[] {
  const valid = (list: readonly string[]): string[] =>
    list.filter((s) => {
      if (s === '') return false
      if (isSource(s)) return true
      warn(`IP/Network address ${escapeControls(s)} is not valid. ignored..`)
      return false
    })
  const rules: string[][] = []
  const rule = (chain: string, priority: string, ...rest: string[]) => rules.push([...BASE, chain, priority, ...rest])
  const accept = (sources: readonly string[], d: string) => {
    for (const s of sources) {
      rule('INPUT', '0', '-s', s, '-d', d, '-j', 'ACCEPT')
      rule('FORWARD', '0', '-s', s, '-d', d, '-j', 'ACCEPT')
    }
  }
  const tree = input.tree.filter((a) => isIPv4(a))
  const destinations = input.destinations.filter((a) => isIPv4(a))
  if (input.filter.restricted) {
    const sources = [...tree, ...valid([...input.filter.authorized, ...input.authorizedSources])]
    for (const d of destinations) {
      accept(sources, d)
      rule('INPUT', '1000', '-d', d, '-j', 'REJECT')
      rule('FORWARD', '1000', '-d', d, '-j', 'REJECT')
      rule('INPUT', '900', '-d', d, ...STATE, '-j', 'REJECT')
      rule('FORWARD', '900', '-d', d, ...STATE, '-j', 'REJECT')
    }
  } else {
    const rejected = valid(input.filter.rejected)
    const sources = [...tree, ...valid([...input.authorizedSources, ...input.filter.authorized])]
    for (const d of destinations) {
      for (const s of rejected) {
        rule('INPUT', '800', '-s', s, '-d', d, ...STATE, '-j', 'REJECT')
        rule('FORWARD', '800', '-s', s, '-d', d, ...STATE, '-j', 'REJECT')
        rule('INPUT', '900', '-s', s, '-d', d, '-j', 'REJECT')
        rule('FORWARD', '900', '-s', s, '-d', d, '-j', 'REJECT')
      }
      accept(sources, d)
    }
  }
  return [...new Set(rules.map((r) => r.join(' ')))]
}

/** The shapes after `<chain>` that firewallRules writes: S a source, D a destination. */
const SHAPES: readonly (readonly string[])[] = [
  ['0', '-s', 'S', '-d', 'D', '-j', 'ACCEPT'],
  ['1000', '-d', 'D', '-j', 'REJECT'],
  ['900', '-d', 'D', ...STATE, '-j', 'REJECT'],
  ['800', '-s', 'S', '-d', 'D', ...STATE, '-j', 'REJECT'],
  ['900', '-s', 'S', '-d', 'D', '-j', 'REJECT'],
]

/**
 * True when `text` is exactly one of the rules firewallRules writes (single spaces, chain
 * INPUT or FORWARD, a known priority and shape, valid addresses). Only such a rule read back
 * from the rules file is ever turned into a command.
 */
export function isOurRule(text: unknown): text is string {
  if (typeof text !== 'string' || text.length > 200) return false
  const t = text.split(' ')
  if (!BASE.every((b, i) => t[i] === b)) return false
  if (t[5] !== 'INPUT' && t[5] !== 'FORWARD') return false
  const rest = t.slice(6)
  return SHAPES.some((shape) => shape.length === rest.length && shape.every((w, i) => (w === 'S' ? isSource(rest[i]) : w === 'D' ? isIPv4(rest[i]) : rest[i] === w)))
}

// --- applying ---

/**
 * §2.3 add/refresh: the rules of the partition's `route_*` addresses are made present, those
 * recorded before and no longer wanted are removed, firewalld is reloaded when anything
 * changed, and the rules file records what is present. All addresses are handled in one pass
 * (the original's passes undo each other). No `route_` address and no recorded rule: nothing
 * happens (no file). True when a rule was added or removed.
 */
export async function applyFirewall(
  opts: FirewallCommandOptions,
  partition: FirewallPartition,
  filter: unknown,
  tree: readonly unknown[],
  runner: Runner,
  log: Logger,
): Promise<boolean> {
  const rules = wantedRules(opts, { addresses: partition.addresses, filter, tree }, (msg) => log.warning(msg))
  const file = join(partition.path, FIREWALL_RULES_FILE)
  if (rules.length === 0 && lstatSync(file, { throwIfNoEntry: false }) === undefined) return false
  log.info('Configuring firewall...')
  return syncRules(opts, file, rules, runner, log)
}

/** The inputs applyFirewall had for a partition, as the partition has them now. */
export interface FirewallInputs {
  /** ip_list then full_ip_list: [interface, address] */
  addresses: FirewallPartition['addresses']
  /** the partition's `_filter_dict` */
  filter: unknown
  /** `/getHostingSubscriptionIpList` of the partition ([] when unknown) */
  tree: readonly unknown[]
}

/**
 * §2.3 destroyed: every recorded rule is removed (reload if any was present) and the file says
 * `[]`. The file lies in the user's directory and the user may have deleted it: with `current`
 * the rules applyFirewall would write for those inputs are removed too (each queried first),
 * so no ACCEPT rule is left for the next owner of the address.
 */
export async function removeFirewall(
  opts: FirewallCommandOptions,
  partition: Pick<FirewallPartition, 'path'>,
  runner: Runner,
  log: Logger,
  current?: FirewallInputs,
): Promise<boolean> {
  const file = join(partition.path, FIREWALL_RULES_FILE)
  const computed = current ? wantedRules(opts, current, (msg) => log.debug(msg)) : []
  if (computed.length === 0 && lstatSync(file, { throwIfNoEntry: false }) === undefined) return false
  log.info('Removing firewall configuration...')
  // a partition directory that is gone has no file to record in: the rules still go
  const recordable = lstatSync(partition.path, { throwIfNoEntry: false })?.isDirectory() === true
  return syncRules(opts, file, [], runner, log, { alsoRemove: computed, record: recordable })
}

/** §2.4: the rule strings for a partition's inputs. */
function wantedRules(opts: FirewallCommandOptions, inputs: FirewallInputs, warn: (msg: string) => void): string[] {
  const destinations = routeAddresses(inputs.addresses)
  return firewallRules(
    { destinations, tree: treeAddresses(inputs.tree, destinations), filter: firewallFilter(inputs.filter), authorizedSources: opts.authorizedSources },
    warn,
  )
}

/** The recorded rules we may act on, and the file's text when it is ours. */
export function readRecordedRules(file: string, log: Logger): { rules: string[]; text: string | undefined } {
  const none = { rules: [], text: undefined }
  const refuse = (why: string) => {
    log.warning(`Ignoring the firewall rules file ${file}: ${why}; rules recorded there are not removed`)
    return none
  }
  const me = process.geteuid?.() ?? 0
  const read = readUserFile(file, MAX_RULES_FILE, (st) => (st.uid !== me || st.nlink !== 1 ? 'not written by this node (owner or link count changed)' : undefined))
  if (read.kind === 'absent') return none
  if (read.kind === 'refused') return refuse(read.why)
  const text = read.bytes.toString('utf8')
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return refuse('not JSON')
  }
  if (!Array.isArray(value)) return refuse('not a JSON list')
  const rules: string[] = []
  let ignored = 0
  for (const entry of value) {
    if (isOurRule(entry)) {
      if (!rules.includes(entry)) rules.push(entry)
    } else if (++ignored <= 10) log.warning(`Ignoring the recorded firewall rule '${shown(entry)}' of ${file}: not a rule this node writes`)
  }
  if (ignored > 10) log.warning(`Ignored ${ignored} recorded firewall rules of ${file} in all`)
  return { rules, text }
}

/**
 * §2.5 for one partition: stale rules removed, wanted rules added, reload, file written.
 *
 * Rules are added to firewalld's permanent configuration and only take effect at the reload,
 * and a query only sees the permanent configuration: after a failure half-way the next run
 * would find everything "present" and never reload. So before the first change the file
 * records every rule that may be present (old and new) followed by a newline, and only the
 * final write after a good reload has no newline: a file ending in a newline means "the last
 * run did not finish", and the next run reloads even when no rule changes. (Still a JSON list
 * of rule strings: the original reads it as well.)
 */
async function syncRules(
  opts: FirewallCommandOptions,
  file: string,
  wanted: readonly string[],
  runner: Runner,
  log: Logger,
  extra: { alsoRemove: readonly string[]; record: boolean } = { alsoRemove: [], record: true },
): Promise<boolean> {
  const prefix = commandPrefix(opts)
  const recorded = extra.record ? readRecordedRules(file, log) : { rules: [], text: undefined }
  const unfinished = recorded.text?.endsWith('\n') === true
  const known = [...new Set([...recorded.rules, ...extra.alsoRemove])]
  const stale = known.filter((r) => !wanted.includes(r))
  const all = [...known, ...wanted.filter((r) => !known.includes(r))]
  let marked = false
  const beforeChange = () => {
    if (!marked && extra.record) replaceFile(file, `${JSON.stringify(all)}\n`, 0o644)
    marked = true
  }
  let changed = false
  for (const rule of stale) if (await removeRule(prefix, rule, runner, log, beforeChange)) changed = true
  for (const rule of wanted) if (await addRule(prefix, rule, runner, log, beforeChange)) changed = true
  if (changed || unfinished) {
    log.info('Reloading firewall configuration...')
    const r = await runner.run(['/bin/sh', '-c', opts.reloadConfigCmd], { timeoutMs: COMMAND_TIMEOUT_MS })
    if (r.code !== 0) {
      beforeChange()
      throw new SlapError(`Failed to load firewalld rules with command ${opts.reloadConfigCmd}: ${outcome(r)}`, {
        code: 'E_FIREWALL',
        hint: 'check [firewall] reload_config_cmd and that firewalld runs',
      })
    }
  }
  if (extra.record) writeRulesFile(file, wanted, recorded.text)
  return changed || unfinished
}

/** `[firewall] firewall_cmd` as a program and its arguments (also the whitelistfirewall manager's). */
export function commandPrefix(opts: Pick<FirewallCommandOptions, 'firewallCmd'>): string[] {
  const prefix = opts.firewallCmd.trim().split(/\s+/).filter(Boolean)
  if (prefix.length === 0) throw new ConfigError('[firewall] firewall_cmd is empty', 'set it to the path of firewall-cmd')
  return prefix
}

/** One rule string as arguments, with `--add-rule` turned into `verb`. */
function ruleArgs(rule: string, verb: '--add-rule' | '--query-rule' | '--remove-rule'): string[] {
  return rule.split(' ').map((w) => (w === '--add-rule' ? verb : w))
}

/** Queries the rule and adds it when the answer is `no` (beforeChange first). True when added. */
async function addRule(prefix: string[], rule: string, runner: Runner, log: Logger, beforeChange: () => void): Promise<boolean> {
  const query = [...prefix, ...ruleArgs(rule, '--query-rule')]
  const q = await runner.run(query, { timeoutMs: COMMAND_TIMEOUT_MS })
  const answer = output(q)
  if (answer === 'no') {
    const add = [...prefix, ...ruleArgs(rule, '--add-rule')]
    log.debug(add.join(' '))
    beforeChange()
    expectSuccess(add, await runner.run(add, { timeoutMs: COMMAND_TIMEOUT_MS }))
    return true
  }
  if (q.code !== 0) throw failedQuery(query, q)
  return false
}

/** Queries the rule and removes it when the answer is `yes` (beforeChange first). True when removed. */
async function removeRule(prefix: string[], rule: string, runner: Runner, log: Logger, beforeChange: () => void): Promise<boolean> {
  const query = [...prefix, ...ruleArgs(rule, '--query-rule')]
  const q = await runner.run(query, { timeoutMs: COMMAND_TIMEOUT_MS })
  const answer = output(q)
  if (answer === 'yes') {
    const remove = [...prefix, ...ruleArgs(rule, '--remove-rule')]
    log.debug(remove.join(' '))
    beforeChange()
    expectSuccess(remove, await runner.run(remove, { timeoutMs: COMMAND_TIMEOUT_MS }))
    return true
  }
  if (answer !== 'no' && q.code !== 0) throw failedQuery(query, q)
  return false
}

function expectSuccess(argv: string[], r: { code: number | null; stdout: string; stderr: string }): void {
  if (r.code === 0 && output(r) === 'success') return
  const what = argv.includes('--remove-rule') ? 'remove' : 'add'
  throw new SlapError(`Failed to ${what} firewalld rule ${argv.join(' ')}: ${outcome(r)}`, { code: 'E_FIREWALL', hint: 'check that firewalld runs (firewall-cmd --state)' })
}

function failedQuery(argv: string[], r: { code: number | null; stdout: string; stderr: string }): SlapError {
  return new SlapError(`Failed to run firewalld rule ${argv.join(' ')}: ${outcome(r)}`, { code: 'E_FIREWALL', hint: 'check that firewalld runs (firewall-cmd --state) and [firewall] firewall_cmd' })
}

/** stdout then stderr, stripped (the original merges them). */
function output(r: { stdout: string; stderr: string }): string {
  return (r.stdout + r.stderr).trim()
}

/** A command's output and exit status for an error message. */
function outcome(r: { code: number | null; stdout: string; stderr: string }): string {
  const text = output(r)
  return `${text === '' ? '(no output)' : escapeControls(text.slice(0, 2000))} (exit ${r.code ?? 'signal'})`
}

function writeRulesFile(file: string, rules: readonly string[], current: string | undefined): void {
  const text = JSON.stringify(rules)
  if (text !== current) replaceFile(file, text, 0o644)
}

// --- supervisord programs (§2.2) ---

/** The text of `firewall.conf` or `dbus.conf`: one root program, started and restarted by supervisord. */
export function firewallProgramText(name: 'firewall' | 'dbus', command: string, logFile: string): string {
  for (const [key, value] of [
    [name === 'firewall' ? 'firewall_executable' : 'dbus_executable', command],
    [name === 'firewall' ? 'log_file' : 'dbus_log_file', logFile],
  ] as const) {
    if (hasControl(value) || /\s[;#]/.test(value)) {
      throw new ConfigError(`[firewall] ${key} ${quote(value)} cannot be written into a supervisord file`, `remove the control characters and ' ;' or ' #' from ${key}`)
    }
  }
  const v = (s: string) => s.replace(/%/g, '%%')
  return [
    `[program:${name}]`,
    'directory=/opt/slapos',
    `command=${v(command)}`,
    `process_name=${name}`,
    `priority=${name === 'firewall' ? 5 : 1}`,
    'autostart=true',
    'autorestart=true',
    'startsecs=0',
    'startretries=0',
    'exitcodes=0',
    'stopsignal=TERM',
    'stopwaitsecs=60',
    'user=0',
    'group=0',
    'serverurl=AUTO',
    'redirect_stderr=true',
    `stdout_logfile=${v(logFile)}`,
    'stdout_logfile_maxbytes=100KB',
    'stdout_logfile_backups=1',
    `stderr_logfile=${v(logFile)}`,
    'stderr_logfile_maxbytes=100KB',
    'stderr_logfile_backups=1',
    '',
  ].join('\n')
}

/**
 * §2.2: writes `etc/supervisord.conf.d/firewall.conf` and `dbus.conf` (0600, only when they
 * change), or deletes each when there is no `[firewall]`, its executable is empty or `testing`
 * is set. True when a file was written or deleted (supervisord sees it at its next reloadConfig).
 */
export function writeFirewallPrograms(instanceRoot: string, opts: FirewallProgramOptions | undefined): boolean {
  const confDir = supervisorPaths(instanceRoot).confDir
  let changed = false
  const programs = [
    ['firewall', opts?.firewallExecutable ?? '', opts?.logFile ?? ''],
    ['dbus', opts?.dbusExecutable ?? '', opts?.dbusLogFile ?? ''],
  ] as const
  for (const [name, command, logFile] of programs) {
    const file = join(confDir, `${name}.conf`)
    if (!opts || opts.testing || command === '') {
      if (lstatSync(file, { throwIfNoEntry: false })) {
        unlinkSync(file)
        changed = true
      }
      continue
    }
    const text = firewallProgramText(name, command, logFile)
    mkdirSync(confDir, { recursive: true, mode: 0o700 })
    if (sameFile(file, text, 0o600)) continue
    replaceFile(file, text, 0o600)
    changed = true
  }
  return changed
}

function sameFile(path: string, text: string, mode: number): boolean {
  try {
    const st = statSync(path)
    return st.isFile() && (st.mode & 0o777) === mode && readFileSync(path, 'utf8') === text
  } catch {
    return false
  }
}
