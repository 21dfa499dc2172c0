// Tests of `slapos configure local` and `slapos configure client` through the built binary:
// the files and directories they write, their refusals, and the whole local node
// (configure local, then proxy start, node format, supply, request) working together.
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process'
import { createPrivateKey } from 'node:crypto'
import { chownSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ConfigFile, loadNodeConfig, loadProxyConfig } from '../src/config.ts'
import { planLocal } from '../src/configure-local.ts'
import { SlapClient } from '../src/slap-client.ts'
import { NODE_CONFIG_EXAMPLE, setKeys } from '../src/templates.ts'
import { skip, SLAPOS, slapos, slaposAsync, tempDir } from './helpers.ts'

const ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' }

/**
 * Starts the node's local master on a port the kernel picks (`--port 0`, no probe-then-reuse
 * race), then passes that port on: master_url, master_rest_url and [slapproxy] port of the
 * node configuration, written by configure local with a placeholder port.
 */
async function startNodeProxy(cfg: string): Promise<{ proxy: ChildProcessByStdio<null, null, Readable>; port: number; log: string }> {
  const proxy = spawn(SLAPOS, ['proxy', 'start', '--cfg', cfg, '--port', '0'], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] })
  const log = await listening(proxy)
  const port = Number(/Listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(log)?.[1])
  const url = `http://127.0.0.1:${port}`
  let text = readFileSync(cfg, 'utf8')
  text = setKeys(text, 'slapos', { master_url: url, master_rest_url: `${url}/hateoas` })
  writeFileSync(cfg, setKeys(text, 'slapproxy', { port }))
  return { proxy, port, log }
}

/** The port configure local writes before the real one is known (nothing listens there). */
const PLACEHOLDER_PORT = '18099'

function cfgOf(dir: string): string {
  return join(dir, 'etc', 'opt', 'slapos', 'slapos.cfg')
}

function mode(p: string): number {
  return statSync(p).mode & 0o777
}

// --- templates ---

/** Waits for a started `slapos proxy start` to log that it listens; returns what it logged. */
function listening(proxy: ChildProcessByStdio<null, null, Readable>): Promise<string> {
  let log = ''
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`proxy did not start:\n${log}`)), 20_000)
    proxy.stderr.setEncoding('utf8').on('data', (s: string) => {
      log += s
      if (log.includes('Listening on')) {
        clearTimeout(timer)
        resolve(log)
      }
    })
    proxy.once('exit', (code) => reject(new Error(`proxy exited (${code}):\n${log}`)))
  })
}

const templates = suite('templates')

templates('the node example has every key register and configure local fill in', () => {
  for (const key of ['computer_id', 'master_url', 'key_file', 'cert_file', 'certificate_repository_path', 'software_root', 'instance_root']) {
    assert.match(NODE_CONFIG_EXAMPLE, new RegExp(`\\n${key}\\s*=`), key)
  }
  for (const key of ['interface_name', 'ipv4_local_network', 'partition_amount', 'create_tap', 'computer_xml', 'log_file']) {
    assert.match(NODE_CONFIG_EXAMPLE, new RegExp(`\\n${key}\\s*=`), key)
  }
})

templates('setKeys replaces in its section only, appends, removes, keeps comments', () => {
  const text = '[a]\n# note\nx = 1\nlog_file = a\n\n[b]\nlog_file = b\nlist =\n  one\n  two\n'
  const out = setKeys(setKeys(text, 'a', { log_file: 'A', y: 2, x: null }), 'b', { list: 'flat' })
  assert.is(out, '[a]\n# note\nlog_file = A\ny = 2\n\n[b]\nlog_file = b\nlist = flat\n')
  assert.is(setKeys('[a]\nk = v\n', 'c', { z: 1 }), '[a]\nk = v\n\n[c]\nz = 1\n')
})

templates('the packaged example is the template', () => {
  const packaged = readFileSync(join(import.meta.dirname, '..', 'packaging', 'slapos.cfg.example'), 'utf8')
  assert.is(packaged, NODE_CONFIG_EXAMPLE)
})

