// Tests of the SLAP client: replays the 58 captured exchanges against a tiny HTTP server
// (request bytes must match the capture), HTTPS with a required client certificate
// (certificates made with openssl), and the mapping of statuses and network failures.
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { AuthorizationError, ConfigError, ConnectionError, NotFoundError, ResourceNotReadyError, ServerError } from '../src/errors.ts'
import { EXIT } from '../src/exit-codes.ts'
import { asComputer, decode, formEncode, normalizeMasterUrl, serverName, SlapClient, type Computer, type ComputerPartition, type SoftwareInstance } from '../src/slap-client.ts'
import { dumps, isPyDict, loads, PyFloat, PyMap, SlapObject, Tuple, type PyDict, type PyValue } from '../src/slap-protocol.ts'
import { FIXTURES as FIXTURE_ROOT, tempDir } from './helpers.ts'

interface ClientFixture {
  label: string
  request: {
    method: string
    path: string
    query: Record<string, string>
    query_string: string
    body: string | null
    form: Record<string, string> | null
    form_decoded: Record<string, unknown> | null
  }
  response: { status: number; body: string; body_decoded: unknown; content_type: string }
}

const DIR = join(FIXTURE_ROOT, 'slap-wire', 'client')
const FIXTURES = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((file) => ({ file, fx: JSON.parse(readFileSync(join(DIR, file), 'utf8')) as ClientFixture }))

function toJson(v: PyValue): unknown {
  if (v instanceof Tuple) return { __tuple__: v.items.map(toJson) }
  if (v instanceof SlapObject) return { __object__: `slapos.slap.slap.${v.className}`, state: toJson(v.state) }
  if (v instanceof PyFloat) return v.value
  if (typeof v === 'bigint') return Number(v)
  if (Array.isArray(v)) return v.map(toJson)
  if (v instanceof Set) return [...v].map(toJson)
  if (v instanceof PyMap) return Object.fromEntries(v.entries.map(([k, x]) => [String(k), toJson(x)]))
  if (isPyDict(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]))
  return v
}

function fromJson(j: unknown): PyValue {
  if (Array.isArray(j)) return j.map(fromJson)
  if (j !== null && typeof j === 'object') {
    const o = j as Record<string, unknown>
    if (Array.isArray(o.__tuple__)) return new Tuple(o.__tuple__.map(fromJson))
    const d: PyDict = {}
    for (const [k, x] of Object.entries(o)) d[k] = fromJson(x)
    return d
  }
  return j as PyValue
}

// --- a tiny server that answers what the test tells it and records what it got --------

interface Seen {
  method: string
  url: string
  headers: IncomingMessage['headers']
  body: string
}

interface TestServer {
  url: string
  seen: Seen[]
  answer: (req: Seen, res: ServerResponse) => void
  close(): Promise<void>
}

function listen(server: Server, state: { seen: Seen[]; answer: TestServer['answer'] }, scheme: 'http' | 'https'): Promise<TestServer> {
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') }
      state.seen.push(seen)
      state.answer(seen, res)
    })
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      const t: TestServer = {
        url: `${scheme}://127.0.0.1:${port}`,
        get seen() {
          return state.seen
        },
        set answer(f: TestServer['answer']) {
          state.answer = f
        },
        get answer() {
          return state.answer
        },
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections?.()
            server.close(() => r())
          }),
      }
      resolve(t)
    })
  })
}

function httpServer(): Promise<TestServer> {
  return listen(createHttpServer(), { seen: [], answer: (_q, res) => res.end('OK') }, 'http')
}

const reply = (status: number, body: string, type = 'text/html; charset=utf-8') => (_q: Seen, res: ServerResponse) => {
  res.writeHead(status, { 'Content-Type': type })
  res.end(body)
}

// --- the replay of every captured exchange ---------------------------------------------

