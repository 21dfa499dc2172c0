// Tests of the xml_marshaller codec and the instance XML helpers against the captured
// exchanges of the original (byte for byte), plus a property test and a fuzz test.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import {
  dumps,
  instanceXml,
  isPyDict,
  jsonInXmlParameters,
  loads,
  loadsGeneral,
  MarshalError,
  parseInstanceXml,
  parseJsonInXml,
  preencode,
  dumpsBytes,
  pyFloatRepr,
  PyFloat,
  PyMap,
  pyJsonDumps,
  SlapObject,
  Tuple,
  type LoadLimits,
  type PyDict,
  type PyValue,
} from '../src/slap-protocol.ts'
import { SlapError } from '../src/errors.ts'
import { FIXTURES, prng } from './helpers.ts'

const WIRE = join(FIXTURES, 'slap-wire')

interface EncodingCase {
  case: string
  python: string
  xml: string
}
const ENCODING = (JSON.parse(readFileSync(join(WIRE, 'xml-marshaller-encoding.json'), 'utf8')) as { cases: EncodingCase[] }).cases

interface ClientFixture {
  label: string
  request: { method: string; path: string; body: string | null; form: Record<string, string> | null; form_decoded: Record<string, unknown> | null }
  response: { status: number; body: string; body_decoded: unknown }
}
const CLIENT_DIR = join(WIRE, 'client')
const CLIENT = readdirSync(CLIENT_DIR)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => ({ file: f, fx: JSON.parse(readFileSync(join(CLIENT_DIR, f), 'utf8')) as ClientFixture }))

/** The fixtures' JSON view of a decoded value (README: `__tuple__`, `__object__`). */
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

/** The inverse for values without objects (form fields): JSON numbers are Python ints here. */
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

// --- the encoding fixture: each case built from native values -------------------------

const sr = () =>
  new SlapObject('SoftwareRelease', ['http://sr/software.cfg', 'COMP-1'], {
    _computer_guid: 'COMP-1',
    _software_instance_list: [],
    _software_release: 'http://sr/software.cfg',
  })
const cp = () =>
  new SlapObject('ComputerPartition', ['COMP-1', 'slappart0', null], {
    _computer_id: 'COMP-1',
    _connection_dict: {},
    _parameter_dict: { foo: 'bar', ip_list: [new Tuple(['slapuser0', '10.0.0.2'])] },
    _partition_id: 'slappart0',
    _request_dict: null,
    _requested_state: 'started',
    _software_release_document: sr(),
  })
const shared = ['x']
const NATIVE: Record<string, PyValue> = {
  str: 'hello',
  'empty str': '',
  'str needing escape': 'a&b<c>"d\'',
  'non-ASCII str': 'café 日本',
  bytes: new TextEncoder().encode('raw') as unknown as PyValue,
  int: 42,
  'negative int': -7,
  'int >= 1e24 (long)': 10n ** 24n,
  float: 1.5,
  'float (repr)': 0.1,
  True: true,
  False: false,
  None: null,
  tuple: new Tuple(['a', 1]),
  'empty tuple': new Tuple([]),
  list: ['a', 1, null],
  'empty list': [],
  'dict (keys sorted)': { b: '2', a: '1', c: { z: 'y' } },
  'empty dict': {},
  'dict with mixed key types (sorted by repr when not comparable)': new PyMap([
    ['a', 1],
    [2, 'b'],
  ]),
  set: new Set(['only']),
  'same list referenced twice': { x: shared, y: shared },
  'list of dicts (slave_instance_list)': [{ slave_reference: '_s1', slave_title: '_s1', slap_software_type: 'default', k: 'v' }],
  SoftwareRelease: sr(),
  SoftwareInstance: new SlapObject('SoftwareInstance', [], {
    _connection_dict: {},
    _parameter_dict: { a: '1' },
    slap_computer_id: 'COMP-1',
    slap_computer_partition_id: 'slappart0',
  }),
  ComputerPartition: cp(),
  Computer: new SlapObject('Computer', ['COMP-1'], {
    _computer_id: 'COMP-1',
    _computer_partition_list: [cp()],
    _software_release_list: [sr()],
  }),
}

test('encoding fixture: every case is covered by a native value', () => {
  assert.equal(ENCODING.map((c) => c.case).filter((c) => !(c in NATIVE)), [])
  assert.ok(ENCODING.length >= 27)
})

for (const c of ENCODING) {
  test(`encoding fixture: ${c.case}: dumps(native) is byte-identical, loads round-trips`, () => {
    assert.is(dumps(NATIVE[c.case]!), c.xml)
    const back = loads(c.xml)
    assert.is(dumps(back), c.xml)
  })
}

