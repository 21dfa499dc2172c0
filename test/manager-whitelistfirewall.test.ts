// The whitelistfirewall manager (node-extras §1.8, checklist items 31-37) against a REAL
// firewalld in a network namespace (test/firewalld-ns.ts): the exact command sequences
// (recorded by a wrapper that logs its arguments and execs the real firewall-cmd), the md5
// state file, real outgoing traffic of the partition's uid, and the hostile input and state
// files of the partition's user.
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { chownSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import type { FirewallOptions, Manager, ManagerOptions, ManagerPartition } from '../src/managers.ts'
import { MAX_ENTRIES, WHITELIST_FILE, WHITELIST_MD5_FILE, whitelistAddresses, whitelistfirewallManager } from '../src/manager-whitelistfirewall.ts'
import { createLogger, type Logger } from '../src/log.ts'
import type { Supervisor } from '../src/supervisor.ts'
import { realRunner } from '../src/system.ts'
import { firewalldNamespace, firewalldProblem, recordingFirewallCmd, type FirewalldNs } from './firewalld-ns.ts'
import { skip, tempDir } from './helpers.ts'

const UID = 4242
const CHAIN = 'slappart0-whitelist'
const Q = '--direct --permanent'
const HOOK = `ipv4 filter OUTPUT 0 -m owner --uid-owner ${UID} -j ${CHAIN}`

function memLog(): Logger & { lines: string[] } {
  const lines: string[] = []
  const log = createLogger({ level: 'debug', write: (l) => void lines.push(l), isTTY: false })
  return Object.assign(log, { lines })
}

// --- pure ---

const pure = suite('whitelist entries')

pure('item 35: IPv6 and garbage entries are warned about and skipped; IPv4 kept once; not a list is undefined', () => {
  const warnings: string[] = []
  const got = whitelistAddresses(JSON.stringify(['10.0.0.1', '::1', 'fe80::1%eth0', 'nonsense', 12, null, '10.0.0.1', '010.0.0.1', '1.2.3.4\n-j ACCEPT', '127.0.0.1']), (m) => warnings.push(m))
  assert.equal(got, ['10.0.0.1', '127.0.0.1'])
  assert.equal(warnings, [
    "Entry '::1' is not an IPv4",
    "Entry 'fe80::1%eth0' is not an IPv4",
    "Entry 'nonsense' is not a real IP",
    "Entry '12' is not a real IP",
    "Entry 'null' is not a real IP",
    "Entry '010.0.0.1' is not a real IP",
    "Entry '1.2.3.4\\n-j ACCEPT' is not a real IP",
  ])
  assert.is(whitelistAddresses('not json', () => undefined), undefined)
  assert.is(whitelistAddresses('{"a": 1}', () => undefined), undefined)
  assert.is(whitelistAddresses('"10.0.0.1"', () => undefined), undefined)
  // a list too long to apply in reasonable time is cut, with a warning
  const many = Array.from({ length: MAX_ENTRIES + 5 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)
  const w2: string[] = []
  assert.is(whitelistAddresses(JSON.stringify(many), (m) => w2.push(m))?.length, MAX_ENTRIES)
  assert.equal(w2, [`Whitelist: 5 addresses beyond the first ${MAX_ENTRIES} ignored`])
})

pure.run()

// --- real firewalld ---

const real = suite('whitelistfirewall real firewalld')

interface Ctx {
  ns: FirewalldNs
  dir: string
  rec: string
  /** argv lines the wrapper saw since the last take(), without the firewall_cmd prefix */
  take(): string[]
  firewall: FirewallOptions
}
let ctx: Ctx | undefined
let problem: string | undefined

real.before(async () => {
  problem = firewalldProblem()
  if (problem) return
  const dir = tempDir('slapos-wl-')
  const ns = await firewalldNamespace(dir)
  try {
    await ns.startDaemons()
    ns.run(['ip', 'addr', 'add', '10.0.0.9/32', 'dev', 'lo'])
    await ns.listen('10.0.0.9', 7000)
    await ns.listen('127.0.0.1', 7001)
  } catch (e) {
    await ns.stop()
    throw e
  }
  const recorder = recordingFirewallCmd(ns, dir)
  ctx = {
    ns,
    dir,
    rec: recorder.command.split(' ')[0] ?? '',
    take: recorder.take,
    firewall: {
      firewallCmd: recorder.command,
      reloadConfigCmd: 'true',
      firewallExecutable: '',
      dbusExecutable: '',
      logFile: '/var/log/firewall.log',
      dbusLogFile: '/var/log/dbus.log',
      authorizedSources: [],
      testing: false,
    },
  }
})

real.after(async () => {
  await ctx?.ns.stop()
})

function manager(firewall: FirewallOptions | undefined): Manager {
  const options: ManagerOptions = { settings: new Map(), firewall, sections: new Map(), runner: realRunner }
  return whitelistfirewallManager(options)
}

/** A partition directory of the user UID (as format makes them), and its manager view. */
function partition(id: string, uid = UID): ManagerPartition & { log: Logger & { lines: string[] } } {
  const root = join(ctx?.dir ?? tempDir('slapos-wl-'), 'inst')
  const path = join(root, id)
  mkdirSync(path, { recursive: true })
  chownSync(path, uid, uid)
  return {
    id,
    path,
    owner: { uid, gid: uid, name: `slapuser-${id}`, home: path, groups: [uid] },
    state: 'started',
    addresses: [],
    instanceRoot: root,
    sup: undefined as unknown as Supervisor,
    processes: { id, path, uid, gid: uid, user: `slapuser-${id}`, home: path },
    log: memLog(),
    now: () => new Date(),
  }
}

/** Writes the whitelist as the partition's user would. */
function whitelist(p: ManagerPartition, text: string): Buffer {
  const file = join(p.path, WHITELIST_FILE)
  writeFileSync(file, text)
  chownSync(file, p.owner.uid, p.owner.gid)
  return readFileSync(file)
}

function md5(b: Buffer): string {
  return createHash('md5').update(b).digest('hex')
}

real('item 31: fresh firewalld, ["127.0.0.1"]: the exact sequence, the md5 file, and the partition user can reach only 127.0.0.1', async () => {
  if (problem) return skip(problem)
  const { ns, take, firewall } = ctx!
  const p = partition('slappart0')
  assert.ok(ns.connect('10.0.0.9', 7000, { uid: UID }).ok, 'open before the whitelist')
  const bytes = whitelist(p, '["127.0.0.1"]')
  await manager(firewall).instanceTearDown!(p)
  assert.equal(take(), [
    `${Q} --query-chain ipv4 filter ${CHAIN}`,
    `${Q} --add-chain ipv4 filter ${CHAIN}`,
    `${Q} --remove-rules ipv4 filter ${CHAIN}`,
    `${Q} --add-rule ipv4 filter ${CHAIN} 0 -d 127.0.0.1 -j ACCEPT`,
    `${Q} --add-rule ipv4 filter ${CHAIN} 0 -j REJECT`,
    `${Q} --query-rule ${HOOK}`,
    `${Q} --add-rule ${HOOK}`,
    '--reload',
  ])
  const md5file = join(p.path, WHITELIST_MD5_FILE)
  assert.is(readFileSync(md5file, 'utf8'), md5(bytes))
  assert.is(lstatSync(md5file).uid, 0)
  assert.ok(p.log.lines.some((l) => l.includes('Configuring partition slappart0.')) && p.log.lines.some((l) => l.includes('Updated rules for partition slappart0.')))
  const rules = ns.run(['iptables', '-S']).stdout
  assert.ok(rules.includes(`-A OUTPUT -m owner --uid-owner ${UID} -j ${CHAIN}`), rules)
  assert.ok(rules.includes(`-A ${CHAIN} -d 127.0.0.1/32 -j ACCEPT`), rules)
  // real traffic of the partition's uid: the listed address only; other users are not affected
  assert.ok(ns.connect('127.0.0.1', 7001, { uid: UID }).ok, 'whitelisted')
  const refused = ns.connect('10.0.0.9', 7000, { uid: UID })
  assert.not.ok(refused.ok)
  assert.match(refused.output, /refused/i)
  assert.ok(ns.connect('10.0.0.9', 7000, { uid: UID + 1 }).ok, 'another uid')
  assert.ok(ns.connect('10.0.0.9', 7000).ok, 'root')
})

real('item 32: second run, chain present, same file: only the chain query', async () => {
  if (problem) return skip(problem)
  const { take, firewall } = ctx!
  const p = partition('slappart0')
  await manager(firewall).instanceTearDown!(p)
  assert.equal(take(), [`${Q} --query-chain ipv4 filter ${CHAIN}`])
  assert.ok(p.log.lines.some((l) => l.includes('DEBUG') && l.includes('Skipped up-to-date rules for partition slappart0.')), p.log.lines.join('\n'))
})

real('item 33: an address added: remove-rules, every ACCEPT, REJECT, the owner query and --reload (no add-chain, no owner add)', async () => {
  if (problem) return skip(problem)
  const { ns, take, firewall } = ctx!
  const p = partition('slappart0')
  const bytes = whitelist(p, '["127.0.0.1", "10.0.0.9"]')
  await manager(firewall).instanceTearDown!(p)
  assert.equal(take(), [
    `${Q} --query-chain ipv4 filter ${CHAIN}`,
    `${Q} --remove-rules ipv4 filter ${CHAIN}`,
    `${Q} --add-rule ipv4 filter ${CHAIN} 0 -d 127.0.0.1 -j ACCEPT`,
    `${Q} --add-rule ipv4 filter ${CHAIN} 0 -d 10.0.0.9 -j ACCEPT`,
    `${Q} --add-rule ipv4 filter ${CHAIN} 0 -j REJECT`,
    `${Q} --query-rule ${HOOK}`,
    '--reload',
  ])
  assert.is(readFileSync(join(p.path, WHITELIST_MD5_FILE), 'utf8'), md5(bytes))
  assert.ok(ns.connect('10.0.0.9', 7000, { uid: UID }).ok, 'now whitelisted')
})

real('item 34: file removed: remove-rules, remove-chain, remove-rule owner, --reload, md5 deleted; then with nothing present only the two queries', async () => {
  if (problem) return skip(problem)
  const { ns, take, firewall } = ctx!
  const p = partition('slappart0')
  whitelist(p, '["127.0.0.1"]')
  await manager(firewall).instanceTearDown!(p)
  assert.ok(!ns.connect('10.0.0.9', 7000, { uid: UID }).ok)
  take()
  rmSync(join(p.path, WHITELIST_FILE))
  await manager(firewall).instanceTearDown!(p)
  assert.equal(take(), [
    `${Q} --query-chain ipv4 filter ${CHAIN}`,
    `${Q} --remove-rules ipv4 filter ${CHAIN}`,
    `${Q} --remove-chain ipv4 filter ${CHAIN}`,
    `${Q} --query-rule ${HOOK}`,
    `${Q} --remove-rule ${HOOK}`,
    '--reload',
  ])
  assert.not.ok(existsSync(join(p.path, WHITELIST_MD5_FILE)))
  assert.ok(p.log.lines.some((l) => l.includes(`File ${join(p.path, WHITELIST_FILE)} does not exists, removed configuration for partition slappart0.`)), p.log.lines.join('\n'))
  assert.ok(ns.connect('10.0.0.9', 7000, { uid: UID }).ok, 'free again')
  assert.not.ok(ns.run(['iptables', '-S']).stdout.includes(CHAIN))
  await manager(firewall).instanceTearDown!(p)
  assert.equal(take(), [`${Q} --query-chain ipv4 filter ${CHAIN}`, `${Q} --query-rule ${HOOK}`])
})

real('item 35: a non-JSON or non-list file issues no command and leaves no md5 file', async () => {
  if (problem) return skip(problem)
  const { take, firewall } = ctx!
  const p = partition('slappart0')
  for (const text of ['not json', '{"ip": "10.0.0.9"}', '"10.0.0.9"']) {
    whitelist(p, text)
    await manager(firewall).instanceTearDown!(p)
    assert.equal(take(), [], text)
    assert.not.ok(existsSync(join(p.path, WHITELIST_MD5_FILE)))
    assert.ok(p.log.lines.some((l) => l.includes('WARNING') && l.includes(`Bad whitelist firewall config ${join(p.path, WHITELIST_FILE)}`)), p.log.lines.join('\n'))
  }
  // IPv6 and garbage entries: warned, skipped, the rest applied
  whitelist(p, '["::1", "garbage", "127.0.0.1"]')
  await manager(firewall).instanceTearDown!(p)
  const commands = take()
  assert.equal(
    commands.filter((c) => c.includes(' ACCEPT')),
    [`${Q} --add-rule ipv4 filter ${CHAIN} 0 -d 127.0.0.1 -j ACCEPT`],
  )
  assert.ok(p.log.lines.some((l) => l.includes("Entry '::1' is not an IPv4")) && p.log.lines.some((l) => l.includes("Entry 'garbage' is not a real IP")))
})

real('item 36: node report on a destroyed partition performs the clean-up sequence of item 34', async () => {
  if (problem) return skip(problem)
  const { ns, take, firewall } = ctx!
  const p = partition('slappart0')
  whitelist(p, '["127.0.0.1"]')
  await manager(firewall).instanceTearDown!(p)
  take()
  await manager(firewall).report!({ ...p, state: 'destroyed' })
  assert.equal(take(), [
    `${Q} --query-chain ipv4 filter ${CHAIN}`,
    `${Q} --remove-rules ipv4 filter ${CHAIN}`,
    `${Q} --remove-chain ipv4 filter ${CHAIN}`,
    `${Q} --query-rule ${HOOK}`,
    `${Q} --remove-rule ${HOOK}`,
    '--reload',
  ])
  assert.not.ok(existsSync(join(p.path, WHITELIST_MD5_FILE)))
  assert.ok(p.log.lines.some((l) => l.includes('Cleaned up firewall for partition slappart0.')))
  assert.ok(ns.connect('10.0.0.9', 7000, { uid: UID }).ok)
  rmSync(join(p.path, WHITELIST_FILE))
})

real('item 37: without [firewall], tear-down only warns "manager disabled"; report warns too and lets destruction go on', async () => {
  if (problem) return skip(problem)
  const { take } = ctx!
  const p = partition('slappart0')
  whitelist(p, '["127.0.0.1"]')
  await manager(undefined).instanceTearDown!(p)
  await manager(undefined).report!(p)
  assert.equal(take(), [])
  assert.is(p.log.lines.filter((l) => l.includes('WARNING') && l.includes('[firewall] missing in the configuration, manager disabled.')).length, 2)
  rmSync(join(p.path, WHITELIST_FILE))
})

real('a failed reload fails the partition and leaves the md5 empty, so the next run applies again', async () => {
  if (problem) return skip(problem)
  const { ns, take, firewall, dir } = ctx!
  const p = partition('slappart0')
  const bad = join(dir, 'noreload.sh')
  writeFileSync(bad, `#!/bin/sh\nfor a in "$@"; do [ "$a" = --reload ] && { echo 'Error: RELOAD_FAILED' >&2; exit 4; }; done\nexec "$@"\n`, { mode: 0o755 })
  const bytes = whitelist(p, '["127.0.0.1"]')
  try {
    await manager({ ...firewall, firewallCmd: `${bad} ${firewall.firewallCmd}` }).instanceTearDown!(p)
    assert.unreachable('the reload failed')
  } catch (e) {
    assert.match((e as Error).message, /Problem while reloading firewalld: Error: RELOAD_FAILED \(exit 4\)/)
  }
  assert.is(readFileSync(join(p.path, WHITELIST_MD5_FILE), 'utf8'), '')
  take()
  await manager(firewall).instanceTearDown!(p)
  assert.ok(take().includes('--reload'))
  assert.is(readFileSync(join(p.path, WHITELIST_MD5_FILE), 'utf8'), md5(bytes))
  assert.not.ok(ns.connect('10.0.0.9', 7000, { uid: UID }).ok)
  rmSync(join(p.path, WHITELIST_FILE))
  await manager(firewall).instanceTearDown!(p)
  take()
})

real('hostile partition files: links, FIFOs and oversized input are refused; a planted md5 link is replaced, not written through; root-owned partitions are skipped', async () => {
  if (problem) return skip(problem)
  const { take, firewall, dir } = ctx!
  const p = partition('slappart0')
  const input = join(p.path, WHITELIST_FILE)
  // a link to a file the user cannot read: not followed
  const secret = join(dir, 'secret.json')
  writeFileSync(secret, '["127.0.0.1"]', { mode: 0o600 })
  symlinkSync(secret, input)
  await manager(firewall).instanceTearDown!(p)
  assert.equal(take(), [])
  assert.ok(p.log.lines.some((l) => l.includes(`Bad whitelist firewall config ${input}: not a regular file`)), p.log.lines.join('\n'))
  rmSync(input)
  // a FIFO does not block the run
  execFileSync('mkfifo', [input])
  await manager(firewall).instanceTearDown!(p)
  assert.equal(take(), [])
  rmSync(input)
  // oversized
  writeFileSync(input, `[${'"127.0.0.1",'.repeat(100_000)}"127.0.0.1"]`)
  await manager(firewall).instanceTearDown!(p)
  assert.equal(take(), [])
  assert.ok(p.log.lines.some((l) => l.includes('larger than')))
  // the md5 state file planted as a link to a root file: the link is replaced, the target kept
  const precious = join(dir, 'precious')
  writeFileSync(precious, 'keep me')
  const md5file = join(p.path, WHITELIST_MD5_FILE)
  rmSync(md5file, { force: true })
  symlinkSync(precious, md5file)
  const bytes = whitelist(p, '["127.0.0.1"]')
  await manager(firewall).instanceTearDown!(p)
  assert.is(readFileSync(precious, 'utf8'), 'keep me')
  assert.ok(lstatSync(md5file).isFile())
  assert.is(readFileSync(md5file, 'utf8'), md5(bytes))
  rmSync(input)
  await manager(firewall).instanceTearDown!(p)
  take()
  // a partition directory owned by root: its rule would whitelist all of root's traffic
  const rootOwned = partition('slappart9', 0)
  whitelist(rootOwned, '["127.0.0.1"]')
  await manager(firewall).instanceTearDown!(rootOwned)
  assert.equal(take(), [])
  assert.ok(rootOwned.log.lines.some((l) => l.includes('belongs to uid 0, manager skipped')))
  // an id too long for a chain name (iptables: 28 characters)
  const long = partition('slappart-with-a-very-long-name')
  whitelist(long, '["127.0.0.1"]')
  await manager(firewall).instanceTearDown!(long)
  assert.equal(take(), [])
  assert.ok(long.log.lines.some((l) => l.includes('cannot name a firewall chain')))
})

real('2 GiB sparse partition files: the input is refused without being read, a huge md5 file counts as no md5', async () => {
  if (problem) return skip(problem)
  const { take, firewall } = ctx!
  const p = partition('slappart0')
  const input = join(p.path, WHITELIST_FILE)
  whitelist(p, '["127.0.0.1"]')
  truncateSync(input, 2 ** 31)
  assert.is(statSync(input).size, 2 ** 31)
  await manager(firewall).instanceTearDown!(p)
  assert.equal(take(), [])
  assert.ok(p.log.lines.some((l) => l.includes(`Bad whitelist firewall config ${input}: larger than ${1 << 20} bytes`)), p.log.lines.join('\n'))
  const bytes = whitelist(p, '["127.0.0.1"]')
  await manager(firewall).instanceTearDown!(p)
  take()
  // the user swaps the md5 state file for a huge sparse one of its own: not read, rules applied again
  const md5file = join(p.path, WHITELIST_MD5_FILE)
  rmSync(md5file)
  writeFileSync(md5file, md5(bytes))
  chownSync(md5file, UID, UID)
  truncateSync(md5file, 2 ** 31)
  await manager(firewall).instanceTearDown!(p)
  assert.ok(take().includes('--reload'), 'a state file that cannot be read is no proof of up-to-date rules')
  assert.is(readFileSync(md5file, 'utf8'), md5(bytes))
  assert.is(lstatSync(md5file).uid, 0)
  rmSync(input)
  await manager(firewall).instanceTearDown!(p)
  take()
})

real.run()
