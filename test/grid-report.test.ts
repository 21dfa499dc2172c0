// `slapos node report` end to end: the built binary against our proxy (through the recording
// tap of node-helpers), real supervisord, real partition directories (grid.md §5, checklist
// 100-109). The full lifecycle with `node instance` deploying real instances is at the end.
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, get as httpGet, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { destroyMarkerPath, RETENTION_DATE_FILE, RETENTION_DELAY_FILE, WAIT_LIST_FILE } from '../src/grid-report.ts'
import { createLogger } from '../src/log.ts'
import { createInstanceRootStructure, startPartitionServices, Supervisor, supervisorPaths, watchdogCommand, writePartitionGroup, writeSupervisordConf } from '../src/supervisor.ts'
import { skip, SLAPOS } from './helpers.ts'
import { baseEnv, makeNode, type MasterCall, type TestNode } from './node-helpers.ts'

const NOBODY = 65534
const quiet = createLogger({ level: 'critical' })

function chownTree(p: string, uid: number): void {
  const st = lstatSync(p)
  if (st.isDirectory() && !st.isSymbolicLink()) for (const n of readdirSync(p)) chownTree(join(p, n), uid)
  lchownSync(p, uid, uid)
}

/** Allocates a partition to a new instance `ref` of the test SR and returns its id. */
async function allocate(node: TestNode, ref: string): Promise<string> {
  const inst = await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: ref })
  const id = inst.slap_computer_partition_id
  if (!id) throw new Error(`no partition for ${ref}`)
  return id
}

async function requestState(node: TestNode, ref: string, state: 'started' | 'stopped' | 'destroyed'): Promise<void> {
  await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: ref, state })
}

/** Content node instance would have left in a deployed partition (owned by the partition user). */
function fillPartition(node: TestNode, id: string, extra: (path: string) => void = () => undefined): string {
  const path = join(node.instanceRoot, id)
  symlinkSafe(node.softwareRoot, join(path, 'software_release'))
  writeFileSync(join(path, 'buildout.cfg'), '[buildout]\n')
  writeFileSync(join(path, '.timestamp'), '1')
  writeFileSync(join(path, RETENTION_DELAY_FILE), '0.0')
  mkdirSync(join(path, 'srv', 'data'), { recursive: true })
  writeFileSync(join(path, 'srv', 'data', 'db'), 'data')
  mkdirSync(join(path, 'etc', 'service'), { recursive: true })
  writeFileSync(join(path, 'etc', 'service', 'sleeper'), '#!/bin/sh\nexec sleep 300\n', { mode: 0o755 })
  writeFileSync(join(node.certificateRepository, `${id}.crt`), 'CERT')
  writeFileSync(join(node.certificateRepository, `${id}.key`), 'KEY')
  extra(path)
  chownTree(path, NOBODY)
  chmodSync(path, 0o750)
  return path
}

function symlinkSafe(target: string, link: string): void {
  if (!existsSync(link)) symlinkSync(target, link)
}

function names(calls: MasterCall[]): string[] {
  return calls.map((c) => (c.fields.computer_partition_id ? `${c.name} ${c.fields.computer_partition_id}` : c.name))
}

/** Starts supervisord for the node as node instance would, and the partition's services. */
async function startServices(node: TestNode, id: string): Promise<Supervisor> {
  createInstanceRootStructure(node.instanceRoot)
  writeSupervisordConf(
    node.instanceRoot,
    watchdogCommand({ watchdogCommand: `${SLAPOS} node watchdog`, masterUrl: node.masterUrl, computerId: node.computerId, certificateRepositoryPath: node.certificateRepository, instanceRoot: node.instanceRoot }),
  )
  const sup = new Supervisor(supervisorPaths(node.instanceRoot), quiet)
  await sup.launch()
  await startPartitionServices(sup, node.instanceRoot, { id, path: join(node.instanceRoot, id), uid: NOBODY, gid: NOBODY, user: 'nobody', home: '/nonexistent' }, quiet)
  return sup
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000, everyMs = 50): Promise<void> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, everyMs))
  }
  throw new Error(`timed out waiting for ${what}`)
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const report = suite('node report (built binary, real proxy and supervisord)')

