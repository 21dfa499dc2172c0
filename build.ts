// Bundles src/main.ts into one CommonJS file that Node's SEA embeds (see Makefile).
import { build } from 'esbuild'
import { readFileSync, writeFileSync } from 'node:fs'
import { lazyStringWidth, ofetchCore, yargsShim } from './scripts/esbuild-plugins.ts'

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
  define: {
    'import.meta.url': '__slapos_import_meta_url',
    SLAPOS_VERSION: JSON.stringify(pkg.version),
    // the cron file the packages install, carried so that `node doctor` compares with it
    SLAPOS_NODE_CRON: JSON.stringify(readFileSync('packaging/slapos-node.cron', 'utf8')),
  },
  legalComments: 'none',
  minifyWhitespace: true,
  minifySyntax: true,
  plugins: [ofetchCore, lazyStringWidth, yargsShim],
  logLevel: 'warning',
})

// esbuild escapes non-ASCII characters in code but keeps them in comments (§, →). One of
// them is enough for V8 to hold the whole bundle source as a two-byte string: 2.7 MB of
// heap instead of 1.3 MB in every slapos process. Escaped, the comments stay readable and
// the source stays one-byte (string literals and identifiers are already escaped).
const out = readFileSync('dist/slapos.cjs', 'utf8')
if (/[^\x00-\x7f]/.test(out)) {
  writeFileSync('dist/slapos.cjs', out.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`))
}
