// The managers of manager_list (node-extras §1): loading and hook points (checklist 1-7;
// the order of hook calls with a recording manager, in process, on the same real node),
// portredir (19-26) and prerm (27-30) with the built binary, our proxy, real supervisord,
// real buildout of the sample release and real socat forwarding TCP and UDP traffic.
import { createSocket } from 'node:dgram'
import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import type { RunArgs } from '../src/command.ts'
import type { Ctx } from '../src/context.ts'
import { startNodeRun } from '../src/grid-common.ts'
import { processPartitions } from '../src/grid-instance.ts'
import { reportAndDestroy } from '../src/grid-report.ts'
import { processSoftwareReleases } from '../src/grid-software.ts'
import { createLogger } from '../src/log.ts'
import { MAX_REDIRECTIONS, parseRedirection, redirectionsOf, socatProgram } from '../src/manager-portredir.ts'
import { loadManagers } from '../src/manager-registry.ts'
import { firewallOptions, managerNames, managerOptions, partitionAddresses, readPartitionJson, readUserFile, replaceFile, shown, type Hook, type Manager } from '../src/managers.ts'
import { ConfigFile } from '../src/config.ts'
import { Tuple } from '../src/slap-protocol.ts'
import { Supervisor, supervisorPaths, type ProcessInfo } from '../src/supervisor.ts'
import { realRunner } from '../src/system.ts'
import { SLAPOS, tempDir } from './helpers.ts'
import { baseEnv, freePorts, httpBody, makeNode, waitFor, type NodeSnapshot, type TestNode } from './node-helpers.ts'

const NOBODY = 65534
const quiet = createLogger({ level: 'critical', write: () => undefined })

// --- loading (checklist 1, 2, 7) ---

const loading = suite('managers: manager_list and [manager:NAME]')

loading('commas and spaces separate names, order and duplicates are kept (checklist 1)', async () => {
  assert.equal(managerNames('cpuset, devperm'), ['cpuset', 'devperm'])
  assert.equal(managerNames(' portredir,prerm\n  prerm '), ['portredir', 'prerm', 'prerm'])
  assert.equal(managerNames(undefined), [])
  const file = ConfigFile.fromText('[slapos]\nmanager_list = cpuset, devperm\n')
  const managers = await loadManagers(managerNames(file.get('slapos', 'manager_list')), managerOptions(file, file.section('slapos'), realRunner))
  assert.equal(
    managers.map((m) => m.name),
    ['cpuset', 'devperm'],
  )
})

loading('[manager:NAME] sections reach their manager by NAME, [firewall] gets its defaults (checklist 7)', () => {
  const file = ConfigFile.fromText(
    '[slapos]\nmanager_list = devperm\n\n[manager:devperm]\nallowed-disk-for-vm =\n  /dev/sdb\n  /dev/sdc\n\n[managerX]\nkey = v\n\n[firewall]\nauthorized_sources =\n  10.0.0.0/8\n  192.168.1.1\ntesting = false\n',
  )
  const o = managerOptions(file, file.section('slapos'), realRunner)
  assert.is(o.sections.get('devperm')?.get('allowed-disk-for-vm')?.trim(), '/dev/sdb\n/dev/sdc')
  assert.ok(o.sections.has(''), 'the name after the first eight characters, as the original (empty here)')
  assert.equal(o.firewall, {
    firewallCmd: 'firewall-cmd',
    reloadConfigCmd: 'slapos node restart firewall',
    firewallExecutable: '',
    dbusExecutable: '',
    logFile: '/var/log/firewall.log',
    dbusLogFile: '/var/log/dbus.log',
    authorizedSources: ['10.0.0.0/8', '192.168.1.1'],
    testing: true,
  })
  assert.is(firewallOptions(ConfigFile.fromText('[slapos]\n[disabled-firewall]\nlog_file = x\n')), undefined)
})

loading('partition addresses: ip_list then full_ip_list, tuples or lists, anything else left out', () => {
  assert.equal(
    partitionAddresses({ ip_list: [new Tuple(['slappart0', '10.0.0.2']), ['tap0', 'fd00::2'], 'junk'], full_ip_list: [new Tuple(['route_x', '10.1.0.1', '255.0.0.0'])] }),
    [
      ['slappart0', '10.0.0.2'],
      ['tap0', 'fd00::2'],
      ['route_x', '10.1.0.1'],
    ],
  )
  assert.equal(partitionAddresses({ ip_list: 'x' }), [])
})

