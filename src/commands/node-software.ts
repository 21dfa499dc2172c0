// slapos node software (old name slapgrid-sr): install and remove the software releases the
// master supplies to this node. The work is in grid-software.ts; this file maps the options,
// prints the end-of-run summary (stderr) or the JSON results (stdout), and returns 0 or 1.
import type { CommandModule } from '../command.ts'
import { UsageError } from '../errors.ts'
import { startNodeRun, nodeCommonOptions } from '../grid-common.ts'
import { loadRunManagers } from '../manager-registry.ts'
import { EXIT } from '../exit-codes.ts'
import { planText } from '../grid-plan.ts'
import { errorLine, planSoftwareReleases, processSoftwareReleases, type SoftwareResult } from '../grid-software.ts'

const nodeSoftware: CommandModule = {
  cfg: 'node',
  description:
    'Install with buildout every software release the master supplies to this node (in <software_root>/<md5 of the URL>), ' +
    'remove the ones it marks destroyed, and report each result to the master. Installed software releases ' +
    '(with a .completed file) are left alone unless --force. With a binary cache configured ([networkcache] ' +
    'download-binary-*), a signed archive built for this system is installed instead of building; with ' +
    'upload-binary-*, what was built is published. With --dry-run, prints what a run would do to each software ' +
    'release and why, changing nothing. ' +
    'Exit status: 0 all done, 1 at least one software release failed (or a configuration error), 5 not root, ' +
    '10 another node software run holds the pid file.',
  options: (y) =>
    nodeCommonOptions(y)
      .option('force', { type: 'boolean', describe: 'rebuild installed software releases too, and let buildout look for newer versions (no -N)' })
      .option('all', { type: 'boolean', describe: 'same as --force (old name)' })
      .option('develop', { type: 'boolean', hidden: true, describe: 'same as --force (0.35.1 name)' })
      .option('only-sr', {
        alias: ['only', 'only_sr'],
        type: 'string',
        describe: 'only these software releases: comma-separated URLs or md5 hashes of URLs',
      })
      .option('buildout-debug', { type: 'boolean', describe: 'run buildout with -D (debugger on failure) on this terminal' })
      .option('garbage-collect', { type: 'boolean', describe: 'remove software directories of releases no longer supplied' })
      .option('json', { type: 'boolean', describe: 'print the results as JSON on stdout' })
      .option('dry-run', {
        alias: 'n',
        type: 'boolean',
        describe: 'print what a run would do to each software release and why (install, remove, nothing), change nothing: only reads, no pid file',
      })
      .conflicts('all', 'only-sr')
      .conflicts('develop', 'only-sr'),
  async run(args, ctx) {
    const onlySr = onlyList(args.onlySr)
    const force = args.force === true || args.all === true || args.develop === true
    if (args.dryRun === true) {
      const run = await startNodeRun('software', args, ctx, { dryRun: true })
      const plan = await planSoftwareReleases(run, { force, onlySr, garbageCollect: args.garbageCollect === true })
      ctx.io.out(args.json === true ? JSON.stringify(plan, null, 2) + '\n' : planText(plan.items, ['software release', 'software releases']))
      return EXIT.OK
    }
    const run = await startNodeRun('software', args, ctx)
    await loadRunManagers(run, ctx.runner)
    // like the original, an interruption is reported to the master for the release being
    // built, then the run stops (pid file removed); a second Ctrl-C stops at once
    const interrupted = new AbortController()
    const onSignal = (sig: NodeJS.Signals) => {
      run.log.warning(`${sig} received: stopping buildout, reporting, then exiting (again to exit at once)`)
      interrupted.abort(`${sig} received`)
    }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    const started = Date.now()
    try {
      const { exitCode, results } = await processSoftwareReleases(
        run,
        {
          force,
          onlySr,
          buildoutDebug: args.buildoutDebug === true,
          garbageCollect: args.garbageCollect === true,
          abort: interrupted.signal,
        },
        ctx,
      )
      report(results, (l) => run.log.info(l), (l) => run.log.error(l))
      if (args.json === true) ctx.io.out(JSON.stringify(jsonSummary(exitCode, Date.now() - started, results), null, 2) + '\n')
      return exitCode
    } finally {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      run.release()
    }
  },
}
export default nodeSoftware

// --- internal ---

function onlyList(v: unknown): string[] | undefined {
  if (v === undefined) return undefined
  const values = (Array.isArray(v) ? v : [v]).map(String)
  const list = values.flatMap((s) => s.split(',')).filter((s) => s !== '')
  if (!list.length) throw new UsageError('--only-sr needs at least one software release URL or md5 hash')
  return list
}

/** The end-of-run summary: one line per software release, then one line per failure. */
function report(results: SoftwareResult[], info: (l: string) => void, error: (l: string) => void): void {
  const shown = results.filter((r) => r.result !== 'skipped')
  if (!shown.length) {
    info(results.length ? 'No software release selected by --only-sr' : 'No software release to process')
    return
  }
  info('Software releases:')
  const width = Math.max(...shown.map((r) => r.result.length))
  for (const r of shown) info(`  ${r.hash}  ${r.result.padEnd(width)}  ${seconds(r.durationMs).padStart(7)}  ${r.url}`)
  const failed = shown.filter((r) => r.result === 'failed')
  for (const r of failed) error(`${r.url} failed: ${errorLine(r.error ?? '')}`)
}

/**
 * `--json`: the shape of `node instance --json` (exit code, duration, one item per software
 * release with its md5 as id; `message` is what the master was told of a failure).
 */
function jsonSummary(exitCode: number, durationMs: number, results: SoftwareResult[]) {
  return {
    exitCode,
    durationMs,
    items: results.map((r) => ({ id: r.hash, url: r.url, state: r.state, result: r.result, durationMs: r.durationMs, ...(r.error !== undefined ? { message: r.error } : {}) })),
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}
