// firewall.ts (node-extras §2): rule generation (pure), the rule grammar that guards the
// rules file, applying and removing rules against a REAL firewalld in a network namespace
// (test/firewalld-ns.ts) with real traffic, the hostile rules file, and the supervisord
// programs `firewall` and `dbus` checked by a real supervisord that runs that firewalld.
// The exact command sequences are recorded by a wrapper that logs its argv and execs the real
// firewall-cmd.
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { NotFoundError, ServerError } from '../src/errors.ts'
import {
  applyFirewall,
  FIREWALL_RULES_FILE,
  fetchTreeAddresses,
  firewallFilter,
  firewallProgramText,
  firewallRules,
  isOurRule,
  isSource,
  removeFirewall,
  routeAddresses,
  treeAddresses,
  writeFirewallPrograms,
  type FirewallCommandOptions,
} from '../src/firewall.ts'
import { createLogger, type Logger } from '../src/log.ts'
import { dumps, loads, Tuple } from '../src/slap-protocol.ts'
import { createInstanceRootStructure, Supervisor, supervisorPaths, writeSupervisordConf } from '../src/supervisor.ts'
import { realRunner } from '../src/system.ts'
import { firewalldNamespace, firewalldProblem, recordingFirewallCmd, type FirewalldNs } from './firewalld-ns.ts'
import { skip, tempDir } from './helpers.ts'
import { stopSupervisord, waitFor } from './node-helpers.ts'

const B = '--permanent --direct --add-rule ipv4 filter'

/** What a master sends for `/getHostingSubscriptionIpList`: a list of (interface, address) tuples. */
const TREE_XML =
  '<marshal><list id="i2"><tuple><string>route_0</string><string>10.0.0.2</string></tuple>' +
  '<tuple><string>route_0</string><string>10.0.0.9</string></tuple><tuple><string>eth0</string><string>fd00::2</string></tuple></list></marshal>'

/** Awaits `fn` and checks it throws an error whose message matches `re`. */
async function rejects(fn: () => Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await fn()
  } catch (e) {
    assert.match(String((e as Error).message), re)
    return
  }
  assert.unreachable(`expected an error matching ${re}`)
}

function memLog(): Logger & { lines: string[] } {
  const lines: string[] = []
  const log = createLogger({ level: 'debug', write: (l) => void lines.push(l), isTTY: false })
  return Object.assign(log, { lines })
}

// --- rule generation (pure) ---

const rules = suite('firewall rules')

rules('item 41: one route_ address, tree and authorized sources: 2*(|T|+|A|) ACCEPT then the four REJECT rules', () => {
  const warnings: string[] = []
  const d = '10.0.0.9'
  const tree = treeAddresses([['route_0', '10.0.0.2'], ['route_1', d], ['eth0', '10.0.0.3'], ['eth0', 'fd00::3'], 'junk'], [d])
  assert.equal(tree, ['10.0.0.2', '10.0.0.3'], 'the partition itself and IPv6 are not tree sources')
  const out = firewallRules({ destinations: [d], tree, filter: firewallFilter({}), authorizedSources: ['192.168.0.0/16'] }, (m) => warnings.push(m))
  assert.equal(out, [
    `${B} INPUT 0 -s 10.0.0.2 -d ${d} -j ACCEPT`,
    `${B} FORWARD 0 -s 10.0.0.2 -d ${d} -j ACCEPT`,
    `${B} INPUT 0 -s 10.0.0.3 -d ${d} -j ACCEPT`,
    `${B} FORWARD 0 -s 10.0.0.3 -d ${d} -j ACCEPT`,
    `${B} INPUT 0 -s 192.168.0.0/16 -d ${d} -j ACCEPT`,
    `${B} FORWARD 0 -s 192.168.0.0/16 -d ${d} -j ACCEPT`,
    `${B} INPUT 1000 -d ${d} -j REJECT`,
    `${B} FORWARD 1000 -d ${d} -j REJECT`,
    `${B} INPUT 900 -d ${d} -m state --state ESTABLISHED,RELATED -j REJECT`,
    `${B} FORWARD 900 -d ${d} -m state --state ESTABLISHED,RELATED -j REJECT`,
  ])
  assert.is(out.length, 2 * (2 + 1) + 4)
  assert.equal(warnings, [])
})

