// Unit tests of grid-plan.ts: partition selection and the timestamp/periodicity rules of
// grid.md §4.2-4.3 (checklist 46, 47, 51-62), as a table of local states and master wishes.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import {
  canonicalText,
  deploymentRecord,
  deploymentRecordFile,
  masterView,
  parseOnlyList,
  periodicityOf,
  planPartition,
  runExitCode,
  unknownPartitionsMessage,
  type LocalPartitionState,
  type PlanOptions,
  type WantedPartition,
} from '../src/grid-plan.ts'
import type { ComputerPartition } from '../src/slap-client.ts'
import { Tuple } from '../src/slap-protocol.ts'

const NOW = Date.UTC(2026, 0, 1, 12, 0, 0)
const SR = '/srv/sr/software.cfg'

function wanted(p: Partial<WantedPartition> = {}): WantedPartition {
  return { id: 'slappart0', state: 'started', softwareReleaseUrl: SR, timestamp: '1700000000.5', ...p }
}
function local(p: Partial<LocalPartitionState> = {}): LocalPartitionState {
  return { dirExists: true, ...p }
}
function opts(p: Partial<PlanOptions> = {}): PlanOptions {
  return { force: false, forceStop: false, maximumPeriodicity: 86400, nowMs: NOW, ...p }
}
/** a .timestamp written `agoSec` seconds before NOW */
function ts(content: string, agoSec: number) {
  return { content, mtimeMs: NOW - agoSec * 1000 }
}

const selection = suite('partition selection (grid.md §4.2)')

selection('missing directory is reported, whatever the state (checklist 47)', () => {
  assert.equal(planPartition(wanted(), local({ dirExists: false }), opts()), { kind: 'missing-dir' })
  assert.equal(planPartition(wanted({ state: 'destroyed', softwareReleaseUrl: null }), local({ dirExists: false }), opts()), { kind: 'missing-dir' })
})

selection('destroyed without software release is a free partition (checklist 46)', () => {
  for (const url of [null, '']) {
    assert.equal(planPartition(wanted({ state: 'destroyed', softwareReleaseUrl: url }), local(), opts()), { kind: 'free' })
  }
  // free wins over --force and over --only-cp
  assert.equal(planPartition(wanted({ state: 'destroyed', softwareReleaseUrl: null }), local(), opts({ force: true, only: new Set(['x']) })), { kind: 'free' })
})

selection('destroyed with a software release is processed (stopped, checklist 76)', () => {
  const d = planPartition(wanted({ state: 'destroyed' }), local(), opts())
  assert.is(d.kind, 'process')
  assert.is(d.kind === 'process' && d.state, 'destroyed')
})

selection('a stopped or started partition without software release is still processed', () => {
  assert.is(planPartition(wanted({ state: 'stopped', softwareReleaseUrl: null }), local(), opts()).kind, 'process')
})

selection('--only-cp leaves other partitions alone', () => {
  const only = parseOnlyList('slappart1,slappart2')
  assert.equal(planPartition(wanted(), local(), opts({ only })), { kind: 'not-selected' })
  assert.is(planPartition(wanted({ id: 'slappart1' }), local(), opts({ only })).kind, 'process')
})

selection('--only-cp parsing and unknown ids (checklist 10)', () => {
  assert.equal([...(parseOnlyList('a,b,,c') ?? [])], ['a', 'b', 'c'])
  assert.equal([...(parseOnlyList(' a') ?? [])], [' a'], 'no spaces stripped, like the original')
  assert.is(parseOnlyList(undefined), undefined)
  assert.is(unknownPartitionsMessage(['a', 'b'], new Set(['a'])), undefined)
  assert.is(unknownPartitionsMessage(['a', 'b'], undefined), undefined)
  assert.is(unknownPartitionsMessage(['a'], new Set(['x'])), 'Unknown partition: x')
  assert.is(unknownPartitionsMessage(['a'], new Set(['z', 'a', 'y'])), 'Unknown partitions: y, z')
})

const stamps = suite('timestamps and periodicity (grid.md §4.3)')

stamps('first run: processed, timestamp to write, nothing to delete (checklist 51)', () => {
  assert.equal(planPartition(wanted(), local(), opts()), {
    kind: 'process',
    state: 'started',
    deleteTimestamp: false,
    writeTimestamp: '1700000000.5',
    periodicity: 86400,
    deletePeriodicityFile: false,
  })
})