templates.run()

// --- configure local: files ---

const local = suite('configure local')

local('without --buildout: the node names the launcher it wrote, which runs the system zc.buildout on this Python', () => {
  const dir = tempDir()
  const r = slapos(['configure', 'local', '--standalone', dir, '--daemon-listen-port', '18099', '--no-start'], { env: ENV })
  assert.is(r.code, 0, r.stderr)
  const launcher = join(dir, 'opt', 'slapos', 'bin', 'buildout')
  assert.is(loadNodeConfig(ConfigFile.load(cfgOf(dir))).buildout, launcher)
  assert.is(mode(launcher), 0o755)
  assert.ok(existsSync(join(dir, 'opt', 'slapos', 'lib', 'buildout', 'sitecustomize.py')))
  const system = spawnSync('sh', ['-c', 'command -v buildout'], { encoding: 'utf8' }).stdout.trim()
  if (!system) return skip('zc.buildout is not installed')
  // Debian 12's zc.buildout 2.13 fails on Python 3.11 by itself; through the launcher it runs
  const run = spawnSync(launcher, ['--version'], { encoding: 'utf8', env: ENV })
  assert.is(run.status, 0, run.stderr)
  assert.match(run.stdout + run.stderr, /buildout version 2\./)
  // with no buildout on PATH: one line saying what to install, exit 127
  const none = spawnSync(launcher, ['--version'], { encoding: 'utf8', env: { PATH: dir } })
  assert.is(none.status, 127)
  assert.match(none.stderr, /zc\.buildout is not installed/)
  // a second run of the same command changes nothing
  const again = slapos(['configure', 'local', '--standalone', dir, '--daemon-listen-port', '18099', '--no-start'], { env: ENV })
  assert.is(again.code, 0, again.stderr)
})

local('standalone: every path under the directory, no root, no user or network change', () => {
  const dir = tempDir()
  const r = slapos(['configure', 'local', '--standalone', dir, '--daemon-listen-port', '18099', '--no-start', '--buildout', '/usr/bin/buildout'], { env: ENV })
  assert.is(r.code, 0, r.stderr)
  const file = ConfigFile.load(cfgOf(dir))
  const node = loadNodeConfig(file)
  assert.is(node.computerId, 'local_computer')
  assert.is(node.masterUrl, 'http://127.0.0.1:18099')
  assert.is(node.softwareRoot, join(dir, 'opt', 'slapgrid'))
  assert.is(node.instanceRoot, join(dir, 'srv', 'slapgrid'))
  assert.is(node.rootCheck, false)
  assert.is(node.buildout, '/usr/bin/buildout')
  assert.is(node.pidfileSoftware, join(dir, 'opt', 'slapos', 'slapgrid-sr.pid'))
  assert.is(node.keyFile, undefined)
  assert.is(file.get('slapformat', 'alter_user'), 'false')
  assert.is(file.get('slapformat', 'alter_network'), 'false')
  assert.is(file.get('slapformat', 'root_check'), 'false')
  assert.is(file.get('slapformat', 'partition_amount'), '20')
  assert.is(file.get('slapformat', 'ipv4_local_network'), '127.0.1.0/24')
  assert.is(file.get('slapformat', 'computer_xml'), join(dir, 'opt', 'slapos', 'slapos.xml'))
  assert.is(file.get('slapformat', 'log_file'), join(dir, 'opt', 'slapos', 'log', 'slapos-node-format.log'))
  // the firewall's log_file is not the format's
  assert.is(file.get('disabled-firewall', 'log_file'), '/opt/slapos/log/firewalld.log')
  const proxy = loadProxyConfig(file)
  assert.is(proxy.host, '127.0.0.1')
  assert.is(proxy.port, 18099)
  assert.is(proxy.databaseUri, join(dir, 'opt', 'slapos', 'slapproxy.db'))
  // the original's separate proxy configuration
  const proxyCfg = loadProxyConfig(ConfigFile.load(join(dir, 'etc', 'opt', 'slapos', 'slapos-proxy.cfg')))
  assert.is(proxyCfg.computerId, 'local_computer')
  assert.is(proxyCfg.port, 18099)
  // supervisord entry of the proxy, without user switch
  const entry = readFileSync(join(dir, 'srv', 'slapgrid', 'etc', 'supervisord.conf.d', 'slapproxy.conf'), 'utf8')
  assert.match(entry, `command=${SLAPOS} proxy start --cfg ${join(dir, 'etc', 'opt', 'slapos', 'slapos-proxy.cfg')}\n`)
  assert.not.match(entry, 'user=0')
  assert.is(mode(join(dir, 'srv', 'slapgrid', 'etc', 'supervisord.conf.d')), 0o700)
  assert.is(mode(join(dir, 'opt', 'slapos', 'log')), 0o700)
  // cron entries of the package, under the directory
  const cron = readFileSync(join(dir, 'etc', 'cron.d', 'slapos-node'), 'utf8')
  assert.match(cron, `* * * * * ${SLAPOS} node software --cfg ${cfgOf(dir)} --maximal_delay=30 --verbose`)
  assert.match(cron, `@reboot ${SLAPOS} node boot --cfg ${cfgOf(dir)}`)
  assert.match(cron, `0 * * * * ${SLAPOS} node report --cfg ${cfgOf(dir)} --maximal_delay=3600`)
  // nothing outside the directory: the home directory is not touched
  assert.ok(!existsSync('/nonexistent'))
})