report('destroys a destroyed partition: calls in order, directory emptied and kept, services and certificates gone, partition freed; others untouched', async () => {
  const node = await makeNode({ partitions: 3 })
  try {
    await node.supply()
    const victim = await allocate(node, 'victim')
    const survivor = await allocate(node, 'survivor')
    const free = ['slappart0', 'slappart1', 'slappart2'].find((p) => p !== victim && p !== survivor) ?? ''
    const vpath = fillPartition(node, victim)
    const spath = fillPartition(node, survivor)
    writeFileSync(join(node.instanceRoot, free, 'left-over'), 'x')
    const sup = await startServices(node, victim)
    await startPartitionServices(sup, node.instanceRoot, { id: survivor, path: spath, uid: NOBODY, gid: NOBODY, user: 'nobody', home: '/nonexistent' }, quiet)
    let info = await sup.processInfo()
    const vpid = info.find((i) => i.group === victim)?.pid ?? 0
    const spid = info.find((i) => i.group === survivor)?.pid ?? 0
    await waitFor('services running', async () => (await sup.processInfo()).filter((i) => (i.group === victim || i.group === survivor) && i.statename === 'RUNNING').length === 2)
    info = await sup.processInfo()
    assert.ok(vpid > 0 && alive(vpid) && spid > 0)
    await requestState(node, 'victim', 'destroyed')
    const survivorBefore = readdirSync(spath).sort()
    node.clearCalls()

    const r = await node.run(['node', 'report', '--now'])
    assert.is(r.code, 0, r.stderr)
    // checklist 100 and 102: only the destroyed partition causes calls, in the original's order
    assert.equal(names(node.calls()), [
      'getFullComputerInformation',
      `getComputerPartitionCertificate ${victim}`,
      `stoppedComputerPartition ${victim}`,
      `destroyedComputerPartition ${victim}`,
    ])
    // checklist 101: directory kept empty (owner, 0750), services and certificates gone
    assert.equal(readdirSync(vpath), [])
    const st = statSync(vpath)
    assert.is(st.mode & 0o7777, 0o750)
    assert.is(st.uid, NOBODY)
    assert.not.ok(existsSync(join(node.certificateRepository, `${victim}.crt`)))
    assert.not.ok(existsSync(join(node.certificateRepository, `${victim}.key`)))
    assert.not.ok(existsSync(join(node.instanceRoot, 'etc', 'supervisord.conf.d', `${victim}.conf`)))
    assert.not.ok(alive(vpid), 'the service of the destroyed partition is stopped')
    info = await sup.processInfo()
    assert.not.ok(info.some((i) => i.group === victim), 'its group is gone from supervisord')
    // the other partition: same process, same files, certificates kept
    assert.ok(alive(spid))
    assert.is(info.find((i) => i.group === survivor)?.pid, spid)
    assert.equal(readdirSync(spath).sort(), survivorBefore)
    assert.ok(existsSync(join(node.certificateRepository, `${survivor}.crt`)))
    // checklist 109: the free partition is not touched
    assert.equal(readdirSync(join(node.instanceRoot, free)), ['left-over'])
    // the proxy freed it: a new request can take it (the free one first, then this one)
    const a = await allocate(node, 'newcomer-1')
    const b = await allocate(node, 'newcomer-2')
    assert.equal([a, b].sort(), [free, victim].sort())
    // nothing left to do: a second run only reads the computer; the old names work too
    node.clearCalls()
    const legacy = await node.run(['--now', node.cfgPath], { noCfg: true, argv0: 'slapgrid-ur' })
    assert.is(legacy.code, 0, legacy.stderr)
    const alias = await node.run(['grid', 'report', '--now'])
    assert.is(alias.code, 0, alias.stderr)
    assert.equal(names(node.calls()), ['getFullComputerInformation', 'getFullComputerInformation'])
  } finally {
    await node.stop()
  }
})

