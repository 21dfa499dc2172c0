// The panel's request form built from the software release's JSON schema, against the built
// proxy: the schema read only for supplied releases (a path, and http:// from a server of the
// test), the request checked on the proxy (refused: nothing requested), the parameters stored as
// the release's serialisation says; in headless Chromium the form with its defaults, select and
// required field, refused and accepted requests, the key/value form of a release without a
// schema; a hostile schema shown as text, fetching nothing outside the release's directory;
// bounded work (big values against an enum, `$ref` expanded past the budget, loads at once),
// links, a FIFO, a redirect and an endless body not read, link-local and metadata addresses
// never contacted, and why a file was not read said in the proxy's log only.
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { Browser, CHROMIUM } from './chromium.ts'
import { FIXTURES, formatComputer as format, jsonApi as api, skip, type StartedProxy, startProxy, supplyRelease as supply, tempDir } from './helpers.ts'

interface Ctx {
  p: StartedProxy
  /** a copy of test/fixtures/schema-release */
  release: string
  /** the same directory over HTTP, and every path asked of that server */
  http: Static
  /** a server no schema may make the proxy reach: every path asked of it */
  elsewhere: Static
}

const t = suite<Ctx>('proxy panel schema form')
t.before.each(async (c) => {
  const dir = tempDir('slapos-panel-schema-')
  c.release = join(dir, 'schema-release')
  cpSync(join(FIXTURES, 'schema-release'), c.release, { recursive: true })
  c.http = await serveDirectory(dir)
  c.elsewhere = await serveDirectory(join(dir, 'schema-release'))
  c.p = await startProxy({ dir })
})
t.after.each(async (c) => {
  await c.p.stop()
  await c.http.close()
  await c.elsewhere.close()
  rmSync(c.p.dir, { recursive: true, force: true })
})