test('encoding fixture: decoded values have the documented JS types', () => {
  const byCase = (name: string) => loads(ENCODING.find((c) => c.case === name)!.xml)
  assert.is(byCase('str needing escape'), 'a&b<c>"d\'')
  assert.is(byCase('non-ASCII str'), 'café 日本')
  assert.is(byCase('int'), 42)
  assert.is(byCase('int >= 1e24 (long)'), 10n ** 24n)
  assert.is(byCase('float (repr)'), 0.1)
  assert.is(byCase('True'), true)
  assert.is(byCase('None'), null)
  assert.ok(byCase('tuple') instanceof Tuple)
  assert.ok(byCase('set') instanceof Set)
  const ref = byCase('same list referenced twice') as PyDict
  assert.ok(ref.x === ref.y, 'a <reference> decodes to the same array')
  const m = byCase('dict with mixed key types (sorted by repr when not comparable)')
  assert.ok(m instanceof PyMap)
  const computer = byCase('Computer') as SlapObject
  assert.is(computer.className, 'Computer')
  assert.equal(computer.initArgs, ['COMP-1'])
  assert.is(((computer.state._computer_partition_list as PyValue[])[0] as SlapObject).className, 'ComputerPartition')
})

// --- every marshalled document of the captured client exchanges ----------------------

for (const { file, fx } of CLIENT) {
  const decoded = fx.request.form_decoded ?? {}
  const fields = Object.keys(decoded).filter((k) => !(isPyDict(decoded[k] as PyValue) && '__undecodable__' in (decoded[k] as object)))
  if (fields.length > 0) {
    test(`client ${file}: form fields ${fields.join(', ')} encode byte-identically`, () => {
      for (const k of fields) {
        const raw = fx.request.form![k]!
        assert.equal(toJson(loads(raw)), decoded[k], `${k} decodes like the capture`)
        assert.is(dumps(fromJson(decoded[k])), raw, `${k}: dumps(native) equals the captured bytes`)
      }
    })
  }
  if (fx.response.body_decoded !== null) {
    test(`client ${file}: response body decodes and re-encodes byte-identically`, () => {
      const v = loads(fx.response.body)
      assert.equal(toJson(v), fx.response.body_decoded)
      assert.is(dumps(v), fx.response.body)
    })
  }
}

test('client 09: the truncated document sent by the capture is refused with MarshalError', () => {
  const fx = CLIENT.find((c) => c.file.startsWith('09-'))!.fx
  assert.throws(() => loads(fx.request.form!.xml!), (e: unknown) => e instanceof MarshalError && /end of document/.test((e as Error).message))
})

test('node run: every marshalled document in the recorded run round-trips byte for byte', () => {
  const lines = readFileSync(join(WIRE, 'node-run', 'node-run-3p-2i.jsonl'), 'utf8').trim().split('\n')
  let n = 0
  const check = (s: string) => {
    if (!s.startsWith('<marshal')) return
    n++
    assert.is(dumps(loads(s)), s)
  }
  for (const line of lines) {
    const rec = JSON.parse(line) as { request: { body?: string; query_string?: string }; response: { body?: string } }
    if (rec.response.body) check(rec.response.body)
    for (const [, v] of new URLSearchParams(rec.request.body ?? '')) check(v)
  }
  assert.ok(n >= 20, `found ${n} documents`)
})

// --- the pretty-printed slapos.xml of `slapos node format` -----------------------------

for (const dir of ['format-1-partitions', 'format-3-partitions', 'format-10-partitions']) {
  test(`computer definition ${dir}: loads, and dumps(pretty) is byte-identical`, () => {
    const pretty = readFileSync(join(WIRE, 'computer-definitions', dir, 'slapos.xml'), 'utf8')
    const v = loads(pretty)
    assert.is(dumps(v, { pretty: true }), pretty)
    const json = JSON.parse(readFileSync(join(WIRE, 'computer-definitions', dir, 'slapos.json'), 'utf8')) as unknown
    assert.equal(toJson(v), json)
    // The compact form of the same value decodes to the same thing.
    assert.equal(toJson(loads(dumps(v))), json)
  })
}

// --- rules of spec §3 one by one --------------------------------------------------------

test('strings: double escaping, CR as &#13;, astral characters as one reference', () => {
  assert.is(dumps('a\r\nb'), '<marshal><string>a&#13;\nb</string></marshal>')
  assert.is(dumps('😜'), '<marshal><string>&#128540;</string></marshal>')
  assert.is(loads('<marshal><string>a&#13;\nb</string></marshal>'), 'a\r\nb')
  // A literal CR in the document is a line break to an XML parser.
  assert.is(loads('<marshal><string>a\r\nb\rc</string></marshal>'), 'a\nb\nc')
  // Old single-escaped <unicode> values: &amp; decodes to & (accepted lossiness).
  assert.is(loads('<marshal><unicode>a&amp;b</unicode></marshal>'), 'a&b')
  assert.is(loads('<marshal><string>&amp;amp;lt;</string></marshal>'), '&lt;')
})

test('strings with characters not allowed in XML are refused', () => {
  for (const s of ['\u0000', 'a\u0001b', '\ud800', '\uffff']) {
    assert.throws(() => dumps(s), (e: unknown) => e instanceof MarshalError)
  }
})

