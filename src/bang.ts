// Computer-level bang (`slapos node bang -m MESSAGE`, old name bang): tells the master that
// something happened to the whole node (a reboot, a repair) so it bangs every instance
// hosted here and the next `node instance` re-processes them (spec grid.md §6.2). The
// partition-level bang is the watchdog's (watchdog.ts).
import type { ConfigFile } from './config.ts'
import { resolvePath } from './config.ts'
import { dirname } from 'node:path'
import type { Logger } from './log.ts'
import { SlapClient } from './slap-client.ts'

export interface BangConfig {
  computerId: string
  masterUrl: string
  keyFile?: string | undefined
  certFile?: string | undefined
  masterCaFile?: string | undefined
}

/** The [slapos] keys node bang reads (no software_root or instance_root needed). */
export function bangConfig(file: ConfigFile): BangConfig {
  const path = (k: string) => {
    const v = file.get('slapos', k)?.trim()
    return v ? resolvePath(v, dirname(file.path)) : undefined
  }
  return {
    computerId: file.require('slapos', 'computer_id').trim(),
    masterUrl: file.require('slapos', 'master_url').trim(),
    keyFile: path('key_file'),
    certFile: path('cert_file'),
    masterCaFile: path('master_ca_file'),
  }
}

/** POST /computerBang with the node certificate. */
export async function bangComputer(cfg: BangConfig, message: string, log: Logger): Promise<void> {
  const client = new SlapClient({ masterUrl: cfg.masterUrl, keyFile: cfg.keyFile, certFile: cfg.certFile, caFile: cfg.masterCaFile })
  log.info(`Banging to '${client.masterUrl}'`)
  await client.computerBang(cfg.computerId, message)
  log.info(`Bang with message '${message}'`)
}
