// `slapos node boot` (grid.md §9.1, checklist 119-121): the built binary against our proxy
// with a format that touches neither users nor network, and the order of its steps with a
// recording runner (retries, the wait for IPv6).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { bootNode, hasGlobalIpv6, type BootOptions } from '../src/boot.ts'
import { createLogger } from '../src/log.ts'
import type { Runner } from '../src/system.ts'
import { tempDir } from './helpers.ts'
import { makeNode, type TestNode } from './node-helpers.ts'

/** Keys that make `node format` write only directories and files ([slapos] wins over [slapformat]). */
function formatKeys(dir: string, partitions: number): string {
  return [
    'alter_user = false',
    'alter_network = false',
    'create_tap = false',
    `partition_amount = ${partitions}`,
    'ipv4_local_network = 127.0.1.0/24',
    `computer_xml = ${join(dir, 'slapos.xml')}`,
  ].join('\n')
}

function timestamps(node: TestNode): string[] {
  return ['slappart0', 'slappart1'].map((p) => join(node.instanceRoot, p, '.timestamp'))
}

const boot = suite('node boot (built binary, real proxy)')

boot('formats, bangs the master with Reboot, deletes the partitions .timestamp files', async () => {
  const dir = tempDir('slapos-boot-')
  const node = await makeNode({ partitions: 2, extraSlapos: formatKeys(dir, 2) })
  try {
    for (const t of timestamps(node)) writeFileSync(t, '1700000000')
    mkdirSync(join(node.instanceRoot, 'other'))
    writeFileSync(join(node.instanceRoot, 'other', '.timestamp'), 'x')
    node.clearCalls()
    const r = await node.run(['node', 'boot'], { timeoutMs: 120_000 })
    assert.is(r.code, 0, r.stderr)
    const names = node.calls().map((c) => c.name)
    const post = names.indexOf('loadComputerConfigurationFromXML')
    const bang = names.indexOf('computerBang')
    assert.ok(post >= 0 && bang > post, names.join(', '))
    const bangCall = node.calls()[bang]
    assert.equal(bangCall?.fields, { computer_id: node.computerId, message: 'Reboot' })
    assert.is(names.filter((n) => n === 'computerBang').length, 1)
    for (const t of timestamps(node)) assert.not.ok(existsSync(t), t)
    assert.ok(existsSync(join(node.instanceRoot, 'other', '.timestamp')), 'only <partition_base_name>* partitions')
    assert.ok(existsSync(join(dir, 'slapos.xml')), 'format ran')
    assert.match(r.stderr, /Removing .*slappart0\/\.timestamp/)
  } finally {
    await node.stop()
  }
})

boot('master unreachable: format reports offline (2), boot waits for the master, then goes on', async () => {
  const dir = tempDir('slapos-boot-')
  const node = await makeNode({ partitions: 2, extraSlapos: formatKeys(dir, 2) })
  // a port that nobody listens on yet; a forwarder to the node's master opens on it later
  const probe = createServer()
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()))
  const port = (probe.address() as AddressInfo).port
  await new Promise<void>((r) => probe.close(() => r()))
  const cfg = join(dir, 'slapos.cfg')
  writeFileSync(cfg, readFileSync(node.cfgPath, 'utf8').replace(`master_url = ${node.masterUrl}`, `master_url = http://127.0.0.1:${port}/`))
  let forwarder: Server | undefined
  try {
    for (const t of timestamps(node)) writeFileSync(t, '1')
    node.clearCalls()
    const running = node.run(['node', 'boot', '--cfg', cfg, '--retry-interval', '1'], { noCfg: true, timeoutMs: 120_000 })
    await new Promise((r) => setTimeout(r, 3000))
    forwarder = await forward(port, node.masterUrl)
    const r = await running
    assert.is(r.code, 0, r.stderr)
    assert.match(r.stderr, 'node format failed (exit 2)')
    assert.match(r.stderr, /unreachable|waiting until 127\.0\.0\.1 answers/)
    const names = node.calls().map((c) => c.name)
    assert.ok(names.includes('loadComputerConfigurationFromXML') && names.includes('computerBang'), names.join(', '))
    for (const t of timestamps(node)) assert.not.ok(existsSync(t))
  } finally {
    forwarder?.close()
    await node.stop()
  }
})