t('the schema is read only for a supplied release; /panel/request checks, encodes and requests', async ({ p, release, http }) => {
  const sr = join(release, 'software.cfg')
  const overHttp = `${http.url}schema-release/software.cfg`
  await format(p)
  // not supplied: nothing is read, not even over HTTP
  for (const url of [sr, overHttp]) {
    const doc = await schemaOf(p, url)
    assert.is(doc.available, false)
    assert.match(doc.problem, /not supplied to this master/)
  }
  assert.equal(http.asked, [])
  await supply(p, sr)
  await supply(p, overHttp)
  for (const url of [sr, overHttp]) {
    const doc = await schemaOf(p, url)
    assert.is(doc.available, true, JSON.stringify(doc))
    assert.is(doc.name, 'Schema sample')
    // entries in the order of their index, with the software type each requests
    assert.equal(
      doc.software_types.map((e: any) => [e.key, e.software_type, e.shared, e.serialisation]),
      [
        ['default', 'default', false, 'xml'],
        ['cluster', 'page-cluster', false, 'json-in-xml'],
        ['page-slave', 'default', true, 'xml'],
      ],
    )
    const page = doc.software_types[0].schema
    assert.equal(page.required, ['name', 'port'])
    assert.equal(page.properties.map(([name]: [string]) => name), ['name', 'greeting', 'port', 'color', 'image', 'verbose', 'ratio', 'aliases', 'limits'])
    // the $ref to common.json beside the schema is resolved
    const image = page.properties.find(([name]: [string]) => name === 'image')[1]
    assert.equal(image.oneOf.map((b: any) => [b.const, b.title]), [['sun.png', 'Sun'], ['moon.png', 'Moon']])
    assert.is(image.default, 'sun.png')
  }
  // over HTTP: the release's schema, its input schemas and common.json, nothing else
  assert.equal([...new Set(http.asked)].sort(), [
    '/schema-release/common.json',
    '/schema-release/instance-cluster-input-schema.json',
    '/schema-release/instance-default-input-schema.json',
    '/schema-release/instance-page-input-schema.json',
    '/schema-release/software.cfg.json',
  ])

  // invalid parameters: 400 with what is wrong, nothing requested
  const bad = await panelRequest(p, { title: 'bad', software_release_uri: sr, software_type: 'default', software_type_entry: 'default', parameters: { port: 80, color: 'pink', extra: 1 } })
  assert.is(bad.status, 400)
  assert.match(bad.doc.title, /port: must be at least 1024/)
  assert.match(bad.doc.title, /color: must be one of "red", "green", "blue"/)
  assert.match(bad.doc.title, /"name" is required/)
  assert.match(bad.doc.title, /"extra" is not a parameter of this software type/)
  // the proxy checks even without the page's entry key: by the software type; an xml release's
  // text is read as the integer it can be, not as anything else
  const typed = await panelRequest(p, { title: 'bad', software_release_uri: sr, software_type: 'default', parameters: { name: 'x', port: '8080.5' } })
  assert.is(typed.status, 400)
  assert.match(typed.doc.title, /port: must be an integer/)
  // the JSON API's own checks come first, before any schema is read
  const nul = await panelRequest(p, { title: 'a\u0000b', software_release_uri: overHttp, software_type: 'page-cluster', software_type_entry: 'cluster', parameters: {} })
  assert.is(nul.status, 400)
  assert.match(nul.doc.title, /NUL character/)
  assert.equal((await api(p, 'slapos.allDocs.v0.instance_tree_list')).result_list, [])

  // valid: xml serialisation, one text parameter per key (JSON text for what is not a string)
  const ok = await panelRequest(p, {
    title: 'page',
    software_release_uri: sr,
    software_type: 'default',
    software_type_entry: 'default',
    parameters: { name: 'Mine', port: 8081, verbose: true, ratio: 0.5, aliases: ['a', 'b'], limits: { cpu: 2 } },
  })
  assert.is(ok.status, 200, JSON.stringify(ok.doc))
  assert.equal((await api(p, 'slapos.get.v0.instance_tree', { title: 'page' })).parameters, {
    name: 'Mine',
    port: '8081',
    verbose: 'true',
    ratio: '0.5',
    aliases: '["a","b"]',
    limits: '{"cpu":2}',
  })
  // stored xml parameters are text: requested again as they are, they still fit; `$schema` is not a parameter to check
  const again = await panelRequest(p, {
    title: 'page',
    software_release_uri: sr,
    software_type: 'default',
    parameters: { $schema: 'https://example.org/x.json', name: 'Mine', port: '8082', verbose: 'true', ratio: '0.5', aliases: '["a","b"]', limits: '{"cpu":2}' },
  })
  assert.is(again.status, 200, JSON.stringify(again.doc))
  assert.is((await api(p, 'slapos.get.v0.instance_tree', { title: 'page' })).parameters.port, '8082')
  // json-in-xml: the whole object as JSON in `_`; the software type is the entry's
  const cluster = await panelRequest(p, {
    title: 'cluster',
    software_release_uri: overHttp,
    software_type: 'page-cluster',
    software_type_entry: 'cluster',
    parameters: { nodes: 3, 'site-list': [{ host: 'a.example', weight: 2 }] },
  })
  assert.is(cluster.status, 200, JSON.stringify(cluster.doc))
  const stored = await api(p, 'slapos.get.v0.instance_tree', { title: 'cluster' })
  assert.is(stored.software_type, 'page-cluster')
  assert.equal(Object.keys(stored.parameters), ['_'])
  // the text `slapos request --parameters-file` sends for the same object (indent 2)
  assert.is(stored.parameters._, JSON.stringify({ nodes: 3, 'site-list': [{ host: 'a.example', weight: 2 }] }, null, 2))
  // a nested $ref is checked too
  const nested = await panelRequest(p, { title: 'c2', software_release_uri: overHttp, software_type: 'page-cluster', software_type_entry: 'cluster', parameters: { nodes: 1, 'site-list': [{ weight: 0 }] } })
  assert.is(nested.status, 400)
  assert.match(nested.doc.title, /site-list\[0\]: "host" is required; site-list\[0\]\.weight: must be at least 1/)

  // a release without a schema: parameters go as given
  const plain = join(release, 'plain.cfg')
  writeFileSync(plain, '[buildout]\nparts =\n')
  await supply(p, plain)
  assert.is((await schemaOf(p, plain)).available, false)
  const free = await panelRequest(p, { title: 'free', software_release_uri: plain, software_type: 'default', parameters: { anything: 'goes' } })
  assert.is(free.status, 200, JSON.stringify(free.doc))
  assert.equal((await api(p, 'slapos.get.v0.instance_tree', { title: 'free' })).parameters, { anything: 'goes' })

  // the route takes JSON POSTs only, from this site only
  assert.is((await fetch(`${p.url}panel/request`)).status, 405)
  assert.is((await fetch(`${p.url}panel/request`, { method: 'POST', body: 'title=x', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })).status, 415)
  const cross = await fetch(`${p.url}panel/request`, { method: 'POST', body: '{}', headers: { 'Content-Type': 'application/json', Origin: 'http://evil.example' } })
  assert.is(cross.status, 403)
  assert.is((await api(p, 'slapos.allDocs.v0.instance_tree_list')).result_list.length, 3)
})