report('a failing sbin/destroy reports the error, keeps the partition and exits 1; the next partition is still destroyed; retried next run', async () => {
  const node = await makeNode({ partitions: 2 })
  try {
    await node.supply()
    const id = await allocate(node, 'inst')
    const other = await allocate(node, 'other')
    const path = fillPartition(node, id, (p) => {
      mkdirSync(join(p, 'sbin'))
      writeFileSync(join(p, 'sbin', 'destroy'), `#!/bin/sh\necho "volume busy" >&2\n[ -e ${p}/allow ] || exit 4\n`, { mode: 0o755 })
    })
    const otherPath = fillPartition(node, other)
    await requestState(node, 'inst', 'destroyed')
    await requestState(node, 'other', 'destroyed')
    const before = readdirSync(path).sort()
    node.clearCalls()
    const r = await node.run(['node', 'report', '--now'])
    assert.is(r.code, 1, r.stderr)
    const calls = node.calls().filter((c) => c.name === 'getFullComputerInformation' || c.fields.computer_partition_id === id)
    assert.equal(names(calls), ['getFullComputerInformation', `getComputerPartitionCertificate ${id}`, `stoppedComputerPartition ${id}`, `softwareInstanceError ${id}`])
    assert.match(calls[3]?.fields.error_log ?? '', `Failed to destroy Computer Partition in '${path}'.`)
    assert.match(calls[3]?.fields.error_log ?? '', 'volume busy')
    assert.equal(readdirSync(path).sort(), before)
    assert.ok(existsSync(join(node.certificateRepository, `${id}.crt`)))
    // the failure of the first did not stop the second
    assert.ok(names(node.calls()).includes(`destroyedComputerPartition ${other}`))
    assert.equal(readdirSync(otherPath), [])
    // once the script succeeds, the next run destroys it
    writeFileSync(join(path, 'allow'), '')
    node.clearCalls()
    const r2 = await node.run(['node', 'report', '--now'])
    assert.is(r2.code, 0, r2.stderr)
    assert.ok(names(node.calls()).includes(`destroyedComputerPartition ${id}`))
    assert.equal(readdirSync(path), [])
  } finally {
    await node.stop()
  }
})

report('retention delay: first run writes the lock date and sends no destroyed; the partition stays', async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    const id = await allocate(node, 'kept')
    const path = fillPartition(node, id, (p) => writeFileSync(join(p, RETENTION_DELAY_FILE), '1.0'))
    await requestState(node, 'kept', 'destroyed')
    const t0 = Date.now() / 1000
    const dateFile = join(path, RETENTION_DATE_FILE)
    for (let i = 0; i < 2; i++) {
      node.clearCalls()
      const r = await node.run(['node', 'report', '--now'])
      assert.is(r.code, 0, r.stderr)
      assert.equal(names(node.calls()), ['getFullComputerInformation', `getComputerPartitionCertificate ${id}`, `stoppedComputerPartition ${id}`])
      if (i === 0) {
        const date = Number(readFileSync(dateFile, 'utf8'))
        assert.ok(date >= Math.floor(t0) + 86400 && date <= t0 + 86400 + 60, String(date))
        // the date is written once: a later run keeps it (here moved an hour earlier)
        writeFileSync(dateFile, String(date - 3600))
      }
    }
    const kept = Number(readFileSync(dateFile, 'utf8'))
    assert.ok(kept >= Math.floor(t0) + 86400 - 3600 && kept <= t0 + 86400 - 3600 + 60, `the lock date was written again: ${kept}`)
    assert.ok(existsSync(join(path, 'srv', 'data', 'db')))
  } finally {
    await node.stop()
  }
})

