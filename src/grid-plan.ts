// Pure decisions of `slapos node instance` (grid.md §4.2-4.3): which partitions of the
// master's list are looked at, and for each one whether it is skipped (free, missing
// directory, up to date) or processed. No file system, no clock: grid-instance.ts reads
// the local state, asks planPartition, then does what the decision says.
//
//   master list ──selectPartitions──> kept ids (or "Unknown partition: X")
//   per partition:   free ──────────> clean .slapgrid/.timestamp, no master call
//                    missing-dir ───> /softwareInstanceError, exit status unchanged
//                    up-to-date ────> nothing (no buildout, no status call)
//                    process ───────> install / start / stop, then .timestamp

/** What the master says about one partition, in the words grid-instance.ts needs. */
export interface WantedPartition {
  id: string
  /** requested state: started, stopped, destroyed (anything else is an error) */
  state: string
  /** URL of its software release; empty or null for a free partition */
  softwareReleaseUrl: string | null
  /** `timestamp` of its instance parameters, absent when the master gave none */
  timestamp: string | undefined
}

/** What is on this machine for one partition. */
export interface LocalPartitionState {
  dirExists: boolean
  /** `.timestamp`: content and modification time (ms since epoch); undefined when absent */
  timestamp?: { content: string; mtimeMs: number } | undefined
  /** raw content of `<software_path>/periodicity`; undefined when the file is absent */
  periodicityFile?: string | undefined
}

export interface PlanOptions {
  /** --force / --all */
  force: boolean
  /** --force-stop */
  forceStop: boolean
  /** --only-cp ids; undefined when not given */
  only?: ReadonlySet<string> | undefined
  /** maximum_periodicity (seconds) */
  maximumPeriodicity: number
  /** current time, ms since epoch */
  nowMs: number
}

export type PartitionDecision =
  /** destroyed with no software release: delete `.slapgrid` and `.timestamp`, no master call */
  | { kind: 'free' }
  /** partition directory missing: report the error to the master, do not change the exit status */
  | { kind: 'missing-dir' }
  /** not named by --only-cp */
  | { kind: 'not-selected' }
  /** `.timestamp` equals the master's and the periodicity has not elapsed */
  | { kind: 'up-to-date'; periodicity: number; deletePeriodicityFile: boolean }
  | {
      kind: 'process'
      state: string
      /** the old `.timestamp` must go before processing, so a failure leaves none */
      deleteTimestamp: boolean
      /** value to write into `.timestamp` after a fully successful processing, if any */
      writeTimestamp: string | undefined
      periodicity: number
      /** the periodicity file did not parse: the original deletes it */
      deletePeriodicityFile: boolean
    }

/**
 * --only-cp ids that the master does not know, sorted, turned into the original's message
 * (`Unknown partition: X` / `Unknown partitions: X, Y`); undefined when all are known.
 */
export function unknownPartitionsMessage(masterIds: Iterable<string>, only: ReadonlySet<string> | undefined): string | undefined {
  if (!only) return undefined
  const known = new Set(masterIds)
  const unknown = [...only].filter((id) => !known.has(id)).sort()
  if (unknown.length === 0) return undefined
  return `${unknown.length === 1 ? 'Unknown partition' : 'Unknown partitions'}: ${unknown.join(', ')}`
}

/** `--only-cp a,b`: comma-separated, no spaces stripped (as the original), empty entries dropped. */
export function parseOnlyList(value: string | undefined): Set<string> | undefined {
  if (value === undefined) return undefined
  return new Set(value.split(',').filter((s) => s !== ''))
}

/**
 * Periodicity of a partition: the integer in its software release's `periodicity` file when
 * it parses (Python int(): surrounding blanks, optional sign), else maximum_periodicity; an
 * unparsable file is to be deleted (slapgrid.py `processComputerPartition`).
 */
export function periodicityOf(file: string | undefined, maximumPeriodicity: number): { periodicity: number; deleteFile: boolean } {
  if (file === undefined) return { periodicity: maximumPeriodicity, deleteFile: false }
  const m = /^\s*([-+]?\d+(?:_\d+)*)\s*$/.exec(file)
  if (!m || m[1] === undefined) return { periodicity: maximumPeriodicity, deleteFile: true }
  return { periodicity: Number.parseInt(m[1].replace(/_/g, ''), 10), deleteFile: false }
}

/**
 * The decision for one partition, in the order of slapgrid.py `FilterComputerPartitionList`
 * then `processComputerPartition` (HEAD rules of grid.md §4.3): like the original, a
 * partition whose `.timestamp` equals the master's and whose periodicity has not elapsed is
 * skipped unless --force; any other timestamp (older or newer) is processed.
 */
export function planPartition(wanted: WantedPartition, local: LocalPartitionState, opts: PlanOptions): PartitionDecision {
  if (!local.dirExists) return { kind: 'missing-dir' }
  if (wanted.state === 'destroyed' && !wanted.softwareReleaseUrl) return { kind: 'free' }
  if (opts.only && !opts.only.has(wanted.id)) return { kind: 'not-selected' }

  const { periodicity, deleteFile } = periodicityOf(local.periodicityFile, opts.maximumPeriodicity)
  // --force-stop on a started partition: as if the master gave no timestamp (always
  // processed, never recorded), so the next normal run starts the services again.
  const masterTimestamp = opts.forceStop && wanted.state === 'started' ? undefined : wanted.timestamp
  let deleteTimestamp = false
  if (!opts.force && masterTimestamp !== undefined && periodicity !== 0) {
    const ts = local.timestamp
    if (ts && ts.content === masterTimestamp) {
      const now = Math.floor(opts.nowMs / 1000)
      const last = Math.floor(ts.mtimeMs / 1000)
      if (periodicity < 0 || now <= last + periodicity) {
        return { kind: 'up-to-date', periodicity, deletePeriodicityFile: deleteFile }
      }
    }
    if (ts) deleteTimestamp = true
  }
  return {
    kind: 'process',
    state: wanted.state,
    deleteTimestamp,
    writeTimestamp: masterTimestamp,
    periodicity,
    deletePeriodicityFile: deleteFile,
  }
}

/** Exit status of a run (grid.md §4.1.7): any failure wins over promise failures. */
export function runExitCode(failed: number, promiseFailed: number): 0 | 1 | 2 {
  if (failed > 0) return 1
  if (promiseFailed > 0) return 2
  return 0
}
