// Tests of `slapos node register` and `slapos configure client` (built binary) against
// fakeMasterRegistrationServer: a stand-in for the SlapOS Master's web site, written here,
// serving over HTTPS the two certificate endpoints as spec cli.md §11.2 and §13.1 describe
// them (no real master is reachable from a test). Certificates are made with openssl.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ConfigFile } from '../src/config.ts'
import { clientConfigFromTemplate } from '../src/configure-client.ts'
import { backupPath, computerIdFromCertificate } from '../src/register.ts'
import { SLAPOS, slaposAsync, tempDir } from './helpers.ts'

const GOOD_TOKEN = 'good-token'
const TAKEN_TOKEN = 'token-for-a-taken-name'

interface FakeMaster {
  url: string
  /** every request received: method, path, token header, form body, basic auth */
  seen: { method: string; path: string; token?: string | undefined; body: string; auth?: string | undefined }[]
  close(): Promise<void>
}

interface Material {
  tls: { key: string; cert: string }
  node: { key: string; certificateText: string }
  person: { key: string; certificate: string }
}

function openssl(args: string[], cwd: string): string {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

/** Keys and certificates made once for the whole file. */
function makeMaterial(): Material {
  const dir = tempDir('slapos-register-pki-')
  const selfSigned = (name: string, subj: string) => {
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', subj, '-keyout', `${name}.key`, '-out', `${name}.crt`], dir)
    return { key: readFileSync(join(dir, `${name}.key`), 'utf8'), cert: readFileSync(join(dir, `${name}.crt`), 'utf8') }
  }
  const tls = selfSigned('tls', '/CN=127.0.0.1')
  const node = selfSigned('node', '/CN=COMP-1234/emailAddress=node@example.com')
  const person = selfSigned('person', '/CN=person/emailAddress=person@example.com')
  // the master sends the certificate as `openssl x509 -text` prints it (subject in the old one-line form)
  const certificateText = openssl(['x509', '-in', 'node.crt', '-text', '-nameopt', 'compat'], dir)
  return { tls, node: { key: node.key, certificateText }, person: { key: person.key, certificate: person.cert } }
}

const material = makeMaterial()

/** Stand-in for the master's web site: Person_requestComputer and Person_getCertificate. */
function fakeMasterRegistrationServer(): Promise<FakeMaster> {
  const seen: FakeMaster['seen'] = []
  const server: Server = createServer({ key: material.tls.key, cert: material.tls.cert }, (req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => (body += c))
    req.on('end', () => {
      const token = req.headers['x-access-token'] as string | undefined
      const auth = req.headers.authorization ? Buffer.from(req.headers.authorization.replace(/^Basic /, ''), 'base64').toString() : undefined
      const path = req.url ?? '/'
      seen.push({ method: req.method ?? '', path, token, body, auth })
      const json = (v: unknown) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify(v))
      }
      const nodePair = { certificate: material.node.certificateText, key: material.node.key }
      if (path === '/' && req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'text/html' })
        res.end(auth === 'alice:secret' ? '<a href="logout">Logout</a>' : '<form>Login</form>')
      } else if (path.startsWith('/Person_requestComputer')) {
        if (token === TAKEN_TOKEN) {
          res.writeHead(400)
          res.end('Certificate still active.')
        } else if (token === GOOD_TOKEN || auth === 'alice:secret') json(nodePair)
        else {
          res.writeHead(403)
          res.end('Forbidden')
        }
      } else if (path === '/Person_getCertificate' && req.method === 'POST') {
        if (token === GOOD_TOKEN) json({ certificate: material.person.certificate, key: material.person.key })
        else {
          res.writeHead(403)
          res.end('Forbidden')
        }
      } else {
        res.writeHead(404)
        res.end('Not Found')
      }
    })
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      resolve({ url: `https://127.0.0.1:${port}`, seen, close: () => new Promise((r) => server.close(() => r())) })
    })
  })
}

const ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' }
let master: FakeMaster

function mode(p: string): number {
  return statSync(p).mode & 0o777
}

function register(dir: string, extra: string[] = [], token = GOOD_TOKEN) {
  return slaposAsync(['node', 'register', 'my-node', '--cfg', join(dir, 'slapos.cfg'), '--master-url-web', master.url, ...(token ? ['--token', token] : []), ...extra], { env: ENV })
}