report('report scripts: valid usage sent in one journal and deleted, invalid kept, a failing script is an error (exit 1)', async () => {
  const node = await makeNode({ partitions: 2 })
  try {
    await node.supply()
    const id = await allocate(node, 'metered')
    const movement = '<movement><resource>CPU</resource><title>CPU use</title><reference>anything</reference><quantity>42</quantity><price>0</price><VAT>None</VAT><category>None</category></movement>'
    const path = fillPartition(node, id, (p) => {
      mkdirSync(join(p, 'etc', 'report'), { recursive: true })
      writeFileSync(join(p, 'etc', 'report', 'good'), `#!/bin/sh\necho '<journal>${movement}</journal>' > "$1"\n`, { mode: 0o755 })
      writeFileSync(join(p, 'etc', 'report', 'broken'), `#!/bin/sh\necho '<journal><movement>' > "$1"\n`, { mode: 0o755 })
      writeFileSync(join(p, 'etc', 'report', 'failing'), '#!/bin/sh\nexit 1\n', { mode: 0o755 })
    })
    // the drop boxes of the instance root: per partition, and for the computer itself
    const dropBox = join(node.instanceRoot, 'var', 'xml_report', id)
    mkdirSync(dropBox, { recursive: true })
    writeFileSync(join(dropBox, 'disk.xml'), movement.replace('<journal>', '').replace('CPU use', 'Disk').replace('>42<', '>7<').replace(/^/, '<journal>') + '</journal>')
    const computerBox = join(node.instanceRoot, 'var', 'xml_report', node.computerId)
    mkdirSync(computerBox, { recursive: true })
    const computerReport = '<journal><transaction type="Sale Packing List"><title>Node</title></transaction></journal>'
    writeFileSync(join(computerBox, 'node.xml'), computerReport)
    writeFileSync(join(computerBox, 'bad.xml'), '<journal><movement/></journal>')
    node.clearCalls()
    const r = await node.run(['node', 'report', '--now'])
    assert.is(r.code, 1, r.stderr)
    const calls = node.calls()
    const error = calls.find((c) => c.name === 'softwareInstanceError')
    assert.is(error?.fields.error_log, "Script 'failing' failed.")
    const uses = calls.filter((c) => c.name === 'useComputer')
    assert.is(uses.length, 2, names(calls).join(', '))
    // the computer report goes as it is, then the journal of the partitions' usage
    assert.is(uses[0]?.fields.use_string, computerReport)
    const use = uses[1]
    assert.is(use?.fields.computer_id, node.computerId)
    const journal = use?.fields.use_string ?? ''
    assert.match(journal, '<transaction type="Sale Packing List"><title>Resource consumptions</title>')
    assert.match(journal, `<reference>${id}</reference><quantity>42</quantity>`)
    assert.match(journal, `<title>Disk</title><reference>${id}</reference><quantity>7</quantity>`)
    const left = readdirSync(join(path, 'var', 'xml_report'))
    assert.is(left.length, 1, 'the valid report is deleted, the broken one kept')
    assert.match(readFileSync(join(path, 'var', 'xml_report', left[0] ?? ''), 'utf8'), '<journal><movement>')
    assert.equal(readdirSync(dropBox), [])
    assert.equal(readdirSync(computerBox), ['bad.xml'])
  } finally {
    await node.stop()
  }
})

report('usage that cannot be sent keeps the partition for the next run (checklist 108)', async () => {
  const node = await makeNode({ partitions: 1 })
  const faulty = await failingMaster(node.masterUrl, new Set(['useComputer']))
  try {
    await node.supply()
    const id = await allocate(node, 'unbilled')
    const path = fillPartition(node, id, (p) => {
      mkdirSync(join(p, 'var', 'xml_report'), { recursive: true })
      writeFileSync(join(p, 'var', 'xml_report', 'usage.xml'), '<journal><movement><resource>CPU</resource><reference>x</reference><quantity>1</quantity></movement></journal>')
    })
    await requestState(node, 'unbilled', 'destroyed')
    node.clearCalls()
    const r = await node.run(['node', 'report', '--now', '--master-url', faulty.url])
    assert.is(r.code, 0, r.stderr)
    const calls = names(node.calls())
    assert.ok(calls.includes(`softwareInstanceError ${id}`), calls.join(', '))
    assert.not.ok(calls.some((c) => c.startsWith('destroyedComputerPartition')))
    assert.ok(existsSync(join(path, 'var', 'xml_report', 'usage.xml')), 'the usage is kept for the next run')
    assert.ok(existsSync(join(path, 'srv', 'data', 'db')))
    // the master takes usage again: the next run sends it and destroys
    faulty.failing.clear()
    node.clearCalls()
    const r2 = await node.run(['node', 'report', '--now', '--master-url', faulty.url])
    assert.is(r2.code, 0, r2.stderr)
    assert.ok(names(node.calls()).includes(`destroyedComputerPartition ${id}`))
    assert.equal(readdirSync(path), [])
  } finally {
    faulty.server.close()
    await node.stop()
  }
})

