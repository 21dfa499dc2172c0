// The whitelistfirewall manager (node-extras §1.8): a partition lists, in
// `<partition>/.slapos-whitelist-firewall`, the only IPv4 destinations its user may reach;
// firewalld direct rules send the user's outgoing IPv4 traffic through a chain of its own
// that accepts those and rejects the rest. Applied at the end of every processing
// (instanceTearDown), removed when the file goes and when the partition is destroyed
// (report). Loaded through managers.ts.
//
//   OUTPUT 0 -m owner --uid-owner <uid> -j <id>-whitelist
//   <id>-whitelist:  0 -d <ip> -j ACCEPT (each listed address) ... 0 -j REJECT
//
// The file is the partition user's: it is read only as a regular file, never more than
// MAX_FILE bytes (readUserFile of managers.ts), and only strings that are IPv4
// addresses become arguments. The md5 state file beside it is read the same way (64 bytes)
// and written by replacing it (never through a link planted there).
import { unlinkSync } from 'node:fs'
import { isIPv4, isIPv6 } from 'node:net'
import { join } from 'node:path'
import { SlapError } from './errors.ts'
import { commandPrefix } from './firewall.ts'
import { readUserFile, replaceFile, type Manager, type ManagerOptions, type ManagerPartition } from './managers.ts'
import { escapeControls, isSafeId, quote } from './names.ts'
import type { Runner } from './system.ts'

export const WHITELIST_FILE = '.slapos-whitelist-firewall'
export const WHITELIST_MD5_FILE = '.slapos-whitelist-firewall.md5sum'

/** Largest whitelist file read (a list of a few thousand addresses is far below). */
const MAX_FILE = 1 << 20
/** Most addresses applied: each one is a firewall-cmd call, a hostile list must not stall the node. */
export const MAX_ENTRIES = 1000
const TIMEOUT_MS = 120_000

export function whitelistfirewallManager(options: ManagerOptions): Manager {
  const fw = options.firewall
  const runner = options.runner
  return {
    name: 'whitelistfirewall',
    async instanceTearDown(p) {
      if (!fw) {
        p.log.warning('[firewall] missing in the configuration, manager disabled.')
        return
      }
      await applyWhitelist(commandPrefix(fw), p, runner)
    },
    async report(p) {
      // the original crashes here (the partition is never destroyed): a warning is enough
      if (!fw) {
        p.log.warning('[firewall] missing in the configuration, manager disabled.')
        return
      }
      const ctx = context(commandPrefix(fw), p, runner)
      if (ctx && (await cleanUp(ctx))) p.log.info(`Cleaned up firewall for partition ${p.id}.`)
      removeMd5(p)
    },
  }
}

/** What the rule commands of one partition need. */
interface Ctx {
  /** firewall_cmd, split on whitespace */
  cmd: string[]
  chain: string
  hook: string[]
  runner: Runner
  p: ManagerPartition
}

/** §1.8 instanceTearDown: the whitelist applied (only when it changed) or cleaned up when the file is gone. */
export async function applyWhitelist(cmd: string[], p: ManagerPartition, runner: Runner): Promise<void> {
  const file = join(p.path, WHITELIST_FILE)
  const read = readUserFile(file, MAX_FILE)
  if (read.kind === 'absent') {
    const ctx = context(cmd, p, runner)
    if (ctx && (await cleanUp(ctx))) p.log.info(`File ${file} does not exists, removed configuration for partition ${p.id}.`)
    removeMd5(p)
    return
  }
  if (read.kind === 'refused') {
    p.log.warning(`Bad whitelist firewall config ${file}: ${read.why}`)
    return
  }
  const parsed = whitelistAddresses(read.bytes.toString('utf8'), (m) => p.log.warning(m))
  if (parsed === undefined) {
    p.log.warning(`Bad whitelist firewall config ${file}: not a JSON list`)
    return
  }
  const ctx = context(cmd, p, runner)
  if (!ctx) return
  p.log.info(`Configuring partition ${p.id}.`)
  let fresh = false
  if (!(await isYes(ctx, ['--query-chain', 'ipv4', 'filter', ctx.chain]))) {
    await fw(ctx, ['--add-chain', 'ipv4', 'filter', ctx.chain])
    fresh = true
  }
  const md5 = process.getBuiltinModule('node:crypto').createHash('md5').update(read.bytes).digest('hex')
  if (!fresh && readMd5(p) === md5) {
    p.log.debug(`Skipped up-to-date rules for partition ${p.id}.`)
    return
  }
  // empty until everything went through: a failure half-way is retried next run
  replaceFile(join(p.path, WHITELIST_MD5_FILE), '', 0o644)
  await fw(ctx, ['--remove-rules', 'ipv4', 'filter', ctx.chain])
  for (const ip of parsed) await fw(ctx, ['--add-rule', 'ipv4', 'filter', ctx.chain, '0', '-d', ip, '-j', 'ACCEPT'])
  await fw(ctx, ['--add-rule', 'ipv4', 'filter', ctx.chain, '0', '-j', 'REJECT'])
  if (!(await isYes(ctx, ['--query-rule', ...ctx.hook]))) await fw(ctx, ['--add-rule', ...ctx.hook])
  await reload(ctx)
  replaceFile(join(p.path, WHITELIST_MD5_FILE), md5, 0o644)
  p.log.info(`Updated rules for partition ${p.id}.`)
}

