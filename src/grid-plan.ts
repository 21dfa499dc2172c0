// Pure decisions of `slapos node instance` (grid.md §4.2-4.3) and `slapos node software`
// (§3.1): which partitions of the master's list are looked at, and for each one whether it is
// skipped (free, missing directory, up to date) or processed, with the reason; the same for
// each software release. No file system, no clock: grid-instance.ts and grid-software.ts read
// the local state, ask this module, then either do what the decision says (a real run) or
// print it (`--dry-run`), so that the plan and the run cannot disagree.
//
//   master list ──selectPartitions──> kept ids (or "Unknown partition: X")
//   per partition:   free ──────────> clean .slapgrid/.timestamp, no master call
//                    missing-dir ───> /softwareInstanceError, exit status unchanged
//                    up-to-date ────> nothing (no buildout, no status call)
//                    process ───────> install / start / stop, then .timestamp
import { md5hex } from './md5.ts'
import { escapeControls, hasControl, quote } from './names.ts'
import type { ComputerPartition } from './slap-client.ts'
import { dumps, type PyDict, type PyValue } from './slap-protocol.ts'

/** What the master says about one partition, in the words grid-instance.ts needs. */
export interface WantedPartition {
  id: string
  /** requested state: started, stopped, destroyed (anything else is an error) */
  state: string
  /** URL of its software release; empty or null for a free partition */
  softwareReleaseUrl: string | null
  /** `timestamp` of its instance parameters, absent when the master gave none */
  timestamp: string | undefined
  /**
   * What a successful processing would record now (deploymentRecord); read only to say why a
   * partition is processed, so a reader may compute it lazily (a getter).
   */
  record?: DeploymentRecord | undefined
}

/** What is on this machine for one partition. */
export interface LocalPartitionState {
  dirExists: boolean
  /** `.timestamp`: content and modification time (ms since epoch); undefined when absent */
  timestamp?: { content: string; mtimeMs: number } | undefined
  /** raw content of `<software_path>/periodicity`; undefined when the file is absent */
  periodicityFile?: string | undefined
  // The three below only say why (the decision itself never depends on them): a reader may
  // compute them lazily (getters), so that an idle run does not read them at all.
  /** the record of the last fully successful processing, when there is one */
  lastDeployment?: DeploymentRecord | undefined
  /** `.slapgrid-<id>-error.log` exists: the last processing failed */
  failedBefore?: boolean
  /** a free partition still holds our `.slapgrid` or `.timestamp` (read by a dry run only) */
  leftovers?: boolean
}

export interface PlanOptions {
  /** --force / --all */
  force: boolean
  /** --force-stop */
  forceStop: boolean
  /** --only-cp ids; undefined when not given */
  only?: ReadonlySet<string> | undefined
  /** maximum_periodicity (seconds) */
  maximumPeriodicity: number
  /** current time, ms since epoch */
  nowMs: number
}

export type PartitionDecision =
  /** destroyed with no software release: delete `.slapgrid` and `.timestamp`, no master call */
  | { kind: 'free' }
  /** partition directory missing: report the error to the master, do not change the exit status */
  | { kind: 'missing-dir' }
  /** not named by --only-cp */
  | { kind: 'not-selected' }
  /** `.timestamp` equals the master's and the periodicity has not elapsed */
  | { kind: 'up-to-date'; periodicity: number; deletePeriodicityFile: boolean }
  | {
      kind: 'process'
      state: string
      /** the old `.timestamp` must go before processing, so a failure leaves none */
      deleteTimestamp: boolean
      /** value to write into `.timestamp` after a fully successful processing, if any */
      writeTimestamp: string | undefined
      periodicity: number
      /** the periodicity file did not parse: the original deletes it */
      deletePeriodicityFile: boolean
    }

/**
 * --only-cp ids that the master does not know, sorted, turned into the original's message
 * (`Unknown partition: X` / `Unknown partitions: X, Y`); undefined when all are known.
 */
export function unknownPartitionsMessage(masterIds: Iterable<string>, only: ReadonlySet<string> | undefined): string | undefined {
  if (!only) return undefined
  const known = new Set(masterIds)
  const unknown = [...only].filter((id) => !known.has(id)).sort()
  if (unknown.length === 0) return undefined
  return `${unknown.length === 1 ? 'Unknown partition' : 'Unknown partitions'}: ${unknown.join(', ')}`
}