loading('partition JSON files: absent, links, FIFOs, oversized and broken files are refused, not followed', () => {
  const dir = tempDir('slapos-mgr-json-')
  try {
    assert.equal(readPartitionJson(join(dir, 'none')), { kind: 'absent' })
    writeFileSync(join(dir, 'ok'), '[1]')
    assert.equal(readPartitionJson(join(dir, 'ok')), { kind: 'ok', value: [1] })
    writeFileSync(join(dir, 'secret'), '["root"]')
    symlinkSync(join(dir, 'secret'), join(dir, 'link'))
    assert.is(readPartitionJson(join(dir, 'link')).kind, 'refused')
    mkdirSync(join(dir, 'dir'))
    assert.is(readPartitionJson(join(dir, 'dir')).kind, 'refused')
    writeFileSync(join(dir, 'big'), `[${'1,'.repeat(100)}1]`)
    assert.is(readPartitionJson(join(dir, 'big'), 64).kind, 'refused')
    writeFileSync(join(dir, 'bad'), '[1,')
    assert.is(readPartitionJson(join(dir, 'bad')).kind, 'refused')
    // a sparse file of 4 GiB: refused after reading one byte more than allowed, not allocated
    writeFileSync(join(dir, 'huge'), '')
    truncateSync(join(dir, 'huge'), 4 * 2 ** 30)
    const before = process.memoryUsage().rss
    assert.equal(readPartitionJson(join(dir, 'huge')), { kind: 'refused', why: `${join(dir, 'huge')} is larger than ${2 ** 20} bytes` })
    assert.ok(process.memoryUsage().rss - before < 64 * 2 ** 20, 'no gigabytes allocated')
    mkfifoOrSkip(join(dir, 'fifo'))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

loading('readUserFile: never reads more than max + 1 bytes, even from a file grown to 2 GiB after the size checks; links, swaps and untrusted files refused', () => {
  const dir = tempDir('slapos-userfile-')
  try {
    const file = join(dir, 'f')
    writeFileSync(file, '["x"]')
    const ok = readUserFile(file, 16)
    assert.ok(ok.kind === 'ok' && ok.bytes.toString() === '["x"]')
    assert.equal(readUserFile(join(dir, 'none'), 16), { kind: 'absent' })
    // exactly max is fine, one more byte is refused
    writeFileSync(file, 'x'.repeat(16))
    assert.is(readUserFile(file, 16).kind, 'ok')
    writeFileSync(file, 'x'.repeat(17))
    assert.equal(readUserFile(file, 16), { kind: 'refused', why: 'larger than 16 bytes' })
    // the user's race: the file is extended to a 2 GiB sparse file right after the fstat check
    // (trust runs on the lstat, then on the fstat): the read stops at max + 1 and refuses
    writeFileSync(file, '[]')
    let calls = 0
    const grown = readUserFile(file, 1 << 20, () => {
      if (++calls === 2) truncateSync(file, 2 ** 31)
      return undefined
    })
    assert.is(calls, 2)
    assert.equal(grown, { kind: 'refused', why: `larger than ${1 << 20} bytes` })
    assert.is(statSync(file).size, 2 ** 31, 'the file really was 2 GiB when read')
    assert.equal(readUserFile(file, 1 << 20), { kind: 'refused', why: `larger than ${1 << 20} bytes` })
    rmSync(file)
    // the file is swapped for another right after its lstat: the opened one is not read
    writeFileSync(file, '[]')
    writeFileSync(join(dir, 'other'), '["other"]')
    const swapped = readUserFile(file, 16, () => {
      if (++calls === 3) renameSync(join(dir, 'other'), file)
      return undefined
    })
    assert.equal(swapped, { kind: 'refused', why: 'replaced while being read' })
    rmSync(file)
    // links are not followed, trust can refuse
    symlinkSync('/etc/passwd', file)
    assert.equal(readUserFile(file, 1 << 20), { kind: 'refused', why: 'not a regular file (a symbolic link)' })
    rmSync(file)
    writeFileSync(file, '[]')
    assert.equal(readUserFile(file, 16, () => 'not ours'), { kind: 'refused', why: 'not ours' })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

loading('replaceFile renames a new file over a planted link (target untouched), with the owner and mode asked; shown cuts and escapes', () => {
  const dir = tempDir('slapos-replace-')
  try {
    const file = join(dir, 'f')
    writeFileSync(join(dir, 'target'), 'precious')
    symlinkSync(join(dir, 'target'), file)
    replaceFile(file, 'new', 0o640, { uid: NOBODY, gid: NOBODY })
    const st = lstatSync(file)
    assert.ok(st.isFile())
    assert.equal([st.uid, st.gid, st.mode & 0o777], [NOBODY, NOBODY, 0o640])
    assert.is(readFileSync(file, 'utf8'), 'new')
    assert.is(readFileSync(join(dir, 'target'), 'utf8'), 'precious')
    rmSync(file)
    mkdirSync(file)
    assert.throws(() => replaceFile(file, 'x', 0o644), /a directory has that name/)
    assert.equal(readdirSync(dir).sort(), ['f', 'target'], 'no temporary file left')
    assert.is(shown({ a: 'x\u001b[31m' }), '{"a":"x\\u001b[31m"}')
    assert.is(shown('\u2028'), '"\\u2028"')
    assert.is(shown('x'.repeat(300)), `"${'x'.repeat(199)}...`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

// --- portredir, pure (checklist 19-22, 24) ---

const redir = suite('portredir: entries and socat commands')
const V6: Array<[string, string]> = [
  ['slappart0', '10.0.0.2'],
  ['slappart0', 'fd00::5'],
]

redir('TCP, UDP, IPv6 destinations and bind addresses give the original command lines (checklist 19, 20)', () => {
  const cmd = (entry: unknown) => {
    const r = parseRedirection(entry, V6)
    if (typeof r === 'string') throw new Error(r)
    const p = socatProgram('/usr/bin/socat', r)
    return [p.name, p.argv.join(' '), p.asRoot]
  }
  assert.equal(cmd({ srcPort: 1234, destPort: 4321, destAddress: '127.0.0.1' }), ['socat-tcp-1234', '/usr/bin/socat TCP4-LISTEN:1234,fork TCP4:127.0.0.1:4321', false])
  assert.equal(cmd({ srcPort: 1234, destPort: 4321, destAddress: '::1' }), ['socat-tcp-1234', '/usr/bin/socat TCP4-LISTEN:1234,fork TCP6:[::1]:4321', false])
  assert.equal(cmd({ type: 'UDP', srcPort: '1234', destPort: '4321', destAddress: '127.0.0.1' }), ['socat-udp-1234', '/usr/bin/socat UDP4-LISTEN:1234,fork UDP4:127.0.0.1:4321', false])
  assert.equal(cmd({ srcPort: 1234, srcAddress: '::', destPort: 4321, destAddress: '127.0.0.1' }), ['socat-tcp-1234', '/usr/bin/socat TCP6-LISTEN:1234,bind=::,fork TCP4:127.0.0.1:4321', false])
  assert.equal(cmd({ srcPort: 1234, srcAddress: '10.0.0.2', destPort: 4321, destAddress: '127.0.0.1' }), ['socat-tcp-1234', '/usr/bin/socat TCP4-LISTEN:1234,bind=10.0.0.2,fork TCP4:127.0.0.1:4321', false])
  // checklist 21: no destAddress, the first IPv6 of the partition
  assert.equal(cmd({ srcPort: 1234, destPort: 4321 }), ['socat-tcp-1234', '/usr/bin/socat TCP4-LISTEN:1234,fork TCP6:[fd00::5]:4321', false])
  // checklist 24: below 1024, root
  assert.equal(cmd({ srcPort: 80, destPort: 8080, destAddress: '10.0.0.2' }), ['socat-tcp-80', '/usr/bin/socat TCP4-LISTEN:80,fork TCP4:10.0.0.2:8080', true])
})

redir('bad ports, addresses and types skip the entry with the original warning; nothing reaches a command line (checklist 22)', () => {
  const cases: Array<[unknown, string]> = [
    [{ srcPort: 0, destPort: 1, destAddress: '127.0.0.1' }, 'Bad source port provided'],
    [{ srcPort: 65536, destPort: 1, destAddress: '127.0.0.1' }, 'Bad source port provided'],
    [{ srcPort: '80,fork EXEC:/bin/sh', destPort: 1, destAddress: '127.0.0.1' }, 'Bad source port provided'],
    [{ srcPort: 1.5, destPort: 1, destAddress: '127.0.0.1' }, 'Bad source port provided'],
    [{ srcPort: 1000, destPort: 'x', destAddress: '127.0.0.1' }, 'Bad source port provided'],
    [{ srcPort: 1000, srcAddress: '1.2.3.4,fork', destPort: 1, destAddress: '127.0.0.1' }, 'Bad source address provided'],
    [{ srcPort: 1000, destPort: 1, destAddress: 'evil.example:22' }, 'Bad source address provided'],
    [{ srcPort: 1000, destPort: 1, destAddress: 12 }, 'Bad source address provided'],
    [{ type: 'sctp', srcPort: 1000, destPort: 1, destAddress: '127.0.0.1' }, 'Bad source redirection type: "sctp"'],
  ]
  for (const [entry, warning] of cases) assert.is(parseRedirection(entry, V6), warning, JSON.stringify(entry))
  // no IPv6 in the partition and no destAddress
  assert.is(parseRedirection({ srcPort: 1000, destPort: 1 }, [['slappart0', '10.0.0.2']]), 'Bad source address provided')
  assert.match(String(parseRedirection('1234', V6)), /^Bad port redirection entry/)
})

redir('at most 64 redirections are taken from a file, with a warning', () => {
  const warnings: string[] = []
  const list = Array.from({ length: 100 }, (_, i) => ({ srcPort: 2000 + i, destPort: 80, destAddress: '127.0.0.1' }))
  const got = redirectionsOf(list, V6, (m) => warnings.push(m))
  assert.is(got.length, MAX_REDIRECTIONS)
  assert.is(got.at(-1)?.srcPort, 2000 + MAX_REDIRECTIONS - 1)
  assert.equal(warnings, [`.slapos-port-redirect asks for 100 redirections: only the first ${MAX_REDIRECTIONS} are made`])
})

// --- end to end: node instance and node report with managers ---

const e2e = suite('managers, end to end (built binary, proxy, supervisord, buildout, socat)')

interface E2E {
  node: TestNode
  /** partition id of each instance title */
  where: Record<string, string>
  deployed: NodeSnapshot
}
let S: E2E | undefined

e2e.before(async () => {
  try {
    await setUp()
  } catch (e) {
    console.error('set-up failed:', e)
    throw e
  }
})

async function setUp(): Promise<void> {
  const node = await makeNode({ partitions: 3, extraSlapos: 'manager_list = portredir, prerm' })
  // the software and the partitions belong to an unprivileged user, as format leaves them
  chownSync(node.softwareRoot, NOBODY, NOBODY)
  chownTreeTo(join(node.dir, 'sr'), NOBODY)
  for (const id of readdirSync(node.instanceRoot).filter((n) => n.startsWith('slappart'))) chownSync(join(node.instanceRoot, id), NOBODY, NOBODY)
  await node.supply()
  const where: Record<string, string> = {}
  for (const title of ['redirected', 'doomed']) {
    const inst = await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: title })
    where[title] = inst.slap_computer_partition_id ?? ''
  }
  const sw = await node.run(['node', 'software', '--now'])
  assert.is(sw.code, 0, sw.stderr)
  const r = await node.run(['node', 'instance', '--now'], { timeoutMs: 180_000 })
  assert.is(r.code, 0, r.stderr)
  S = { node, where, deployed: await node.snapshot() }
}

e2e.before.each(async () => {
  if (S) await S.node.restore(S.deployed)
})

e2e.after(async () => {
  await S?.node.stop()
})

e2e('hooks: instance then instanceTearDown for processed and up-to-date partitions; report for a destroyed one (checklist 3, 5)', async () => {
  const { node, where } = need()
  const id = where.redirected ?? ''
  rmSync(join(node.instanceRoot, id, '.timestamp'))
  const first = await node.run(['--log-level', 'debug', 'node', 'instance', '--now'])
  assert.is(first.code, 0, first.stderr)
  assert.equal(hookLines(first.stderr, id), ['manager portredir: instanceTearDown'])
  // up to date: the same hooks
  const second = await node.run(['--log-level', 'debug', 'node', 'instance', '--now'])
  assert.is(second.code, 0, second.stderr)
  assert.equal(hookLines(second.stderr, id), ['manager portredir: instanceTearDown'])
  // report calls prerm's hook on each run while the partition waits to be destroyed, after
  // stoppedComputerPartition
  const doomed = where.doomed ?? ''
  await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'doomed', state: 'destroyed' })
  writeFileSync(join(node.instanceRoot, doomed, '.slapos-retention-lock-delay'), '1')
  for (let run = 0; run < 2; run++) {
    node.clearCalls()
    const rep = await node.run(['--log-level', 'debug', 'node', 'report', '--now'])
    assert.is(rep.code, 0, rep.stderr)
    assert.equal(hookLines(rep.stderr, doomed), ['manager prerm: report'])
    assert.ok(node.calls().some((c) => c.name === 'stoppedComputerPartition' && c.fields.computer_partition_id === doomed))
  }
})

e2e('unknown or invalid manager names end software, instance, report and promise with exit 1 (checklist 2)', async () => {
  const { node } = need()
  const cfg = readFileSync(node.cfgPath, 'utf8')
  try {
    for (const [list, message] of [
      ['portredir nosuch', "No module named 'slapos.manager.nosuch'"],
      ['9lives', "Manager name '9lives' is not allowed"],
    ] as const) {
      writeFileSync(node.cfgPath, cfg.replace('manager_list = portredir, prerm', `manager_list = ${list}`))
      for (const command of ['software', 'instance', 'report', 'promise']) {
        const r = await node.run(['node', command, '--now'])
        assert.is(r.code, 1, `${command}: ${r.stderr}`)
        assert.ok(r.stderr.includes(message), r.stderr)
        assert.not.match(r.stderr, /\n\s+at /, 'no stack trace')
        assert.not.ok(existsSync(node.pidfiles[command === 'software' ? 'software' : command === 'report' ? 'report' : 'instance']), 'the pid file is not left behind')
      }
    }
  } finally {
    writeFileSync(node.cfgPath, cfg)
  }
})

e2e('portredir: socat forwards real TCP and UDP traffic, started once, removed with an empty list (checklist 19, 23, 25)', async () => {
  const { node, where } = need()
  const id = where.redirected ?? ''
  const path = join(node.instanceRoot, id)
  const address = node.addresses[id] ?? ''
  const udp = await udpEcho(address)
  // each later step takes a port of its own: one a TCP socat served stays in TIME_WAIT a while
  const [tcpPort = 0, udpPort = 0, again = 0, last = 0] = await freePorts(4)
  try {
    writeAsPartition(join(path, '.slapos-port-redirect'), JSON.stringify([
      { srcPort: tcpPort, destPort: 8080, destAddress: address },
      { type: 'udp', srcPort: udpPort, destPort: udp.port, destAddress: address },
      { srcPort: 'nope', destPort: 1 },
    ]))
    const r = await node.run(['node', 'instance', '--now'])
    assert.is(r.code, 0, r.stderr)
    assert.match(r.stderr, /Bad source port provided/)
    const conf = readFileSync(join(node.instanceRoot, 'etc', 'supervisord.conf.d', `${id}-socat.conf`), 'utf8')
    assert.match(conf, new RegExp(`\\[program:${id}-socat_socat-tcp-${tcpPort}\\]`))
    assert.match(conf, new RegExp(`command=\\S*socat TCP4-LISTEN:${tcpPort},fork TCP4:${address.replace(/\./g, '\\.')}:8080\\n`))
    assert.match(conf, new RegExp(`user=${NOBODY}\\n`), 'a port above 1024 runs as the partition user')
    // real traffic through the redirections
    assert.match(await httpBody(`http://127.0.0.1:${tcpPort}/`), /<h1>/)
    assert.is(await udpAsk(udpPort, 'ping'), 'pong:ping')
    const before = await socatPids(node, id)
    assert.is(before.length, 2, JSON.stringify(before))
    // a second run leaves running programs alone; the main group's restart does not touch them
    rmSync(join(path, '.timestamp'))
    assert.is((await node.run(['node', 'instance', '--now'])).code, 0)
    assert.equal(await socatPids(node, id), before)
    // a socat that ended (killed, port busy at boot) is started again at the next run. The UDP
    // one, with the child it forked for our peer: a killed TCP socat leaves its port in
    // TIME_WAIT, and socat (without reuseaddr, as the original's command) cannot bind it again
    // for a minute; the next run would
    spawnSync('pkill', ['-KILL', '-f', `socat UDP4-LISTEN:${udpPort},`])
    await waitFor('supervisord to see the socat end', async () => ((await socatPids(node, id)).length === 1 ? true : undefined))
    assert.is((await node.run(['node', 'instance', '--now'])).code, 0)
    await waitFor('the socat to run again', async () => ((await socatPids(node, id)).length === 2 ? true : undefined))
    assert.is(await udpAsk(udpPort, 'again'), 'pong:again')
    // an empty list removes the group and its programs
    writeAsPartition(join(path, '.slapos-port-redirect'), '[]')
    assert.is((await node.run(['node', 'instance', '--now'])).code, 0)
    assert.not.ok(existsSync(join(node.instanceRoot, 'etc', 'supervisord.conf.d', `${id}-socat.conf`)))
    assert.equal(await socatPids(node, id), [])
    // so does a removed file
    writeAsPartition(join(path, '.slapos-port-redirect'), JSON.stringify([{ srcPort: again, destPort: 8080, destAddress: address }]))
    assert.is((await node.run(['node', 'instance', '--now'])).code, 0)
    await waitFor('one socat', async () => ((await socatPids(node, id)).length === 1 ? true : undefined))
    rmSync(join(path, '.slapos-port-redirect'))
    assert.is((await node.run(['node', 'instance', '--now'])).code, 0)
    assert.equal(await socatPids(node, id), [])
    // and, at the next processing, portredir leaving manager_list
    writeAsPartition(join(path, '.slapos-port-redirect'), JSON.stringify([{ srcPort: last, destPort: 8080, destAddress: address }]))
    assert.is((await node.run(['node', 'instance', '--now'])).code, 0)
    await waitFor('one socat', async () => ((await socatPids(node, id)).length === 1 ? true : undefined))
    const cfg = readFileSync(node.cfgPath, 'utf8')
    try {
      writeFileSync(node.cfgPath, cfg.replace('manager_list = portredir, prerm', 'manager_list = prerm'))
      rmSync(join(path, '.timestamp'))
      assert.is((await node.run(['node', 'instance', '--now'])).code, 0)
      assert.equal(await socatPids(node, id), [])
      assert.not.ok(existsSync(join(node.instanceRoot, 'etc', 'supervisord.conf.d', `${id}-socat.conf`)))
    } finally {
      writeFileSync(node.cfgPath, cfg)
    }
  } finally {
    udp.close()
  }
})

e2e('portredir: without socat on PATH the partition fails with the original message, the others still deploy (checklist 6, 26)', async () => {
  const { node, where } = need()
  const id = where.redirected ?? ''
  const other = where.doomed ?? ''
  writeAsPartition(join(node.instanceRoot, id, '.slapos-port-redirect'), JSON.stringify([{ srcPort: 20000, destPort: 8080, destAddress: '127.0.0.1' }]))
  rmSync(join(node.instanceRoot, other, '.timestamp'))
  const bin = tempDir('slapos-nosocat-')
  try {
    // PATH with what the node needs (supervisord, buildout, sh) but no socat
    for (const tool of ['sh', 'supervisord', 'python3', 'buildout']) {
      const found = (process.env.PATH ?? '').split(':').map((d) => join(d, tool)).find((p) => existsSync(p))
      if (found) symlinkSync(found, join(bin, tool))
    }
    node.clearCalls()
    const r = await node.run(['node', 'instance', '--now'], { env: baseEnv({ PATH: bin }) })
    assert.is(r.code, 1, r.stderr)
    assert.match(r.stderr, /Path to socat executable does not exist/)
    const errors = node.calls().filter((c) => c.name === 'softwareInstanceError')
    assert.equal(errors.map((c) => c.fields.computer_partition_id), [id])
    assert.ok(node.calls().some((c) => c.name === 'startedComputerPartition' && c.fields.computer_partition_id === other), 'the other partition deployed')
  } finally {
    rmSync(bin, { recursive: true, force: true })
  }
})

e2e('prerm: a pre-delete script runs once as the partition user and delays destruction until it exits (checklist 27-29)', async () => {
  const { node, where } = need()
  const id = where.doomed ?? ''
  const path = join(node.instanceRoot, id)
  const flag = join(path, 'tmp-release')
  mkdirSync(join(path, 'etc', 'prerm'), { recursive: true })
  // runs until the test removes its flag file; says who it is and how often it started
  writeFileSync(join(path, 'etc', 'prerm', 'drain'), `#!/bin/sh\necho "started as $(id -u)"\ntouch ${flag}\nwhile [ -e ${flag} ]; do sleep 0.1; done\necho drained\nexit 3\n`, { mode: 0o755 })
  lchownSync(join(path, 'etc', 'prerm', 'drain'), NOBODY, NOBODY)
  chownTreeTo(join(path, 'etc'), NOBODY)
  await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'doomed', state: 'destroyed' })
  assert.is((await node.run(['node', 'instance', '--now'])).code, 0)

  const first = await node.run(['node', 'report', '--now'])
  assert.is(first.code, 0, first.stderr)
  assert.match(first.stderr, /Adding pre-delete scripts to supervisord/)
  assert.match(first.stderr, /Starting pre-delete process 'drain'/)
  assert.is(readFileSync(join(path, '.slapos-report-wait-service-list'), 'utf8'), `${id}-prerm:drain\n`)
  assert.ok(existsSync(join(node.instanceRoot, 'etc', 'supervisord.conf.d', `${id}-prerm.conf`)))
  await waitFor('the script to start', async () => (existsSync(flag) ? true : undefined))
  const pid = (await info(node, `${id}-prerm:drain`))?.pid
  assert.ok(pid, 'running under supervisord')
  // checklist 28: kept while it runs, not restarted
  const second = await node.run(['node', 'report', '--now'])
  assert.is(second.code, 0, second.stderr)
  assert.match(second.stderr, /There are running processes into the partition, wait until they finish/)
  assert.is((await info(node, `${id}-prerm:drain`))?.pid, pid)
  assert.ok(existsSync(path) && readdirSync(path).length > 0, 'not destroyed yet')
  // checklist 29: its log, in the partition
  const log = join(path, `.${id}-prerm_drain.log`)
  assert.match(readFileSync(log, 'utf8'), new RegExp(`started as ${NOBODY}`))
  rmSync(flag)
  await waitFor('the script to exit', async () => ((await info(node, `${id}-prerm:drain`))?.statename === 'EXITED' ? true : undefined))
  node.clearCalls()
  const third = await node.run(['node', 'report', '--now'])
  assert.is(third.code, 0, third.stderr)
  assert.ok(node.calls().some((c) => c.name === 'destroyedComputerPartition' && c.fields.computer_partition_id === id), 'destroyed once the script exited (its exit status 3 ignored)')
  assert.equal(readdirSync(path), [])
  assert.equal(readdirSync(join(node.instanceRoot, 'etc', 'supervisord.conf.d')).filter((f) => f.startsWith(`${id}-`) || f === `${id}.conf`), [])
  assert.is(await info(node, `${id}-prerm:drain`), undefined)
})

e2e('prerm: under a retention lock nothing starts; names that cannot be programs are refused (checklist 30)', async () => {
  const { node, where } = need()
  const id = where.doomed ?? ''
  const path = join(node.instanceRoot, id)
  mkdirSync(join(path, 'etc', 'prerm'), { recursive: true })
  writeFileSync(join(path, 'etc', 'prerm', 'drain'), '#!/bin/sh\nsleep 30\n', { mode: 0o755 })
  writeFileSync(join(path, '.slapos-retention-lock-delay'), '1')
  await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'doomed', state: 'destroyed' })
  assert.is((await node.run(['node', 'instance', '--now'])).code, 0)
  const r = await node.run(['node', 'report', '--now'])
  assert.is(r.code, 0, r.stderr)
  assert.not.ok(existsSync(join(node.instanceRoot, 'etc', 'supervisord.conf.d', `${id}-prerm.conf`)))
  assert.not.ok(existsSync(join(path, '.slapos-report-wait-service-list')))
  // without the lock: a name supervisord would read as two programs is refused, the other runs
  rmSync(join(path, '.slapos-retention-lock-delay'))
  rmSync(join(path, '.slapos-retention-lock-date'), { force: true })
  writeFileSync(join(path, 'etc', 'prerm', 'a,b'), '#!/bin/sh\n', { mode: 0o755 })
  const again = await node.run(['node', 'report', '--now'])
  assert.is(again.code, 0, again.stderr)
  assert.match(again.stderr, /etc\/prerm\/a,b: refused/)
  assert.is(readFileSync(join(path, '.slapos-report-wait-service-list'), 'utf8'), `${id}-prerm:drain\n`)
})

e2e('software: software and softwareTearDown for every release of the list, filtered or not; a failing buildout gives only software (checklist 4)', async () => {
  const { node } = need()
  const broken = join(node.dir, 'broken.cfg')
  writeFileSync(broken, '[buildout]\nparts = nope\n[nope]\nrecipe = no.such.recipe\n')
  await node.supply(broken)
  const calls: string[] = []
  const run = await startNodeRun('software', runArgs(node), ctx())
  try {
    run.managers = [recorder(calls)]
    const { results } = await processSoftwareReleases(run, { force: false, buildoutDebug: false, garbageCollect: false }, ctx())
    assert.equal(results.map((r) => r.result).sort(), ['failed', 'up-to-date'])
    assert.equal(calls, [`software ${node.srUrl}`, `softwareTearDown ${node.srUrl}`, `software ${broken}`])
    // --only-sr: the other release still gets both hooks (the original calls them before the filter)
    calls.length = 0
    await processSoftwareReleases(run, { force: false, buildoutDebug: false, garbageCollect: false, onlySr: [broken] }, ctx())
    assert.equal(calls, [`software ${node.srUrl}`, `softwareTearDown ${node.srUrl}`, `software ${broken}`])
  } finally {
    run.release()
  }
})

e2e('instance: an instance hook error fails that partition only and skips its processing; a tear-down error replaces the result (checklist 3, 6)', async () => {
  const { node, where } = need()
  const id = where.redirected ?? ''
  const other = where.doomed ?? ''
  for (const p of [id, other]) rmSync(join(node.instanceRoot, p, '.timestamp'))
  const calls: string[] = []
  const run = await startNodeRun('instance', runArgs(node), ctx())
  try {
    run.managers = [recorder(calls, { instance: id })]
    node.clearCalls()
    const code = await processPartitions(run, { force: false, forceStop: false, buildoutDebug: false, jobs: 1, json: false, quiet: true }, ctx())
    assert.is(code, 1)
    // the failing partition: instance only (nothing processed, no tear-down); the other: both
    assert.equal(calls.filter((c) => c.endsWith(id)), [`instance ${id}`])
    assert.equal(calls.filter((c) => c.endsWith(other)), [`instance ${other}`, `instanceTearDown ${other}`])
    assert.not.ok(existsSync(join(node.instanceRoot, id, '.timestamp')), 'not processed')
    const errors = node.calls().filter((c) => c.name === 'softwareInstanceError')
    assert.equal(errors.map((c) => [c.fields.computer_partition_id, c.fields.error_log]), [[id, `hook instance failed for ${id}`]])
    // tear-down failing after a successful processing: the partition fails with its message
    calls.length = 0
    run.managers = [recorder(calls, { instanceTearDown: other })]
    rmSync(join(node.instanceRoot, other, '.timestamp'))
    node.clearCalls()
    assert.is(await processPartitions(run, { force: false, forceStop: false, buildoutDebug: false, jobs: 1, json: false, quiet: true }, ctx()), 1)
    assert.equal(calls.filter((c) => c.endsWith(other)), [`instance ${other}`, `instanceTearDown ${other}`])
    assert.equal(
      node.calls().filter((c) => c.name === 'softwareInstanceError').map((c) => c.fields.computer_partition_id),
      [other],
    )
    // up to date: the same two hooks
    calls.length = 0
    run.managers = [recorder(calls)]
    assert.is(await processPartitions(run, { force: false, forceStop: false, buildoutDebug: false, jobs: 1, json: false, quiet: true }, ctx()), 0)
    assert.equal(calls.filter((c) => c.endsWith(id)), [`instance ${id}`, `instanceTearDown ${id}`])
  } finally {
    run.release()
  }
})

e2e('report: a report hook error keeps the partition and exits 1; the next run destroys it (checklist 6)', async () => {
  const { node, where } = need()
  const id = where.doomed ?? ''
  await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'doomed', state: 'destroyed' })
  assert.is((await node.run(['node', 'instance', '--now'])).code, 0)
  const calls: string[] = []
  const run = await startNodeRun('report', runArgs(node), ctx())
  try {
    run.managers = [recorder(calls, { report: id })]
    node.clearCalls()
    const first = await reportAndDestroy(run, ctx())
    assert.is(first.exitCode, 1)
    assert.equal(first.summary.failed, [id])
    assert.equal(calls, [`report ${id}`])
    assert.ok(readdirSync(join(node.instanceRoot, id)).length > 0, 'kept')
    const names = node.calls().map((c) => c.name)
    assert.ok(names.indexOf('stoppedComputerPartition') < names.indexOf('softwareInstanceError'), 'the hook runs after stoppedComputerPartition')
    run.managers = [recorder(calls)]
    const second = await reportAndDestroy(run, ctx())
    assert.is(second.exitCode, 0)
    assert.equal(second.summary.destroyed, [id])
  } finally {
    run.release()
  }
})