report("a partition's var that is a link to another partition's: that usage is neither sent as its own nor deleted by it, a warning names the link", async () => {
  if (process.getuid?.() !== 0) return skip('needs root')
  const node = await makeNode({ partitions: 2 })
  try {
    await node.supply()
    const victim = await allocate(node, 'victim')
    const thief = await allocate(node, 'thief')
    const victimPath = fillPartition(node, victim, (p) => {
      mkdirSync(join(p, 'var', 'xml_report'), { recursive: true })
      writeFileSync(join(p, 'var', 'xml_report', 'usage.xml'), '<journal><movement><resource>CPU</resource><reference>x</reference><quantity>5</quantity></movement></journal>')
    })
    const thiefPath = fillPartition(node, thief, (p) => symlinkSync(join(victimPath, 'var'), join(p, 'var')))
    node.clearCalls()
    const r = await node.run(['node', 'report', '--now'])
    assert.is(r.code, 0, r.stderr)
    const uses = node.calls().filter((c) => c.name === 'useComputer')
    assert.is(uses.length, 1, names(node.calls()).join(', '))
    const journal = uses[0]?.fields.use_string ?? ''
    assert.is(journal.split('<quantity>5</quantity>').length - 1, 1, journal)
    assert.match(journal, `<reference>${victim}</reference><quantity>5</quantity>`)
    assert.not.match(journal, `<reference>${thief}</reference>`)
    assert.match(r.stderr, `${thiefPath}/var is a symbolic link: its usage reports are not read`)
    assert.equal(readdirSync(join(victimPath, 'var', 'xml_report')), [], 'sent as the usage of its own partition, then deleted')
  } finally {
    await node.stop()
  }
})

report("a partition's var swapped for a link while the master takes the journal: root deletes no file the link leads to", async () => {
  if (process.getuid?.() !== 0) return skip('needs root')
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    const id = await allocate(node, 'swapper')
    const path = fillPartition(node, id, (p) => {
      mkdirSync(join(p, 'var', 'xml_report'), { recursive: true })
      writeFileSync(join(p, 'var', 'xml_report', 'usage.xml'), '<journal><movement><resource>CPU</resource><reference>x</reference><quantity>3</quantity></movement></journal>')
    })
    // a file of root's of the same name, where the link will lead
    const outside = join(node.dir, 'outside')
    mkdirSync(join(outside, 'xml_report'), { recursive: true })
    writeFileSync(join(outside, 'xml_report', 'usage.xml'), "root's")
    // the partition's user, between the read and the deletion (while the master is being told)
    let swapped = false
    node.failCalls((call) => {
      if (call.name === 'useComputer' && !swapped) {
        renameSync(join(path, 'var'), join(path, 'var.moved'))
        symlinkSync(outside, join(path, 'var'))
        swapped = true
      }
      return undefined
    })
    const r = await node.run(['node', 'report', '--now'])
    assert.is(r.code, 0, r.stderr)
    assert.ok(swapped, 'the journal was sent')
    assert.match(node.calls().find((c) => c.name === 'useComputer')?.fields.use_string ?? '', `<reference>${id}</reference><quantity>3</quantity>`)
    assert.is(readFileSync(join(outside, 'xml_report', 'usage.xml'), 'utf8'), "root's")
    assert.match(r.stderr, `${path}/var is a symbolic link`)
  } finally {
    await node.stop()
  }
})

report('a wait list keeps the partition while a listed service runs; then it goes with all its groups (<id>-*.conf)', async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    const id = await allocate(node, 'draining')
    const path = fillPartition(node, id, (p) => writeFileSync(join(p, WAIT_LIST_FILE), `${id}-prerm:drain\n`))
    // a pre-delete service in its own group, as the prerm manager would run it
    const prerm = join(node.dir, 'prerm')
    mkdirSync(join(prerm, 'etc', 'run'), { recursive: true })
    writeFileSync(join(prerm, 'etc', 'run', 'drain'), '#!/bin/sh\nexec sleep 300\n', { mode: 0o755 })
    const sup = await startServices(node, id)
    const group = `${id}-prerm`
    writePartitionGroup(node.instanceRoot, { id: group, path: prerm, uid: NOBODY, gid: NOBODY, user: 'nobody', home: '/nonexistent' })
    await sup.applyChanges()
    await sup.startGroup(group)
    await waitFor('the pre-delete service', async () => (await sup.processInfo()).some((i) => i.group === group && i.statename === 'RUNNING'))
    await requestState(node, 'draining', 'destroyed')
    node.clearCalls()
    const r = await node.run(['node', 'report', '--now'])
    assert.is(r.code, 0, r.stderr)
    assert.equal(names(node.calls()), ['getFullComputerInformation', `getComputerPartitionCertificate ${id}`, `stoppedComputerPartition ${id}`])
    assert.match(r.stderr, 'wait until they finish')
    assert.ok(existsSync(join(path, 'buildout.cfg')))
    const groupFile = join(node.instanceRoot, 'etc', 'supervisord.conf.d', `${group}.conf`)
    assert.ok(existsSync(groupFile), 'node report stops the partition group, not its manager groups')
    assert.not.ok(existsSync(join(node.instanceRoot, 'etc', 'supervisord.conf.d', `${id}.conf`)))
    // the service finishes: the next run destroys, manager groups included
    await sup.stopGroup(group)
    node.clearCalls()
    const r2 = await node.run(['node', 'report', '--now'])
    assert.is(r2.code, 0, r2.stderr)
    assert.ok(names(node.calls()).includes(`destroyedComputerPartition ${id}`))
    assert.equal(readdirSync(path), [])
    assert.not.ok(existsSync(groupFile))
    assert.not.ok((await sup.processInfo()).some((i) => i.group === group), 'supervisord forgot the manager group')
  } finally {
    await node.stop()
  }
})

