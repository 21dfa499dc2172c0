// `slapos node promise` (grid.md §7.6, checklist 89 and 94): the built binary against our
// proxy through the recording tap, on partitions with real promise executables.
import { existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { fixtureForAll } from './helpers.ts'
import { makeNode, type TestNode } from './node-helpers.ts'

const NOBODY = 65534

function chownTree(p: string): void {
  const st = lstatSync(p)
  if (st.isDirectory()) for (const n of readdirSync(p)) chownTree(join(p, n))
  lchownSync(p, NOBODY, NOBODY)
}

async function instance(node: TestNode, ref: string, state: 'started' | 'stopped', promises: Record<string, string>): Promise<string> {
  const inst = await node.client.requestComputerPartition({ softwareRelease: node.srUrl, partitionReference: ref, state })
  const id = inst.slap_computer_partition_id ?? ''
  const path = join(node.instanceRoot, id)
  mkdirSync(join(path, 'etc', 'promise'), { recursive: true })
  for (const [name, body] of Object.entries(promises)) writeFileSync(join(path, 'etc', 'promise', name), `#!/bin/sh\n${body}\n`, { mode: 0o755 })
  chownTree(path)
  return id
}

const promise = suite('node promise (built binary, real proxy)')

promise('runs the promises of started partitions only, sends nothing, exit 2 on a failure, 0 with --only-cp on a good one', async () => {
  const node = await makeNode({ partitions: 3 })
  try {
    await node.supply()
    const good = await instance(node, 'good', 'started', { 'is-up': 'echo "service answers"' })
    const bad = await instance(node, 'bad', 'started', { 'a-ok': 'exit 0', 'b-port': 'echo "port 8080 closed" >&2; exit 1' })
    const stopped = await instance(node, 'sleeping', 'stopped', { never: `touch ${node.dir}/stopped-promise-ran; exit 1` })
    node.clearCalls()
    const r = await node.run(['node', 'promise', '--now'])
    assert.is(r.code, 2, r.stderr)
    assert.equal(node.calls().map((c) => c.name), ['getFullComputerInformation'], 'nothing is sent to the master')
    assert.match(r.stderr, `Promise 'b-port' failed with output: port 8080 closed`)
    assert.match(r.stderr, new RegExp(`Finished computer partitions\\.[\\s\\S]*  ${bad}\\[[^\\]]+\\]: Promise 'b-port' failed`))
    // the table on stdout: one line per promise
    const rows = r.stdout.trim().split('\n').map((l) => l.split(/\s{2,}/))
    assert.equal(rows[0], ['partition', 'promise', 'result', 'duration', 'message'])
    assert.ok(rows.some((x) => x[0] === bad && x[1] === 'b-port' && x[2] === 'failed' && x[4] === 'port 8080 closed'), r.stdout)
    assert.ok(rows.some((x) => x[0] === good && x[1] === 'is-up' && x[2] === 'ok' && x[4] === 'service answers'), r.stdout)
    assert.not.ok(rows.some((x) => x[0] === stopped), 'a stopped partition is not in the table')
    // --json: the shape of node instance --json, each partition with its promises
    const json = JSON.parse((await node.run(['node', 'promise', '--now', '--json'])).stdout) as { exitCode: number; items: { id: string; result: string; promises: { name: string; result: string }[] }[] }
    assert.is(json.exitCode, 2)
    assert.equal(json.items.find((i) => i.id === bad)?.promises.map((x) => [x.name, x.result]), [['a-ok', 'ok'], ['b-port', 'failed']])
    assert.not.ok(existsSync(join(node.dir, 'stopped-promise-ran')), `the promises of stopped ${stopped} never run`)
    const result = JSON.parse(readFileSync(join(node.instanceRoot, bad, '.slapgrid', 'promise', 'result', 'b-port.status.json'), 'utf8')) as { result: { failed: boolean } }
    assert.is(result.result.failed, true)
    const ok = JSON.parse(readFileSync(join(node.instanceRoot, good, '.slapgrid', 'promise', 'result', 'is-up.status.json'), 'utf8')) as { result: { failed: boolean; message: string } }
    assert.equal([ok.result.failed, ok.result.message], [false, 'service answers'])

    const only = await node.run(['node', 'promise', '--now', '--only-cp', good])
    assert.is(only.code, 0, only.stderr)
    const unknown = await node.run(['node', 'promise', '--now', '--only-cp', `${good},nope`])
    assert.is(unknown.code, 1)
    assert.match(unknown.stderr, 'Unknown partition: nope')
  } finally {
    await node.stop()
  }
})

// A stand-in for the release's slapos.core runpromises.py: records its arguments, writes one
// result per plugin as the real launcher does, and fails like it when a plugin says "fail".
const RUNPROMISES = `import json, os, sys
args = sys.argv[1:]
open('runner-argv.json', 'w').write(json.dumps(args))
folder = args[args.index('--promise-folder') + 1]
os.makedirs('.slapgrid/promise/result', exist_ok=True)
failed = []
for name in sorted(os.listdir(folder)):
    if not name.endswith('.py') or name.startswith('__init__'):
        continue
    bad = 'fail' in open(os.path.join(folder, name)).read()
    title = name[:-3]
    json.dump({'title': title, 'name': name, 'path': os.path.join(folder, name), 'execution-time': 0.1,
               'result': {'type': 'Test Result', 'failed': bad, 'date': '2026-01-01T00:00:00+0000', 'message': 'down' if bad else 'up'}},
              open('.slapgrid/promise/result/%s.status.json' % title, 'w'))
    if bad:
        failed.append(name)
if failed:
    sys.stderr.write("Promise %r failed with output: down" % failed[0])
    sys.exit(2)
`

promise("plugins run with the release's Python through its runner, in test mode (--force), and show in the table", async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    const id = await instance(node, 'plugged', 'started', {})
    // the release: its bin/buildout names the Python, its slapos.core egg has the runner
    const sw = join(node.softwareRoot, createHash('md5').update(node.srUrl).digest('hex'))
    mkdirSync(join(sw, 'bin'), { recursive: true })
    writeFileSync(join(sw, 'bin', 'buildout'), '#!/bin/sh\n"exec" "/usr/bin/python3" "$0" "$@"\n', { mode: 0o755 })
    const egg = join(node.dir, 'eggs', 'slapos.core.egg')
    mkdirSync(join(egg, 'slapos', 'grid', 'promise'), { recursive: true })
    writeFileSync(join(egg, 'slapos', 'grid', 'promise', 'runpromises.py'), RUNPROMISES)
    const plugin = join(node.instanceRoot, id, 'etc', 'plugin')
    mkdirSync(plugin, { recursive: true })
    writeFileSync(join(plugin, 'check-web.py'), `import sys\nsys.path[0:0] = [\n  '${egg}',\n  ]\n`)
    writeFileSync(join(plugin, 'check-db.py'), `import sys\nsys.path[0:0] = ['${egg}']\n# fail\n`)
    chownTree(join(node.instanceRoot, id))
    const r = await node.run(['node', 'promise', '--now'])
    assert.is(r.code, 2, r.stderr)
    const argv = JSON.parse(readFileSync(join(node.instanceRoot, id, 'runner-argv.json'), 'utf8')) as string[]
    assert.ok(argv.includes('--force') && !argv.includes('--check-anomaly'))
    assert.is(argv[argv.indexOf('--partition-id') + 1], id)
    assert.match(r.stderr, `Promise 'check-db.py' failed with output: down`)
    const rows = r.stdout.trim().split('\n').map((l) => l.split(/\s{2,}/))
    assert.ok(rows.some((x) => x[1] === 'check-db.py' && x[2] === 'failed' && x[4] === 'down'), r.stdout)
    assert.ok(rows.some((x) => x[1] === 'check-web.py' && x[2] === 'ok' && x[4] === 'up'), r.stdout)
  } finally {
    await node.stop()
  }
})