rules('item 41: the master\'s list of tuples, decoded by loads(), gives the tree addresses', () => {
  const decoded = loads(TREE_XML)
  assert.ok(Array.isArray(decoded) && decoded.every((e) => e instanceof Tuple), 'the decoder gives Tuple objects, not arrays')
  assert.is(dumps(decoded), TREE_XML, 'the XML is what xml_marshaller writes for a list of tuples')
  assert.equal(treeAddresses(decoded as unknown[], ['10.0.0.9']), ['10.0.0.2'])
  const out = firewallRules({ destinations: ['10.0.0.9'], tree: treeAddresses(decoded as unknown[], ['10.0.0.9']), filter: firewallFilter({}), authorizedSources: [] }, () => undefined)
  assert.ok(out.includes(`${B} INPUT 0 -s 10.0.0.2 -d 10.0.0.9 -j ACCEPT`), out.join('\n'))
})

rules('item 42: fw_restricted_access = off: 800/900 REJECT per rejected source, then ACCEPT for tree + authorized, no catch-all', () => {
  const d = '10.0.0.9'
  const filter = firewallFilter({ fw_restricted_access: 'off', fw_rejected_sources: '10.1.0.1 10.2.0.0/24', fw_authorized_sources: '10.3.0.1' })
  assert.is(filter.restricted, false)
  const out = firewallRules({ destinations: [d], tree: ['10.0.0.2'], filter, authorizedSources: ['10.4.0.1'] }, () => undefined)
  const state = '-m state --state ESTABLISHED,RELATED -j REJECT'
  assert.equal(out, [
    `${B} INPUT 800 -s 10.1.0.1 -d ${d} ${state}`,
    `${B} FORWARD 800 -s 10.1.0.1 -d ${d} ${state}`,
    `${B} INPUT 900 -s 10.1.0.1 -d ${d} -j REJECT`,
    `${B} FORWARD 900 -s 10.1.0.1 -d ${d} -j REJECT`,
    `${B} INPUT 800 -s 10.2.0.0/24 -d ${d} ${state}`,
    `${B} FORWARD 800 -s 10.2.0.0/24 -d ${d} ${state}`,
    `${B} INPUT 900 -s 10.2.0.0/24 -d ${d} -j REJECT`,
    `${B} FORWARD 900 -s 10.2.0.0/24 -d ${d} -j REJECT`,
    // tree, then [firewall] authorized_sources, then fw_authorized_sources (the original's order)
    `${B} INPUT 0 -s 10.0.0.2 -d ${d} -j ACCEPT`,
    `${B} FORWARD 0 -s 10.0.0.2 -d ${d} -j ACCEPT`,
    `${B} INPUT 0 -s 10.4.0.1 -d ${d} -j ACCEPT`,
    `${B} FORWARD 0 -s 10.4.0.1 -d ${d} -j ACCEPT`,
    `${B} INPUT 0 -s 10.3.0.1 -d ${d} -j ACCEPT`,
    `${B} FORWARD 0 -s 10.3.0.1 -d ${d} -j ACCEPT`,
  ])
  assert.not.ok(out.some((r) => / 1000 /.test(r)))
  // only the exact value `off` lifts the restriction
  for (const v of ['OFF', 'no', 'false', '', 'off ']) assert.is(firewallFilter({ fw_restricted_access: v }).restricted, true, v)
})

rules('item 43: fw_authorized_sources (spaces) and [firewall] authorized_sources both accepted; invalid ones warned once and left out', () => {
  const warnings: string[] = []
  const filter = firewallFilter({ fw_authorized_sources: '10.5.0.1  10.6.0.0/8 10.0.0.300 bad 1.2.3.4;touch\u0007x' })
  const out = firewallRules(
    { destinations: ['10.0.0.9', '10.0.0.10'], tree: [], filter, authorizedSources: ['172.16.0.0/12', '10.0.0.0/33', '010.1.1.1', '1.2.3.4/8/8'] },
    (m) => warnings.push(m),
  )
  const sources = [...new Set(out.filter((r) => r.includes(' -s ')).map((r) => r.split(' -s ')[1]!.split(' ')[0]))]
  assert.equal(sources, ['10.5.0.1', '10.6.0.0/8', '172.16.0.0/12'])
  assert.equal(warnings, [
    'IP/Network address 10.0.0.300 is not valid. ignored..',
    'IP/Network address bad is not valid. ignored..',
    'IP/Network address 1.2.3.4;touch\\x07x is not valid. ignored..',
    'IP/Network address 10.0.0.0/33 is not valid. ignored..',
    'IP/Network address 010.1.1.1 is not valid. ignored..',
    'IP/Network address 1.2.3.4/8/8 is not valid. ignored..',
  ])
  // two destinations: one set of rules each, in one list (the original's passes undid each other)
  assert.is(out.length, 2 * (2 * 3 + 4))
  assert.ok(out.every(isOurRule))
})

