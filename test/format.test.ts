// End-to-end tests of `slapos node format` with the built binary against our real proxy:
// the path that changes no users and no network (alter_user/alter_network = false), the
// root check, exit codes 0/1/2/5, --dry_run and idempotent re-runs. The namespace test of
// the full path (users, addresses) is test/format-netns.test.ts.
import { chmodSync, chownSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { SlapClient } from '../src/slap-client.ts'
import { dumps, loads, isPyDict } from '../src/slap-protocol.ts'
import { FIXTURES, SLAPOS, slaposAsync, startProxy, tempDir, type StartedProxy } from './helpers.ts'

const FIXTURE_DIR = join(FIXTURES, 'slap-wire', 'computer-definitions')

function nodeCfg(dir: string, masterUrl: string, extra: { slapos?: string; slapformat?: string } = {}): string {
  const cfg = join(dir, 'slapos.cfg')
  writeFileSync(
    cfg,
    `[slapos]
computer_id = computer
master_url = ${masterUrl}
software_root = ${dir}/opt/slapgrid
instance_root = ${dir}/srv/slapgrid
root_check = false
certificate_repository_path = ${dir}/etc/ssl/partition_pki
${extra.slapos ?? ''}

[slapformat]
alter_user = false
alter_network = false
interface_name = lo
ipv4_local_network = 127.0.1.0/24
create_tap = false
partition_amount = 3
partition_base_name = slappart
user_base_name = slapuser
tap_base_name = slaptap
computer_xml = ${dir}/slapos.xml
computer_json = ${dir}/slapos.json
${extra.slapformat ?? ''}
`,
  )
  return cfg
}

/** The shape of a JSON value: same keys (recursively) and same types, values ignored. */
function shape(v: unknown): unknown {
  if (Array.isArray(v)) return v.length ? [shape(v[0])] : []
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)]))
  return v === null ? 'null' : typeof v
}

const e2e = suite('node format without touching users or network (built binary, real proxy)')
let proxy: StartedProxy
e2e.before(async () => {
  proxy = await startProxy()
})
e2e.after(async () => {
  await proxy.stop()
})