// --- pure parts ---

const unit = suite('register units')

unit('computer id: from COMP- to /email', () => {
  assert.is(computerIdFromCertificate('Subject: CN=COMP-1234/emailAddress=x'), 'COMP-1234')
  assert.is(computerIdFromCertificate(material.node.certificateText), 'COMP-1234')
  assert.throws(() => computerIdFromCertificate('CN=someone'), /names no node/)
})

unit('backup names: .old, .old.1 ... .old.9, .old.10, .old.11 ... .old.19, .old.110', () => {
  const taken = new Set<string>()
  const next = () => {
    const p = backupPath('/etc/opt/slapos', (x) => taken.has(x))
    taken.add(p)
    return p
  }
  const names = Array.from({ length: 22 }, next).map((p) => p.slice('/etc/opt/slapos'.length))
  assert.equal(names.slice(0, 3), ['.old', '.old.1', '.old.2'])
  assert.is(names[10], '.old.10')
  assert.is(names[11], '.old.11')
  assert.is(names[19], '.old.19')
  assert.is(names[20], '.old.110')
})

unit('client configuration template: master_url, cert_file, key_file', () => {
  const text = clientConfigFromTemplate('https://m.example', '/h/.slapos/client.crt', '/h/.slapos/client.key')
  assert.match(text, '\nmaster_url = https://m.example\n')
  assert.match(text, '\ncert_file = /h/.slapos/client.crt\n')
  assert.match(text, '\nkey_file = /h/.slapos/client.key\n')
})

unit.run()

// --- node register against the stand-in master ---

const reg = suite('node register (fakeMasterRegistrationServer)')
reg.before(async () => {
  master = await fakeMasterRegistrationServer()
})
reg.after(async () => {
  await master.close()
})

reg('token accepted: certificate, key and slapos.cfg with the defaults', async () => {
  const dir = join(tempDir(), 'etc', 'opt', 'slapos')
  const r = await register(dir)
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, 'Node has successfully been configured as COMP-1234.')
  const last = master.seen.at(-1)
  assert.is(last?.method, 'POST')
  assert.is(last?.path, '/Person_requestComputer')
  assert.is(last?.token, GOOD_TOKEN)
  assert.is(last?.body, 'title=my-node')
  const text = readFileSync(join(dir, 'slapos.cfg'), 'utf8')
  for (const line of ['computer_id = COMP-1234', 'software_root = /opt/slapgrid', 'instance_root = /srv/slapgrid', 'interface_name = lo', 'partition_amount = 10', 'create_tap = False']) {
    assert.match(text, `\n${line}\n`, line)
  }
  const cfg = ConfigFile.load(join(dir, 'slapos.cfg'))
  assert.is(cfg.get('slapos', 'master_url'), 'https://slap.vifib.com')
  assert.is(cfg.get('slapos', 'key_file'), join(dir, 'ssl', 'key'))
  assert.is(cfg.get('slapos', 'cert_file'), join(dir, 'ssl', 'certificate'))
  assert.is(cfg.get('slapos', 'certificate_repository_path'), join(dir, 'ssl', 'partition_pki'))
  assert.is(cfg.get('slapformat', 'ipv4_local_network'), '10.0.0.0/16')
  assert.is(cfg.get('slapformat', 'computer_xml'), '/opt/slapos/slapos.xml')
  assert.is(cfg.get('networkcache', 'download-binary-cache-url'), 'http://shacache.nxdcdn.com')
  assert.is(readFileSync(join(dir, 'ssl', 'key'), 'utf8'), material.node.key)
  assert.is(readFileSync(join(dir, 'ssl', 'certificate'), 'utf8'), material.node.certificateText)
  assert.is(mode(join(dir, 'ssl', 'key')), 0o600)
  assert.is(mode(join(dir, 'ssl', 'certificate')), 0o600)
  assert.is(mode(dir), 0o711)
  assert.is(mode(join(dir, 'ssl')), 0o711)
  assert.is(mode(join(dir, 'ssl', 'partition_pki')), 0o711)
  // ancestors opened to partition users
  assert.is(mode(join(dir, '..')) & 0o055, 0o055)
})

