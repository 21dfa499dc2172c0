// A lab cluster on one machine, end to end with the built binary: one master (our proxy) and
// three nodes, each made by one `slapos configure local --standalone DIR --computer-id ID
// --master-url URL` inside its own network namespace (test/netns.ts makeLab), with its own
// roots, supervisord and private IPv4 network. The sample Software Release is supplied to the
// three computers, an instance is requested on each with --node computer_guid=..., and a
// shared instance on node B's instance; then one node's instance is destroyed and another
// node's supervisord killed, and the rest of the cluster keeps serving.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { skip, SLAPOS, slaposAsync, startProxy, tempDir, type Result, type StartedProxy } from './helpers.ts'
import { canMakeLab, makeLab, type Lab } from './netns.ts'
import { httpBody, renderSoftwareRelease, stopSupervisord, waitFor } from './node-helpers.ts'

const COMPUTERS = ['node-a', 'node-b', 'node-c'] as const
const ENV = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/nonexistent' }

interface LabNode {
  id: string
  dir: string
  cfg: string
  instanceRoot: string
}

test('three nodes of one master, each in its own namespace: deploy, share, destroy one, lose a supervisord', async () => {
  if (!canMakeLab()) return skip('needs root and `ip netns` (network namespaces) to make the lab')
  const lab = makeLab(COMPUTERS.length)
  const nodes: LabNode[] = []
  let proxy: StartedProxy | undefined
  try {
    const top = tempDir('slapos-cluster-')
    const srUrl = renderSoftwareRelease(join(top, 'sr'))
    // the lab's master: on the bridge, where every namespace and the host reach it
    proxy = await startProxy({ computerId: COMPUTERS[0], args: ['--host', lab.hostAddress] })
    const masterUrl = proxy.url

    // one command per node, run inside the node's namespace: configuration, supervisord, format
    const configured = await Promise.all(
      COMPUTERS.map((id, i) => {
        const dir = join(top, id)
        nodes.push({ id, dir, cfg: join(dir, 'etc', 'opt', 'slapos', 'slapos.cfg'), instanceRoot: join(dir, 'srv', 'slapgrid') })
        return lab.exec(i, [
          SLAPOS, 'configure', 'local', '--standalone', dir, '--computer-id', id, '--master-url', masterUrl,
          '--ipv4-local-network', lab.namespaces[i]!.network, '--partition-number', '2', '--run-as-root',
        ], { env: ENV })
      }),
    )
    configured.forEach((r, i) => assert.is(r.code, 0, `configure ${COMPUTERS[i]}: ${r.stderr}`))
    const [A, B, C] = nodes as [LabNode, LabNode, LabNode]
    // no local master of its own, its own supervisord (socket under its directory) in its own namespace
    for (const [i, n] of nodes.entries()) {
      assert.not.ok(existsSync(join(n.dir, 'etc', 'opt', 'slapos', 'slapos-proxy.cfg')), n.id)
      assert.not.ok(existsSync(join(n.instanceRoot, 'etc', 'supervisord.conf.d', 'slapproxy.conf')), n.id)
      assert.ok(lab.pids(i).includes(supervisordPid(n)), `${n.id}'s supervisord runs in its namespace`)
    }
    assert.is(new Set(nodes.map(supervisordPid)).size, 3)

    // the master knows three computers, each with the partitions its node formatted
    const client = (args: string[]) => slaposAsync([...args, '--cfg', A.cfg], { env: ENV })
    for (const [i, n] of nodes.entries()) {
      const supply = await client(['supply', srUrl, n.id])
      assert.is(supply.code, 0, supply.stderr)
      assert.equal(await partitionIds(masterUrl, n.id), ['slappart0', 'slappart1'], configured[i]!.stderr)
    }
    const node = (n: LabNode, args: string[]) => lab.exec(nodes.indexOf(n), [SLAPOS, ...args, '--cfg', n.cfg], { env: ENV })
    const software = await Promise.all(nodes.map((n) => node(n, ['node', 'software', '--now'])))
    software.forEach((r, i) => assert.is(r.code, 0, `node software on ${COMPUTERS[i]}: ${r.stderr}`))

    // one instance per node, pinned with --node computer_guid=...
    const requestOn = (title: string, id: string, extra: string[] = []) =>
      client(['request', title, srUrl, '--node', `computer_guid=${id}`, '--parameters', `greeting=Hello from ${title}`, '--json', ...extra])
    // the master allocates at once: the answer names the computer, nothing is published yet
    for (const n of nodes) assert.is((await requested(requestOn(`inst-${n.id}`, n.id)))['computer-id'], n.id)
    await instanceRuns(nodes, node)
    const urls: Record<string, string> = {}
    for (const [i, n] of nodes.entries()) {
      const doc = await requested(requestOn(`inst-${n.id}`, n.id))
      assert.is(doc['computer-id'], n.id)
      const url = doc['connection-parameters']['url-http']!
      assert.ok(url.startsWith(`http://${lab.namespaces[i]!.network.replace(/\.0\/24$/, '.')}`), url)
      urls[n.id] = url
      // served from the node's namespace, answered to the host
      assert.match(await httpBody(url), `Hello from inst-${n.id}`)
    }

    // a shared instance, hosted on node B's instance
    const shared = (extra: string[] = []) =>
      client(['request', 'front', srUrl, '--slave', '--node', `computer_guid=${B.id}`, '--parameters', 'greeting=Hello from the shared front', '--json', ...extra])
    const first = await requested(shared())
    assert.is(first['computer-id'], B.id)
    assert.equal(first['connection-parameters'], {}, 'nothing published before node B ran')
    const bRun = await node(B, ['node', 'instance', '--now'])
    assert.is(bRun.code, 0, bRun.stderr)
    const front = await requested(shared())
    const frontUrl = front['connection-parameters']['url-http']!
    assert.ok(frontUrl.startsWith(urls[B.id]!), `${frontUrl} is not served by ${urls[B.id]}`)
    assert.match(await httpBody(frontUrl), 'Hello from the shared front')
    assert.match(await httpBody(urls[B.id]!), `Hello from inst-${B.id}`)

    // destroying node A's instance: gone after node A's runs, B and C untouched by their runs
    const before = Object.fromEntries([B, C].map((n) => [n.id, partitionState(n)]))
    const destroy = await client(['request', `inst-${A.id}`, srUrl, '--node', `computer_guid=${A.id}`, '--state', 'destroyed'])
    assert.is(destroy.code, 0, destroy.stderr)
    const aInstance = await node(A, ['node', 'instance', '--now'])
    assert.is(aInstance.code, 0, aInstance.stderr)
    const aReport = await node(A, ['node', 'report', '--now'])
    assert.is(aReport.code, 0, aReport.stderr)
    for (const n of [B, C]) {
      const r = await node(n, ['node', 'instance', '--now'])
      assert.is(r.code, 0, r.stderr)
      assert.not.match(r.stderr, 'Processing partition', `${n.id} reprocessed a partition:\n${r.stderr}`)
      assert.equal(partitionState(n), before[n.id], `${n.id}'s partitions changed`)
    }
    await waitFor(`${urls[A.id]} to stop answering`, async () => ((await status(urls[A.id]!)) === 'refused' ? true : undefined))
    const listed = await client(['service', 'list'])
    assert.is(listed.code, 0, listed.stderr)
    assert.not.match(listed.stdout, `inst-${A.id}`)
    assert.match(listed.stdout, `inst-${B.id}`)
    assert.equal(await busyPartitions(masterUrl, A.id), [], "node A's partition is free again")
    assert.match(await httpBody(urls[B.id]!), `Hello from inst-${B.id}`)
    assert.match(await httpBody(urls[C.id]!), `Hello from inst-${C.id}`)
    assert.match(await httpBody(frontUrl), 'Hello from the shared front')

    // node C's supervisord dies: B (and its shared instance) still serve, A and B still run
    const cPid = supervisordPid(C)
    process.kill(cPid, 'SIGKILL')
    await waitFor("node C's supervisord to go", async () => (alive(cPid) ? undefined : true))
    for (const n of [A, B]) {
      const r = await node(n, ['node', 'instance', '--now'])
      assert.is(r.code, 0, `${n.id} after C lost its supervisord: ${r.stderr}`)
    }
    assert.ok(alive(supervisordPid(A)) && alive(supervisordPid(B)))
    assert.match(await httpBody(urls[B.id]!), `Hello from inst-${B.id}`)
    assert.match(await httpBody(frontUrl), 'Hello from the shared front')
  } finally {
    for (const n of nodes) await stopSupervisord(n.instanceRoot)
    await proxy?.stop()
    lab.remove()
  }
})

