// The 0.35.1 program names and their options, through the built binary: slapgrid (software,
// instance and report in one run), the options every slapgrid-* shared, -l of slapformat and
// slapproxy; and `slapos computer token` (a later client command). Real proxy, real buildout,
// real supervisord; the token command also against a small HATEOAS master (the real SlapOS
// Master cannot run here, and the proxy has no tokens, as the original's).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { slapos, slaposAsync, startProxy, tempDir } from './helpers.ts'
import { makeNode, type MasterCall } from './node-helpers.ts'

const names = (calls: MasterCall[]) => calls.map((c) => c.name)

test('slapgrid CFG: software, then instance, then report in one run; a failing software release lets the others run; exit 1, then 0', async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    const broken = join(node.dir, 'broken.cfg')
    writeFileSync(broken, `[buildout]\nextends = ${join(node.dir, 'missing-profile.cfg')}\nparts =\n`)
    await node.supply()
    await node.supply(broken)
    await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'main', partitionParameterKw: {}, state: 'started' })
    node.clearCalls()
    // the configuration as a positional argument, -c (a no-op) as 0.35.1 took it
    const r = await node.run(['-c', '--now', node.cfgPath], { noCfg: true, argv0: 'slapgrid' })
    assert.is(r.code, 1, r.stderr)
    const calls = names(node.calls())
    const lastSoftware = Math.max(calls.lastIndexOf('availableSoftwareRelease'), calls.lastIndexOf('softwareReleaseError'))
    assert.ok(calls.includes('softwareReleaseError') && calls.includes('availableSoftwareRelease'), calls.join(' '))
    const started = calls.indexOf('startedComputerPartition')
    assert.ok(started > lastSoftware, `instance after software: ${calls.join(' ')}`)
    // the report step ran last
    const lines = r.stderr.split('\n')
    const reportAt = lines.findIndex((l) => l.includes('Aggregating and sending usage reports'))
    const instanceAt = lines.findIndex((l) => l.includes('Processing computer partitions'))
    assert.ok(instanceAt > 0 && reportAt > instanceAt, r.stderr)
    // without the broken release every step succeeds: exit 0
    await node.supply(broken, 'destroyed')
    const again = await node.run(['--now', node.cfgPath], { noCfg: true, argv0: 'slapgrid' })
    assert.is(again.code, 0, again.stderr)
  } finally {
    await node.stop()
  }
})

test('slapgrid-sr|cp|ur take the options the three shared in 0.35.1; --develop forces, the others are ignored where meaningless', async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: 'main', partitionParameterKw: {}, state: 'started' })
    const common = ['-c', '--only-sr', node.srUrl, '--only-cp', 'slappart0', '--now', node.cfgPath]
    const sr = await node.run(common, { noCfg: true, argv0: 'slapgrid-sr' })
    assert.is(sr.code, 0, sr.stderr)
    const cp = await node.run(common, { noCfg: true, argv0: 'slapgrid-cp' })
    assert.is(cp.code, 0, cp.stderr)
    // up to date now: --develop (the old --all) processes the partition again
    node.clearCalls()
    const forced = await node.run(['--develop', ...common], { noCfg: true, argv0: 'slapgrid-cp' })
    assert.is(forced.code, 0, forced.stderr)
    assert.ok(names(node.calls()).includes('startedComputerPartition'), names(node.calls()).join(' '))
    const ur = await node.run(['--all', '--develop', ...common], { noCfg: true, argv0: 'slapgrid-ur' })
    assert.is(ur.code, 0, ur.stderr)
  } finally {
    await node.stop()
  }
})