reg('options are written: --create-tap --partition-number 50 roots, interfaces, master', async () => {
  const dir = tempDir()
  const r = await register(dir, [
    '--software-root', '/SOFTWARE/ROOT', '--instance-root', '/INSTANCE/ROOT', '--interface-name', 'SOME-INTERFACE',
    '--partition-number', '50', '--create-tap', '--ipv6-interface', 'tapVPN', '--master-url', 'https://master.example',
    '--ipv4-local-network', '10.42.0.0/16',
  ])
  assert.is(r.code, 0, r.stderr)
  const text = readFileSync(join(dir, 'slapos.cfg'), 'utf8')
  for (const line of ['software_root = /SOFTWARE/ROOT', 'instance_root = /INSTANCE/ROOT', 'interface_name = SOME-INTERFACE', 'partition_amount = 50', 'create_tap = True', 'ipv6_interface = tapVPN', 'master_url = https://master.example', 'ipv4_local_network = 10.42.0.0/16']) {
    assert.match(text, `\n${line}\n`, line)
  }
})

reg('a rejected token: exit 1, the original message, nothing written', async () => {
  const dir = join(tempDir(), 'conf')
  const r = await register(dir, [], 'wrong')
  assert.is(r.code, 1)
  assert.match(r.stderr, 'Access denied to the SlapOS Master. Please check the authentication token or require a new one.')
  assert.not.match(r.stderr, '    at ')
  assert.ok(!existsSync(dir))
})

reg('a node name in use: exit 1 with the original message', async () => {
  const dir = join(tempDir(), 'conf')
  const r = await register(dir, [], TAKEN_TOKEN)
  assert.is(r.code, 1)
  assert.match(r.stderr, 'The node name "my-node" is already in use. Please change the name, or revoke the active certificate if you want to replace the node.')
})

reg('an existing configuration moves to <dir>.old, then <dir>.old.1', async () => {
  const base = tempDir()
  const dir = join(base, 'slapos')
  mkdirSync(dir)
  writeFileSync(join(dir, 'slapos.cfg'), '# first\n')
  assert.is((await register(dir)).code, 0)
  assert.is(readFileSync(join(base, 'slapos.old', 'slapos.cfg'), 'utf8'), '# first\n')
  const r = await register(dir)
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, `Former slapos configuration detected in ${dir} moving to ${dir}.old.1`)
  assert.equal(readdirSync(base).sort(), ['slapos', 'slapos.old', 'slapos.old.1'])
  assert.match(readFileSync(join(base, 'slapos.old.1', 'slapos.cfg'), 'utf8'), 'computer_id = COMP-1234')
})

reg('a key or certificate without slapos.cfg is set aside, not overwritten', async () => {
  const dir = tempDir()
  mkdirSync(join(dir, 'ssl'))
  writeFileSync(join(dir, 'ssl', 'key'), 'old key')
  const r = await register(dir)
  assert.is(r.code, 0, r.stderr)
  assert.is(readFileSync(join(dir, 'ssl', 'key.old'), 'utf8'), 'old key')
  assert.is(readFileSync(join(dir, 'ssl', 'key'), 'utf8'), material.node.key)
})

reg('--dry-run asks the master and writes nothing', async () => {
  const dir = join(tempDir(), 'conf')
  const r = await register(dir, ['--dry-run'])
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, `SlapOS configuration written to ${join(dir, 'slapos.cfg')}`)
  assert.ok(!existsSync(dir))
})

reg('login mode: --login/--password checked on the home page, then a GET with basic auth', async () => {
  const dir = tempDir()
  const r = await register(dir, ['--login', 'alice', '--password', 'secret'], '')
  assert.is(r.code, 0, r.stderr)
  const last = master.seen.at(-1)
  assert.is(last?.method, 'GET')
  assert.is(last?.path, '/Person_requestComputer?title=my-node')
  assert.is(last?.auth, 'alice:secret')
  const wrong = await register(tempDir(), ['--login', 'alice', '--password', 'nope'], '')
  assert.is(wrong.code, 1)
  assert.match(wrong.stderr, 'Wrong login/password')
})

reg('the token is prompted when not given; no input is an error, not a loop', async () => {
  const dir = tempDir()
  const r = await slaposAsync(['node', 'register', 'my-node', '--cfg', join(dir, 'slapos.cfg'), '--master-url-web', master.url], { env: ENV, input: `\n${GOOD_TOKEN}\n` })
  assert.is(r.code, 0, r.stderr)
  assert.match(r.stderr, 'Computer security token: ')
  const none = await slaposAsync(['node', 'register', 'my-node', '--cfg', join(tempDir(), 'slapos.cfg'), '--master-url-web', master.url], { env: ENV, input: '' })
  assert.is(none.code, 1)
})