/** `--only-cp a,b`: comma-separated, no spaces stripped (as the original), empty entries dropped. */
export function parseOnlyList(value: string | undefined): Set<string> | undefined {
  if (value === undefined) return undefined
  return new Set(value.split(',').filter((s) => s !== ''))
}

/**
 * Periodicity of a partition: the integer in its software release's `periodicity` file when
 * it parses (Python int(): surrounding blanks, optional sign), else maximum_periodicity; an
 * unparsable file is to be deleted (slapgrid.py `processComputerPartition`).
 */
export function periodicityOf(file: string | undefined, maximumPeriodicity: number): { periodicity: number; deleteFile: boolean } {
  if (file === undefined) return { periodicity: maximumPeriodicity, deleteFile: false }
  const m = /^\s*([-+]?\d+(?:_\d+)*)\s*$/.exec(file)
  if (!m || m[1] === undefined) return { periodicity: maximumPeriodicity, deleteFile: true }
  return { periodicity: Number.parseInt(m[1].replace(/_/g, ''), 10), deleteFile: false }
}

/**
 * The decision for one partition, in the order of slapgrid.py `FilterComputerPartitionList`
 * then `processComputerPartition` (HEAD rules of grid.md §4.3): like the original, a
 * partition whose `.timestamp` equals the master's and whose periodicity has not elapsed is
 * skipped unless --force; any other timestamp (older or newer) is processed.
 */
export function planPartition(wanted: WantedPartition, local: LocalPartitionState, opts: PlanOptions): PartitionDecision {
  return decide(wanted, local, opts).decision
}

/**
 * The decision of planPartition and the step it means (action and reason): the only place
 * where either is made. A real run does `decision`; `--dry-run` prints `step`. The step is
 * worked out when first read: what only says why (the deployment record, the error log, a
 * free partition's leftovers) is then read, so that a real run reads it only for the
 * partitions it processes (their log line), never for an idle or a free one.
 */
export function decidePartition(wanted: WantedPartition, local: LocalPartitionState, opts: PlanOptions): { decision: PartitionDecision; readonly step: PartitionStep } {
  const { decision, explain } = decide(wanted, local, opts)
  let step: PartitionStep | undefined
  return {
    decision,
    get step() {
      return (step ??= explain())
    },
  }
}

function decide(wanted: WantedPartition, local: LocalPartitionState, opts: PlanOptions): { decision: PartitionDecision; explain: () => PartitionStep } {
  const step = (action: PartitionAction, reason: PartitionReason, detail: string): PartitionStep => ({ id: wanted.id, state: wanted.state, action, reason, detail })
  if (!local.dirExists) return { decision: { kind: 'missing-dir' }, explain: () => step('error', 'missing-directory', 'the partition directory does not exist: the master is told') }
  if (wanted.state === 'destroyed' && !wanted.softwareReleaseUrl) {
    const explain = () => (local.leftovers === true ? step('clean', 'free', 'free partition: .slapgrid and .timestamp would be removed') : step('nothing', 'free', 'free partition'))
    return { decision: { kind: 'free' }, explain }
  }
  if (opts.only && !opts.only.has(wanted.id)) return { decision: { kind: 'not-selected' }, explain: () => step('skip', 'not-selected', 'not named by --only-cp') }

  const { periodicity, deleteFile } = periodicityOf(local.periodicityFile, opts.maximumPeriodicity)
  const unparsable = deleteFile ? '; the periodicity file is not an integer: deleted' : ''
  // --force-stop on a started partition: as if the master gave no timestamp (always
  // processed, never recorded), so the next normal run starts the services again.
  const masterTimestamp = opts.forceStop && wanted.state === 'started' ? undefined : wanted.timestamp
  let deleteTimestamp = false
  if (!opts.force && masterTimestamp !== undefined && periodicity !== 0) {
    const ts = local.timestamp
    if (ts && ts.content === masterTimestamp) {
      const now = Math.floor(opts.nowMs / 1000)
      const last = Math.floor(ts.mtimeMs / 1000)
      if (periodicity < 0 || now <= last + periodicity) {
        const next = periodicity < 0 ? 'negative periodicity: not processed again while it stays so' : `periodicity ${periodicity} s, ${last + periodicity - now} s left`
        const anomaly = wanted.state === 'started' && !opts.forceStop && wanted.softwareReleaseUrl ? '; promises checked in anomaly mode' : ''
        return {
          decision: { kind: 'up-to-date', periodicity, deletePeriodicityFile: deleteFile },
          explain: () => step('nothing', 'up-to-date', `timestamp unchanged; ${next}${anomaly}${unparsable}`),
        }
      }
    }
    if (ts) deleteTimestamp = true
  }
  const decision: PartitionDecision = {
    kind: 'process',
    state: wanted.state,
    deleteTimestamp,
    writeTimestamp: masterTimestamp,
    periodicity,
    deletePeriodicityFile: deleteFile,
  }
  const explain = () => {
    const why = whyProcessed(wanted, local, opts, periodicity)
    return step(processAction(wanted.state, opts.forceStop, why.changes), why.reason, why.detail + unparsable)
  }
  return { decision, explain }
}

