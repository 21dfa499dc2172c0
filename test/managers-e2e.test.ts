// Every manager at once, end to end (issue acceptance): a node with
// `manager_list = cpuset devperm portredir prerm whitelistfirewall` and `[firewall]` deploys
// the sample release into a partition of an unprivileged user, then destroys it. Real parts
// only: the built binary and our proxy, supervisord, buildout, socat forwarding real traffic,
// a child cgroup of the machine's cpuset hierarchy, a loop device, and firewalld with its own
// D-Bus in a network + mount namespace (test/firewalld-ns.ts). Also `node format` calling
// the cpuset manager, in namespaces with a private /etc (test/netns.ts).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chownSync, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { createLogger } from '../src/log.ts'
import { detectHierarchy, formatHierarchy, parseCpuList } from '../src/manager-cpuset.ts'
import { Supervisor, supervisorPaths } from '../src/supervisor.ts'
import { firewalldNamespace, firewalldProblem, type FirewalldNs } from './firewalld-ns.ts'
import { skip, tempDir } from './helpers.ts'
import { canUseNamespaces, formatInNamespace } from './netns.ts'
import { freePorts, httpBody, makeNode, waitFor, type TestNode } from './node-helpers.ts'

const NOBODY = 65534
const CPUSET = '/sys/fs/cgroup/cpuset'
const quiet = createLogger({ level: 'critical', write: () => undefined })
const t = suite('all managers and [firewall], end to end')