report("the partition's user swapping its wait list with a FIFO while node report runs: every run ends, none waits on the FIFO", async () => {
  if (process.getuid?.() !== 0) return skip('needs root')
  const node = await makeNode({ partitions: 1 })
  let racer: ReturnType<typeof spawn> | undefined
  try {
    await node.supply()
    const id = await allocate(node, 'racing')
    // kept by its retention lock on every run: the wait list is read each time
    const path = fillPartition(node, id, (p) => {
      writeFileSync(join(p, RETENTION_DELAY_FILE), '5.0')
      writeFileSync(join(p, WAIT_LIST_FILE), `${id}:sleeper\n`)
      spawnSync('mkfifo', [join(p, 'fifo')])
    })
    await requestState(node, 'racing', 'destroyed')
    // the user: the wait list and the FIFO exchanged (renameat2 RENAME_EXCHANGE, atomic) over and over
    racer = spawn('python3', ['-c', `
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
while True: libc.renameat2(-100, a, -100, b, 2)
`, join(path, WAIT_LIST_FILE), join(path, 'fifo')], { stdio: 'ignore' })
    for (let i = 0; i < 16; i++) {
      const r = await node.run(['node', 'report', '--now'], { timeoutMs: 20_000 })
      assert.is(r.code, 0, `run ${i}: ${r.stderr}`)
    }
    assert.ok(existsSync(join(path, 'buildout.cfg')), 'kept by its retention lock')
  } finally {
    racer?.kill('SIGKILL')
    await node.stop()
  }
})

report('master down: exit 1 with one clear line, nothing destroyed', async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    const id = await allocate(node, 'orphan')
    const path = fillPartition(node, id)
    await requestState(node, 'orphan', 'destroyed')
    const before = readdirSync(path).sort()
    const r = await node.run(['node', 'report', '--now', '--master-url', 'http://127.0.0.1:1/'])
    assert.is(r.code, 1)
    const errors = r.stderr.split('\n').filter((l) => /ERROR|CRITICAL/.test(l))
    assert.is(errors.length, 1, r.stderr)
    assert.match(errors[0] ?? '', /127\.0\.0\.1:1/)
    assert.not.match(r.stderr, /\n\s+at /, 'no stack trace')
    assert.equal(readdirSync(path).sort(), before)
    assert.ok(existsSync(join(node.certificateRepository, `${id}.crt`)))
    assert.not.ok(existsSync(node.pidfiles.report), 'pid file released')
  } finally {
    await node.stop()
  }
})