t('headless Chromium: the form of the schema, refused and accepted requests, key/value without a schema', async ({ p, release }) => {
  if (!existsSync(CHROMIUM)) return skip(`${CHROMIUM} is not installed (Debian package chromium)`)
  const sr = join(release, 'software.cfg')
  const plain = join(release, 'plain.cfg')
  writeFileSync(plain, '[buildout]\nparts =\n')
  await format(p)
  await supply(p, sr)
  await supply(p, plain)
  const browser = await Browser.start(`${p.url}panel/`)
  try {
    const page = browser.page
    await page.waitFor("document.getElementById('status').textContent.startsWith('Updated')")
    const choose = async (url: string) => {
      await page.eval(`(() => {
        const f = document.getElementById('request').elements
        f.software_release_uri.value = ${JSON.stringify(url)}
        f.software_release_uri.dispatchEvent(new Event('change'))
      })()`)
      await page.waitFor("!document.getElementById('schema-status').textContent.startsWith('Reading')")
    }
    const shown = (sel: string) => page.eval(`(() => { const e = document.querySelector(${JSON.stringify(sel)}); return !!e && e.getClientRects().length > 0 })()`)
    /** the schema form's fields: title, name, kind of input, value, required */
    const fieldsOf = () =>
      page.eval(`[...document.querySelectorAll('#schema-form label.field')].map((l) => {
        const i = l.querySelector('input, select, textarea')
        return [l.querySelector('.field-title').textContent, (l.querySelector('code') || {}).textContent, i.tagName.toLowerCase() + (i.type && i.tagName === 'INPUT' ? ':' + i.type : ''), i.type === 'checkbox' ? i.checked : i.value, i.required]
      })`)
    const submit = async (title: string, set: string) => {
      await page.eval(`(() => {
        const f = document.getElementById('request').elements
        f.title.value = ${JSON.stringify(title)}
        const field = (name) => [...document.querySelectorAll('#schema-form label.field')].find((l) => (l.querySelector('code') || {}).textContent === name).querySelector('input, select, textarea')
        ;${set}
        document.getElementById('request-result').textContent = ''
        document.getElementById('request').requestSubmit()
      })()`)
      await page.waitFor("/^(Requested|Not requested)/.test(document.getElementById('request-result').textContent)")
      return page.eval("document.getElementById('request-result').textContent") as Promise<string>
    }

    await choose(sr)
    assert.match(await page.eval("document.getElementById('schema-status').textContent"), /Schema of the software release Schema sample/)
    // the software types of the schema that are not shared, in the order of their index
    assert.equal(await page.eval("[...document.querySelector('[name=software_type_entry]').options].map((o) => [o.value, o.textContent])"), [
      ['default', 'Page (default)'],
      ['cluster', 'Cluster (page-cluster)'],
    ])
    assert.equal([await shown('[name=software_type_entry]'), await shown('[name=software_type]'), await shown('#schema-form'), await shown('#pairs')], [true, false, true, false])
    assert.equal(await fieldsOf(), [
      ['Site name', 'name', 'input:text', '', true],
      ['Greeting', 'greeting', 'input:text', 'Hello', false],
      ['Port', 'port', 'input:number', '8080', true],
      ['Color', 'color', 'select', '1', false],
      ['Image', 'image', 'select', '0', false],
      ['Verbose log', 'verbose', 'input:checkbox', false, false],
      ['Ratio', 'ratio', 'input:number', '', false],
      ['Other names', 'aliases', 'textarea', '', false],
      ['Limits', 'limits', 'textarea', '', false],
    ])
    // the enum and the oneOf of constants are selects with their titles
    assert.equal(await page.eval("[...document.querySelectorAll('#schema-form select')].map((s) => [...s.options].map((o) => o.textContent))"), [
      ['(not set)', 'red', 'green', 'blue'],
      ['(not set)', 'Sun (sun.png)', 'Moon (moon.png)'],
    ])

    // refused in the page: the required name is empty, then the port is out of range, then a bad JSON object
    assert.match(await submit('refused', ''), /^Not requested: Site name: /)
    assert.match(await submit('refused', "field('name').value = 'Mine'; field('port').value = '80'"), /^Not requested: Port: /)
    assert.match(await submit('refused', "field('port').value = '8080'; field('ratio').value = '0'"), /^Not requested: Ratio: Ratio must be more than 0/)
    assert.match(await submit('refused', "field('ratio').value = ''; field('limits').value = '{'"), /^Not requested: Limits: Limits is not valid JSON/)
    // refused by the proxy: the JSON mode sends what the page does not check
    await page.eval("document.querySelector('[name=parameter_mode][value=json]').click()")
    assert.equal([await shown('#schema-form'), await shown('textarea[name=parameters_json]')], [false, true])
    const proxyRefused = await submit('refused', "document.getElementById('request').elements.parameters_json.value = JSON.stringify({ name: 'Mine', port: 70000 })")
    assert.match(proxyRefused, /^Not requested, the parameters do not fit the schema of Page: port: must be at most 65535$/)
    assert.equal((await api(p, 'slapos.allDocs.v0.instance_tree_list')).result_list, [])

    // accepted: typed values from the form, stored as text per key (xml serialisation)
    // back to the form: it takes the JSON object over (the port out of range too)
    await page.eval("document.querySelector('[name=parameter_mode][value=form]').click()")
    assert.equal((await fieldsOf()).map((f: unknown[]) => f[3]), ['Mine', '', '70000', '', '', false, '', '', ''])
    const done = await submit('from-form', "field('port').value = '8080'; field('greeting').value = 'Hello'; field('limits').value = '{\"cpu\": 2}'; field('color').value = '2'; field('image').value = '1'; field('verbose').checked = true; field('aliases').value = 'a\\nb'; field('ratio').value = '0.25'")
    assert.is(done, 'Requested from-form on computer / slappart0 (started)')
    const doc = await api(p, 'slapos.get.v0.instance_tree', { title: 'from-form' })
    assert.is(doc.software_type, 'default')
    assert.equal(doc.parameters, { name: 'Mine', greeting: 'Hello', port: '8080', color: 'blue', image: 'moon.png', verbose: 'true', ratio: '0.25', aliases: '["a","b"]', limits: '{"cpu":2}' })

    // json-in-xml: the cluster entry requests its own software type with `_`
    await page.eval(`(() => {
      const s = document.querySelector('[name=software_type_entry]')
      s.value = 'cluster'
      s.dispatchEvent(new Event('change'))
    })()`)
    assert.equal(await fieldsOf(), [
      ['Nodes', 'nodes', 'input:number', '2', true],
      ['Sites', 'site-list', 'textarea', '[]', false],
      ['TLS', 'tls', 'input:checkbox', true, false],
    ])
    assert.is(await submit('cluster', "field('site-list').value = '[{\"host\": \"a.example\"}]'"), 'Requested cluster on computer / slappart1 (started)')
    const cluster = await api(p, 'slapos.get.v0.instance_tree', { title: 'cluster' })
    assert.is(cluster.software_type, 'page-cluster')
    assert.equal(JSON.parse(cluster.parameters._), { nodes: 2, 'site-list': [{ host: 'a.example' }], tls: true })
    // "Edit in the request form" puts the stored values back in the form of the schema
    await page.waitFor("!!document.querySelector('[data-title=from-form] button')")
    await page.eval("document.querySelector('[data-title=from-form] button').click()")
    await page.waitFor("document.querySelector('[name=software_type_entry]').value === 'default' && document.querySelectorAll('#schema-form label.field').length === 9")
    assert.equal((await fieldsOf()).map((f: unknown[]) => f[3]), ['Mine', 'Hello', '8080', '2', '1', true, '0.25', 'a\nb', '{\n  "cpu": 2\n}'])

    // shared: the shared entries only
    await page.eval("(() => { const c = document.getElementById('request').elements.shared; c.checked = true; c.dispatchEvent(new Event('change')) })()")
    assert.equal(await page.eval("[...document.querySelector('[name=software_type_entry]').options].map((o) => o.value)"), ['page-slave'])

    // a release without a schema: the free key/value form, which still requests
    await page.eval("(() => { const c = document.getElementById('request').elements.shared; c.checked = false; c.dispatchEvent(new Event('change')) })()")
    await choose(plain)
    assert.match(await page.eval("document.getElementById('schema-status').textContent"), /^No schema form: .*software\.cfg\.json|^No schema form: .*plain\.cfg\.json/)
    assert.equal([await shown('[name=software_type]'), await shown('[name=software_type_entry]'), await shown('#pairs'), await shown('#schema-form')], [true, false, true, false])
    await page.eval("document.querySelector('[name=parameter_mode][value=pairs]').click()")
    const free = await submit('free', "document.getElementById('request').elements.software_type.value = 'default'; document.querySelector('#pairs').replaceChildren(); document.getElementById('add-pair').click(); document.querySelector('#pairs .key').value = 'greeting'; document.querySelector('#pairs .value').value = 'hi'")
    assert.is(free, 'Requested free on computer / slappart2 (started)')
    assert.equal((await api(p, 'slapos.get.v0.instance_tree', { title: 'free' })).parameters, { greeting: 'hi' })
  } finally {
    await browser.close()
  }
})