e2e('formats 3 partitions, writes slapos.xml/json, posts the computer; re-runs change nothing', async () => {
  const dir = tempDir()
  const cfg = nodeCfg(dir, proxy.url)
  const r = await slaposAsync(['node', 'format', '--cfg', cfg, '--now'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, 'partition 3/3 ready: slappart2')
  for (const i of [0, 1, 2]) {
    const st = statSync(join(dir, 'srv/slapgrid', `slappart${i}`))
    assert.ok(st.isDirectory())
    assert.is(st.mode & 0o777, 0o750)
    const res = JSON.parse(readFileSync(join(dir, 'srv/slapgrid', `slappart${i}`, '.slapos-resource'), 'utf8')) as { reference: string }
    assert.is(res.reference, `slappart${i}`)
  }
  assert.is(statSync(join(dir, 'srv/slapgrid')).mode & 0o777, 0o755)
  assert.is(statSync(join(dir, 'etc/ssl/partition_pki')).mode & 0o777, 0o700)
  const xml = readFileSync(join(dir, 'slapos.xml'), 'utf8')
  const model = loads(xml)
  // the file is the pretty xml_marshaller encoding of what it decodes to
  assert.is(dumps(model, { pretty: true }), xml)
  const json = JSON.parse(readFileSync(join(dir, 'slapos.json'), 'utf8')) as { partition_list: { address_list: { addr: string }[] }[]; address: unknown; netmask: unknown }
  assert.equal(json, JSON.parse(JSON.stringify(model)))
  // same shape as what the original wrote for 3 partitions, except the computer address:
  // lo has no global IPv6, so address/netmask are null and partitions only get an IPv4
  const fixture = JSON.parse(readFileSync(join(FIXTURE_DIR, 'format-3-partitions', 'slapos.json'), 'utf8')) as Record<string, unknown>
  const mine = shape(json) as Record<string, unknown>
  const theirs = shape(fixture) as Record<string, unknown>
  assert.equal(Object.keys(mine).sort(), Object.keys(theirs).sort())
  for (const k of Object.keys(theirs)) if (!['address', 'netmask', 'partition_list'].includes(k)) assert.equal(mine[k], theirs[k], k)
  assert.is(json.partition_list.length, 3)
  for (const p of json.partition_list) assert.match(p.address_list[0]?.addr ?? '', /^127\.0\.1\.\d+$/)

  const master = new SlapClient({ masterUrl: proxy.url })
  const computer = await master.getFullComputerInformation('computer')
  assert.equal(computer._computer_partition_list.map((p) => p._partition_id).sort(), ['slappart0', 'slappart1', 'slappart2'])

  // second run: same model; the old file goes to the zip (like the original)
  const r2 = await slaposAsync(['node', 'format', '--cfg', cfg, '--now'])
  assert.is(r2.code, 0, r2.stderr)
  assert.is(readFileSync(join(dir, 'slapos.xml'), 'utf8'), xml)
  assert.ok(existsSync(join(dir, 'slapos.xml.zip')))
  const zipBytes = readFileSync(join(dir, 'slapos.xml.zip'))
  assert.ok(zipBytes.includes(Buffer.from('slapos.xml.')))
  const unzip = spawnSync('python3', ['-c', 'import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); n=z.namelist(); print(len(n)); sys.stdout.write(z.read(n[0]).decode())', join(dir, 'slapos.xml.zip')], { encoding: 'utf8' })
  if (unzip.status === 0) assert.is(unzip.stdout, `1\n${xml}`)
  // third run: nothing written
  const m1 = statSync(join(dir, 'slapos.xml')).mtimeMs
  const z1 = statSync(join(dir, 'slapos.xml.zip')).mtimeMs
  const r3 = await slaposAsync(['node', 'format', '--cfg', cfg, '--now'])
  assert.is(r3.code, 0, r3.stderr)
  assert.is(statSync(join(dir, 'slapos.xml')).mtimeMs, m1)
  assert.is(statSync(join(dir, 'slapos.xml.zip')).mtimeMs, z1)
  const again = await master.getFullComputerInformation('computer')
  assert.is(again._computer_partition_list.length, 3)
})

e2e('more partitions later: only new ones are added, old ones keep their addresses', async () => {
  const dir = tempDir()
  const cfg = nodeCfg(dir, proxy.url, { slapformat: '' })
  assert.is((await slaposAsync(['node', 'format', '--cfg', cfg, '--now'])).code, 0)
  const before = JSON.parse(readFileSync(join(dir, 'slapos.json'), 'utf8')) as { partition_list: unknown[] }
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('partition_amount = 3', 'partition_amount = 5'))
  const r = await slaposAsync(['node', 'format', '--cfg', cfg, '--now'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, 'Adding 2 new partitions')
  const after = JSON.parse(readFileSync(join(dir, 'slapos.json'), 'utf8')) as { partition_list: unknown[] }
  assert.is(after.partition_list.length, 5)
  assert.equal(after.partition_list.slice(0, 3), before.partition_list)
  // fewer partitions than stored: refused, nothing changed
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('partition_amount = 5', 'partition_amount = 2'))
  const xml = readFileSync(join(dir, 'slapos.xml'), 'utf8')
  const low = await slaposAsync(['node', 'format', '--cfg', cfg, '--now'])
  assert.is(low.code, 1)
  assert.match(low.stderr, 'Requested amount of computer partitions (2) is lower than already configured (5), cannot continue')
  assert.is(readFileSync(join(dir, 'slapos.xml'), 'utf8'), xml)
})

