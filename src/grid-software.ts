// slapos node software: install the software releases the master supplies to this node with
// buildout, remove the destroyed ones, tell the master about each (spec grid.md §3). Called
// by commands/node-software.ts after startNodeRun. What to do with each release is decided by
// grid-plan.ts planSoftwareRelease, which `--dry-run` (planSoftwareReleases) prints instead.
//
// One software release, as the master asks (state) and as the disk says (.completed):
//
//   available, no .completed (or --force)
//       building ──> binary cache ──ok─────────────> available ──> write .completed
//                     (directory absent)                                   result: installed
//                        └─not there──> buildout ──ok──> upload ──> available ──> .completed
//                        └─forced URL──> softwareReleaseError               result: failed
//                                           └─fails──> softwareReleaseError result: failed
//   available, .completed ──> nothing, no master call at all               result: up-to-date
//   destroyed ──> remove <software_root>/<md5>/ ──> destroyed              result: destroyed
//   not in --only-sr ──> nothing                                           result: skipped
//
// Failures stay per software release (the original's "bulletproof" loop): one that fails is
// reported and counted, the next one is still processed. The binary cache is networkcache.ts.
// Differences listed in docs/compatibility.md (grid rows 33, 45): buildout.cfg has no git
// revision comment, and there are no managers.
import { chmodSync, existsSync, lstatSync, readdirSync, rmSync, statfsSync, statSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { inBeneath, openBeneath } from './beneath.ts'
import { BuildoutError, buildoutFailure, runBuildout } from './buildout.ts'
import type { Ctx } from './context.ts'
import { NotFoundError, SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { md5hex, ownerOf, refuseRoot, type NodeRun, type Owner } from './grid-common.ts'
import { garbageStep, planSoftwareRelease, type SoftwareStep } from './grid-plan.ts'
import type { Logger } from './log.ts'
import { writeFirewallPrograms } from './firewall.ts'
import { firewallOptions, readUserFile, runHook } from './managers.ts'
import { escapeControls, quote } from './names.ts'
import { downloadSoftware, uploadSoftware } from './networkcache.ts'
import type { SoftwareRelease } from './slap-client.ts'
import { createInstanceRootStructure, watchdogCommand, writeSupervisordConf } from './supervisor.ts'

export interface SoftwareOptions {
  /** rebuild completed software releases, and run buildout without -N (--force, --all) */
  force: boolean
  /** URLs or md5 hashes (--only-sr); undefined or empty: every software release */
  onlySr?: string[] | undefined
  /** buildout -D, on our terminal */
  buildoutDebug: boolean
  /** remove md5-named directories of software releases no longer supplied */
  garbageCollect: boolean
  /** Ctrl-C / SIGTERM: buildout is stopped, its failure reported, and no further release is processed */
  abort?: AbortSignal
}

export type SoftwareOutcome = 'installed' | 'up-to-date' | 'destroyed' | 'failed' | 'skipped'

export interface SoftwareResult {
  url: string
  hash: string
  /** what the master asks: available or destroyed */
  state: string
  result: SoftwareOutcome
  durationMs: number
  /** the text sent to the master with softwareReleaseError */
  error?: string
}

export async function processSoftwareReleases(run: NodeRun, opts: SoftwareOptions, ctx: Ctx): Promise<{ exitCode: number; results: SoftwareResult[] }> {
  const { cfg, client, log } = run
  checkSoftwareRoot(cfg.softwareRoot)
  createInstanceRootStructure(cfg.instanceRoot)
  writeSupervisordConf(cfg.instanceRoot, watchdogCommand(cfg))
  writeFirewallPrograms(cfg.instanceRoot, firewallOptions(cfg.file))

  const releases = softwareReleasesOf(cfg.softwareRoot, (await client.getFullComputerInformation(cfg.computerId))._software_release_list, opts.onlySr)
  const results: SoftwareResult[] = []
  for (const release of releases.list) {
    if (opts.abort?.aborted) break
    const { url, hash, path, state } = release
    const started = Date.now()
    const done = (result: SoftwareOutcome, error?: string) => {
      const r: SoftwareResult = { url, hash, state, result, durationMs: Date.now() - started }
      if (error !== undefined) r.error = error
      results.push(r)
    }
    const srLog = log.child(hash)
    const managed = { url, path, log: srLog }
    let outcome: SoftwareOutcome | undefined
    try {
      // node-extras §1.2: every release of the list, selected or not
      if (run.managers.length) await runHook(run.managers, 'software', managed)
      const step = softwareStep(release, opts.force)
      switch (step.action) {
        case 'skip':
          outcome = 'skipped'
          break
        case 'nothing':
          srLog.debug(`${url} is already installed`)
          outcome = 'up-to-date'
          break
        case 'install':
          srLog.info(`Installing software release ${url} (${step.reason}: ${step.detail})`)
          try {
            await client.buildingSoftwareRelease(url, cfg.computerId)
          } catch (e) {
            if (!(e instanceof NotFoundError)) throw e
          }
          await installSoftware(run, { url, path, force: opts.force, debug: opts.buildoutDebug, log: srLog, ctx, abort: opts.abort })
          await client.availableSoftwareRelease(url, cfg.computerId)
          // after the report, like HEAD: a lost report means the install is retried next run
          if (!inBeneath(cfg.softwareRoot, [hash], undefined, (d) => (d.write('.completed', asctime(ctx.now()), 0o644), true))) {
            throw new SlapError(`${path} is no longer a directory: the release is installed again next run`)
          }
          srLog.info(`Software release ${url} installed`)
          outcome = 'installed'
          break
        case 'remove':
          if (existsSync(path)) {
            srLog.info(`Removing software release ${url}`)
            await removeSoftware(path, url, ctx)
          }
          await client.destroyedSoftwareRelease(url, cfg.computerId)
          outcome = 'destroyed'
          break
        case 'error':
          // the URL becomes the `extends =` line of buildout.cfg: one line, nothing else
          if (step.reason === 'refused') throw new SlapError(`the software release URL has control characters: ${quote(url)}`, { code: 'E_SOFTWARE_URL' })
          throw new SlapError(`Unsupported requested state for software release ${url}: ${state}`)
      }
      if (run.managers.length) await runHook(run.managers, 'softwareTearDown', managed)
      done(outcome)
    } catch (err) {
      const message = err instanceof BuildoutError || err instanceof SlapError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)
      srLog.error(`Failed to process software release ${escapeControls(url)}`)
      try {
        await client.softwareReleaseError(url, cfg.computerId, message)
      } catch (e) {
        srLog.error(`Could not report the error to the master: ${e instanceof Error ? e.message : String(e)}`)
      }
      done('failed', message)
    }
  }

  if (opts.garbageCollect && !opts.abort?.aborted) {
    for (const p of await garbageCollect(cfg.softwareRoot, releases.inUse, ctx)) log.info(`Removed unused software directory ${p}`)
  }
  const failed = results.some((r) => r.result === 'failed') || opts.abort?.aborted === true
  return { exitCode: failed ? EXIT.FAIL : EXIT.OK, results }
}

/** §2.1 (HEAD): the buildout.cfg written once in a new software directory. */
export function softwareBuildoutCfg(url: string, sharedPartList: string[], buildTimePartList: string[]): string {
  const list = (l: string[]) => l.join('\n  ')
  return [`[buildout]`, `extends = ${url}`, `shared-part-list = ${list(sharedPartList)}`, `build-time-part-list = ${list(buildTimePartList)}`, '']
    .map((l) => l.trimEnd())
    .join('\n')
}

/** §3.4 step 5 and 8: the arguments after the buildout executable. */
export function softwareBuildoutArgs(path: string, settings: Map<string, string>, force: boolean, debug: boolean): string[] {
  const args = debug ? ['-D', '-U'] : ['-U']
  args.push(`buildout:extends-cache=${join(path, 'extends-cache')}`, `buildout:directory=${path}`)
  const get = (k: string) => (settings.get(k) ?? settings.get(k.replaceAll('-', '_')))?.trim() || undefined
  if (get('signature-private-key-file') || get('upload-cache-url') || get('upload-dir-url')) args.push('buildout:networkcache-section=networkcache')
  for (const k of NETWORKCACHE_OPTIONS) {
    const v = get(k)
    if (v) args.push(`networkcache:${k}=${v}`)
  }
  if (!force) args.push('-N')
  args.push('-c', join(path, 'buildout.cfg'))
  return args
}

/** One line for the operator out of a failure text: the last error line buildout printed. */
export function errorLine(message: string): string {
  const lines = message.split('\n').map((l) => l.trim()).filter(Boolean)
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i] ?? ''
    if (/^([\w.]*(Error|Exception)|Error)\b[^:]*: /.test(l)) return l
  }
  return lines[lines.length - 1] ?? message
}

