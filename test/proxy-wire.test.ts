// Wire equality: the requests the original client sent to the original slapproxy, replayed
// in order against our built proxy, get the same statuses and the same decoded bodies.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { loads, PyFloat, SlapObject, Tuple, type PyValue } from '../src/slap-protocol.ts'
import { FIXTURES, startProxy } from './helpers.ts'

interface Exchange {
  label: string
  request: { method: string; path: string; query_string: string; body: string | null; headers: Record<string, string> }
  response: { status: number; body: string; body_decoded: unknown; content_type: string }
}

const DIR = join(FIXTURES, 'slap-wire', 'client')

/** The fixtures' JSON form of a decoded document (README of the fixtures). */
export function toFixtureJson(v: PyValue): unknown {
  if (v instanceof Tuple) return { __tuple__: v.items.map(toFixtureJson) }
  if (v instanceof SlapObject) return { __object__: `slapos.slap.slap.${v.className}`, state: toFixtureJson(v.state) }
  if (v instanceof PyFloat) return v.value
  if (typeof v === 'bigint') return Number(v)
  if (Array.isArray(v)) return v.map(toFixtureJson)
  if (v instanceof Set) return [...v].map(toFixtureJson)
  if (v !== null && typeof v === 'object') {
    const o: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(v)) o[k] = toFixtureJson(x as PyValue)
    return o
  }
  return v
}

/** Timestamps are random by nature: keep only their shape. */
function shape(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(shape)
  if (v !== null && typeof v === 'object') {
    const o: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(v)) o[k] = k === 'timestamp' && typeof x === 'string' && /^\d+\.\d+$/.test(x) ? '<float>' : shape(x)
    return o
  }
  return v
}

/** docs/compatibility.md, Security: malformed input is a 400 with its reason (the original raised: 500). */
const DIFFERENT_STATUS: Record<string, number> = { '09-loadComputerConfigurationFromXML-malformed-xml.json': 400 }

test('replaying the captured client exchanges gives the same statuses and bodies', async () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort()
  assert.ok(files.length >= 50, 'fixtures present')
  const proxy = await startProxy({ extraCfg: 'software_product_list =\n  sample http://sr.example/scenario/software.cfg\n' })
  const mismatches: string[] = []
  let decoded = 0
  try {
    for (const f of files) {
      const ex = JSON.parse(readFileSync(join(DIR, f), 'utf8')) as Exchange
      const url = `${proxy.url}${ex.request.path.slice(1)}${ex.request.query_string ? `?${ex.request.query_string}` : ''}`
      const headers: Record<string, string> = {}
      const ct = ex.request.headers['Content-type']
      if (ct) headers['Content-Type'] = ct
      const res = await fetch(url, { method: ex.request.method, headers, body: ex.request.method === 'POST' ? (ex.request.body ?? '') : undefined })
      const body = await res.text()
      const expected = DIFFERENT_STATUS[f] ?? ex.response.status
      if (res.status !== expected) {
        mismatches.push(`${f}: status ${res.status}, expected ${expected}: ${body.slice(0, 200)}`)
        continue
      }
      if (res.headers.get('content-type') !== ex.response.content_type) mismatches.push(`${f}: content type ${res.headers.get('content-type')}`)
      if (ex.response.body_decoded !== null) {
        decoded++
        const ours = shape(toFixtureJson(loads(body)))
        const theirs = shape(ex.response.body_decoded)
        try {
          assert.equal(ours, theirs)
        } catch (err) {
          mismatches.push(`${f}: decoded body differs\n${(err as Error).message}`)
        }
      } else if (f in DIFFERENT_STATUS) {
        if (!body.includes('is not a valid marshalled document')) mismatches.push(`${f}: the 400 does not say what is wrong: ${body}`)
      } else if (body !== ex.response.body) {
        mismatches.push(`${f}: body ${JSON.stringify(body)}, expected ${JSON.stringify(ex.response.body)}`)
      }
    }
  } finally {
    await proxy.stop()
  }
  assert.equal(mismatches, [], mismatches.join('\n\n'))
  assert.ok(decoded >= 25, `compared ${decoded} marshalled bodies`)
})

test.run()