local('a second run with the same options changes nothing and succeeds', () => {
  const dir = tempDir()
  const args = ['configure', 'local', '--standalone', dir, '--daemon-listen-port', '18098', '--no-start']
  assert.is(slapos(args, { env: ENV }).code, 0)
  const before = statSync(cfgOf(dir)).mtimeMs
  const again = slapos(args, { env: ENV })
  assert.is(again.code, 0, again.stderr)
  assert.match(again.stderr, 'Nothing to change')
  assert.is(statSync(cfgOf(dir)).mtimeMs, before)
})

local('refuses when slapos.cfg exists with other content (exit 1), and leaves it', () => {
  const dir = tempDir()
  mkdirSync(join(dir, 'etc', 'opt', 'slapos'), { recursive: true })
  writeFileSync(cfgOf(dir), '[slapos]\ncomputer_id = mine\n')
  const r = slapos(['configure', 'local', '--standalone', dir, '--no-start'], { env: ENV })
  assert.is(r.code, 1)
  assert.match(r.stderr, `A SlapOS configuration directory already exist at ${cfgOf(dir)}. Aborting.`)
  assert.is(readFileSync(cfgOf(dir), 'utf8'), '[slapos]\ncomputer_id = mine\n')
  assert.ok(!existsSync(join(dir, 'etc', 'opt', 'slapos', 'slapos-proxy.cfg')))
})

