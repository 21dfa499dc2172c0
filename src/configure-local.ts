// `slapos configure local`: a node with its own local master (proxy) from scratch, in the
// original's layout (root) or in a standalone layout under one directory (no root, no user
// or network changes). The pure part, planLocal(), says which files and directories make
// the node; configureLocal() writes them and, unless told not to, brings the node up.
// Called by src/commands/configure-local.ts.
import { generateKeyPairSync } from 'node:crypto'
import { existsSync, lstatSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs'
import { connect } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import type { Ctx } from './context.ts'
import { SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { hasControl, quote } from './names.ts'
import { COMPAT_MODULE, COMPAT_PATH, LAUNCHER, LAUNCHER_PATH } from './buildout-launcher.ts'
import { NODE_CONFIG_EXAMPLE, PROXY_CONFIG_EXAMPLE, setKeys } from './templates.ts'

/** Computer id of a local node (the original's DEFAULT_COMPUTER_ID). */
export const LOCAL_COMPUTER_ID = 'local_computer'

export interface LocalOptions {
  interfaceName: string
  partitionNumber: number
  /** undefined: 10.0.0.0/16, or 127.0.1.0/24 for a standalone node */
  ipv4LocalNetwork?: string | undefined
  daemonListenIp: string
  daemonListenPort: number
  /** the four roots; undefined: the original's default (under `standalone` when given) */
  instanceRoot?: string | undefined
  softwareRoot?: string | undefined
  buildoutDirectory?: string | undefined
  configurationDirectory?: string | undefined
  /** standalone node: every path under this directory, no root, no user/network change */
  standalone?: string | undefined
  /** [slapos] buildout: the buildout executable (default: the launcher written under the home) */
  buildout?: string | undefined
  /** the home directory whose ~/.slapos/slapos-client.cfg links to the node configuration */
  home: string
  /** how to run this program (written into the proxy's supervisord entry and cron lines) */
  self: string[]
  /**
   * --enable-shacache-proxy: the local master also serves /shacache/ from
   * `<instance root>/shacache` (upstream: the public caches), and the node's [networkcache]
   * downloads go through it
   */
  shacacheProxy?: boolean | undefined
  /** --run-as-root: `run_as_root = true`, software and partitions owned by root run as root */
  runAsRoot?: boolean | undefined
  /** --computer-id: this node's computer id (default LOCAL_COMPUTER_ID) */
  computerId?: string | undefined
  /**
   * --master-url: the node of an existing master (another node's proxy, a lab's master): no
   * proxy of its own (no slapos-proxy.cfg, no supervisord entry, no [slapproxy] section)
   */
  masterUrl?: string | undefined
}

export interface PlannedFile {
  path: string
  content: string
  mode: number
}

export interface LocalPlan {
  standalone: boolean
  nodeCfg: string
  /** undefined: the node uses an existing master (--master-url) */
  proxyCfg?: string | undefined
  computerId: string
  /** true when the node starts its own local master */
  ownMaster: boolean
  configurationDirectory: string
  instanceRoot: string
  softwareRoot: string
  buildoutDirectory: string
  masterUrl: string
  /** created when missing, mode applied when created */
  dirs: { path: string; mode: number }[]
  files: PlannedFile[]
  /** user crontab of a standalone node */
  cronFile?: string | undefined
  /** symbolic link made only when nothing is at `path` */
  clientLink?: { path: string; target: string } | undefined
  /** RSA private key made when missing (mode 0600): the shacache proxy's signing key */
  signingKey?: string | undefined
}

/** Everything configure local writes, from its options. Pure. */
export function planLocal(o: LocalOptions): LocalPlan {
  const base = o.standalone ? resolve(o.standalone) : undefined
  const under = (p: string) => (base ? join(base, p) : p)
  const confDir = resolve(o.configurationDirectory ?? under('/etc/opt/slapos'))
  const instanceRoot = resolve(o.instanceRoot ?? under('/srv/slapgrid'))
  const softwareRoot = resolve(o.softwareRoot ?? under('/opt/slapgrid'))
  const home = resolve(o.buildoutDirectory ?? under('/opt/slapos'))
  const network = o.ipv4LocalNetwork ?? (base ? STANDALONE_NETWORK : '10.0.0.0/16')
  const ownMaster = o.masterUrl === undefined
  const masterUrl = o.masterUrl?.replace(/\/+$/, '') ?? `http://${hostForUrl(o.daemonListenIp)}:${o.daemonListenPort}`
  const computerId = o.computerId ?? LOCAL_COMPUTER_ID
  const nodeCfg = join(confDir, 'slapos.cfg')
  const proxyCfg = join(confDir, 'slapos-proxy.cfg')
  const databaseUri = join(home, 'slapproxy.db')
  const slapos = o.self.map(shellWord).join(' ')
  const cronFile = base ? join(base, 'etc', 'cron.d', 'slapos-node') : undefined
  // without --buildout, the system's zc.buildout through the launcher that makes it run on
  // current Pythons (src/buildout-launcher.ts)
  const buildout = o.buildout ?? join(home, LAUNCHER_PATH)
  const launcher = o.buildout ? undefined : buildout

  // The node configuration: the example with the local values, without certificates
  // (the proxy has no authentication), plus [slapproxy] so that one file serves
  // `slapos proxy start` as well.
  let node = setKeys(NODE_CONFIG_EXAMPLE, 'slapos', {
    computer_id: computerId,
    master_url: masterUrl,
    // the client's service and computer commands read the proxy's hateoas subset there
    master_rest_url: `${masterUrl}/hateoas`,
    key_file: null,
    cert_file: null,
    certificate_repository_path: null,
    software_root: softwareRoot,
    instance_root: instanceRoot,
    buildout,
    ...(base
      ? {
          root_check: 'false',
          pidfile_software: join(home, 'slapgrid-sr.pid'),
          pidfile_instance: join(home, 'slapgrid-cp.pid'),
          pidfile_report: join(home, 'slapgrid-ur.pid'),
          watchdog_command: `${slapos} node watchdog`,
        }
      : {}),
    ...(o.runAsRoot ? { run_as_root: 'true' } : {}),
  })
  node = setKeys(node, 'slapformat', {
    interface_name: o.interfaceName,
    partition_amount: o.partitionNumber,
    ipv4_local_network: network,
    computer_xml: join(home, 'slapos.xml'),
    log_file: join(home, 'log', 'slapos-node-format.log'),
    ...(base ? { alter_user: 'false', alter_network: 'false', root_check: 'false' } : {}),
  })
  if (base) node = setKeys(node, 'collect', { pid_folder: join(instanceRoot, 'var', 'run') })
  // Like the original's --enable-shacache-proxy: the proxy's own cache under the instance root,
  // filled from the public caches, and every download of the node through it.
  const shacacheDir = join(instanceRoot, 'shacache')
  const signingKey = o.shacacheProxy ? join(shacacheDir, 'signing-key.pem') : undefined
  const shacache: Record<string, string> = signingKey
    ? {
        shacache_content_directory: join(shacacheDir, 'data'),
        shacache_metadata_directory: join(shacacheDir, 'dir'),
        shacache_signing_key_path: signingKey,
        shacache_upstream_cache_url: UPSTREAM_CACHE_URL,
        shacache_upstream_dir_url: UPSTREAM_DIR_URL,
      }
    : {}
  if (signingKey) {
    node = setKeys(node, 'networkcache', {
      'download-binary-cache-url': `${masterUrl}/shacache/cache`,
      'download-binary-dir-url': `${masterUrl}/shacache/dir`,
      'download-cache-url': `${masterUrl}/shacache/cache`,
      'download-dir-url': `${masterUrl}/shacache/dir`,
    })
  }
  const logDir = join(home, 'log')
  // a node of an existing master keeps the example's [slapproxy] as comments: it starts no proxy
  if (ownMaster) node = setKeys(node, 'slapproxy', { host: o.daemonListenIp, port: o.daemonListenPort, database_uri: databaseUri, ...shacache })
  const files: PlannedFile[] = [{ path: nodeCfg, content: node, mode: 0o644 }]
  if (ownMaster) {
    let proxy = setKeys(PROXY_CONFIG_EXAMPLE, 'slapos', {
      instance_root: instanceRoot,
      software_root: softwareRoot,
      computer_id: computerId,
    })
    proxy = setKeys(uncommentKeys(proxy, shacache), 'slapproxy', { host: o.daemonListenIp, port: o.daemonListenPort, database_uri: databaseUri })
    files.push(
      { path: proxyCfg, content: proxy, mode: 0o644 },
      {
        path: join(instanceRoot, 'etc', 'supervisord.conf.d', 'slapproxy.conf'),
        content: supervisorEntry({ home, command: `${slapos} proxy start --cfg ${shellWord(proxyCfg)}`, log: join(logDir, 'slapos-proxy.log'), asRoot: !base }),
        mode: 0o600,
      },
    )
  }
  if (launcher) {
    files.push({ path: launcher, content: LAUNCHER, mode: 0o755 }, { path: join(home, COMPAT_PATH), content: COMPAT_MODULE, mode: 0o644 })
  }
  if (base && cronFile) {
    files.push({ path: cronFile, content: standaloneCron(slapos, nodeCfg, logDir, cronFile), mode: 0o644 })
    files.push({
      path: join(confDir, 'slapos.env'),
      content:
        `# Source this file (. ${shellWord(join(confDir, 'slapos.env'))}) to use this node without --cfg.\n` +
        `export SLAPOS_CONFIGURATION=${shellWord(nodeCfg)}\nexport SLAPOS_CLIENT_CONFIGURATION=${shellWord(nodeCfg)}\n`,
      mode: 0o644,
    })
  }
  const dirs = [
    { path: confDir, mode: 0o755 },
    { path: logDir, mode: 0o700 },
    { path: softwareRoot, mode: 0o755 },
    { path: instanceRoot, mode: 0o755 },
    { path: join(instanceRoot, 'etc'), mode: 0o755 },
    { path: join(instanceRoot, 'etc', 'supervisord.conf.d'), mode: 0o700 },
    { path: join(instanceRoot, 'var', 'log'), mode: 0o755 },
    { path: join(instanceRoot, 'var', 'run'), mode: 0o755 },
  ]
  if (cronFile) dirs.push({ path: dirname(cronFile), mode: 0o755 })
  if (signingKey) for (const d of [shacacheDir, join(shacacheDir, 'data'), join(shacacheDir, 'dir')]) dirs.push({ path: d, mode: 0o755 })
  return {
    standalone: base !== undefined,
    nodeCfg,
    proxyCfg: ownMaster ? proxyCfg : undefined,
    computerId,
    ownMaster,
    configurationDirectory: confDir,
    instanceRoot,
    softwareRoot,
    buildoutDirectory: home,
    masterUrl,
    cronFile,
    dirs,
    files,
    // A standalone node leaves the home directory alone: its client commands use the
    // node configuration through --cfg or slapos.env.
    clientLink: base ? undefined : { path: join(o.home, '.slapos', 'slapos-client.cfg'), target: nodeCfg },
    signingKey,
  }
}

/**
 * Writes the plan. A second run with the same options changes nothing and succeeds; an
 * existing slapos.cfg with other content is never replaced (the original's refusal, exit 1).
 */
export async function configureLocal(plan: LocalPlan, ctx: Ctx, opts: { start: boolean; quiet?: boolean }): Promise<number> {
  const log = ctx.log
  const [nodeFile, ...others] = plan.files
  if (!nodeFile) throw new Error('plan without node configuration')
  let again = false
  if (existsSync(nodeFile.path)) {
    if (readFileSync(nodeFile.path, 'utf8') !== nodeFile.content) {
      throw new SlapError(`A SlapOS configuration directory already exist at ${nodeFile.path}. Aborting.`, {
        code: 'E_ALREADY_CONFIGURED',
        exitCode: EXIT.FAIL,
        hint: 'remove or move that file to configure again, or run with the options of the first run',
      })
    }
    again = true
    log.info(`${nodeFile.path} is already this configuration: checking the rest`)
  }
  for (const d of plan.dirs) ensureDir(d.path, d.mode, log)
  writeAtomic(nodeFile, log)
  for (const f of others) {
    ensureDir(dirname(f.path), 0o755, log)
    writeAtomic(f, log)
  }
  if (plan.signingKey && !existsSync(plan.signingKey)) writeSigningKey(plan.signingKey, log)
  if (plan.clientLink) linkClientConfig(plan.clientLink, log)
  if (!again) log.info(`SlapOS node configuration written to ${plan.nodeCfg} (${plan.ownMaster ? 'local master' : 'master'} ${plan.masterUrl}/, computer ${plan.computerId})`)
  if (opts.start) await bringUp(plan, ctx, opts.quiet === true)
  const cfg = shellWord(plan.nodeCfg)
  log.info(again ? 'Nothing to change: the node is configured.' : 'The node is configured.')
  const cfgOpt = plan.standalone ? ` --cfg ${cfg}` : ''
  if (!opts.start) log.info(`Next: slapos node supervisord${cfgOpt}  (starts ${plan.ownMaster ? 'the local master' : 'the node\'s supervisord'}), then  slapos node format --now${cfgOpt}`)
  const pin = plan.computerId === LOCAL_COMPUTER_ID ? '' : ` --node computer_guid=${plan.computerId}`
  log.info(
    `Then: slapos supply <software.cfg URL> ${plan.computerId}${cfgOpt}; slapos request <title> <software.cfg URL>${pin}${cfgOpt}; ` +
      `slapos node software --now${cfgOpt}; slapos node instance --now${cfgOpt}`,
  )
  if (plan.standalone) {
    log.info(`Without --cfg: source ${shellWord(join(plan.configurationDirectory, 'slapos.env'))}`)
    if (plan.cronFile) log.info(`Periodic runs: crontab ${shellWord(plan.cronFile)}`)
  }
  return EXIT.OK
}

/**
 * A --master-url as it is written into slapos.cfg (the URL as parsed, without a final `/`),
 * or why it is refused: an http or https URL without credentials, query or fragment, of
 * letters, digits and `-._~:/[]` only. The value becomes `master_url` of slapos.cfg (read by
 * ConfigParser, which expands `%`) and `server-url` of every partition's buildout (which
 * expands `$` and `{...}`).
 */
export function checkMasterUrl(url: string): { url: string } | { problem: string } {
  const refuse = (why: string) => ({ problem: `--master-url ${quote(url)} ${why}` })
  if (url === '') return refuse('is empty: give the URL of a master, or leave the option out for a local master of its own')
  if (hasControl(url) || /\s/.test(url)) return refuse('has spaces or control characters')
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return refuse('is not a URL')
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return refuse('is not an http or https URL')
  if (u.username || u.password || u.search || u.hash || url.includes('?') || url.includes('#')) return refuse('must not carry credentials, a query or a fragment')
  const href = u.href.replace(/\/+$/, '')
  if (!URL_CHARS.test(url) || !URL_CHARS.test(href)) return refuse("has characters other than letters, digits and - . _ ~ : / [ ] (no '%', '$', '{' or '}')")
  return { url: href }
}

// --- internal ---

const STANDALONE_NETWORK = '127.0.1.0/24'
/** what a --master-url may hold: nothing ConfigParser or buildout would expand */
const URL_CHARS = /^[A-Za-z0-9._~:/[\]-]+$/
/** where the shacache proxy of --enable-shacache-proxy fetches what it does not have (the original's) */
const UPSTREAM_CACHE_URL = 'http://shacache.nxdcdn.com'
const UPSTREAM_DIR_URL = 'http://shadir.nxdcdn.com'

function hostForUrl(ip: string): string {
  return ip.includes(':') && !ip.startsWith('[') ? `[${ip}]` : ip
}

/** `#key = example` lines of a template made `key = value` (keys the template lacks are left out). */
function uncommentKeys(text: string, values: Record<string, string>): string {
  let out = text
  for (const [key, value] of Object.entries(values)) out = out.replace(new RegExp(`^#\\s*${key}\\s*=.*$`, 'm'), () => `${key} = ${value}`)
  return out
}

/** Quotes a word for /bin/sh (and supervisord's shlex) only when it needs it. */
export function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`
}

/** supervisord program entry of the proxy (same keys as the original's slapproxy.conf). */
function supervisorEntry(o: { home: string; command: string; log: string; asRoot: boolean }): string {
  return [
    '[program:slapproxy]',
    `directory=${o.home}`,
    `command=${o.command}`,
    'process_name=slapproxy',
    'autostart=true',
    'autorestart=true',
    'startsecs=0',
    'startretries=0',
    'exitcodes=0',
    'stopsignal=TERM',
    'stopwaitsecs=60',
    // a supervisord run by a user cannot switch to root: a standalone node keeps its user
    ...(o.asRoot ? ['user=0', 'group=0'] : []),
    'serverurl=AUTO',
    'redirect_stderr=true',
    `stdout_logfile=${o.log}`,
    'stdout_logfile_maxbytes=100KB',
    'stdout_logfile_backups=1',
    `stderr_logfile=${o.log}`,
    'stderr_logfile_maxbytes=100KB',
    'stderr_logfile_backups=1',
    '',
  ].join('\n')
}

/** The package's cron entries (node-ops.md §2.1) for this node, as a user crontab. */
function standaloneCron(slapos: string, cfg: string, logDir: string, cronFile: string): string {
  const c = shellWord(cfg)
  const l = (name: string) => shellWord(join(logDir, name))
  return [
    '# Periodic runs of this standalone SlapOS node, as the package installs them in',
    '# /etc/cron.d/slapos-node, for the user who owns the node. Install with:',
    `#   crontab ${shellWord(cronFile)}`,
    'SHELL=/bin/sh',
    'PATH=/usr/bin:/usr/sbin:/sbin:/bin',
    'MAILTO=""',
    '',
    `* * * * * ${slapos} node software --cfg ${c} --maximal_delay=30 --verbose --logfile=${l('slapos-node-software.log')} > /dev/null 2>&1`,
    `* * * * * ${slapos} node instance --cfg ${c} --maximal_delay=20 --promise-timeout 20 --verbose --logfile=${l('slapos-node-instance.log')} > /dev/null 2>&1`,
    `0 * * * * ${slapos} node report --cfg ${c} --maximal_delay=3600 --verbose --logfile=${l('slapos-node-report.log')} > /dev/null 2>&1`,
    `0 * * * * ${slapos} node format --cfg ${c} >> ${l('slapos-node-format.log')} 2>&1`,
    `@reboot ${slapos} node boot --cfg ${c} >> ${l('slapos-node-format.log')} 2>&1`,
    '',
  ].join('\n')
}

