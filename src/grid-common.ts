// What node software, instance, report and promise share: their common options, the
// start-up sequence of spec grid.md §1.7, and the helpers that decide who runs buildout and
// with which environment (§3.4 step 9, §3.5). Used by grid-software.ts, grid-instance.ts,
// grid-report.ts, buildout.ts and the node-* command files.
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import type { Argv } from 'yargs'
import { readConfig, type RunArgs } from './command.ts'
import { loadNodeConfig, type ConfigFile, type NodeConfig } from './config.ts'
import type { Ctx } from './context.ts'
import { ConfigError, NotRootError, SlapError, UsageError } from './errors.ts'
import type { Logger } from './log.ts'
import type { Manager } from './managers.ts'
import { acquirePidfile } from './pidfile.ts'
import { readPasswd } from './passwd.ts'
import { SlapClient } from './slap-client.ts'

export type NodeCommandKind = 'software' | 'instance' | 'report' | 'promise'

export interface NodeRun {
  cfg: NodeConfig
  client: SlapClient
  log: Logger
  /** every [slapos] and [networkcache] key ([networkcache] wins), command-line values applied */
  settings: Map<string, string>
  /** the managers of manager_list, in order (node-extras §1), set by loadRunManagers */
  managers: Manager[]
  /** removes the pid file (idempotent); call it in a finally */
  release(): void
}

/**
 * grid.md §1.7, in the original's order: read the configuration and merge the command line,
 * root check (exit 5), mandatory keys (exit 1), files that must exist (exit 1), random delay
 * unless --now, pid file (exit 10), then the master client. Nothing contacts the master here
 * (the original's best-effort getHateoasUrl is not made: it has no effect on the node).
 */
export async function startNodeRun(kind: NodeCommandKind, args: RunArgs, ctx: Ctx, opts: { dryRun?: boolean } = {}): Promise<NodeRun> {
  const file = readConfig('node', args.cfg, ctx.env)
  checkRoot(file)
  const overrides = commonOverrides(args)
  const cfg = loadNodeConfig(file, overrides)
  const settings = nodeSettings(file)
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined && v !== '') settings.set(k, String(v))
  checkFiles(cfg, settings)
  // a dry run (`--dry-run`) neither waits nor takes the pid file: it only reads, so it neither
  // blocks nor is blocked by cron's real run
  const delay = args.now === true || opts.dryRun ? 0 : cfg.maximalDelay
  if (delay > 0) {
    const seconds = 1 + Math.floor(Math.random() * delay)
    ctx.log.info(`Sleeping for ${seconds} second${seconds === 1 ? '' : 's'} (maximal_delay = ${delay}; --now skips this)`)
    await new Promise((r) => setTimeout(r, seconds * 1000))
  }
  rootWarning.log = ctx.log
  const pidfile = kind === 'software' ? cfg.pidfileSoftware : kind === 'report' ? cfg.pidfileReport : cfg.pidfileInstance
  const release = opts.dryRun ? () => undefined : acquirePidfile(pidfile)
  const client = new SlapClient({ masterUrl: cfg.masterUrl, keyFile: cfg.keyFile, certFile: cfg.certFile, caFile: cfg.masterCaFile })
  // the managers are loaded by the command (manager-registry.ts: loadRunManagers)
  return { cfg, client, log: ctx.log, settings, managers: [], release }
}

/** Every [slapos] and [networkcache] key of the configuration, [networkcache] winning (NodeRun.settings before the command line). */
export function nodeSettings(file: ConfigFile): Map<string, string> {
  return new Map([...file.section('slapos'), ...file.section('networkcache')])
}

/**
 * grid.md §1.3: the files the configuration names and the node commands require to exist,
 * as [key, path]. `flat`: nodeSettings (plus the command line). Pure.
 */
export function requiredFiles(cfg: Pick<NodeConfig, 'keyFile' | 'certFile' | 'masterCaFile'>, flat: ReadonlyMap<string, string>): Array<[string, string]> {
  const files: Array<[string, string | undefined]> = [
    ['key_file', cfg.keyFile],
    ['cert_file', cfg.certFile],
    ['master_ca_file', cfg.masterCaFile],
  ]
  for (const key of ['signature-private-key-file', 'signature_private_key_file', 'shacache-ca-file', 'shacache-cert-file', 'shacache-key-file', 'shadir-ca-file', 'shadir-cert-file', 'shadir-key-file']) {
    files.push([key, flat.get(key)?.trim() || undefined])
  }
  return files.filter((f): f is [string, string] => f[1] !== undefined)
}

