// End-to-end tests of the client commands (request, supply, remove, service *, computer *,
// console): the built binary against our real proxy on 127.0.0.1:0, checked through the
// SLAP client the way a node would see the result. Plus pformat and ClientConfig units.
import { mkdirSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { pformat, parseKeyValues, schemaSerialisation } from '../src/client.ts'
import { ConfigFile, loadClientConfig } from '../src/config.ts'
import { SlapClient } from '../src/slap-client.ts'
import { loads } from '../src/slap-protocol.ts'
import { slaposAsync, startProxy, tempDir, type Result, type StartedProxy } from './helpers.ts'

const SR = '/srv/test-sr/software.cfg'

interface World {
  proxy: StartedProxy
  dir: string
  cfg: string
  master: SlapClient
}
const world = {} as World

async function run(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; cfg?: string } = {}): Promise<Result> {
  // console passes what follows its script to the script: --cfg goes right after the command
  const cfg = opts.cfg === '' ? [] : ['--cfg', opts.cfg ?? world.cfg]
  const withCfg = args[0] === 'console' ? ['console', ...cfg, ...args.slice(1)] : [...args, ...cfg]
  return slaposAsync(withCfg, { env: opts.env, input: opts.input })
}

function writeCfg(name: string, text: string): string {
  const p = join(world.dir, name)
  writeFileSync(p, text)
  return p
}

async function partitionOf(reference: string) {
  const computer = await world.master.getFullComputerInformation('computer')
  return computer._computer_partition_list.find((p) => p._parameter_dict?.instance_title === reference)
}

const cli = suite('client commands against the proxy')

cli.before(async () => {
  world.dir = tempDir('slapos-client-')
  world.proxy = await startProxy({ dir: world.dir })
  world.master = new SlapClient({ masterUrl: world.proxy.url })
  await world.master.loadComputerConfigurationFromXML({
    reference: 'computer',
    address: '10.0.0.1',
    netmask: '255.255.255.0',
    partition_list: Array.from({ length: 40 }, (_, i) => ({
      reference: `slappart${i}`,
      address_list: [{ addr: `10.0.${Math.floor(i / 200)}.${(i % 200) + 2}`, netmask: '255.255.255.0' }],
      tap: { name: `tap${i}` },
    })),
  })
  world.cfg = writeCfg('client.cfg', `[slapos]\nmaster_url = ${world.proxy.url}\nmaster_rest_url = ${world.proxy.url}hateoas\n`)
})

cli.after(async () => {
  await world.proxy.stop()
})

