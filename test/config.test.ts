// slapos.cfg parsing (Python ConfigParser rules), path resolution and the node view.
import { mkdirSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { ConfigFile, configPath, loadNodeConfig, loadProxyConfig, parseIni } from '../src/config.ts'
import { ConfigError } from '../src/errors.ts'
import { tempDir } from './helpers.ts'

test('multi-line values, comments, case of keys, [DEFAULT], interpolation', () => {
  const s = parseIni(
    [
      '[DEFAULT]',
      'root = /srv',
      '# a comment',
      '[slapproxy]',
      'Port = 8080',
      'software_product_list =',
      '    theia http://x/theia.cfg',
      '    kvm http://x/kvm.cfg',
      'url = http://h/p?a=1#frag ; not a comment',
      'pct = 100%%',
      'path = %(root)s/slapgrid',
    ].join('\n'),
  )
  const p = s.get('slapproxy')
  assert.ok(p)
  assert.is(p.get('port'), '8080')
  assert.is(p.get('software_product_list'), '\ntheia http://x/theia.cfg\nkvm http://x/kvm.cfg')
  assert.is(p.get('url'), 'http://h/p?a=1#frag ; not a comment')
  assert.is(p.get('pct'), '100%')
  assert.is(p.get('path'), '/srv/slapgrid')
  assert.is(p.get('root'), '/srv')
})

test('proxy view: [slapproxy] and [slapos] merged in file order, the first value of a key wins', () => {
  const proxy = (text: string) => loadProxyConfig(new ConfigFile('/etc/p.cfg', parseIni(text)))
  const slaposFirst = proxy('[slapos]\ncomputer_id = a\nport = 1000\n[slapproxy]\nport = 2000\ndatabase_uri = /tmp/p.db\ncomputer_id = b\n')
  assert.equal([slaposFirst.port, slaposFirst.computerId], [1000, 'a'])
  const proxyFirst = proxy('[slapproxy]\nport = 2000\ndatabase_uri = /tmp/p.db\ncomputer_id = b\n[slapos]\ncomputer_id = a\nport = 1000\n')
  assert.equal([proxyFirst.port, proxyFirst.computerId], [2000, 'b'])
  // an empty value does not count: the other section gives it
  const empty = proxy('[slapproxy]\nport =\ndatabase_uri = /tmp/p.db\n[slapos]\ncomputer_id = a\nport = 1000\n')
  assert.is(empty.port, 1000)
})

test('duplicates and a bad % are refused with the file and key named', () => {
  assert.throws(() => parseIni('[a]\nx=1\nx=2', 'f.cfg'), (e: unknown) => e instanceof ConfigError && /f\.cfg:3: option x appears twice/.test(e.message))
  assert.throws(() => parseIni('[a]\n[a]', 'f.cfg'), /section \[a\] appears twice/)
  assert.throws(() => parseIni('[a]\nx = 5%', 'f.cfg'), /\[a\] x: bad use of %/)
  assert.throws(() => parseIni('[a]\nx = %(nope)s', 'f.cfg'), /refers to %\(nope\)s/)
})

test('configuration path: --cfg, then the environment, then the default; ~ expanded', () => {
  assert.is(configPath('node', '/x.cfg', { SLAPOS_CONFIGURATION: '/y.cfg' }), '/x.cfg')
  assert.is(configPath('node', undefined, { SLAPOS_CONFIGURATION: '/y.cfg' }), '/y.cfg')
  assert.is(configPath('node', undefined, {}), '/etc/opt/slapos/slapos.cfg')
  assert.is(configPath('client', undefined, {}), join(homedir(), '.slapos/slapos-client.cfg'))
  assert.is(configPath('client', undefined, { SLAPOS_CLIENT_CONFIGURATION: '~/c.cfg' }), join(homedir(), 'c.cfg'))
})

test('a missing file: one line naming it', () => {
  assert.throws(() => ConfigFile.load('/nonexistent/slapos.cfg'), /Configuration file does not exist: \/nonexistent\/slapos.cfg/)
  const hint = (family: 'node' | 'client') => {
    try {
      ConfigFile.load('/nonexistent/slapos.cfg', family)
    } catch (err) {
      return (err as { hint?: string }).hint ?? ''
    }
    return ''
  }
  assert.match(hint('node'), /SLAPOS_CONFIGURATION/)
  assert.not.match(hint('node'), /SLAPOS_CLIENT_CONFIGURATION/)
  assert.match(hint('client'), /SLAPOS_CLIENT_CONFIGURATION/)
})

test('typed accessors name the file and key of a bad value', () => {
  const c = ConfigFile.fromText('[slapos]\nroot_check = maybe\nn = x1\n', '/etc/s.cfg')
  assert.throws(() => c.bool('slapos', 'root_check', true), /\/etc\/s.cfg: \[slapos\] root_check = maybe is not a boolean/)
  assert.throws(() => c.int('slapos', 'n', 0), /\[slapos\] n = x1 is not an integer/)
})

test('node view: mandatory keys, relative paths from the file, command-line overrides', () => {
  const dir = tempDir()
  mkdirSync(join(dir, 'etc'))
  const file = join(dir, 'etc', 'slapos.cfg')
  writeFileSync(file, '[slapos]\ncomputer_id = COMP-1\nmaster_url = http://127.0.0.1:1/\nsoftware_root = ../opt\ninstance_root = ~/srv\n')
  const n = loadNodeConfig(ConfigFile.load(file), { maximum_periodicity: 60, master_url: undefined })
  assert.is(n.softwareRoot, join(dir, 'opt'))
  assert.is(n.instanceRoot, join(homedir(), 'srv'))
  assert.is(n.maximumPeriodicity, 60)
  assert.is(n.masterUrl, 'http://127.0.0.1:1/')
  assert.is(n.pidfileInstance, '/opt/slapos/slapgrid-cp.pid')
  assert.is(n.rootCheck, true)
  writeFileSync(file, '[slapos]\ncomputer_id =\nmaster_url = x\n')
  assert.throws(() => loadNodeConfig(ConfigFile.load(file)), /Missing mandatory parameters: instance_root, software_root/)
})

test.run()
