// The xml_marshaller codec of the SLAP wire (what slapos.core's slapos.util.dumps/loads
// produce and accept), plus the "instance XML" parameter documents. Pure: no I/O.
// Used by slap-client.ts, the proxy, format (slapos.xml) and the node.
import { SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'

/** A Python tuple: never numbered nor referenced, emitted as `<tuple>`. */
export class Tuple {
  constructor(readonly items: PyValue[]) {}
}

/** A float that must stay `<float>` even when integral (Python `1.0`). */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** A Python dict whose keys are not all strings (`{'a': 1, 2: 'b'}`); rare on the wire. */
export class PyMap {
  constructor(readonly entries: Array<[PyValue, PyValue]>) {}
}

export type SlapClassName = 'Computer' | 'ComputerPartition' | 'SoftwareRelease' | 'SoftwareInstance'
export const SLAP_MODULE = 'slapos.slap.slap'
/** The only classes either direction accepts (slapos.util allow-list, spec §3.6). */
export const SLAP_CLASSES: readonly SlapClassName[] = ['Computer', 'ComputerPartition', 'SoftwareRelease', 'SoftwareInstance']

/** An instance of one of the four slapos.slap.slap classes: `__getinitargs__()` + `__dict__`. */
export class SlapObject {
  constructor(
    readonly className: SlapClassName,
    public initArgs: PyValue[],
    public state: PyDict,
  ) {}
}

/** A Python dict with string keys, as a plain object. */
export type PyDict = { [key: string]: PyValue }
export type PyValue =
  | string
  | number
  | bigint
  | boolean
  | null
  | PyFloat
  | Tuple
  | PyValue[]
  | PyDict
  | Set<PyValue>
  | PyMap
  | SlapObject
  | Preencoded

/** Anything the marshaller refuses to write or the unmarshaller refuses to read. */
export class MarshalError extends SlapError {
  constructor(message: string) {
    super(message, { code: 'E_MARSHAL', exitCode: EXIT.FAIL })
  }
}

export interface LoadLimits {
  /** longest document accepted, in characters (default 64 Mi) */
  maxLength?: number
  /** deepest element nesting accepted (default 256) */
  maxDepth?: number
  /** most values after following `<reference>`s (default 5,000,000): stops reference bombs */
  maxExpanded?: number
}

/**
 * Marshals like xml_marshaller + slapos.util.dumps: compact by default (what travels on the
 * wire), or indented like the slapos.xml written by `slapos node format` (`pretty`).
 * JS integers become `<int>` (`<long>` from 1e24), other numbers `<float>`; a Uint8Array is
 * written as a UTF-8 `<string>` like Python bytes.
 */
export function dumps(v: PyValue, opts: { pretty?: boolean } = {}): string {
  const w = new Writer(opts.pretty === true)
  w.tag('<marshal>')
  w.nest(v)
  w.tag('</marshal>')
  return w.parts.join('')
}

/**
 * The compact dumps() as UTF-8 bytes. A Preencoded placed where it was placed the last time
 * is copied from the bytes kept from then: an answer made of kept fragments costs copies,
 * not encoding.
 */
export function dumpsBytes(v: PyValue): Buffer {
  return Buffer.concat(dumpsSegments(v))
}

/**
 * dumpsBytes() as the list of its parts, not joined: a kept fragment is one of them, shared,
 * so that an answer can be sent without copying it into a new buffer.
 */
function dumpsSegments(v: PyValue): Buffer[] {
  const w = new Writer(false)
  w.segments = []
  w.tag('<marshal>')
  w.nest(v)
  w.tag('</marshal>')
  w.flush()
  return w.segments
}

/**
 * A value written ahead of time by `preencode()`, placed as is wherever it appears in a later
 * compact `dumps()`, its container ids renumbered to follow the ones written before it. The
 * proxy keeps each partition of its largest answer this way and rewrites only the partitions
 * that changed. Placed twice, it is written twice (never as a `<reference>`).
 */
export class Preencoded {
  /**
   * The id it was last placed after, and what it was then, as text (dumps) or as UTF-8
   * (dumpsBytes; one of the two is kept): placed there again, it is copied as one part.
   */
  placedAfter = -1
  placed: string | Buffer = ''

  constructor(
    readonly chunks: readonly string[],
    /** the fragment's own ids (1, 2, ...) between chunks: chunks.length = ids.length + 1 */
    readonly ids: readonly number[],
    /** how many ids the fragment uses */
    readonly count: number,
  ) {}
}

/** Encodes a value for later placement in `dumps()` (see Preencoded). */
export function preencode(v: PyValue): Preencoded {
  const w = new Writer(false, true)
  w.value(v)
  const chunks: string[] = []
  const ids: number[] = []
  let from = 0
  for (const slot of w.idSlots!) {
    chunks.push(w.parts.slice(from, slot[0]).join(''))
    ids.push(slot[1])
    from = slot[0] + 1
  }
  chunks.push(w.parts.slice(from).join(''))
  return new Preencoded(chunks, ids, w.count)
}

/** Unmarshals a document; throws MarshalError on anything malformed or not allowed. */
export function loads(xml: string, limits: LoadLimits = {}): PyValue {
  if (typeof xml !== 'string') throw new MarshalError('marshalled document must be a string')
  // xml_marshaller's own compact output, read directly; anything else (indentation, comments,
  // CDATA, other attribute spellings, every error) goes through the general scanner below
  const fast = loadsCompact(xml, limits)
  if (fast !== NOT_COMPACT) return fast
  return loadsGeneral(xml, limits)
}

/** The general decoder: any well-formed document, every error with its message. */
export function loadsGeneral(xml: string, limits: LoadLimits = {}): PyValue {
  if (typeof xml !== 'string') throw new MarshalError('marshalled document must be a string')
  const d = new Decoder(limits)
  scanXml(xml, d, limits)
  return d.result()
}

/** True for a plain object used as a Python dict (not a class instance, not an array). */
export function isPyDict(v: unknown): v is PyDict {
  if (typeof v !== 'object' || v === null) return false
  const proto = Object.getPrototypeOf(v) as unknown
  return proto === Object.prototype || proto === null
}

/** Python `repr()` of a value (dict-key sorting fallback; also handy in messages). */
export function pyRepr(v: PyValue): string {
  if (typeof v === 'string') return reprString(v)
  if (typeof v === 'number') return Number.isInteger(v) ? intText(v) : pyFloatRepr(v)
  if (typeof v === 'bigint') return v.toString()
  if (typeof v === 'boolean') return v ? 'True' : 'False'
  if (v === null) return 'None'
  if (v instanceof PyFloat) return pyFloatRepr(v.value)
  if (v instanceof Tuple) return v.items.length === 1 ? `(${pyRepr(v.items[0]!)},)` : `(${v.items.map(pyRepr).join(', ')})`
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`
  if (v instanceof Set) return v.size === 0 ? 'set()' : `{${[...v].map(pyRepr).join(', ')}}`
  if (v instanceof PyMap) return `{${v.entries.map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(', ')}}`
  if (v instanceof SlapObject) return `<${SLAP_MODULE}.${v.className} object>`
  if (v instanceof Preencoded) return '<preencoded>'
  return `{${Object.keys(v).map((k) => `${reprString(k)}: ${pyRepr(v[k]!)}`).join(', ')}}`
}

/** Python `str(float)`: shortest round-trip digits, exponent when < 1e-4 or >= 1e16. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan'
  if (x === Infinity) return 'inf'
  if (x === -Infinity) return '-inf'
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0'
  const sign = x < 0 ? '-' : ''
  const [mant, expText] = Math.abs(x).toExponential().split('e') as [string, string]
  const digits = mant.replace('.', '')
  const exp = Number(expText)
  const decpt = exp + 1 // the value is 0.<digits> * 10**decpt
  if (decpt <= -4 || decpt > 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits
    const e = Math.abs(exp).toString().padStart(2, '0')
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`
  }
  if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`
  if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`
  return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`
}

/** Compares strings by Unicode code point, like Python (JS `<` compares UTF-16 units). */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x === y) continue
    // Surrogates (astral characters) must sort above U+E000..U+FFFF.
    if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000
    if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000
    return x - y
  }
  return a.length - b.length
}

// --- instance XML (spec §6) ---------------------------------------------------------------

/** Value of an instance parameter as slapos.util.xml2dict returns it (None for empty text). */
export type InstanceParameters = { [key: string]: string | null }

/**
 * The instance XML document of slapos.util.dict2xml: sorted `<parameter id>` elements,
 * values converted with Python `str()`, two-space indentation, UTF-8 text kept literal.
 */
export function instanceXml(params: { [key: string]: PyValue | undefined }): string {
  const keys = sortedKeys(params).filter((k) => params[k] !== undefined)
  const head = "<?xml version='1.0' encoding='utf-8'?>\n"
  if (keys.length === 0) return `${head}<instance/>\n`
  const lines = keys.map((k) => `  <parameter id="${escapeAttr(k)}">${escapeText(pyStr(params[k]!))}</parameter>\n`)
  return `${head}<instance>\n${lines.join('')}</instance>\n`
}

/**
 * Parses instance XML like slapos.util.xml2dict: each direct `<parameter>` child of the root,
 * key = `id`, value = its text (null when empty); a repeated key gets its values joined with
 * a space. Empty input gives `{}`. Throws MarshalError on malformed XML.
 */
export function parseInstanceXml(xml: string | null | undefined, limits: LoadLimits = {}): InstanceParameters {
  const out: InstanceParameters = {}
  if (xml === null || xml === undefined || xml.trim() === '') return out
  let depth = 0
  let current: { key: string; text: string; sawChild: boolean } | null = null
  const handler: XmlHandler = {
      start(name, attrs, selfClosing) {
        depth++
        if (depth === 2 && name === 'parameter' && attrs.id !== undefined) {
          current = { key: attrs.id, text: '', sawChild: false }
        } else if (current !== null) {
          current.sawChild = true
        }
        if (selfClosing) handler.end(name)
      },
      end() {
        if (depth === 2 && current !== null) {
          const text = current.text === '' ? null : current.text
          // Like xml2dict: a repeated key appends ' ' + text to a non-empty earlier value
          // (where Python would fail on an empty later value, we keep the earlier one).
          const before = Object.hasOwn(out, current.key) ? out[current.key]! : null
          setKey(out, current.key, before === null ? text : text === null ? before : `${before} ${text}`)
          current = null
        }
        depth--
      },
      text(s) {
        // lxml `.text` is the text before the first child element.
        if (current !== null && depth === 2 && !current.sawChild) current.text += s
      },
  }
  scanXml(xml, handler, limits)
  return out
}

/** `{'_': json}` as `slapos request` sends parameters to a json-in-xml software release. */
export function jsonInXmlParameters(obj: unknown): PyDict {
  return { _: pyJsonDumps(obj, 2) }
}

/**
 * The object behind the json-in-xml `_` parameter when it is the only one and parses as
 * JSON; undefined otherwise (the caller then shows the plain parameters).
 */
export function parseJsonInXml(params: { [key: string]: unknown }): unknown {
  const keys = Object.keys(params)
  if (keys.length !== 1 || keys[0] !== '_' || typeof params._ !== 'string') return undefined
  try {
    return JSON.parse(params._) as unknown
  } catch {
    return undefined
  }
}

/** Python `json.dumps(obj, indent=indent)` text (ASCII only, `\uXXXX` escapes). */
export function pyJsonDumps(obj: unknown, indent?: number): string {
  const text = JSON.stringify(obj, null, indent) ?? 'null'
  // Python's default ensure_ascii=True escapes every non-ASCII character.
  const ascii = text.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
  return indent === undefined ? ascii.replace(/("(?:[^"\\]|\\.)*")|([,:])/g, (m, str: string | undefined, p: string | undefined) => str ?? (p === ',' ? ', ' : ': ')) : ascii
}

// --- internal: encoder ----------------------------------------------------------------

// |v| < 1e24 compared as a double, like xml_marshaller's int/long split.
const LONG_BOUND = 999999999999999983222784n
const INVALID_XML_CHAR = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u
/** anything but tab, newline and printable ASCII other than & < > */
// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /[^\t\n\x20-\x25\x27-\x3b\x3d\x3f-\x7e]/

type LeafTag = 'string' | 'int' | 'long' | 'float' | 'bool'
const LEAF_OPEN: Record<LeafTag, string> = { string: '<string>', int: '<int>', long: '<long>', float: '<float>', bool: '<bool>' }
const LEAF_CLOSE: Record<LeafTag, string> = { string: '</string>', int: '</int>', long: '</long>', float: '</float>', bool: '</bool>' }

/** Path segments of `Writer.where()` besides list indexes and dict keys. */
const AT_INIT_ARGS = { segment: '.initArgs' }
const AT_STATE = { segment: '.state' }
type PathSegment = PyValue | typeof AT_INIT_ARGS

// Writes into an array of small strings joined once at the end: constant tags and the
// values' own texts, no per-element template strings (a 200 KB answer used to allocate 5 MB).
class Writer {
  readonly parts: string[] = []
  private depth = 0
  private counter: number
  private readonly ids = new Map<object, number>()
  private readonly open = new Set<object>()
  /** where the value being written sits (keys and indexes from the root), for messages only */
  private readonly path: PathSegment[] = []
  /** preencode(): ids are left as empty parts, renumbered when the fragment is placed */
  readonly idSlots: Array<[part: number, id: number]> | undefined
  /** dumpsBytes(): what was written so far, as bytes (parts are moved here by flush()) */
  segments: Buffer[] | undefined

  /** dumpsBytes(): the parts written since the last flush, encoded and moved to segments */
  flush(): void {
    if (this.parts.length === 0) return
    this.segments!.push(Buffer.from(this.parts.join(''), 'utf8'))
    this.parts.length = 0
  }

  constructor(
    readonly pretty: boolean,
    fragment = false,
  ) {
    this.counter = fragment ? 0 : 1
    this.idSlots = fragment ? [] : undefined
  }

  /** the root value, one level in (inside `<marshal>`) */
  nest(v: PyValue): void {
    this.depth++
    this.value(v)
    this.depth--
  }

  get count(): number {
    return this.counter
  }

  /** `value.state["_parameter_dict"][2]`: computed only when a message needs it */
  where(): string {
    let s = 'value'
    for (const seg of this.path) {
      if (seg === AT_INIT_ARGS || seg === AT_STATE) s += seg.segment
      else s += `[${typeof seg === 'string' ? JSON.stringify(seg) : pyRepr(seg as PyValue)}]`
    }
    return s
  }

  private indent(): void {
    if (this.pretty) this.parts.push('  '.repeat(this.depth))
  }

  private newline(): void {
    if (this.pretty) this.parts.push('\n')
  }

  /** A tag without id: `<marshal>`, `</list>`, `<none/>`. */
  tag(t: string): void {
    this.indent()
    this.parts.push(t)
    this.newline()
  }

  private leaf(tag: LeafTag, text: string): void {
    this.indent()
    if (text === '' && this.pretty) this.parts.push(`<${tag}/>`)
    else this.parts.push(LEAF_OPEN[tag], text, LEAF_CLOSE[tag])
    this.newline()
  }

  private id(n: number): void {
    if (this.idSlots) {
      this.idSlots.push([this.parts.length, n])
      this.parts.push('')
    } else {
      this.parts.push(String(n))
    }
  }

  /** `<before id><after>` on a line of its own */
  private withId(before: string, id: number, after: string): void {
    this.indent()
    this.parts.push(before)
    this.id(id)
    this.parts.push(after)
    this.newline()
  }

  /** Emits `<reference>` for an already written container; else gives it the next id. */
  private register(v: object): number | undefined {
    const seen = this.ids.get(v)
    if (seen !== undefined) {
      if (this.open.has(v)) throw new MarshalError('cannot marshal a container that contains itself')
      this.withId('<reference id="i', seen, '"/>')
      return undefined
    }
    const id = ++this.counter
    this.ids.set(v, id)
    return id
  }

  private children(tag: string, id: number | undefined, items: PyValue[] | Set<PyValue>, count: number): void {
    const open = `<${tag}`
    if (count === 0) {
      if (id === undefined) this.tag(`${open}/>`)
      else this.withId(`${open} id="i`, id, '"/>')
      return
    }
    if (id === undefined) this.tag(`${open}>`)
    else this.withId(`${open} id="i`, id, '">')
    this.depth++
    let i = 0
    const at = this.path.length
    this.path.push(0)
    if (Array.isArray(items)) {
      // an index loop: for-of allocates an iterator result per item in the interpreter
      for (; i < items.length; i++) {
        this.path[at] = i
        this.value(items[i]!)
      }
    } else {
      for (const x of items) {
        this.path[at] = i++
        this.value(x)
      }
    }
    this.path.pop()
    this.depth--
    this.tag(`</${tag}>`)
  }

  value(v: PyValue): void {
    switch (typeof v) {
      case 'string':
        return this.leaf('string', this.text(v))
      case 'number':
        if (Number.isInteger(v)) return this.leaf(Math.abs(v) < 1e24 ? 'int' : 'long', intText(v))
        return this.leaf('float', pyFloatRepr(v))
      case 'bigint':
        return this.leaf(v < LONG_BOUND && v > -LONG_BOUND ? 'int' : 'long', v.toString())
      case 'boolean':
        return this.leaf('bool', v ? '1' : '0')
      case 'object':
        break
      default:
        throw new MarshalError(`cannot marshal ${typeof v} at ${this.where()}`)
    }
    if (v === null) return this.tag('<none/>')
    if (v instanceof PyFloat) return this.leaf('float', pyFloatRepr(v.value))
    if (v instanceof Tuple) return this.children('tuple', undefined, v.items, v.items.length)
    if (v instanceof Uint8Array) return this.leaf('string', this.text(decodeUtf8(v, this.where())))
    if (v instanceof Preencoded) return this.place(v)
    if (Array.isArray(v) || v instanceof Set || v instanceof PyMap || v instanceof SlapObject || isPyDict(v)) {
      const id = this.register(v)
      if (id === undefined) return
      this.open.add(v)
      if (Array.isArray(v)) this.children('list', id, v, v.length)
      else if (v instanceof Set) this.children('set', id, v, v.size)
      else if (v instanceof SlapObject) this.object(v, id)
      else if (v instanceof PyMap) this.dictionary(v.entries, id, false)
      else this.dictionary(dictEntries(v, this), id, true)
      this.open.delete(v)
      return
    }
    const name = (v as object).constructor?.name ?? 'object'
    throw new MarshalError(`Refusing to marshall ${name} at ${this.where()}`)
  }

  /** The wire text of a string: checked, then escaped (spec §3.3). */
  private text(s: string): string {
    // the common case, printable ASCII without & < > (one scan, no copy)
    if (!NEEDS_ESCAPE.test(s)) return s
    if (INVALID_XML_CHAR.test(s)) throw new MarshalError(`All strings must be XML compatible: ${this.where()} holds a control character or a lone surrogate`)
    return escapeWire(s)
  }

  private place(v: Preencoded): void {
    if (this.pretty) throw new MarshalError(`a preencoded value cannot be placed in an indented document (at ${this.where()})`)
    const base = this.counter
    if (v.placedAfter === base && this.idSlots === undefined) {
      if (this.segments) {
        this.flush()
        if (typeof v.placed === 'string') v.placed = Buffer.from(v.placed, 'utf8')
        this.segments.push(v.placed)
      } else this.parts.push(typeof v.placed === 'string' ? v.placed : v.placed.toString('utf8'))
      this.counter += v.count
      return
    }
    if (this.segments) this.flush()
    const from = this.parts.length
    for (let i = 0; i < v.ids.length; i++) {
      this.parts.push(v.chunks[i]!)
      this.id(base + v.ids[i]!)
    }
    this.parts.push(v.chunks[v.ids.length]!)
    this.counter += v.count
    if (this.idSlots === undefined) {
      v.placedAfter = base
      if (this.segments) {
        this.flush()
        v.placed = this.segments[this.segments.length - 1]!
      } else v.placed = this.parts.slice(from).join('')
    }
  }

  private object(o: SlapObject, id: number): void {
    if (!SLAP_CLASSES.includes(o.className)) throw new MarshalError(`Refusing to marshall ${SLAP_MODULE}.${String(o.className)}`)
    if (!isPyDict(o.state)) throw new MarshalError(`state of ${o.className} at ${this.where()} must be a dict`)
    this.withId('<object id="i', id, `" module="${SLAP_MODULE}" class="${o.className}">`)
    this.depth++
    this.path.push(AT_INIT_ARGS)
    this.children('tuple', undefined, o.initArgs, o.initArgs.length)
    this.path[this.path.length - 1] = AT_STATE
    this.value(o.state)
    this.path.pop()
    this.depth--
    this.tag('</object>')
  }

  /** owned: entries is a fresh array that may be sorted in place */
  private dictionary(entries: Array<[PyValue, PyValue]>, id: number, owned: boolean): void {
    const sorted = sortEntries(entries, owned)
    if (sorted.length === 0) return this.withId('<dictionary id="i', id, '"/>')
    this.withId('<dictionary id="i', id, '">')
    this.depth++
    const at = this.path.length
    this.path.push(null)
    for (let i = 0; i < sorted.length; i++) {
      // no destructuring: it goes through the array iterator in the interpreter
      const e = sorted[i]!
      const k = e[0]
      const x = e[1]
      this.path[at] = k
      this.value(k)
      this.value(x)
    }
    this.path.pop()
    this.depth--
    this.tag('</dictionary>')
  }
}