/** §3.6: removes a software directory, read-only entries included. */
export async function removeSoftware(path: string, url: string, ctx: Ctx): Promise<void> {
  try {
    await removeTree(path, ctx)
  } catch (e) {
    throw new SlapError(`I/O error while removing software (${url}): ${e instanceof Error ? e.message : String(e)}`)
  }
}

/** §3.1 step 4: md5-named directories holding a buildout.cfg that are not in use. Returns what was removed. */
export async function garbageCollect(softwareRoot: string, inUse: Set<string>, ctx: Ctx): Promise<string[]> {
  const removed: string[] = []
  for (const p of garbageDirectories(softwareRoot, inUse)) {
    await removeTree(p, ctx)
    removed.push(p)
  }
  return removed
}

/** What garbageCollect removes (reads only). */
export function garbageDirectories(softwareRoot: string, inUse: Set<string>): string[] {
  return readdirSync(softwareRoot)
    .filter((name) => /^[0-9a-f]{32}$/.test(name))
    .map((name) => join(softwareRoot, name))
    .filter((p) => !inUse.has(p) && isDirectory(p) && existsSync(join(p, 'buildout.cfg')))
}

/** What `node software --dry-run --json` prints. */
export interface SoftwarePlan {
  dryRun: true
  items: SoftwareStep[]
}

