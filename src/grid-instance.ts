// `slapos node instance` (old slapgrid-cp), what cron runs every minute: bring every
// partition of this node to the state the master asks for (grid.md §4). The decisions
// (selection, timestamps, periodicity) are in grid-plan.ts; this file does them: instance
// buildout as the partition owner, services under supervisord, promises, reports.
//
// One partition, requested state `started`:
//
//   certificate ─> buildout.cfg ─> buildout ─> group file + start ─> promises ─> /started
//        │              (any error: .slapgrid-<id>-error.log, promises anyway,     │
//        │               /softwareInstanceError, no .timestamp)                   v
//        └──────────────────────────────────────────────────────────────> .timestamp
//
// `stopped`: buildout, then (always) stop services, /stopped. `destroyed` (with a software
// release): stop services, /stopped; the files stay until `node report` destroys them.
// Errors are caught at the partition boundary: one failing partition never stops the others.
// `--dry-run` (planPartitions) reads the same local state into the same decisions
// (viewPartition, grid-plan.ts decidePartition) and prints them instead of doing them.
import {
  closeSync,
  existsSync,
  lchownSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  renameSync,
  rmSync,
  statfsSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { inBeneath, openRegular } from './beneath.ts'
import { buildoutFailure, runBuildout } from './buildout.ts'
import type { NodeConfig } from './config.ts'
import type { Ctx } from './context.ts'
import { ConnectionError, NotFoundError, ServerError, SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { md5hex, ownerOf, refuseRoot, type NodeRun, type Owner } from './grid-common.ts'
import {
  decidePartition,
  deploymentRecord,
  deploymentRecordFile,
  deploymentRecordText,
  masterView,
  parseDeploymentRecord,
  planText,
  promiseStatusFile,
  runExitCode,
  unknownPartitionsMessage,
  type DeploymentRecord,
  type LocalPartitionState,
  type PartitionDecision,
  type PartitionStep,
  type PlanOptions,
  type WantedPartition,
} from './grid-plan.ts'
import type { Logger } from './log.ts'
import { applyFirewall, fetchTreeAddresses, removeFirewall, routeAddresses, writeFirewallPrograms } from './firewall.ts'
import { firewallOptions, partitionAddresses, readUserFile, runHook, type FirewallOptions, type Manager, type ManagerPartition } from './managers.ts'
import { escapeControls, hasControl, idProblem, quote } from './names.ts'
import { firstFailure, promiseFailureMessage, runPromises, writePartitionFile, type PromiseRun } from './promise.ts'
import type { ComputerPartition, SlapClient } from './slap-client.ts'
import { isTTY } from './stdio.ts'
import {
  createInstanceRootStructure,
  startPartitionServices,
  stopPartitionServices,
  Supervisor,
  supervisorPaths,
  watchdogCommand,
  writeSupervisordConf,
  type PartitionProcesses,
} from './supervisor.ts'

export interface InstanceOptions {
  /** --force / --all: process up-to-date partitions too */
  force: boolean
  /** --force-stop: run buildout of started partitions but stop their services, report nothing */
  forceStop: boolean
  /** --only-cp ids */
  only?: ReadonlySet<string> | undefined
  /** --buildout-debug: buildout -D, output not captured */
  buildoutDebug: boolean
  /** --jobs: partitions processed at the same time (default 1) */
  jobs: number
  /** --json: the summary as JSON on stdout */
  json: boolean
  /** -q: no summary table on stderr */
  quiet?: boolean
  /** --converge (grid-converge.ts): partitions processed even when up to date, as with --force */
  reprocess?: ReadonlySet<string> | undefined
  /** --converge: told what an online run saw and did, before it returns its exit status */
  onPass?: ((pass: InstancePass) => void) | undefined
}

/** What one online run saw (the master's list) and did (one summary per partition). */
export interface InstancePass {
  code: number
  partitions: ComputerPartition[]
  items: PartitionSummary[]
  /**
   * Partition id -> the lines of the `.slapos-request-transaction-<id>` its buildout wrote and
   * this run sent to the master (the titles it requested), for each partition whose
   * transaction was read (after a successful processing).
   */
  requested: ReadonlyMap<string, readonly string[]>
}

/** How one partition ended in this run (the summary table and --json). */
/** `stopped`: requested stopped, or destroyed (stopped here; `node report` destroys it). */
export type PartitionResult = 'deployed' | 'stopped' | 'up-to-date' | 'failed' | 'promise-failed' | 'free' | 'missing-directory' | 'not-selected'

export interface PartitionSummary {
  id: string
  /** requested state */
  state: string
  softwareType: string | undefined
  result: PartitionResult
  /** error text (failed, promise-failed, missing-directory) */
  message?: string | undefined
  durationMs: number
}

/** Raised when a promise of a started partition fails: counts as exit 2, not 1. */
export class PromiseFailedError extends SlapError {
  constructor(message: string) {
    super(message, { code: 'E_PROMISE', exitCode: EXIT.PROMISE_FAIL })
  }
}

/**
 * grid.md §4.1 (`processComputerPartitionList`): structure and supervisord, one
 * getFullComputerInformation, then every partition (up to `jobs` at a time). Returns the
 * exit status: 1 if any partition failed, else 2 if any promise failed, else 0; 3 when the
 * master could not be reached and the node fell back to offline mode (§4.10).
 */
export async function processPartitions(run: NodeRun, opts: InstanceOptions, ctx: Ctx): Promise<number> {
  const { cfg, client, log } = run
  const started = Date.now()
  const firewall = firewallOptions(cfg.file)
  const sup = new Supervisor(supervisorPaths(cfg.instanceRoot), log, ctx.runner)
  // The master's list is asked for while supervisord is checked (or started): the two do not
  // depend on each other, and each costs tens of milliseconds on a busy node. Like the
  // original, a supervisord that cannot be launched ends the run before anything else.
  const { listing } = await listPartitions(run, opts.only, async () => {
    createInstanceRootStructure(cfg.instanceRoot)
    writeSupervisordConf(cfg.instanceRoot, watchdogCommand(cfg))
    writeFirewallPrograms(cfg.instanceRoot, firewall)
    await sup.launch({ forbid: cfg.forbidSupervisordAutomaticLaunch })
    log.debug(`supervisord checked (${Date.now() - started} ms)`)
    log.info('Processing computer partitions...')
  })

  const offlineRun = async (why: ConnectionError): Promise<number> => {
    const code = await offline(cfg, sup, log, why)
    if (opts.json) ctx.io.out(JSON.stringify({ exitCode: code, durationMs: Date.now() - started, offline: true, items: [] }, null, 2) + '\n')
    return code
  }
  if ('offline' in listing) return offlineRun(listing.offline)
  const partitions = listing.partitions
  log.debug(`the master lists ${partitions.length} partitions (${Date.now() - started} ms)`)

  const progress = new Progress(!opts.buildoutDebug && isTTY(2))
  const env: Env = { cfg, managers: run.managers, firewall, client, sup, log, ctx, opts, progress, settings: run.settings, periodicity: new Map(), softwarePaths: new Map(), requested: new Map() }
  const summaries: PartitionSummary[] = []
  let lostMaster: ConnectionError | undefined
  let next = 0
  const worker = async () => {
    while (lostMaster === undefined) {
      const p = partitions[next++]
      if (!p) return
      try {
        summaries.push(await handlePartition(env, p))
      } catch (e) {
        // a lost master ends the online run; anything else (the partition directory vanished
        // under us, ...) fails this partition only
        if (e instanceof ConnectionError) lostMaster ??= e
        else {
          const message = e instanceof Error ? e.message : String(e)
          log.error(`[${p._partition_id}] ${message}`)
          summaries.push({ id: p._partition_id ?? '', state: p._requested_state ?? 'destroyed', softwareType: undefined, result: 'failed', message, durationMs: 0 })
        }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.jobs, partitions.length || 1)) }, worker))
  progress.clear()
  if (lostMaster) return offlineRun(lostMaster)

  const order = new Map(partitions.map((p, i) => [p._partition_id ?? '', i]))
  summaries.sort((a, b) => (order.get(a.id) ?? 0) - (order.get(b.id) ?? 0))
  const failed = summaries.filter((s) => s.result === 'failed')
  const promiseFailed = summaries.filter((s) => s.result === 'promise-failed')
  // §4.1.6: the original's summary, first line of each error (the whole text is in the
  // partition's .slapgrid-<id>-error.log and was sent to the master)
  if (failed.length) {
    log.error('Error while processing the following partitions:')
    for (const s of failed) log.error(`  ${s.id}[${s.softwareType ?? '(not ready)'}]: ${firstLine(s.message)}`)
  }
  if (promiseFailed.length) {
    log.error('Error with promises for the following partitions:')
    for (const s of promiseFailed) log.error(`  ${s.id}[${s.softwareType ?? '(not ready)'}]: ${firstLine(s.message)}`)
  }
  const code = runExitCode(failed.length, promiseFailed.length)
  // the table only when something was done: an idle cron run stays quiet
  const shown = summaries.filter((s) => s.result !== 'not-selected' && s.result !== 'free')
  if (opts.json) ctx.io.out(JSON.stringify({ exitCode: code, durationMs: Date.now() - started, items: summaries }, null, 2) + '\n')
  else if (!opts.quiet && shown.some((s) => s.result !== 'up-to-date')) ctx.io.err(summaryTable(shown))
  const lookedAt = summaries.filter((s) => s.result !== 'not-selected').length
  log.info(`Finished computer partitions (${lookedAt} looked at, ${failed.length} failed, ${promiseFailed.length} with failing promises).`)
  opts.onPass?.({ code, partitions, items: summaries, requested: env.requested })
  return code
}