/** The client call the original made for this capture, built through our typed API. */
async function callFor(c: SlapClient, fx: ClientFixture): Promise<unknown> {
  const q = fx.request.query
  const f = fx.request.form ?? {}
  const d = fx.request.form_decoded ?? {}
  const slave = (s: string | undefined) => (s === undefined || s === 'None' ? null : s)
  switch (fx.request.path.slice(1)) {
    case 'getHateoasUrl':
      return c.getHateoasUrl()
    case 'getFullComputerInformation':
      return c.getFullComputerInformation(q.computer_id!)
    case 'loadComputerConfigurationFromXML': {
      const x = d.xml as Record<string, unknown>
      return c.loadComputerConfigurationFromXML('__undecodable__' in x ? f.xml! : (fromJson(x) as PyDict))
    }
    case 'requestComputerPartition':
      if (fx.request.form === null) return c.post('requestComputerPartition', [])
      return c.requestComputerPartition({
        softwareRelease: f.software_release!,
        partitionReference: f.partition_reference!,
        softwareType: f.software_type!,
        partitionParameterKw: fromJson(d.partition_parameter_xml ?? {}) as PyDict,
        filterKw: fromJson(d.filter_xml ?? {}) as PyDict,
        state: loads(f.state!) as string | null,
        shared: d.shared_xml as boolean,
        ...(f.computer_id !== undefined ? { computerId: f.computer_id, partitionId: f.computer_partition_id! } : {}),
      })
    case 'supplySupply':
      if (f.state === undefined) return c.post('supplySupply', Object.entries(f))
      return c.supplySupply(f.url!, f.computer_id!, f.state)
    case 'buildingSoftwareRelease':
      return c.buildingSoftwareRelease(f.url!, f.computer_id!)
    case 'availableSoftwareRelease':
      return c.availableSoftwareRelease(f.url!, f.computer_id!)
    case 'destroyedSoftwareRelease':
      return c.destroyedSoftwareRelease(f.url!, f.computer_id!)
    case 'softwareReleaseError':
      return c.softwareReleaseError(f.url!, f.computer_id!, f.error_log!)
    case 'registerComputerPartition':
      return c.registerComputerPartition(q.computer_reference!, q.computer_partition_reference!)
    case 'setComputerPartitionConnectionXml':
      return c.setComputerPartitionConnectionXml(f.computer_id!, f.computer_partition_id!, fromJson(d.connection_xml) as PyDict, slave(f.slave_reference))
    case 'startedComputerPartition':
      return c.startedComputerPartition(f.computer_id!, f.computer_partition_id!)
    case 'stoppedComputerPartition':
      return c.stoppedComputerPartition(f.computer_id!, f.computer_partition_id!)
    case 'destroyedComputerPartition':
      return c.destroyedComputerPartition(f.computer_id!, f.computer_partition_id!)
    case 'softwareInstanceError':
      return c.softwareInstanceError(f.computer_id!, f.computer_partition_id!, f.error_log!, slave(f.slave_reference))
    case 'softwareInstanceBang':
      return c.softwareInstanceBang(f.computer_id!, f.computer_partition_id!, f.message!)
    case 'softwareInstanceRename':
      return c.softwareInstanceRename(f.computer_id!, f.computer_partition_id!, f.new_name!, slave(f.slave_reference))
    case 'getComputerPartitionCertificate':
      return c.getComputerPartitionCertificate(q.computer_id!, q.computer_partition_id!)
    case 'getComputerPartitionStatus':
      return c.getComputerPartitionStatus(q.computer_id!, q.computer_partition_id!)
    case 'computerBang':
      return c.computerBang(f.computer_id!, f.message!)
    case 'useComputer':
      return c.useComputer(f.computer_id!, f.use_string!)
    case 'getSoftwareReleaseListFromSoftwareProduct':
      return c.getSoftwareReleaseListFromSoftwareProduct(q.software_product_reference, q.software_release_url)
  }
  throw new Error(`no client call for ${fx.request.path}`)
}

let wire: TestServer
let current: ClientFixture | undefined
test.before(async () => {
  wire = await httpServer()
  wire.answer = (_q, res) => {
    const r = current!.response
    res.writeHead(r.status, { 'Content-Type': r.content_type })
    res.end(r.body)
  }
})
test.after(async () => {
  await wire.close()
})

test("a free partition whose software release document has no URL (the real master's) has no software release, not an error", () => {
  const fx = FIXTURES.find((f) => f.file.startsWith('15-'))!.fx
  const empty =
    '<string>_software_release_document</string><object id="i90" module="slapos.slap.slap" class="SoftwareRelease"><tuple><none/><none/></tuple>' +
    '<dictionary id="i91"><string>_software_release</string><none/><string>_computer_guid</string><none/></dictionary></object>'
  const body = fx.response.body.replace('<string>_software_release_document</string><none/>', empty)
  assert.is.not(body, fx.response.body)
  const computer = asComputer(decode(body, 'getFullComputerInformation'))
  const free = computer._computer_partition_list[0]!
  assert.is(free._software_release_document, null)
  assert.is(free._requested_state, 'destroyed')
})