rules('item 47: only route_* IPv4 addresses are protected (other interfaces and IPv6 give no rule); no _filter_dict = defaults', () => {
  const addresses: Array<[string, string]> = [
    ['slaptap0', '10.0.0.20'],
    ['route_eth0', 'fd00::1'],
    ['eth0', '10.0.0.21'],
    ['route_x', '10.0.0.22'],
    ['route_x', '10.0.0.22'],
    ['route_y', '10.0.0.023'],
  ]
  assert.equal(routeAddresses(addresses), ['10.0.0.22'])
  assert.equal(routeAddresses([['eth0', '10.0.0.21']]), [])
  const out = firewallRules({ destinations: routeAddresses(addresses), tree: [], filter: firewallFilter(undefined), authorizedSources: ['10.9.0.1'] }, () => undefined)
  assert.ok(out.every((r) => r.includes('-d 10.0.0.22 ')))
  assert.ok(out.includes(`${B} INPUT 0 -s 10.9.0.1 -d 10.0.0.22 -j ACCEPT`), 'authorized_sources apply without a filter dict')
  assert.equal(firewallRules({ destinations: [], tree: ['10.0.0.2'], filter: firewallFilter({}), authorizedSources: [] }, () => undefined), [])
  // non-string values of the master count as empty
  assert.equal(firewallFilter({ fw_restricted_access: 0, fw_authorized_sources: ['10.0.0.1'] }), { restricted: true, authorized: [''], rejected: [''] })
})

rules('rule grammar: every generated shape parses; injected or altered text does not', () => {
  const good = firewallRules(
    { destinations: ['10.0.0.9'], tree: ['10.0.0.2'], filter: firewallFilter({ fw_restricted_access: 'off', fw_rejected_sources: '10.0.0.3/32' }), authorizedSources: [] },
    () => undefined,
  ).concat(firewallRules({ destinations: ['10.0.0.9'], tree: ['10.0.0.2'], filter: firewallFilter({}), authorizedSources: [] }, () => undefined))
  assert.ok(good.length > 0 && good.every(isOurRule))
  const base = `${B} INPUT 0 -s 10.0.0.2 -d 10.0.0.9 -j ACCEPT`
  const bad = [
    `${base}; touch /tmp/pwned`,
    `${base} $(touch /tmp/pwned)`,
    `${base}\ntouch /tmp/pwned`,
    base.replace('INPUT', 'OUTPUT'),
    base.replace('ipv4', 'ipv6'),
    base.replace(' 0 ', ' 1 '),
    base.replace('ACCEPT', 'DROP'),
    base.replace('10.0.0.2', '10.0.0.256'),
    base.replace('10.0.0.2', '10.0.0.0/33'),
    base.replace('-d 10.0.0.9', '-d 10.0.0.0/8'),
    base.replace('--add-rule', '--remove-rules'),
    base.replace('--permanent ', ''),
    base.replace(' -j ', '  -j '),
    `${base} -j ACCEPT`,
    `${B} INPUT 1000 -d 10.0.0.9 -j REJECT --reject-with tcp-reset`,
    `${B} INPUT 900 -d 10.0.0.9 -m state --state NEW -j REJECT`,
    `--direct --passthrough ipv4 -F`,
    '',
  ]
  for (const b of bad) assert.not.ok(isOurRule(b), b)
  for (const v of [1, null, ['x'], { a: 1 }]) assert.not.ok(isOurRule(v))
  assert.ok(isSource('0.0.0.0/0') && isSource('255.255.255.255/32') && !isSource('1.2.3.4/') && !isSource(' 1.2.3.4'))
})

rules('tree addresses: NotFoundError (slapproxy) is an empty tree with a debug line; other errors fail', async () => {
  const log = memLog()
  assert.equal(await fetchTreeAddresses(async () => [['a', '10.0.0.2']], log), [['a', '10.0.0.2']])
  assert.equal(
    await fetchTreeAddresses(async () => {
      throw new NotFoundError('getHostingSubscriptionIpList: not found (HTTP 404)')
    }, log),
    [],
  )
  assert.ok(log.lines.some((l) => l.includes('DEBUG') && l.includes('does not give the addresses of the instance tree')), log.lines.join('\n'))
  try {
    await fetchTreeAddresses(async () => {
      throw new ServerError('boom', 500)
    }, log)
    assert.unreachable('a server error must fail the partition')
  } catch (e) {
    assert.instance(e, ServerError)
  }
})

