// The esbuild plugins of build.ts change third-party code to make it cheaper to load: the
// code they produce must still apply (the upstream text is still there) and behave as the
// original does.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { build, type Plugin } from 'esbuild'
import stringWidth from 'string-width'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { lazyStringWidth, yargsShim } from '../scripts/esbuild-plugins.ts'
import { tempDir } from './helpers.ts'

const SAMPLES = ['', 'abc', 'slapos node instance', '日本語', 'ｶﾞ', '한국어', 'e\u0301', '👍', '👍🏽', '1\u20E3', '👨‍👩‍👧', '\u001b[31mred\u001b[0m', '\t', 'a\u200bb', '☺\ufe0f', '🇫🇷']

/** Bundles `code` (resolved from the project) with `plugin`; returns the output path and text. */
async function bundle(code: string, plugin: Plugin): Promise<{ path: string; text: string }> {
  const path = join(tempDir('slapos-plugins-'), 'out.mjs')
  const r = await build({ stdin: { contents: code, resolveDir: process.cwd() }, bundle: true, platform: 'node', format: 'esm', write: false, plugins: [plugin], logLevel: 'error' })
  const text = r.outputFiles[0]?.text ?? ''
  writeFileSync(path, text)
  return { path, text }
}

test('lazy-string-width: applies, creates nothing when loaded, and measures as string-width does', async () => {
  const { path, text } = await bundle("export { default } from 'string-width'", lazyStringWidth)
  assert.not.match(text, /const segmenter = new Intl\.Segmenter\(\);/)
  assert.not.match(text, /^\s*const \w+Regex = \//m, 'every regular expression is made on first use')
  assert.match(text, /rgiEmojiRegex_\(\)/)
  const { default: lazy } = (await import(path)) as { default: (s: string) => number }
  for (const s of SAMPLES) assert.is(lazy(s), stringWidth(s), JSON.stringify(s))
})

test("lazy-string-width: cliui's own string-width 7 gets the ASCII fast path and measures as before", async () => {
  const path7 = join(process.cwd(), 'node_modules', 'cliui', 'node_modules', 'string-width', 'index.js')
  const { path, text } = await bundle(`export { default } from ${JSON.stringify(path7)}`, lazyStringWidth)
  assert.match(text, /return string\.length;/)
  assert.not.match(text, /const segmenter = new Intl\.Segmenter\(\);/)
  const { default: lazy } = (await import(path)) as { default: (s: string, o?: object) => number }
  const { default: original } = (await import(path7)) as { default: (s: string, o?: object) => number }
  for (const s of [...SAMPLES, '  --jobs  number of partitions processed at the same time  [number] [default: 1]', '\u007f', 'a\u0085b']) {
    assert.is(lazy(s), original(s), JSON.stringify(s))
    assert.is(lazy(s, { ambiguousIsNarrow: false }), original(s, { ambiguousIsNarrow: false }), JSON.stringify(s))
    assert.is(lazy(s, { countAnsiEscapeCodes: true }), original(s, { countAnsiEscapeCodes: true }), JSON.stringify(s))
  }
})

test('yargs-shim: applies, and the bundled yargs still parses, rejects and renders help', async () => {
  const { path, text } = await bundle("export { default } from 'yargs'", yargsShim)
  assert.not.match(text, /from "assert"|require\("assert"\)/)
  // package.json is looked for next to the program only, not in every directory up to /
  assert.match(text, /findUp: \(dir\) => join\d*\(dir, "package\.json"\)/)
  const { default: yargs } = (await import(path)) as { default: typeof import('yargs').default }
  const argv = await yargs(['--jobs', '3']).option('jobs', { type: 'number' }).strict().exitProcess(false).parseAsync()
  assert.is(argv.jobs, 3)
  let failed = ''
  await yargs(['--nope'])
    .strict()
    .exitProcess(false)
    .fail((msg) => {
      failed = msg
    })
    .parseAsync()
  assert.match(failed, /Unknown argument: nope/)
  const help = await yargs([]).scriptName('slapos x').option('jobs', { type: 'number', describe: 'partitions at a time' }).version(false).getHelp()
  assert.match(help, /--jobs\s+partitions at a time\s+\[number\]/)
})

test.run()