test('the capture set is complete (58 exchanges, 22 endpoints)', () => {
  assert.is(FIXTURES.length, 58)
  assert.is(new Set(FIXTURES.map((f) => f.fx.request.path)).size, 22)
})

for (const { file, fx } of FIXTURES) {
  test(`replay ${file}: same request bytes, answer decoded`, async () => {
    current = fx
    const client = new SlapClient({ masterUrl: wire.url })
    const before = wire.seen.length
    let result: unknown
    let error: unknown
    try {
      result = await callFor(client, fx)
    } catch (e) {
      error = e
    }
    assert.is(wire.seen.length, before + 1, 'exactly one HTTP request')
    const seen = wire.seen[before]!
    assert.is(seen.method, fx.request.method)
    const [path, qs = ''] = seen.url.split('?')
    assert.is(path, fx.request.path)
    assert.is(qs, fx.request.query_string, 'query string byte for byte')
    if (fx.request.method === 'POST') {
      assert.is(seen.body, fx.request.body ?? '', 'form body byte for byte')
      assert.is(seen.headers['content-type'], 'application/x-www-form-urlencoded')
      assert.is(seen.headers['content-length'], String(Buffer.byteLength(seen.body)))
    }
    assert.is(seen.headers.accept, '*/*')

    const r = fx.response
    if (r.status === 404) assert.ok(error instanceof NotFoundError, `404 -> NotFoundError, got ${String(error)}`)
    else if (r.status >= 400) assert.ok(error instanceof ServerError && error.status === r.status, `${r.status} -> ServerError, got ${String(error)}`)
    else {
      if (error) throw error
      if (r.body_decoded === null) assert.is(result, r.body)
      else if (typeof result === 'object' && result !== null && 'raw' in result) assert.equal(toJson((result as { raw: SlapObject }).raw), r.body_decoded)
      else if (typeof result === 'string' && result.startsWith('<marshal')) assert.is(result, r.body)
      else assert.equal(toJson(result as PyValue), r.body_decoded)
    }
  })
}

test('replay: the 404 of an allocation failure carries the master reason', async () => {
  const fx = FIXTURES.find((f) => f.file.startsWith('53-'))!.fx
  current = fx
  const client = new SlapClient({ masterUrl: wire.url })
  try {
    await callFor(client, fx)
    assert.unreachable()
  } catch (e) {
    assert.instance(e, NotFoundError)
    assert.match((e as Error).message, 'No free computer partition found for: comp-wire-one-too-many')
  }
})

test('typed views: computer, partitions, software releases and instances keep the wire names', async () => {
  const client = new SlapClient({ masterUrl: wire.url })
  current = FIXTURES.find((f) => f.file.startsWith('26-'))!.fx
  const computer: Computer = await client.getFullComputerInformation('COMP-WIRE-MAIN')
  assert.is(computer._computer_id, 'COMP-WIRE-MAIN')
  assert.ok(computer._computer_partition_list.length >= 3)
  const busy = computer._computer_partition_list.find((p) => p._requested_state === 'started')!
  assert.is(busy._partition_id, 'slappart0')
  assert.is(typeof busy._instance_guid, 'string')
  assert.ok(isPyDict(busy._parameter_dict!))
  const srd = busy._software_release_document
  assert.ok(typeof srd === 'object' && srd !== null && srd._software_release === 'http://sr.example/scenario/software.cfg')
  assert.is(computer._software_release_list[0]!._requested_state, 'available')

  current = FIXTURES.find((f) => f.file.startsWith('27-'))!.fx
  const part: ComputerPartition = await client.registerComputerPartition('COMP-WIRE-MAIN', 'slappart0')
  assert.is(part._computer_id, 'COMP-WIRE-MAIN')
  assert.is(part.raw.initArgs.length, 3)

  current = FIXTURES.find((f) => f.file.startsWith('29-'))!.fx
  const inst: SoftwareInstance = await client.requestComputerPartition({ softwareRelease: 'x', partitionReference: 'y' })
  assert.is(inst.className, 'SoftwareInstance')
  assert.is(inst.slap_computer_partition_id, 'slappart0')
  assert.equal(inst.ip_list[0], ['slapuser0', inst.ip_list[0]![1]])
  assert.match(inst.connection_xml!, /<instance>/)
  assert.is(inst._requested_state, 'started')

  current = FIXTURES.find((f) => f.file.startsWith('31-'))!.fx
  const shared = await client.requestComputerPartition({ softwareRelease: 'x', partitionReference: 'y', shared: true })
  assert.is(shared._requested_state, undefined, 'shared instances carry no requested state')
  assert.ok(isPyDict(shared._connection_dict!))
})