/** What `node instance --dry-run --json` prints. */
export interface InstancePlan {
  dryRun: true
  /** supervisord now, and what a real run would do about it */
  supervisord: SupervisordPlan
  /** the master could not be reached: a real run would go offline (exit 3) */
  offline?: string
  items: PartitionStep[]
}

export type SupervisordPlan = 'running' | 'not running: a real run starts it' | 'not running: forbid_supervisord_automatic_launch keeps it stopped'

/**
 * `node instance --dry-run`: the reading and the decisions of processPartitions
 * (viewPartition, grid-plan.ts decidePartition), printed instead of done. Reads only: no file
 * written, supervisord asked its state and never started, the master asked the partition list
 * only; no manager hook, no promise. Exit status 0; 3 when the master cannot be reached (a
 * real run would go offline); the start-up errors of a real run (unknown --only-cp partition,
 * missing software root) alike.
 */
export async function planPartitions(run: Pick<NodeRun, 'cfg' | 'client' | 'log'>, opts: InstanceOptions, ctx: Ctx): Promise<number> {
  const { cfg, log } = run
  const { listing, meanwhile: supervisord } = await listPartitions(run, opts.only, () => supervisordPlan(cfg, log, ctx))
  const print = (plan: InstancePlan) => {
    if (opts.json) ctx.io.out(JSON.stringify(plan, null, 2) + '\n')
    else if (plan.offline) ctx.io.out(`${plan.offline}\nsupervisord: ${plan.supervisord}\n`)
    else ctx.io.out(`supervisord: ${plan.supervisord}\n${planText(plan.items, ['partition', 'partitions'])}`)
  }
  if ('offline' in listing) {
    print({ dryRun: true, supervisord, offline: `the master cannot be reached (${escapeControls(listing.offline.message)}): a real run would start every supervised process (offline mode, exit 3)`, items: [] })
    return EXIT.OFFLINE_SUCCESS
  }
  const reader: Reader = { cfg, opts, ctx, periodicity: new Map(), softwarePaths: new Map() }
  const software = new Map<string, string | undefined>()
  const items = listing.partitions.map((p): PartitionStep => {
    const refused = masterDataProblem(p)
    // masterDataProblem's text is already escaped (quote); the id and state are shown escaped
    if (refused) return { id: escapeControls(p._partition_id ?? ''), state: escapeControls(p._requested_state ?? 'destroyed'), action: 'error', reason: 'refused', detail: refused }
    const view = viewPartition(reader, p)
    const step = view.step
    const problem = RUNS_BUILDOUT.has(step.action) && view.softwarePath ? softwareProblem(software, view.softwarePath) : undefined
    return problem ? { ...step, detail: `${step.detail}; ${problem}`, problem } : step
  })
  print({ dryRun: true, supervisord, items })
  return EXIT.OK
}

/** The actions whose real run needs the partition's software release (the instance buildout). */
const RUNS_BUILDOUT: ReadonlySet<string> = new Set(['deploy', 'start', 'stop'])

/**
 * Dry run: why the instance buildout of a partition would (or may) fail for want of its
 * software release; one look per software release (`.completed`, then the directory).
 */
function softwareProblem(seen: Map<string, string | undefined>, softwarePath: string): string | undefined {
  if (seen.has(softwarePath)) return seen.get(softwarePath)
  let problem: string | undefined
  if (!existsSync(`${softwarePath}/.completed`)) {
    problem = isDirectory(softwarePath)
      ? 'may fail: the software release is not completely installed (no .completed; see node software)'
      : 'will fail: software release not present (node software installs it)'
  }
  seen.set(softwarePath, problem)
  return problem
}

/** What the master answered: this computer's partitions, or why a run goes offline (no answer, 503). */
type Listing = { partitions: ComputerPartition[] } | { offline: ConnectionError }

/**
 * The start of a run and of a dry run alike: the software root checked, the master asked for
 * this computer's partitions while `meanwhile` runs (supervisord checked or started), a master
 * that cannot be reached told apart (offline mode, §4.10: no answer or 503, down for
 * maintenance or overloaded, is as lost as one that does not answer), --only-cp ids the
 * master does not list refused. Other errors of the master and of `meanwhile` are thrown.
 */
async function listPartitions<T>(run: Pick<NodeRun, 'cfg' | 'client'>, only: ReadonlySet<string> | undefined, meanwhile: () => Promise<T>): Promise<{ listing: Listing; meanwhile: T }> {
  const { cfg, client } = run
  if (!isDirectory(cfg.softwareRoot)) throw new SlapError(`${cfg.softwareRoot} does not exist.`, { code: 'E_NO_SOFTWARE_ROOT', hint: 'check software_root in slapos.cfg' })
  const asked = client.getFullComputerInformation(cfg.computerId).then(
    (computer) => ({ partitions: computer._computer_partition_list }),
    (error: unknown) => ({ error }),
  )
  const done = await meanwhile()
  const answer = await asked
  if ('error' in answer) {
    const e = answer.error
    if (e instanceof ConnectionError) return { listing: { offline: e }, meanwhile: done }
    if (e instanceof ServerError && e.status === 503) return { listing: { offline: new ConnectionError(e.message, e) }, meanwhile: done }
    throw e
  }
  const unknown = unknownPartitionsMessage(
    answer.partitions.map((p) => p._partition_id ?? ''),
    only,
  )
  if (unknown) throw new SlapError(unknown, { code: 'E_UNKNOWN_PARTITION', hint: 'give ids the master lists for this computer (slappart0, ...)' })
  return { listing: { partitions: answer.partitions }, meanwhile: done }
}

