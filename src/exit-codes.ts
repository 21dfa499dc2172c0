// Process exit statuses. Scripts and cron jobs depend on these numbers, so each one
// mirrors the original slapos.core value named beside it (spec cli.md §7, grid.md §0.2).
export const EXIT = {
  OK: 0,
  /** uncaught error, explicit failure (slapgrid SLAPGRID_FAIL) */
  FAIL: 1,
  /** argparse usage error; slapgrid SLAPGRID_PROMISE_FAIL; client "not ready" / not found */
  USAGE: 2,
  PROMISE_FAIL: 2,
  NOT_READY: 2,
  /** format prepared the machine but could not post to the master */
  FORMAT_POST_FAILED: 2,
  /** slapgrid SLAPGRID_OFFLINE_SUCCESS */
  OFFLINE_SUCCESS: 3,
  /** not root where root is needed; unknown command; option before the command */
  NOT_ROOT: 5,
  UNKNOWN_COMMAND: 5,
  /** another slapos process holds the pid file */
  LOCKED: 10,
  /** node prune refused (the original exits with -1) */
  PRUNE_REFUSED: 255,
} as const