test('slapformat and slapproxy take -l LOGFILE (0.35.1), slapformat its flag -c', async () => {
  const dir = tempDir()
  const conf = slapos(['configure', 'local', '--standalone', dir, '--daemon-listen-port', '18097', '--partition-number', '1', '--no-start'])
  assert.is(conf.code, 0, conf.stderr)
  const cfg = join(dir, 'etc', 'opt', 'slapos', 'slapos.cfg')
  const formatLog = join(dir, 'format.log')
  const f = slapos(['-l', formatLog, '-c', '-n', '--now', cfg], { argv0: 'slapformat' })
  assert.is(f.code, 0, f.stderr)
  assert.ok(readFileSync(formatLog, 'utf8').length > 0, 'slapformat wrote its log file')
  // slapproxy -l: the log file receives the proxy's lines (it is stopped once they are there)
  const proxyLog = join(dir, 'proxy.log')
  const proxyCfg = join(dir, 'proxy.cfg')
  writeFileSync(proxyCfg, `[slapos]\ncomputer_id = c\n[slapproxy]\nhost = 127.0.0.1\nport = 0\ndatabase_uri = ${join(dir, 'p.db')}\n`)
  const { spawn } = await import('node:child_process')
  const { SLAPOS } = await import('./helpers.ts')
  const child = spawn(SLAPOS, ['-l', proxyLog, proxyCfg], { argv0: 'slapproxy', stdio: 'ignore' })
  try {
    const deadline = Date.now() + 10_000
    while (!(existsSync(proxyLog) && /http:\/\/127\.0\.0\.1:\d+/.test(readFileSync(proxyLog, 'utf8')))) {
      if (Date.now() > deadline) assert.unreachable('slapproxy -l wrote no address line to its log file')
      await new Promise((r) => setTimeout(r, 50))
    }
  } finally {
    child.kill('SIGTERM')
  }
})

/** A HATEOAS master with the token call: `answer` says how the token request is answered. */
async function tokenMaster(answer: (req: IncomingMessage, res: ServerResponse) => void, self?: string) {
  const seen: string[] = []
  const server = createServer((req, res) => {
    seen.push(req.url ?? '')
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api`
    if (req.url === '/api' || req.url === '/api/') {
      res.setHeader('content-type', 'application/hal+json')
      res.end(JSON.stringify({ _links: { self: { href: self ?? base } } }))
    } else if (req.url === '/api/computer_module/Base_getComputerToken') answer(req, res)
    else res.writeHead(404).end()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api`
  return { url, seen, close: () => new Promise<void>((r) => server.close(() => r())) }
}

function clientCfg(dir: string, restUrl: string): string {
  const cfg = join(dir, `client-${Math.random().toString(36).slice(2)}.cfg`)
  writeFileSync(cfg, `[slapos]\nmaster_url = http://127.0.0.1:9/\nmaster_rest_url = ${restUrl}\n`)
  return cfg
}

test('computer token: prints "Computer token: <token>" on stdout (exit 0); not ready: exit 2; a self link elsewhere is not followed; the proxy: exit 1', async () => {
  const dir = tempDir()
  mkdirSync(dir, { recursive: true })
  const good = await tokenMaster((_req, res) => res.end(JSON.stringify({ access_token: 'T0k-123' })))
  try {
    const r = await slaposAsync(['computer', 'token', '--cfg', clientCfg(dir, good.url)])
    assert.is(r.code, 0, r.stderr)
    assert.is(r.stdout, 'Computer token: T0k-123\n')
    assert.ok(good.seen.includes('/api/computer_module/Base_getComputerToken'))
  } finally {
    await good.close()
  }
  const later = await tokenMaster((_req, res) => res.writeHead(408).end())
  try {
    const r = await slaposAsync(['computer', 'token', '--cfg', clientCfg(dir, later.url)])
    assert.is(r.code, 2, r.stderr)
    assert.match(r.stderr, 'Computer does not exist or is not ready yet.')
    assert.is(r.stdout, '')
  } finally {
    await later.close()
  }
  const elsewhere = await tokenMaster((_req, res) => res.end(JSON.stringify({ access_token: 'leaked' })), 'http://127.0.0.1:9/other')
  try {
    const r = await slaposAsync(['computer', 'token', '--cfg', clientCfg(dir, elsewhere.url)])
    assert.is(r.code, 1)
    assert.match(r.stderr, 'not followed')
    assert.not.ok(elsewhere.seen.some((u) => u.includes('Base_getComputerToken')))
  } finally {
    await elsewhere.close()
  }
  // the local proxy has no tokens, as the original's: one line, exit 1
  const proxy = await startProxy()
  try {
    const r = await slaposAsync(['computer', 'token', '--cfg', clientCfg(dir, `${proxy.url.replace(/\/$/, '')}/hateoas`)])
    assert.is(r.code, 1, r.stderr)
    assert.is(r.stdout, '')
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr)
  } finally {
    await proxy.stop()
  }
})

test.run()