/**
 * `node software --dry-run`: the decisions of processSoftwareReleases (grid-plan.ts
 * planSoftwareRelease on the same reading of the disk), and with --garbage-collect the
 * directories it would remove. Reads only: the master is asked the list, nothing is written,
 * no manager hook runs.
 */
export async function planSoftwareReleases(run: Pick<NodeRun, 'cfg' | 'client'>, opts: Pick<SoftwareOptions, 'force' | 'onlySr' | 'garbageCollect'>): Promise<SoftwarePlan> {
  const { cfg, client } = run
  checkSoftwareRoot(cfg.softwareRoot)
  const releases = softwareReleasesOf(cfg.softwareRoot, (await client.getFullComputerInformation(cfg.computerId))._software_release_list, opts.onlySr)
  const items = releases.list.map((r) => softwareStep(r, opts.force))
  // a destroyed release's directory is gone by then: only what is left is garbage
  const removed = new Set(items.filter((s) => s.action === 'remove').map((s) => s.id))
  if (opts.garbageCollect) for (const p of garbageDirectories(cfg.softwareRoot, releases.inUse)) if (!removed.has(basename(p))) items.push(garbageStep(basename(p)))
  return { dryRun: true, items }
}

/** One software release of the master's list, where it goes on this node, and whether --only-sr names it. */
interface Release {
  url: string
  /** md5 of the URL: the directory name */
  hash: string
  /** <software_root>/<hash> */
  path: string
  /** what the master asks: available (when it says nothing) or destroyed */
  state: string
  selected: boolean
}

/**
 * The master's list in the words of a run and of a dry run alike, and the directories in use
 * (of the releases supplied as available: what --garbage-collect keeps).
 */
function softwareReleasesOf(softwareRoot: string, list: readonly SoftwareRelease[], onlySr: readonly string[] | undefined): { list: Release[]; inUse: Set<string> } {
  const filter = onlySr?.length ? new Set(onlySr) : undefined
  const releases = list.map((sr): Release => {
    const url = sr._software_release
    const hash = md5hex(url)
    return { url, hash, path: join(softwareRoot, hash), state: sr._requested_state ?? 'available', selected: !filter || filter.has(url) || filter.has(hash) }
  })
  return { list: releases, inUse: new Set(releases.filter((r) => r.state === 'available').map((r) => r.path)) }
}