local('root layout: the original keys, certificates removed, client configuration linked', () => {
  const dir = tempDir()
  const home = join(dir, 'home')
  const r = slapos(
    [
      'configure', 'local', '--no-start',
      '--slapos-configuration-directory', join(dir, 'etc'),
      '--slapos-instance-root', join(dir, 'srv'),
      '--slapos-software-root', join(dir, 'soft'),
      '--slapos-buildout-directory', join(dir, 'home-of-slapos'),
      '--interface-name', 'eth7', '--partition-number', '3', '--ipv4-local-network', '10.9.0.0/16',
      '--daemon-listen-ip', '127.0.0.2', '--daemon-listen-port', '8081',
    ],
    { env: { ...ENV, HOME: home } },
  )
  assert.is(r.code, 0, r.stderr)
  const text = readFileSync(join(dir, 'etc', 'slapos.cfg'), 'utf8')
  assert.not.match(text, /\n(key_file|cert_file|certificate_repository_path)\s*=/)
  assert.not.match(text, 'root_check')
  assert.not.match(text, 'alter_user')
  const file = ConfigFile.load(join(dir, 'etc', 'slapos.cfg'))
  assert.is(file.get('slapos', 'computer_id'), 'local_computer')
  assert.is(file.get('slapos', 'master_url'), 'http://127.0.0.2:8081')
  assert.is(file.get('slapformat', 'interface_name'), 'eth7')
  assert.is(file.get('slapformat', 'partition_amount'), '3')
  assert.is(file.get('slapformat', 'ipv4_local_network'), '10.9.0.0/16')
  assert.is(file.get('slapformat', 'computer_xml'), join(dir, 'home-of-slapos', 'slapos.xml'))
  assert.is(file.get('networkcache', 'download-binary-cache-url'), 'http://shacache.nxdcdn.com')
  const proxy = ConfigFile.load(join(dir, 'etc', 'slapos-proxy.cfg'))
  assert.is(proxy.get('slapproxy', 'host'), '127.0.0.2')
  assert.is(proxy.get('slapproxy', 'port'), '8081')
  assert.is(proxy.get('slapos', 'instance_root'), join(dir, 'srv'))
  const entry = readFileSync(join(dir, 'srv', 'etc', 'supervisord.conf.d', 'slapproxy.conf'), 'utf8')
  assert.match(entry, '\nuser=0\ngroup=0\n')
  assert.match(entry, `directory=${join(dir, 'home-of-slapos')}\n`)
  assert.match(entry, `stdout_logfile=${join(dir, 'home-of-slapos', 'log', 'slapos-proxy.log')}\n`)
  const link = join(home, '.slapos', 'slapos-client.cfg')
  assert.ok(lstatSync(link).isSymbolicLink())
  assert.is(readlinkSync(link), join(dir, 'etc', 'slapos.cfg'))
  assert.is(mode(join(home, '.slapos')), 0o700)
})

local('root layout needs root: the original message and exit 5', () => {
  const dir = tempDir()
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', SLAPOS, 'configure', 'local', '--slapos-configuration-directory', dir], {
    encoding: 'utf8',
    env: ENV,
  })
  assert.is(r.status, 5, r.stderr)
  assert.match(r.stderr, 'This slapos command must be run as root.')
  assert.ok(!existsSync(join(dir, 'slapos.cfg')))
})

local('standalone works for a user without root', () => {
  const dir = tempDir()
  chownSync(dir, 65534, 65534)
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', SLAPOS, 'configure', 'local', '--standalone', dir, '--no-start'], {
    encoding: 'utf8',
    env: ENV,
  })
  assert.is(r.status, 0, r.stderr)
  assert.is(statSync(cfgOf(dir)).uid, 65534)
})