function dictEntries(d: PyDict, w: Writer): Array<[PyValue, PyValue]> {
  const keys = Object.keys(d)
  const out: Array<[PyValue, PyValue]> = new Array(keys.length)
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!
    const x = d[k]
    if (x === undefined) throw new MarshalError(`cannot marshal undefined at ${w.where()}[${JSON.stringify(k)}] (use null for None)`)
    out[i] = [k, x]
  }
  return out
}

/** Python `sorted(d.items())`, falling back to sorting by `repr(key)` when keys do not compare. */
function sortEntries(entries: Array<[PyValue, PyValue]>, owned = false): Array<[PyValue, PyValue]> {
  const copy = owned ? entries : entries.slice()
  let strings = true
  for (let i = 0; i < copy.length && strings; i++) strings = typeof copy[i]![0] === 'string'
  if (strings) return copy.length <= 16 ? insertionSort(copy) : copy.sort((a, b) => compareCodePoints(a[0] as string, b[0] as string))
  try {
    return copy.sort((a, b) => pyCompare(a[0], b[0]))
  } catch (e) {
    if (!(e instanceof Incomparable)) throw e
    const reprs = new Map(copy.map((e) => [e, pyRepr(e[0])]))
    return copy.sort((a, b) => compareCodePoints(reprs.get(a)!, reprs.get(b)!))
  }
}