t('deploys with every manager: port redirected, exclusive CPU, loop disk, whitelist; prerm delays destruction; nothing left after', async () => {
  const problem = firewalldProblem() ?? (existsSync(join(CPUSET, 'cpuset.cpus')) ? undefined : 'no cgroup v1 cpuset hierarchy at /sys/fs/cgroup/cpuset')
  if (problem) return skip(problem)
  const [shared, exclusive] = parseCpuList(readFileSync(join(CPUSET, 'cpuset.cpus'), 'utf8')) ?? []
  if (shared === undefined || exclusive === undefined) return skip('needs 2 CPUs')
  const work = tempDir('slapos-managers-e2e-')
  const cgroup = join(CPUSET, `slapos-test-${randomBytes(4).toString('hex')}`)
  const cleanups: Array<() => void | Promise<void>> = [() => rmSync(work, { recursive: true, force: true })]
  let node: TestNode | undefined
  let sleeper: ChildProcess | undefined
  try {
    // the pieces a production node has: a cpuset hierarchy (a child of the machine's, formatted
    // as node format does), a disk for a VM, a firewalld
    mkdirSync(cgroup)
    cleanups.push(() => removeCgroup(cgroup))
    writeFileSync(join(cgroup, 'cpuset.cpus'), `${shared},${exclusive}`)
    writeFileSync(join(cgroup, 'cpuset.mems'), '0')
    writeFileSync(join(cgroup, 'cpuset.cpu_exclusive'), '1')
    const hierarchy = detectHierarchy(cgroup)
    if (typeof hierarchy === 'string') throw new Error(hierarchy)
    formatHierarchy(hierarchy, quiet)
    const image = join(work, 'disk.img')
    writeFileSync(image, '')
    spawnSync('truncate', ['-s', '8M', image])
    const loop = spawnSync('losetup', ['--find', '--show', image], { encoding: 'utf8' }).stdout.trim()
    assert.match(loop, /^\/dev\/loop\d+$/)
    const loopOwner = statSync(loop)
    cleanups.push(() => {
      lchownSync(loop, loopOwner.uid, loopOwner.gid)
      spawnSync('losetup', ['-d', loop])
    })
    const ns: FirewalldNs = await firewalldNamespace(join(work, 'fw'))
    cleanups.push(() => ns.stop())
    await ns.startDaemons()

    node = await makeNode({
      partitions: 1,
      extraSlapos: 'manager_list = cpuset devperm portredir prerm whitelistfirewall\npower_user_list = nobody',
      extraCfg: [
        '[manager:cpuset]',
        `cpuset_root = ${cgroup}`,
        `cpufreq_root = ${join(work, 'cpufreq')}`,
        '',
        '[manager:devperm]',
        `allowed-disk-for-vm = ${loop}`,
        '',
        '[firewall]',
        `firewall_cmd = ${ns.firewallCmd}`,
        `reload_config_cmd = ${ns.firewallCmd} --reload`,
        'testing = true',
      ].join('\n'),
    })
    const n = node
    // software and partition of an unprivileged user, as node format leaves them
    chownSync(n.softwareRoot, NOBODY, NOBODY)
    chownTree(join(n.dir, 'sr'), NOBODY)
    const id = 'slappart0'
    const path = join(n.instanceRoot, id)
    chownSync(path, NOBODY, NOBODY)
    await n.supply()
    await n.client.requestComputerPartition({ softwareRelease: n.srUrl, partitionReference: 'vm' })
    assert.is((await n.run(['node', 'software', '--now'])).code, 0)

    // what the instance asks of its managers (a release writes these from its buildout)
    const [port = 0] = await freePorts(1)
    sleeper = spawn('sleep', ['600'], { uid: NOBODY, gid: NOBODY, stdio: 'ignore' })
    const address = n.addresses[id] ?? ''
    asPartitionUser(join(path, '.slapos-port-redirect'), JSON.stringify([{ srcPort: port, destPort: 8080, destAddress: address }]))
    asPartitionUser(join(path, '.slapos-cpu-exclusive'), `${sleeper.pid}\n`)
    asPartitionUser(join(path, '.slapos-disk-permission'), JSON.stringify([{ disk: loop }]))
    asPartitionUser(join(path, '.slapos-whitelist-firewall'), JSON.stringify(['127.0.0.1']))

    const deploy = await n.run(['--log-level', 'debug', 'node', 'instance', '--now'], { timeoutMs: 180_000 })
    assert.is(deploy.code, 0, deploy.stderr)
    // every manager was called, in manager_list order
    const hooks = deploy.stderr.split('\n').map((l) => /manager (\w+): (\w+)/.exec(l)?.slice(1).join(' ')).filter(Boolean)
    assert.equal(hooks, ['cpuset instance', 'devperm instance', 'devperm instanceTearDown', 'portredir instanceTearDown', 'whitelistfirewall instanceTearDown'])
    // the port is redirected: traffic passes
    assert.match(await httpBody(`http://127.0.0.1:${port}/`), /<h1>/)
    // the power user's process runs on its exclusive CPU
    assert.is(readFileSync(`/proc/${sleeper.pid}/cpuset`, 'utf8').trim(), `${cgroup.slice(CPUSET.length)}/cpu${exclusive}`)
    assert.match(readFileSync(`/proc/${sleeper.pid}/status`, 'utf8'), new RegExp(`Cpus_allowed_list:\\s+${exclusive}\\n`))
    // the loop disk belongs to the partition user, group disk
    const disk = statSync(loop)
    assert.equal([disk.uid, disk.gid], [NOBODY, groupId('disk')])
    // the outgoing whitelist is in firewalld
    assert.is(ns.firewall(['--direct', '--query-chain', 'ipv4', 'filter', `${id}-whitelist`]).stdout.trim(), 'yes')
    assert.match(ns.firewall(['--direct', '--get-all-rules']).stdout, new RegExp(`ipv4 filter ${id}-whitelist 0 -d 127\\.0\\.0\\.1 -j ACCEPT`))
    assert.match(ns.firewall(['--direct', '--get-all-rules']).stdout, new RegExp(`ipv4 filter OUTPUT 0 -m owner --uid-owner ${NOBODY} -j ${id}-whitelist`))

    // destruction: a pre-delete script that runs until the test lets it go
    const flag = join(path, 'tmp', 'draining')
    mkdirSync(join(path, 'etc', 'prerm'), { recursive: true })
    mkdirSync(join(path, 'tmp'), { recursive: true })
    writeFileSync(join(path, 'etc', 'prerm', 'drain'), `#!/bin/sh\ntouch ${flag}\nwhile [ -e ${flag} ]; do sleep 0.1; done\n`, { mode: 0o755 })
    chownTree(join(path, 'etc', 'prerm'), NOBODY)
    chownTree(join(path, 'tmp'), NOBODY)
    await n.client.requestComputerPartition({ softwareRelease: n.srUrl, partitionReference: 'vm', state: 'destroyed' })
    assert.is((await n.run(['node', 'instance', '--now'])).code, 0)
    const first = await n.run(['node', 'report', '--now'])
    assert.is(first.code, 0, first.stderr)
    assert.match(first.stderr, /There are running processes into the partition, wait until they finish/)
    await waitFor('the pre-delete script', async () => (existsSync(flag) ? true : undefined))
    assert.ok(readdirSync(path).length > 0, 'kept while the script runs')
    rmSync(flag)
    const sup = new Supervisor(supervisorPaths(n.instanceRoot), quiet)
    await waitFor('the script to exit', async () => ((await sup.processInfoOf(`${id}-prerm:drain`))?.statename === 'EXITED' ? true : undefined))
    n.clearCalls()
    const last = await n.run(['node', 'report', '--now'])
    assert.is(last.code, 0, last.stderr)
    assert.ok(n.calls().some((c) => c.name === 'destroyedComputerPartition' && c.fields.computer_partition_id === id))

    // nothing left behind
    assert.equal(readdirSync(path), [])
    assert.equal(readdirSync(join(n.instanceRoot, 'etc', 'supervisord.conf.d')).filter((f) => f.startsWith(id)), [])
    assert.equal((await sup.processInfo()).filter((p) => p.group.startsWith(id)), [])
    assert.not.ok(await accepts(port), 'the redirection is gone')
    assert.is(ns.firewall(['--direct', '--query-chain', 'ipv4', 'filter', `${id}-whitelist`]).stdout.trim(), 'no')
    assert.not.match(ns.firewall(['--direct', '--get-all-rules']).stdout, new RegExp(`uid-owner ${NOBODY}`))
    const returned = statSync(loop)
    assert.equal([returned.uid, returned.gid], [0, groupId('disk')], 'the disk went back to root')
  } finally {
    sleeper?.kill('SIGKILL')
    await node?.stop()
    for (const c of cleanups.reverse()) await c()
  }
})