cli('supply and remove change the software the node is asked to have', async () => {
  let r = await run(['supply', SR, 'computer'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, `Requesting software installation of ${SR}...`)
  assert.match(r.stderr, 'Done.')
  let list = (await world.master.getFullComputerInformation('computer'))._software_release_list
  assert.is(list.find((s) => s._software_release === SR)?._requested_state, 'available')

  r = await run(['supply', '/srv/other/software.cfg', 'computer', '--json'])
  assert.is(r.code, 0, r.stderr)
  assert.equal(JSON.parse(r.stdout), { 'software-url': '/srv/other/software.cfg', node: 'computer', state: 'available' })
  r = await run(['remove', '/srv/other/software.cfg', 'computer'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, 'Requesting deletion of /srv/other/software.cfg Software Release...')
  list = (await world.master.getFullComputerInformation('computer'))._software_release_list
  assert.is(list.find((s) => s._software_release === '/srv/other/software.cfg')?._requested_state, 'destroyed')
})

cli('request sends parameters, software type and state; the node sees them', async () => {
  const r = await run(['request', 'main', SR, '--parameters', 'foo=bar', 'n=1', '--type', 'mytype', '--state', 'stopped'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, 'Instance requested.\nState is : stopped.\nConnection parameters of instance are:\n{}\n')
  assert.match(r.stderr, `Requesting main as an instance of ${SR} ...`)
  const p = await partitionOf('main')
  assert.ok(p, 'a partition was allocated')
  assert.is(p!._requested_state, 'stopped')
  assert.is(p!._parameter_dict?.foo, 'bar')
  assert.is(p!._parameter_dict?.n, '1')
  assert.is(p!._parameter_dict?.slap_software_type, 'mytype')
})

cli('request prints the connection parameters the node published', async () => {
  let r = await run(['request', 'pub', SR])
  assert.is(r.code, 0, r.stderr)
  const p = await partitionOf('pub')
  await world.master.setComputerPartitionConnectionXml('computer', p!._partition_id!, { url: 'http://10.0.0.9:8080/', user: 'admin' })
  r = await run(['request', 'pub', SR])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, "{'url': 'http://10.0.0.9:8080/', 'user': 'admin'}\n")
  r = await run(['request', 'pub', SR, '--json'])
  const out = JSON.parse(r.stdout)
  assert.equal(out['connection-parameters'], { url: 'http://10.0.0.9:8080/', user: 'admin' })
  assert.is(out.state, 'started')
  assert.is(out['partition-id'], p!._partition_id)
  assert.is(out.ready, true)
})

cli('json-in-xml: the published `_` is shown decoded', async () => {
  let r = await run(['request', 'jx', SR])
  const p = await partitionOf('jx')
  await world.master.setComputerPartitionConnectionXml('computer', p!._partition_id!, { _: JSON.stringify({ url: 'https://x/', port: 443 }) })
  r = await run(['request', 'jx', SR])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, "{'port': 443, 'url': 'https://x/'}")
})

cli('--node filters the computer; an unknown computer is a 404, exit 1', async () => {
  let r = await run(['request', 'pinned', SR, '--node', 'computer_guid=computer'])
  assert.is(r.code, 0, r.stderr)
  r = await run(['request', 'elsewhere', SR, '--node', 'computer_guid=COMP-404'])
  assert.is(r.code, 1)
  assert.match(r.stderr, 'HTTP 404')
  assert.not.match(r.stderr, '    at ')
})

cli('--slave (alias --shared) requests a shared instance, service info shows it shared', async () => {
  let r = await run(['request', 'front', SR, '--slave', '--parameters', 'domain=example.org'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, 'Instance requested.')
  r = await run(['request', 'front2', SR, '--shared'])
  assert.is(r.code, 0, r.stderr)
  r = await run(['service', 'info', 'front'])
  assert.is(r.code, 0, r.stderr)
  const info = JSON.parse(r.stdout)
  assert.is(info.shared, true)
  assert.is(info['requested-state'], 'unused')
  assert.equal(info['instance-parameters'], { domain: 'example.org' })
})

cli('service list and service info of the proxy', async () => {
  await run(['request', 'svc', SR, '--parameters', 'a=1'])
  let r = await run(['service', 'list'])
  assert.is(r.code, 0, r.stderr)
  const list = JSON.parse(r.stdout)
  assert.is(list.svc, SR)
  assert.is(list.front, SR)
  assert.equal(Object.keys(list), [...Object.keys(list)].sort())
  r = await run(['service', 'info', 'svc'])
  assert.is(r.code, 0, r.stderr)
  assert.equal(Object.keys(JSON.parse(r.stdout)), ['software-url', 'software-type', 'shared', 'requested-state', 'instance-parameters', 'connection-parameters', 'status'])
  assert.equal(JSON.parse(r.stdout), {
    'software-url': SR,
    'software-type': 'default',
    shared: false,
    'requested-state': 'started',
    'instance-parameters': { a: '1' },
    'connection-parameters': {},
    // the proxy has no news: the state it was asked for
    status: 'started',
  })
  r = await run(['service', 'info', 'svc', '--news'])
  assert.equal(JSON.parse(r.stdout).news, [])
  r = await run(['service', 'info', 'no-such-service'])
  assert.is(r.code, 2)
  assert.match(r.stderr, 'Instance no-such-service does not exist.')
  r = await run(['service', 'info', 'bad"quote'])
  assert.is(r.code, 1)
})

cli('computer list and computer info', async () => {
  let r = await run(['computer', 'list'])
  assert.is(r.code, 0, r.stderr)
  assert.is(r.stdout, 'List of Computers:\ncomputer computer\n')
  r = await run(['computer', 'list', '--json'])
  assert.equal(JSON.parse(r.stdout), [{ reference: 'computer', title: 'computer' }])
  r = await run(['computer', 'info', 'computer'])
  assert.is(r.code, 0, r.stderr)
  assert.is(r.stdout, 'Computer Reference: computer\nComputer Title    : computer\n')
  r = await run(['computer', 'info', 'computer', '--json'])
  assert.equal(JSON.parse(r.stdout), { reference: 'computer', title: 'computer' })
  r = await run(['computer', 'info', 'COMP-404'])
  assert.is(r.code, 2)
  assert.match(r.stderr, 'Computer COMP-404 does not exist.')
})

cli('without master_rest_url the HATEOAS commands fail with exit 1 (proxy has no getHateoasUrl)', async () => {
  const cfg = writeCfg('no-rest.cfg', `[slapos]\nmaster_url = ${world.proxy.url}\n`)
  for (const cmd of [['service', 'list'], ['computer', 'list']]) {
    const r = await run(cmd, { cfg })
    assert.is(r.code, 1)
    assert.match(r.stderr, 'SlapOS Master Hateoas API required for this operation is not available.')
  }
})

cli('--parameters-file: json, yaml, xml; serialisation from the schema or --force-serialisation', async () => {
  const srDir = join(world.dir, 'sr')
  mkdirSync(srDir, { recursive: true })
  const xmlSr = join(srDir, 'software.cfg')
  writeFileSync(`${xmlSr}.json`, JSON.stringify({ serialisation: 'xml', 'software-type': { default: {} } }))
  const json = writeCfg('params.json', JSON.stringify({ a: 'x', b: 'y' }))
  const yaml = writeCfg('params.yaml', 'a: x\nnested:\n  k: 1\n')
  const xml = writeCfg('params.xml', `<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  <parameter id="p">v</parameter>\n</instance>\n`)

  let r = await run(['request', 'pf-xml', xmlSr, '--parameters-file', json])
  assert.is(r.code, 0, r.stderr)
  let p = await partitionOf('pf-xml')
  assert.is(p!._parameter_dict?.a, 'x')
  assert.is(p!._parameter_dict?.b, 'y')

  // no schema: the serialisation must be forced
  r = await run(['request', 'pf-none', SR, '--parameters-file', json])
  assert.is(r.code, 1)
  assert.match(r.stderr, '--force-serialisation')
  assert.is(await partitionOf('pf-none'), undefined)
  // the file's own problem comes first, before the release's serialisation
  r = await run(['request', 'pf-none', SR, '--parameters-file', join(world.dir, 'no-such.json')])
  assert.is(r.code, 1)
  assert.match(r.stderr, `cannot read the parameters file ${join(world.dir, 'no-such.json')}: ENOENT`)
  assert.not.match(r.stderr, 'serialisation')
  r = await run(['request', 'pf-none', SR, '--parameters-file', writeCfg('bad.json', '{"a": ')])
  assert.is(r.code, 1)
  assert.match(r.stderr, /bad\.json cannot be parsed/)
  assert.not.match(r.stderr, 'serialisation')

  r = await run(['request', 'pf-jx', SR, '--parameters-file', yaml, '--force-serialisation', 'json-in-xml'])
  assert.is(r.code, 0, r.stderr)
  p = await partitionOf('pf-jx')
  assert.equal(JSON.parse(String(p!._parameter_dict?._)), { a: 'x', nested: { k: 1 } })

  r = await run(['request', 'pf-x', SR, '--parameters-file', xml])
  assert.is(r.code, 0, r.stderr)
  p = await partitionOf('pf-x')
  assert.is(p!._parameter_dict?.p, 'v')

  r = await run(['request', 'pf-both', SR, '--parameters-file', xml, '--parameters', 'a=b'])
  assert.is(r.code, 2)
})

cli('bad input: exit codes and one-line messages', async () => {
  let r = await run(['request', 'x', SR], { cfg: join(world.dir, 'missing.cfg') })
  assert.is(r.code, 1)
  assert.match(r.stderr, `Configuration file does not exist: ${join(world.dir, 'missing.cfg')}`)
  r = await run(['request', 'x', SR], { cfg: writeCfg('nomaster.cfg', '[slapos]\n') })
  assert.is(r.code, 1)
  assert.match(r.stderr, "No option 'master_url'")
  r = await run(['supply', SR, 'computer'], { cfg: writeCfg('https.cfg', '[slapos]\nmaster_url = https://127.0.0.1:1/\n') })
  assert.is(r.code, 1)
  assert.match(r.stderr, "No option 'key_file' and/or 'cert_file'")
  r = await run(['request', 'dup', SR, '--parameters', 'a=1', 'a=2'])
  assert.is(r.code, 1)
  assert.match(r.stderr, "Multiple values provided for the same key 'a'")
  r = await run(['request', 'noeq', SR, '--node', 'computer_guid'])
  assert.is(r.code, 1)
  r = await run(['request', 'only-reference'])
  assert.is(r.code, 2)
  r = await run(['request', 'x', 'product.nothing'])
  assert.is(r.code, 1)
  assert.match(r.stderr, 'No Software Release corresponding to this Software Product')
  r = await run(['supply', SR, 'computer'], { cfg: writeCfg('down.cfg', '[slapos]\nmaster_url = http://127.0.0.1:9/\n') })
  assert.is(r.code, 1)
  assert.match(r.stderr, "Couldn't connect")
  for (const line of r.stderr.trim().split('\n')) assert.not.match(line, /^\s+at /)
})

cli('0.35.1 forms: configuration file as first word, --configuration for parameters', async () => {
  let r = await run(['request', world.cfg, 'legacy', SR, '--configuration', 'old=yes'], { cfg: '' })
  assert.is(r.code, 0, r.stderr)
  assert.is((await partitionOf('legacy'))!._parameter_dict?.old, 'yes')
  r = await run(['supply', world.cfg, '/srv/legacy/software.cfg', 'computer'], { cfg: '' })
  assert.is(r.code, 0, r.stderr)
  r = await run(['remove', world.cfg, '/srv/legacy/software.cfg', 'computer'], { cfg: '' })
  assert.is(r.code, 0, r.stderr)
})

cli('$SLAPOS_CLIENT_CONFIGURATION is used when --cfg is not given', async () => {
  const r = await run(['computer', 'list'], { cfg: '', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: world.dir, SLAPOS_CLIENT_CONFIGURATION: world.cfg } })
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, 'computer computer')
})