function ensureDir(path: string, mode: number, log: Ctx['log']): void {
  if (existsSync(path)) return
  mkdirSync(path, { recursive: true, mode })
  chmodSync(path, mode)
  log.debug(`Created directory ${path}`)
}

/** Temp file + rename, so an interrupted run never leaves half a file. */
function writeAtomic(f: PlannedFile, log: Ctx['log']): void {
  if (existsSync(f.path) && readFileSync(f.path, 'utf8') === f.content) {
    chmodSync(f.path, f.mode)
    return
  }
  const tmp = `${f.path}.tmp-${process.pid}`
  writeFileSync(tmp, f.content, { mode: f.mode })
  chmodSync(tmp, f.mode)
  renameSync(tmp, f.path)
  log.info(`Wrote ${f.path}`)
}

/** A 2048-bit RSA key in PEM (PKCS#1, as the original's pyOpenSSL writes it), mode 0600. */
function writeSigningKey(path: string, log: Ctx['log']): void {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs1', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
  writeAtomic({ path, content: privateKey, mode: 0o600 }, log)
}

function linkClientConfig(link: { path: string; target: string }, log: Ctx['log']): void {
  ensureDir(dirname(link.path), 0o700, log)
  let present = false
  try {
    lstatSync(link.path)
    present = true
  } catch {
    present = false
  }
  if (present) {
    log.debug(`${link.path} exists: left as it is`)
    return
  }
  symlinkSync(link.target, link.path)
  log.info(`Client configuration ${link.path} -> ${link.target}`)
}