/** In place and stable, without the work array of Array.prototype.sort (dicts are small). */
function insertionSort(a: Array<[PyValue, PyValue]>): Array<[PyValue, PyValue]> {
  for (let i = 1; i < a.length; i++) {
    const e = a[i]!
    let j = i - 1
    while (j >= 0 && compareCodePoints(a[j]![0] as string, e[0] as string) > 0) {
      a[j + 1] = a[j]!
      j--
    }
    a[j + 1] = e
  }
  return a
}

class Incomparable extends Error {}

function numeric(v: PyValue): number | bigint | undefined {
  if (typeof v === 'number' || typeof v === 'bigint') return v
  if (typeof v === 'boolean') return v ? 1 : 0
  if (v instanceof PyFloat) return v.value
  return undefined
}

/** Python `<` ordering for the key types that compare; throws Incomparable otherwise. */
function pyCompare(a: PyValue, b: PyValue): number {
  if (typeof a === 'string' && typeof b === 'string') return compareCodePoints(a, b)
  const x = numeric(a)
  const y = numeric(b)
  if (x !== undefined && y !== undefined) return x < y ? -1 : x > y ? 1 : 0
  if (a instanceof Tuple && b instanceof Tuple) {
    const n = Math.min(a.items.length, b.items.length)
    for (let i = 0; i < n; i++) {
      const c = pyCompare(a.items[i]!, b.items[i]!)
      if (c !== 0) return c
    }
    return a.items.length - b.items.length
  }
  throw new Incomparable()
}