/** The summary table written on stderr at the end of a run. */
export function summaryTable(rows: PartitionSummary[]): string {
  if (rows.length === 0) return ''
  const head = ['partition', 'state', 'result', 'duration']
  const cells = rows.map((r) => [r.id, r.state, r.result, `${(r.durationMs / 1000).toFixed(1)} s`])
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)))
  const line = (c: string[]) => c.map((x, i) => x.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(head), ...cells.map(line)].join('\n') + '\n'
}

/** The partition owner (uid/gid of its directory, name and home from /etc/passwd). */
export function partitionOwner(path: string): Owner {
  return ownerOf(path)
}

/** The buildout profile tail slapgrid appends to the instance profile (grid.md §4.5, HEAD). */
export function buildoutTail(t: {
  computerId: string
  partitionId: string
  masterUrl: string
  softwareReleaseUrl: string
  keyFile: string
  certFile: string
  sharedPartList: string[]
  buildTimePartList: string[]
  requestedState: string
  storageHome: string
  ipv4GlobalNetwork: string
}): string {
  const list = (l: string[]) => l.map((x) => `\n  ${x}`).join('')
  return [
    "# This is beginning of zc.buildout profile's tail added by slapgrid",
    '[buildout]',
    '# put buildout generated binaries in specific directory',
    'bin-directory = ${buildout:directory}/sbin',
    '',
    '# protect software and run parts offline',
    'offline = true',
    '',
    '[slap-connection]',
    `computer-id = ${t.computerId}`,
    `partition-id = ${t.partitionId}`,
    `server-url = ${t.masterUrl}`,
    `software-release-url = ${t.softwareReleaseUrl}`,
    `key-file = ${t.keyFile}`,
    `cert-file = ${t.certFile}`,
    `shared-part-list =${list(t.sharedPartList)}`,
    `build-time-part-list =${list(t.buildTimePartList)}`,
    `requested-state = ${t.requestedState}`,
    '',
    '[slap_connection]',
    '# Kept for backward compatiblity',
    `computer_id = ${t.computerId}`,
    `partition_id = ${t.partitionId}`,
    `server_url = ${t.masterUrl}`,
    `software_release_url = ${t.softwareReleaseUrl}`,
    `key_file = ${t.keyFile}`,
    `cert_file = ${t.certFile}`,
    '',
    '[storage-configuration]',
    `storage-home = ${t.storageHome}`,
    '',
    '[network-information]',
    `global-ipv4-network = ${t.ipv4GlobalNetwork}`,
    "# This is end of zc.buildout profile's tail added by slapgrid",
    '',
  ].join('\n')
}

// --- internal ---

/** What reading the partitions needs (a real run and a dry run). */
interface Reader {
  cfg: NodeConfig
  opts: InstanceOptions
  ctx: Ctx
  /** periodicity files read in this run: every partition of a software release shares one */
  periodicity: Map<string, string | undefined>
  softwarePaths: Map<string, string>
}

interface Env extends Reader {
  managers: Manager[]
  /** [firewall], when the node manages firewalld rules */
  firewall: FirewallOptions | undefined
  client: SlapClient
  sup: Supervisor
  log: Logger
  progress: Progress
  settings: Map<string, string>
  /** what each partition's transaction file said, as sent (InstancePass.requested) */
  requested: Map<string, readonly string[]>
}

/** <software_root>/<md5 of the URL>, computed once per software release and run. */
function softwarePathOf(env: Reader, url: string): string {
  let path = env.softwarePaths.get(url)
  if (path === undefined) env.softwarePaths.set(url, (path = join(env.cfg.softwareRoot, md5hex(url))))
  return path
}

/**
 * The `periodicity` file of a software release, read once per run (the software user's file:
 * at most PERIODICITY_MAX_BYTES, no link followed, the release's directory included). A larger
 * one is no integer either (the original deletes a file that does not parse).
 */
function periodicityOf(env: Reader, file: string): string | undefined {
  if (!env.periodicity.has(file)) {
    const read = inBeneath(env.cfg.softwareRoot, [basename(dirname(file))], undefined, (d) => d.read('periodicity', PERIODICITY_MAX_BYTES)) ?? { kind: 'absent' }
    env.periodicity.set(file, read.kind === 'ok' ? read.bytes.toString('utf8') : read.kind === 'refused' && read.why.startsWith('larger') ? '' : undefined)
  }
  return env.periodicity.get(file)
}

/** `.timestamp` and `periodicity` hold a number: anything longer is not read. */
const TIMESTAMP_MAX_BYTES = 1024
const PERIODICITY_MAX_BYTES = 1024
/** `.slapos-request-transaction-<id>`: one title a line (a tree requests tens, not thousands). */
const TRANSACTION_MAX_BYTES = 64 << 10
const TRANSACTION_MAX_LINES = 4096

/**
 * A partition's `.timestamp` (its user's file): content and modification time; undefined when
 * absent, not a regular file, or longer than TIMESTAMP_MAX_BYTES (then the partition is
 * processed, and a successful processing replaces it).
 */
function readTimestamp(file: string): { content: string; mtimeMs: number } | undefined {
  const read = readUserFile(file, TIMESTAMP_MAX_BYTES)
  return read.kind === 'ok' ? { content: read.bytes.toString('utf8'), mtimeMs: read.mtimeMs } : undefined
}

/** What the node reads (never writes) of one partition whose master data passed masterDataProblem, and the decision. */
interface PartitionView {
  id: string
  path: string
  state: string
  srUrl: string | null
  softwarePath: string | undefined
  softwareType: string | undefined
  timestampFile: string
  periodicityFile: string | undefined
  decision: PartitionDecision
  step: PartitionStep
}

/**
 * Reads the local state of a partition and asks grid-plan.ts: the one path from the master's
 * description to a decision, for the real run and for --dry-run alike. Only reads: what only
 * says why (the deployment record, the error log, a free partition's leftovers) is read when
 * the decision needs it, so an idle run reads one `.timestamp` per partition.
 */
