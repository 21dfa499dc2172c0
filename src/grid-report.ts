// `slapos node report` (grid.md §5): run the partitions' usage report scripts, send the
// collected usage to the master, then destroy the partitions the master marked destroyed.
// Used by commands/node-report.ts; destroyPartition is also usable on its own.
//
// Life of a destroyed partition across runs of node instance and node report:
//
//   started/stopped ──master: destroyed──> node instance: services stopped, /stopped
//        │
//        └─> node report: stop services (group file removed), certificate, /stopped
//              ├─ retention lock date in the future ──> kept, nothing sent (next run retries)
//              ├─ sbin/destroy fails ─────────────────> kept, /softwareInstanceError, exit 1
//              └─ marker written, content wiped, groups removed, marker removed
//                    └─> /destroyedComputerPartition ──> the master frees the partition
//
// The marker (<instance_root>/var/run/<id>.destroying) makes the wipe restartable: a run
// killed in the middle leaves it behind, and the next run skips the retention check and sbin/destroy
// (they already passed), wipes what is left and only then tells the master. Nothing is
// reported before the directory is empty, so the master frees the partition at most once.
import { chmodSync, closeSync, constants, existsSync, fchownSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs'
import { chmod, lstat, readdir, rmdir, unlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { XMLParser, XMLValidator } from 'fast-xml-parser'
import { inBeneath, openBeneath, type OpenDir } from './beneath.ts'
import type { Ctx } from './context.ts'
import { NotFoundError, ServerError, SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { asUser, cleanEnv, ownerOf, refuseRoot, type NodeRun, type Owner } from './grid-common.ts'
import type { Logger } from './log.ts'
import { writeFirewallPrograms } from './firewall.ts'
import { deploymentRecordFile, promiseStatusFile } from './grid-plan.ts'
import { firewallOptions, partitionAddresses, readUserFile, runHook } from './managers.ts'
import { escapeControls, idProblem, isSafeId } from './names.ts'
import type { ComputerPartition } from './slap-client.ts'
import {
  createInstanceRootStructure,
  removePartitionGroups,
  stopPartitionServices,
  Supervisor,
  SupervisorConnectionError,
  supervisorPaths,
  watchdogCommand,
  writeSupervisordConf,
} from './supervisor.ts'
import type { Runner } from './system.ts'

/** Files of the partition directory that the destruction reads or writes (grid.md §2.3). */
export const RETENTION_DELAY_FILE = '.slapos-retention-lock-delay'
export const RETENTION_DATE_FILE = '.slapos-retention-lock-date'
export const WAIT_LIST_FILE = '.slapos-report-wait-service-list'

/**
 * Ours: `<instance_root>/var/run/<id>.destroying`, present only while a destruction is
 * between sbin/destroy and the end of the wipe. It lives outside the partition, in a
 * directory only root writes, so an instance cannot fake it to skip its retention lock.
 */
export function destroyMarkerPath(p: { id: string; path: string }): string {
  return join(dirname(p.path), 'var', 'run', `${p.id}.destroying`)
}

export interface PartitionToDestroy {
  id: string
  /** the partition directory; it stays, empty, with its owner and mode */
  path: string
  owner: Owner
  /** `<repo>/<id>.crt` and `.key` are deleted when set */
  certificateRepositoryPath?: string | undefined
  /** `DATA/<disk>` links point into `<instance_storage_home>/<disk>/<id>`, emptied too */
  instanceStorageHome?: string | undefined
}

export interface DestroyDeps {
  runner: Runner
  log: Logger
  now(): Date
  env: NodeJS.ProcessEnv
  rootCheck: boolean
  /** kill sbin/destroy after this many seconds (partition_timeout); none when undefined */
  timeoutSec?: number | undefined
  /** deletes the partition's supervisord group files (`<id>.conf`, `<id>-*.conf`) and applies the change */
  removeServices(id: string): Promise<void>
}

export type DestroyOutcome =
  | { done: true }
  /** refused by the retention lock until this date; nothing to tell the master */
  | { done: false; retainedUntil: Date }

/** sbin/destroy failed: the partition is kept and the error goes to the master. */
export class DestroyError extends SlapError {
  readonly output: string
  constructor(message: string, output: string) {
    super(message, { code: 'E_DESTROY', exitCode: EXIT.FAIL })
    this.output = output
  }
}

/**
 * Like slapgrid.py `Partition.destroy` (grid.md §5.2): retention lock, `sbin/destroy` as the
 * partition user, certificate files, `software_release` link, `DATA/` storage, the content of
 * the directory, then the supervisord groups. Returns `done` only once all of it is gone.
 * Throws DestroyError when sbin/destroy fails (the partition is kept), or a file system error.
 */
export async function destroyPartition(p: PartitionToDestroy, deps: DestroyDeps): Promise<DestroyOutcome> {
  const log = deps.log
  const marker = destroyMarkerPath(p)
  const resuming = existsSync(marker)
  if (resuming) {
    log.info(`Resuming the destruction of ${p.id} (a previous run stopped in the middle)`)
  } else {
    log.info(`Destroying Computer Partition ${p.id}...`)
    const until = retentionLock(p, deps.now())
    if (until) {
      log.info(`Impossible to destroy partition ${p.id} yet because of retention lock (until ${until.toISOString()}).`)
      return { done: false, retainedUntil: until }
    }
    await runDestroyScript(p, deps)
    mkdirSync(dirname(marker), { recursive: true, mode: 0o700 })
    writeFileSync(marker, `${deps.now().toISOString()}\n`)
  }

  for (const ext of ['.key', '.crt']) {
    if (p.certificateRepositoryPath) removeIfExists(join(p.certificateRepositoryPath, p.id + ext))
  }
  const srLink = join(p.path, 'software_release')
  if (isSymlink(srLink)) unlinkSync(srLink)
  await cleanStorage(p, deps)
  await wipe(p.path, deps)
  // node instance's records of the last deployment and of what the master was told of the
  // promises: a new instance here starts without them
  removeIfExists(deploymentRecordFile(dirname(p.path), p.id))
  removeIfExists(promiseStatusFile(dirname(p.path), p.id))
  await deps.removeServices(p.id)
  // the directory itself stays as format made it: owner of the partition, mode 0750
  chmodSync(p.path, 0o750)
  unlinkSync(marker)
  log.info(`Partition ${p.id} destroyed`)
  return { done: true }
}

/**
 * Deletes everything inside `dir` except the names in `keep`, leaving `dir` itself (owner,
 * mode) as it is. Read-only directories and files are made writable first; symbolic links
 * are removed, never followed. Safe to run again after an interruption. Asynchronous so a
 * long wipe does not stall the process (the master connection stays serviceable).
 */
export async function emptyDirectory(dir: string, keep: ReadonlySet<string> = new Set()): Promise<void> {
  for (const name of await readdir(dir)) {
    if (!keep.has(name)) await removeTree(join(dir, name))
  }
}

/**
 * Retention lock (grid.md §5.2 step 1, slapgrid.py `createRetentionLockDate` and
 * `checkRetentionIsAuthorized`): the first attempt on a partition with a delay > 0 days writes
 * the date (now + delay) after which it may go. Returns that date while it is in the future.
 */
export function retentionLock(p: { path: string; owner: Owner }, now: Date): Date | undefined {
  const delayFile = join(p.path, RETENTION_DELAY_FILE)
  const dateFile = join(p.path, RETENTION_DATE_FILE)
  // the partition user's files: a number of a few bytes, never read through a link
  const number = (file: string): number | undefined => {
    const read = readUserFile(file, 64)
    return read.kind === 'ok' ? pyFloat(read.bytes.toString('utf8')) : read.kind === 'absent' ? undefined : -1
  }
  const delay = number(delayFile) ?? -1
  let date = number(dateFile)
  if (date === undefined && delay > 0) {
    date = Math.floor(now.getTime() / 1000) + delay * 86400
    writeAtomic(dateFile, pyFloatText(date), p.owner)
  }
  if (!date) return delay > 0 ? new Date(now.getTime() + delay * 86400_000) : undefined
  return now.getTime() / 1000 < date ? new Date(date * 1000) : undefined
}

// --- usage reports (grid.md §5.1 steps 3-6) ---

/**
 * Runs each `etc/report/*` of the partition as its user, with one argument: a fresh path
 * `var/xml_report/slapreport.XXXXXXXX` for its XML. Returns the failure lines
 * ("Script '<name>' failed.") for the master.
 */
export async function runReportScripts(
  p: { id: string; path: string; owner: Owner },
  deps: { runner: Runner; log: Logger; env: NodeJS.ProcessEnv; rootCheck: boolean; timeoutSec?: number | undefined },
): Promise<string[]> {
  const reportDir = join(p.path, 'etc', 'report')
  if (!isDirectory(reportDir)) return []
  const scripts = readdirSync(reportDir).sort()
  if (scripts.length === 0) return []
  const xmlDir = join(p.path, 'var', 'xml_report')
  const as = { env: cleanEnv(deps.env, p.owner.home), ...asUser(p.owner, deps.rootCheck) }
  // made by the partition user: as root, a path inside the partition may lead anywhere
  if (!existsSync(xmlDir)) await deps.runner.run(['mkdir', '-p', '--', xmlDir], { ...as, cwd: p.path }).catch(() => undefined)
  const failed: string[] = []
  for (const script of scripts) {
    const out = join(xmlDir, freshName(xmlDir))
    deps.log.debug(`Running report script ${script} -> ${out}`)
    const r = await deps.runner.run([join(reportDir, script), out], {
      cwd: reportDir,
      ...as,
      timeoutMs: deps.timeoutSec ? deps.timeoutSec * 1000 : undefined,
      processGroup: true,
    }).catch((err: unknown) => ({ code: null, signal: null, stdout: '', stderr: err instanceof Error ? err.message : String(err), timedOut: false }))
    if (r.code !== 0) {
      deps.log.warning(`Failed to run report script ${script}: ${lastLines(r.stdout + r.stderr)}`)
      failed.push(`Script '${script}' failed.`)
    }
  }
  return failed
}

export interface UsageFile {
  partitionId: string
  /** its path, for messages */
  file: string
  xml: string
  /** the directory it was read from (reopened the same way to delete it) and its name there */
  dir: UsageDir
  name: string
}

/** A directory of usage reports: `parts` below `root`, each opened without following a link. */
export interface UsageDir {
  root: string
  parts: readonly string[]
}

/** Largest usage report read; a larger one is left in place with a warning. */
const USAGE_MAX_BYTES = 1 << 20

/**
 * Reads the partition's usage reports (`var/xml_report/*` and
 * `<instance_root>/var/xml_report/<id>/*`). Valid ones are returned (deleted by the caller
 * once the master has them, with removeUsage); invalid ones are left in place with a warning.
 * `var` and `xml_report` belong to the partition user, who may make them links (to another
 * partition's, to get its usage sent and deleted as its own) or swap them for links at any
 * moment: each directory is opened without following a link and each report read from it
 * (regular files only, at most USAGE_MAX_BYTES).
 */
export function collectUsage(instanceRoot: string, partitionId: string, log: Logger): UsageFile[] {
  const found: UsageFile[] = []
  const dirs: UsageDir[] = [
    { root: join(instanceRoot, partitionId), parts: ['var', 'xml_report'] },
    { root: instanceRoot, parts: ['var', 'xml_report', partitionId] },
  ]
  for (const where of dirs) {
    const dir = openUsageDir(where, log)
    if (!dir) continue
    try {
      for (const name of dir.list().sort()) {
        const file = `${dir.path}/${name}`
        const read = dir.read(name, USAGE_MAX_BYTES)
        if (read.kind === 'absent') continue
        if (read.kind === 'refused') {
          log.warning(`The usage report ${file} is ${read.why}: it is not read`)
          continue
        }
        const xml = read.bytes.toString('utf8')
        const problem = checkPartitionUsage(xml)
        if (problem) {
          log.warning(`The usage report ${file} is not valid (${problem}); it is left there so you can inspect it`)
          continue
        }
        found.push({ partitionId, file, xml, dir: where, name })
      }
    } finally {
      dir.close()
    }
  }
  return found
}

/**
 * Deletes a usage report the master has, by its name in its directory opened again as
 * collectUsage did: a directory swapped for a link since it was read leads nowhere. What
 * cannot be deleted is only logged (the master has the usage already).
 */
function removeUsage(u: UsageFile, log: Logger): void {
  try {
    const dir = openUsageDir(u.dir, log)
    if (!dir) return
    try {
      removeIfExists(dir.at(u.name))
    } finally {
      dir.close()
    }
  } catch (err) {
    log.warning(`The usage report ${u.file} was sent but could not be deleted: ${describe(err)}`)
  }
}

/**
 * Checks a partition usage report. The original validates it against
 * `partition_consumption.xsd`, which is not shipped here: we check that it is well-formed
 * XML with a `<journal>` root holding at least one `<movement>`, whose children are simple
 * elements, with a numeric `<quantity>` when present. Returns what is wrong, or undefined.
 */
export function checkPartitionUsage(xml: string): string | undefined {
  const root = parseXml(xml)
  if (typeof root === 'string') return root
  if (root.name !== 'journal') return `the root element is <${root.name}>, not <journal>`
  const movements = root.children.filter((c) => c.name === 'movement')
  if (movements.length === 0) return 'no <movement>'
  const other = root.children.find((c) => c.name !== 'movement')
  if (other) return `unexpected <${other.name}> in <journal>`
  for (const m of movements) {
    for (const c of m.children) {
      if (c.children.length) return `<${c.name}> of a <movement> has child elements`
      if ((c.name === 'quantity' || c.name === 'price') && c.text.trim() !== '' && !Number.isFinite(Number(c.text))) {
        return `<${c.name}> is not a number: ${c.text}`
      }
    }
  }
  return undefined
}

/**
 * Checks a computer usage report (`<instance_root>/var/xml_report/<computer_id>/*`, and the
 * journal we build): well-formed, `<journal>` root holding `<transaction>` elements. The
 * original validates against `computer_consumption.xsd`, not shipped here.
 */
export function checkComputerUsage(xml: string): string | undefined {
  const root = parseXml(xml)
  if (typeof root === 'string') return root
  if (root.name !== 'journal') return `the root element is <${root.name}>, not <journal>`
  if (!root.children.some((c) => c.name === 'transaction')) return 'no <transaction>'
  const other = root.children.find((c) => c.name !== 'transaction')
  if (other) return `unexpected <${other.name}> in <journal>`
  return undefined
}

/**
 * The journal sent with /useComputer (slapgrid.py `asXML`): one "Sale Packing List"
 * transaction for the computer with every movement of every partition, each movement's
 * `<reference>` replaced by the partition id. Text is escaped (the original pasted it raw).
 */
export function buildUsageJournal(computerId: string, usages: Array<{ partitionId: string; xml: string }>, now: Date): string {
  const p2 = (n: number) => String(n).padStart(2, '0')
  const stop = `${now.getFullYear()}-${p2(now.getMonth() + 1)}-${p2(now.getDate())} at ${p2(now.getHours())}:${p2(now.getMinutes())}:${p2(now.getSeconds())}`
  const out = [
    '<?xml version="1.0"?>',
    '<journal>',
    '<transaction type="Sale Packing List">',
    '<title>Resource consumptions</title>',
    '<start_date></start_date>',
    `<stop_date>${escapeXml(stop)}</stop_date>`,
    `<reference>${escapeXml(computerId)}</reference>`,
    '<currency></currency>',
    '<payment_mode></payment_mode>',
    '<category></category>',
    '<arrow type="Administration">',
    '<source></source>',
    '<destination></destination>',
    '</arrow>',
  ]
  for (const u of usages) {
    const root = parseXml(u.xml)
    if (typeof root === 'string') throw new SlapError(`usage report of ${u.partitionId} cannot be read: ${root}`)
    for (const m of root.children.filter((c) => c.name === 'movement')) {
      out.push('<movement>')
      for (const c of m.children) {
        const text = c.name === 'reference' ? u.partitionId : c.text
        out.push(`<${c.name}>${escapeXml(text)}</${c.name}>`)
      }
      out.push('</movement>')
    }
  }
  out.push('</transaction></journal>')
  return out.join('')
}

// --- the command (grid.md §5.1) ---

/** What one run did, for the command's exit status and for tests. */
export interface ReportSummary {
  destroyed: string[]
  /** kept by the retention lock, a wait list, or a usage report that could not be sent */
  kept: string[]
  failed: string[]
}

/**
 * The whole of `slapos node report`. The master is asked for the partitions first: when it
 * cannot be reached the error propagates (exit 1) and nothing is destroyed.
 */
export async function reportAndDestroy(run: NodeRun, ctx: Ctx): Promise<{ exitCode: number; summary: ReportSummary }> {
  const { cfg, client, log } = run
  const summary: ReportSummary = { destroyed: [], kept: [], failed: [] }
  if (!isDirectory(cfg.softwareRoot)) throw new SlapError(`${cfg.softwareRoot} does not exist.`, { hint: 'check software_root in the configuration' })
  createInstanceRootStructure(cfg.instanceRoot)
  writeSupervisordConf(cfg.instanceRoot, watchdogCommand(cfg))
  writeFirewallPrograms(cfg.instanceRoot, firewallOptions(cfg.file))
  const sup = new Supervisor(supervisorPaths(cfg.instanceRoot), log)
  if (!cfg.forbidSupervisordAutomaticLaunch) await sup.launch()

  const computer = await client.getFullComputerInformation(cfg.computerId)
  log.info('Aggregating and sending usage reports...')
  const partitions: Array<{ cp: ComputerPartition; id: string; path: string; url: string | null }> = []
  for (const cp of computer._computer_partition_list) {
    const id = cp._partition_id ?? ''
    if (!id) continue
    // an id from the master names a directory that is emptied, chmod'ed and reported on:
    // one safe path component, or nothing is touched
    const bad = idProblem('partition id', id)
    if (bad) {
      log.error(`refused: ${bad}`)
      summary.failed.push(escapeControls(id))
      await client.softwareInstanceError(cfg.computerId, id, bad).catch((e: unknown) => log.debug(`could not report: ${describe(e)}`))
      continue
    }
    const path = join(cfg.instanceRoot, id)
    const url = softwareUrlOf(cp)
    if (cp._requested_state === 'destroyed' && !url) continue // a free partition: nothing to do
    if (!isDirectory(path)) {
      log.warning(`Partition directory ${path} does not exist.`)
      await client.softwareInstanceError(cfg.computerId, id, `Partition directory ${path} does not exist.`).catch((e: unknown) => log.debug(`could not report: ${describe(e)}`))
      continue
    }
    partitions.push({ cp, id, path, url })
  }

  // 1. report scripts
  for (const p of partitions) {
    try {
      const failures = await runReportScripts({ id: p.id, path: p.path, owner: ownerOf(p.path) }, {
        runner: ctx.runner,
        log: log.child(p.id),
        env: ctx.env,
        rootCheck: refuseRoot(cfg),
        timeoutSec: cfg.partitionTimeout,
      })
      if (failures.length) {
        summary.failed.push(p.id)
        await client.softwareInstanceError(cfg.computerId, p.id, failures.join('\n')).catch((e: unknown) => log.warning(`could not report the error of ${p.id}: ${describe(e)}`))
      }
    } catch (err) {
      log.child(p.id).error(`Cannot run usage script(s): ${describe(err)}`)
    }
  }

  // 2. usage of partitions, then of the computer itself
  const usages: UsageFile[] = []
  for (const p of partitions) {
    try {
      usages.push(...collectUsage(cfg.instanceRoot, p.id, log.child(p.id)))
    } catch (err) {
      log.child(p.id).error(`Cannot read usage reports: ${describe(err)}`)
    }
  }
  const computerDir = join(cfg.instanceRoot, 'var', 'xml_report', cfg.computerId)
  if (isDirectory(computerDir)) {
    for (const name of readdirSync(computerDir).sort()) {
      const file = join(computerDir, name)
      if (!isRegularFile(file)) continue
      const xml = readFileSync(file, 'utf8')
      const problem = checkComputerUsage(xml)
      if (problem) {
        log.warning(`The computer usage report ${file} is not valid (${problem}); it is left there`)
        continue
      }
      try {
        await client.useComputer(cfg.computerId, xml)
        unlinkSync(file)
      } catch (err) {
        log.error(`Cannot send the computer usage report ${file}: ${describe(err)}`)
      }
    }
  }
  const usageNotSent = new Set<string>()
  if (usages.length) {
    const involved = [...new Set(usages.map((u) => u.partitionId))]
    try {
      const journal = buildUsageJournal(cfg.computerId, usages, ctx.now())
      const problem = checkComputerUsage(journal)
      if (problem) throw new SlapError(`the usage journal is not valid: ${problem}`)
      log.debug(`Final xml report: ${journal}`)
      await client.useComputer(cfg.computerId, journal)
      // unlike the original, reports are deleted only once the master has them
      for (const u of usages) removeUsage(u, log.child(u.partitionId))
    } catch (err) {
      const issue = `Cannot report usage for ${involved.join(', ')}: ${describe(err)}`
      log.error(issue)
      for (const id of involved) {
        usageNotSent.add(id)
        await client.softwareInstanceError(cfg.computerId, id, issue).catch(() => undefined)
      }
    }
  }

  // 3. destruction of the partitions the master wants destroyed
  for (const p of partitions) {
    if (p.cp._requested_state !== 'destroyed') continue
    const plog = log.child(p.id)
    let done = false
    try {
      await stopPartitionServices(sup, cfg.instanceRoot, p.id).catch((err: unknown) => {
        if (!isSupervisorDown(err)) throw err
        plog.debug(`supervisord is not running: ${describe(err)}`)
      })
      const owner = ownerOf(p.path)
      if (cfg.certificateRepositoryPath && !existsSync(destroyMarkerPath(p))) {
        await refreshCertificate(client, cfg.computerId, p.id, cfg.certificateRepositoryPath, owner)
      } else if (cfg.certificateRepositoryPath) {
        // the certificate call keeps the original's order of master calls
        await client.getComputerPartitionCertificate(cfg.computerId, p.id).catch(() => undefined)
      }
      await client.stoppedComputerPartition(cfg.computerId, p.id).catch((e: unknown) => plog.debug(`stopped not sent: ${describe(e)}`))
      // node-extras §1.2: on every run until the partition is gone; an error keeps it
      if (run.managers.length) {
        await runHook(run.managers, 'report', {
          id: p.id,
          path: p.path,
          owner,
          state: 'destroyed',
          addresses: partitionAddresses(p.cp._parameter_dict ?? {}),
          instanceRoot: cfg.instanceRoot,
          sup,
          processes: { id: p.id, path: p.path, uid: owner.uid, gid: owner.gid, user: owner.name, home: owner.home },
          log: plog,
          now: ctx.now,
        })
      }
      if (usageNotSent.has(p.id)) {
        plog.info(`Ignoring destruction of ${p.id}, as no report usage was sent`)
        summary.kept.push(p.id)
        continue
      }
      if (await waitListBusy(sup, p.path, plog)) {
        plog.info('There are running processes into the partition, wait until they finish...')
        summary.kept.push(p.id)
        continue
      }
      const outcome = await destroyPartition(
        { id: p.id, path: p.path, owner, certificateRepositoryPath: cfg.certificateRepositoryPath, instanceStorageHome: instanceStorageHome(cfg.file) },
        {
          runner: ctx.runner,
          log: plog,
          now: ctx.now,
          env: ctx.env,
          rootCheck: refuseRoot(cfg),
          timeoutSec: cfg.partitionTimeout,
          removeServices: async (id) => {
            const changed = removePartitionGroups(cfg.instanceRoot, id)
            if (!changed) return
            await sup.applyChanges().catch((err: unknown) => {
              if (!isSupervisorDown(err)) throw err
            })
          },
        },
      )
      done = outcome.done
      if (!done) summary.kept.push(p.id)
    } catch (err) {
      summary.failed.push(p.id)
      const text = err instanceof DestroyError ? `${err.message}\n${err.output}` : describe(err)
      plog.error(text)
      await client.softwareInstanceError(cfg.computerId, p.id, text).catch((e: unknown) => plog.warning(`could not report the error: ${describe(e)}`))
    }
    if (!done) continue
    summary.destroyed.push(p.id)
    try {
      const answer = await client.destroyedComputerPartition(cfg.computerId, p.id)
      plog.debug(`destroyed: ${answer}`)
    } catch (err) {
      if (err instanceof NotFoundError || err instanceof ServerError) plog.debug(`Ignored error while telling the master ${p.id} is destroyed: ${describe(err)}`)
      else {
        // the directory is already empty: the next run finds it destroyed-but-not-freed
        // and tells the master again (an empty partition destroys in no time)
        plog.error(`Could not tell the master that ${p.id} is destroyed: ${describe(err)}`)
        summary.failed.push(p.id)
      }
    }
  }
  const parts = [`${summary.destroyed.length} destroyed`]
  if (summary.kept.length) parts.push(`${summary.kept.length} kept for now (${summary.kept.join(', ')})`)
  if (summary.failed.length) parts.push(`${summary.failed.length} failed (${summary.failed.join(', ')})`)
  log.info(`Finished usage reports: ${parts.join(', ')}.`)
  return { exitCode: summary.failed.length ? EXIT.FAIL : EXIT.OK, summary }
}

// --- internal ---

/**
 * `where` opened one directory at a time without following a link; undefined when a part is
 * missing, or is something else than a directory (a warning names it: a link the partition
 * user made there).
 */
function openUsageDir(where: UsageDir, log: Logger): OpenDir | undefined {
  let dir = openBeneath(where.root, [])
  for (const part of where.parts) {
    if (!dir) return undefined
    let next: OpenDir | undefined
    try {
      next = dir.sub(part)
      const st = next ? undefined : lstatSync(dir.at(part), { throwIfNoEntry: false })
      if (st) log.warning(`${dir.path}/${part} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}: its usage reports are not read`)
    } finally {
      dir.close()
    }
    dir = next
  }
  return dir
}

function softwareUrlOf(cp: ComputerPartition): string | null {
  const doc = cp._software_release_document
  if (!doc) return null
  if (typeof doc === 'string') return doc || null
  return doc._software_release || null
}

function instanceStorageHome(file: NodeRun['cfg']['file']): string | undefined {
  return file.path_('slapos', 'instance_storage_home')
}

async function refreshCertificate(client: NodeRun['client'], computerId: string, id: string, repo: string, owner: Owner): Promise<void> {
  let cert
  try {
    cert = await client.getComputerPartitionCertificate(computerId, id)
  } catch (err) {
    if (err instanceof NotFoundError) throw new SlapError(`Partition ${id} is not known by SlapOS Master.`)
    throw err
  }
  for (const [ext, text] of [['.crt', cert.certificate], ['.key', cert.key]] as const) {
    if (!text) continue
    const file = join(repo, id + ext)
    if (existsSync(file) && readFileSync(file, 'utf8') === text) continue
    writeAtomic(file, text, owner, 0o400)
  }
}

/** Largest wait list read (supervisord names, one a line). */
const WAIT_LIST_MAX_BYTES = 64 << 10

/**
 * `.slapos-report-wait-service-list`: supervisord names that must stop before destruction.
 * The partition user's file, which it may swap at any moment: read bounded, never through a
 * link, never waiting on a FIFO (that would hold every later partition's destruction).
 */
async function waitListBusy(sup: Supervisor, path: string, log: Logger): Promise<boolean> {
  const file = join(path, WAIT_LIST_FILE)
  const read = readUserFile(file, WAIT_LIST_MAX_BYTES)
  if (read.kind === 'refused') log.warning(`${file} is ${read.why}: it is not read`)
  if (read.kind !== 'ok') return false
  const names = read.bytes.toString('utf8').split('\n').map((s) => s.trim()).filter(Boolean)
  if (!names.length) return false
  let info
  try {
    info = await sup.processInfo()
  } catch (err) {
    if (isSupervisorDown(err)) return false
    throw err
  }
  return info.some((i) => names.includes(`${i.group}:${i.name}`) && (i.statename === 'RUNNING' || i.statename === 'STARTING'))
}

function isSupervisorDown(err: unknown): boolean {
  return err instanceof SupervisorConnectionError
}

async function runDestroyScript(p: PartitionToDestroy, deps: DestroyDeps): Promise<void> {
  const script = join(p.path, 'sbin', 'destroy')
  if (!existsSync(script)) return
  deps.log.debug(`Invoking ${script}`)
  const r = await deps.runner
    .run([script], {
      cwd: p.path,
      env: cleanEnv(deps.env, p.owner.home),
      ...asUser(p.owner, deps.rootCheck),
      timeoutMs: deps.timeoutSec ? deps.timeoutSec * 1000 : undefined,
      processGroup: true,
    })
    .catch((err: unknown) => ({ code: null, signal: null, stdout: '', stderr: describe(err), timedOut: false }))
  if (r.code !== 0) {
    throw new DestroyError(`Failed to destroy Computer Partition in '${p.path}'.`, lastLines(r.stdout + r.stderr))
  }
}

/**
 * Each link `DATA/<disk>` is removed and `<instance_storage_home>/<disk>/<id>` emptied. DATA
 * is the partition user's: it is listed and its links removed relative to DATA opened without
 * following a link, so that DATA swapped for a link (to /etc, say) at any moment never makes
 * root remove the links of another directory; `<disk>` names a storage only when it is one
 * safe path component.
 */
async function cleanStorage(p: PartitionToDestroy, deps: DestroyDeps): Promise<void> {
  if (!p.instanceStorageHome) return
  const disks: string[] = []
  inBeneath(p.path, ['DATA'], undefined, (data) => {
    for (const name of data.list()) {
      if (!lstatSync(data.at(name), { throwIfNoEntry: false })?.isSymbolicLink()) continue
      removeIfExists(data.at(name))
      if (isSafeId(name)) disks.push(name)
      else deps.log.warning(`DATA/${escapeControls(name)} names no storage directory: only the link is removed`)
    }
  })
  for (const disk of disks) {
    const target = join(p.instanceStorageHome, disk, p.id)
    if (isDirectory(target)) await wipe(target, deps)
  }
}

/**
 * Empties a directory of the partition. As root this is GNU `rm -rf --one-file-system` on
 * each entry: rm walks the tree with openat/unlinkat and never follows a symbolic link, so
 * an instance process swapping a directory for a link in the middle of the walk cannot make
 * root delete anything outside (Node has no such calls: a walk by path names could be
 * misled). It stays on the partition's file system; whatever cannot be deleted (a mount, an
 * immutable file) fails the destruction, naming it, and the next run finishes the job.
 * Without root we are the partition user already and delete in-process.
 */
async function wipe(dir: string, deps: DestroyDeps): Promise<void> {
  if (process.getuid?.() !== 0) {
    await emptyDirectory(dir)
    return
  }
  const rm = await deps.runner.run(['find', dir, '-mindepth', '1', '-maxdepth', '1', '-exec', 'rm', '-rf', '--one-file-system', '--', '{}', '+'], {
    cwd: dir,
    env: { PATH: deps.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
  })
  const left = readdirSync(dir)
  if (left.length) {
    throw new SlapError(`Could not empty ${dir}: ${left.slice(0, 5).join(', ')}${left.length > 5 ? ', ...' : ''} remain${rm.stderr ? ` (${lastLines(rm.stderr, 3)})` : ''}`, {
      code: 'E_WIPE',
      hint: 'a mount point or an immutable file? remove it by hand; the next node report finishes the destruction',
    })
  }
}

async function removeTree(path: string): Promise<void> {
  let st
  try {
    st = await lstat(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  if (st.isDirectory()) {
    // a read-only directory cannot be listed or emptied: give its owner the rights back
    if ((st.mode & 0o700) !== 0o700) await chmod(path, (st.mode & 0o7777) | 0o700)
    for (const name of await readdir(path)) await removeTree(join(path, name))
    await rmdir(path)
  } else {
    await unlink(path)
  }
}

function removeIfExists(path: string): void {
  try {
    unlinkSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}

/**
 * Temp file + rename. The temp file is created exclusively (O_EXCL: never through a link an
 * instance left at that name, since this may write as root inside its partition) and given
 * to `owner` through its descriptor: by the time it is chowned the instance may have put
 * another file (a hard link to one of root's) under its name.
 */
function writeAtomic(file: string, text: string, owner: Owner, mode = 0o644): void {
  const tmp = `${file}.tmp-${process.pid}`
  removeIfExists(tmp)
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode)
  try {
    if (process.getuid?.() === 0) fchownSync(fd, owner.uid, owner.gid)
    writeSync(fd, text)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, file)
}

function isSymlink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink()
  } catch {
    return false
  }
}
function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory()
  } catch {
    return false
  }
}
function isRegularFile(p: string): boolean {
  try {
    return lstatSync(p).isFile()
  } catch {
    return false
  }
}

/** Python float() of a file's text; NaN-free: unreadable values count as absent (-1 / undefined). */
function pyFloat(text: string): number {
  const v = Number(text.trim())
  return Number.isFinite(v) ? v : -1
}
/** Python str(float): `1764474000.0`. */
function pyFloatText(v: number): string {
  return Number.isInteger(v) ? `${v}.0` : String(v)
}

function freshName(dir: string): string {
  for (;;) {
    const name = `slapreport.${process.getBuiltinModule('node:crypto').randomBytes(6).toString('base64url').replace(/[-_]/g, 'x')}`
    if (!existsSync(join(dir, name))) return name
  }
}

function lastLines(s: string, n = 20): string {
  return s.trimEnd().split('\n').slice(-n).join('\n')
}

function describe(err: unknown): string {
  if (err instanceof SlapError) return err.message
  if (err instanceof Error) return err.message
  return String(err)
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

interface XmlElement {
  name: string
  text: string
  children: XmlElement[]
}

/** Well-formedness check, then a small element tree; a string is the parse error. */
function parseXml(xml: string): XmlElement | string {
  const valid = XMLValidator.validate(xml)
  if (valid !== true) return `not well-formed XML: ${valid.err.msg} (line ${valid.err.line})`
  const parser = new XMLParser({ preserveOrder: true, ignoreAttributes: true, parseTagValue: false, trimValues: false, processEntities: true })
  const doc = parser.parse(xml) as unknown[]
  const elements = doc.map(toElement).filter((e): e is XmlElement => e !== undefined)
  if (elements.length !== 1 || !elements[0]) return 'not exactly one root element'
  return elements[0]
}

function toElement(node: unknown): XmlElement | undefined {
  if (node === null || typeof node !== 'object') return undefined
  const name = Object.keys(node).find((k) => k !== ':@' && k !== '#text' && !k.startsWith('?'))
  if (!name) return undefined
  const content = (node as Record<string, unknown>)[name]
  const kids = Array.isArray(content) ? content : []
  let text = ''
  const children: XmlElement[] = []
  for (const k of kids) {
    if (k && typeof k === 'object' && '#text' in k) text += String((k as Record<string, unknown>)['#text'])
    else {
      const e = toElement(k)
      if (e) children.push(e)
    }
  }
  return { name, text, children }
}