function sortedKeys(d: object): string[] {
  return Object.keys(d).sort(compareCodePoints)
}

function intText(v: number): string {
  return Number.isSafeInteger(v) ? String(v) : BigInt(v).toString()
}

/** The double escaping of xml_marshaller strings (spec §3.3), then ASCII character references. */
/** The double escaping of xml_marshaller strings (spec §3.3), then ASCII character references. */
function escapeWire(s: string): string {
  let t = s.replace(/&/g, '&amp;amp;').replace(/</g, '&amp;lt;').replace(/>/g, '&amp;gt;').replace(/\r/g, '&#13;')
  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\x7f]/.test(t)) t = t.replace(/[^\x00-\x7f]/gu, (c) => `&#${c.codePointAt(0)};`)
  return t
}

function decodeUtf8(b: Uint8Array, where: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b)
  } catch {
    throw new MarshalError(`bytes at ${where} are not valid UTF-8`)
  }
}

/** Python `str(v)` for instance XML values. */
function pyStr(v: PyValue): string {
  if (typeof v === 'string') return v
  if (v instanceof Uint8Array) return decodeUtf8(v, 'parameter')
  return pyRepr(v)
}

function reprString(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'"
  let out = ''
  for (const ch of s) {
    const c = ch.codePointAt(0)!
    if (ch === '\\') out += '\\\\'
    else if (ch === quote) out += `\\${quote}`
    else if (ch === '\n') out += '\\n'
    else if (ch === '\r') out += '\\r'
    else if (ch === '\t') out += '\\t'
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`
    else if (c >= 0xd800 && c <= 0xdfff) out += `\\u${c.toString(16).padStart(4, '0')}`
    else out += ch
  }
  return quote + out + quote
}

function escapeText(s: string): string {
  if (INVALID_XML_CHAR.test(s)) throw new MarshalError('All strings must be XML compatible: a parameter holds a control character')
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\r/g, '&#13;')
}

function escapeAttr(s: string): string {
  return escapeText(s).replace(/"/g, '&quot;').replace(/\n/g, '&#10;').replace(/\t/g, '&#9;')
}

/** Sets an own property even for `__proto__`, so no key can change an object's prototype. */
function setKey(o: { [key: string]: unknown }, k: string, v: unknown): void {
  if (k === '__proto__') Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true })
  else o[k] = v
}

function localName(name: string): string {
  const i = name.lastIndexOf(':')
  return i < 0 ? name : name.slice(i + 1)
}

// --- internal: a small strict XML scanner ---------------------------------------------
// Hand-written so that we control everything: no DOCTYPE, no entity declarations, only
// the five predefined entities and character references, bounded length and depth.

interface XmlHandler {
  start(name: string, attrs: Record<string, string>, selfClosing: boolean): void
  end(name: string): void
  text(s: string): void
}

const SLASH = 0x2f
const LT = 0x3c
const QUESTION = 0x3f
const BANG = 0x21
const GT = 0x3e
/** Attributes of an element that has none (shared, never written). */
const NO_ATTRS: Record<string, string> = Object.freeze(Object.create(null) as Record<string, string>)
const ATTR = /\s+([A-Za-z_:][A-Za-z0-9_.:-]*)\s*=\s*(?:"([^"<]*)"|'([^'<]*)')/y
const TAG_END = /\s*(\/?)>/y
const CLOSE = /<\/([A-Za-z_:][A-Za-z0-9_.:-]*)\s*>/y
const BAD_TEXT_CHAR = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u

/** End of the XML name (`[A-Za-z_:][A-Za-z0-9_.:-]*`) starting at `i`, or -1 if none starts there. */
function scanName(src: string, i: number): number {
  const c = src.charCodeAt(i)
  if (!((c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || c === 0x3a)) return -1
  let j = i + 1
  for (;;) {
    const d = src.charCodeAt(j)
    if ((d >= 0x61 && d <= 0x7a) || (d >= 0x41 && d <= 0x5a) || (d >= 0x30 && d <= 0x39) || d === 0x5f || d === 0x2e || d === 0x3a || d === 0x2d) j++
    else return j
  }
}

/** `\s` of a regular expression, for the characters XML allows between attributes. */
function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d
}

function scanXml(src: string, h: XmlHandler, limits: LoadLimits): void {
  const maxLength = limits.maxLength ?? 64 * 1024 * 1024
  const maxDepth = limits.maxDepth ?? 256
  if (src.length > maxLength) throw new MarshalError(`XML document too large (${src.length} characters, limit ${maxLength})`)
  const fail = (what: string, at: number): never => {
    throw new MarshalError(`malformed XML: ${what} at offset ${at}`)
  }
  if (BAD_TEXT_CHAR.test(src)) {
    const m = BAD_TEXT_CHAR.exec(src)!
    fail('character not allowed in XML', m.index)
  }
  const stack: string[] = []
  let rootSeen = false
  let pos = src.charCodeAt(0) === 0xfeff ? 1 : 0
  while (pos < src.length) {
    const lt = src.indexOf('<', pos)
    const textEnd = lt < 0 ? src.length : lt
    if (textEnd > pos) {
      const raw = src.slice(pos, textEnd)
      if (stack.length === 0) {
        if (raw.trim() !== '') fail('text outside the root element', pos)
      } else {
        h.text(decodeText(raw, pos, fail))
      }
    }
    if (lt < 0) break
    pos = lt
    const next = src.charCodeAt(pos + 1)
    if (next === QUESTION) {
      const e = src.indexOf('?>', pos + 2)
      if (e < 0) fail('unterminated processing instruction', pos)
      pos = e + 2
    } else if (next !== BANG) {
      // an element: below
    } else if (src.startsWith('<!--', pos)) {
      const e = src.indexOf('-->', pos + 4)
      if (e < 0) fail('unterminated comment', pos)
      pos = e + 3
    } else if (src.startsWith('<![CDATA[', pos)) {
      if (stack.length === 0) fail('CDATA outside the root element', pos)
      const e = src.indexOf(']]>', pos + 9)
      if (e < 0) fail('unterminated CDATA section', pos)
      h.text(src.slice(pos + 9, e).replace(/\r\n?/g, '\n'))
      pos = e + 3
    } else {
      throw new MarshalError(`DOCTYPE and entity declarations are refused (offset ${pos})`)
    }
    if (next === QUESTION || next === BANG) continue
    if (next === SLASH) {
      const open = stack.pop()
      // the common case, `</name>` closing the open element, needs no regular expression
      if (open !== undefined && src.startsWith(open, pos + 2) && src.charCodeAt(pos + 2 + open.length) === GT) {
        h.end(open)
        pos += open.length + 3
        continue
      }
      CLOSE.lastIndex = pos
      const m = CLOSE.exec(src)
      if (!m) fail('bad end tag', pos)
      const name = m![1]!
      if (open !== name) fail(open === undefined ? `end tag </${name}> without start` : `</${name}> closes <${open}>`, pos)
      h.end(name)
      pos = CLOSE.lastIndex
    } else {
      const nameEnd = scanName(src, pos + 1)
      if (nameEnd < 0) fail('bad tag', pos)
      const name = src.slice(pos + 1, nameEnd)
      if (stack.length === 0 && rootSeen) fail('a second root element', pos)
      let p = nameEnd
      let attrs = NO_ATTRS
      while (isSpace(src.charCodeAt(p))) {
        ATTR.lastIndex = p
        const a = ATTR.exec(src)
        if (!a) break
        const an = a[1]!
        if (attrs === NO_ATTRS) attrs = Object.create(null) as Record<string, string>
        if (an in attrs) fail(`duplicate attribute ${an}`, p)
        attrs[an] = decodeText(a[2] ?? a[3] ?? '', p, fail).replace(/[\t\n]/g, ' ')
        p = ATTR.lastIndex
      }
      let selfClosing: boolean
      // `>` or `/>` right after the name or the last attribute: no regular expression either
      if (src.charCodeAt(p) === GT) {
        selfClosing = false
        pos = p + 1
      } else if (src.charCodeAt(p) === SLASH && src.charCodeAt(p + 1) === GT) {
        selfClosing = true
        pos = p + 2
      } else {
        TAG_END.lastIndex = p
        const t = TAG_END.exec(src)
        if (!t) fail(`bad attribute or unterminated tag <${name}>`, p)
        pos = TAG_END.lastIndex
        selfClosing = t![1] === '/'
      }
      rootSeen = true
      if (!selfClosing) {
        stack.push(name)
        if (stack.length > maxDepth) throw new MarshalError(`XML nested deeper than ${maxDepth} elements`)
      }
      h.start(name, attrs, selfClosing)
    }
  }
  if (stack.length > 0) fail(`unexpected end of document inside <${stack[stack.length - 1]}>`, src.length)
  if (!rootSeen) fail('no root element', 0)
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }

function decodeText(raw: string, at: number, fail: (what: string, at: number) => never): string {
  // XML parsers report every line break as \n; `&#13;` stays a carriage return.
  let s = raw.includes('\r') ? raw.replace(/\r\n?/g, '\n') : raw
  if (!s.includes('&')) return s
  s = s.replace(/&([^;&]{0,12});|&/g, (all, body: string | undefined) => {
    if (body === undefined) fail('"&" outside an entity', at)
    const named = ENTITIES[body!]
    if (named !== undefined) return named
    const m = /^#(?:x([0-9a-fA-F]{1,6})|([0-9]{1,7}))$/.exec(body!)
    if (!m) fail(`unknown entity &${body};`, at)
    const cp = m![1] !== undefined ? parseInt(m![1], 16) : parseInt(m![2]!, 10)
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) fail(`character reference &${body}; out of range`, at)
    const ch = String.fromCodePoint(cp)
    if (BAD_TEXT_CHAR.test(ch)) fail(`character reference &${body}; not allowed in XML`, at)
    return ch
  })
  return s
}