function viewPartition(env: Reader, p: ComputerPartition): PartitionView {
  const { cfg, opts } = env
  const master = masterView(p)
  const { id, softwareReleaseUrl: srUrl, state, softwareType, timestamp } = master
  const path = join(cfg.instanceRoot, id)
  const softwarePath = srUrl ? softwarePathOf(env, srUrl) : undefined
  // (path and softwarePath are normalised: these names need no join)
  const timestampFile = `${path}/.timestamp`
  const periodicityFile = softwarePath ? `${softwarePath}/periodicity` : undefined
  // a .timestamp read there also says that the directory exists
  const localTimestamp = readTimestamp(timestampFile)
  const dirExists = localTimestamp !== undefined || isDirectory(path)
  let record: DeploymentRecord | undefined
  const wanted: WantedPartition = {
    id,
    state,
    softwareReleaseUrl: srUrl,
    timestamp,
    get record() {
      return (record ??= deploymentRecord(master))
    },
  }
  const local: LocalPartitionState = {
    dirExists,
    timestamp: localTimestamp,
    periodicityFile: periodicityFile ? periodicityOf(env, periodicityFile) : undefined,
    get lastDeployment() {
      return readDeploymentRecord(cfg.instanceRoot, id)
    },
    get failedBefore() {
      return lstatSync(`${path}/.slapgrid-${id}-error.log`, { throwIfNoEntry: false }) !== undefined
    },
    // read by a dry run only (the step of a free partition)
    get leftovers() {
      return ['.slapgrid', '.timestamp'].some((f) => lstatSync(`${path}/${f}`, { throwIfNoEntry: false }) !== undefined)
    },
  }
  const planOpts: PlanOptions = { force: opts.force || opts.reprocess?.has(id) === true, forceStop: opts.forceStop, only: opts.only, maximumPeriodicity: cfg.maximumPeriodicity, nowMs: env.ctx.now().getTime() }
  const decided = decidePartition(wanted, local, planOpts)
  return {
    id,
    path,
    state,
    srUrl,
    softwarePath,
    softwareType,
    timestampFile,
    periodicityFile,
    decision: decided.decision,
    // worked out when read: a real run reads it only for the partitions it processes
    get step() {
      return decided.step
    },
  }
}

/** One partition, from the master's description to its summary. Throws only ConnectionError. */
async function handlePartition(env: Env, p: ComputerPartition): Promise<PartitionSummary> {
  const { cfg, client } = env
  const start = Date.now()
  // what the master sends names paths and lines of files here: checked before anything is touched
  const refused = masterDataProblem(p)
  if (refused) return refusePartition(env, p, refused)
  const view = viewPartition(env, p)
  const { id, path, state, srUrl, softwarePath, softwareType, timestampFile, periodicityFile, decision } = view
  const log = env.log.child(id)
  const summary = (result: PartitionResult, message?: string): PartitionSummary => ({ id, state, softwareType, result, message, durationMs: Date.now() - start })

  switch (decision.kind) {
    case 'missing-dir': {
      const message = `Partition directory ${path} does not exist.`
      log.warning(message)
      await report(log, () => client.softwareInstanceError(cfg.computerId, id, message))
      return summary('missing-directory', message)
    }
    case 'free':
      // (its deployment record went when node report destroyed it)
      cleanFreePartition(path, log)
      return summary('free')
    default:
      break
  }
  // §4.3 step 1: what the previous buildout requested is forgotten before anything else
  removeIfExists(`${path}/.slapos-request-transaction-${id}`)
  if (decision.kind === 'not-selected') return summary('not-selected')
  const rest = () => processSelected(env, p, { id, path, state, srUrl, softwarePath, softwareType, timestampFile, periodicityFile, decision, view, log, summary })
  if (env.managers.length === 0) return rest()
  // node-extras §1.2: instance before anything else, instanceTearDown after everything, for
  // up-to-date and failed partitions too; a hook that throws fails this partition only
  let managed: ManagerPartition
  try {
    managed = managerPartition(env, p, id, path, state, log)
    await runHook(env.managers, 'instance', managed)
  } catch (e) {
    return managerFailure(env, id, path, log, e, summary)
  }
  const result = await rest()
  try {
    await runHook(env.managers, 'instanceTearDown', managed)
  } catch (e) {
    return managerFailure(env, id, path, log, e, summary)
  }
  return result
}

interface Selected extends Omit<PartitionView, 'decision' | 'step'> {
  decision: Extract<PartitionDecision, { kind: 'up-to-date' | 'process' }>
  /** its step (read for the log line of a processed partition only) */
  view: Pick<PartitionView, 'step'>
  log: Logger
  summary: (result: PartitionResult, message?: string) => PartitionSummary
}

/** A selected partition: up to date (anomaly check) or processed for its requested state. */
async function processSelected(env: Env, p: ComputerPartition, s: Selected): Promise<PartitionSummary> {
  const { cfg, client, opts } = env
  const { id, path, state, srUrl, softwarePath, softwareType, timestampFile, periodicityFile, decision, log, summary } = s
  if (decision.deletePeriodicityFile && periodicityFile) {
    log.warning(`${periodicityFile} is not an integer: deleted, maximum_periodicity applies`)
    // in the release's directory, which the software user may have made a link
    inBeneath(cfg.softwareRoot, [basename(dirname(periodicityFile))], undefined, (d) => d.remove('periodicity'))
    env.periodicity.set(periodicityFile, undefined)
  }
  if (decision.kind === 'up-to-date') {
    log.debug('up to date: nothing to do')
    // node-extras §4.8: the promises of a started partition are checked in anomaly mode
    if (state === 'started' && !opts.forceStop && srUrl && softwarePath) {
      const owner = partitionOwner(path)
      try {
        await anomalyCheck(env, { id, path, owner, log, softwarePath, accessStatus: p._access_status ?? undefined })
      } catch (e) {
        if (e instanceof ConnectionError) throw e
        // the runner itself failed (exit 1, timeout): the partition fails, as in the original
        const message = e instanceof Error ? e.message : String(e)
        log.error(message)
        await report(log, () => client.softwareInstanceError(cfg.computerId, id, message))
        return summary('failed', message)
      }
    }
    return summary('up-to-date')
  }
  if (decision.deleteTimestamp) removeIfExists(timestampFile)

  // §4.4: from here on every line of this partition also goes to its instance.log
  const owner = partitionOwner(path)
  const plog = partitionLogger(log, path, owner, env.progress)
  const step = s.view.step
  plog.info(`Processing partition ${id} (requested state ${state}${softwareType ? `, software type ${softwareType}` : ''}): ${step.action}, ${step.reason}: ${step.detail}`)
  try {
    await fetchCertificate(env, id, owner)
    removeIfExists(join(path, `.slapgrid-${id}-error.log`))
    await dispatch(env, { id, path, state, srUrl: srUrl ?? '', softwarePath: softwarePath ?? '', owner, log: plog, params: p })
    if (decision.writeTimestamp !== undefined && !(opts.forceStop && state === 'started')) {
      writePartitionFile(timestampFile, decision.writeTimestamp, 0o644)
      recordDeployment(env, id, p)
    }
    const started = state === 'started' && !opts.forceStop
    plog.info(`Partition ${id} ${started ? 'deployed and started' : state === 'destroyed' ? 'stopped (node report destroys it)' : 'processed'}`)
    return summary(started ? 'deployed' : 'stopped')
  } catch (e) {
    if (e instanceof ConnectionError) throw e
    const message = e instanceof Error ? e.message : String(e)
    if (e instanceof PromiseFailedError) {
      // runPromises already logged it
      await report(plog, () => client.softwareInstanceError(cfg.computerId, id, message))
      return summary('promise-failed', message)
    }
    plog.error(message)
    if (!(e instanceof SlapError) && e instanceof Error && e.stack) plog.debug(e.stack)
    writePartitionFile(join(path, `.slapgrid-${id}-error.log`), message + '\n', 0o644)
    if (state === 'started' && !opts.forceStop) {
      // refresh the promise results, as the original does; their failure does not count here
      try {
        await runPromises(promiseRun(env, { id, path, owner, log: plog, softwarePath: softwarePath ?? '' }))
      } catch {
        /* the partition already failed */
      }
    }
    await report(plog, () => client.softwareInstanceError(cfg.computerId, id, message))
    return summary('failed', message)
  }
}