/**
 * The original then runs `node format --now`, starts supervisord (which starts the proxy)
 * and formats again.
 */
async function bringUp(plan: LocalPlan, ctx: Ctx, quiet: boolean): Promise<void> {
  const r = await ctx.runner.run([...ctx.self, 'node', 'supervisord', '--cfg', plan.nodeCfg], { env: ctx.env, timeoutMs: 60_000 })
  if (r.code !== 0) ctx.log.warning(`supervisord did not start: ${(r.stderr || r.stdout).trim().split('\n').pop() ?? ''}`)
  // supervisord starts the local master in the background: give it a moment to listen,
  // so that the first format can post the computer
  else if (!(await masterAnswers(plan.masterUrl, 10_000))) ctx.log.warning(`the ${plan.ownMaster ? 'local ' : ''}master does not answer at ${plan.masterUrl}/ yet`)
  ctx.log.info('Formatting the node (slapos node format --now)')
  const f = await ctx.runner.run([...ctx.self, 'node', 'format', '--now', '--cfg', plan.nodeCfg, ...(quiet ? ['-q'] : [])], { env: ctx.env, onOutput: (s) => ctx.io.err(s) })
  // like the original, a failed format (e.g. the master not up yet) does not fail configure
  if (f.code !== 0) ctx.log.warning(`slapos node format exited with ${f.code}: run it again once the local master is up`)
}

/** True once something accepts TCP connections at the master's address (polled every 100 ms). */
async function masterAnswers(masterUrl: string, limitMs: number): Promise<boolean> {
  const { hostname, port, protocol } = new URL(masterUrl)
  const host = hostname.replace(/^\[|\]$/g, '')
  const defaultPort = protocol === 'https:' ? 443 : 80
  const deadline = Date.now() + limitMs
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect({ host, port: Number(port) || defaultPort }, () => {
        sock.destroy()
        resolve(true)
      })
      sock.on('error', () => resolve(false))
    })
    if (ok) return true
    await new Promise((r) => setTimeout(r, 100))
  }
  return false
}