test('numbers: int/long bound, floats as Python repr, PyFloat keeps integral floats', () => {
  assert.is(dumps(999999999999999983222783n), '<marshal><int>999999999999999983222783</int></marshal>')
  assert.is(dumps(-999999999999999983222784n), '<marshal><long>-999999999999999983222784</long></marshal>')
  assert.is(dumps(2 ** 60), '<marshal><int>1152921504606846976</int></marshal>')
  assert.is(dumps(new PyFloat(1)), '<marshal><float>1.0</float></marshal>')
  const reprs: Array<[number, string]> = [
    [1e16, '1e+16'],
    [1234567890123456, '1234567890123456.0'],
    [0.0001, '0.0001'],
    [0.00001, '1e-05'],
    [1.5e300, '1.5e+300'],
    [-2.5, '-2.5'],
    [123456789012345680000, '1.2345678901234568e+20'],
    [5e-324, '5e-324'],
    [NaN, 'nan'],
    [Infinity, 'inf'],
    [-Infinity, '-inf'],
    [-0, '-0.0'],
  ]
  for (const [x, r] of reprs) assert.is(pyFloatRepr(x), r, String(x))
  const f = loads('<marshal><float>1.0</float></marshal>')
  assert.ok(f instanceof PyFloat && f.value === 1)
  assert.is(dumps(f), '<marshal><float>1.0</float></marshal>')
  assert.ok(Number.isNaN(loads('<marshal><float>nan</float></marshal>') as number))
  assert.is(loads('<marshal><float>-inf</float></marshal>'), -Infinity)
  assert.is(loads('<marshal><int>9007199254740993</int></marshal>'), 9007199254740993n)
  assert.is(loads('<marshal><long>12</long></marshal>'), 12)
})

test('booleans: <bool> and 0.35.1-era <int>-style text', () => {
  assert.is(loads('<marshal><bool>1</bool></marshal>'), true)
  assert.is(loads('<marshal><bool>0</bool></marshal>'), false)
  assert.is(loads('<marshal><bool>2</bool></marshal>'), true)
})

test('ids: pre-order numbering, tuples without ids, object takes its id before init-args', () => {
  const v = new SlapObject('SoftwareRelease', [['x']], { _software_release: 'u' })
  assert.is(
    dumps([new Tuple([[]]), v]),
    '<marshal><list id="i2"><tuple><list id="i3"/></tuple><object id="i4" module="slapos.slap.slap" class="SoftwareRelease"><tuple><list id="i5"><string>x</string></list></tuple><dictionary id="i6"><string>_software_release</string><string>u</string></dictionary></object></list></marshal>',
  )
})

test('dictionary keys sort by code point (not UTF-16 units), "__proto__" is a plain key', () => {
  const d: PyDict = { b: 1, A: 2, _: 3, é: 4, '\ue000': 5, '😀': 6 }
  assert.is(
    dumps(d),
    '<marshal><dictionary id="i2"><string>A</string><int>2</int><string>_</string><int>3</int><string>b</string><int>1</int><string>&#233;</string><int>4</int><string>&#57344;</string><int>5</int><string>&#128512;</string><int>6</int></dictionary></marshal>',
  )
  const p = loads('<marshal><dictionary id="i2"><string>__proto__</string><string>x</string></dictionary></marshal>') as PyDict
  assert.is(Object.getPrototypeOf(p), Object.prototype)
  assert.is(p.__proto__ as unknown, 'x')
  assert.equal(Object.keys(p), ['__proto__'])
  assert.is(dumps(p), '<marshal><dictionary id="i2"><string>__proto__</string><string>x</string></dictionary></marshal>')
})

test('pretty-printed and namespaced documents are accepted; whitespace inside <string> is kept', () => {
  const xml = '<?xml version="1.0"?>\n<!-- a comment -->\n<marshal:marshal xmlns:marshal="http://www.erp5.org/namespaces/marshaller">\n  <marshal:list id="i2">\n    <marshal:string>  a </marshal:string>\n    <marshal:string><![CDATA[<b>&]]></marshal:string>\n  </marshal:list>\n</marshal:marshal>\n'
  assert.equal(loads(xml), ['  a ', '<b>&'])
  assert.is(loads('<marshal><string/></marshal>'), '')
})

test('objects outside the allow-list are refused both ways', () => {
  assert.throws(() => loads('<marshal><object id="i2" module="os" class="system"><tuple/><dictionary id="i3"/></object></marshal>'), /Refusing to unmarshall os\.system/)
  assert.throws(() => loads('<marshal><object id="i2" module="slapos.slap.slap" class="slap"><tuple/><dictionary id="i3"/></object></marshal>'), /Refusing to unmarshall/)
  assert.throws(() => dumps(new SlapObject('Evil' as 'Computer', [], {})), /Refusing to marshall/)
  assert.throws(() => dumps(new Date() as unknown as PyValue), /Refusing to marshall Date/)
  assert.throws(() => dumps({ a: undefined } as unknown as PyValue), /undefined/)
  assert.throws(() => loads('<marshal><code>x</code></marshal>'), /unknown element <code>/)
})