/** What the managers' hooks see of a partition (managers.ts). */
function managerPartition(env: Env, p: ComputerPartition, id: string, path: string, state: string, log: Logger): ManagerPartition {
  const owner = partitionOwner(path)
  return {
    id,
    path,
    owner,
    state,
    addresses: partitionAddresses(p._parameter_dict ?? {}),
    instanceRoot: env.cfg.instanceRoot,
    sup: env.sup,
    processes: { id, path, uid: owner.uid, gid: owner.gid, user: owner.name, home: owner.home },
    log,
    now: env.ctx.now,
  }
}

/** A manager hook failed: the partition fails as a processing error does (error log, master told). */
async function managerFailure(env: Env, id: string, path: string, log: Logger, e: unknown, summary: Selected['summary']): Promise<PartitionSummary> {
  if (e instanceof ConnectionError) throw e
  const message = e instanceof Error ? e.message : String(e)
  log.error(message)
  if (!(e instanceof SlapError) && e instanceof Error && e.stack) log.debug(e.stack)
  if (isDirectory(path)) writePartitionFile(join(path, `.slapgrid-${id}-error.log`), message + '\n', 0o644)
  await report(log, () => env.client.softwareInstanceError(env.cfg.computerId, id, message))
  return summary('failed', message)
}

/**
 * Why the master's description of a partition cannot be used on this node: an identifier
 * that is not one safe path component, a state the node does not know, a software release
 * URL with control characters (it becomes the `extends =` line of buildout.cfg).
 */
export function masterDataProblem(p: ComputerPartition): string | undefined {
  const id = p._partition_id ?? ''
  const bad = idProblem('partition id', id)
  if (bad) return bad
  const state = p._requested_state ?? 'destroyed'
  if (!['started', 'stopped', 'destroyed'].includes(state)) return `Computer Partition '${id}' has unsupported state: ${quote(state)}`
  const doc = p._software_release_document
  const url = typeof doc === 'string' ? doc : doc?._software_release
  if (typeof url === 'string' && hasControl(url)) return `the software release URL of ${id} has control characters: ${quote(url)}`
  const type = p._parameter_dict?.slap_software_type
  if (typeof type === 'string' && hasControl(type)) return `the software type of ${id} has control characters: ${quote(type)}`
  return undefined
}

/** A partition refused before anything was touched: logged, told to the master when its id can be sent, failed. */
async function refusePartition(env: Env, p: ComputerPartition, message: string): Promise<PartitionSummary> {
  const id = p._partition_id ?? ''
  env.log.error(`refused: ${message}`)
  // an id that is no safe identifier is shown escaped; the master gets the error all the same
  await report(env.log, () => env.client.softwareInstanceError(env.cfg.computerId, id, message))
  return { id: escapeControls(id), state: escapeControls(p._requested_state ?? 'destroyed'), softwareType: undefined, result: 'failed', message, durationMs: 0 }
}

interface Work {
  id: string
  path: string
  state: string
  srUrl: string
  softwarePath: string
  owner: Owner
  log: Logger
  params: ComputerPartition
}

/** What the promise runner needs to know about a partition (grid.md §7.2). */
function promiseRun(env: Env, w: Pick<Work, 'id' | 'path' | 'owner' | 'log' | 'softwarePath'>): PromiseRun {
  const repo = env.cfg.certificateRepositoryPath
  return {
    path: w.path,
    id: w.id,
    owner: w.owner,
    timeoutSec: env.cfg.promiseTimeout,
    runner: env.ctx.runner,
    log: w.log,
    rootCheck: refuseRoot(env.cfg),
    softwarePath: w.softwarePath || undefined,
    masterUrl: env.cfg.masterUrl,
    computerId: env.cfg.computerId,
    certFile: repo ? join(repo, `${w.id}.crt`) : undefined,
    keyFile: repo ? join(repo, `${w.id}.key`) : undefined,
  }
}

/**
 * node-extras §4.8: the promises of an up-to-date started partition in anomaly mode, then
 * the master told what changed. With the master's access status: a failure is sent unless
 * the status already says `#error`, a success only when it does (after refreshing the
 * certificate). Without one (a local proxy), what was last told is remembered beside the
 * instance root, and the master hears only a change. The run's exit status stays as it is.
 */
async function anomalyCheck(env: Env, w: { id: string; path: string; owner: Owner; log: Logger; softwarePath: string; accessStatus: string | undefined }): Promise<void> {
  const results = await runPromises({ ...promiseRun(env, w), anomaly: true })
  const failure = firstFailure(results)
  const message = failure ? promiseFailureMessage(failure) : undefined
  if (message) w.log.error(message)
  const status = message ? `error: ${message}` : 'ok'
  let tell: boolean
  if (w.accessStatus !== undefined) tell = message ? !w.accessStatus.startsWith('#error') : w.accessStatus.startsWith('#error')
  else tell = status !== toldStatus(env, w.id)
  if (!tell) return
  await fetchCertificate(env, w.id, w.owner)
  if (message) await report(w.log, () => env.client.softwareInstanceError(env.cfg.computerId, w.id, message))
  else await env.client.startedComputerPartition(env.cfg.computerId, w.id)
  recordToldStatus(env, w.id, status)
}

/**
 * The deployment record of a partition (grid-plan.ts DeploymentRecord and
 * deploymentRecordFile): beside `<id>.promise-status`, outside the partition: a directory only
 * root writes, so the partition's user can neither forge it nor make the node write through a
 * link of theirs. It only names why a partition is processed.
 */
function readDeploymentRecord(instanceRoot: string, id: string): DeploymentRecord | undefined {
  const read = readUserFile(deploymentRecordFile(instanceRoot, id), 4096)
  return read.kind === 'ok' ? parseDeploymentRecord(read.bytes.toString('utf8')) : undefined
}

/** After a fully successful processing, with `.timestamp`: what the master asked this time. */
function recordDeployment(env: Env, id: string, p: ComputerPartition): void {
  const record = deploymentRecord(masterView(p))
  try {
    writePartitionFile(deploymentRecordFile(env.cfg.instanceRoot, id), deploymentRecordText(record), 0o600)
  } catch (e) {
    // only a reason of a later plan is lost
    env.log.debug(`cannot record the deployment of ${id}: ${e instanceof Error ? e.message : String(e)}`)
  }
}

/** What the master was last told of a partition's promises (promiseStatusFile), outside the partition. */
function toldStatus(env: Env, id: string): string | undefined {
  try {
    return readFileSync(promiseStatusFile(env.cfg.instanceRoot, id), 'utf8')
  } catch {
    return undefined
  }
}

function recordToldStatus(env: Env, id: string, status: string): void {
  const file = promiseStatusFile(env.cfg.instanceRoot, id)
  try {
    if (toldStatus(env, id) === status) return
    writeFileSync(`${file}.tmp`, status, { mode: 0o600 })
    renameSync(`${file}.tmp`, file)
  } catch (e) {
    env.log.debug(`cannot record the promise status of ${id}: ${e instanceof Error ? e.message : String(e)}`)
  }
}