t('node format calls the cpuset manager: per-CPU cpusets in a real cgroup (checklist 8 through the command)', async () => {
  if (!canUseNamespaces()) return skip('needs root and unshare --net --mount')
  if (!existsSync(join(CPUSET, 'cpuset.cpus'))) return skip('no cgroup v1 cpuset hierarchy at /sys/fs/cgroup/cpuset')
  const pool = parseCpuList(readFileSync(join(CPUSET, 'cpuset.cpus'), 'utf8')) ?? []
  const dir = tempDir('slapos-format-cpuset-')
  const cgroup = join(CPUSET, `slapos-test-${randomBytes(4).toString('hex')}`)
  try {
    mkdirSync(cgroup)
    writeFileSync(join(cgroup, 'cpuset.cpus'), pool.join(','))
    writeFileSync(join(cgroup, 'cpuset.mems'), '0')
    writeFileSync(join(cgroup, 'cpuset.cpu_exclusive'), '1')
    const run = await formatInNamespace(dir, { partitions: 1, runs: 1, extraFormatCfg: `manager_list = cpuset\n\n[manager:cpuset]\ncpuset_root = ${cgroup}` })
    assert.is(run.code, 0, run.output)
    assert.equal(run.formatCodes, [0], readFileSync(join(dir, 'state', 'format.1.log'), 'utf8'))
    assert.match(readFileSync(join(dir, 'state', 'format.1.log'), 'utf8'), /manager cpuset: format/)
    for (const cpu of pool) {
      assert.is(readFileSync(join(cgroup, `cpu${cpu}`, 'cpuset.cpus'), 'utf8').trim(), String(cpu))
      assert.is(readFileSync(join(cgroup, `cpu${cpu}`, 'cpuset.cpu_exclusive'), 'utf8').trim(), '1')
    }
    // an unknown manager stops format with exit 1 before anything is changed
    const bad = await formatInNamespace(join(dir, 'bad'), { partitions: 1, runs: 1, extraFormatCfg: 'manager_list = nosuch' })
    const badLog = readFileSync(join(dir, 'bad', 'state', 'format.1.log'), 'utf8')
    assert.equal(bad.formatCodes, [1], badLog)
    assert.match(badLog, /No module named 'slapos\.manager\.nosuch'/)
  } finally {
    removeCgroup(cgroup)
    rmSync(dir, { recursive: true, force: true })
  }
})

// --- helpers ---

function asPartitionUser(file: string, text: string): void {
  writeFileSync(file, text)
  lchownSync(file, NOBODY, NOBODY)
}

function chownTree(p: string, uid: number): void {
  const st = lstatSync(p)
  if (st.isDirectory()) for (const name of readdirSync(p)) chownTree(join(p, name), uid)
  lchownSync(p, uid, uid)
}

function groupId(name: string): number {
  const line = readFileSync('/etc/group', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`))
  return Number(line?.split(':')[2])
}

/** Moves the tasks left in a test cgroup (and its children) to the machine's root, then removes it. */
function removeCgroup(dir: string): void {
  if (!existsSync(dir)) return
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroup(join(dir, e.name))
  for (const pid of readFileSync(join(dir, 'tasks'), 'utf8').split(/\s+/).filter(Boolean)) {
    try {
      writeFileSync(join(CPUSET, 'tasks'), `${pid}\n`)
    } catch {
      // exited meanwhile
    }
  }
  rmdirSync(dir)
}


async function accepts(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      res(true)
    })
    s.once('error', () => res(false))
  })
}


t.run()