test('hostile documents: DOCTYPE, entities, depth, size, cycles, reference bombs', () => {
  const refused = (xml: string, re: RegExp, limits = {}) =>
    assert.throws(
      () => loads(xml, limits),
      (e: unknown) => e instanceof MarshalError && e instanceof SlapError && re.test((e as Error).message),
    )
  refused('<!DOCTYPE m [<!ENTITY a "aaaa">]><marshal><string>&a;</string></marshal>', /DOCTYPE/)
  refused('<marshal><string>&a;</string></marshal>', /unknown entity/)
  refused('<marshal><string>&#0;</string></marshal>', /not allowed/)
  refused('<marshal><string>&#x110000;</string></marshal>', /out of range/)
  refused('<marshal><string>a & b</string></marshal>', /&/)
  refused(`<marshal>${'<list id="i2">'.repeat(300)}${'</list>'.repeat(300)}</marshal>`, /deeper than 256/)
  refused(`<marshal>${'<tuple>'.repeat(100000)}`, /deeper than/)
  refused(`<marshal><string>${'x'.repeat(2000)}</string></marshal>`, /too large/, { maxLength: 1000 })
  refused('<marshal><list id="i2"><reference id="i2"/></list></marshal>', /cycles are refused/)
  refused('<marshal><reference id="i9"/></marshal>', /unknown id/)
  // Each level repeats the previous list ten times: 10**9 values once expanded.
  let bomb = '<marshal><list id="i1"><list id="i2">' + '<string>x</string>'.repeat(10) + '</list>'
  for (let i = 3; i < 12; i++) bomb += `<list id="i${i}">${`<reference id="i${i - 1}"/>`.repeat(10)}</list>`
  bomb += '</list></marshal>'
  refused(bomb, /expands to more than/)
  refused('<marshal><string>a</string><string>b</string></marshal>', /exactly one value/)
  refused('<marshal/>', /exactly one value/)
  refused('<other/>', /root element must be <marshal>/)
  refused('<marshal><int>1.5</int></marshal>', /<int> holds/)
  refused('<marshal><float>1,5</float></marshal>', /<float> holds/)
  refused('<marshal><dictionary id="i2"><string>a</string></dictionary></marshal>', /odd number/)
  refused('<marshal><dictionary id="i2"><list id="i3"/><string>a</string></dictionary></marshal>', /unhashable/)
  refused('<marshal><list id="i2">text</list></marshal>', /text inside/)
  refused('<marshal><string><int>1</int></string></marshal>', /inside <string>/)
  refused('<marshal><object id="i2" module="slapos.slap.slap" class="Computer"><tuple/><dictionary id="i3"/></object></marshal>', /init args/)
  refused('<marshal><string>x</string></marshal><marshal/>', /second root/)
  refused('<marshal><string>x</strin></marshal>', /closes/)
  refused('', /no root/)
})

test('dictionaries with non-string keys: Python key equality, many keys decode quickly', () => {
  const m = loads('<marshal><dictionary id="i2"><int>1</int><string>a</string><bool>1</bool><string>b</string><float>1.0</float><string>c</string><tuple><int>1</int></tuple><string>d</string><none/><string>e</string></dictionary></marshal>')
  assert.ok(m instanceof PyMap)
  assert.equal(
    m.entries.map(([k, v]) => [pyReprKey(k), v]),
    [
      ['1', 'c'],
      ['(1,)', 'd'],
      ['None', 'e'],
    ],
  )
  const n = 50000
  let xml = '<marshal><dictionary id="i2">'
  for (let i = 0; i < n; i++) xml += `<int>${i}</int><none/>`
  xml += '</dictionary></marshal>'
  const big = loads(xml)
  assert.ok(big instanceof PyMap && big.entries.length === n)
  assert.is(dumps(big), xml)
})

function pyReprKey(k: PyValue): string {
  return k instanceof Tuple ? `(${k.items.map(pyReprKey).join(', ')},)` : k === null ? 'None' : String(k)
}

// --- property test: random values round-trip ------------------------------------------

const ALPHABET = ['a', 'Z', '0', ' ', '&', '<', '>', '"', "'", ';', '#', '\n', '\r', '\t', 'é', '日', '😜', '\ue000', ']]>', '&amp;', '&lt;']

