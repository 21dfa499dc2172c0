// Runs every test file with uvu (one process per file, so a file that fails to load is
// counted) and ends with the line `N passed, N failed` that CI reads.
// Usage: node scripts/test.ts [name-filter]
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'

const filter = process.argv[2]
const files = readdirSync('test')
  .filter((f) => f.endsWith('.test.ts') && (!filter || f.includes(filter)))
  .sort()
let passed = 0
let failed = 0
for (const f of files) {
  const r = spawnSync(process.execPath, ['node_modules/uvu/bin.js', '-r', 'tsx', '--no-color', 'test', `^${f.replace(/\./g, '\\.')}$`], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, FORCE_COLOR: '0' },
  })
  process.stdout.write(r.stdout ?? '')
  const total = /Total:\s+(\d+)/.exec(r.stdout ?? '')
  const ok = /Passed:\s+(\d+)/.exec(r.stdout ?? '')
  if (!total || !ok) {
    console.log(`${f}: did not finish (exit ${r.status ?? r.signal})`)
    failed += 1
    continue
  }
  passed += Number(ok[1])
  failed += Number(total[1]) - Number(ok[1])
}
console.log(`${passed} passed, ${failed} failed`)
process.exitCode = failed === 0 && files.length > 0 ? 0 : 1