// --- plans: what a run does to each partition and software release, and why ---

/**
 * What a run does to a partition:
 *   deploy   instance buildout, services started, promises, /startedComputerPartition
 *   start    the same, for a partition last deployed stopped and otherwise unchanged
 *   stop     instance buildout, services stopped, /stoppedComputerPartition (--force-stop:
 *            a started partition, nothing reported)
 *   destroy  services stopped, /stoppedComputerPartition; `node report` removes the files
 *   nothing  up to date (a started one has its promises checked in anomaly mode), or free
 *   clean    free partition: our leftovers (.slapgrid, .timestamp) removed
 *   error    /softwareInstanceError (missing directory, refused master data)
 *   skip     not named by --only-cp
 */
export type PartitionAction = 'deploy' | 'start' | 'stop' | 'destroy' | 'nothing' | 'clean' | 'error' | 'skip'

export type PartitionReason =
  /** no .timestamp, no record, no error log: never deployed on this node */
  | 'new'
  /** no .timestamp and `.slapgrid-<id>-error.log`: the last processing failed */
  | 'failed-before'
  /** no .timestamp although a deployment was recorded (`node boot` clears them) */
  | 'timestamp-removed'
  /** the master's timestamp differs, and the record tells what changed (or there is no record) */
  | 'timestamp-changed'
  | 'state-changed'
  | 'software-release-changed'
  | 'software-type-changed'
  | 'parameters-changed'
  | 'shared-instances-changed'
  /** same timestamp, but the periodicity has elapsed since the last processing */
  | 'periodicity-elapsed'
  /** periodicity 0 */
  | 'every-run'
  /** the master gave no timestamp: processed on every run, never recorded */
  | 'no-master-timestamp'
  /** --force / --all / --force-stop on an otherwise up-to-date partition */
  | 'forced'
  | 'up-to-date'
  | 'free'
  | 'missing-directory'
  | 'not-selected'
  /** the master's data cannot be used (unsafe id, unknown state, control characters) */
  | 'refused'

/** One line of a partition plan: the decision of decidePartition in words. */
export interface PartitionStep {
  id: string
  /** requested state */
  state: string
  action: PartitionAction
  reason: PartitionReason
  /** the reason for a person (values from outside escaped) */
  detail: string
  /** dry run: why the real run would (or may) fail, also at the end of `detail` */
  problem?: string
}

/** What the master says about a partition, in the words of the node (one reading, for every user). */
export interface MasterPartition {
  id: string
  /** the instance parameters (`_parameter_dict`) */
  parameters: Readonly<PyDict>
  /** URL of its software release; null for a free partition */
  softwareReleaseUrl: string | null
  /** requested state; `destroyed` when the master gives none */
  state: string
  softwareType: string | undefined
  /** `timestamp` of the parameters as text; undefined when the master gave none */
  timestamp: string | undefined
  /** `instance_title` as text: what a requester's transaction file names */
  title: string | undefined
  /** the instance the partition holds now: `_instance_guid` and the title, canonical text */
  instance: string
}