function randomValue(r: () => number, depth: number, pool: PyValue[]): PyValue {
  const pick = Math.floor(r() * (depth > 3 ? 8 : 14))
  const str = () => Array.from({ length: Math.floor(r() * 8) }, () => ALPHABET[Math.floor(r() * ALPHABET.length)]).join('')
  switch (pick) {
    case 0:
    case 1:
      return str()
    case 2:
      return Math.floor((r() - 0.5) * 2 ** (r() * 60))
    case 3:
      return (r() - 0.5) * 10 ** Math.floor(r() * 40 - 20)
    case 4:
      return r() < 0.5
    case 5:
      return null
    case 6:
      return BigInt(Math.floor(r() * 1e6)) * 10n ** BigInt(Math.floor(r() * 30))
    case 7:
      return new PyFloat(Math.floor((r() - 0.5) * 1000))
    case 8:
      return new Tuple(Array.from({ length: Math.floor(r() * 4) }, () => randomValue(r, depth + 1, pool)))
    case 9: {
      const l = Array.from({ length: Math.floor(r() * 4) }, () => randomValue(r, depth + 1, pool))
      pool.push(l)
      return l
    }
    case 10: {
      const d: PyDict = {}
      for (let i = Math.floor(r() * 5); i > 0; i--) d[str()] = randomValue(r, depth + 1, pool)
      pool.push(d)
      return d
    }
    case 11:
      return new Set(Array.from({ length: Math.floor(r() * 3) }, () => str()))
    case 12: {
      // A container already emitted elsewhere in the document: becomes a <reference>.
      const p = pool.length > 0 && r() < 0.7 ? pool[Math.floor(r() * pool.length)]! : []
      return p
    }
    default: {
      const classes = ['Computer', 'ComputerPartition', 'SoftwareRelease', 'SoftwareInstance'] as const
      const c = classes[Math.floor(r() * 4)]!
      const args = c === 'Computer' ? [str()] : c === 'SoftwareInstance' ? [] : [str(), str()]
      const state: PyDict = {}
      for (let i = Math.floor(r() * 4); i > 0; i--) state[`_${str()}`] = randomValue(r, depth + 1, pool)
      return new SlapObject(c, args, state)
    }
  }
}

/** Structural equality after the documented normalisations (small bigints come back as numbers). */
function same(a: PyValue, b: PyValue): boolean {
  if (typeof a === 'bigint' && typeof b === 'number') return a === BigInt(b)
  if (typeof a === 'number' && typeof b === 'bigint') return BigInt(a) === b
  if (typeof a === 'number' && typeof b === 'number') return Object.is(a, b) || a === b
  if (a instanceof PyFloat && b instanceof PyFloat) return Object.is(a.value, b.value)
  if (a instanceof Tuple && b instanceof Tuple) return a.items.length === b.items.length && a.items.every((x, i) => same(x, b.items[i]!))
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]!))
  if (a instanceof Set && b instanceof Set) return a.size === b.size && [...a].every((x) => b.has(x))
  if (a instanceof SlapObject && b instanceof SlapObject) return a.className === b.className && same(a.initArgs, b.initArgs) && same(a.state, b.state)
  if (isPyDict(a) && isPyDict(b)) {
    const ka = Object.keys(a).sort()
    const kb = Object.keys(b).sort()
    return same(ka, kb) && ka.every((k) => same(a[k]!, b[k]!))
  }
  return a === b
}

test('property: 3000 random values round-trip (compact and pretty), seeded', () => {
  const r = prng(20240601)
  for (let i = 0; i < 3000; i++) {
    const v = randomValue(r, 0, [])
    const xml = dumps(v)
    const back = loads(xml)
    if (!same(v, back)) assert.unreachable(`value ${i} did not round-trip: ${xml}`)
    assert.is(dumps(back), xml, `value ${i}: re-encoding is byte-identical`)
    const pretty = dumps(v, { pretty: true })
    assert.is(dumps(loads(pretty)), xml, `value ${i}: pretty form decodes to the same value`)
  }
})

// --- the compact decoder against the general one ----------------------------------------

/** Everything about a decoded value: types, values, and which containers are the same object. */
function typed(v: PyValue, seen = new Map<object, number>()): string {
  if (typeof v === 'string') return `s${JSON.stringify(v)}`
  if (typeof v === 'number') return `n${Object.is(v, -0) ? '-0' : String(v)}`
  if (typeof v === 'bigint') return `b${v}`
  if (typeof v === 'boolean') return `B${v}`
  if (v === null) return 'N'
  if (v instanceof PyFloat) return `F${Object.is(v.value, -0) ? '-0' : String(v.value)}`
  if (seen.has(v)) return `@${seen.get(v)}`
  seen.set(v, seen.size)
  if (v instanceof Tuple) return `T(${v.items.map((x) => typed(x, seen)).join(',')})`
  if (Array.isArray(v)) return `L[${v.map((x) => typed(x, seen)).join(',')}]`
  if (v instanceof Set) return `S{${[...v].map((x) => typed(x, seen)).join(',')}}`
  if (v instanceof PyMap) return `M{${v.entries.map(([k, x]) => `${typed(k, seen)}:${typed(x, seen)}`).join(',')}}`
  if (v instanceof SlapObject) return `O<${v.className}>(${typed(v.initArgs, seen)};${typed(v.state, seen)})`
  const d = v as PyDict
  return `D{${Object.keys(d).map((k) => `${JSON.stringify(k)}:${typed(d[k]!, seen)}`).join(',')}}`
}

function outcome(decode: (xml: string, limits?: LoadLimits) => PyValue, xml: string, limits?: LoadLimits): string {
  try {
    return typed(decode(xml, limits))
  } catch (e) {
    return `error ${e instanceof MarshalError ? 'MarshalError' : String(e)}: ${(e as Error).message}`
  }
}

