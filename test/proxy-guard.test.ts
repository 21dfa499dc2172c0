// The local master's request gate, as pure functions: request-targets, Host, Origin and the
// traverse Location (the built proxy is tested in proxy-hostile.test.ts).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { hostAllowed, hostPolicy, localLocation, originAllowed, parseTarget } from '../src/proxy-guard.ts'

const machine = () => ({ hostnames: ['node1.example.com', 'node1'], addresses: ['127.0.0.1', '10.1.2.3', 'fe80::1', '2001:db8::5'] })

test('request-targets: origin-form kept as is, absolute-form reduced to its path, anything else undefined', () => {
  assert.is(parseTarget('//')?.pathname, '//')
  assert.is(parseTarget('//evil.example/x?a=1')?.pathname, '//evil.example/x')
  assert.is(parseTarget('/getRunId?a=%zz')?.search, '?a=%zz')
  assert.is(parseTarget('http://a.example/getRunId?x=1')?.pathname, '/getRunId')
  for (const bad of ['*', 'http://', 'http://[/', 'http://a:99999/', 'ftp://a/b', '', 'getRunId']) assert.is(parseTarget(bad), undefined, bad)
})

test('Host on a loopback bind: loopback names, the machine name and allowed_hosts only', () => {
  const p = hostPolicy('127.0.0.1', ['front.example'], machine)
  for (const ok of ['localhost', 'localhost:8080', 'a.localhost', '127.0.0.1:1', '127.9.9.9', '[::1]:80', 'node1', 'NODE1.example.com:8080', 'front.example', undefined]) {
    assert.ok(hostAllowed(ok, p), String(ok))
  }
  for (const bad of ['evil.example', '10.1.2.3', '[2001:db8::5]', 'localhost.evil.example', 'a b', '', 'front.example.evil', '127.0.0.1:99999999']) assert.not.ok(hostAllowed(bad, p), bad)
})

test('Host on a wide bind: every address of the machine; on one address: that address', () => {
  const wide = hostPolicy('0.0.0.0', [], machine)
  for (const ok of ['10.1.2.3:8080', '[2001:db8::5]:8080', '[fe80::1]', 'node1']) assert.ok(hostAllowed(ok, wide), ok)
  assert.not.ok(hostAllowed('10.9.9.9', wide))
  const one = hostPolicy('10.1.2.3', [], machine)
  assert.ok(hostAllowed('10.1.2.3:80', one))
  assert.not.ok(hostAllowed('[2001:db8::5]', one))
  const v6 = hostPolicy('2001:db8::5', [], machine)
  assert.ok(hostAllowed('[2001:db8::5]:80', v6))
})

test("Origin: absent or the Host's own (any scheme) only", () => {
  assert.ok(originAllowed(undefined, '127.0.0.1:8080'))
  assert.ok(originAllowed('http://127.0.0.1:8080', '127.0.0.1:8080'))
  assert.ok(originAllowed('https://front.example', 'front.example'))
  assert.ok(originAllowed('http://front.example', 'front.example:80'))
  for (const bad of ['http://evil.example', 'null', 'http://127.0.0.1:8081', 'file:///x', '%']) assert.not.ok(originAllowed(bad, '127.0.0.1:8080'), bad)
  assert.not.ok(originAllowed('http://a', undefined))
})

test('traverse Location: a path of this proxy, printable, or nothing', () => {
  assert.is(localLocation('/hateoas/partitions/x'), '/hateoas/partitions/x')
  assert.is(localLocation('/中 x'), '/%E4%B8%AD%20x')
  for (const bad of ['//evil.example/', '/\\evil', 'http://evil.example/', 'x', '', '/a\nb', '/a\u0000', '/\u0085']) assert.is(localLocation(bad), undefined, JSON.stringify(bad))
})

test.run()