test('configure local --master-url/--computer-id: what it writes, what it refuses', async () => {
  const dir = tempDir('slapos-cluster-cfg-')
  const args = ['configure', 'local', '--standalone', join(dir, 'n'), '--no-start', '--run-as-root']
  const ok = await slaposAsync([...args, '--computer-id', 'COMP-lab-1', '--master-url', 'http://192.0.2.10:8080/'], { env: ENV })
  assert.is(ok.code, 0, ok.stderr)
  const cfg = readFileSync(join(dir, 'n', 'etc', 'opt', 'slapos', 'slapos.cfg'), 'utf8')
  assert.match(cfg, /^computer_id = COMP-lab-1$/m)
  assert.match(cfg, /^master_url = http:\/\/192\.0\.2\.10:8080$/m)
  assert.match(cfg, /^master_rest_url = http:\/\/192\.0\.2\.10:8080\/hateoas$/m)
  // no local master: no [slapproxy] keys, no proxy configuration
  assert.not.match(cfg, /^database_uri =/m)
  assert.not.ok(existsSync(join(dir, 'n', 'etc', 'opt', 'slapos', 'slapos-proxy.cfg')))
  // what to run next names this computer
  assert.match(ok.stderr, 'slapos supply <software.cfg URL> COMP-lab-1')
  assert.match(ok.stderr, '--node computer_guid=COMP-lab-1')
  // the URL as parsed is written: scheme and host in lower case, no final '/'
  const v6 = await slaposAsync([...args.map((a) => (a === join(dir, 'n') ? join(dir, 'v6') : a)), '--master-url', 'HTTP://[2001:DB8::A]:8080//'], { env: ENV })
  assert.is(v6.code, 0, v6.stderr)
  assert.match(readFileSync(join(dir, 'v6', 'etc', 'opt', 'slapos', 'slapos.cfg'), 'utf8'), /^master_url = http:\/\/\[2001:db8::a\]:8080$/m)

  const refused: [string[], string][] = [
    [['--computer-id', '../etc'], "--computer-id '../etc' is not a safe identifier"],
    [['--computer-id', 'a\nb'], '--computer-id'],
    [['--master-url', 'file:///etc/passwd'], 'is not an http or https URL'],
    [['--master-url', 'http://x/\n[slapos]'], 'has spaces or control characters'],
    [['--master-url', 'http://user:pw@x/'], 'must not carry credentials'],
    [['--master-url', 'http://x/', '--enable-shacache-proxy'], '--enable-shacache-proxy needs the local master'],
    // slapos.cfg is read by ConfigParser (% expands), each partition's buildout gets the URL ($, {} expand)
    [['--master-url', 'http://x/%(computer_id)s'], "no '%'"],
    [['--master-url', 'http://x/${slap-connection:key-file}'], "no '%'"],
    [['--master-url', 'http://x/%7Bpart%7D'], "no '%'"],
    // an empty URL is not "no URL" (a local master of its own)
    [['--master-url', ''], 'is empty'],
    [['--master-url', 'http://x/', '--daemon-listen-port', '9000'], '--daemon-listen-port configures the local master'],
    [['--master-url', 'http://x/', '--daemon-listen-ip', '127.0.0.9'], '--daemon-listen-ip configures the local master'],
    [['--computer-id=-rf'], "--computer-id '-rf' must not start with '-'"],
  ]
  for (const [extra, message] of refused) {
    const where = join(dir, `r${refused.findIndex((r) => r[0] === extra)}`)
    const r = await slaposAsync(['configure', 'local', '--standalone', where, '--no-start', ...extra], { env: ENV })
    assert.is(r.code, 2, `${extra.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, message)
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr)
    assert.not.ok(existsSync(where), 'nothing written')
  }
})

test.run()

// --- internal ---

interface RequestDoc {
  'computer-id': string
  'partition-id': string
  'connection-parameters': Record<string, string>
}

/** The --json document of a request that the master answered (exit 0). */
async function requested(r: Promise<Result>): Promise<RequestDoc> {
  const res = await r
  assert.is(res.code, 0, res.stderr)
  return JSON.parse(res.stdout) as RequestDoc
}

/** `node instance --now` on each node in turn (one buildout at a time on a small machine). */
async function instanceRuns(nodes: LabNode[], run: (n: LabNode, args: string[]) => Promise<Result>): Promise<void> {
  for (const n of nodes) {
    const r = await run(n, ['node', 'instance', '--now'])
    assert.is(r.code, 0, `node instance on ${n.id}: ${r.stderr}`)
    // what a run that deploys says (a later run without anything to do must not)
    assert.match(r.stderr, 'Processing partition', r.stderr)
  }
}

function supervisordPid(n: LabNode): number {
  return Number(readFileSync(join(n.instanceRoot, 'var', 'run', 'supervisord.pid'), 'utf8').trim())
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')
  } catch {
    return false
  }
}

/** What a run that processed a partition would change: its .timestamp and its buildout's record. */
function partitionState(n: LabNode): Record<string, string> {
  const out: Record<string, string> = {}
  for (const p of readdirSync(n.instanceRoot).filter((d) => d.startsWith('slappart')).sort()) {
    for (const f of ['.timestamp', '.installed.cfg']) {
      const path = join(n.instanceRoot, p, f)
      out[`${p}/${f}`] = existsSync(path) ? `${statSync(path).mtimeMs} ${readFileSync(path, 'utf8').length}` : 'none'
    }
  }
  return out
}

/** The partitions of a computer, as its node's format posted them to the master. */
async function partitionIds(masterUrl: string, computer: string): Promise<string[]> {
  const { SlapClient } = await import('../src/slap-client.ts')
  const info = await new SlapClient({ masterUrl }).getFullComputerInformation(computer)
  const json = JSON.stringify(info, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))
  return [...new Set([...json.matchAll(/"_partition_id":"([^"]+)"/g)].map((m) => m[1]!))].sort()
}

/** Partitions of a computer that hold an instance (slapos.allDocs.v0.compute_node_instance_list). */
async function busyPartitions(masterUrl: string, computer: string): Promise<string[]> {
  const body = JSON.stringify({ computer_guid: computer })
  const text = await new Promise<string>((resolve, reject) => {
    const req = httpRequest(new URL('slapos.allDocs.v0.compute_node_instance_list', masterUrl), { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let s = ''
      res.setEncoding('utf8').on('data', (c: string) => (s += c))
      res.on('end', () => resolve(s))
    })
    req.on('error', reject)
    req.end(body)
  })
  const doc = JSON.parse(text) as { result_list?: { title: string }[] }
  return (doc.result_list ?? []).map((r) => r.title)
}

/** 'refused' when nothing listens at the URL's address any more, else 'up'. */
function status(url: string): Promise<'refused' | 'up'> {
  return new Promise((resolve) => {
    const req = httpRequest(url, (res) => {
      res.resume()
      resolve('up')
    })
    req.on('error', () => resolve('refused'))
    req.setTimeout(2000, () => req.destroy())
  })
}