/** The options of §1.6 common to the four commands (spellings as the original, underscores included). */
export function nodeCommonOptions(y: Argv): Argv {
  const int = (name: string) => (v: unknown) => {
    if (v === undefined) return undefined
    const s = String(v)
    if (!/^-?\d+$/.test(s.trim())) throw new UsageError(`argument --${name}: invalid int value: '${s}'`)
    return Number.parseInt(s, 10)
  }
  return y
    .option('instance-root', { type: 'string', describe: 'directory of the partitions and of supervisord (default: [slapos] instance_root)' })
    .option('software-root', { type: 'string', describe: 'directory of the software releases (default: [slapos] software_root)' })
    .option('master-url', { type: 'string', describe: 'URL of the SlapOS master (default: [slapos] master_url)' })
    .option('computer-id', { type: 'string', describe: 'reference of this node on the master (default: [slapos] computer_id)' })
    .option('key_file', { type: 'string', describe: "the node's TLS key (default: [slapos] key_file)" })
    .option('cert_file', { type: 'string', describe: "the node's TLS certificate (default: [slapos] cert_file)" })
    .option('master_ca_file', { type: 'string', describe: 'CA of the master (default: [slapos] master_ca_file)' })
    .option('certificate_repository_path', { type: 'string', describe: 'directory of the partition certificates' })
    .option('signature_private_key_file', { type: 'string', describe: 'key signing uploads to the network cache' })
    .option('buildout', { type: 'string', describe: 'buildout executable (default: [slapos] buildout, else buildout on PATH)' })
    .option('pidfile', { type: 'string', describe: 'pid file, when the configuration names none for this command' })
    .option('maximum-periodicity', { type: 'string', coerce: int('maximum-periodicity'), describe: 'seconds after which an unchanged partition is processed again' })
    .option('promise-timeout', { type: 'string', coerce: int('promise-timeout'), describe: 'seconds a promise may run (default 20)' })
    .option('partition-timeout', { type: 'string', coerce: int('partition-timeout'), describe: 'seconds an instance buildout may run' })
    .option('now', { type: 'boolean', describe: 'start at once, without the random delay of maximal_delay' })
    .option('maximal_delay', { type: 'string', coerce: int('maximal_delay'), describe: 'upper bound in seconds of the random start delay' })
    .option('supervisord-socket', { type: 'string', hidden: true, describe: 'accepted and ignored, like the original' })
    .option('supervisord-configuration-path', { type: 'string', hidden: true, describe: 'accepted and ignored, like the original' })
}

/** Lowercase hex md5 of the UTF-8 text: the directory name of a software release (§2.1). */
export { md5hex } from './md5.ts'


export interface Owner {
  uid: number
  gid: number
  name: string
  home: string
  /** primary group first, then the groups listing the user in /etc/group */
  groups: number[]
}

/**
 * The owner of `path` (stat), named through /etc/passwd and /etc/group, read directly (no
 * child process, no NSS: nodes create their users locally with useradd). A uid missing from
 * /etc/passwd is named by its number, with home = `path`.
 */
export function ownerOf(path: string): Owner {
  const st = statSync(path)
  const uid = st.uid
  let name = String(uid)
  let home = path
  let gid = st.gid
  const account = readPasswd().find((a) => a.uid === uid)
  if (account) {
    name = account.name
    gid = account.gid
    home = account.home || home
  }
  const groups = [gid]
  for (const line of readLines('/etc/group')) {
    const f = line.split(':')
    if (f.length < 4) continue
    const g = Number(f[2])
    if ((f[3] ?? '').split(',').includes(name) && !groups.includes(g)) groups.push(g)
  }
  return { uid, gid, name, home, groups }
}

/** Variables a child buildout must not inherit (§3.5, HEAD). LC_* are removed too. */
export const UNSAFE_ENV = [
  'PYTHONHOME',
  'PYTHONPATH',
  'PYTHONSTARTUP',
  'PYTHONY2K',
  'PYTHONOPTIMIZE',
  'PYTHONDEBUG',
  'PYTHONDONTWRITEBYTECODE',
  'PYTHONINSPECT',
  'PYTHONUNBUFFERED',
  'PYTHONVERBOSE',
  'CONFIG_SITE',
  'ENV',
  'LOGNAME',
  'TEMP',
  'TMP',
  'TMPDIR',
  'LANG',
  'LANGUAGE',
] as const

/** getCleanEnvironment of the original (HEAD): `base` minus UNSAFE_ENV and LC_*, HOME set, PYTHONNOUSERSITE=true. */
export function cleanEnv(base: NodeJS.ProcessEnv, home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  const drop = new Set<string>(UNSAFE_ENV)
  for (const [k, v] of Object.entries(base)) {
    if (v === undefined || drop.has(k) || k.startsWith('LC_')) continue
    env[k] = v
  }
  env.HOME = home
  env.PYTHONNOUSERSITE = 'true'
  return env
}