// --- internal: decoder ----------------------------------------------------------------

type Frame =
  | { kind: 'marshal'; items: PyValue[]; size: number }
  | { kind: 'leaf'; tag: string; text: string; size: number }
  | { kind: 'tuple' | 'list' | 'set' | 'dictionary'; id: string | undefined; items: PyValue[]; size: number }
  | { kind: 'object'; id: string | undefined; className: SlapClassName; items: PyValue[]; size: number }
  | { kind: 'reference'; size: number }

const LEAVES = new Set(['string', 'unicode', 'int', 'long', 'float', 'bool', 'none'])
const CONTAINERS = new Set(['tuple', 'list', 'set', 'dictionary'])

// How many constructor arguments each class takes (slapos.slap.slap signatures).
const INIT_ARGS: Record<SlapClassName, [number, number]> = {
  Computer: [1, 2],
  ComputerPartition: [0, 4],
  SoftwareRelease: [0, 3],
  SoftwareInstance: [0, 0],
}

class Decoder implements XmlHandler {
  private stack: Frame[] = []
  private ids = new Map<string, { value: PyValue; size: number }>()
  private openIds = new Set<string>()
  private expanded = 0
  private readonly maxExpanded: number
  private done: PyValue | undefined
  private finished = false

  constructor(limits: LoadLimits) {
    this.maxExpanded = limits.maxExpanded ?? 5_000_000
  }