cli('request: a master answering 408 gives exit 2 and the "provisioning" warning', async () => {
  const server: Server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      res.statusCode = req.url?.startsWith('/requestComputerPartition') ? 408 : 404
      res.end('')
    })
  })
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()))
  try {
    const port = (server.address() as AddressInfo).port
    const cfg = writeCfg('408.cfg', `[slapos]\nmaster_url = http://127.0.0.1:${port}/\n`)
    let r = await run(['request', 'later', SR], { cfg })
    assert.is(r.code, 2)
    assert.match(r.stderr, 'Instance requested. Master is provisioning it. Please rerun in a couple of minutes to get connection information.')
    r = await run(['request', 'later', SR, '--json'], { cfg })
    assert.is(r.code, 2)
    assert.is(JSON.parse(r.stdout).ready, false)
  } finally {
    await new Promise<void>((res) => server.close(() => res()))
  }
})

cli('console script mode: globals, argv, __file__, a request from a function', async () => {
  const script = writeCfg(
    'script.js',
    [
      'print(JSON.stringify(argv))',
      'print(__file__.endsWith("script.js"))',
      'async function order(title) { return request("' + SR + '", title, { from: "console" }) }',
      'const inst = await order("from-console")',
      'print(await inst.getState())',
      'print(JSON.stringify(await inst.getInstanceParameterDict()))',
      'await supply("/srv/console-sr/software.cfg", "computer")',
    ].join('\n'),
  )
  const r = await run(['console', script, 'a', 'b'])
  assert.is(r.code, 0, r.stderr)
  const lines = r.stdout.trim().split('\n')
  assert.is(lines[0], JSON.stringify([script, 'a', 'b']))
  assert.is(lines[1], 'true')
  assert.is(lines[2], 'started')
  assert.match(lines[3]!, '"from":"console"')
  const p = await partitionOf('from-console')
  assert.is(p!._parameter_dict?.from, 'console')
  const list = (await world.master.getFullComputerInformation('computer'))._software_release_list
  assert.ok(list.some((s) => s._software_release === '/srv/console-sr/software.cfg'))

  const bad = writeCfg('bad.js', 'throw new Error("script failed")\n')
  const b = await run(['console', bad])
  assert.is(b.code, 1)
  assert.match(b.stderr, 'script failed')
  const both = await run(['console', '-p', script])
  assert.is(both.code, 2)
})

