// Bundles src/main.ts into one CommonJS file that Node's SEA embeds (see Makefile).
import { build, type Plugin } from 'esbuild'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'

// The SLAP client gives ofetch its own fetch over node:http(s). ofetch's Node entry point
// loads node-fetch-native and Node's fetch implementation anyway, tens of milliseconds at
// every start of a node command: bundle only its core (createFetch), which needs neither.
const ofetchCore: Plugin = {
  name: 'ofetch-core',
  setup(b) {
    const dir = resolve('node_modules/ofetch/dist/shared')
    const chunk = readdirSync(dir).find((f) => /^ofetch\..*\.mjs$/.test(f))
    if (!chunk) throw new Error(`ofetch: no shared chunk in ${dir}`)
    b.onResolve({ filter: /^ofetch$/ }, () => ({ path: 'ofetch-core', namespace: 'ofetch-core' }))
    b.onLoad({ filter: /.*/, namespace: 'ofetch-core' }, () => ({
      contents: `export { c as createFetch } from ${JSON.stringify(resolve(dir, chunk))}`,
      resolveDir: dir,
    }))
  },
}

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }
// string-width (used by yargs for help layout) makes an Intl.Segmenter when it is loaded,
// which loads ICU's break data: ~15 ms at every start, although a command line that is not
// asking for help never measures a string. Make it on first use instead.
const lazySegmenter: Plugin = {
  name: 'lazy-segmenter',
  setup(b) {
    b.onLoad({ filter: /[\\/]string-width[\\/]index\.js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8')
      const eager = 'const segmenter = new Intl.Segmenter();'
      if (!text.includes(eager)) return undefined
      const lazy = 'let segmenter$; const segmenter = { segment: (s) => (segmenter$ ??= new Intl.Segmenter()).segment(s) };'
      return { contents: text.replace(eager, lazy), loader: 'js' }
    })
  },
}

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
  plugins: [ofetchCore, lazySegmenter],
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