test('compact decoder: every recorded document, and odd or broken ones, decode as the general decoder decodes them', () => {
  const docs: string[] = [...ENCODING.map((c) => c.xml)]
  for (const c of CLIENT) {
    if (c.fx.response.body.startsWith('<marshal')) docs.push(c.fx.response.body)
    for (const v of Object.values(c.fx.request.form ?? {})) if (typeof v === 'string' && v.startsWith('<marshal')) docs.push(v)
  }
  for (const dir of ['format-1-partitions', 'format-10-partitions']) docs.push(readFileSync(join(WIRE, 'computer-definitions', dir, 'slapos.xml'), 'utf8'))
  const odd = [
    '<?xml version="1.0"?>\n<marshal><int>1</int></marshal>\n',
    '\ufeff<marshal><int>1</int></marshal>',
    '<marshal><list id="i2"><string>x</string><reference id="i2"/></list></marshal>',
    '<marshal><list id="i2"><string>x</string></list><reference id="i2"/></marshal>',
    '<marshal><tuple id="i5"><int>1</int></tuple></marshal>',
    '<marshal><list id="i2"><tuple id="i5"><int>1</int></tuple><reference id="i5"/></list></marshal>',
    '<marshal><string>&amp;amp;lt;&#233;&#13;</string></marshal>',
    '<marshal><string>a\r\nb</string></marshal>',
    '<marshal><string><![CDATA[<x>]]></string></marshal>',
    '<marshal><string>a<!-- c -->b</string></marshal>',
    '<marshal><string id="i1">a</string></marshal>',
    '<marshal><string/></marshal>',
    '<marshal><none/></marshal>',
    '<marshal><none>x</none></marshal>',
    '<marshal><int>x</int></marshal>',
    '<marshal><int/></marshal>',
    '<marshal><dictionary id="i2"><string>a</string></dictionary></marshal>',
    '<marshal><dictionary id="i2"><int>1</int><string>a</string><float>1.0</float><string>b</string></dictionary></marshal>',
    '<marshal><object id="i2" module="os" class="system"><tuple/><dictionary id="i3"/></object></marshal>',
    '<marshal><object id="i2" class="Computer" module="slapos.slap.slap"><tuple><string>c</string></tuple><dictionary id="i3"/></object></marshal>',
    '<marshal><object id="i2" module="slapos.slap.slap" class="Computer"><tuple/><dictionary id="i3"/></object></marshal>',
    '<marshal><set id="i2"><int>1</int><int>1</int></set></marshal>',
    '<marshal><set id="i2"><list id="i3"/></set></marshal>',
    '<marshal><float>1.0</float></marshal>',
    '<marshal><long>123456789012345678901234567890</long></marshal>',
    '<marshal><bool>1</bool></marshal>',
    '<marshal><unicode>x</unicode></marshal>',
    '<marshal><list><int>1</int></list></marshal>',
    '<marshal><listing/></marshal>',
    '<marshal><string>x</string></marshal><x/>',
    '<marshal><string>x</string>',
    '<marshal> <int>1</int></marshal>',
    '<marshal><m:int xmlns:m="x">1</m:int></marshal>',
    `<marshal>${'<list id="i9">'.repeat(300)}${'</list>'.repeat(300)}</marshal>`,
  ]
  for (const xml of [...docs, ...odd]) assert.is(outcome(loads, xml), outcome(loadsGeneral, xml), JSON.stringify(xml.slice(0, 200)))
  // limits give the same refusals
  const bomb = '<marshal><list id="i2"><list id="i3"><int>1</int><int>2</int></list><reference id="i3"/><reference id="i3"/></list></marshal>'
  for (const limits of [{ maxExpanded: 4 }, { maxExpanded: 5 }, { maxExpanded: 9 }, { maxDepth: 2 }, { maxDepth: 3 }, { maxLength: 20 }]) {
    assert.is(outcome(loads, bomb, limits), outcome(loadsGeneral, bomb, limits), JSON.stringify(limits))
  }
  assert.ok(docs.length >= 40, `${docs.length} recorded documents`)
})

test('compact decoder: 12,000 mutated documents decode or fail exactly as with the general decoder', () => {
  const seeds = [...ENCODING.map((c) => c.xml), ...CLIENT.map((c) => c.fx.response.body).filter((b) => b.startsWith('<marshal'))]
  const snippets = ['<', '>', '&', '&#0;', '&#x1F600;', '&amp;', '<![CDATA[', ']]>', '<!--', '</list>', '<list id="i2">', '<reference id="i2"/>', '<reference id="i3"/>', '<reference id="i99"/>', '<tuple>', '</tuple>', '<none/>', '<string/>', '"', ' ', '\r', 'id=', '<int>', '</int>', '<float>x</float>', '<dictionary id="i7">', '</dictionary>']
  const r = prng(11)
  let decoded = 0
  for (let i = 0; i < 12000; i++) {
    let s = seeds[Math.floor(r() * seeds.length)]!
    for (let m = Math.floor(r() * 3); m > 0; m--) {
      const at = Math.floor(r() * (s.length + 1))
      const op = Math.floor(r() * 3)
      if (op === 0) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(r() * 12))
      else if (op === 1) s = s.slice(0, at) + snippets[Math.floor(r() * snippets.length)] + s.slice(at)
      else s = s.slice(0, at) + String.fromCharCode(32 + Math.floor(r() * 95)) + s.slice(at + 1)
    }
    const want = outcome(loadsGeneral, s)
    if (!want.startsWith('error')) decoded++
    if (outcome(loads, s) !== want) assert.unreachable(`input ${i} differs: ${JSON.stringify(s.slice(0, 300))}\n  compact: ${outcome(loads, s)}\n  general: ${want}`)
  }
  assert.ok(decoded > 2000, `enough mutations still decode (${decoded})`)
})