report('killed with SIGKILL in the middle of a wipe, the next run finishes it and reports destroyed once', async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    // enough files for the wipe to take a while
    for (let d = 0; d < 200; d++) {
      const dir = join(node.instanceRoot, 'slappart0', 'srv', 'many', `d${d}`)
      mkdirSync(dir, { recursive: true })
      for (let f = 0; f < 150; f++) writeFileSync(join(dir, `f${f}`), '')
    }
    // let the client see a connection the proxy closed while these writes held the loop (one
    // turn of the loop handles what the socket already received)
    await new Promise((r) => setImmediate(r))
    await node.supply()
    const id = await allocate(node, 'big')
    assert.is(id, 'slappart0')
    const path = fillPartition(node, id)
    // let the client see a connection the proxy closed while the chown above held the loop
    await new Promise((r) => setImmediate(r))
    await requestState(node, 'big', 'destroyed')
    node.clearCalls()
    const child = spawn(SLAPOS, ['node', 'report', '--now', '--cfg', node.cfgPath], { env: baseEnv(), stdio: 'ignore' })
    const exited = new Promise<void>((res) => child.once('exit', () => res()))
    const marker = destroyMarkerPath({ id, path })
    // the wipe of these 30,000 files takes about a second here: look often so the kill lands in it
    await waitFor('the wipe to start', () => existsSync(marker), 60_000, 2)
    child.kill('SIGKILL')
    await exited
    assert.ok(existsSync(marker), 'killed during the wipe: the marker is still there')
    // (the rm the killed run had started may still be finishing its part as an orphan)
    assert.not.ok(names(node.calls()).some((c) => c.startsWith('destroyedComputerPartition')), 'nothing reported before the wipe is complete')
    // the pid file of the killed run names a dead process: the next run takes over
    const r = await node.run(['node', 'report', '--now'])
    assert.is(r.code, 0, r.stderr)
    assert.equal(readdirSync(path), [])
    assert.is(statSync(path).mode & 0o7777, 0o750)
    assert.not.ok(existsSync(marker))
    assert.is(names(node.calls()).filter((c) => c === `destroyedComputerPartition ${id}`).length, 1)
    const r2 = await node.run(['node', 'report', '--now'])
    assert.is(r2.code, 0, r2.stderr)
    assert.is(names(node.calls()).filter((c) => c.startsWith('destroyedComputerPartition')).length, 1)
  } finally {
    await node.stop()
  }
})

report.run()

const life = suite('lifecycle: node software, node instance, watchdog, node report (real buildout, supervisord, proxy)')