rules.run()

// --- supervisord programs (§2.2) ---

const programs = suite('firewall programs')

programs('items 38-40: firewall.conf and dbus.conf written 0600 when set, rewritten only on change, deleted without [firewall], with testing or an empty executable', () => {
  const root = join(tempDir('slapos-fwprog-'), 'inst')
  createInstanceRootStructure(root)
  const confDir = supervisorPaths(root).confDir
  const fw = join(confDir, 'firewall.conf')
  const dbus = join(confDir, 'dbus.conf')
  const opts = {
    firewallExecutable: '/usr/sbin/firewalld --nofork --nopid',
    dbusExecutable: '/usr/bin/dbus-daemon --system --nofork',
    logFile: '/var/log/fw%1.log',
    dbusLogFile: '/var/log/dbus.log',
    testing: false,
  }
  assert.is(writeFirewallPrograms(root, undefined), false, 'item 38: nothing without [firewall]')
  assert.not.ok(existsSync(fw) || existsSync(dbus))
  assert.is(writeFirewallPrograms(root, opts), true)
  const text = readFileSync(fw, 'utf8')
  for (const line of [
    '[program:firewall]',
    'directory=/opt/slapos',
    'command=/usr/sbin/firewalld --nofork --nopid',
    'process_name=firewall',
    'priority=5',
    'autostart=true',
    'autorestart=true',
    'user=0',
    'group=0',
    'stdout_logfile=/var/log/fw%%1.log',
    'stdout_logfile_maxbytes=100KB',
    'stdout_logfile_backups=1',
  ])
    assert.ok(text.split('\n').includes(line), `item 39: ${line} in\n${text}`)
  const dtext = readFileSync(dbus, 'utf8')
  assert.ok(dtext.startsWith('[program:dbus]\n') && dtext.includes('\npriority=1\n'), dtext)
  assert.ok(dtext.includes('\ncommand=/usr/bin/dbus-daemon --system --nofork\n') && dtext.includes('\nstdout_logfile=/var/log/dbus.log\n'), dtext)
  assert.is(statSync(fw).mode & 0o777, 0o600)
  assert.is(statSync(dbus).mode & 0o777, 0o600)
  assert.is(writeFirewallPrograms(root, opts), false, 'unchanged: not rewritten')
  chmodSync(fw, 0o644)
  assert.is(writeFirewallPrograms(root, opts), true, 'wrong mode: rewritten')
  assert.is(writeFirewallPrograms(root, { ...opts, testing: true }), true, 'item 40: testing (any non-empty value) removes both')
  assert.not.ok(existsSync(fw) || existsSync(dbus))
  assert.is(writeFirewallPrograms(root, { ...opts, dbusExecutable: '' }), true)
  assert.ok(existsSync(fw) && !existsSync(dbus), 'an empty executable: no file for that program')
  assert.is(writeFirewallPrograms(root, undefined), true)
  assert.not.ok(existsSync(fw), '[firewall] removed: file deleted')
  // a value that would end the line or start a comment is refused
  assert.throws(() => firewallProgramText('firewall', '/usr/sbin/firewalld\n[program:evil]', '/x'), /cannot be written into a supervisord file/)
  assert.throws(() => firewallProgramText('dbus', '/usr/bin/dbus-daemon', '/var/log/d.log ;x'), /dbus_log_file/)
})

programs('item 39 for real: supervisord runs the dbus and firewall programs of the files, as root, and firewalld answers', async () => {
  const problem = firewalldProblem()
  if (problem) return skip(problem)
  const dir = tempDir('slapos-fwsv-')
  const root = join(dir, 'inst')
  createInstanceRootStructure(root)
  writeSupervisordConf(root, '')
  const madeOpt = !existsSync('/opt/slapos')
  if (madeOpt) mkdirSync('/opt/slapos', { recursive: true })
  const ns = await firewalldNamespace(dir)
  try {
    const logFile = join(dir, 'firewall.log')
    writeFirewallPrograms(root, { firewallExecutable: ns.firewalldCommand, dbusExecutable: ns.dbusCommand, logFile, dbusLogFile: join(dir, 'dbus.log'), testing: false })
    const sup = new Supervisor(supervisorPaths(root), memLog())
    await sup.launch()
    const state = await waitFor('firewalld under supervisord', async () => {
      const r = ns.firewall(['--state'])
      return r.stdout.trim() === 'running' ? 'running' : undefined
    })
    assert.is(state, 'running')
    const infos = await sup.processInfo()
    const byName = new Map(infos.map((i) => [i.name, i]))
    assert.is(byName.get('firewall')?.statename, 'RUNNING', JSON.stringify(infos))
    assert.is(byName.get('dbus')?.statename, 'RUNNING')
    // root: firewalld drops to its capabilities but keeps uid 0
    const pid = byName.get('firewall')?.pid
    assert.ok(pid && readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Uid:\s+0\s/m))
    assert.ok(existsSync(logFile), 'the program log goes to log_file')
  } finally {
    await stopSupervisord(root)
    await ns.stop()
    if (madeOpt) rmSync('/opt/slapos', { recursive: true, force: true })
  }
})