/** The master's description of one partition (getFullComputerInformation), read once. */
export function masterView(p: ComputerPartition): MasterPartition {
  const parameters = p._parameter_dict ?? {}
  const doc = p._software_release_document
  const text = (v: PyValue | undefined) => (v === undefined || v === null ? undefined : String(v))
  const title = text(parameters.instance_title)
  return {
    id: p._partition_id ?? '',
    parameters,
    softwareReleaseUrl: (typeof doc === 'string' ? doc : doc?._software_release) ?? null,
    state: p._requested_state ?? 'destroyed',
    softwareType: typeof parameters.slap_software_type === 'string' ? parameters.slap_software_type : undefined,
    timestamp: text(parameters.timestamp),
    title,
    instance: canonicalText([p._instance_guid ?? null, title ?? null]),
  }
}

/**
 * The one canonical encoding of the master's values that the node compares (the deployment
 * record, --converge's answers): the protocol's own, whose dictionaries have sorted keys, so
 * that equal values encode equally whatever the order of their keys, and a tuple and a list
 * differ.
 */
export function canonicalText(v: PyValue): string {
  return dumps(v)
}

/**
 * What the node records after a fully successful processing, beside what `.timestamp` holds:
 * md5 hashes of what the master asked then, so that the next change can be named.
 */
export interface DeploymentRecord {
  state: string
  /** the instance then: a record of another instance (the partition freed and given again) names nothing */
  instance: string
  softwareRelease: string
  softwareType: string
  /** the instance parameters (`_parameter_dict` without timestamp, software type and URL, shared instances) */
  parameters: string
  /** `slave_instance_list`: the shared instances hosted by the partition */
  shared: string
}

/** The record of what the master asks now (see DeploymentRecord). */
export function deploymentRecord(w: Pick<MasterPartition, 'state' | 'softwareReleaseUrl' | 'softwareType' | 'parameters' | 'instance'>): DeploymentRecord {
  const { timestamp: _t, slap_software_type: _type, slap_software_release_url: _url, slave_instance_list: shared, ...parameters } = w.parameters
  return {
    state: w.state,
    instance: md5hex(w.instance),
    softwareRelease: md5hex(w.softwareReleaseUrl ?? ''),
    softwareType: md5hex(w.softwareType ?? ''),
    parameters: md5hex(canonicalText(parameters)),
    shared: md5hex(canonicalText(shared ?? [])),
  }
}

/**
 * Where the record of a partition lies: `<instance_root>/var/run/<id>.deployment`, outside
 * the partition (a directory only root writes). Written by `node instance`, removed by
 * `node report` when it destroys the partition.
 */
export function deploymentRecordFile(instanceRoot: string, id: string): string {
  return `${instanceRoot}/var/run/${id}.deployment`
}

/**
 * What the master was last told of a partition's promises (node instance, with a master that
 * gives no access status), beside the deployment record; removed with it.
 */
export function promiseStatusFile(instanceRoot: string, id: string): string {
  return `${instanceRoot}/var/run/${id}.promise-status`
}

/** The record's file content (one JSON line). */
export function deploymentRecordText(r: DeploymentRecord): string {
  return JSON.stringify({ state: r.state, instance: r.instance, softwareRelease: r.softwareRelease, softwareType: r.softwareType, parameters: r.parameters, shared: r.shared }) + '\n'
}

/** A record file read back; undefined when it is not one (it only ever names a reason). */
export function parseDeploymentRecord(text: string | undefined): DeploymentRecord | undefined {
  if (text === undefined || text.length > 4096) return undefined
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof v !== 'object' || v === null) return undefined
  const o = v as Record<string, unknown>
  const hash = (k: string) => (typeof o[k] === 'string' && /^[0-9a-f]{32}$/.test(o[k]) ? o[k] : undefined)
  const state = o.state
  const [instance, softwareRelease, softwareType, parameters, shared] = [hash('instance'), hash('softwareRelease'), hash('softwareType'), hash('parameters'), hash('shared')]
  if (typeof state !== 'string' || !STATES.includes(state) || !instance || !softwareRelease || !softwareType || !parameters || !shared) return undefined
  return { state, instance, softwareRelease, softwareType, parameters, shared }
}