cli('console interactive mode reads piped statements in order; -u does not change the master', async () => {
  const r = await run(['console', '-u', 'http://127.0.0.1:9/'], {
    input: `typeof __file__\nconst i = await request("${SR}", "interactive")\nawait i.getState()\nsoftware_list\n`,
  })
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stdout, '>>> undefined')
  assert.match(r.stdout, 'started')
  assert.ok(await partitionOf('interactive'))
})

cli("console: the original's habits work as written; an error is one line, the next statements run, exit 1", async () => {
  const r = await run(['console'], {
    input: [
      `x = request("${SR}", "handle", {p: "1"})`,
      'x.getState()',
      'x.getInstanceParameter("p")',
      `request("${SR}", "handle").getId()`,
      'foo()',
      '"after the error"',
    ].join('\n') + '\n',
  })
  assert.is(r.code, 1, r.stderr)
  const p = await partitionOf('handle')
  assert.ok(p)
  const lines = r.stdout.split('>>> ').map((l) => l.trim())
  assert.match(lines[1]!, /^<Instance computer\/slappart\d+>$/)
  assert.is(lines[2], 'started')
  assert.is(lines[3], '1')
  assert.is(lines[4], p!._partition_id)
  assert.is(lines[5], 'Uncaught ReferenceError: foo is not defined')
  assert.is(lines[6], 'after the error')
  // no stack, no path of the program
  assert.not.match(r.stdout + r.stderr, /\n\s+at |slapos\.cjs/)
  // the banner (on a terminal) says how this console differs from the original's
  const { BANNER } = await import('../src/client-console.ts')
  assert.match(BANNER, 'Unlike the original (Python), this is JavaScript')
})