/**
 * Who a child runs as (§3.4 step 9). Not root: ourselves ({}). Root: the owner with its
 * supplementary groups (a partition user reads the software through the software user's
 * group), unless the owner is root (uid or gid 0), which is refused as too dangerous
 * (`refuseRoot`), except with `run_as_root = true` (a development node kept by root, said
 * explicitly), where the child then runs as root.
 */
export function asUser(owner: Owner, refuseRoot: boolean): { uid?: number; gid?: number; groups?: number[] } {
  if (process.getuid?.() !== 0) return {}
  if (owner.uid !== 0 && owner.gid !== 0) return { uid: owner.uid, gid: owner.gid, groups: owner.groups }
  if (!refuseRoot) {
    // once in every run that does run something as root
    if (!rootWarning.said) {
      rootWarning.said = true
      rootWarning.log?.warning('run_as_root = true: software releases and partitions owned by root build and run as root (set it to false, or give them to unprivileged users)')
    }
    return {}
  }
  throw new SlapError(`Refusing to run as root (uid ${owner.uid}, gid ${owner.gid}): too dangerous; give the directory to an unprivileged user (node format does), or set run_as_root = true in [slapos] to run it as root anyway`, {
    code: 'E_ROOT_OWNER',
  })
}

/** The run's logger for the run_as_root warning (set by startNodeRun), and whether it was given. */
const rootWarning: { log?: Logger | undefined; said: boolean } = { said: false }

/** Are children of root-owned software and partitions refused (true unless run_as_root = true)? */
export function refuseRoot(cfg: Pick<NodeConfig, 'runAsRoot'>): boolean {
  return !cfg.runAsRoot
}

// --- internal ---

/** The root check comes before the mandatory keys, as in the original; only true/false are accepted. */
function checkRoot(file: ConfigFile): void {
  const raw = (file.get('slapos', 'root_check') ?? 'true').trim()
  const v = raw.toLowerCase()
  if (v !== 'true' && v !== 'false' && v !== '') {
    throw new ConfigError(`Option 'root_check' needs to be "True" or "False", wrong value: '${raw}'`, 'set root_check = true or false in [slapos]')
  }
  if (v !== 'false' && process.getuid?.() !== 0) throw new NotRootError()
}

const PATH_OPTIONS: Record<string, string> = {
  instanceRoot: 'instance_root',
  softwareRoot: 'software_root',
  key_file: 'key_file',
  cert_file: 'cert_file',
  master_ca_file: 'master_ca_file',
  certificate_repository_path: 'certificate_repository_path',
  signature_private_key_file: 'signature_private_key_file',
  pidfile: 'pidfile',
}

/** Command-line values under the configuration's key names; paths made absolute from the current directory. */
function commonOverrides(args: RunArgs): Record<string, string | number | undefined> {
  const o: Record<string, string | number | undefined> = {}
  for (const [opt, key] of Object.entries(PATH_OPTIONS)) {
    const v = args[opt]
    if (typeof v === 'string' && v !== '') o[key] = resolve(v)
  }
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined)
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)
  o.master_url = str(args.masterUrl)
  o.computer_id = str(args.computerId)
  o.buildout = str(args.buildout)
  o.maximum_periodicity = num(args.maximumPeriodicity)
  o.promise_timeout = num(args.promiseTimeout)
  o.partition_timeout = num(args.partitionTimeout)
  o.maximal_delay = num(args.maximal_delay)
  return o
}

/** grid.md §1.3: every configured file must exist, the certificate repository must be a directory. */
function checkFiles(cfg: NodeConfig, flat: Map<string, string>): void {
  for (const [key, path] of requiredFiles(cfg, flat)) {
    if (!existsSync(path)) throw new ConfigError(`${key} file does not exist: ${path}`, `fix ${key} in ${cfg.file.path}`)
  }
  const repo = cfg.certificateRepositoryPath
  if (repo !== undefined && !(existsSync(repo) && statSync(repo).isDirectory())) {
    throw new ConfigError(`certificate_repository_path is not a directory: ${repo}`, `create it or fix certificate_repository_path in ${cfg.file.path}`)
  }
}

function readLines(path: string): string[] {
  try {
    return readFileSync(path, 'utf8').split('\n')
  } catch {
    return []
  }
}

/**
 * Is `path` (following every link on the way, as the kernel would) inside `root`? For a path
 * that does not exist yet, its deepest existing ancestor is checked. What a partition user
 * can change must never lead root's deletes, reads or writes outside the roots.
 */
export function inside(root: string, path: string): boolean {
  let top: string
  try {
    top = realpathSync(root)
  } catch {
    return false
  }
  let p = resolve(path)
  for (;;) {
    try {
      const real = realpathSync(p)
      return real === top || real.startsWith(top.endsWith('/') ? top : `${top}/`)
    } catch (err) {
      const parent = dirname(p)
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === p) return false
      p = parent
    }
  }
}
