// Benchmark of `slapos node format`: the built binary formats N partitions (default 100) as
// root in a private network + mount namespace (veth pair, private /etc), then re-runs.
// Prints the wall time of both runs. Target: first run <= 20 s for 100 partitions.
// Usage: node scripts/bench-format.ts [partitions]   (needs root and a built dist/slapos)
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from '../test/helpers.ts'
import { canUseNamespaces, formatInNamespace } from '../test/netns.ts'

const partitions = Number(process.argv[2] ?? 100)
if (!canUseNamespaces()) {
  console.error('bench-format: needs root and unshare --net --mount')
  process.exit(1)
}
const dir = tempDir('slapos-bench-format-')
const t0 = Date.now()
const run = await formatInNamespace(dir, { partitions, runs: 2, verbose: false })
const total = Date.now() - t0
if (run.code !== 0 || run.formatCodes.some((c) => c !== 0)) {
  console.error(run.output)
  console.error(readFileSync(join(dir, 'state', 'format.1.log'), 'utf8').split('\n').slice(-20).join('\n'))
  process.exit(1)
}
const [first = 0, second = 0] = run.formatMs
console.log(`node format, ${partitions} partitions (users, IPv4 + IPv6 per partition, IPv6 ranges, real kernel):`)
console.log(`  first run   ${(first / 1000).toFixed(2)} s  (target <= 20 s; the original: ~4.2 s per partition)`)
console.log(`  second run  ${(second / 1000).toFixed(2)} s  (nothing to change)`)
console.log(`  namespace set-up + proxy + both runs: ${(total / 1000).toFixed(2)} s`)
rmSync(dir, { recursive: true, force: true })