programs.run()

// --- applying against a real firewalld ---

const real = suite('firewall real firewalld')

interface Ctx {
  ns: FirewalldNs
  dir: string
  /** argv lines the recording wrapper saw since the last take() */
  take(): string[]
  opts: FirewallCommandOptions
}
let ctx: Ctx | undefined
let problem: string | undefined

real.before(async () => {
  problem = firewalldProblem()
  if (problem) return
  const dir = tempDir('slapos-fw-')
  const ns = await firewalldNamespace(dir)
  try {
    await ns.startDaemons()
    for (const a of ['10.0.0.9', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5']) ns.run(['ip', 'addr', 'add', `${a}/32`, 'dev', 'lo'])
    await ns.listen('10.0.0.9', 7000)
  } catch (e) {
    await ns.stop()
    throw e
  }
  // a recorder in front of the real firewall-cmd: logs its arguments, then execs them
  const recorder = recordingFirewallCmd(ns, dir)
  ctx = {
    ns,
    dir,
    take: recorder.take,
    opts: { firewallCmd: recorder.command, reloadConfigCmd: `${recorder.command} --reload`, authorizedSources: ['10.0.0.5'] },
  }
})

real.after(async () => {
  await ctx?.ns.stop()
})

function partitionDir(name: string): { id: string; path: string; addresses: Array<[string, string]> } {
  const path = join(ctx!.dir, name)
  mkdirSync(path, { recursive: true })
  return { id: name, path, addresses: [['route_0', '10.0.0.9'], ['eth0', '10.0.0.50'], ['route_0', 'fd00::9']] }
}

function iptables(): string[] {
  return ctx!.ns
    .run(['iptables', '-S'])
    .stdout.split('\n')
    .filter((l) => l.includes('10.0.0.9'))
}

function recorded(path: string): unknown {
  return JSON.parse(readFileSync(join(path, FIREWALL_RULES_FILE), 'utf8'))
}

real('items 41, 44: rules queried then added, one reload, rules file written; only the tree and authorized sources get through', async () => {
  if (problem) return skip(problem)
  const { ns, opts, take } = ctx!
  const p = partitionDir('slappart0')
  assert.ok(ns.connect('10.0.0.9', 7000, { from: '10.0.0.3' }).ok, 'open before the rules')
  const log = memLog()
  // the tree as the master sends it (tuples through loads()), so the tree path is the real one
  const changed = await applyFirewall(opts, p, {}, loads(TREE_XML) as unknown[], realRunner, log)
  assert.is(changed, true)
  const want = [
    `${B} INPUT 0 -s 10.0.0.2 -d 10.0.0.9 -j ACCEPT`,
    `${B} FORWARD 0 -s 10.0.0.2 -d 10.0.0.9 -j ACCEPT`,
    `${B} INPUT 0 -s 10.0.0.5 -d 10.0.0.9 -j ACCEPT`,
    `${B} FORWARD 0 -s 10.0.0.5 -d 10.0.0.9 -j ACCEPT`,
    `${B} INPUT 1000 -d 10.0.0.9 -j REJECT`,
    `${B} FORWARD 1000 -d 10.0.0.9 -j REJECT`,
    `${B} INPUT 900 -d 10.0.0.9 -m state --state ESTABLISHED,RELATED -j REJECT`,
    `${B} FORWARD 900 -d 10.0.0.9 -m state --state ESTABLISHED,RELATED -j REJECT`,
  ]
  assert.equal(recorded(p.path), want)
  const st = lstatSync(join(p.path, FIREWALL_RULES_FILE))
  assert.is(st.uid, 0)
  assert.is(st.mode & 0o777, 0o644)
  assert.equal(take(), [...want.flatMap((r) => [r.replace('--add-rule', '--query-rule'), r]), '--reload'])
  assert.ok(log.lines.some((l) => l.includes('Configuring firewall...')) && log.lines.some((l) => l.includes('Reloading firewall configuration...')))
  const rules = iptables()
  assert.ok(rules.includes('-A INPUT -s 10.0.0.2/32 -d 10.0.0.9/32 -j ACCEPT'), rules.join('\n'))
  assert.ok(rules.includes('-A INPUT -d 10.0.0.9/32 -j REJECT --reject-with icmp-port-unreachable'), rules.join('\n'))
  // real traffic: the tree and the authorized source get in, anybody else is refused
  assert.ok(ns.connect('10.0.0.9', 7000, { from: '10.0.0.2' }).ok, 'tree address')
  assert.ok(ns.connect('10.0.0.9', 7000, { from: '10.0.0.5' }).ok, '[firewall] authorized_sources')
  const refused = ns.connect('10.0.0.9', 7000, { from: '10.0.0.3' })
  assert.not.ok(refused.ok)
  assert.match(refused.output, /refused/i)

  // same input again: queries only, no reload, nothing changed
  assert.is(await applyFirewall(opts, p, {}, [['route_0', '10.0.0.2']], realRunner, memLog()), false)
  assert.equal(take(), want.map((r) => r.replace('--add-rule', '--query-rule')))
})

real('items 42, 44: a changed set removes the stale recorded rules (query, remove) and adds the new ones; off mode lets others in', async () => {
  if (problem) return skip(problem)
  const { ns, opts, take } = ctx!
  const p = partitionDir('slappart0')
  const before = recorded(p.path) as string[]
  take()
  const filter = { fw_restricted_access: 'off', fw_rejected_sources: '10.0.0.3' }
  assert.is(await applyFirewall(opts, p, filter, [['route_0', '10.0.0.2']], realRunner, memLog()), true)
  const now = recorded(p.path) as string[]
  const stale = before.filter((r) => !now.includes(r))
  const kept = now.filter((r) => before.includes(r))
  assert.ok(stale.length === 4 && kept.length === 4, JSON.stringify({ stale, kept }))
  const commands = take()
  const expected = [
    ...stale.flatMap((r) => [r.replace('--add-rule', '--query-rule'), r.replace('--add-rule', '--remove-rule')]),
    ...now.flatMap((r) => (before.includes(r) ? [r.replace('--add-rule', '--query-rule')] : [r.replace('--add-rule', '--query-rule'), r])),
    '--reload',
  ]
  assert.equal(commands, expected)
  assert.ok(ns.connect('10.0.0.9', 7000, { from: '10.0.0.4' }).ok, 'off: not listed, let in')
  assert.not.ok(ns.connect('10.0.0.9', 7000, { from: '10.0.0.3' }).ok, 'off: rejected source refused')
  assert.ok(ns.connect('10.0.0.9', 7000, { from: '10.0.0.2' }).ok)
})

real('item 45: a destroyed partition has every recorded rule removed, one reload, the file rewritten as []', async () => {
  if (problem) return skip(problem)
  const { ns, opts, take } = ctx!
  const p = partitionDir('slappart0')
  const before = recorded(p.path) as string[]
  take()
  assert.is(await removeFirewall(opts, p, realRunner, memLog()), true)
  assert.equal(take(), [...before.flatMap((r) => [r.replace('--add-rule', '--query-rule'), r.replace('--add-rule', '--remove-rule')]), '--reload'])
  assert.equal(recorded(p.path), [])
  assert.equal(iptables(), [])
  assert.ok(ns.connect('10.0.0.9', 7000, { from: '10.0.0.3' }).ok)
  // again: nothing recorded, nothing run
  assert.is(await removeFirewall(opts, p, realRunner, memLog()), false)
  assert.equal(take(), [])
})

real('item 45: rules file deleted by the partition user: destruction removes the rules recomputed from the current inputs', async () => {
  if (problem) return skip(problem)
  const { ns, opts, take } = ctx!
  const p = partitionDir('slappart4')
  const tree = loads(TREE_XML) as unknown[]
  const filter = { fw_authorized_sources: '10.0.0.4' }
  assert.is(await applyFirewall(opts, p, filter, tree, realRunner, memLog()), true)
  const applied = recorded(p.path) as string[]
  assert.is(applied.length, 2 * 3 + 4)
  assert.not.ok(ns.connect('10.0.0.9', 7000, { from: '10.0.0.3' }).ok, 'rules in force')
  rmSync(join(p.path, FIREWALL_RULES_FILE)) // the user deletes the record
  take()
  // without the current inputs nothing is known: nothing removed (what the original does)
  assert.is(await removeFirewall(opts, p, realRunner, memLog()), false)
  assert.equal(take(), [])
  assert.ok(iptables().length > 0, 'the rules outlived the record')
  // with them: each recomputed rule queried and removed, one reload, the file says []
  const log = memLog()
  assert.is(await removeFirewall(opts, p, realRunner, log, { addresses: p.addresses, filter, tree }), true)
  assert.equal(take(), [...applied.flatMap((r) => [r.replace('--add-rule', '--query-rule'), r.replace('--add-rule', '--remove-rule')]), '--reload'])
  assert.equal(iptables(), [])
  assert.ok(ns.connect('10.0.0.9', 7000, { from: '10.0.0.3' }).ok, 'the next owner of the address is not filtered')
  assert.equal(recorded(p.path), [])
  assert.ok(log.lines.some((l) => l.includes('Removing firewall configuration...')))
  // again: queries only, nothing removed, no reload
  assert.is(await removeFirewall(opts, p, realRunner, memLog(), { addresses: p.addresses, filter, tree }), false)
  assert.equal(take(), applied.map((r) => r.replace('--add-rule', '--query-rule')))
  // recorded and recomputed rules both go: a rule recorded under an older filter is removed as well
  assert.is(await applyFirewall(opts, p, { fw_authorized_sources: '10.0.0.3' }, tree, realRunner, memLog()), true)
  assert.is(await removeFirewall(opts, p, realRunner, memLog(), { addresses: p.addresses, filter, tree }), true)
  const commands = take().filter((c) => c.includes('--remove-rule'))
  assert.is(commands.length, 2 * 3 + 4, commands.join('\n'))
  assert.ok(commands.some((c) => c.includes('-s 10.0.0.3 ')), 'the recorded rule')
  assert.equal(iptables(), [])
  // the partition directory itself gone: the rules still go, no file is written
  assert.is(await applyFirewall(opts, p, filter, tree, realRunner, memLog()), true)
  rmSync(p.path, { recursive: true })
  assert.is(await removeFirewall(opts, p, realRunner, memLog(), { addresses: p.addresses, filter, tree }), true)
  assert.equal(iptables(), [])
  assert.not.ok(existsSync(p.path))
  take()
})

real('item 38 / no route_ address: no command, no rules file', async () => {
  if (problem) return skip(problem)
  const { opts, take } = ctx!
  const p = { ...partitionDir('slappart1'), addresses: [['eth0', '10.0.0.9'] as [string, string]] }
  assert.is(await applyFirewall(opts, p, {}, [['x', '10.0.0.2']], realRunner, memLog()), false)
  assert.equal(take(), [])
  assert.not.ok(existsSync(join(p.path, FIREWALL_RULES_FILE)))
  assert.is(await removeFirewall(opts, p, realRunner, memLog()), false)
})

real('item 46: add-rule output other than success fails; a failing reload fails with "Failed to load firewalld rules"; an unreachable firewalld fails the query', async () => {
  if (problem) return skip(problem)
  const { ns, opts, dir } = ctx!
  const p = partitionDir('slappart2')
  // firewalld itself refuses nothing we write: a wrapper answers the add commands with an error text
  const liar = join(dir, 'liar.sh')
  writeFileSync(liar, `#!/bin/sh\nfor a in "$@"; do [ "$a" = --add-rule ] && { echo 'Error: INVALID_RULE'; exit 0; }; done\nexec "$@"\n`, { mode: 0o755 })
  await rejects(
    () => applyFirewall({ ...opts, firewallCmd: `${liar} ${ns.firewallCmd}` }, p, {}, [], realRunner, memLog()),
    /Failed to add firewalld rule .*--add-rule ipv4 filter INPUT 0 -s 10\.0\.0\.5 .*Error: INVALID_RULE/,
  )
  await rejects(
    () => applyFirewall({ ...opts, reloadConfigCmd: 'echo no reload here >&2; exit 3' }, p, {}, [], realRunner, memLog()),
    /Failed to load firewalld rules with command echo no reload here >&2; exit 3: no reload here \(exit 3\)/,
  )
  // the rules added before the failed reload are recorded, marked unfinished (a final newline):
  // the next run finds them all present in the permanent configuration and still reloads
  assert.equal((recorded(p.path) as string[]).length, 2 * 1 + 4)
  assert.ok(readFileSync(join(p.path, FIREWALL_RULES_FILE), 'utf8').endsWith('\n'))
  ctx!.take()
  assert.is(await applyFirewall(opts, p, {}, [], realRunner, memLog()), true)
  const commands = ctx!.take()
  assert.is(commands.filter((c) => c.includes('--query-rule')).length, 6)
  assert.is(commands.filter((c) => c.includes('--add-rule')).length, 0)
  assert.is(commands.at(-1), '--reload')
  assert.not.ok(readFileSync(join(p.path, FIREWALL_RULES_FILE), 'utf8').endsWith('\n'))
  assert.ok(iptables().includes('-A INPUT -d 10.0.0.9/32 -j REJECT --reject-with icmp-port-unreachable'), 'in force after the reload')
  assert.is(await applyFirewall(opts, p, {}, [], realRunner, memLog()), false)
  const nobody = ns.firewallCmd.replace(/DBUS_SYSTEM_BUS_ADDRESS=\S+/, `DBUS_SYSTEM_BUS_ADDRESS=unix:path=${join(dir, 'none.sock')}`)
  const unreachable = { ...opts, firewallCmd: nobody }
  await rejects(() => applyFirewall(unreachable, p, { fw_authorized_sources: '10.0.0.4' }, [], realRunner, memLog()), /Failed to run firewalld rule .*--query-rule/)
  await removeFirewall(opts, p, realRunner, memLog())
  assert.equal(iptables(), [])
})

real('hostile rules file: injected text never runs, foreign or linked files are not trusted, the file is replaced not followed', async () => {
  if (problem) return skip(problem)
  const { ns, opts, take, dir } = ctx!
  const p = partitionDir('slappart3')
  const file = join(p.path, FIREWALL_RULES_FILE)
  const marker = join(dir, 'pwned')
  const other = `${B} INPUT 1000 -d 10.0.0.4 -j REJECT` // "another partition's" rule, present in firewalld
  assert.is(ns.firewall(other.split(' ')).stdout.trim(), 'success')
  assert.is(ns.firewall(['--reload']).status, 0)
  take()
  // (1) root-owned file (as the node writes it) with injected text: each entry is refused by the grammar
  writeFileSync(file, JSON.stringify([`${B} INPUT 0 -s 10.0.0.2 -d 10.0.0.9 -j ACCEPT; touch ${marker}`, `${B} INPUT 0 -s $(touch ${marker}) -d 10.0.0.9 -j ACCEPT`, 42]))
  const log = memLog()
  assert.is(await removeFirewall(opts, p, realRunner, log), false)
  assert.equal(take(), [], 'nothing run for refused entries')
  assert.not.ok(existsSync(marker))
  assert.is(log.lines.filter((l) => l.includes('not a rule this node writes')).length, 3, log.lines.join('\n'))
  assert.equal(recorded(p.path), [])
  // (2) a well-formed rule in a file of the partition's user (not root-owned): not trusted, the other rule stays
  writeFileSync(file, JSON.stringify([other]))
  chownSync(file, 4242, 4242)
  const log2 = memLog()
  assert.is(await removeFirewall(opts, p, realRunner, log2), false)
  assert.equal(take(), [])
  assert.ok(log2.lines.some((l) => l.includes('not written by this node')), log2.lines.join('\n'))
  assert.ok(iptables().length === 0 && ns.run(['iptables', '-S']).stdout.includes('-d 10.0.0.4/32 -j REJECT'), 'the other partition keeps its rule')
  assert.is(lstatSync(file).uid, 0, 'replaced by a root-owned file')
  // (3) a symlink to a root file: not read, replaced by a file of our own, its target untouched
  const target = join(dir, 'precious')
  writeFileSync(target, JSON.stringify([other]))
  rmSync(file)
  symlinkSync(target, file)
  assert.is(await applyFirewall(opts, p, {}, [], realRunner, memLog()), true)
  assert.ok(lstatSync(file).isFile())
  assert.equal(JSON.parse(readFileSync(target, 'utf8')), [other])
  assert.ok(ns.run(['iptables', '-S']).stdout.includes('-d 10.0.0.4/32 -j REJECT'))
  await removeFirewall(opts, p, realRunner, memLog())
  // (4) a directory under the name: a clear error, nothing removed behind it
  rmSync(file)
  mkdirSync(file)
  writeFileSync(join(file, 'keep'), 'x')
  await rejects(() => applyFirewall(opts, p, {}, [], realRunner, memLog()), /a directory has that name/)
  assert.ok(existsSync(join(file, 'keep')))
  take()
})

real.run()