stamps('equal timestamp within the periodicity: up to date, whatever the state (checklist 52)', () => {
  for (const state of ['started', 'stopped', 'destroyed']) {
    const d = planPartition(wanted({ state }), local({ timestamp: ts('1700000000.5', 10) }), opts())
    assert.is(d.kind, 'up-to-date', state)
  }
})

stamps('any difference, newer or older, is processed and the old .timestamp goes first (checklist 53, 60)', () => {
  for (const old of ['1700000001', '1699999999', '1700000000.50', '1700000000.5\n', '']) {
    const d = planPartition(wanted(), local({ timestamp: ts(old, 10) }), opts())
    assert.is(d.kind, 'process', JSON.stringify(old))
    assert.ok(d.kind === 'process' && d.deleteTimestamp && d.writeTimestamp === '1700000000.5')
  }
})

stamps('no master timestamp: processed every run, nothing written nor deleted (checklist 54)', () => {
  const d = planPartition(wanted({ timestamp: undefined }), local({ timestamp: ts('1', 10) }), opts())
  assert.equal(d.kind === 'process' && [d.deleteTimestamp, d.writeTimestamp], [false, undefined])
})

stamps('--force processes up-to-date partitions, keeps the old file until success (checklist 55)', () => {
  const d = planPartition(wanted(), local({ timestamp: ts('1700000000.5', 10) }), opts({ force: true }))
  assert.is(d.kind, 'process')
  assert.equal(d.kind === 'process' && [d.deleteTimestamp, d.writeTimestamp], [false, '1700000000.5'])
})

stamps('--only-cp without --force still skips an up-to-date listed partition (checklist 56, HEAD)', () => {
  const d = planPartition(wanted(), local({ timestamp: ts('1700000000.5', 10) }), opts({ only: new Set(['slappart0']) }))
  assert.is(d.kind, 'up-to-date')
  assert.is(planPartition(wanted(), local({ timestamp: ts('1700000000.5', 10) }), opts({ only: new Set(['slappart0']), force: true })).kind, 'process')
})

stamps('the SR periodicity file overrides maximum_periodicity (checklist 57)', () => {
  const l = local({ timestamp: ts('1700000000.5', 120), periodicityFile: '60\n' })
  const d = planPartition(wanted(), l, opts())
  assert.is(d.kind, 'process')
  assert.is(d.kind === 'process' && d.periodicity, 60)
  // same age, no file: maximum_periodicity of a day applies
  assert.is(planPartition(wanted(), local({ timestamp: ts('1700000000.5', 120) }), opts()).kind, 'up-to-date')
  // file says longer than the default
  assert.is(planPartition(wanted(), local({ timestamp: ts('1700000000.5', 90000), periodicityFile: '100000' }), opts()).kind, 'up-to-date')
})

stamps('after the periodicity every state is re-processed (checklist 58)', () => {
  for (const state of ['started', 'stopped', 'destroyed']) {
    const d = planPartition(wanted({ state }), local({ timestamp: ts('1700000000.5', 86401) }), opts())
    assert.is(d.kind, 'process', state)
    assert.ok(d.kind === 'process' && d.deleteTimestamp)
  }
  // boundary: now == mtime + periodicity is still up to date
  assert.is(planPartition(wanted(), local({ timestamp: ts('1700000000.5', 86400) }), opts()).kind, 'up-to-date')
})

stamps('periodicity 0: every run; negative: never while unchanged (checklist 59)', () => {
  const fresh = local({ timestamp: ts('1700000000.5', 1) })
  const d0 = planPartition(wanted(), fresh, opts({ maximumPeriodicity: 0 }))
  assert.is(d0.kind, 'process')
  assert.equal(d0.kind === 'process' && [d0.deleteTimestamp, d0.writeTimestamp], [false, '1700000000.5'])
  assert.is(planPartition(wanted(), local({ timestamp: ts('1700000000.5', 1), periodicityFile: '0' }), opts()).kind, 'process')
  const ancient = local({ timestamp: ts('1700000000.5', 10 * 365 * 86400) })
  assert.is(planPartition(wanted(), ancient, opts({ maximumPeriodicity: -1 })).kind, 'up-to-date')
  assert.is(planPartition(wanted(), { ...ancient, periodicityFile: '-5' }, opts()).kind, 'up-to-date')
  // negative but the timestamp changed: processed
  assert.is(planPartition(wanted({ timestamp: '2' }), ancient, opts({ maximumPeriodicity: -1 })).kind, 'process')
})