/**
 * What a `node software` run does to one software release:
 *   install  /buildingSoftwareRelease, binary cache or buildout, /availableSoftwareRelease, .completed
 *   remove   the directory removed, /destroyedSoftwareRelease (sent even when it is already gone);
 *            with --garbage-collect, a directory of a release no longer supplied (no master call)
 *   nothing  installed (.completed)
 *   error    /softwareReleaseError (refused URL, unknown state)
 *   skip     not named by --only-sr
 */
export type SoftwareAction = 'install' | 'remove' | 'nothing' | 'error' | 'skip'
export type SoftwareReason = 'new' | 'failed-before' | 'forced' | 'installed' | 'destroyed' | 'not-supplied' | 'not-selected' | 'refused' | 'unsupported-state'

export interface SoftwareStep {
  /** md5 of the URL: the directory name */
  id: string
  url: string
  /** what the master asks: available or destroyed (empty for a garbage directory) */
  state: string
  action: SoftwareAction
  reason: SoftwareReason
  detail: string
}

/**
 * One software release as the master asks (state) and the disk says (its directory, its
 * `.completed`), in the order of slapgrid.py `processSoftwareReleaseList` (HEAD): --only-sr
 * first, then the URL check, then the state.
 */
export function planSoftwareRelease(
  wanted: { url: string; hash: string; state: string },
  local: { dirExists: boolean; completed: boolean },
  opts: { force: boolean; selected: boolean },
): SoftwareStep {
  const step = (action: SoftwareAction, reason: SoftwareReason, detail: string): SoftwareStep => ({ id: wanted.hash, url: escapeControls(wanted.url), state: escapeControls(wanted.state), action, reason, detail })
  if (!opts.selected) return step('skip', 'not-selected', 'not named by --only-sr')
  if (hasControl(wanted.url)) return step('error', 'refused', `the software release URL has control characters: ${quote(wanted.url)}`)
  if (wanted.state === 'available') {
    if (local.completed && !opts.force) return step('nothing', 'installed', 'installed (.completed)')
    if (local.completed) return step('install', 'forced', '--force: built again, buildout looks for newer versions (no -N)')
    if (local.dirExists) return step('install', 'failed-before', 'the directory exists without .completed: an earlier installation did not finish')
    return step('install', 'new', 'not installed yet')
  }
  if (wanted.state === 'destroyed') return step('remove', 'destroyed', local.dirExists ? 'the master destroyed it' : 'the master destroyed it; the directory is already gone, the master is told again')
  return step('error', 'unsupported-state', `unsupported requested state ${quote(wanted.state)}`)
}

/** A directory of `--garbage-collect`: no release supplied as available uses it. */
export function garbageStep(hash: string): SoftwareStep {
  return { id: hash, url: '', state: '', action: 'remove', reason: 'not-supplied', detail: 'no software release supplied to this node uses it (--garbage-collect)' }
}

/**
 * The plan as text: one line per partition or software release (id, action, reason, detail;
 * the URL last for software), then the summary (`4 partitions: 1 deploy, 3 nothing`).
 */
export function planText(steps: ReadonlyArray<{ id: string; action: string; reason: string; detail: string; url?: string }>, noun: [string, string]): string {
  const cells = steps.map((s) => [s.id, s.action, s.reason, s.detail + (s.url ? `  ${s.url}` : '')])
  const widths = [0, 1, 2].map((i) => Math.max(0, ...cells.map((c) => (c[i] ?? '').length)))
  const lines = cells.map((c) => c.map((x, i) => (i < 3 ? x.padEnd(widths[i] ?? 0) : x)).join('  ').trimEnd())
  const counts = new Map<string, number>()
  for (const s of steps) counts.set(s.action, (counts.get(s.action) ?? 0) + 1)
  const tally = [...counts].map(([a, n]) => `${n} ${a}`).join(', ')
  lines.push(`${steps.length} ${steps.length === 1 ? noun[0] : noun[1]}${tally ? `: ${tally}` : ''} (dry run: nothing was changed)`)
  return lines.join('\n') + '\n'
}