// --- helpers ---

/** A manager that records `<hook> <partition id or release URL>`, and throws in the hooks named (for that partition). */
function recorder(calls: string[], failing: Partial<Record<Hook, string>> = {}): Manager {
  const hook = (name: Hook) => (arg: { id?: string; url?: string }) => {
    const what = arg.id ?? arg.url ?? ''
    calls.push(`${name} ${what}`)
    if (failing[name] === what) throw new Error(`hook ${name} failed for ${what}`)
  }
  return {
    name: 'recorder',
    software: hook('software'),
    softwareTearDown: hook('softwareTearDown'),
    instance: hook('instance'),
    instanceTearDown: hook('instanceTearDown'),
    report: hook('report'),
  }
}

function ctx(): Ctx {
  return { io: { out: () => undefined, err: () => undefined, isTTY: false }, log: quiet, runner: realRunner, now: () => new Date(), env: baseEnv(), self: [SLAPOS] }
}

function runArgs(node: TestNode): RunArgs {
  return { _: [], cfg: node.cfgPath, now: true, global: { verbosity: 0, logTime: false, logColor: false, help: false, version: false } }
}


/** A FIFO at `path` must be refused at once (not block the node). */
function mkfifoOrSkip(path: string): void {
  if (spawnSync('mkfifo', [path]).status !== 0) return
  assert.equal(readPartitionJson(path), { kind: 'refused', why: `${path} is not a regular file` })
}

