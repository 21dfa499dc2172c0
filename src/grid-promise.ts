// `slapos node promise` (grid.md §7.6, node-extras.md §4.10): check the promises of the started
// partitions and nothing else: no buildout, no supervisord, nothing sent to the master (which
// is only read for the list of partitions). Plugins (etc/plugin/*.py) run as during node
// instance, through the release's runner, and so do the legacy executables (etc/promise/*).
// Used by commands/node-promise.ts; the promises themselves run in promise.ts.
import { statSync } from 'node:fs'
import { join } from 'node:path'
import type { Ctx } from './context.ts'
import { SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { md5hex, ownerOf, refuseRoot, type NodeRun } from './grid-common.ts'
import { unknownPartitionsMessage } from './grid-plan.ts'
import { escapeControls, hasControl, idProblem } from './names.ts'
import { firstFailure, promiseFailureMessage, runPromises, type PromiseResult } from './promise.ts'

export interface PromiseCheck {
  id: string
  softwareType?: string | undefined
  /** undefined when every promise passed (or there is none) */
  failure?: string | undefined
  /** one per promise run (plugins and legacy executables) */
  promises: PromiseResult[]
}

/**
 * Runs the promises of every started partition (or of those in `only`), test mode, forced.
 * Exit status 0 when all pass, 2 when any partition has a failing promise or could not be
 * checked. A master that cannot be reached, or an unknown id in `only`, throws (exit 1).
 */
export async function checkPromises(run: NodeRun, only: ReadonlySet<string> | undefined, ctx: Ctx): Promise<{ exitCode: number; checks: PromiseCheck[] }> {
  const { cfg, client, log } = run
  log.info('Processing promises...')
  const partitions = (await client.getFullComputerInformation(cfg.computerId))._computer_partition_list
  const unknown = unknownPartitionsMessage(
    partitions.map((p) => p._partition_id ?? ''),
    only,
  )
  if (unknown) throw new SlapError(unknown, { code: 'E_UNKNOWN_PARTITION', hint: 'give ids the master lists for this computer (slappart0, ...)' })
  const checks: PromiseCheck[] = []
  for (const p of partitions) {
    const id = p._partition_id ?? ''
    if (!id || (only && !only.has(id))) continue
    if (p._requested_state !== 'started') continue
    const type = p._parameter_dict?.slap_software_type
    const softwareType = typeof type === 'string' && !hasControl(type) ? type : undefined
    const bad = idProblem('partition id', id)
    if (bad) {
      log.error(`refused: ${bad}`)
      checks.push({ id: escapeControls(id), failure: bad, promises: [] })
      continue
    }
    const doc = p._software_release_document
    const url = typeof doc === 'string' ? doc : doc?._software_release
    const softwarePath = typeof url === 'string' && !hasControl(url) ? join(cfg.softwareRoot, md5hex(url)) : undefined
    const path = join(cfg.instanceRoot, id)
    const plog = log.child(id)
    log.info(`Processing Promises for Computer Partition ${id}.`)
    log.info(`  Software URL: ${typeof url === 'string' ? escapeControls(url) : '(none)'}`)
    log.info(`  Software path: ${softwarePath ?? '(none)'}`)
    log.info(`  Instance path: ${path}`)
    try {
      if (!statSync(path, { throwIfNoEntry: false })?.isDirectory()) throw new SlapError(`Partition directory ${path} does not exist.`)
      const repo = cfg.certificateRepositoryPath
      const results = await runPromises({
        path,
        id,
        owner: ownerOf(path),
        timeoutSec: cfg.promiseTimeout,
        runner: ctx.runner,
        log: plog,
        rootCheck: refuseRoot(cfg),
        now: ctx.now,
        softwarePath,
        masterUrl: cfg.masterUrl,
        computerId: cfg.computerId,
        certFile: repo ? join(repo, `${id}.crt`) : undefined,
        keyFile: repo ? join(repo, `${id}.key`) : undefined,
      })
      const failed = firstFailure(results)
      checks.push({ id, softwareType, failure: failed ? promiseFailureMessage(failed) : undefined, promises: results })
    } catch (err) {
      // like the original, anything raised while checking a partition counts as a promise failure
      const message = err instanceof Error ? err.message : String(err)
      plog.error(message)
      checks.push({ id, softwareType, failure: message, promises: [] })
    }
  }
  const failing = checks.filter((c) => c.failure)
  if (failing.length) {
    log.error('Finished computer partitions.')
    for (const c of failing) log.error(`  ${c.id}[${c.softwareType ?? '(not ready)'}]: ${c.failure}`)
  }
  return { exitCode: failing.length ? EXIT.PROMISE_FAIL : EXIT.OK, checks }
}

/** The table of `node promise`: one line per promise (a partition without any: one line). */
export function promiseTable(checks: PromiseCheck[]): string {
  const head = ['partition', 'promise', 'result', 'duration', 'message']
  const rows: string[][] = []
  for (const c of checks) {
    if (c.promises.length === 0) rows.push([c.id, '-', c.failure ? 'failed' : 'none', '', firstLine(c.failure ?? '')])
    for (const r of c.promises) rows.push([c.id, r.name, r.failed ? 'failed' : 'ok', `${(r.durationMs / 1000).toFixed(2)} s`, firstLine(r.message)])
  }
  if (rows.length === 0) return 'No started partition.\n'
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) => cells.map((x, i) => (i === cells.length - 1 ? x : x.padEnd(widths[i] ?? 0))).join('  ').trimEnd()
  return [line(head), ...rows.map(line)].join('\n') + '\n'
}

/** `--json`: the shape of node software|instance --json, one item per partition with its promises. */
export function promiseJson(exitCode: number, durationMs: number, checks: PromiseCheck[]) {
  return {
    exitCode,
    durationMs,
    items: checks.map((c) => ({
      id: c.id,
      softwareType: c.softwareType,
      result: c.failure ? 'failed' : 'ok',
      ...(c.failure ? { message: c.failure } : {}),
      promises: c.promises.map((r) => ({ name: r.name, title: r.title, result: r.failed ? 'failed' : 'ok', message: r.message, durationMs: r.durationMs })),
    })),
  }
}

/** First line, control characters escaped, at most 100 characters: a promise's message is the partition user's text. */
function firstLine(text: string): string {
  const line = escapeControls(text.trim().split('\n')[0] ?? '')
  return line.length > 100 ? `${line.slice(0, 99)}…` : line
}