// --- fuzz test: mutated fixture documents only ever give MarshalError -----------------

test('fuzz: 12,000 mutated documents give a value or MarshalError, nothing else', () => {
  const seeds = [...ENCODING.map((c) => c.xml), ...CLIENT.map((c) => c.fx.response.body).filter((b) => b.startsWith('<marshal'))]
  const snippets = ['<', '>', '&', '&#0;', '&#x1F600;', '&amp;', '<!DOCTYPE x>', '<![CDATA[', ']]>', '<?x?>', '<!--', '</list>', '<list id="i2">', '<reference id="i2"/>', '<reference id="i99"/>', '<object id="i9" module="os" class="system">', '"', "'", '\u0000', '\ud800', 'id=', '<int>', '<float>x</float>', '\r']
  const r = prng(7)
  let ok = 0
  let refused = 0
  let slowest = 0
  for (let i = 0; i < 12000; i++) {
    let s = seeds[Math.floor(r() * seeds.length)]!
    for (let m = 1 + Math.floor(r() * 4); m > 0; m--) {
      const at = Math.floor(r() * (s.length + 1))
      const op = Math.floor(r() * 5)
      if (op === 0) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(r() * 20))
      else if (op === 1) s = s.slice(0, at) + snippets[Math.floor(r() * snippets.length)] + s.slice(at)
      else if (op === 2) s = s.slice(0, at) + String.fromCharCode(Math.floor(r() * 128)) + s.slice(at + 1)
      else if (op === 3) s = s.slice(0, at)
      else s = s.slice(0, at) + s.slice(Math.floor(r() * s.length))
    }
    const t0 = performance.now()
    try {
      const v = loads(s)
      dumps(v) // whatever decodes must also encode
      ok++
    } catch (e) {
      if (!(e instanceof MarshalError)) assert.unreachable(`input ${i} raised ${String(e)}: ${JSON.stringify(s.slice(0, 300))}`)
      refused++
    }
    slowest = Math.max(slowest, performance.now() - t0)
  }
  assert.is(ok + refused, 12000)
  assert.ok(refused > 6000, `most mutations are refused (${refused})`)
  // A hang guard, not a speed measure: no single input may take seconds.
  assert.ok(slowest < 2000, `slowest input took ${slowest} ms`)
})

// --- instance XML (spec §6) ---------------------------------------------------------------

test('instanceXml: dict2xml layout, sorting, str() of values, escaping', () => {
  assert.is(instanceXml({ port: '8080', domain: 'example.org' }), "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  <parameter id=\"domain\">example.org</parameter>\n  <parameter id=\"port\">8080</parameter>\n</instance>\n")
  assert.is(instanceXml({}), "<?xml version='1.0' encoding='utf-8'?>\n<instance/>\n")
  assert.is(instanceXml({ a: 1, b: true, c: null, d: [1, '2'], e: '', f: 'x&<>é"', 'g"&': 'v' }),
    "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  <parameter id=\"a\">1</parameter>\n  <parameter id=\"b\">True</parameter>\n  <parameter id=\"c\">None</parameter>\n  <parameter id=\"d\">[1, '2']</parameter>\n  <parameter id=\"e\"></parameter>\n  <parameter id=\"f\">x&amp;&lt;&gt;é\"</parameter>\n  <parameter id=\"g&quot;&amp;\">v</parameter>\n</instance>\n")
})

test('instanceXml: byte-identical to the connection_xml the original proxy sent (client 29)', () => {
  const fx = CLIENT.find((c) => c.file.startsWith('29-'))!.fx
  const si = loads(fx.response.body) as SlapObject
  const conn = si.state._connection_dict as PyDict
  assert.is(instanceXml(conn), si.state.connection_xml)
  assert.equal({ ...parseInstanceXml(si.state.connection_xml as string) }, conn)
})

test('instanceXml: every instance XML stored in the original proxy database re-encodes byte for byte', () => {
  const sql = readFileSync(join(FIXTURES, 'proxy-db', 'database_dump_version_current.sql'), 'utf8')
  const docs = [...sql.matchAll(/'(<\?xml version=''1\.0''(?:[^']|'')*)'/g)].map((m) => m[1]!.replace(/''/g, "'"))
  assert.ok(docs.length > 0)
  let compared = 0
  for (const doc of docs) {
    const params = parseInstanceXml(doc)
    if (Object.values(params).some((v) => v === null)) continue // empty text cannot tell '' from None
    const ids = [...doc.matchAll(/<parameter id="([^"]*)"/g)].map((m) => m[1]!)
    // Written unsorted or without the final newline by older versions.
    if (ids.join('\n') !== [...ids].sort().join('\n') || !doc.endsWith('\n')) continue
    assert.is(instanceXml(params), doc)
    compared++
  }
  assert.ok(compared > 0)
})