/** §4.4 step 4: what each requested state means. */
async function dispatch(env: Env, w: Work): Promise<void> {
  const { cfg, client, sup, opts } = env
  const processes: PartitionProcesses = { id: w.id, path: w.path, uid: w.owner.uid, gid: w.owner.gid, user: w.owner.name, home: w.owner.home }
  switch (w.state) {
    case 'started': {
      await install(env, w)
      if (opts.forceStop) {
        await stopPartitionServices(sup, cfg.instanceRoot, w.id)
        await firewallAdd(env, w)
        await sendTransaction(env, w)
        return
      }
      // a manager group of a manager no longer listed goes (prerm's only lives during a destruction)
      await startPartitionServices(sup, cfg.instanceRoot, processes, w.log, env.managers.some((m) => m.name === 'portredir') ? ['socat'] : [])
      await firewallAdd(env, w)
      const results = await runPromises(promiseRun(env, w))
      const failure = firstFailure(results)
      if (failure) {
        recordToldStatus(env, w.id, `error: ${promiseFailureMessage(failure)}`)
        throw new PromiseFailedError(promiseFailureMessage(failure))
      }
      await client.startedComputerPartition(cfg.computerId, w.id)
      recordToldStatus(env, w.id, 'ok')
      await sendTransaction(env, w)
      return
    }
    case 'stopped': {
      try {
        await install(env, w)
        await firewallAdd(env, w)
      } finally {
        await stopPartitionServices(sup, cfg.instanceRoot, w.id)
      }
      if (opts.forceStop) {
        await sendTransaction(env, w)
        return
      }
      await ignoreErrors(w.log, () => client.stoppedComputerPartition(cfg.computerId, w.id))
      await sendTransaction(env, w)
      return
    }
    case 'destroyed':
      await stopPartitionServices(sup, cfg.instanceRoot, w.id)
      await firewallRemove(env, w)
      if (!opts.forceStop) await ignoreErrors(w.log, () => client.stoppedComputerPartition(cfg.computerId, w.id))
      return
    default:
      throw new SlapError(`Computer Partition '${w.id}' has unsupported state: ${w.state}`, { code: 'E_UNSUPPORTED_STATE' })
  }
}

/**
 * node-extras §2.3-2.5: the firewalld rules of a started or stopped partition's `route_*`
 * addresses.
 */
async function firewallAdd(env: Env, w: Work): Promise<void> {
  if (!env.firewall) return
  const { addresses, tree } = await firewallInputs(env, w, false)
  await applyFirewall(env.firewall, { id: w.id, path: w.path, addresses }, w.params.raw.state._filter_dict, tree, env.ctx.runner, w.log)
}

/**
 * §2.3 destroyed: every rule recorded in the partition, and every rule its current parameters
 * give (the record lies in the user's directory, who may have deleted it), is removed. A tree
 * the master cannot give then only loses its recorded rules: destruction goes on.
 */
async function firewallRemove(env: Env, w: Work): Promise<void> {
  if (!env.firewall) return
  const { addresses, tree } = await firewallInputs(env, w, true)
  await removeFirewall(env.firewall, w, env.ctx.runner, w.log, { addresses, filter: w.params.raw.state._filter_dict, tree })
}

/**
 * The partition's addresses, and the tree's, asked for only when the partition has a
 * `route_*` address (the original asks for every partition). `lenient`: a master that cannot
 * give them (other than unreachable) is a warning and an empty tree.
 */
async function firewallInputs(env: Env, w: Work, lenient: boolean): Promise<{ addresses: Array<[string, string]>; tree: unknown[] }> {
  const addresses = partitionAddresses(w.params._parameter_dict ?? {})
  if (routeAddresses(addresses).length === 0) return { addresses, tree: [] }
  const fetching = fetchTreeAddresses(() => env.client.getHostingSubscriptionIpList(env.cfg.computerId, w.id), w.log)
  const tree = lenient
    ? await fetching.catch((e: unknown) => {
        if (e instanceof ConnectionError) throw e
        w.log.warning(`Cannot get the instance tree's addresses (${e instanceof Error ? e.message : String(e)}): only the recorded rules and those of the filter are removed`)
        return []
      })
    : await fetching
  return { addresses, tree }
}

/** §4.5 (`Partition.install`): checks, buildout.cfg, then the instance buildout as the partition owner. */
async function install(env: Env, w: Work): Promise<void> {
  const { cfg, opts, ctx } = env
  checkFreeSpace(w.path, env.settings.get('instance_min_free_space') ?? '1000M')
  if (!isDirectory(w.path)) throw new SlapError(`Please create partition directory ${w.path}`)
  if (w.softwarePath) ensureSoftwareLink(w.path, w.softwarePath, w.owner)
  const mode = statSync(w.path).mode & 0o7777
  if (mode !== 0o750) {
    throw new SlapError(`Wrong permissions in ${w.path}: actual permissions are: 0${mode.toString(8)}, wanted are 0750`, { code: 'E_PERMISSIONS', hint: `chmod 750 ${w.path}` })
  }
  if (!w.softwarePath || !isDirectory(w.softwarePath)) throw new SlapError(`Software Release ${w.srUrl} is not present on system.`, { code: 'E_NO_SOFTWARE', hint: 'run `slapos node software` first' })
  const template = ['instance.cfg', 'template.cfg'].map((f) => join(w.softwarePath, f)).find((f) => existsSync(f))
  if (!template) {
    throw new SlapError(`Software Release ${w.srUrl} is not correctly installed. Missing file: ${join(w.softwarePath, 'instance.cfg')}`, { code: 'E_NO_TEMPLATE' })
  }
  const repo = cfg.certificateRepositoryPath
  const tail = buildoutTail({
    computerId: cfg.computerId,
    partitionId: w.id,
    masterUrl: cfg.masterUrl,
    softwareReleaseUrl: w.srUrl,
    keyFile: repo ? join(repo, `${w.id}.key`) : '',
    certFile: repo ? join(repo, `${w.id}.crt`) : '',
    sharedPartList: cfg.sharedPartList,
    buildTimePartList: cfg.buildTimePartList,
    requestedState: w.state,
    storageHome: env.settings.get('instance_storage_home')?.trim() ?? '',
    ipv4GlobalNetwork: env.settings.get('ipv4_global_network')?.trim() ?? '',
  })
  const profile = join(w.path, 'buildout.cfg')
  writePartitionFile(profile, readTemplate(template, cfg.softwareRoot, cfg.sharedPartList) + '\n\n' + tail, 0o640, { gid: w.owner.gid })

  const binary = await chooseBuildout(env, w)
  w.log.info(`Running buildout in ${w.path}${opts.buildoutDebug ? ' (debug)' : ''}`)
  env.progress.begin(w.id)
  try {
    const r = await runBuildout({
      binary,
      args: [...(opts.buildoutDebug ? ['-D'] : []), '-U'],
      cwd: w.path,
      owner: w.owner,
      home: w.path,
      timeoutMs: cfg.partitionTimeout ? cfg.partitionTimeout * 1000 : undefined,
      onLine: (line) => {
        env.progress.line(w.id, line)
        w.log.debug(line)
      },
      runner: ctx.runner,
      rootCheck: refuseRoot(cfg),
      // the slap library inside the buildout writes .slapos-request-transaction-<id> there (§4.9)
      baseEnv: { ...ctx.env, SLAPGRID_INSTANCE_ROOT: cfg.instanceRoot },
      interactive: opts.buildoutDebug,
    })
    // the output ends with why buildout stopped when it was killed (partition_timeout)
    if (!r.ok) throw new SlapError(buildoutFailure(w.path, r.output), { code: 'E_BUILDOUT' })
  } finally {
    env.progress.end(w.id)
  }
  const retention = join(w.path, '.slapos-retention-lock-delay')
  if (!existsSync(retention)) {
    const filter = w.params.raw.state._filter_dict
    const delay = filter && typeof filter === 'object' && !Array.isArray(filter) && 'retention_delay' in filter ? Number((filter as Record<string, unknown>).retention_delay) || 0 : 0
    writePartitionFile(retention, String(delay), 0o644)
  }
}