reg('non-root: the original message and exit 5, before anything else', () => {
  const dir = tempDir()
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', SLAPOS, 'node', 'register', 'x', '--cfg', join(dir, 'slapos.cfg'), '--token', GOOD_TOKEN, '--master-url-web', master.url], { encoding: 'utf8', env: ENV })
  assert.is(r.status, 5, r.stderr)
  assert.match(r.stderr, 'This slapos command must be run as root.')
})

reg('NODE_NAME is required (usage error, exit 2)', async () => {
  const r = await slaposAsync(['node', 'register', '--token', GOOD_TOKEN], { env: ENV })
  assert.is(r.code, 2)
  assert.match(r.stderr, 'NODE_NAME')
})

reg.run()

// --- configure client against the stand-in master ---

const client = suite('configure client (fakeMasterRegistrationServer)')
client.before(async () => {
  master = await fakeMasterRegistrationServer()
})
client.after(async () => {
  await master.close()
})

client('writes the configuration, client.crt and client.key, all 0600, in a 0700 directory', async () => {
  const home = tempDir()
  const r = await slaposAsync(['configure', 'client', '--master-url-web', master.url, '--master-url', 'https://slap.example', '--token', GOOD_TOKEN], { env: { ...ENV, HOME: home } })
  assert.is(r.code, 0, r.stderr)
  const dir = join(home, '.slapos')
  const cfgPath = join(dir, 'slapos-client.cfg')
  assert.match(r.stderr, `SlapOS client configuration written to ${cfgPath}`)
  assert.is(mode(dir), 0o700)
  for (const f of ['slapos-client.cfg', 'client.crt', 'client.key']) assert.is(mode(join(dir, f)), 0o600, f)
  const cfg = ConfigFile.load(cfgPath)
  assert.is(cfg.get('slapos', 'master_url'), 'https://slap.example')
  assert.is(cfg.get('slapconsole', 'cert_file'), join(dir, 'client.crt'))
  assert.is(cfg.get('slapconsole', 'key_file'), join(dir, 'client.key'))
  assert.is(readFileSync(join(dir, 'client.key'), 'utf8'), material.person.key)
  assert.is(master.seen.at(-1)?.token, GOOD_TOKEN)
})

client('refuses an existing configuration, client.crt or client.key (exit 1), writes nothing', async () => {
  for (const [name, what] of [
    ['my.cfg', 'configuration'],
    ['client.crt', 'certificate'],
    ['client.key', 'key'],
  ]) {
    const dir = tempDir()
    writeFileSync(join(dir, name ?? ''), 'mine')
    const before = readdirSync(dir).sort()
    const r = await slaposAsync(['configure', 'client', '--cfg', join(dir, 'my.cfg'), '--master-url-web', master.url, '--token', GOOD_TOKEN], { env: ENV })
    assert.is(r.code, 1, name)
    assert.match(r.stderr, `There is a file in ${join(dir, name ?? '')}. Please remove it before creating a new ${what}.`)
    assert.equal(readdirSync(dir).sort(), before)
  }
})

client('a rejected token: exit 1, the original message, nothing written', async () => {
  const dir = tempDir()
  const r = await slaposAsync(['configure', 'client', '--cfg', join(dir, 'c.cfg'), '--master-url-web', master.url, '--token', 'wrong'], { env: ENV })
  assert.is(r.code, 1)
  assert.match(r.stderr, 'Access denied to the SlapOS Master. Please check the authentication token or require a new one.')
  assert.equal(readdirSync(dir), [])
})

client('SLAPOS_CLIENT_CONFIGURATION names the file to create', async () => {
  const dir = tempDir()
  const r = await slaposAsync(['configure', 'client', '--master-url-web', master.url, '--token', GOOD_TOKEN], { env: { ...ENV, SLAPOS_CLIENT_CONFIGURATION: join(dir, 'sub', 'c.cfg') } })
  assert.is(r.code, 0, r.stderr)
  assert.ok(existsSync(join(dir, 'sub', 'c.cfg')))
  assert.ok(existsSync(join(dir, 'sub', 'client.key')))
})

client.run()