  result(): PyValue {
    if (!this.finished) throw new MarshalError('no <marshal> document')
    return this.done!
  }

  start(qname: string, attrs: Record<string, string>, selfClosing: boolean): void {
    const name = localName(qname)
    const parent = this.stack[this.stack.length - 1]
    if (parent === undefined) {
      if (name !== 'marshal') throw new MarshalError(`root element must be <marshal>, not <${name}>`)
      this.stack.push({ kind: 'marshal', items: [], size: 0 })
    } else {
      if (parent.kind === 'leaf' || parent.kind === 'reference') throw new MarshalError(`<${name}> inside <${parent.kind === 'leaf' ? parent.tag : 'reference'}>`)
      const id = attrs.id
      if (LEAVES.has(name)) this.stack.push({ kind: 'leaf', tag: name, text: '', size: 1 })
      else if (CONTAINERS.has(name)) {
        this.stack.push({ kind: name as 'list', id: name === 'tuple' ? undefined : id, items: [], size: 1 })
        if (name !== 'tuple' && id !== undefined) this.openIds.add(id)
      } else if (name === 'object') {
        if (attrs.module !== SLAP_MODULE || !SLAP_CLASSES.includes(attrs.class as SlapClassName)) {
          throw new MarshalError(`Refusing to unmarshall ${attrs.module ?? '?'}.${attrs.class ?? '?'}`)
        }
        this.stack.push({ kind: 'object', id, className: attrs.class as SlapClassName, items: [], size: 1 })
        if (id !== undefined) this.openIds.add(id)
      } else if (name === 'reference') {
        if (id === undefined) throw new MarshalError('<reference> without id')
        if (this.openIds.has(id)) throw new MarshalError(`reference to the enclosing container ${id} (cycles are refused)`)
        const target = this.ids.get(id)
        if (target === undefined) throw new MarshalError(`reference to unknown id ${id}`)
        this.count(target.size)
        this.add(target.value, target.size)
        this.stack.push({ kind: 'reference', size: 0 })
      } else {
        throw new MarshalError(`unknown element <${name}>`)
      }
      this.count(1)
    }
    if (selfClosing) this.end()
  }

  text(s: string): void {
    const top = this.stack[this.stack.length - 1]!
    if (top.kind === 'leaf') top.text += s
    else if (s.trim() !== '') throw new MarshalError(`text inside <${top.kind}>`)
  }

  end(): void {
    const f = this.stack.pop()!
    if (f.kind === 'reference') return
    if (f.kind === 'marshal') {
      if (f.items.length !== 1) throw new MarshalError(`<marshal> must hold exactly one value, not ${f.items.length}`)
      this.done = f.items[0]!
      this.finished = true
      return
    }
    const value = this.build(f)
    if (f.kind !== 'leaf' && f.kind !== 'tuple' && f.id !== undefined) {
      this.openIds.delete(f.id)
      this.ids.set(f.id, { value, size: f.size })
    }
    this.add(value, f.size)
  }

  private count(n: number): void {
    this.expanded += n
    if (this.expanded > this.maxExpanded) throw new MarshalError(`document expands to more than ${this.maxExpanded} values`)
  }

  private add(v: PyValue, size: number): void {
    const parent = this.stack[this.stack.length - 1]!
    if (parent.kind === 'leaf' || parent.kind === 'reference') throw new MarshalError('value inside a scalar')
    parent.items.push(v)
    parent.size += size
  }

  private build(f: Exclude<Frame, { kind: 'marshal' | 'reference' }>): PyValue {
    switch (f.kind) {
      case 'leaf':
        return leafValue(f.tag, f.text)
      case 'tuple':
        return new Tuple(f.items)
      case 'list':
        return f.items
      case 'set':
        return buildSet(f.items)
      case 'dictionary':
        return buildDict(f.items)
      case 'object':
        return buildObject(f.className, f.items)
    }
  }
}

function buildSet(items: PyValue[]): Set<PyValue> {
  for (const x of items) if (!hashable(x)) throw new MarshalError('unhashable value in <set>')
  return new Set(items)
}

