// `slapos node instance --converge [--max-passes N]`: normal runs of grid-instance.ts one after
// the other, until the instance trees of this node have settled, so that a parent reads what
// its children published in one call instead of over several cron minutes. Used by
// commands/node-instance.ts only. The decisions are pure (answerOf, answerChanges,
// partitionsToReprocess, stopAfterPass, nextAfterAnswer); convergePartitions runs the passes
// and asks the master.
//
//   pass N (a normal run: buildout, services, promises, reports) ──> exit status, summaries
//     │ a partition failed, offline .................................. stop: that status
//     │ nothing processed ............................................ stop: settled, 0
//     v
//   ask the master again, compare with the answer pass N worked from
//     │ the master cannot be reached (no answer, 503) ................ stop: 3 (other error: 1)
//     │ nothing that makes a partition of this node processed ........ stop: settled, 0
//     │                              (2 when promises failed in pass N)
//     │ N = --max-passes ............................................. stop: not settled, 1
//     v
//   pass N + 1, with the requesters of instances that published new connection parameters
//   processed again (an unchanged requester would be up to date and never read them)
//
// Failing promises do not stop the loop while the answer still changes: a parent's promise
// may wait for what its children have not published yet. The partitions whose promises failed
// are processed again by the next pass (no .timestamp was written for them).
import type { Ctx } from './context.ts'
import { ConnectionError, ServerError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import type { NodeRun } from './grid-common.ts'
import { processPartitions, type InstanceOptions, type InstancePass, type PartitionSummary } from './grid-instance.ts'
import { canonicalText, masterView } from './grid-plan.ts'
import { escapeControls } from './names.ts'
import type { ComputerPartition } from './slap-client.ts'

/** --max-passes when not given: a tree of three levels settles in about 5 passes. */
export const DEFAULT_MAX_PASSES = 10

/** What of the master's answer about one partition is compared between passes. */
export interface PartitionAnswer {
  state: string
  softwareReleaseUrl: string | null
  softwareType: string | undefined
  timestamp: string | undefined
  /** the instance's title: what its requester's transaction file names */
  title: string | undefined
  /** the connection parameters and the shared instances, each as its canonical encoding (grid-plan.ts canonicalText) */
  connection: string
  shared: string
}

/** What changed for one partition: the planner's inputs, or what other instances read. */
export type ChangeKind = 'listed' | 'unlisted' | 'state' | 'software release' | 'software type' | 'timestamp' | 'shared instances' | 'connection parameters'

export interface PartitionChange {
  id: string
  what: ChangeKind[]
}

/** How the loop goes on after a pass. */
export type Next =
  | { kind: 'stop'; code: number; settled: boolean; why: string }
  | { kind: 'pass'; reprocess: Set<string>; why: string }

/** The master's list of partitions, keyed by partition id, in the words compared between passes. */
export function answerOf(partitions: readonly ComputerPartition[]): Map<string, PartitionAnswer> {
  const out = new Map<string, PartitionAnswer>()
  for (const p of partitions) {
    const m = masterView(p)
    out.set(m.id, {
      state: m.state,
      softwareReleaseUrl: m.softwareReleaseUrl,
      softwareType: m.softwareType,
      timestamp: m.timestamp,
      title: m.title,
      connection: canonicalText(p._connection_dict ?? {}),
      shared: canonicalText(m.parameters.slave_instance_list ?? []),
    })
  }
  return out
}

/** Partitions whose answer differs between two passes, in the order of the later answer. */
export function answerChanges(before: ReadonlyMap<string, PartitionAnswer>, after: ReadonlyMap<string, PartitionAnswer>): PartitionChange[] {
  const changes: PartitionChange[] = []
  for (const [id, a] of after) {
    const b = before.get(id)
    if (!b) {
      changes.push({ id, what: ['listed'] })
      continue
    }
    const what: ChangeKind[] = []
    if (a.state !== b.state) what.push('state')
    if (a.softwareReleaseUrl !== b.softwareReleaseUrl) what.push('software release')
    if (a.softwareType !== b.softwareType) what.push('software type')
    if (a.timestamp !== b.timestamp) what.push('timestamp')
    if (a.shared !== b.shared) what.push('shared instances')
    if (a.connection !== b.connection) what.push('connection parameters')
    if (what.length) changes.push({ id, what })
  }
  for (const id of before.keys()) if (!after.has(id)) changes.push({ id, what: ['unlisted'] })
  return changes
}

/**
 * Partitions to process again although up to date: those that requested (their
 * `.slapos-request-transaction-<id>` of this call names the title) an instance of this node
 * whose connection parameters changed. Returns requester id -> titles of those instances.
 */
export function partitionsToReprocess(
  changes: readonly PartitionChange[],
  after: ReadonlyMap<string, PartitionAnswer>,
  requested: ReadonlyMap<string, ReadonlySet<string>>,
): Map<string, string[]> {
  const published = new Map<string, string>() // title -> partition id
  for (const c of changes) {
    const title = after.get(c.id)?.title
    if (c.what.includes('connection parameters') && title !== undefined) published.set(title, c.id)
  }
  const out = new Map<string, string[]>()
  for (const [requester, titles] of requested) {
    if (!after.has(requester)) continue
    const read = [...titles].filter((t) => published.has(t) && published.get(t) !== requester)
    if (read.length) out.set(requester, read.sort())
  }
  return out
}

/** Partitions a pass processed (buildout run or services stopped, successfully or not). */
export function processedIn(items: readonly PartitionSummary[]): PartitionSummary[] {
  return items.filter((s) => s.result === 'deployed' || s.result === 'stopped' || s.result === 'failed' || s.result === 'promise-failed')
}

/**
 * First look at a pass: a stop when a partition failed, the pass went offline (`result`
 * undefined: no summary) or processed nothing; undefined when the master must be asked
 * whether another pass is due (also after promise failures: see nextAfterAnswer).
 */
export function stopAfterPass(code: number, result: Pick<InstancePass, 'items'> | undefined): Extract<Next, { kind: 'stop' }> | undefined {
  if (!result) return { kind: 'stop', code, settled: false, why: `stopping: the master could not be reached (exit ${code})` }
  const failed = result.items.filter((s) => s.result === 'failed')
  if (failed.length) return { kind: 'stop', code, settled: false, why: `stopping: ${list(failed.map((s) => s.id))} failed (exit ${code})` }
  if (code !== EXIT.OK && code !== EXIT.PROMISE_FAIL) return { kind: 'stop', code, settled: false, why: `stopping (exit ${code})` }
  if (processedIn(result.items).length === 0) return { kind: 'stop', code: EXIT.OK, settled: true, why: 'nothing to do: settled' }
  return undefined
}

/** Partitions whose promises failed in a pass. */
export function promiseFailures(items: readonly PartitionSummary[]): string[] {
  return items.filter((s) => s.result === 'promise-failed').map((s) => s.id)
}

/**
 * After a pass that processed partitions, from what changed in the master's answer since the
 * answer the pass worked from, and the partitions to process again (partitionsToReprocess):
 * another pass, or a stop (settled: exit 0, or 2 when promises of the pass failed, which
 * nothing the master does will change; not settled at the --max-passes limit: exit 1).
 */
export function nextAfterAnswer(t: {
  pass: number
  maxPasses: number
  changes: readonly PartitionChange[]
  readers: ReadonlyMap<string, readonly string[]>
  /** partitions whose promises failed in this pass */
  promiseFailed?: readonly string[]
}): Next {
  // a change of connection parameters only makes their readers processed again
  const planned = t.changes.filter((c) => c.what.some((w) => w !== 'connection parameters'))
  const promises = t.promiseFailed ?? []
  if (planned.length === 0 && t.readers.size === 0) {
    if (promises.length) return { kind: 'stop', code: EXIT.PROMISE_FAIL, settled: true, why: `settled, but promises of ${list(promises)} failed (exit ${EXIT.PROMISE_FAIL})` }
    return { kind: 'stop', code: EXIT.OK, settled: true, why: 'settled: nothing the master changed asks for another pass' }
  }
  const reasons = [
    ...(planned.length ? [`the master changed ${list(planned.map((c) => `${c.id} (${c.what.join(', ')})`))}`] : []),
    ...[...t.readers].map(([id, titles]) => `${escapeControls(id)} reads what ${list(titles)} published`),
  ].join('; ')
  if (t.pass >= t.maxPasses) {
    return {
      kind: 'stop',
      code: EXIT.FAIL,
      settled: false,
      why:
        `stopping: --max-passes ${t.maxPasses} reached and the tree has not settled (${reasons}); ` +
        'an instance tree that never settles is a problem of its software release or of its requests: see what each pass processed (exit 1)',
    }
  }
  return { kind: 'pass', reprocess: new Set(t.readers.keys()), why: `${reasons}: pass ${t.pass + 1}` }
}

/** What `node instance --converge --json` prints: one document for the whole call. */
export interface ConvergeReport {
  exitCode: number
  durationMs: number
  settled: boolean
  passes: Array<{ pass: number; exitCode: number; processed: string[]; next: string; items: PartitionSummary[] }>
}

/**
 * The stop when the master cannot be asked again between passes: no answer or 503 is the
 * offline status of a run (3), any other error 1; the report is printed all the same.
 */
export function stopOnQueryError(e: unknown): Extract<Next, { kind: 'stop' }> {
  const text = escapeControls(e instanceof Error ? e.message : String(e))
  if (e instanceof ConnectionError || (e instanceof ServerError && e.status === 503)) {
    return { kind: 'stop', code: EXIT.OFFLINE_SUCCESS, settled: false, why: `stopping: the master cannot be reached to see whether the tree has settled (${text}); the next run goes on (exit ${EXIT.OFFLINE_SUCCESS})` }
  }
  return { kind: 'stop', code: EXIT.FAIL, settled: false, why: `stopping: the master's list of partitions cannot be read again (${text}) (exit ${EXIT.FAIL})` }
}

/**
 * Runs passes of processPartitions (the same pid file, managers and options; --force for the
 * first pass only) until stopAfterPass or nextAfterAnswer stops, logging one line per pass.
 * Returns the exit status.
 */
export async function convergePartitions(run: NodeRun, opts: InstanceOptions, maxPasses: number, ctx: Ctx): Promise<number> {
  const started = Date.now()
  const report: ConvergeReport = { exitCode: EXIT.OK, durationMs: 0, settled: false, passes: [] }
  // requester id -> titles it requested, from the transaction files of the partitions
  // processed during this call (the node deletes them at the next run of each partition)
  const requested = new Map<string, Set<string>>()
  let reprocess = new Set<string>()
  for (let pass = 1; ; pass++) {
    let result: InstancePass | undefined
    const code = await processPartitions(
      run,
      { ...opts, force: opts.force && pass === 1, json: false, reprocess, onPass: (r) => void (result = r) },
      ctx,
    )
    const done = result as InstancePass | undefined
    if (done) rememberRequests(done, requested)
    let next: Next | undefined = stopAfterPass(code, done)
    if (!next && done) {
      const before = answerOf(done.partitions)
      let listed: ComputerPartition[] | undefined
      try {
        listed = (await run.client.getFullComputerInformation(run.cfg.computerId))._computer_partition_list
      } catch (e) {
        next = stopOnQueryError(e)
      }
      if (listed) {
        const after = answerOf(listed)
        const changes = answerChanges(before, after)
        next = nextAfterAnswer({ pass, maxPasses, changes, readers: partitionsToReprocess(changes, after, requested), promiseFailed: promiseFailures(done.items) })
      }
    }
    next ??= { kind: 'stop', code, settled: false, why: `stopping (exit ${code})` }
    const processed = done ? processedIn(done.items).map((s) => s.id) : []
    const line = `converge pass ${pass}: ${processed.length ? `processed ${processed.length} partition${processed.length === 1 ? '' : 's'} (${list(processed)}); ` : ''}${next.why}`
    if (next.kind === 'stop' && next.code !== EXIT.OK) run.log.error(line)
    else run.log.info(line)
    report.passes.push({ pass, exitCode: code, processed, next: next.why, items: done?.items ?? [] })
    if (next.kind === 'stop') {
      report.exitCode = next.code
      report.settled = next.settled
      break
    }
    reprocess = next.reprocess
  }
  report.durationMs = Date.now() - started
  if (opts.json) ctx.io.out(JSON.stringify(report, null, 2) + '\n')
  return report.exitCode
}

// --- internal ---

/** `a, b, c` (at most 5, then `and N more`), each escaped for a log line. */
function list(xs: readonly string[]): string {
  const shown = xs.slice(0, 5).map(escapeControls).join(', ')
  return xs.length > 5 ? `${shown} and ${xs.length - 5} more` : shown
}

/**
 * The titles each partition processed in this pass requested: the lines of its
 * `.slapos-request-transaction-<id>` as the pass read and sent them (InstancePass.requested;
 * the partition wrote them: only compared with titles). A partition processed without one
 * requests nothing any more.
 */
function rememberRequests(pass: Pick<InstancePass, 'items' | 'requested'>, requested: Map<string, Set<string>>): void {
  for (const s of pass.items) {
    if (s.result !== 'deployed' && s.result !== 'stopped') continue
    const titles = new Set(pass.requested.get(s.id) ?? [])
    if (titles.size) requested.set(s.id, titles)
    else requested.delete(s.id)
  }
}