cli('console starts with master_url = null and aliases from [slapconsole]', async () => {
  const cfg = writeCfg('null.cfg', '[slapos]\nmaster_url = null\n\n[slapconsole]\nalias =\n  kvm http://example.com/kvm.cfg\n  mysql http://example.com/mysql.cfg\n')
  const r = await run(['console'], { cfg, input: '1 + 1\nsoftware_list\nkvm\nrequest("software_release", "instance")\n' })
  // the request fails (no master): the console says so in one line, and its exit status too
  assert.is(r.code, 1, r.stderr)
  assert.match(r.stdout, '2')
  assert.match(r.stdout, "[ 'kvm', 'mysql' ]")
  assert.match(r.stdout, 'http://example.com/kvm.cfg')
  assert.match(r.stdout, 'master_url "null"')
})

cli('help lists the client commands with the original one-line descriptions', async () => {
  const r = await slaposAsync(['--help'])
  assert.match(r.stdout, 'client commands:')
  assert.match(r.stdout, /request\s+request an instance and get status and parameters of instance/)
  assert.match(r.stdout, /computer info\s+get information of an computer/)
  assert.match(r.stdout, /service list\s+List the title of all your slapos services/)
})

cli.run()

const unit = suite('client helpers')

unit('pformat follows Python pprint: one line when short, one key per line when long', () => {
  assert.is(pformat({}), '{}')
  assert.is(pformat({ b: '2', a: '1' }), "{'a': '1', 'b': '2'}")
  const long = { alpha: 'x'.repeat(30), beta: 'y'.repeat(30), gamma: 'z' }
  assert.is(pformat(long), `{'alpha': '${'x'.repeat(30)}',\n 'beta': '${'y'.repeat(30)}',\n 'gamma': 'z'}`)
  assert.is(pformat({ t: true, n: null, i: 3 }), "{'i': 3, 'n': None, 't': True}")
  const words = { k: Array.from({ length: 20 }, (_, i) => `word${i}`).join(' ') }
  assert.is(
    pformat(words),
    "{'k': 'word0 word1 word2 word3 word4 word5 word6 word7 word8 word9 word10 '\n      'word11 word12 word13 word14 word15 word16 word17 word18 word19'}",
  )
})