/** The decision about one release (grid-plan.ts planSoftwareRelease) from its directory now. */
function softwareStep(r: Release, force: boolean): SoftwareStep {
  return planSoftwareRelease({ url: r.url, hash: r.hash, state: r.state }, readSoftware(r.path), { force, selected: r.selected })
}

function checkSoftwareRoot(softwareRoot: string): void {
  if (!isDirectory(softwareRoot)) {
    throw new SlapError(`${softwareRoot} does not exist.`, { code: 'E_NO_SOFTWARE_ROOT', hint: 'create software_root (node format does) or fix it in the configuration' })
  }
}

// --- internal ---

const NETWORKCACHE_OPTIONS = [
  'signature-private-key-file',
  'upload-cache-url',
  'upload-dir-url',
  'shacache-ca-file',
  'shacache-cert-file',
  'shacache-key-file',
  'shadir-ca-file',
  'shadir-cert-file',
  'shadir-key-file',
] as const

interface InstallJob {
  url: string
  path: string
  force: boolean
  debug: boolean
  log: Logger
  ctx: Ctx
  abort?: AbortSignal | undefined
}

/**
 * §3.2: the binary cache when the directory is absent, else (unless the URL must come from
 * the cache) buildout, then the upload of what was built.
 */
async function installSoftware(run: NodeRun, job: InstallJob): Promise<void> {
  const { cfg } = run
  const { path, url } = job
  const nc = cfg.networkcache
  checkFreeSpace(path, run.settings.get('software_min_free_space') ?? '1000M')
  const forced = nc.forceUrlList.find((p) => url.startsWith(p))
  if (forced !== undefined) job.log.debug(`Binary cache forced for '${url}' because of match '${forced}'`)
  const cacheJob = { cfg: nc, url, hash: basename(path), softwareRoot: cfg.softwareRoot, runner: job.ctx.runner, env: job.ctx.env, log: job.log }
  if (!existsSync(path) && (await downloadSoftware(cacheJob))) return
  if (forced !== undefined) {
    const message = existsSync(path)
      ? `Binary cache forced for '${url}', but directory ${path} already exists, will retry again`
      : `Binary cache forced for '${url}', but failed to download, will retry again`
    job.log.error(message)
    throw new SlapError(message, { code: 'E_BINARY_CACHE_FORCED' })
  }
  await buildSoftware(run, job)
  if (!nc.uploadBinaryCacheUrl || !nc.uploadBinaryDirUrl || existsSync(join(path, '.shared'))) return
  if (nc.uploadBlacklist.some((p) => url.startsWith(p))) {
    job.log.info("Can't upload to binary cache: Software Release URL is blacklisted.")
    return
  }
  await uploadSoftware({ ...cacheJob, abort: job.abort })
}

/** §3.4: directories, .netrc, buildout.cfg, then buildout as the owner. */
async function buildSoftware(run: NodeRun, job: InstallJob): Promise<void> {
  const { cfg } = run
  const { path } = job
  const owner = ownerOf(cfg.softwareRoot)
  const own = process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {}
  // the software user owns the software root and all in it: nothing there is reached through a
  // link (beneath.ts), nor chowned, written or removed through one (with `make`, always a directory)
  const dir = openBeneath(cfg.softwareRoot, [basename(path)], { ...own, mode: 0o755 })!
  let builder: Owner
  try {
    // the software user's credentials for private downloads (HEAD), read as that user's file:
    // never through a link, nor a FIFO, nor another name of someone else's file, at most 1 MiB
    // (a file with one name: a hard link made there to someone else's file has two)
    const netrc = readUserFile(join(owner.home, '.netrc'), 1 << 20, (st) => (st.nlink !== 1 ? 'a file with other names' : undefined))
    if (netrc.kind === 'ok') dir.write('.netrc', netrc.bytes, 0o600, own)
    else {
      if (netrc.kind === 'refused') job.log.warning(`${join(owner.home, '.netrc')} is ${netrc.why}: not copied`)
      dir.remove('.netrc')
    }
    dir.sub('extends-cache', { ...own, mode: 0o755 })?.close()
    if (!lstatSync(dir.at('buildout.cfg'), { throwIfNoEntry: false })) dir.write('buildout.cfg', softwareBuildoutCfg(job.url, cfg.sharedPartList, cfg.buildTimePartList), 0o644, own)
    // buildout runs as the owner of the directory that was opened, not of what the name leads to now
    builder = ownerOf(dir.proc)
    // an owner without a passwd entry gets the directory as home: its real name, not the descriptor's
    if (builder.home === dir.proc) builder.home = path
  } finally {
    dir.close()
  }
  // a Software Release that bootstrapped its own buildout uses it, as the original
  const local = join(path, 'bin', 'buildout')
  const binary = existsSync(local) ? local : cfg.buildout
  const args = softwareBuildoutArgs(path, run.settings, job.force, job.debug)
  job.log.info(`Running ${binary} ${args.join(' ')}`)
  const res = await runBuildout({
    binary,
    args,
    cwd: path,
    owner: builder,
    home: path,
    runner: job.ctx.runner,
    rootCheck: refuseRoot(cfg),
    baseEnv: job.ctx.env,
    interactive: job.debug,
    abort: job.abort,
    onLine: (line) => job.log.info(line),
  })
  if (!res.ok) throw new BuildoutError(buildoutFailure(path, res.output))
}