function buildObject(className: SlapClassName, items: PyValue[]): SlapObject {
  const [args, state, ...rest] = items
  if (!(args instanceof Tuple) || !isPyDict(state) || rest.length > 0) {
    throw new MarshalError(`<object class="${className}"> must hold an init-args <tuple> and a state <dictionary>`)
  }
  const [min, max] = INIT_ARGS[className]
  if (args.items.length < min || args.items.length > max) {
    throw new MarshalError(`${className} takes ${min}..${max} init args, not ${args.items.length}`)
  }
  return new SlapObject(className, args.items, state)
}

// --- internal: the compact decoder ------------------------------------------------------
// What xml_marshaller writes (and dumps() above): no text between elements, attributes in
// its order with double quotes. Read with indexOf and startsWith, without the SAX frames of
// the general decoder (a 200 KB computer answer: 25 ms -> a few ms on a cold start). Same
// values, same limits; on anything it does not expect it gives up and the general decoder
// reads the document from the start.

const NOT_COMPACT: unique symbol = Symbol('not compact')
class NotCompact extends Error {}
type CompactTag = 'string' | 'int' | 'none' | 'bool' | 'float' | 'long' | 'unicode' | 'dictionary' | 'list' | 'tuple' | 'set' | 'object' | 'reference'

const COMPACT_TAGS: readonly CompactTag[] = ['string', 'int', 'none', 'dictionary', 'list', 'tuple', 'object', 'reference', 'bool', 'float', 'long', 'unicode', 'set']
/** the candidate names by their first character code */
const TAGS_BY_FIRST = new Map<number, CompactTag[]>()
for (const t of COMPACT_TAGS) TAGS_BY_FIRST.set(t.charCodeAt(0), [...(TAGS_BY_FIRST.get(t.charCodeAt(0)) ?? []), t])

/** The element name at `p` when it is one xml_marshaller writes and a name ends right after it. */
function tagAt(src: string, p: number): CompactTag | undefined {
  const candidates = TAGS_BY_FIRST.get(src.charCodeAt(p))
  if (candidates === undefined) return undefined
  for (let i = 0; i < candidates.length; i++) {
    const tag = candidates[i]!
    if (!src.startsWith(tag, p)) continue
    const c = src.charCodeAt(p + tag.length)
    if (c === GT || c === SLASH || c === 0x20) return tag
  }
  return undefined
}

function isLeafTag(tag: CompactTag): boolean {
  return tag === 'string' || tag === 'int' || tag === 'none' || tag === 'bool' || tag === 'float' || tag === 'long' || tag === 'unicode'
}

function loadsCompact(src: string, limits: LoadLimits): PyValue | typeof NOT_COMPACT {
  if (src.length > (limits.maxLength ?? 64 * 1024 * 1024) || BAD_TEXT_CHAR.test(src)) return NOT_COMPACT
  let start = 0
  if (src.startsWith('<?xml')) {
    const e = src.indexOf('?>')
    if (e < 0) return NOT_COMPACT
    start = e + 2
    while (isSpace(src.charCodeAt(start))) start++
  }
  if (!src.startsWith('<marshal>', start)) return NOT_COMPACT
  const r = new CompactReader(src, start + 9, limits)
  try {
    const value = r.value(1)
    if (!src.startsWith('</marshal>', r.pos)) return NOT_COMPACT
    for (let i = r.pos + 10; i < src.length; i++) if (!isSpace(src.charCodeAt(i))) return NOT_COMPACT
    return value
  } catch (e) {
    if (e instanceof NotCompact || e instanceof MarshalError) return NOT_COMPACT
    throw e
  }
}

class CompactReader {
  pos: number
  /** what every value read so far expands to, as the general decoder counts it */
  private expanded = 0
  /** size of the last value read (itself + what it holds, references expanded) */
  private size = 0
  private readonly ids = new Map<string, { value: PyValue; size: number }>()
  private readonly open = new Set<string>()
  private readonly maxDepth: number
  private readonly maxExpanded: number

  constructor(
    private readonly src: string,
    pos: number,
    limits: LoadLimits,
  ) {
    this.pos = pos
    this.maxDepth = limits.maxDepth ?? 256
    this.maxExpanded = limits.maxExpanded ?? 5_000_000
  }

  private count(n: number): void {
    this.expanded += n
    if (this.expanded > this.maxExpanded) throw new NotCompact()
  }

  /** A container read whole: its id (if any) may now be referenced; `size` is its size again. */
  private closed(id: string | undefined, value: PyValue, size: number): PyValue {
    if (id !== undefined) {
      this.open.delete(id)
      this.ids.set(id, { value, size })
    }
    this.size = size
    return value
  }

  /** The element at pos, `depth` deep (the root <marshal> is 1). */
  value(depth: number): PyValue {
    const src = this.src
    if (src.charCodeAt(this.pos) !== LT || depth + 1 > this.maxDepth) throw new NotCompact()
    const p = this.pos + 1
    const tag = tagAt(src, p)
    if (tag === undefined) throw new NotCompact()
    if (isLeafTag(tag)) {
      const after = p + tag.length
      const c = src.charCodeAt(after)
      this.count(1)
      this.size = 1
      if (c === SLASH && src.charCodeAt(after + 1) === GT) {
        this.pos = after + 2
        return leafValue(tag, '')
      }
      if (c !== GT) throw new NotCompact()
      const close = src.indexOf('<', after + 1)
      if (close < 0 || src.charCodeAt(close + 1) !== SLASH || !src.startsWith(tag, close + 2) || src.charCodeAt(close + 2 + tag.length) !== GT) throw new NotCompact()
      let text = src.slice(after + 1, close)
      if (text.includes('&') || text.includes('\r')) text = decodeText(text, after + 1, () => { throw new NotCompact() })
      this.pos = close + tag.length + 3
      return leafValue(tag, text)
    }
    if (tag === 'dictionary' || tag === 'list' || tag === 'tuple' || tag === 'set') {
      let q = p + tag.length
      let id: string | undefined
      if (src.startsWith(' id="', q)) {
        const e = src.indexOf('"', q + 5)
        if (e < 0) throw new NotCompact()
        id = src.slice(q + 5, e)
        if (id.includes('&') || id.includes('<')) throw new NotCompact()
        q = e + 1
      }
      if (tag === 'tuple') id = undefined
      this.count(1)
      const items = this.children(tag, q, id, depth)
      const size = this.size
      return this.closed(id, tag === 'dictionary' ? buildDict(items) : tag === 'list' ? items : tag === 'tuple' ? new Tuple(items) : buildSet(items), size)
    }
    if (tag === 'object' && src.startsWith('object id="', p)) {
      const e = src.indexOf('"', p + 11)
      const id = src.slice(p + 11, e)
      const m = ' module="' + SLAP_MODULE + '" class="'
      if (e < 0 || id.includes('&') || id.includes('<') || !src.startsWith(m, e + 1)) throw new NotCompact()
      const ce = src.indexOf('"', e + 1 + m.length)
      const className = src.slice(e + 1 + m.length, ce) as SlapClassName
      if (ce < 0 || !SLAP_CLASSES.includes(className)) throw new NotCompact()
      this.count(1)
      const items = this.children('object', ce + 1, id, depth)
      const size = this.size
      return this.closed(id, buildObject(className, items), size)
    }
    if (tag === 'reference' && src.startsWith('reference id="', p)) {
      const e = src.indexOf('"', p + 14)
      if (e < 0 || src.charCodeAt(e + 1) !== SLASH || src.charCodeAt(e + 2) !== GT) throw new NotCompact()
      const id = src.slice(p + 14, e)
      const target = this.ids.get(id)
      if (target === undefined || this.open.has(id)) throw new NotCompact()
      this.count(1 + target.size)
      this.pos = e + 3
      this.size = target.size
      return target.value
    }
    throw new NotCompact()
  }