/** The largest instance template read. */
const TEMPLATE_MAX_BYTES = 16 << 20

/**
 * The release's `instance.cfg` (or `template.cfg`), which becomes the partition's buildout.cfg,
 * readable by the partition's user. The software user makes it, and may make it a link, as the
 * original follows one: only a regular file (never a device or a FIFO: nothing else is even
 * opened) that lies in the software root or a shared part root (the real path of the file
 * named, so no link swapped in meanwhile counts), not another name of a file of another user,
 * at most TEMPLATE_MAX_BYTES.
 */
function readTemplate(file: string, softwareRoot: string, sharedRoots: readonly string[]): string {
  const refuse = (why: string) => new SlapError(`${file} ${why}: not used as the instance template`, { code: 'E_TEMPLATE', hint: 'the software release must build it as a file of its own directory; run `slapos node software` again' })
  const roots = [softwareRoot, ...sharedRoots].flatMap((r) => {
    try {
      return [realpathSync(r)]
    } catch {
      return []
    }
  })
  const softwareUid = statSync(softwareRoot).uid
  const fd = openRegular(file, true, (st, real) => {
    if (!roots.some((r) => real.startsWith(r.endsWith('/') ? r : r + '/'))) return `leads outside the software root (to ${real})`
    if (st.nlink > 1 && st.uid !== softwareUid) return `is another name of a file of uid ${st.uid}`
    if (st.size > TEMPLATE_MAX_BYTES) return `is larger than ${TEMPLATE_MAX_BYTES} bytes`
    return undefined
  })
  if (fd === 'absent') throw refuse('is missing')
  if (typeof fd !== 'number') throw refuse(fd.refused)
  try {
    const chunks: Buffer[] = []
    let total = 0
    for (;;) {
      const buf = Buffer.alloc(64 << 10)
      const got = readSync(fd, buf, 0, buf.length, null)
      if (got === 0) break
      total += got
      if (total > TEMPLATE_MAX_BYTES) throw refuse(`is larger than ${TEMPLATE_MAX_BYTES} bytes`)
      chunks.push(buf.subarray(0, got))
    }
    return Buffer.concat(chunks).toString('utf8')
  } finally {
    closeSync(fd)
  }
}

/**
 * §4.5 steps 7-8: one `bin/bootstrap*` in the software release is run to make
 * `<partition>/sbin/buildout`; else the release's own `bin/buildout`; else the buildout of
 * slapos.cfg (the original would bootstrap one into the partition, see notes on buildout).
 */
async function chooseBuildout(env: Env, w: Work): Promise<string> {
  const bin = join(w.softwarePath, 'bin')
  const bootstraps = safeReaddir(bin).filter((n) => n.startsWith('bootstrap'))
  if (bootstraps.length > 1) throw new SlapError(`More than one bootstrap candidate found in ${bin}: ${bootstraps.sort().join(', ')}`)
  if (bootstraps.length === 1) {
    const script = join(bin, bootstraps[0] ?? '')
    const r = await runBuildout({ binary: script, args: [], cwd: w.path, owner: w.owner, home: w.owner.home, runner: env.ctx.runner, rootCheck: refuseRoot(env.cfg), baseEnv: env.ctx.env })
    if (!r.ok) throw new SlapError(`Failed to bootstrap buildout in '${w.path}'.\n${r.output}`)
    return join(w.path, 'sbin', 'buildout')
  }
  const own = join(bin, 'buildout')
  return existsSync(own) ? own : env.cfg.buildout
}

/** §4.4 step 2: the partition's certificate and key, rewritten when the master's differ. */
async function fetchCertificate(env: Env, id: string, owner: Owner): Promise<void> {
  const repo = env.cfg.certificateRepositoryPath
  if (!repo) return
  let cert
  try {
    cert = await env.client.getComputerPartitionCertificate(env.cfg.computerId, id)
  } catch (e) {
    if (e instanceof NotFoundError) throw new SlapError(`Partition ${id} is not known by SlapOS Master.`, { code: 'E_NOT_FOUND' })
    throw e
  }
  for (const [file, text] of [
    [join(repo, `${id}.crt`), cert.certificate],
    [join(repo, `${id}.key`), cert.key],
  ] as const) {
    // the files belong to the partition's user: read no more than the master's text could
    // be (a file grown past it, a link or a FIFO is simply rewritten)
    const now = readUserFile(file, Buffer.byteLength(text) + 1)
    if (now.kind === 'ok' && now.bytes.toString('utf8') === text) continue
    writePartitionFile(file, text, 0o400, { uid: owner.uid, gid: owner.gid })
  }
}

/**
 * §4.9: instances requested by this partition's buildout, sent after a successful processing,
 * and kept for --converge (InstancePass.requested). The file is the partition user's: read
 * with readUserFile (no link, no FIFO, at most TRANSACTION_MAX_BYTES and _LINES); a file
 * refused is not sent (a part of the list would unlink the other instances): a warning.
 */
async function sendTransaction(env: Env, w: Work): Promise<void> {
  const file = join(w.path, `.slapos-request-transaction-${w.id}`)
  const refs = readTransaction(file, w.log)
  if (refs === undefined) return
  env.requested.set(w.id, refs)
  try {
    await env.client.updateComputerPartitionRelatedInstanceList(env.cfg.computerId, w.id, refs)
  } catch (e) {
    if (e instanceof NotFoundError) w.log.warning(`the master does not know the related instance list call: ${e.message}`)
    else throw e
  }
}

/** The titles of a transaction file, one a line; undefined when absent or refused (said in the log). */
function readTransaction(file: string, log: Logger): string[] | undefined {
  const read = readUserFile(file, TRANSACTION_MAX_BYTES)
  if (read.kind === 'absent') return undefined
  if (read.kind === 'refused') {
    log.warning(`${file} is ${read.why}: the instances it requested are not told to the master`)
    return undefined
  }
  const refs = read.bytes.toString('utf8').split('\n').map((l) => l.trim()).filter(Boolean)
  if (refs.length > TRANSACTION_MAX_LINES) {
    log.warning(`${file} names more than ${TRANSACTION_MAX_LINES} instances: the instances it requested are not told to the master`)
    return undefined
  }
  return refs
}

/** §4.2: a free partition keeps only `.slapos-resource`; our own leftovers are removed. */
function cleanFreePartition(path: string, log: Logger): void {
  // the user's tree, removed without following a link (a free partition's user may still run something)
  inBeneath(path, [], undefined, (d) => {
    for (const f of ['.slapgrid', '.timestamp']) d.removeTree(f)
  })
  const rest = safeReaddir(path).filter((f) => f !== '.slapos-resource')
  if (rest.length) log.warning(`free partition ${path} is not empty: ${rest.sort().slice(0, 5).join(', ')}${rest.length > 5 ? ', ...' : ''}`)
}

