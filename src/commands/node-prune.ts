// slapos node prune: delete the shared parts no software release of this node (or of a
// node nested in one of its partitions) uses any more. Run by hand, never while
// `node software` runs. The work is in prune.ts; this file checks the configuration,
// root and the software pid file.
import { statSync } from 'node:fs'
import type { CommandModule } from '../command.ts'
import { readConfig } from '../command.ts'
import { NODE_DEFAULTS } from '../config.ts'
import { ConfigError, NotRootError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'
import { acquirePidfile } from '../pidfile.ts'
import { pruneSharedParts } from '../prune.ts'

const nodePrune: CommandModule = {
  cfg: 'node',
  description:
    'Delete the shared parts (the last directory of shared_part_list) that no software release uses any more: ' +
    'a part stays while its hash appears in a software release .installed.cfg or bin/ script, in another ' +
    "part's signature, in an --additional-software-directory, or in a SlapOS node nested in a partition. " +
    'Passes repeat until nothing more is unused. Refused while node software runs (its pid file exists). ' +
    'Exit status: 0 done, 1 error, 5 not root, 10 another run holds the pid file, 255 no shared_part_list ' +
    'or node software running.',
  options: (y) =>
    y
      .option('dry-run', { type: 'boolean', describe: "don't delete, just log what would be deleted" })
      .option('additional-software-directory', {
        type: 'string',
        array: true,
        describe: 'another software root whose software releases keep their parts (repeatable)',
      }),
  async run(args, ctx) {
    const file = readConfig('node', args.cfg, ctx.env)
    const log = ctx.log
    const sharedRoot = file.list('slapos', 'shared_part_list').at(-1)
    if (!sharedRoot) {
      log.error('No shared_part_list options in slapos config')
      return EXIT.PRUNE_REFUSED
    }
    if (file.bool('slapos', 'root_check', true, true) && process.getuid?.() !== 0) throw new NotRootError()
    const softwareRoot = file.path_('slapos', 'software_root')
    const instanceRoot = file.path_('slapos', 'instance_root')
    if (!softwareRoot || !instanceRoot) {
      throw new ConfigError(`${file.path}: software_root and instance_root must be set in [slapos]`)
    }
    const dryRun = args.dryRun === true
    const pidfile = file.path_('slapos', 'pidfile_software') ?? file.path_('slapos', 'pidfile') ?? NODE_DEFAULTS.pidfileSoftware
    if (!dryRun && existsFile(pidfile)) {
      log.error(`Cannot prune while software is running (${pidfile} exists)`)
      return EXIT.PRUNE_REFUSED
    }
    const release = acquirePidfile(pidfile)
    try {
      const extra = ((args.additionalSoftwareDirectory as string[] | undefined) ?? []).map(String)
      pruneSharedParts({ sharedRoot, softwareRoot, instanceRoot, additionalSoftwareDirectories: extra, dryRun, log })
      return EXIT.OK
    } finally {
      release()
    }
  },
}
export default nodePrune

function existsFile(p: string): boolean {
  try {
    return statSync(p).isFile()
  } catch {
    return false
  }
}
