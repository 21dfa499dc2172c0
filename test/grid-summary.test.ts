// Unit test of the end-of-run table of `node instance` (grid-instance.ts): it writes each
// result as --json does.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { summaryTable } from '../src/grid-instance.ts'

test('the table writes results as --json does (up-to-date, promise-failed), in columns', () => {
  const table = summaryTable([
    { id: 'slappart0', state: 'started', softwareType: 'default', result: 'deployed', message: undefined, durationMs: 1234 },
    { id: 'slappart1', state: 'started', softwareType: 'default', result: 'up-to-date', message: undefined, durationMs: 5 },
    { id: 'slappart2', state: 'destroyed', softwareType: undefined, result: 'stopped', message: undefined, durationMs: 50 },
    { id: 'slappart10', state: 'started', softwareType: 'default', result: 'promise-failed', message: 'x', durationMs: 20_000 },
  ])
  assert.is(
    table,
    [
      'partition   state      result          duration',
      'slappart0   started    deployed        1.2 s',
      'slappart1   started    up-to-date      0.0 s',
      'slappart2   destroyed  stopped         0.1 s',
      'slappart10  started    promise-failed  20.0 s',
      '',
    ].join('\n'),
  )
  assert.is(summaryTable([]), '')
})

test.run()