test('the spec examples of request bodies are reproduced (field by field)', () => {
  const form = 'software_release=https%3A%2F%2Fexample.com%2Fsoftware.cfg&partition_reference=MyInstance&partition_parameter_xml=%3Cmarshal%3E%3Cdictionary+id%3D%22i2%22%3E%3Cstring%3Efoo%3C%2Fstring%3E%3Cstring%3Ebar%3C%2Fstring%3E%3C%2Fdictionary%3E%3C%2Fmarshal%3E&filter_xml=%3Cmarshal%3E%3Cdictionary+id%3D%22i2%22%2F%3E%3C%2Fmarshal%3E&software_type=default&state=%3Cmarshal%3E%3Cnone%2F%3E%3C%2Fmarshal%3E&shared_xml=%3Cmarshal%3E%3Cbool%3E0%3C%2Fbool%3E%3C%2Fmarshal%3E'
  assert.is(
    formEncode([
      ['software_release', 'https://example.com/software.cfg'],
      ['partition_reference', 'MyInstance'],
      ['partition_parameter_xml', dumps({ foo: 'bar' })],
      ['filter_xml', dumps({})],
      ['software_type', 'default'],
      ['state', dumps(null)],
      ['shared_xml', dumps(false)],
    ]),
    form,
  )
  // quote_plus: only letters, digits and _.-~ are left alone.
  assert.is(formEncode([['k', "a b*!'()~_.-é😀/?&="]]), 'k=a+b%2A%21%27%28%29~_.-%C3%A9%F0%9F%98%80%2F%3F%26%3D')
})

test('master URL: final slash, path prefix kept, bare IPv6 gets brackets, bad URL is a ConfigError', async () => {
  // Like slapos.util._addIpv6Brackets: the whole host is tried as an address first, so
  // `fd00::1:5000` is one address; a port is split off only when the whole is not one.
  assert.is(normalizeMasterUrl('http://fd00::1:5000'), 'http://[fd00::1:5000]/')
  assert.is(normalizeMasterUrl('http://fd00:1:2:3:4:5:6:7:5000/x'), 'http://[fd00:1:2:3:4:5:6:7]:5000/x/')
  assert.is(normalizeMasterUrl('http://fd00::1'), 'http://[fd00::1]/')
  assert.is(normalizeMasterUrl('https://host/erp5/portal_slap'), 'https://host/erp5/portal_slap/')
  assert.is(normalizeMasterUrl('http://127.0.0.1:8080'), 'http://127.0.0.1:8080/')
  assert.is(normalizeMasterUrl('http://[::1]:8080/x'), 'http://[::1]:8080/x/')
  // the TLS server name given to Node's agent: what it would derive itself (SNI only for names)
  assert.is(serverName(new URL('https://slap.example.com:443/erp5/')), 'slap.example.com')
  assert.is(serverName(new URL('https://10.0.0.1:8443/')), '')
  assert.is(serverName(new URL('https://[fd00::1]:8443/')), '')
  assert.is(serverName(new URL('http://slap.example.com/')), '')
  assert.throws(() => normalizeMasterUrl('ftp://x'), (e: unknown) => e instanceof ConfigError)
  assert.throws(() => normalizeMasterUrl('not a url'), (e: unknown) => e instanceof ConfigError)
  const s = await httpServer()
  try {
    s.answer = reply(200, 'Ignored')
    await new SlapClient({ masterUrl: `${s.url}/erp5/portal_slap` }).startedComputerPartition('C', 'p')
    assert.is(s.seen[0]!.url, '/erp5/portal_slap/startedComputerPartition')
  } finally {
    await s.close()
  }
})