function need(): E2E {
  if (!S) throw new Error('the node was not set up')
  return S
}

/** The `manager NAME: HOOK` debug lines of one partition, in order. */
function hookLines(stderr: string, id: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => l.includes(`[${id}]`) || l.includes(` ${id} `) || l.includes(`${id}:`))
    .map((l) => /manager \w+: \w+/.exec(l)?.[0])
    .filter((x): x is string => x !== undefined)
}

function writeAsPartition(file: string, text: string): void {
  writeFileSync(file, text)
  lchownSync(file, NOBODY, NOBODY)
}

function chownTreeTo(p: string, uid: number): void {
  const st = lstatSync(p)
  if (st.isDirectory()) for (const n of readdirSync(p)) chownTreeTo(join(p, n), uid)
  lchownSync(p, uid, uid)
}

async function info(node: TestNode, name: string): Promise<(ProcessInfo & { start: number }) | undefined> {
  return new Supervisor(supervisorPaths(node.instanceRoot), quiet).processInfoOf(name)
}

async function socatPids(node: TestNode, id: string): Promise<number[]> {
  const all = await new Supervisor(supervisorPaths(node.instanceRoot), quiet).processInfo()
  return all
    .filter((p) => p.group === `${id}-socat` && p.statename === 'RUNNING')
    .map((p) => p.pid)
    .sort()
}


/** A UDP server on `address` answering `pong:<message>`. */
async function udpEcho(address: string): Promise<{ port: number; close(): void }> {
  const sock = createSocket('udp4')
  sock.on('message', (msg, from) => sock.send(`pong:${msg.toString()}`, from.port, from.address))
  await new Promise<void>((res) => sock.bind(0, address, () => res()))
  return { port: sock.address().port, close: () => sock.close() }
}

/** Sends `message` to 127.0.0.1:port over UDP until an answer comes (socat may still be starting). */
async function udpAsk(port: number, message: string): Promise<string> {
  const sock = createSocket('udp4')
  try {
    return await waitFor(`an answer on UDP port ${port}`, () => new Promise<string | undefined>((res) => {
      const timer = setTimeout(() => res(undefined), 300)
      sock.once('message', (m) => {
        clearTimeout(timer)
        res(m.toString())
      })
      sock.send(message, port, '127.0.0.1')
    }))
  } finally {
    sock.close()
  }
}


loading.run()
redir.run()
e2e.run()