/** Exit status of a run (grid.md §4.1.7): any failure wins over promise failures. */
export function runExitCode(failed: number, promiseFailed: number): 0 | 1 | 2 {
  if (failed > 0) return 1
  if (promiseFailed > 0) return 2
  return 0
}

// --- internal ---

const STATES = ['started', 'stopped', 'destroyed']

/** Why a partition is processed: the most telling reason first, every change named in `detail`. */
function whyProcessed(wanted: WantedPartition, local: LocalPartitionState, opts: PlanOptions, periodicity: number): { reason: PartitionReason; detail: string; changes: Change[] } {
  const none: Change[] = []
  if (wanted.timestamp === undefined) return { reason: 'no-master-timestamp', detail: 'the master gives no timestamp: processed on every run', changes: none }
  const ts = local.timestamp
  if (!ts) {
    if (local.failedBefore) return { reason: 'failed-before', detail: `the last processing failed (.slapgrid-${escapeControls(wanted.id)}-error.log), no .timestamp`, changes: none }
    if (sameInstance(local.lastDeployment, wanted.record)) return { reason: 'timestamp-removed', detail: 'deployed before, but .timestamp is gone (node boot clears it)', changes: none }
    return { reason: 'new', detail: 'never deployed here (no .timestamp)', changes: none }
  }
  if (ts.content !== wanted.timestamp) {
    const changes = recordChanges(sameInstance(local.lastDeployment, wanted.record), wanted.record)
    const first = changes[0]
    if (first) return { reason: first.reason, detail: changes.map((c) => c.text).join('; '), changes }
    return { reason: 'timestamp-changed', detail: `the master's timestamp changed (${short(ts.content)} -> ${short(wanted.timestamp)})`, changes }
  }
  if (opts.force) return { reason: 'forced', detail: '--force', changes: none }
  if (opts.forceStop && wanted.state === 'started') return { reason: 'forced', detail: '--force-stop', changes: none }
  if (periodicity === 0) return { reason: 'every-run', detail: 'periodicity 0: processed on every run', changes: none }
  const ago = Math.max(0, Math.floor(opts.nowMs / 1000) - Math.floor(ts.mtimeMs / 1000))
  return { reason: 'periodicity-elapsed', detail: `last processed ${ago} s ago, periodicity ${periodicity} s`, changes: none }
}

interface Change {
  reason: PartitionReason
  text: string
}

/** The last record when it is of the instance the partition holds now (a partition freed and given again is new). */
function sameInstance(last: DeploymentRecord | undefined, now: DeploymentRecord | undefined): DeploymentRecord | undefined {
  return last && now && last.instance === now.instance ? last : undefined
}

/** What differs between the last record and what the master asks now (nothing without both). */
function recordChanges(last: DeploymentRecord | undefined, now: DeploymentRecord | undefined): Change[] {
  if (!last || !now) return []
  const out: Change[] = []
  if (last.state !== now.state) out.push({ reason: 'state-changed', text: `requested state ${last.state} -> ${escapeControls(now.state)}` })
  if (last.softwareRelease !== now.softwareRelease) out.push({ reason: 'software-release-changed', text: 'software release changed' })
  if (last.softwareType !== now.softwareType) out.push({ reason: 'software-type-changed', text: 'software type changed' })
  if (last.parameters !== now.parameters) out.push({ reason: 'parameters-changed', text: 'instance parameters changed' })
  if (last.shared !== now.shared) out.push({ reason: 'shared-instances-changed', text: 'shared instances changed' })
  return out
}

/** The action a processing is, by requested state; `start` when only the state changed from stopped. */
function processAction(state: string, forceStop: boolean, changes: Change[]): PartitionAction {
  if (state === 'started') {
    if (forceStop) return 'stop'
    return changes.length === 1 && changes[0]?.reason === 'state-changed' ? 'start' : 'deploy'
  }
  return state === 'stopped' ? 'stop' : 'destroy'
}

/** A timestamp for a message: escaped, and cut (the local one is a partition's file). */
function short(s: string): string {
  const e = escapeControls(s)
  return e.length > 40 ? `${e.slice(0, 40)}...` : e
}
