// Entry point of the slapos executable: the only place that reads process.argv and sets
// the exit status. Everything else is in cli.ts.
import { basename } from 'node:path'
import { run } from './cli.ts'

async function main(): Promise<void> {
  const code = await run(process.argv.slice(2), { programName: basename(process.argv0) })
  process.exitCode = code
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
