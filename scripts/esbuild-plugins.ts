// esbuild plugins of build.ts: each trims what every start of the executable pays for.
// Each one checks that the text it changes is still there, and leaves the file alone if not.
import type { Plugin } from 'esbuild'
import { readdirSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'

// The SLAP client gives ofetch its own fetch over node:http(s). ofetch's Node entry point
// loads node-fetch-native and Node's fetch implementation anyway, tens of milliseconds at
// every start of a node command: bundle only its core (createFetch), which needs neither.
export const ofetchCore: Plugin = {
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

// string-width (used by yargs and cliui for help layout, in two versions) makes an
// Intl.Segmenter and Unicode property regular expressions when it is loaded: ICU's break data
// and character sets, ~20 ms at every start, although a command line that is not asking for
// help never measures a string, and help text (ASCII) needs none of them. Make each on first
// use, and give the older version the ASCII fast path of the newer one.
export const lazyStringWidth: Plugin = {
  name: 'lazy-string-width',
  setup(b) {
    b.onLoad({ filter: /[\\/]string-width[\\/]index\.js$/ }, (args) => {
      let text = readFileSync(args.path, 'utf8')
      const eager = 'const segmenter = new Intl.Segmenter();'
      if (!text.includes(eager)) return undefined
      text = text.replace(eager, 'let segmenter$; const segmenter = { segment: (s) => (segmenter$ ??= new Intl.Segmenter()).segment(s) };')
      // `const fooRegex = /.../flags;` -> a function making it once; every use calls it
      const names: string[] = []
      text = text.replace(/^const (\w+Regex) = (\/.+\/[a-z]*);$/gm, (_, name: string, literal: string) => {
        const re = new Function(`return ${literal}`)() as RegExp
        names.push(name)
        return `let ${name}$; const ${name}_ = () => (${name}$ ??= new RegExp(${JSON.stringify(re.source)}, ${JSON.stringify(re.flags)}));`
      })
      for (const name of names) text = text.replace(new RegExp(`\\b${name}\\b(?![$_])`, 'g'), `${name}_()`)
      // string-width 7 (cliui's own copy) has no fast path: every help line went through the
      // segmenter. Printable ASCII is one column per character there too.
      const slow = '\tlet width = 0;\n\tconst eastAsianWidthOptions'
      if (text.includes(slow)) text = text.replace(slow, `\tif (/^[\\x20-\\x7E]*$/.test(string)) {\n\t\treturn string.length;\n\t}\n\n${slow}`)
      return { contents: text, loader: 'js' }
    })
  },
}

// yargs' platform shim:
// - imports node:assert (with its diff and colour helpers) for two checks it makes on every
//   parse: make the comparison here (assert's strict equality is Object.is) and load
//   node:assert only to throw its error when a check fails;
// - looks for a package.json (its default --version and package.json settings, neither used
//   here) by reading every directory from the executable's up to /: /usr/bin alone holds
//   thousands of names. Look only next to the executable.
export const yargsShim: Plugin = {
  name: 'yargs-shim',
  setup(b) {
    b.onLoad({ filter: /[\\/]yargs[\\/]lib[\\/]platform-shims[\\/]esm\.mjs$/ }, (args) => {
      let text = readFileSync(args.path, 'utf8')
      const eager = "import { notStrictEqual, strictEqual } from 'assert'"
      const scan = 'findUp: escalade,'
      if (!text.includes(eager) || !text.includes(scan)) return undefined
      const lazy = [
        "const assert$ = () => process.getBuiltinModule('node:assert')",
        'const notStrictEqual = (a, b, m) => { if (Object.is(a, b)) assert$().notStrictEqual(a, b, m) }',
        'const strictEqual = (a, b, m) => { if (!Object.is(a, b)) assert$().strictEqual(a, b, m) }',
      ].join('\n')
      text = text.replace(eager, lazy).replace(scan, "findUp: (dir) => join(dir, 'package.json'),")
      return { contents: text, loader: 'js' }
    })
  },
}