promise("our runner when the release's slapos.core has no runpromises.py: plugins shaped like real ones, a passing and a failing one", async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    const id = await instance(node, 'framework', 'started', {})
    const framework = fixtureForAll('promise-framework')
    const plugin = join(node.instanceRoot, id, 'etc', 'plugin')
    mkdirSync(plugin, { recursive: true })
    const body = (sense: string) =>
      `import sys\nsys.path[0:0] = [\n  '${framework}',\n  ]\nfrom slapos.grid.promise.generic import GenericPromise\n\n` +
      `class RunPromise(GenericPromise):\n  def sense(self):\n    ${sense}\n`
    writeFileSync(join(plugin, 'check-service.py'), body("self.logger.info('service answers')"))
    writeFileSync(join(plugin, 'check-backup.py'), body("self.logger.error('last backup is 3 days old')"))
    chownTree(join(node.instanceRoot, id))
    const r = await node.run(['node', 'promise', '--now', '--json'])
    assert.is(r.code, 2, r.stderr)
    assert.match(r.stderr, "Promise 'check-backup.py' failed with output: last backup is 3 days old")
    const json = JSON.parse(r.stdout) as { items: { id: string; promises: { name: string; result: string; message: string }[] }[] }
    assert.equal(json.items[0]?.promises.map((x) => [x.name, x.result, x.message]), [
      ['check-backup.py', 'failed', 'last backup is 3 days old'],
      ['check-service.py', 'ok', 'service answers'],
    ])
  } finally {
    await node.stop()
  }
})

promise('master unreachable: exit 1, no promise run; a running node instance holds the pid file: exit 10', async () => {
  const node = await makeNode({ partitions: 1 })
  try {
    await node.supply()
    await instance(node, 'one', 'started', { mark: `touch ${node.dir}/promise-ran` })
    const down = await node.run(['node', 'promise', '--now', '--master-url', 'http://127.0.0.1:1/'])
    assert.is(down.code, 1)
    assert.match(down.stderr, '127.0.0.1:1')
    assert.not.ok(existsSync(join(node.dir, 'promise-ran')))
    // the proxy is a live slapos process: as holder of the instance pid file it blocks a check
    writeFileSync(node.pidfiles.instance, String(node.proxy.pid))
    const locked = await node.run(['node', 'promise', '--now'])
    assert.is(locked.code, 10, locked.stderr)
    assert.not.ok(existsSync(join(node.dir, 'promise-ran')))
  } finally {
    await node.stop()
  }
})

promise.run()