t('a hostile schema renders as text and reads nothing outside the release directory', async ({ p, release, http, elsewhere }) => {
  const dir = join(release, 'hostile')
  mkdirSync(dir)
  writeFileSync(join(release, 'outside.json'), JSON.stringify({ type: 'object', properties: { secret: { type: 'string', default: 'outside' } } }))
  const markup = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
  writeFileSync(
    join(dir, 'software.cfg.json'),
    JSON.stringify({
      name: markup,
      serialisation: 'xml',
      'software-type': {
        default: { title: markup, description: markup, request: 'input.json', index: 0 },
        up: { title: 'Up', request: '../outside.json', index: 1 },
        abs: { title: 'Absolute', request: '/etc/passwd', index: 2 },
        far: { title: 'Far', request: `${elsewhere.url}x.json`, index: 3 },
        huge: { title: 'Huge', request: 'huge.json', index: 4 },
        loop: { title: 'Loop', request: 'loop.json', index: 5 },
      },
    }),
  )
  writeFileSync(
    join(dir, 'input.json'),
    JSON.stringify({
      type: 'object',
      title: markup,
      properties: {
        [markup]: { title: markup, description: markup, type: 'string', default: markup, enum: [markup, 'b'] },
        ['__proto__']: { type: 'string', title: 'proto' },
        passwd: { $ref: 'file:///etc/passwd' },
        far: { $ref: `${elsewhere.url}x.json#/a` },
        up: { $ref: '../outside.json' },
        self: { $ref: '#/properties/self' },
      },
    }),
  )
  writeFileSync(join(dir, 'huge.json'), `{"type": "object", "description": "${'x'.repeat(1100 * 1024)}"}`)
  writeFileSync(join(dir, 'loop.json'), JSON.stringify({ definitions: { a: { $ref: '#/definitions/b' }, b: { $ref: '#/definitions/a' } }, type: 'object', properties: { a: { $ref: '#/definitions/a' } } }))
  const sr = join(dir, 'software.cfg')
  writeFileSync(sr, '[buildout]\nparts =\n')
  await format(p)
  await supply(p, sr)
  const doc = await schemaOf(p, sr)
  assert.is(doc.available, true, JSON.stringify(doc))
  const byKey = Object.fromEntries(doc.software_types.map((e: any) => [e.key, e]))
  assert.match(byKey.up.problem, /outside the software release's directory/)
  assert.match(byKey.abs.problem, /outside the software release's directory/)
  assert.match(byKey.far.problem, /outside the software release's directory/)
  // why a file could not be read is in the proxy's log, not in the answer
  assert.match(byKey.huge.problem, /huge\.json cannot be read$/)
  assert.match(p.log(), /huge\.json: it is larger than 1048576 bytes/)
  const loop = byKey.loop.schema.properties[0][1]
  assert.ok(loop.unsupported.includes('$ref in a loop'), JSON.stringify(loop))
  const props = Object.fromEntries(byKey.default.schema.properties)
  assert.match(props.passwd.unsupported.join(), /outside the software release's directory/)
  assert.match(props.far.unsupported.join(), /outside the software release's directory/)
  assert.match(props.up.unsupported.join(), /outside the software release's directory/)
  assert.ok(props.self.unsupported.includes('$ref in a loop'))
  // nothing of /etc/passwd or of the file above came back, and the other server was never asked
  assert.not.match(JSON.stringify(doc), /root:|outside"/)
  assert.equal(elsewhere.asked, [])

  // a request with a __proto__ parameter is checked as data, not as the object's prototype
  const r = await panelRequest(p, { title: 'proto', software_release_uri: sr, software_type: 'default', software_type_entry: 'default', parameters: JSON.parse('{"__proto__": 5}') })
  assert.is(r.status, 400)
  assert.match(r.doc.title, /__proto__: must be a string/)

  if (!existsSync(CHROMIUM)) return skip(`${CHROMIUM} is not installed (Debian package chromium)`)
  const browser = await Browser.start(`${p.url}panel/`)
  try {
    const page = browser.page
    await page.waitFor("document.getElementById('status').textContent.startsWith('Updated')")
    await page.eval(`(() => {
      const f = document.getElementById('request').elements
      f.software_release_uri.value = ${JSON.stringify(sr)}
      f.software_release_uri.dispatchEvent(new Event('change'))
    })()`)
    await page.waitFor("document.querySelectorAll('#schema-form label.field').length > 0")
    // the markup is shown as text, in the status, the type select, the labels and the values
    assert.ok((await page.eval("document.getElementById('schema-status').textContent")).includes(markup))
    assert.ok((await page.eval("document.querySelector('[name=software_type_entry]').options[0].textContent")).startsWith(markup))
    assert.ok((await page.eval("document.querySelector('#schema-form .field-title').textContent")) === markup)
    assert.ok((await page.eval("document.querySelector('#schema-form select').options[1].textContent")) === markup)
    assert.is(await page.eval("document.querySelectorAll('img, #schema-form script').length"), 0)
    assert.is(await page.eval('window.pwned === undefined'), true)
    // the parts the proxy did not read are JSON fields that say why
    assert.match(await page.eval("document.getElementById('schema-form').textContent"), /JSON: the form does not handle \$ref .*outside the software release's directory/)
    assert.equal(elsewhere.asked, [])
  } finally {
    await browser.close()
  }
})

t('big values against an enum: bounded work, refused, and the proxy answers right after', async ({ p, release }) => {
  const dir = join(release, 'enum')
  mkdirSync(dir)
  writeFileSync(join(dir, 'software.cfg.json'), JSON.stringify({ name: 'Enum', serialisation: 'json-in-xml', 'software-type': { default: { title: 'Enum', request: 'input.json' } } }))
  writeFileSync(
    join(dir, 'input.json'),
    JSON.stringify({
      type: 'object',
      properties: {
        word: { type: 'string', enum: Array.from({ length: 500 }, (_, i) => `word-${i}`) },
        list: { type: 'array', items: { enum: Array.from({ length: 500 }, (_, i) => ({ k: i, v: 'x' })) } },
        tags: { type: 'array', uniqueItems: true },
      },
    }),
  )
  const sr = join(dir, 'software.cfg')
  await format(p)
  await supply(p, sr)
  const request = (parameters: unknown) => panelRequest(p, { title: 'enum', software_release_uri: sr, software_type: 'default', software_type_entry: 'default', parameters })
  // a 7 MB string against 500 strings: compared by its first characters only
  const word = await request({ word: 'w'.repeat(7 * 1024 * 1024) })
  assert.is(word.status, 400)
  assert.match(word.doc.title, /^Not requested, the parameters do not fit the schema of Enum: word: must be one of "word-0", "word-1", /)
  assert.ok(word.doc.title.length < 1000, 'the message does not repeat the value')
  // 200,000 small objects against an items.enum of 500 objects: over the step budget, refused
  const list = await request({ list: Array.from({ length: 200_000 }, (_, i) => ({ k: i % 1000, v: 'x' })) })
  assert.is(list.status, 400)
  assert.match(list.doc.title, /the parameters are too complex to check against the schema/)
  // uniqueItems with long items: each item's text counted in the same budget
  const tags = await request({ tags: Array.from({ length: 12 }, (_, i) => `${i}${'t'.repeat(600_000)}`) })
  assert.is(tags.status, 400)
  assert.match(tags.doc.title, /too complex/)
  // the proxy is free: the next requests are answered, the good ones requested
  assert.equal((await api(p, 'slapos.allDocs.v0.instance_tree_list')).result_list, [])
  const fits = await request({ word: 'word-499', list: [{ v: 'x', k: 3 }], tags: ['a', 'b'] })
  assert.is(fits.status, 200, JSON.stringify(fits.doc))
  const repeated = await request({ tags: [{ a: 1, b: 2 }, { b: 2, a: 1 }] })
  assert.is(repeated.status, 400)
  assert.match(repeated.doc.title, /tags: must not repeat an item/)
})

t('a small schema whose $ref expand to too much: no form, a bounded answer, read once', async ({ p, release }) => {
  const dir = join(release, 'bomb')
  mkdirSync(dir)
  writeFileSync(join(dir, 'software.cfg.json'), JSON.stringify({ name: 'Bomb', 'software-type': { default: { title: 'Bomb', request: 'input.json' } } }))
  // 400 KB once in the file, 6,000 uses of it: 2.4 GB expanded
  const properties = Object.fromEntries(Array.from({ length: 6000 }, (_, i) => [`p${i}`, { $ref: '#/definitions/big' }]))
  writeFileSync(join(dir, 'input.json'), JSON.stringify({ definitions: { big: { type: 'string', default: 'd'.repeat(400 * 1024) } }, type: 'object', properties }))
  const sr = join(dir, 'software.cfg')
  await format(p)
  await supply(p, sr)
  const res = await fetch(`${p.url}panel/schema?url=${encodeURIComponent(sr)}`)
  assert.is(res.status, 200)
  const text = await res.text()
  assert.ok(text.length < 10_000, `a short answer, not the expansion (${text.length} characters)`)
  const doc = JSON.parse(text)
  assert.is(doc.available, false)
  assert.is(doc.problem, 'the schema is too large to show')
  assert.match(p.log(), /more than 2097152 characters of text and values once \$ref are expanded/)
  // asked again: the answer kept is given, the schema is not read again
  assert.equal(await schemaOf(p, sr), doc)
  assert.is(p.log().match(/more than 2097152 characters/g)?.length, 1)
  // a request naming its entry is refused, nothing requested
  const r = await panelRequest(p, { title: 'bomb', software_release_uri: sr, software_type: 'default', software_type_entry: 'default', parameters: {} })
  assert.is(r.status, 400)
  assert.match(r.doc.title, /the schema cannot be read \(the schema is too large to show\)/)
})

t('links out of the release directory, a FIFO, a redirect, an endless body: not read, said only in the log', async ({ p, release, elsewhere }) => {
  const outside = join(p.dir, 'outside')
  mkdirSync(outside)
  writeFileSync(join(outside, 'secret.json'), JSON.stringify({ type: 'object', properties: { secret: { type: 'string', default: 'outside-secret' } } }))
  const dir = join(release, 'links')
  mkdirSync(dir)
  symlinkSync(join(outside, 'secret.json'), join(dir, 'file-link.json'))
  symlinkSync(outside, join(dir, 'dir-link'))
  const fifo = spawnSync('mkfifo', [join(dir, 'fifo.json')])
  assert.is(fifo.status, 0, String(fifo.stderr))
  writeFileSync(
    join(dir, 'software.cfg.json'),
    JSON.stringify({
      'software-type': {
        file: { request: 'file-link.json', index: 0 },
        subdir: { request: 'dir-link/secret.json', index: 1 },
        fifo: { request: 'fifo.json', index: 2 },
        absent: { request: 'absent.json', index: 3 },
      },
    }),
  )
  const sr = join(dir, 'software.cfg')
  // over HTTP: a redirect to the other server, and a body without Content-Length past 1 MB
  const http = await serveDirectory(release, (path, res) => {
    if (path === '/moved/software.cfg.json') {
      res.writeHead(302, { Location: `${elsewhere.url}software.cfg.json` }).end()
      return true
    }
    if (path === '/endless/software.cfg.json') {
      res.writeHead(200, { 'Content-Type': 'application/json' })
      const chunk = Buffer.alloc(64 * 1024, 0x20)
      let sent = 0
      const more = (): void => {
        while (sent < 2 * 1024 * 1024 && !res.destroyed) {
          sent += chunk.length
          if (!res.write(chunk)) return void res.once('drain', more)
        }
        res.end()
      }
      more()
      return true
    }
    return false
  })
  try {
    const moved = `${http.url}moved/software.cfg`
    const endless = `${http.url}endless/software.cfg`
    await format(p)
    for (const url of [sr, moved, endless]) await supply(p, url)
    const doc = await schemaOf(p, sr)
    assert.is(doc.available, true, JSON.stringify(doc))
    const byKey = Object.fromEntries(doc.software_types.map((e: any) => [e.key, e]))
    // the page hears the same thing whatever the reason
    for (const [key, file] of [['file', 'file-link.json'], ['subdir', 'dir-link/secret.json'], ['fifo', 'fifo.json'], ['absent', 'absent.json']] as const) {
      assert.is(byKey[key].problem, `${pathToFileURL(join(dir, file)).href} cannot be read`)
      assert.is(byKey[key].schema, undefined)
    }
    assert.not.match(JSON.stringify(doc), /outside-secret/)
    const log = p.log()
    assert.match(log, /file-link\.json: it leads outside the software release's directory/)
    assert.match(log, /dir-link\/secret\.json: it leads outside the software release's directory/)
    assert.match(log, /fifo\.json: it is not a regular file/)
    assert.match(log, /absent\.json: it cannot be found \(ENOENT\)/)

    const redirected = await schemaOf(p, moved)
    assert.equal([redirected.available, redirected.problem], [false, `${moved}.json cannot be read`])
    assert.match(p.log(), /moved\/software\.cfg\.json: it answered HTTP 302/)
    assert.equal(elsewhere.asked, [])
    const big = await schemaOf(p, endless)
    assert.equal([big.available, big.problem], [false, `${endless}.json cannot be read`])
    assert.match(p.log(), /endless\/software\.cfg\.json: it is larger than 1048576 bytes/)
  } finally {
    await http.close()
  }
})

t('link-local and cloud metadata addresses are never contacted; loads at once are bounded (503)', async ({ p }) => {
  await format(p)
  const forbidden = ['http://169.254.169.254/latest/software.cfg', 'http://[fe80::1]/software.cfg', 'http://[::ffff:169.254.169.254]/software.cfg', 'http://100.100.100.200/software.cfg', 'http://[fd00:ec2::254]/software.cfg', 'http://[64:ff9b::100.100.100.200]/software.cfg', 'http://[64:ff9b::a9fe:a9fe]/software.cfg']
  for (const url of forbidden) {
    await supply(p, url)
    const doc = await schemaOf(p, url)
    assert.equal([doc.available, doc.problem], [false, `${new URL(`${url}.json`).href} cannot be read`])
  }
  assert.is(p.log().match(/is a link-local or cloud metadata address: not contacted/g)?.length, forbidden.length)

  // a server that answers only when told: five loads at once, the fifth is told to come back
  const held: ServerResponse[] = []
  const slow = await serveDirectory(p.dir, (_path, res) => {
    held.push(res)
    return true
  })
  try {
    const urls = Array.from({ length: 5 }, (_, i) => `${slow.url}r${i}/software.cfg`)
    for (const url of urls) await supply(p, url)
    const first = urls.slice(0, 4).map((url) => fetch(`${p.url}panel/schema?url=${encodeURIComponent(url)}`))
    while (held.length < 4) await new Promise((r) => setTimeout(r, 20))
    const busy = await fetch(`${p.url}panel/schema?url=${encodeURIComponent(urls[4]!)}`)
    assert.is(busy.status, 503)
    assert.is(busy.headers.get('retry-after'), '2')
    assert.match(((await busy.json()) as { title: string }).title, /try again/)
    const request = await panelRequest(p, { title: 'busy', software_release_uri: urls[4], software_type: 'default', software_type_entry: 'default', parameters: {} })
    assert.is(request.status, 503)
    for (const res of held) res.writeHead(404).end()
    for (const r of await Promise.all(first)) assert.is(((await r.json()) as { available: boolean }).available, false)
    // the loads are over: the fifth is read now
    const after = await schemaOf(p, urls[4]!)
    assert.equal([after.available, after.problem], [false, `${urls[4]}.json cannot be read`])
  } finally {
    for (const res of held) if (!res.writableEnded) res.destroy()
    await slow.close()
  }
})

t('a name whose address is link-local is not contacted (checked when connecting); a loopback name is', async ({ http }) => {
  if (spawnSync('unshare', ['--mount', 'true']).status !== 0) return skip('unshare --mount is not available (util-linux, root)')
  const port = new URL(http.url).port
  const p = await startProxy({ hosts: '127.0.0.1 localhost\n127.0.0.1 release.test\n169.254.169.254 metadata.test\n::1 localhost ip6-localhost\n' })
  try {
    await format(p)
    const meta = 'http://metadata.test/latest/software.cfg'
    const local = `http://release.test:${port}/schema-release/software.cfg`
    await supply(p, meta)
    await supply(p, local)
    const doc = await schemaOf(p, meta)
    assert.equal([doc.available, doc.problem], [false, `${meta}.json cannot be read`])
    assert.match(p.log(), /metadata\.test has the address 169\.254\.169\.254, link-local or cloud metadata: not contacted/)
    const ok = await schemaOf(p, local)
    assert.is(ok.available, true, JSON.stringify(ok))
    assert.ok(http.asked.includes('/schema-release/software.cfg.json'))
  } finally {
    await p.stop()
    rmSync(p.dir, { recursive: true, force: true })
  }
})

t.run()

// --- internal ---

interface Static {
  url: string
  asked: string[]
  close(): Promise<void>
}

/**
 * A static file server of a directory on 127.0.0.1 that records the paths asked; `special`
 * answers a path itself when it returns true (a redirect, an endless body...).
 */
async function serveDirectory(dir: string, special?: (path: string, res: ServerResponse) => boolean): Promise<Static> {
  const asked: string[] = []
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
    asked.push(path)
    if (special?.(path, res)) return
    try {
      const body = process.getBuiltinModule('node:fs').readFileSync(join(dir, path.replace(/\.\./g, '')))
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(body)
    } catch {
      res.writeHead(404).end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    asked,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  }
}

async function panelRequest(p: StartedProxy, body: unknown): Promise<{ status: number; doc: any }> {
  const res = await fetch(`${p.url}panel/request`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
  return { status: res.status, doc: await res.json() }
}

async function schemaOf(p: StartedProxy, url: string): Promise<any> {
  const res = await fetch(`${p.url}panel/schema?url=${encodeURIComponent(url)}`)
  assert.is(res.status, 200)
  return res.json()
}
