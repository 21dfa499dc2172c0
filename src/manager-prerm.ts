// The prerm manager (node-extras §1.7): before a partition is destroyed, the scripts of its
// `etc/prerm/` run once under supervisord (group `<id>-prerm`, as the partition user), and
// `node report` keeps the partition until they have exited. Each report run of a partition
// the master wants destroyed: scripts added and started once, their names written to
// `.slapos-report-wait-service-list`, which grid-report.ts reads before destroying.
// Used through managers.ts.
import { lstatSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { WAIT_LIST_FILE, retentionLock } from './grid-report.ts'
import type { Manager, ManagerOptions, ManagerPartition } from './managers.ts'
import { escapeControls } from './names.ts'
import { writePartitionFile } from './promise.ts'
import { isServiceName, writeManagerGroup } from './supervisor.ts'

export function prermManager(_options: ManagerOptions): Manager {
  return {
    name: 'prerm',
    async report(p) {
      await startPreDeleteScripts(p)
    },
  }
}

/** §1.7 steps 1-5. Scripts already started (even long finished) are not started again. */
export async function startPreDeleteScripts(p: ManagerPartition): Promise<void> {
  // under a retention lock nothing is destroyed yet, so nothing prepares its destruction
  if (retentionLock(p, p.now())) return
  const scripts = preDeleteScripts(p)
  if (scripts.length === 0) return
  p.log.info('Adding pre-delete scripts to supervisord...')
  const programs = scripts.map((name) => ({ name, argv: [join(p.path, 'etc', 'prerm', name)] }))
  if (writeManagerGroup(p.instanceRoot, p.processes, 'prerm', programs)) await p.sup.applyChanges()
  const names = scripts.map((name) => `${p.id}-prerm:${name}`)
  for (const [i, name] of names.entries()) {
    const info = await p.sup.processInfoOf(name)
    if (info && info.start === 0) {
      p.log.info(`Starting pre-delete process '${scripts[i] ?? ''}'...`)
      await p.sup.startProcess(name)
    }
  }
  writePartitionFile(join(p.path, WAIT_LIST_FILE), names.map((n) => n + '\n').join(''), 0o644)
}

/**
 * Names of the regular files of `etc/prerm/` (the partition user's: links and directories are
 * left out, and a name that cannot be a supervisord program is refused with a warning).
 */
function preDeleteScripts(p: ManagerPartition): string[] {
  const dir = join(p.path, 'etc', 'prerm')
  const st = lstatSync(dir, { throwIfNoEntry: false })
  if (!st?.isDirectory()) return []
  const names: string[] = []
  for (const name of readdirSync(dir).sort()) {
    if (!lstatSync(join(dir, name), { throwIfNoEntry: false })?.isFile()) continue
    if (!isServiceName(name)) {
      p.log.warning(`etc/prerm/${escapeControls(name)}: refused, a program name has only letters, digits and ._+@-`)
      continue
    }
    names.push(name)
  }
  return names
}
