// Writes the buildout launcher and its compatibility module (src/buildout-launcher.ts) under
// a directory, in the node home's layout (bin/buildout, lib/buildout/sitecustomize.py), for
// the packages and the installer. Usage: node scripts/buildout-launcher.ts DIR
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { COMPAT_MODULE, COMPAT_PATH, LAUNCHER, LAUNCHER_PATH } from '../src/buildout-launcher.ts'

const dir = process.argv[2]
if (!dir) {
  console.error('usage: buildout-launcher.ts DIR')
  process.exit(2)
}
for (const [path, content, mode] of [
  [LAUNCHER_PATH, LAUNCHER, 0o755],
  [COMPAT_PATH, COMPAT_MODULE, 0o644],
] as const) {
  const file = join(dir, path)
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(file, content)
  chmodSync(file, mode)
}