/**
 * The addresses of the whitelist text: a JSON list whose IPv4 entries are kept (normalised,
 * each once, at most MAX_ENTRIES), others warned about. undefined when the text is not a JSON list.
 */
export function whitelistAddresses(text: string, warn: (msg: string) => void): string[] | undefined {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  if (!Array.isArray(value)) return undefined
  const out: string[] = []
  let dropped = 0
  for (const entry of value) {
    const shown = escapeControls(typeof entry === 'string' ? entry : (JSON.stringify(entry) ?? String(entry))).slice(0, 100)
    if (typeof entry === 'string' && isIPv4(entry)) {
      const ip = entry
        .split('.')
        .map((b) => String(Number(b)))
        .join('.')
      if (out.includes(ip)) continue
      if (out.length >= MAX_ENTRIES) dropped++
      else out.push(ip)
    } else if (typeof entry === 'string' && isIPv6(entry)) warn(`Entry '${shown}' is not an IPv4`)
    else warn(`Entry '${shown}' is not a real IP`)
  }
  if (dropped > 0) warn(`Whitelist: ${dropped} addresses beyond the first ${MAX_ENTRIES} ignored`)
  return out
}

/**
 * Removes the chain and the hook rule when present, reloading firewalld if anything was
 * removed. True when something was removed.
 */
async function cleanUp(ctx: Ctx): Promise<boolean> {
  let removed = false
  if (await isYes(ctx, ['--query-chain', 'ipv4', 'filter', ctx.chain])) {
    await fw(ctx, ['--remove-rules', 'ipv4', 'filter', ctx.chain])
    await fw(ctx, ['--remove-chain', 'ipv4', 'filter', ctx.chain])
    removed = true
  }
  if (await isYes(ctx, ['--query-rule', ...ctx.hook])) {
    await fw(ctx, ['--remove-rule', ...ctx.hook])
    removed = true
  }
  if (removed) await reload(ctx)
  return removed
}

/**
 * The chain and hook rule of a partition, or undefined (with a warning) when they cannot be
 * named safely: an identifier that could be read as an option or is too long for a chain
 * name, or a partition owned by root (its rule would whitelist all of root's traffic).
 */
function context(cmd: string[], p: ManagerPartition, runner: Runner): Ctx | undefined {
  const chain = `${p.id}-whitelist`
  if (!isSafeId(p.id) || p.id.startsWith('-') || chain.length > 28) {
    p.log.warning(`Whitelist firewall: partition id ${quote(p.id)} cannot name a firewall chain (letters, digits, '._-', at most 18 characters), manager skipped`)
    return undefined
  }
  if (!Number.isInteger(p.owner.uid) || p.owner.uid <= 0) {
    p.log.warning(`Whitelist firewall: partition ${p.id} belongs to uid ${p.owner.uid}, manager skipped (it would restrict root's own traffic)`)
    return undefined
  }
  return { cmd, chain, hook: ['ipv4', 'filter', 'OUTPUT', '0', '-m', 'owner', '--uid-owner', String(p.owner.uid), '-j', chain], runner, p }
}

/** `<firewall_cmd> --direct --permanent <args>`; its output (stdout + stderr), stripped. */
async function fw(ctx: Ctx, args: string[]): Promise<{ code: number | null; out: string }> {
  const r = await ctx.runner.run([...ctx.cmd, '--direct', '--permanent', ...args], { timeoutMs: TIMEOUT_MS })
  return { code: r.code, out: (r.stdout + r.stderr).trim() }
}

async function isYes(ctx: Ctx, args: string[]): Promise<boolean> {
  return (await fw(ctx, args)).out === 'yes'
}

async function reload(ctx: Ctx): Promise<void> {
  const r = await ctx.runner.run([...ctx.cmd, '--reload'], { timeoutMs: TIMEOUT_MS })
  if (r.code !== 0) {
    throw new SlapError(`Problem while reloading firewalld: ${escapeControls((r.stdout + r.stderr).trim().slice(0, 2000))} (exit ${r.code ?? 'signal'})`, {
      code: 'E_FIREWALL',
      hint: 'check that firewalld runs (firewall-cmd --state)',
    })
  }
}

/** The stored md5, or undefined when the state file is absent or not a small regular file. */
function readMd5(p: ManagerPartition): string | undefined {
  const read = readUserFile(join(p.path, WHITELIST_MD5_FILE), 64)
  return read.kind === 'ok' ? read.bytes.toString('utf8').trim() : undefined
}

/** Deletes the md5 state file (a link is removed itself, not its target). */
function removeMd5(p: ManagerPartition): void {
  try {
    unlinkSync(join(p.path, WHITELIST_MD5_FILE))
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code !== 'ENOENT' && code !== 'EISDIR' && code !== 'EPERM') throw e
  }
}