/** A size of `software_min_free_space` (HEAD) in bytes: 1000M, 2G, 512KB (powers of 1024), or bytes; undefined when it is not one. Pure. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$/i.exec(text)
  return m ? Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase()) : undefined
}

/** Bytes as 512B, 1.5K, 12.0G (powers of 1024), the units software_min_free_space is written in. Pure. */
export function humanSize(n: number): string {
  const units = ['B', 'K', 'M', 'G', 'T']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 ? 0 : 1)}${units[i]}`
}

/** Refuses to build below `software_min_free_space` (HEAD) free where `path` goes. */
function checkFreeSpace(path: string, wanted: string): void {
  const need = parseSize(wanted)
  if (need === undefined) throw new SlapError(`software_min_free_space = ${wanted} is not a size`, { code: 'E_CONFIG', hint: 'use e.g. 1000M or 2G' })
  let p = path
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p)
  const fs = statfsSync(p)
  const free = fs.bavail * fs.bsize
  if (free < need) {
    throw new SlapError(
      `Not enough free space in ${p}: ${humanSize(free)} available, software_min_free_space asks for ${wanted.trim()}`,
      { code: 'E_NO_SPACE' },
    )
  }
}

/**
 * Removes a directory of the software root and everything in it. As root this is GNU `rm -rf
 * --one-file-system`, which walks the tree with openat/unlinkat and never follows a link, so
 * the software user (who owns the tree, and whose processes may still run) cannot make root
 * delete anything outside by swapping a directory for a link meanwhile; a link at `path`
 * itself is removed, not followed. Without root we are that user already: in-process, and
 * read-only directories are made writable first.
 */
async function removeTree(path: string, ctx: Ctx): Promise<void> {
  if (process.getuid?.() === 0) {
    const r = await ctx.runner.run(['rm', '-rf', '--one-file-system', '--', path], { env: { PATH: ctx.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } })
    if (r.code !== 0 || lstatSync(path, { throwIfNoEntry: false })) throw new Error(`rm could not remove ${path}: ${r.stderr.trim().split('\n').slice(-3).join('; ') || `exit ${r.code}`}`)
    return
  }
  try {
    rmSync(path, { recursive: true, force: true })
    return
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code !== 'EACCES' && code !== 'EPERM') throw e
  }
  makeWritable(path)
  rmSync(path, { recursive: true, force: true })
}

function makeWritable(p: string): void {
  const st = lstatSync(p)
  if (!st.isDirectory()) return
  chmodSync(p, (st.mode & 0o7777) | 0o700)
  for (const name of readdirSync(p)) makeWritable(join(p, name))
}

/** What the decision about a software release reads of its directory. */
function readSoftware(path: string): { dirExists: boolean; completed: boolean } {
  const completed = existsSync(join(path, '.completed'))
  return { dirExists: completed || existsSync(path), completed }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory()
  } catch {
    return false
  }
}


/** Python's time.asctime(): `Mon Nov  3 02:44:13 2026` (local time). */
function asctime(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat']
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
  const p2 = (n: number) => String(n).padStart(2, '0')
  return `${days[d.getDay()]} ${months[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())} ${d.getFullYear()}`
}