test('client-side rules: empty usage not sent, empty ids refused without HTTP, product XOR url', async () => {
  const s = await httpServer()
  try {
    const c = new SlapClient({ masterUrl: s.url })
    assert.is(await c.useComputer('C', ''), undefined)
    for (const call of [() => c.getFullComputerInformation(''), () => c.registerComputerPartition('C', '')]) {
      try {
        await call()
        assert.unreachable()
      } catch (e) {
        assert.instance(e, NotFoundError)
      }
    }
    try {
      await c.getSoftwareReleaseListFromSoftwareProduct('a', 'b')
      assert.unreachable()
    } catch (e) {
      assert.match((e as Error).message, 'either')
    }
    assert.is(s.seen.length, 0)
    // A None value is sent as the string None; softwareInstanceError sends slave_reference only when set.
    s.answer = reply(200, 'Ignored')
    await c.supplySupply('http://sr', null)
    await c.softwareInstanceError('C', 'p', 'log', 'SLAVE')
    assert.is(s.seen[0]!.body, 'url=http%3A%2F%2Fsr&computer_id=None&state=available')
    assert.is(s.seen[1]!.body, 'computer_id=C&computer_partition_id=p&error_log=log&slave_reference=SLAVE')
  } finally {
    await s.close()
  }
})

// --- status mapping and unreachable masters -------------------------------------------

test('statuses map to typed errors with their exit codes', async () => {
  const s = await httpServer()
  try {
    const c = new SlapClient({ masterUrl: s.url })
    const cases: Array<[number, new (...a: never[]) => Error, number]> = [
      [404, NotFoundError, EXIT.FAIL],
      [408, ResourceNotReadyError, EXIT.NOT_READY],
      [401, AuthorizationError, EXIT.FAIL],
      [403, AuthorizationError, EXIT.FAIL],
      [400, ServerError, EXIT.FAIL],
      [500, ServerError, EXIT.FAIL],
      [502, ServerError, EXIT.FAIL],
      [503, ServerError, EXIT.FAIL],
    ]
    for (const [status, cls, exit] of cases) {
      s.answer = reply(status, `<!doctype html>\n<title>x</title>\n<p>reason &amp; ${status}</p>\n`)
      try {
        await c.requestComputerPartition({ softwareRelease: 'x', partitionReference: 'y' })
        assert.unreachable(`status ${status}`)
      } catch (e) {
        assert.instance(e, cls, `status ${status}`)
        assert.is((e as { exitCode: number }).exitCode, exit)
        assert.match((e as Error).message, `reason & ${status}`)
        if (e instanceof ServerError) assert.is(e.status, status)
      }
    }
    // No retry: each call above made exactly one request.
    assert.is(s.seen.length, cases.length)
    // A plain-text answer where a document is expected is a MarshalError, not a crash.
    s.answer = reply(200, 'Not a document')
    try {
      await c.getFullComputerInformation('C')
      assert.unreachable()
    } catch (e) {
      assert.is((e as { code: string }).code, 'E_MARSHAL')
    }
  } finally {
    await s.close()
  }
})

test('getFullComputerInformation falls back to getComputerInformation on 404', async () => {
  const s = await httpServer()
  try {
    const body = dumps(new SlapObject('Computer', ['C'], { _computer_id: 'C', _computer_partition_list: [], _software_release_list: [] }))
    s.answer = (q, res) => (q.url.startsWith('/getFull') ? reply(404, 'no')(q, res) : reply(200, body)(q, res))
    const computer = await new SlapClient({ masterUrl: s.url }).getFullComputerInformation('C')
    assert.is(computer._computer_id, 'C')
    assert.equal(
      s.seen.map((x) => x.url),
      ['/getFullComputerInformation?computer_id=C', '/getComputerInformation?computer_id=C'],
    )
  } finally {
    await s.close()
  }
})

test('connection refused and timeouts are ConnectionError', async () => {
  const s = await httpServer()
  const url = s.url
  await s.close()
  try {
    await new SlapClient({ masterUrl: url }).getHateoasUrl()
    assert.unreachable()
  } catch (e) {
    assert.instance(e, ConnectionError)
    assert.match((e as Error).message, `Couldn't connect to the master at ${url}/`)
    assert.match((e as Error).message, 'ECONNREFUSED')
  }
  const silent = await httpServer()
  silent.answer = () => {} // never answers
  try {
    await new SlapClient({ masterUrl: silent.url, timeoutMs: 300 }).getHateoasUrl()
    assert.unreachable()
  } catch (e) {
    assert.instance(e, ConnectionError)
    assert.match((e as Error).message, 'no answer within')
  } finally {
    await silent.close()
  }
})