local('--enable-shacache-proxy: the proxy gets its cache directories, key and upstreams; the node downloads through it', async () => {
  const dir = tempDir()
  const port = PLACEHOLDER_PORT
  const args = ['configure', 'local', '--standalone', dir, '--daemon-listen-port', port, '--enable-shacache-proxy', '--no-start']
  const r = slapos(args, { env: ENV })
  assert.is(r.code, 0, r.stderr)
  const base = `http://127.0.0.1:${port}/shacache`
  const node = loadNodeConfig(ConfigFile.load(cfgOf(dir))).networkcache
  assert.is(node.downloadBinaryCacheUrl, `${base}/cache`)
  assert.is(node.downloadBinaryDirUrl, `${base}/dir`)
  const file = ConfigFile.load(cfgOf(dir))
  assert.is(file.get('networkcache', 'download-cache-url'), `${base}/cache`)
  assert.is(file.get('networkcache', 'download-dir-url'), `${base}/dir`)
  const shacacheDir = join(dir, 'srv', 'slapgrid', 'shacache')
  const expected = {
    contentDirectory: join(shacacheDir, 'data'),
    metadataDirectory: join(shacacheDir, 'dir'),
    signingKeyPath: join(shacacheDir, 'signing-key.pem'),
    upstreamCacheUrl: 'http://shacache.nxdcdn.com',
    upstreamDirUrl: 'http://shadir.nxdcdn.com',
  }
  const proxyCfgPath = join(dir, 'etc', 'opt', 'slapos', 'slapos-proxy.cfg')
  assert.equal(loadProxyConfig(ConfigFile.load(proxyCfgPath)).shacache, expected)
  assert.equal(loadProxyConfig(file).shacache, expected)
  // the signing key: a 2048-bit RSA private key only its owner reads
  assert.is(mode(expected.signingKeyPath), 0o600)
  const key = readFileSync(expected.signingKeyPath, 'utf8')
  assert.is(createPrivateKey(key).asymmetricKeyDetails?.modulusLength, 2048)
  assert.ok(statSync(expected.contentDirectory).isDirectory() && statSync(expected.metadataDirectory).isDirectory())
  // again: nothing changes, the key is kept
  const again = slapos(args, { env: ENV })
  assert.is(again.code, 0, again.stderr)
  assert.is(readFileSync(expected.signingKeyPath, 'utf8'), key)
  // without the option no cache of its own
  const plain = tempDir()
  assert.is(slapos(['configure', 'local', '--standalone', plain, '--no-start'], { env: ENV }).code, 0)
  assert.equal(loadProxyConfig(ConfigFile.load(cfgOf(plain))).shacache, { contentDirectory: undefined, metadataDirectory: undefined, signingKeyPath: undefined, upstreamCacheUrl: undefined, upstreamDirUrl: undefined })
  assert.is(loadNodeConfig(ConfigFile.load(cfgOf(plain))).networkcache.downloadBinaryCacheUrl, 'http://shacache.nxdcdn.com')

  // the local master started with that configuration serves the node's cache URLs
  // on a port the kernel picks: the node's cache URLs are read with that port
  const proxy = spawn(SLAPOS, ['proxy', 'start', '--cfg', proxyCfgPath, '--port', '0'], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] })
  try {
    const bound = /Listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(await listening(proxy))?.[1]
    const cacheUrl = (node.downloadBinaryCacheUrl ?? '').replace(`:${port}/`, `:${bound}/`)
    const archive = 'an archive of the local cache'
    const up = await fetch(cacheUrl, { method: 'POST', body: archive })
    assert.is(up.status, 201)
    const hash = await up.text()
    assert.ok(statSync(join(expected.contentDirectory, hash)).isFile())
    const down = await fetch(`${cacheUrl}/${hash}`)
    assert.is(down.status, 200)
    assert.is(await down.text(), archive)
  } finally {
    proxy.kill('SIGTERM')
  }
})

local('bad option values: usage error (exit 2), nothing written', () => {
  const dir = tempDir()
  const r = slapos(['configure', 'local', '--standalone', dir, '--daemon-listen-port', '99999', '--no-start'], { env: ENV })
  assert.is(r.code, 2)
  assert.match(r.stderr, '--daemon-listen-port')
  assert.ok(!existsSync(cfgOf(dir)))
})

local('planLocal: an IPv6 listen address is bracketed in master_url', () => {
  const plan = planLocal({ interfaceName: 'lo', partitionNumber: 1, daemonListenIp: '::1', daemonListenPort: 8080, home: '/h', self: ['/usr/bin/slapos'], standalone: '/x' })
  assert.is(plan.masterUrl, 'http://[::1]:8080')
})

local.run()

// --- the local node working end to end ---

const e2e = suite('configure local, then proxy, format, supply, request')

