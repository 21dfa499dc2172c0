// Bundles src/main.ts into one CommonJS file that Node's SEA embeds (see Makefile).
import { build } from 'esbuild'
import { readFileSync } from 'node:fs'

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }
await build({
  entryPoints: ['src/main.ts'],
  outfile: 'dist/slapos.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node24',
  // yargs 18 calls createRequire(import.meta.url); CJS output leaves import.meta empty.
  banner: { js: 'const __slapos_import_meta_url = require("node:url").pathToFileURL(__filename).href;' },
  define: { 'import.meta.url': '__slapos_import_meta_url', SLAPOS_VERSION: JSON.stringify(pkg.version) },
  legalComments: 'none',
  logLevel: 'warning',
})
