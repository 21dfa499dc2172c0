// `slapos node boot` (grid.md §9.1, node-ops.md §3), run by cron at @reboot: wait for the
// node's IPv6, format until it works, bang the master with "Reboot" until it hears it, then
// delete every partition's .timestamp so the next `node instance` re-deploys and restarts
// everything. Used by commands/node-boot.ts. Format and bang are this same program run again
// (ctx.self), so each step logs and fails exactly as when an operator runs it.
//
//   [ipv6_interface has a global IPv6?] --no--> wait 5 s (progress every minute, --ipv6-timeout)
//        | yes (or no interface configured)
//   node format --now --verbose  --1--> wait, retry
//        |                       --2--> wait, until the master answers, retry
//        | 0
//   node bang -m Reboot          --!=0--> wait, retry
//        | 0
//   rm <instance_root>/<partition_base_name>*/.timestamp
import { networkInterfaces } from 'node:os'
import { connect, isIP } from 'node:net'
import { readdirSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { chooseBaseIpv6 } from './format-plan.ts'
import type { Logger } from './log.ts'
import type { Runner } from './system.ts'

export interface BootOptions {
  cfgPath: string
  instanceRoot: string
  partitionBaseName: string
  /** `[slapformat] ipv6_interface`, else `interface_name`; none: no wait */
  ipv6Interface?: string | undefined
  masterUrl: string
  /** how to run this program again */
  self: string[]
  /** extra words for the child commands (e.g. --log-file PATH) */
  childArgs: string[]
  runner: Runner
  env: NodeJS.ProcessEnv
  log: Logger
  /** child output goes here as it comes */
  output(chunk: string): void
  /** seconds between two attempts of format or bang (15 like the original) */
  retrySec: number
  /** seconds between two looks at the interface and at the master (5) */
  pollSec: number
  /** give up waiting for IPv6 after this many seconds; 0 waits for ever (the original) */
  ipv6TimeoutSec: number
  /** addresses of an interface; the real one reads the host */
  interfaceAddresses?: (name: string) => Array<{ addr: string; prefixlen: number }>
}

export class BootError extends Error {}

/** The whole boot sequence. Resolves once the timestamps are deleted; throws BootError when IPv6 never came. */
export async function bootNode(o: BootOptions): Promise<void> {
  if (o.ipv6Interface) await waitForIpv6(o)
  await untilSuccess(o, 'node format', ['node', 'format', '--cfg', o.cfgPath, '--now', '--verbose'], async (code) => {
    if (code === 2) {
      o.log.warning(`node format could not reach the master; waiting until ${masterHost(o.masterUrl)} answers`)
      await sleep(o.retrySec)
      await waitForMaster(o)
    }
  })
  await untilSuccess(o, 'node bang', ['node', 'bang', '--cfg', o.cfgPath, '-m', 'Reboot'])
  removeTimestamps(o.instanceRoot, o.partitionBaseName, o.log)
}

/** Deletes `<instance_root>/<base>*\/.timestamp`; returns the files deleted. */
export function removeTimestamps(instanceRoot: string, base: string, log: Logger): string[] {
  const removed: string[] = []
  let names: string[]
  try {
    names = readdirSync(instanceRoot)
  } catch {
    return removed
  }
  for (const name of names.sort()) {
    if (!name.startsWith(base) || name.startsWith('.')) continue
    const file = join(instanceRoot, name, '.timestamp')
    try {
      unlinkSync(file)
      log.info(`Removing ${file}`)
      removed.push(file)
    } catch {
      // no timestamp there (or not a directory)
    }
  }
  return removed
}

/** A global IPv6 on the interface, as format would choose its base address (format.md §4.4.1). */
export function hasGlobalIpv6(addresses: Array<{ addr: string; prefixlen: number }>): boolean {
  return chooseBaseIpv6(addresses.map((a) => ({ addr: a.addr.split('%')[0] ?? a.addr, prefixlen: a.prefixlen }))) !== undefined
}

// --- internal ---

async function waitForIpv6(o: BootOptions): Promise<void> {
  const iface = o.ipv6Interface ?? ''
  const read = o.interfaceAddresses ?? hostAddresses
  const start = Date.now()
  let said = 0
  for (;;) {
    if (hasGlobalIpv6(read(iface))) {
      if (said) o.log.info(`IPv6 is ready on ${iface}`)
      return
    }
    const waited = Math.round((Date.now() - start) / 1000)
    if (o.ipv6TimeoutSec > 0 && waited >= o.ipv6TimeoutSec) {
      throw new BootError(`No global IPv6 address on interface ${iface} after ${waited} s`)
    }
    // first time at once, then once a minute: a reboot can wait long for its network
    if (said === 0 || waited - said >= 60) {
      o.log.warning(`No global IPv6 address on interface ${iface} yet (waited ${waited} s); checking every ${o.pollSec} s`)
      said = Math.max(waited, 1)
    }
    await sleep(o.pollSec)
  }
}

async function untilSuccess(o: BootOptions, what: string, words: string[], onFailure?: (code: number | null) => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    o.log.info(`Running slapos ${what}${attempt > 1 ? ` (attempt ${attempt})` : ''}...`)
    const argv = [...o.self, ...words, ...o.childArgs]
    const r = await o.runner.run(argv, { env: o.env, onOutput: o.output }).catch((err: unknown) => ({ code: null, signal: null, stdout: '', stderr: String(err), timedOut: false }))
    if (r.code === 0) return
    o.log.error(`slapos ${what} failed (exit ${r.code ?? r.signal ?? 'unknown'}); trying again in ${o.retrySec} s`)
    if (onFailure && r.code === 2) await onFailure(r.code)
    else await sleep(o.retrySec)
  }
}

/**
 * The original pings the master's host (ping/ping6 -c 2). We open a TCP connection to the
 * master's port instead: it needs no ping binary, passes firewalls that drop ICMP, and
 * proves the master itself answers.
 */
async function waitForMaster(o: BootOptions): Promise<void> {
  const url = new URL(o.masterUrl)
  const host = masterHost(o.masterUrl)
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80))
  for (;;) {
    if (await reachable(host, port)) {
      o.log.info(`The master at ${host} answers`)
      return
    }
    o.log.warning(`The master at ${host}:${port} is unreachable; trying again in ${o.pollSec} s`)
    await sleep(o.pollSec)
  }
}

function masterHost(masterUrl: string): string {
  const h = new URL(masterUrl).hostname
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h
}

function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const sock = connect({ host, port, family: isIP(host) || undefined, timeout: 5000 })
    const done = (ok: boolean) => {
      sock.destroy()
      res(ok)
    }
    sock.once('connect', () => done(true))
    sock.once('timeout', () => done(false))
    sock.once('error', () => done(false))
  })
}

function hostAddresses(name: string): Array<{ addr: string; prefixlen: number }> {
  const list = networkInterfaces()[name] ?? []
  return list.filter((a) => a.family === 'IPv6').map((a) => ({ addr: a.address, prefixlen: Number((a.cidr ?? '/128').split('/')[1]) }))
}

function sleep(sec: number): Promise<void> {
  return new Promise((r) => setTimeout(r, sec * 1000))
}