test('parseInstanceXml: xml2dict rules', () => {
  assert.equal({ ...parseInstanceXml('') }, {})
  assert.equal({ ...parseInstanceXml(null) }, {})
  const doc = "<?xml version='1.0' encoding='utf-8'?>\n<instance><parameter id=\"a\">1</parameter><parameter id=\"e\"></parameter><parameter id=\"a\">2</parameter><other id=\"x\">y</other><x><parameter id=\"deep\">no</parameter></x><parameter id=\"t\">a&amp;b<i/>tail</parameter></instance>"
  assert.equal({ ...parseInstanceXml(doc) }, { a: '1 2', e: null, t: 'a&b' })
  assert.throws(() => parseInstanceXml('<!DOCTYPE x><instance/>'), (e: unknown) => e instanceof MarshalError)
  assert.throws(() => parseInstanceXml('<instance>'), (e: unknown) => e instanceof MarshalError)
})

test('json-in-xml: wrapping like json.dumps(indent=2), unwrapping only a lone "_"', () => {
  const p = jsonInXmlParameters({ foo: 'bé', n: [1, { a: null }] })
  assert.is(p._, '{\n  "foo": "b\\u00e9",\n  "n": [\n    1,\n    {\n      "a": null\n    }\n  ]\n}')
  assert.equal(parseJsonInXml(p), { foo: 'bé', n: [1, { a: null }] })
  assert.is(parseJsonInXml({ _: 'not json' }), undefined)
  assert.is(parseJsonInXml({ _: '{}', other: 'x' }), undefined)
  assert.is(pyJsonDumps({ a: [1, 'x,y: z'] }), '{"a": [1, "x,y: z"]}')
})

test('preencode: a value placed later is written as dumps writes it, its ids following the ones before it', () => {
  // a container written twice inside one fragment becomes a <reference> (across fragments it
  // would be written twice: the proxy never shares containers between partitions)
  const part = (i: number, shared = { inner: [1, 2] }): PyValue =>
    new SlapObject('ComputerPartition', ['c', `p${i}`, null], {
      _parameter_dict: { a: `<${i}> & \r`, 'cl\u00e9': '\u{1f600}', list: [shared, shared, new Tuple([1, 'x'])], empty: {}, none: null },
      _f: new PyFloat(1),
    })
  const plain = { before: [{}], parts: [part(0), part(1), part(2)], after: { x: [] } }
  const placed = { before: [{}], parts: [preencode(part(0)), preencode(part(1)), preencode(part(2))], after: { x: [] } }
  const want = dumps(plain)
  assert.ok(want.includes('<reference id="i'), 'the case has a reference inside a fragment')
  assert.is(dumps(placed), want)
  // fragments nest, and a fragment alone is the value alone
  assert.is(dumps(preencode({ parts: [preencode(part(0))] })), dumps({ parts: [part(0)] }))
  assert.is(dumps(preencode('x')), dumps('x'))
  assert.throws(() => dumps(preencode(part(0)), { pretty: true }), /indented/)
  // errors still say where, as before
  assert.throws(() => preencode({ a: [1, { b: '\u0001' }] }), /value\["a"\]\[1\]\["b"\] holds a control character/)
  assert.throws(() => dumps(new SlapObject('Computer', ['c'], { x: [undefined as unknown as PyValue] })), /value\.state\["x"\]\[0\]|undefined/)
})

test('dumpsBytes: the UTF-8 of dumps, with fragments kept from an earlier placement at the same place or written again elsewhere', () => {
  const part = (i: number): PyValue => new SlapObject('ComputerPartition', ['c', `p${i}`, null], { _parameter_dict: { a: `<${i}> \u00e9`, l: [[i], { k: new Tuple([i]) }] } })
  const fragments = [preencode(part(0)), preencode(part(1)), preencode(part(2))]
  const doc = (before: PyValue[], list: PyValue[]) => ({ before, parts: list, after: { x: [] } })
  const cases: [PyValue[], number[]][] = [
    [[{}], [0, 1, 2]],
    [[{}], [0, 1, 2]], // the same places again: every fragment copied from the last time
    [[{}, []], [0, 1, 2]], // one more id before them: all written again
    [[{}, []], [0, 2]], // fragment 2 moves
    [[{}], [0, 1, 2]],
  ]
  for (const [before, order] of cases) {
    const want = dumps(doc(before, order.map(part)))
    assert.is(dumpsBytes(doc(before, order.map((i) => fragments[i]!))).toString('utf8'), want)
    // and dumps() after dumpsBytes() (and the other way) still agree
    assert.is(dumps(doc(before, order.map((i) => fragments[i]!))), want)
  }
})

test.run()