e2e('--dry_run writes nothing and posts nothing', async () => {
  const dir = tempDir()
  const cfg = nodeCfg(dir, 'http://127.0.0.1:1/')
  const r = await slaposAsync(['node', 'format', '--cfg', cfg, '--now', '--dry_run', '-v'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, 'Dry-run mode enabled.')
  assert.match(r.stderr, `mkdir('${dir}/srv/slapgrid/slappart0', 488)`)
  assert.not.ok(existsSync(join(dir, 'slapos.xml')))
  assert.not.ok(existsSync(join(dir, 'slapos.json')))
  assert.not.ok(existsSync(join(dir, 'srv')))
  const n = await slaposAsync(['node', 'format', '--cfg', cfg, '--now', '-n'])
  assert.is(n.code, 0, n.stderr)
})

e2e('exit 2 when the master cannot be reached; files are written anyway', async () => {
  const dir = tempDir()
  const cfg = nodeCfg(dir, 'http://127.0.0.1:1/')
  const r = await slaposAsync(['node', 'format', '--cfg', cfg, '--now'])
  assert.is(r.code, 2, r.stderr)
  assert.match(r.stderr, "failed to transfer information to 'http://127.0.0.1:1/'")
  assert.ok(existsSync(join(dir, 'slapos.xml')))
})

e2e('exit 1 with a one-line message on bad configuration, exit 2 on bad options', async () => {
  const dir = tempDir()
  const bad = nodeCfg(dir, proxy.url, { slapformat: 'create_tun = yes' })
  const r = await slaposAsync(['node', 'format', '--cfg', bad, '--now'])
  assert.is(r.code, 1)
  assert.match(r.stderr, `Option 'create_tun' needs to be "True" or "False", wrong value: 'yes'`)
  assert.not.match(r.stderr, '    at ')
  const bridge = nodeCfg(dir, proxy.url, { slapformat: 'bridge_name = br0' })
  const b = await slaposAsync(['node', 'format', '--cfg', bridge, '--now'])
  assert.is(b.code, 1)
  assert.match(b.stderr, "Option 'bridge_name' is totally deprecated, please update your config file")
  const noXml = join(dir, 'noxml.cfg')
  writeFileSync(noXml, readFileSync(nodeCfg(dir, proxy.url), 'utf8').replace(/^computer_xml = .*$/m, ''))
  const x = await slaposAsync(['node', 'format', '--cfg', noXml, '--now'])
  assert.is(x.code, 1)
  assert.match(x.stderr, "Parameter 'computer_xml' is not defined.")
  const cfg = nodeCfg(dir, proxy.url)
  const u = await slaposAsync(['node', 'format', '--cfg', cfg, '--now', '--alter_user', 'yes'])
  assert.is(u.code, 2)
  const missing = await slaposAsync(['node', 'format', '--cfg', join(dir, 'nope.cfg'), '--now'])
  assert.is(missing.code, 1)
  assert.match(missing.stderr, 'Configuration file does not exist')
  // the old name `slapos format` is the same command
  const alias = await slaposAsync(['format', '--cfg', cfg, '--now', '-n'])
  assert.is(alias.code, 0, alias.stderr)
})

e2e('root check: exit 5 for another user unless root_check = false', () => {
  const dir = tempDir()
  chmodSync(dir, 0o755)
  const strict = join(dir, 'strict.cfg')
  writeFileSync(strict, readFileSync(nodeCfg(dir, 'http://127.0.0.1:1/'), 'utf8').replace('root_check = false', 'root_check = true'))
  chmodSync(strict, 0o644)
  const env = { PATH: '/usr/bin:/bin', HOME: '/tmp' }
  const nobody = { encoding: 'utf8' as const, uid: 65534, gid: 65534, env }
  const r = spawnSync(SLAPOS, ['node', 'format', '--cfg', strict, '--now'], nobody)
  assert.is(r.status, 5, r.stderr)
  assert.match(r.stderr, 'This slapos command must be run as root.')
  const relaxed = nodeCfg(dir, 'http://127.0.0.1:1/')
  chmodSync(relaxed, 0o644)
  chownSync(dir, 65534, 65534)
  const ok = spawnSync(SLAPOS, ['node', 'format', '--cfg', relaxed, '--now'], nobody)
  // proceeds (and only fails to reach the absent master)
  assert.is(ok.status, 2, ok.stderr)
  assert.ok(existsSync(join(dir, 'srv/slapgrid/slappart2')))
  const model = loads(readFileSync(join(dir, 'slapos.xml'), 'utf8'))
  assert.ok(isPyDict(model))
})

e2e.run()