unit('parseKeyValues splits on the first = and refuses duplicates', () => {
  assert.equal(parseKeyValues(['a=b=c', 'x='], '--parameters'), { a: 'b=c', x: '' })
  assert.throws(() => parseKeyValues(['a=1', 'a=2'], '--parameters'), /Multiple values/)
  assert.throws(() => parseKeyValues(['novalue'], '--node'), /key=value/)
})

unit('schemaSerialisation: software type first, then release; json-in-xml when lax', () => {
  const schema = { serialisation: 'xml', 'software-type': { default: { serialisation: 'json-in-xml' }, other: {} } }
  assert.is(schemaSerialisation(schema, null, true), 'json-in-xml')
  assert.is(schemaSerialisation(schema, 'other', true), 'xml')
  assert.is(schemaSerialisation(undefined, null, true), undefined)
  assert.is(schemaSerialisation(undefined, null, false), 'json-in-xml')
})

unit('ClientConfig: [slapconsole] key/cert, [slapos] fallback only when neither is set', () => {
  const c1 = loadClientConfig(ConfigFile.fromText('[slapos]\nmaster_url = https://m/\nkey_file = /n/key\ncert_file = /n/cert\n[slapconsole]\ncert_file = /p/cert\n'))
  assert.is(c1.certFile, '/p/cert')
  assert.is(c1.keyFile, undefined)
  const c2 = loadClientConfig(ConfigFile.fromText('[slapos]\nmaster_url = https://m/\nkey_file = /n/key\ncert_file = /n/cert\n'))
  assert.is(c2.keyFile, '/n/key')
  const c3 = loadClientConfig(ConfigFile.fromText('[slapos]\nmaster_url = https://m/\n[slapconsole]\nkey_file = /p/key\ncert_file = /p/cert\n'), { key_file: '/cli/key' })
  assert.is(c3.keyFile, '/cli/key')
  assert.is(c3.certFile, '/p/cert')
  assert.throws(() => loadClientConfig(ConfigFile.fromText('[other]\nx = 1\n')), /no \[slapos\] section/)
  assert.throws(() => loadClientConfig(ConfigFile.fromText('[slapos]\nmaster_url = https://m/\n')), /key_file' and\/or 'cert_file/)
  assert.equal(loads('<marshal><none/></marshal>'), null)
})

unit.run()
