// Which managers exist and how `manager_list` loads them (node-extras §1.1). Used by the
// command files of node format, software, instance, report and promise; each manager
// module is read only when its name is listed, so a node without managers loads none.
import type { ConfigFile } from './config.ts'
import { ConfigError } from './errors.ts'
import type { NodeRun } from './grid-common.ts'
import { managerNames, managerOptions, type Manager, type ManagerOptions } from './managers.ts'
import type { Runner } from './system.ts'

type Factory = (options: ManagerOptions) => Manager

const KNOWN: Record<string, () => Promise<Factory>> = {
  cpuset: async () => (await import('./manager-cpuset.ts')).cpusetManager,
  devperm: async () => (await import('./manager-devperm.ts')).devpermManager,
  portredir: async () => (await import('./manager-portredir.ts')).portredirManager,
  prerm: async () => (await import('./manager-prerm.ts')).prermManager,
  whitelistfirewall: async () => (await import('./manager-whitelistfirewall.ts')).whitelistfirewallManager,
}

/**
 * The managers named, built in order. A name that does not start with a letter or `_`, or
 * that no module has, is a configuration error (exit 1), as the original's import failure is.
 */
export async function loadManagers(names: readonly string[], options: ManagerOptions): Promise<Manager[]> {
  const known = Object.keys(KNOWN).join(', ')
  const managers: Manager[] = []
  for (const name of names) {
    if (!/^[A-Za-z_]/.test(name)) throw new ConfigError(`Manager name '${name}' is not allowed`, `fix manager_list in [slapos]; known managers: ${known}`)
    const load = Object.hasOwn(KNOWN, name) ? KNOWN[name] : undefined
    if (!load) throw new ConfigError(`No module named 'slapos.manager.${name}': there is no manager '${name}'`, `fix manager_list in [slapos]; known managers: ${known}`)
    managers.push((await load())(options))
  }
  return managers
}

/** The managers of `file`'s manager_list, for a configuration read by node format. */
export async function formatManagers(file: ConfigFile, runner: Runner): Promise<Manager[]> {
  const settings = new Map([...file.section('slapformat'), ...file.section('slapos')])
  const names = managerNames(settings.get('manager_list'))
  return names.length ? loadManagers(names, managerOptions(file, settings, runner)) : []
}

/**
 * Loads the managers of a node run into `run.managers`. On failure the pid file is released
 * before the error goes up (the original leaves it behind).
 */
export async function loadRunManagers(run: NodeRun, runner: Runner): Promise<void> {
  const names = managerNames(run.settings.get('manager_list'))
  if (names.length === 0) return
  try {
    run.managers = await loadManagers(names, managerOptions(run.cfg.file, run.settings, runner))
  } catch (e) {
    run.release()
    throw e
  }
}
