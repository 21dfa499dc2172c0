// Logging: console threshold, formats of console and file lines, colour only on a terminal,
// and the global options that set them.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { splitGlobal } from '../src/cli.ts'
import { createLogger, levelFromVerbosity } from '../src/log.ts'
import { tempDir } from './helpers.ts'

test('console lines: threshold, format, no colour off a terminal', () => {
  const lines: string[] = []
  const log = createLogger({ level: 'info', write: (l) => lines.push(l), isTTY: false })
  log.debug('hidden')
  log.info('Updating computer')
  log.child('slappart3').warning('promise failed')
  assert.is(lines.length, 2)
  assert.match(lines[0] ?? '', /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d slapos\[\d+\] INFO Updating computer\n$/)
  assert.match(lines[1] ?? '', / WARNING \[slappart3\] promise failed\n$/)
  assert.not.match(lines.join(''), /\x1b\[/)
})

test('colour on a terminal, timestamps dropped with --log-time', () => {
  const lines: string[] = []
  const log = createLogger({ level: 'info', write: (l) => lines.push(l), isTTY: true, noTime: true })
  log.error('boom')
  assert.match(lines[0] ?? '', /\x1b\[31mboom/)
  assert.not.match(lines[0] ?? '', /\d{4}-\d\d-\d\d/)
})

test('the log file gets every level in the original file format', () => {
  const file = join(tempDir(), 'sub', 'slapos.log')
  const log = createLogger({ level: 'warning', file, write: () => {}, isTTY: false })
  log.debug('detail')
  log.error('bad')
  const text = readFileSync(file, 'utf8')
  assert.match(text, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\] DEBUG    detail\n\[.*\] ERROR    bad\n$/)
})

test('global options are taken from anywhere on the line', () => {
  const { global, rest } = splitGlobal(['node', 'format', '--now', '-v', '--log_file', '/tmp/x.log', '-vv', '--cfg', 'a.cfg'])
  assert.equal(rest, ['node', 'format', '--now', '--cfg', 'a.cfg'])
  assert.is(global.verbosity, 4)
  assert.is(global.logFile, '/tmp/x.log')
  assert.is(levelFromVerbosity(global.verbosity), 'debug')
  assert.is(splitGlobal(['-q', 'help']).global.verbosity, 0)
  assert.is(levelFromVerbosity(0), 'warning')
  assert.throws(() => splitGlobal(['--log-level', 'loud']), /--log-level must be one of/)
})

test.run()
