// `slapos node promise` (grid.md §7.6): check the promises of the started partitions and
// nothing else: no buildout, no supervisord, nothing sent to the master (which is only read
// for the list of partitions). Used by commands/node-promise.ts; the promises themselves run
// in promise.ts, as during node instance.
import { statSync } from 'node:fs'
import { join } from 'node:path'
import type { Ctx } from './context.ts'
import { SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { ownerOf, refuseRoot, type NodeRun } from './grid-common.ts'
import { unknownPartitionsMessage } from './grid-plan.ts'
import { escapeControls, idProblem } from './names.ts'
import { firstFailure, promiseFailureMessage, runPromises } from './promise.ts'

export interface PromiseCheck {
  id: string
  /** undefined when every promise passed (or there is none) */
  failure?: string | undefined
}

/**
 * Runs the promises of every started partition (or of those in `only`). Exit status 0 when
 * all pass, 2 when any partition has a failing promise or could not be checked. A master
 * that cannot be reached, or an unknown id in `only`, throws (exit 1).
 */
export async function checkPromises(run: NodeRun, only: ReadonlySet<string> | undefined, ctx: Ctx): Promise<{ exitCode: number; checks: PromiseCheck[] }> {
  const { cfg, client, log } = run
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
    const bad = idProblem('partition id', id)
    if (bad) {
      log.error(`refused: ${bad}`)
      checks.push({ id: escapeControls(id), failure: bad })
      continue
    }
    const path = join(cfg.instanceRoot, id)
    const plog = log.child(id)
    try {
      if (!statSync(path, { throwIfNoEntry: false })?.isDirectory()) throw new SlapError(`Partition directory ${path} does not exist.`)
      const results = await runPromises({ path, id, owner: ownerOf(path), timeoutSec: cfg.promiseTimeout, runner: ctx.runner, log: plog, rootCheck: refuseRoot(cfg), now: ctx.now })
      const failed = firstFailure(results)
      checks.push({ id, failure: failed ? promiseFailureMessage(failed) : undefined })
    } catch (err) {
      // like the original, anything raised while checking a partition counts as a promise failure
      const message = err instanceof Error ? err.message : String(err)
      plog.error(message)
      checks.push({ id, failure: message })
    }
  }
  const failing = checks.filter((c) => c.failure)
  if (failing.length) {
    log.error('Error with promises for the following partitions:')
    for (const c of failing) log.error(`  ${c.id}: ${c.failure}`)
  }
  return { exitCode: failing.length ? EXIT.PROMISE_FAIL : EXIT.OK, checks }
}