// --- HTTPS with a client certificate, as a real master wants --------------------------

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`)
}

function makeCertificates(dir: string): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\n')
  for (const ca of ['ca', 'other-ca']) openssl(dir, ['req', '-x509', ...ec, '-keyout', `${ca}.key`, '-out', `${ca}.crt`, '-days', '2', '-subj', `/CN=${ca}`])
  for (const [name, ext] of [
    ['server', ['-extfile', 'server.ext']],
    ['client', []],
  ] as const) {
    openssl(dir, ['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'server' ? '127.0.0.1' : 'COMP-TEST'}`])
    openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', ...ext])
  }
}

test('https: a master requiring a client certificate accepts ours and refuses none', async () => {
  const dir = tempDir('slapos-tls-')
  makeCertificates(dir)
  const read = (f: string) => readFileSync(join(dir, f))
  const server = createHttpsServer({ key: read('server.key'), cert: read('server.crt'), ca: read('ca.crt'), requestCert: true, rejectUnauthorized: true })
  const state = {
    seen: [] as Seen[],
    answer: (_q: Seen, res: ServerResponse) => {
      res.writeHead(200)
      res.end('<marshal><string>Not implemented.</string></marshal>')
    },
  }
  const s = await listen(server, state, 'https')
  try {
    const withCert = new SlapClient({ masterUrl: s.url, keyFile: join(dir, 'client.key'), certFile: join(dir, 'client.crt') })
    assert.is(await withCert.getComputerPartitionStatus('C', 'p'), 'Not implemented.')
    assert.is(s.seen[0]!.url, '/getComputerPartitionStatus?computer_id=C&computer_partition_id=p')

    // With the master's CA the server certificate is verified too.
    const verified = new SlapClient({ masterUrl: s.url, keyFile: join(dir, 'client.key'), certFile: join(dir, 'client.crt'), caFile: join(dir, 'ca.crt') })
    assert.is(await verified.getComputerPartitionStatus('C', 'p'), 'Not implemented.')

    try {
      await new SlapClient({ masterUrl: s.url }).getComputerPartitionStatus('C', 'p')
      assert.unreachable('no certificate must fail')
    } catch (e) {
      assert.instance(e, ConnectionError)
      assert.match((e as Error).message, 'client certificate')
    }

    try {
      await new SlapClient({ masterUrl: s.url, keyFile: join(dir, 'client.key'), certFile: join(dir, 'client.crt'), caFile: join(dir, 'other-ca.crt') }).getComputerPartitionStatus('C', 'p')
      assert.unreachable('a server certificate from another CA must fail')
    } catch (e) {
      assert.instance(e, ConnectionError)
      assert.match((e as Error).message, /TLS|certificate/)
    }

    try {
      await new SlapClient({ masterUrl: s.url, keyFile: join(dir, 'missing.key'), certFile: join(dir, 'client.crt') }).getComputerPartitionStatus('C', 'p')
      assert.unreachable('a missing key file must fail')
    } catch (e) {
      assert.instance(e, ConfigError)
      assert.match((e as Error).message, 'missing.key')
    }
    assert.is(s.seen.length, 2, 'only the two requests with a certificate reached the handler')
  } finally {
    await s.close()
  }
})

test('a kept-alive connection the master dropped is retried once on a new connection', async () => {
  // A raw server: the first request of each connection is answered with keep-alive; a second
  // request on the same connection is dropped (reset) without an answer, as a master whose
  // idle timeout closed the connection while the node was busy.
  const { createServer } = await import('node:net')
  let connections = 0
  let answered = 0
  const server = createServer((sock) => {
    connections += 1
    let requests = 0
    let buffered = ''
    sock.on('data', (d) => {
      buffered += d.toString('latin1')
      while (buffered.includes('\r\n\r\n')) {
        const head = buffered.slice(0, buffered.indexOf('\r\n\r\n') + 4)
        const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        if (buffered.length < head.length + length) return
        buffered = buffered.slice(head.length + length)
        requests += 1
        if (requests > 1) {
          sock.resetAndDestroy()
          return
        }
        answered += 1
        sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nOK')
      }
    })
    sock.on('error', () => {})
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
  try {
    const client = new SlapClient({ masterUrl: url })
    assert.is(await client.post('stoppedComputerPartition', [['computer_id', 'c'], ['computer_partition_id', 'p']]), 'OK')
    assert.is(await client.post('startedComputerPartition', [['computer_id', 'c'], ['computer_partition_id', 'p']]), 'OK')
    assert.is(answered, 2)
    assert.is(connections, 2, 'the second call went out again on a new connection')
  } finally {
    server.close()
  }
})

test.run()