e2e('a standalone node configured by configure local deploys a request', async () => {
  const dir = tempDir()
  const cfg = cfgOf(dir)
  const conf = await slaposAsync(['configure', 'local', '--standalone', dir, '--daemon-listen-port', PLACEHOLDER_PORT, '--partition-number', '2', '--no-start', '--cfg', '/nonexistent.cfg'], { env: ENV })
  assert.is(conf.code, 0, conf.stderr)
  // what is really next (nothing suggests starting a second proxy by hand)
  assert.not.match(conf.stderr, 'slapos proxy start')
  assert.match(conf.stderr, `Next: slapos node supervisord --cfg ${cfg}`)
  assert.match(conf.stderr, `slapos supply <software.cfg URL> local_computer --cfg ${cfg}`)

  const { proxy, port } = await startNodeProxy(cfg)
  try {

    const format = await slaposAsync(['node', 'format', '--cfg', cfg, '--now'], { env: ENV })
    if (/'node format' does not exist|invalid option '--cfg'/.test(format.stderr)) {
      assert.unreachable('step 3 of 5 (slapos node format): the command is not in this build yet; configure local and proxy start passed')
    }
    assert.is(format.code, 0, `slapos node format failed: ${format.stderr}`)

    const sr = join(dir, 'software.cfg')
    const supply = await slaposAsync(['supply', sr, 'local_computer', '--cfg', cfg], { env: ENV })
    assert.is(supply.code, 0, supply.stderr)
    const request = await slaposAsync(['request', 'my-instance', sr, '--cfg', cfg], { env: ENV })
    assert.is(request.code, 0, request.stderr)
    assert.match(request.stdout, 'Instance requested.')

    // what the node sees: the software to install and the partition to deploy
    const master = new SlapClient({ masterUrl: `http://127.0.0.1:${port}` })
    const computer = await master.getFullComputerInformation('local_computer')
    const raw = JSON.stringify(computer, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))
    assert.match(raw, sr)
    assert.match(raw, 'my-instance')
    // every client command works on the node it configured (master_rest_url written)
    for (const args of [['service', 'list'], ['service', 'info', 'my-instance'], ['computer', 'list']]) {
      const c = await slaposAsync([...args, '--cfg', cfg], { env: ENV })
      assert.is(c.code, 0, `${args.join(' ')}: ${c.stderr}`)
    }
    const info = await slaposAsync(['service', 'info', 'my-instance', '--cfg', cfg], { env: ENV })
    assert.is(JSON.parse(info.stdout).status, 'started')
  } finally {
    proxy.kill('SIGTERM')
  }
})

e2e('standalone as root: root-owned software is refused (buildout never runs as uid 0) unless --run-as-root said so', async () => {
  if (process.getuid?.() !== 0) return skip('needs root')
  const dir = tempDir()
  const cfg = cfgOf(dir)
  // a buildout that leaves a trace when it runs at all
  const trace = join(dir, 'buildout-ran')
  const recorder = join(dir, 'record-buildout')
  writeFileSync(recorder, `#!/bin/sh\nid -u > '${trace}'\n`, { mode: 0o755 })
  const conf = await slaposAsync(['configure', 'local', '--standalone', dir, '--daemon-listen-port', PLACEHOLDER_PORT, '--partition-number', '1', '--no-start', '--buildout', recorder], { env: ENV })
  assert.is(conf.code, 0, conf.stderr)
  assert.match(conf.stderr, 'a standalone node made by root has root-owned partitions')
  assert.is(loadNodeConfig(ConfigFile.load(cfg)).runAsRoot, false)
  const { proxy } = await startNodeProxy(cfg)
  try {
    const sr = join(dir, 'software.cfg')
    assert.is((await slaposAsync(['supply', sr, 'local_computer', '--cfg', cfg], { env: ENV })).code, 0)
    const run = await slaposAsync(['node', 'software', '--now', '--cfg', cfg], { env: ENV })
    assert.is(run.code, 1, run.stderr)
    assert.match(run.stderr, 'run_as_root = true')
    assert.not.ok(existsSync(trace), 'buildout ran')
  } finally {
    proxy.kill('SIGTERM')
  }
  // said explicitly: written into the configuration, no warning at configure time
  const other = tempDir()
  const explicit = await slaposAsync(['configure', 'local', '--standalone', other, '--daemon-listen-port', PLACEHOLDER_PORT, '--no-start', '--run-as-root'], { env: ENV })
  assert.is(explicit.code, 0, explicit.stderr)
  assert.not.match(explicit.stderr, 'root-owned partitions')
  assert.is(loadNodeConfig(ConfigFile.load(cfgOf(other))).runAsRoot, true)
})

e2e.run()
