// Runs every test file with uvu (one process per file, so a file that fails to load is
// counted) and ends with the line `N passed, N failed, N skipped` that CI reads.
// Usage: node scripts/test.ts [name-filter]
//   SLAPOS_TEST_STRICT=1         a skipped test (test/helpers.ts skip()) counts as failed
//   SLAPOS_TEST_FILE_TIMEOUT=s   time limit of one test file in seconds (default 900): a file
//                                still running then is ended with all its processes and
//                                counted as one failure
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'

const filter = process.argv[2]
const strict = process.env.SLAPOS_TEST_STRICT === '1'
const limitSec = Number(process.env.SLAPOS_TEST_FILE_TIMEOUT ?? 900)
const files = readdirSync('test')
  .filter((f) => f.endsWith('.test.ts') && (!filter || f.includes(filter)))
  .sort()

interface FileRun {
  stdout: string
  status: number | null
  signal: NodeJS.Signals | null
  timedOut: boolean
}

/** One test file in its own process group, so that a time limit ends everything it started. */
function runFile(f: string): Promise<FileRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['node_modules/uvu/bin.js', '-r', 'tsx', '--no-color', 'test', `^${f.replace(/\./g, '\\.')}$`], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, FORCE_COLOR: '0' },
      detached: true,
    })
    let stdout = ''
    let timedOut = false
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s
      process.stdout.write(s)
    })
    const kill = (signal: NodeJS.Signals) => {
      try {
        process.kill(-(child.pid ?? 0), signal)
      } catch {
        // already gone
      }
    }
    const timer = setTimeout(() => {
      timedOut = true
      kill('SIGTERM')
      setTimeout(() => kill('SIGKILL'), 5000).unref()
    }, limitSec * 1000)
    child.on('close', (status, signal) => {
      clearTimeout(timer)
      // whatever the file left behind in its group goes with it
      kill('SIGKILL')
      resolve({ stdout, status, signal, timedOut })
    })
  })
}

const started = Date.now()
let passed = 0
let failed = 0
let skipped = 0
for (const f of files) {
  const r = await runFile(f)
  const skips = (r.stdout.match(/^SKIPPED: .*$/gm) ?? []).length
  const total = /Total:\s+(\d+)/.exec(r.stdout)
  const ok = /Passed:\s+(\d+)/.exec(r.stdout)
  if (r.timedOut) {
    console.log(`${f}: stopped after the time limit of ${limitSec} s (SLAPOS_TEST_FILE_TIMEOUT), counted as failed`)
    failed += 1
    continue
  }
  if (!total || !ok) {
    console.log(`${f}: did not finish (exit ${r.status ?? r.signal})`)
    failed += 1
    continue
  }
  // a skipped test passed for uvu: it is counted as skipped (failed in strict mode) instead
  passed += Number(ok[1]) - skips
  failed += Number(total[1]) - Number(ok[1])
  if (strict) {
    if (skips) console.log(`${f}: ${skips} skipped test(s), counted as failed (SLAPOS_TEST_STRICT=1)`)
    failed += skips
  } else skipped += skips
}
console.log(`${files.length} test files in ${Math.round((Date.now() - started) / 1000)} s`)
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
process.exitCode = failed === 0 && files.length > 0 ? 0 : 1