/**
 * §4.10: the master cannot be reached: partitions whose `.requested_state` (left by old
 * versions) says stopped are stopped, then every supervised process is started. Exit 3,
 * or 1 when supervisord does not answer.
 */
async function offline(cfg: NodeConfig, sup: Supervisor, log: Logger, why: ConnectionError): Promise<number> {
  log.warning(`Cannot reach the master (${why.message}): offline mode, starting every supervised process`)
  try {
    for (const entry of safeReaddir(cfg.instanceRoot)) {
      const f = join(cfg.instanceRoot, entry, '.requested_state')
      const read = readUserFile(f, 64)
      if (read.kind === 'absent') continue
      unlinkSync(f)
      if (read.kind === 'ok' && read.bytes.toString('utf8').trim() === 'stopped') await stopPartitionServices(sup, cfg.instanceRoot, entry)
    }
    await sup.startAll()
  } catch (e) {
    log.error(`offline mode failed: ${e instanceof Error ? e.message : String(e)}`)
    return EXIT.FAIL
  }
  return EXIT.OFFLINE_SUCCESS
}

/**
 * supervisord's state for a dry run: asked on its socket (a read), never started, nothing
 * stopped (a real run's launch also stops a stray supervisord on the other socket name).
 */
async function supervisordPlan(cfg: NodeConfig, log: Logger, ctx: Ctx): Promise<SupervisordPlan> {
  const paths = supervisorPaths(cfg.instanceRoot)
  let state: string | undefined
  if (existsSync(paths.socket)) {
    try {
      // the 5 s a real run's launch waits, not the 60 s of other calls
      state = await new Supervisor(paths, log, ctx.runner).getState(5_000)
    } catch (e) {
      log.debug(`supervisord does not answer on ${paths.socket}: ${e instanceof Error ? e.message : String(e)}`)
    }
  }
  if (state === 'RUNNING') return 'running'
  return cfg.forbidSupervisordAutomaticLaunch ? 'not running: forbid_supervisord_automatic_launch keeps it stopped' : 'not running: a real run starts it'
}

/** Master calls whose failure is logged, not fatal for the partition (a lost master still is). */
async function report(log: Logger, call: () => Promise<unknown>): Promise<void> {
  try {
    await call()
  } catch (e) {
    if (e instanceof ConnectionError) throw e
    log.error(`could not tell the master: ${e instanceof Error ? e.message : String(e)}`)
  }
}
const ignoreErrors = report

function ensureSoftwareLink(path: string, softwarePath: string, owner: Owner): void {
  const link = join(path, 'software_release')
  let st
  try {
    st = lstatSync(link)
  } catch {
    st = undefined
  }
  if (st && !st.isSymbolicLink()) return // a real file or directory of that name is left alone
  if (st && readlinkSync(link) === softwarePath) return
  if (st) unlinkSync(link)
  symlinkSync(softwarePath, link)
  lchownSync(link, owner.uid, owner.gid)
}

/**
 * A logger for one partition that also appends every record (debug included) to
 * `<partition>/.slapgrid/log/instance.log`, rotated to `.1` at 20 MiB (§4.4 step 1).
 */
function partitionLogger(base: Logger, path: string, owner: Owner, progress: Progress): Logger {
  // the partition's user owns the directories: reached without following a link (beneath.ts)
  const dir = ['.slapgrid', 'log']
  const own = { uid: owner.uid, gid: owner.gid }
  try {
    inBeneath(path, dir, own, (d) => {
      if ((lstatSync(d.at('instance.log'), { throwIfNoEntry: false })?.size ?? 0) >= 20 * 1024 * 1024) d.rename('instance.log', 'instance.log.1')
    })
  } catch {
    /* logging to the partition is best effort */
  }
  const write = (level: string, msg: string) => {
    try {
      inBeneath(path, dir, undefined, (d) => d.append('instance.log', `${logStamp(new Date())} - ${level} - ${msg}\n`, own))
    } catch {
      /* best effort (a link or a hard link planted there is not written through) */
    }
  }
  const make = (b: Logger): Logger => ({
    debug: (m) => (progress.pause(), b.debug(m), write('DEBUG', m)),
    info: (m) => (progress.pause(), b.info(m), write('INFO', m)),
    warning: (m) => (progress.pause(), b.warning(m), write('WARNING', m)),
    error: (m) => (progress.pause(), b.error(m), write('ERROR', m)),
    critical: (m) => (progress.pause(), b.critical(m), write('CRITICAL', m)),
    child: (p) => make(b.child(p)),
  })
  return make(base)
}

/**
 * One status line on a terminal while buildouts run: which partitions are building, for
 * how long, and the last line buildout printed. Cleared before any log line is written.
 */
class Progress {
  private readonly enabled: boolean
  private readonly running = new Map<string, { since: number; last: string }>()
  private timer: NodeJS.Timeout | undefined
  private shown = false
  constructor(enabled: boolean) {
    this.enabled = enabled
  }
  begin(id: string): void {
    if (!this.enabled) return
    this.running.set(id, { since: Date.now(), last: '' })
    this.timer ??= setInterval(() => this.draw(), 500)
  }
  line(id: string, line: string): void {
    const r = this.running.get(id)
    if (r && line.trim()) r.last = line.trim()
  }
  end(id: string): void {
    if (!this.enabled) return
    this.running.delete(id)
    this.pause()
    if (this.running.size === 0 && this.timer) {
      clearInterval(this.timer)
      this.timer = undefined
    }
  }
  pause(): void {
    if (this.shown) process.stderr.write('\r\x1b[K')
    this.shown = false
  }
  clear(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    this.pause()
  }
  private draw(): void {
    if (this.running.size === 0) return
    const width = (process.stderr.columns || 80) - 1
    const parts = [...this.running].map(([id, r]) => `${id} ${Math.floor((Date.now() - r.since) / 1000)}s`)
    const last = [...this.running.values()].at(-1)?.last ?? ''
    const text = `buildout: ${parts.join(', ')}${last ? ` | ${last}` : ''}`
    process.stderr.write('\r\x1b[K' + text.slice(0, width))
    this.shown = true
  }
}

/** `instance_min_free_space` (§4.5 step 1): sizes like 1000M, 2G, 512KB (powers of 1024), or bytes. */
function checkFreeSpace(path: string, wanted: string): void {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$/i.exec(wanted)
  if (!m) throw new SlapError(`instance_min_free_space = ${wanted} is not a size`, { code: 'E_CONFIG', hint: 'use e.g. 1000M or 2G' })
  const need = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase())
  let free: number
  try {
    const fs = statfsSync(path)
    free = fs.bavail * fs.bsize
  } catch {
    return // no directory: the next check says so
  }
  if (free < need) {
    throw new SlapError(`Not enough free space in ${path}: ${Math.floor(free / 1024 / 1024)}M available, instance_min_free_space asks for ${wanted.trim()}`, {
      code: 'E_NO_SPACE',
    })
  }
}

function logStamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())},${p(d.getMilliseconds(), 3)}`
}

/** Removes a file that is usually absent (an lstat answers that without the exception of a failed unlink). */
function removeIfExists(file: string): void {
  if (lstatSync(file, { throwIfNoEntry: false })) rmSync(file, { force: true })
}

function isDirectory(p: string): boolean {
  return statSync(p, { throwIfNoEntry: false })?.isDirectory() === true
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

function firstLine(s: string | undefined): string {
  return (s ?? '').split('\n')[0] ?? ''
}