life('two deployed instances; a crash bangs once; one destroyed is stopped, wiped and freed; the other keeps running', async () => {
  const node = await makeNode({ partitions: 2 })
  const sup = new Supervisor(supervisorPaths(node.instanceRoot), quiet)
  try {
    await node.supply()
    await requestState(node, 'keep', 'started')
    await requestState(node, 'gone', 'started')
    const sw = await node.run(['node', 'software', '--now'])
    assert.is(sw.code, 0, sw.stderr)
    const inst = await node.run(['node', 'instance', '--now'], { timeoutMs: 300_000 })
    assert.is(inst.code, 0, inst.stderr)
    const keep = await allocate(node, 'keep')
    const gone = await allocate(node, 'gone')
    const keepUrl = `http://${node.addresses[keep]}:8080/`
    const goneUrl = `http://${node.addresses[gone]}:8080/`
    assert.is(await httpStatus(keepUrl), 200)
    assert.is(await httpStatus(goneUrl), 200)
    const service = async (id: string) => (await sup.processInfo()).find((p) => p.group === id && p.name.endsWith('-on-watch'))
    await waitFor('both services running', async () => (await service(keep))?.statename === 'RUNNING' && (await service(gone))?.statename === 'RUNNING')
    const keepPid = (await service(keep))?.pid ?? 0
    const gonePid = (await service(gone))?.pid ?? 0
    assert.ok(keepPid > 0 && gonePid > 0)
    const keepStill = async (when: string) => {
      assert.is((await service(keep))?.pid, keepPid, `keep: same process ${when}`)
      assert.is(await httpStatus(keepUrl), 200, `keep answers ${when}`)
    }

    // a watched service killed: the watchdog bangs its partition, exactly once
    node.clearCalls()
    process.kill(gonePid, 'SIGKILL')
    const bangs = () => node.calls().filter((c) => c.name === 'softwareInstanceBang')
    await waitFor('the bang', () => bangs().length > 0, 20_000)
    // the barrier instead of a wait for "nothing more": the service settled after its one exit
    // (exited for good, or running again under a new pid) and the watchdog logged one decision
    await waitFor('the service settled', async () => {
      const p = await service(gone)
      return p !== undefined && (['EXITED', 'FATAL', 'STOPPED'].includes(p.statename) || (p.statename === 'RUNNING' && p.pid !== gonePid))
    }, 20_000)
    const logDir = join(node.instanceRoot, 'var', 'log')
    const decisions = () =>
      readdirSync(logDir)
        .filter((f) => f.startsWith('watchdog-stderr'))
        .flatMap((f) => readFileSync(join(logDir, f), 'utf8').split('\n'))
        .filter((l) => l.includes(`partition ${gone} encountered a problem`) || l.includes(`of ${gone} stopped`))
    await waitFor('the watchdog decision', () => decisions().length > 0, 20_000)
    assert.is(decisions().length, 1, decisions().join('\n'))
    assert.is(bangs().length, 1, JSON.stringify(bangs()))
    assert.is(bangs()[0]?.fields.computer_partition_id, gone)
    assert.match(bangs()[0]?.fields.message ?? '', `process in partition ${gone} encountered a problem`)
    await keepStill('after the crash of the other')

    // destroyed: node instance stops it and reports it stopped, files stay
    await requestState(node, 'gone', 'destroyed')
    node.clearCalls()
    const stop = await node.run(['node', 'instance', '--now'], { timeoutMs: 300_000 })
    assert.is(stop.code, 0, stop.stderr)
    assert.ok(names(node.calls()).includes(`stoppedComputerPartition ${gone}`), names(node.calls()).join(', '))
    const groupFile = join(node.instanceRoot, 'etc', 'supervisord.conf.d', `${gone}.conf`)
    assert.not.ok(existsSync(groupFile))
    assert.not.ok(await service(gone))
    const gonePath = join(node.instanceRoot, gone)
    assert.ok(existsSync(join(gonePath, 'buildout.cfg')), 'node instance does not wipe')
    await keepStill('after node instance stopped the other')

    // node report wipes it and the master frees it
    for (const ext of ['crt', 'key']) if (!existsSync(join(node.certificateRepository, `${gone}.${ext}`))) writeFileSync(join(node.certificateRepository, `${gone}.${ext}`), 'x')
    node.clearCalls()
    const rep = await node.run(['node', 'report', '--now'])
    assert.is(rep.code, 0, rep.stderr)
    assert.equal(names(node.calls()), [
      'getFullComputerInformation',
      `getComputerPartitionCertificate ${gone}`,
      `stoppedComputerPartition ${gone}`,
      `destroyedComputerPartition ${gone}`,
    ])
    assert.equal(readdirSync(gonePath), [])
    assert.is(statSync(gonePath).mode & 0o7777, 0o750)
    for (const ext of ['crt', 'key']) assert.not.ok(existsSync(join(node.certificateRepository, `${gone}.${ext}`)))
    assert.ok(existsSync(join(node.certificateRepository, `${keep}.crt`)))
    assert.not.ok(existsSync(groupFile))
    assert.ok(existsSync(join(node.instanceRoot, keep, 'buildout.cfg')))
    await keepStill('after node report')
    // the partition is free again: a new instance gets it and deploys there
    assert.is(await allocate(node, 'newcomer'), gone)
    const again = await node.run(['node', 'instance', '--now'], { timeoutMs: 300_000 })
    assert.is(again.code, 0, again.stderr)
    assert.is(await httpStatus(goneUrl), 200)
    await keepStill('after a new instance took the freed partition')
  } finally {
    await node.stop()
  }
})

life.run()

// --- helpers ---

/** A master in front of the tap that answers 500 to the endpoints named in `failing`. */
async function failingMaster(upstream: string, failing: Set<string>): Promise<{ url: string; server: Server; failing: Set<string> }> {
  const target = new URL(upstream)
  const server = createServer((req, res) => {
    const name = new URL(req.url ?? '/', upstream).pathname.replace(/^\/+/, '')
    if (failing.has(name)) {
      req.resume()
      res.writeHead(500, { 'content-type': 'text/plain' })
      res.end('Internal Server Error')
      return
    }
    const fwd = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers)
      up.pipe(res)
    })
    fwd.on('error', () => {
      res.writeHead(502)
      res.end()
    })
    req.pipe(fwd)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, server, failing }
}

/** HTTP status of a GET, retried for a few seconds while the service starts; 0 if nothing answers. */
async function httpStatus(url: string): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const code = await new Promise<number>((res) => {
      const req = httpGet(url, (r) => {
        r.resume()
        res(r.statusCode ?? 0)
      })
      req.on('error', () => res(0))
      req.setTimeout(2000, () => req.destroy())
    })
    if (code !== 0) return code
    await new Promise((r) => setTimeout(r, 100))
  }
  return 0
}