boot('an interface without global IPv6: waits, says so, gives up after --ipv6-timeout (exit 1) without formatting', async () => {
  const dir = tempDir('slapos-boot-')
  const node = await makeNode({ partitions: 1, extraSlapos: formatKeys(dir, 1) })
  try {
    const cfg = join(dir, 'slapos.cfg')
      writeFileSync(cfg, readFileSync(node.cfgPath, 'utf8').replace('[slapformat]\n', '[slapformat]\ninterface_name = lo\n'))
    node.clearCalls()
    const r = await node.run(['node', 'boot', '--cfg', cfg, '--ipv6-timeout', '6'], { noCfg: true })
    assert.is(r.code, 1, r.stderr)
    assert.match(r.stderr, 'No global IPv6 address on interface lo yet')
    assert.match(r.stderr, /No global IPv6 address on interface lo after \d+ s/)
    assert.equal(node.calls(), [])
    assert.not.ok(existsSync(join(dir, 'slapos.xml')))
  } finally {
    await node.stop()
  }
})

boot.run()

const steps = suite('node boot steps (recording runner)')

/** Test double: records argv and answers the exit codes given per command word. */
function recordingRunner(codes: Record<string, number[]>): Runner & { argv: string[][] } {
  const argv: string[][] = []
  return {
    argv,
    async run(a) {
      argv.push(a)
      const word = a[a.indexOf('node') + 1] ?? ''
      const code = codes[word]?.shift() ?? 0
      return { code, signal: null, stdout: '', stderr: '', timedOut: false }
    },
  }
}

function options(runner: Runner, extra: Partial<BootOptions> = {}): BootOptions {
  return {
    cfgPath: '/etc/opt/slapos/slapos.cfg',
    instanceRoot: tempDir(),
    partitionBaseName: 'slappart',
    masterUrl: 'http://127.0.0.1:1/',
    self: ['/usr/bin/slapos'],
    childArgs: [],
    runner,
    env: {},
    log: createLogger({ level: 'critical' }),
    output: () => undefined,
    retrySec: 0.01,
    pollSec: 0.01,
    ipv6TimeoutSec: 0,
    ...extra,
  }
}

steps('format is retried until it succeeds, then bang until it succeeds; the exact commands', async () => {
  const runner = recordingRunner({ format: [1, 1, 0], bang: [1, 0] })
  await bootNode(options(runner))
  const F = ['/usr/bin/slapos', 'node', 'format', '--cfg', '/etc/opt/slapos/slapos.cfg', '--now', '--verbose']
  const B = ['/usr/bin/slapos', 'node', 'bang', '--cfg', '/etc/opt/slapos/slapos.cfg', '-m', 'Reboot']
  assert.equal(runner.argv, [F, F, F, B, B])
})

steps('waits for a global IPv6 on the interface before formatting', async () => {
  const runner = recordingRunner({})
  let looks = 0
  const seen: number[] = []
  await bootNode(
    options(runner, {
      ipv6Interface: 'eth0',
      interfaceAddresses: () => {
        looks++
        seen.push(runner.argv.length)
        if (looks < 3) return [{ addr: 'fe80::1', prefixlen: 64 }, { addr: '::1', prefixlen: 128 }]
        return [{ addr: '2001:db8::5', prefixlen: 64 }]
      },
    }),
  )
  assert.is(looks, 3)
  assert.equal(seen, [0, 0, 0], 'nothing ran before IPv6 was there')
  assert.is(runner.argv.length, 2)
})

steps('global IPv6: link-local, loopback and multicast do not count; ULA and global do', () => {
  assert.not.ok(hasGlobalIpv6([]))
  assert.not.ok(hasGlobalIpv6([{ addr: 'fe80::1%eth0', prefixlen: 64 }, { addr: '::1', prefixlen: 128 }, { addr: 'ff02::1', prefixlen: 128 }]))
  assert.ok(hasGlobalIpv6([{ addr: 'fd00::2', prefixlen: 64 }]))
  assert.ok(hasGlobalIpv6([{ addr: '2a01:e0a::1', prefixlen: 48 }]))
})

steps.run()

// --- helpers ---

/** Listens on `port` and forwards every request to `target` (the node's master). */
async function forward(port: number, target: string): Promise<Server> {
  const up = new URL(target)
  const server = createServer((req, res) => {
    const fwd = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: { ...req.headers, host: up.host } }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers)
      r.pipe(res)
    })
    fwd.on('error', () => {
      res.writeHead(502)
      res.end()
    })
    req.pipe(fwd)
  })
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()))
  return server
}