stamps('an unparsable periodicity file is to be deleted and the default used (checklist 62)', () => {
  assert.equal(periodicityOf('abc', 86400), { periodicity: 86400, deleteFile: true })
  assert.equal(periodicityOf('', 100), { periodicity: 100, deleteFile: true })
  assert.equal(periodicityOf('1.5', 100), { periodicity: 100, deleteFile: true })
  assert.equal(periodicityOf(' 42 \n', 100), { periodicity: 42, deleteFile: false })
  assert.equal(periodicityOf('+7', 100), { periodicity: 7, deleteFile: false })
  assert.equal(periodicityOf(undefined, 100), { periodicity: 100, deleteFile: false })
  const d = planPartition(wanted(), local({ timestamp: ts('1700000000.5', 10), periodicityFile: 'soon' }), opts())
  assert.equal(d, { kind: 'up-to-date', periodicity: 86400, deletePeriodicityFile: true })
})

stamps('--force-stop: started partitions always processed, no timestamp written (checklist 79)', () => {
  const d = planPartition(wanted(), local({ timestamp: ts('1700000000.5', 10) }), opts({ forceStop: true }))
  assert.is(d.kind, 'process')
  assert.equal(d.kind === 'process' && [d.deleteTimestamp, d.writeTimestamp], [false, undefined])
  // stopped partitions keep the normal rules
  assert.is(planPartition(wanted({ state: 'stopped' }), local({ timestamp: ts('1700000000.5', 10) }), opts({ forceStop: true })).kind, 'up-to-date')
})

stamps('unsupported state is handed to processing (it fails there, checklist 77)', () => {
  const d = planPartition(wanted({ state: 'paused' }), local(), opts())
  assert.is(d.kind === 'process' && d.state, 'paused')
})

stamps('exit status precedence: failure 1 over promise 2 over success 0 (checklist 61, §0.2)', () => {
  assert.is(runExitCode(0, 0), 0)
  assert.is(runExitCode(0, 3), 2)
  assert.is(runExitCode(1, 3), 1)
  assert.is(runExitCode(2, 0), 1)
})

const master = suite('masterView: the one reading of the master\'s partition; canonicalText')

function partition(p: Partial<ComputerPartition>): ComputerPartition {
  return { className: 'ComputerPartition', _computer_id: 'c', _partition_id: 'slappart0', _request_dict: null, raw: {} as ComputerPartition['raw'], ...p }
}

master('a busy partition: URL from the document or a plain string, state, type, timestamp and title as text', () => {
  const params = { timestamp: 1700000000, slap_software_type: 'default', instance_title: 'parent', n: '1' }
  const m = masterView(partition({ _requested_state: 'started', _software_release_document: SR, _parameter_dict: params, _instance_guid: 'SOFTINST-1' }))
  assert.equal([m.id, m.softwareReleaseUrl, m.state, m.softwareType, m.timestamp, m.title], ['slappart0', SR, 'started', 'default', '1700000000', 'parent'])
  assert.is(m.parameters, params)
  const doc = { _software_release: SR } as unknown as ComputerPartition['_software_release_document']
  assert.is(masterView(partition({ _software_release_document: doc })).softwareReleaseUrl, SR)
})

master('a free partition: destroyed, no URL, no timestamp; a non-string software type is none', () => {
  const m = masterView(partition({ _parameter_dict: { slap_software_type: 3 } }))
  assert.equal([m.state, m.softwareReleaseUrl, m.timestamp, m.softwareType, m.title], ['destroyed', null, undefined, undefined, undefined])
})

master('the instance held: another guid or title is another instance, and so another record', () => {
  const view = (guid: string, title: string) => masterView(partition({ _instance_guid: guid, _parameter_dict: { instance_title: title } }))
  assert.is(view('G1', 'a').instance, view('G1', 'a').instance)
  assert.is.not(view('G1', 'a').instance, view('G2', 'a').instance)
  assert.is.not(view('G1', 'a').instance, view('G1', 'b').instance)
  assert.is.not(deploymentRecord(view('G1', 'a')).instance, deploymentRecord(view('G1', 'b')).instance)
})

master('canonicalText: key order does not matter, a tuple is not a list; the record file lies in var/run', () => {
  assert.is(canonicalText({ a: 1, b: { c: [1, 2], d: 'x' } }), canonicalText({ b: { d: 'x', c: [1, 2] }, a: 1 }))
  assert.is.not(canonicalText(new Tuple([1, 2])), canonicalText([1, 2]))
  assert.is(deploymentRecordFile('/srv/slapgrid', 'slappart3'), '/srv/slapgrid/var/run/slappart3.deployment')
})

selection.run()
stamps.run()
master.run()