  /** After a start tag's attributes (at `q`: `>` or `/>`), the children up to the end tag. */
  private children(tag: string, q: number, id: string | undefined, depth: number): PyValue[] {
    const src = this.src
    const items: PyValue[] = []
    let size = 1
    if (src.charCodeAt(q) === SLASH && src.charCodeAt(q + 1) === GT) {
      this.pos = q + 2
      this.size = size
      return items
    }
    if (src.charCodeAt(q) !== GT) throw new NotCompact()
    if (id !== undefined) this.open.add(id)
    this.pos = q + 1
    for (;;) {
      if (src.charCodeAt(this.pos) === LT && src.charCodeAt(this.pos + 1) === SLASH) {
        if (!src.startsWith(tag, this.pos + 2) || src.charCodeAt(this.pos + 2 + tag.length) !== GT) throw new NotCompact()
        this.pos += tag.length + 3
        this.size = size
        return items
      }
      items.push(this.value(depth + 1))
      size += this.size
    }
  }
}

function buildDict(items: PyValue[]): PyDict | PyMap {
  if (items.length % 2 !== 0) throw new MarshalError('<dictionary> with an odd number of children')
  let allStrings = true
  for (let i = 0; i < items.length; i += 2) {
    const k = items[i]!
    if (typeof k !== 'string') allStrings = false
    if (!hashable(k)) throw new MarshalError('unhashable dictionary key')
  }
  if (allStrings) {
    const d: PyDict = {}
    for (let i = 0; i < items.length; i += 2) setKey(d, items[i] as string, items[i + 1]!)
    return d
  }
  // Python dict semantics: equal keys (1, 1.0, True) collapse, the first key stays, the last value wins.
  const byKey = new Map<string, [PyValue, PyValue]>()
  const objects = new Map<SlapObject, number>()
  for (let i = 0; i < items.length; i += 2) {
    const k = items[i]!
    const ck = canonicalKey(k, objects)
    const seen = byKey.get(ck)
    byKey.set(ck, [seen === undefined ? k : seen[0], items[i + 1]!])
  }
  return new PyMap([...byKey.values()])
}

/** A string equal for keys Python considers equal (hashable values only). */
function canonicalKey(v: PyValue, objects: Map<SlapObject, number>): string {
  if (typeof v === 'string') return `s${v}`
  const n = numeric(v)
  if (n !== undefined) {
    if (typeof n === 'bigint') return `n${n}`
    return Number.isInteger(n) ? `n${BigInt(n)}` : `n${n}`
  }
  if (v === null) return 'N'
  if (v instanceof Tuple) return `t(${v.items.map((x) => canonicalKey(x, objects)).join('\u0000')})`
  if (v instanceof SlapObject) {
    if (!objects.has(v)) objects.set(v, objects.size)
    return `o${objects.get(v)}`
  }
  return `?${objects.size}`
}

function hashable(v: PyValue): boolean {
  if (v === null || typeof v !== 'object') return true
  if (v instanceof PyFloat || v instanceof SlapObject) return true
  if (v instanceof Tuple) return v.items.every(hashable)
  return false
}

function leafValue(tag: string, raw: string): PyValue {
  switch (tag) {
    case 'string':
    case 'unicode':
      // The second escaping layer (xml.sax.saxutils.unescape: &lt; and &gt; before &amp;).
      return raw.includes('&') ? raw.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&') : raw
    case 'none':
      if (raw.trim() !== '') throw new MarshalError('text inside <none>')
      return null
    case 'int':
    case 'long':
      return parseInt10(raw, tag)
    case 'bool': {
      const n = parseInt10(raw, tag)
      return n !== 0 && n !== 0n
    }
    case 'float': {
      const t = raw.trim()
      if (!/^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|inf|infinity|nan)$/i.test(t)) {
        throw new MarshalError(`<float> holds ${JSON.stringify(raw.slice(0, 40))}`)
      }
      const lower = t.toLowerCase().replace(/^\+/, '')
      const x = lower === 'inf' || lower === 'infinity' ? Infinity : lower === '-inf' || lower === '-infinity' ? -Infinity : /nan$/.test(lower) ? NaN : Number(t)
      return Number.isInteger(x) ? new PyFloat(x) : x
    }
  }
  throw new MarshalError(`unknown element <${tag}>`)
}

function parseInt10(raw: string, tag: string): number | bigint {
  const t = raw.trim()
  if (!/^[+-]?\d{1,4300}$/.test(t)) throw new MarshalError(`<${tag}> holds ${JSON.stringify(raw.slice(0, 40))}`)
  if (t.length < 16) return Number(t)
  const b = BigInt(t)
  return b <= BigInt(Number.MAX_SAFE_INTEGER) && b >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(b) : b
}

export type Serialisation = 'xml' | 'json-in-xml'
export const SERIALISATIONS: readonly Serialisation[] = ['xml', 'json-in-xml']

/** A schema's `serialisation` value, undefined when it is not one (`slapos request` and the proxy panel). */
export function asSerialisation(v: unknown): Serialisation | undefined {
  return SERIALISATIONS.find((s) => s === v)
}

/**
 * json-in-xml parameters: the whole object as JSON text (indent 2, as the original's `slapos
 * request` writes it) in one `_` parameter, unless `_` already is its only key. `slapos request`
 * and the proxy panel send the same text through this.
 */
export function wrapJsonInXml(obj: object): Record<string, unknown> {
  const keys = Object.keys(obj)
  if (keys.length === 1 && keys[0] === '_') return obj as Record<string, unknown>
  return { _: pyJsonDumps(obj, 2) }
}
