// slapos.cfg and slapos-client.cfg: where they are, how they parse (Python ConfigParser
// rules, which the `ini` package does not follow: it strips `#...` from URLs and has no
// continuation lines), and the typed views each command family uses. Every default of
// the node, client and proxy configuration lives here.
import { readFileSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, isAbsolute, resolve } from 'node:path'
import { ConfigError } from './errors.ts'

export const DEFAULT_NODE_CFG = '/etc/opt/slapos/slapos.cfg'
export const DEFAULT_CLIENT_CFG = '~/.slapos/slapos-client.cfg'

export type Family = 'node' | 'client'

/** `~` and `~/x` → home directory, like Python's os.path.expanduser. */
export function expandUser(p: string): string {
  if (p === '~') return homedir()
  if (p.startsWith('~/')) return homedir() + p.slice(1)
  return p
}

/** --cfg, then the environment variable, then the default (spec cli.md §6). */
export function configPath(family: Family, cli: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = family === 'node' ? env.SLAPOS_CONFIGURATION : env.SLAPOS_CLIENT_CONFIGURATION
  const p = cli || fromEnv || (family === 'node' ? DEFAULT_NODE_CFG : DEFAULT_CLIENT_CFG)
  return resolve(expandUser(p))
}

export type Sections = Map<string, Map<string, string>>

/**
 * Parses INI text the way Python's ConfigParser does: lower-cased option names, `=` or `:`,
 * whole-line `#`/`;` comments, indented continuation lines, `[DEFAULT]` inheritance,
 * `%(name)s` interpolation (write `%%` for `%`), duplicates refused.
 */
export function parseIni(text: string, file = '<string>', opts: { interpolate?: boolean } = {}): Sections {
  const raw: Sections = new Map()
  let section: Map<string, string> | undefined
  let sectionName = ''
  let lastKey: string | undefined
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? ''
    const lineNo = i + 1
    if (/^\s*$/.test(line)) {
      if (section && lastKey !== undefined) section.set(lastKey, section.get(lastKey) + '\n')
      continue
    }
    const stripped = line.trim()
    if (/^\s/.test(line) && section && lastKey !== undefined && !/^[#;]/.test(stripped)) {
      section.set(lastKey, section.get(lastKey) + '\n' + stripped)
      continue
    }
    if (stripped.startsWith('#') || stripped.startsWith(';')) continue
    const header = /^\[([^\]]+)\]/.exec(stripped)
    if (header && !/^\s/.test(line)) {
      sectionName = header[1] ?? ''
      if (raw.has(sectionName)) throw new ConfigError(`${file}:${lineNo}: section [${sectionName}] appears twice`)
      section = new Map()
      raw.set(sectionName, section)
      lastKey = undefined
      continue
    }
    if (!section) throw new ConfigError(`${file}:${lineNo}: line before any [section]: ${stripped}`)
    const m = /^([^=:]*?)\s*[=:]\s*(.*)$/.exec(stripped)
    const key = (m ? m[1] : stripped)?.toLowerCase() ?? ''
    if (key === '') throw new ConfigError(`${file}:${lineNo}: cannot parse line: ${stripped}`)
    if (section.has(key)) throw new ConfigError(`${file}:${lineNo}: option ${key} appears twice in [${sectionName}]`)
    section.set(key, m ? (m[2] ?? '') : '')
    lastKey = key
  }
  // values keep inner blank lines but not trailing ones
  for (const s of raw.values()) for (const [k, v] of s) s.set(k, v.replace(/\s+$/, ''))
  const defaults = raw.get('DEFAULT') ?? new Map<string, string>()
  const out: Sections = new Map()
  for (const [name, s] of raw) {
    if (name === 'DEFAULT') continue
    const merged = new Map([...defaults, ...s])
    if (opts.interpolate !== false) {
      for (const [k, v] of merged) merged.set(k, interpolate(v, merged, file, name, k, 0))
    }
    out.set(name, merged)
  }
  return out
}

function interpolate(value: string, scope: Map<string, string>, file: string, section: string, key: string, depth: number): string {
  if (!value.includes('%')) return value
  if (depth > 10) throw new ConfigError(`${file}: [${section}] ${key}: interpolation is too deep (a loop?)`)
  return value.replace(/%(%|\(([^)]+)\)s|.?)/g, (all, what: string, name: string | undefined) => {
    if (what === '%') return '%'
    if (name !== undefined) {
      const ref = scope.get(name.toLowerCase())
      if (ref === undefined) {
        throw new ConfigError(`${file}: [${section}] ${key} refers to %(${name})s, which is not set`, 'write %% for a literal %')
      }
      return interpolate(ref, scope, file, section, name, depth + 1)
    }
    throw new ConfigError(`${file}: [${section}] ${key}: bad use of % in '${value}'`, "write '%%' for a literal %")
  })
}

/** A parsed file with typed accessors whose errors name the file, the key and what is expected. */
export class ConfigFile {
  readonly path: string
  readonly sections: Sections
  constructor(path: string, sections: Sections) {
    this.path = path
    this.sections = sections
  }

  static load(path: string, family: Family = 'node'): ConfigFile {
    let text: string
    try {
      if (!statSync(path).isFile()) throw new ConfigError(`Configuration file is not a regular file: ${path}`)
      text = readFileSync(path, 'utf8')
    } catch (err) {
      if (err instanceof ConfigError) throw err
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') {
        throw new ConfigError(`Configuration file does not exist: ${path}`, `give one with --cfg or ${family === 'node' ? 'SLAPOS_CONFIGURATION' : 'SLAPOS_CLIENT_CONFIGURATION'}`)
      }
      throw new ConfigError(`Cannot parse configuration file: ${path} (${code ?? String(err)})`)
    }
    return new ConfigFile(path, parseIni(text, path))
  }

  static fromText(text: string, path = '<string>'): ConfigFile {
    return new ConfigFile(path, parseIni(text, path))
  }

  has(section: string, key?: string): boolean {
    const s = this.sections.get(section)
    return key === undefined ? s !== undefined : s?.has(key) === true
  }

  section(name: string): Map<string, string> {
    return this.sections.get(name) ?? new Map()
  }

  get(section: string, key: string): string | undefined {
    return this.sections.get(section)?.get(key)
  }

  str(section: string, key: string, dflt: string): string {
    return this.get(section, key) ?? dflt
  }

  require(section: string, key: string): string {
    const v = this.get(section, key)
    if (v === undefined || v === '') {
      throw new ConfigError(`${this.path}: [${section}] ${key} is missing`, `set ${key} in the [${section}] section`)
    }
    return v
  }

  /** Python ConfigParser booleans: 1/yes/true/on and 0/no/false/off, any case. */
  bool(section: string, key: string, dflt: boolean, strict = false): boolean {
    const v = this.get(section, key)
    if (v === undefined || v === '') return dflt
    const l = v.trim().toLowerCase()
    if (l === 'true' || (!strict && (l === '1' || l === 'yes' || l === 'on'))) return true
    if (l === 'false' || (!strict && (l === '0' || l === 'no' || l === 'off'))) return false
    throw new ConfigError(
      `${this.path}: [${section}] ${key} = ${v} is not a boolean`,
      strict ? 'use true or false' : 'use true/false, yes/no, on/off or 1/0',
    )
  }

  int(section: string, key: string, dflt: number): number {
    const v = this.get(section, key)
    if (v === undefined || v.trim() === '') return dflt
    if (!/^\s*-?\d+\s*$/.test(v)) throw new ConfigError(`${this.path}: [${section}] ${key} = ${v} is not an integer`)
    return Number.parseInt(v, 10)
  }

  /** A path value: `~` expanded, relative paths taken from the directory of the file. */
  path_(section: string, key: string): string | undefined {
    const v = this.get(section, key)
    if (v === undefined || v.trim() === '') return undefined
    return resolvePath(v.trim(), dirname(this.path))
  }

  /** A newline- (and optionally space-) separated list, blank entries dropped. */
  list(section: string, key: string, splitSpaces = false): string[] {
    const v = this.get(section, key)
    if (!v) return []
    return v.split(splitSpaces ? /[\s,]+/ : /\n/).map((s) => s.trim()).filter(Boolean)
  }
}

export function resolvePath(p: string, base: string): string {
  const e = expandUser(p)
  return isAbsolute(e) ? e : resolve(base, e)
}

// --- typed views ---

/** Keys of [slapos] (and [networkcache]) read by node software/instance/report/promise (spec grid.md §1.2). */
export interface NodeConfig {
  file: ConfigFile
  computerId: string
  masterUrl: string
  softwareRoot: string
  instanceRoot: string
  keyFile?: string | undefined
  certFile?: string | undefined
  masterCaFile?: string | undefined
  certificateRepositoryPath?: string | undefined
  /** buildout executable run for every software release and partition */
  buildout: string
  maximalDelay: number
  maximumPeriodicity: number
  promiseTimeout: number
  partitionTimeout?: number | undefined
  pidfileSoftware: string
  pidfileInstance: string
  pidfileReport: string
  rootCheck: boolean
  /**
   * `run_as_root`: software releases and partitions owned by root build and run as root.
   * Default false: refused, whatever root_check says.
   */
  runAsRoot: boolean
  forbidSupervisordAutomaticLaunch: boolean
  sharedPartList: string[]
  buildTimePartList: string[]
  /** the watchdog command written into supervisord's event listener entry */
  watchdogCommand: string
  /** [slapformat] partition_base_name, used by boot and report */
  partitionBaseName: string
  /** the binary cache keys (grid.md §1.3), [networkcache] over [slapos] */
  networkcache: NetworkcacheConfig
}

/**
 * `[networkcache]` keys of the binary cache (grid.md §1.3, §3.3). They are read from the
 * merged [slapos] + [networkcache] keys, [networkcache] winning, as the original's
 * merged_options. Empty values count as unset.
 */
export interface NetworkcacheConfig {
  downloadBinaryCacheUrl?: string | undefined
  downloadBinaryDirUrl?: string | undefined
  uploadBinaryCacheUrl?: string | undefined
  uploadBinaryDirUrl?: string | undefined
  /** signs uploaded entries (also spelt signature_private_key_file, and --signature_private_key_file) */
  signaturePrivateKeyFile?: string | undefined
  /** PEM texts of the trusted certificates; undefined when the key is absent */
  signatureCertificateList?: string[] | undefined
  shacacheCaFile?: string | undefined
  shacacheCertFile?: string | undefined
  shacacheKeyFile?: string | undefined
  shadirCaFile?: string | undefined
  shadirCertFile?: string | undefined
  shadirKeyFile?: string | undefined
  /** URL prefixes never downloaded from the binary cache (binary-cache-url-blacklist as fallback) */
  downloadBlacklist: string[]
  /** URL prefixes never uploaded */
  uploadBlacklist: string[]
  /** URL prefixes that must come from the binary cache: never built here */
  forceUrlList: string[]
}

/** The binary cache view of merged [slapos] + [networkcache] keys (see NetworkcacheConfig). */
export function networkcacheConfig(flat: Map<string, string>): NetworkcacheConfig {
  const str = (k: string) => flat.get(k)?.trim() || undefined
  const lines = (k: string) => (flat.get(k) ?? '').split('\n').map((l) => l.trim()).filter(Boolean)
  const certs = flat.get('signature-certificate-list')
  const downloadBlacklist = lines('download-from-binary-cache-url-blacklist')
  return {
    downloadBinaryCacheUrl: str('download-binary-cache-url'),
    downloadBinaryDirUrl: str('download-binary-dir-url'),
    uploadBinaryCacheUrl: str('upload-binary-cache-url'),
    uploadBinaryDirUrl: str('upload-binary-dir-url'),
    signaturePrivateKeyFile: str('signature-private-key-file') ?? str('signature_private_key_file'),
    signatureCertificateList: certs === undefined ? undefined : splitCertificates(certs),
    shacacheCaFile: str('shacache-ca-file'),
    shacacheCertFile: str('shacache-cert-file'),
    shacacheKeyFile: str('shacache-key-file'),
    shadirCaFile: str('shadir-ca-file'),
    shadirCertFile: str('shadir-cert-file'),
    shadirKeyFile: str('shadir-key-file'),
    downloadBlacklist: downloadBlacklist.length ? downloadBlacklist : lines('binary-cache-url-blacklist'),
    uploadBlacklist: lines('upload-to-binary-cache-url-blacklist'),
    forceUrlList: lines('download-from-binary-cache-force-url-list'),
  }
}

/** `signature-certificate-list`: split on the BEGIN marker, each piece given the marker back. */
export function splitCertificates(text: string): string[] {
  const marker = '-----BEGIN CERTIFICATE-----'
  return text
    .split(marker)
    .map((q) => q.trim())
    .filter(Boolean)
    .map((q) => `${marker}\n${q}`)
}

export const NODE_DEFAULTS = {
  maximalDelay: 0,
  maximumPeriodicity: 86400,
  promiseTimeout: 20,
  pidfileSoftware: '/opt/slapos/slapgrid-sr.pid',
  pidfileInstance: '/opt/slapos/slapgrid-cp.pid',
  pidfileReport: '/opt/slapos/slapgrid-ur.pid',
  buildout: 'buildout',
  watchdogCommand: '/opt/slapos/bin/slapos-watchdog',
  partitionBaseName: 'slappart',
} as const

/**
 * Values given on the command line replace the file's (grid.md §1.1). `overrides` uses the
 * config key names (`instance_root`, `maximum_periodicity`, ...); undefined means "not given".
 */
export function loadNodeConfig(file: ConfigFile, overrides: Record<string, string | number | undefined> = {}): NodeConfig {
  const flat = new Map<string, string>([...file.section('slapos'), ...file.section('networkcache')])
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined && v !== '') flat.set(k, String(v))
  const view = new ConfigFile(file.path, new Map([['slapos', flat]]))
  const missing = ['computer_id', 'instance_root', 'master_url', 'software_root'].filter((k) => !flat.has(k))
  if (missing.length) {
    throw new ConfigError(`${file.path}: Missing mandatory parameters: ${missing.join(', ')}`, 'set them in [slapos]')
  }
  const empty = ['computer_id', 'instance_root', 'master_url', 'software_root'].filter((k) => flat.get(k) === '')
  if (empty.length) throw new ConfigError(`${file.path}: Mandatory parameters present but empty: ${empty.join(', ')}`)
  const keyFile = view.path_('slapos', 'key_file')
  const certFile = view.path_('slapos', 'cert_file')
  const certRepo = view.path_('slapos', 'certificate_repository_path')
  if ((keyFile || certFile) && !(keyFile && certFile && certRepo)) {
    throw new ConfigError(
      `${file.path}: key_file, cert_file and certificate_repository_path must all be set when one of key_file or cert_file is`,
    )
  }
  const fallbackPid = view.path_('slapos', 'pidfile')
  const partitionTimeout = flat.get('partition_timeout') ?? flat.get('partition-timeout')
  return {
    file,
    computerId: view.require('slapos', 'computer_id'),
    masterUrl: view.require('slapos', 'master_url'),
    softwareRoot: view.path_('slapos', 'software_root') ?? '',
    instanceRoot: view.path_('slapos', 'instance_root') ?? '',
    keyFile,
    certFile,
    masterCaFile: view.path_('slapos', 'master_ca_file'),
    certificateRepositoryPath: certRepo,
    buildout: view.get('slapos', 'buildout')?.trim() || NODE_DEFAULTS.buildout,
    maximalDelay: view.int('slapos', 'maximal_delay', NODE_DEFAULTS.maximalDelay),
    maximumPeriodicity: view.int('slapos', 'maximum_periodicity', NODE_DEFAULTS.maximumPeriodicity),
    promiseTimeout: view.int('slapos', 'promise_timeout', NODE_DEFAULTS.promiseTimeout),
    partitionTimeout: partitionTimeout ? view.int('slapos', flat.has('partition_timeout') ? 'partition_timeout' : 'partition-timeout', 0) : undefined,
    pidfileSoftware: view.path_('slapos', 'pidfile_software') ?? fallbackPid ?? NODE_DEFAULTS.pidfileSoftware,
    pidfileInstance: view.path_('slapos', 'pidfile_instance') ?? fallbackPid ?? NODE_DEFAULTS.pidfileInstance,
    pidfileReport: view.path_('slapos', 'pidfile_report') ?? fallbackPid ?? NODE_DEFAULTS.pidfileReport,
    rootCheck: view.bool('slapos', 'root_check', true, true),
    runAsRoot: view.bool('slapos', 'run_as_root', false),
    forbidSupervisordAutomaticLaunch: view.bool('slapos', 'forbid_supervisord_automatic_launch', false),
    sharedPartList: view.list('slapos', 'shared_part_list'),
    buildTimePartList: view.list('slapos', 'build_time_part_list'),
    watchdogCommand: view.get('slapos', 'watchdog_command')?.trim() || NODE_DEFAULTS.watchdogCommand,
    partitionBaseName: file.str('slapformat', 'partition_base_name', NODE_DEFAULTS.partitionBaseName),
    networkcache: networkcacheConfig(flat),
  }
}

/** One `[multimaster/<url>]` section of the proxy configuration (proxy.md §8). */
export interface MultimasterEntry {
  url: string
  key?: string | undefined
  cert?: string | undefined
  computer?: string | undefined
  partition?: string | undefined
  softwareReleaseList: string[]
}

/** `slapos proxy start|show`: keys of [slapproxy] then [slapos], first section wins (proxy.md §1.2). */
export interface ProxyConfig {
  file: ConfigFile
  host: string
  port: number
  databaseUri: string
  computerId: string
  /** product reference -> software release URL */
  softwareProductList: Map<string, string>
  localSoftwareReleaseRoot: string
  logFile?: string | undefined
  publicDirectoryPath?: string | undefined
  multimaster: MultimasterEntry[]
  /** the shacache/shadir proxy of /shacache/ (proxy.md §10.4) */
  shacache: ShacacheConfig
  /** `allowed_hosts`: more names of this proxy that a request's Host may give */
  allowedHosts: string[]
  /** the request limits that the configuration sets (`max_request_body_size` ...) */
  limits: {
    maxRequestBodySize?: number | undefined
    maxDocumentDepth?: number | undefined
    maxDocumentValues?: number | undefined
    maxParameterCount?: number | undefined
  }
}

/**
 * `shacache_*` keys of the proxy configuration. The proxy works only with both directories;
 * without an upstream URL, what is not stored locally is 404. Each key is also read in the
 * dashed spelling (`shacache-content-directory`) that the original's example file and its
 * `configure local --enable-shacache-proxy` write; the underscore spelling wins.
 */
export interface ShacacheConfig {
  /** archives, one file per sha512 */
  contentDirectory?: string | undefined
  /** shadir entries, one JSON file per key */
  metadataDirectory?: string | undefined
  /** read and kept like the original's, which never uses it either */
  signingKeyPath?: string | undefined
  upstreamCacheUrl?: string | undefined
  upstreamDirUrl?: string | undefined
}

export const PROXY_DEFAULTS = {
  host: '127.0.0.1',
  localSoftwareReleaseRoot: '/',
} as const

/**
 * `overrides` uses the config key names (`host`, `port`, `database_uri`,
 * `local_software_release_root`); undefined means "not given on the command line".
 * `need` lists what the command cannot work without (proxy show only needs the database).
 */
export function loadProxyConfig(
  file: ConfigFile,
  overrides: Record<string, string | number | undefined> = {},
  need: ('port' | 'computer_id')[] = ['port', 'computer_id'],
): ProxyConfig {
  const flat = new Map<string, string>()
  // [slapproxy] and [slapos] in the order of the file: the first to give a key a value wins
  const order = [...file.sections.keys()].filter((n) => n === 'slapproxy' || n === 'slapos')
  for (const section of order) for (const [k, v] of file.section(section)) if (!flat.get(k)) flat.set(k, v)
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined && v !== '') flat.set(k, String(v))
  const view = new ConfigFile(file.path, new Map([['slapproxy', flat]]))
  const databaseUri = flat.get('database_uri')?.trim()
  if (!databaseUri) throw new ConfigError(`${file.path}: database-uri is required.`, 'set database_uri in [slapproxy] or pass --database-uri')
  for (const key of need) {
    if (!flat.get(key)?.trim()) throw new ConfigError(`${file.path}: ${key} is required.`, `set ${key} in [slapproxy] (or [slapos])`)
  }
  const port = view.int('slapproxy', 'port', 0)
  if (port < 0 || port > 65535) throw new ConfigError(`${file.path}: port ${port} is out of range`, 'use 0..65535 (0 = any free port)')
  const products = new Map<string, string>()
  for (const line of view.list('slapproxy', 'software_product_list')) {
    const m = /^(\S+)\s+(\S+)$/.exec(line)
    if (!m) throw new ConfigError(`${file.path}: software_product_list line '${line}' is not '<product> <url>'`)
    products.set(m[1] ?? '', m[2] ?? '')
  }
  const multimaster: MultimasterEntry[] = []
  for (const [name, s] of file.sections) {
    if (!name.startsWith('multimaster/')) continue
    multimaster.push({
      url: name.slice('multimaster/'.length),
      key: s.get('key') || undefined,
      cert: s.get('cert') || undefined,
      computer: s.get('computer') || undefined,
      partition: s.get('partition') || undefined,
      softwareReleaseList: (s.get('software_release_list') ?? '').split('\n').map((x) => x.trim()).filter(Boolean),
    })
  }
  return {
    file,
    host: flat.get('host')?.trim() || PROXY_DEFAULTS.host,
    port,
    // like the original, a relative database_uri is taken from the current directory
    databaseUri: resolve(expandUser(databaseUri)),
    computerId: flat.get('computer_id')?.trim() ?? '',
    softwareProductList: products,
    localSoftwareReleaseRoot: flat.get('local_software_release_root')?.trim() || PROXY_DEFAULTS.localSoftwareReleaseRoot,
    logFile: flat.get('log_file')?.trim() || undefined,
    publicDirectoryPath: flat.get('public_directory_path')?.trim() || undefined,
    multimaster,
    shacache: shacacheConfig(flat),
    allowedHosts: (flat.get('allowed_hosts') ?? '').split(/[\s,]+/).filter(Boolean),
    limits: {
      maxRequestBodySize: positiveInt(view, 'max_request_body_size'),
      maxDocumentDepth: positiveInt(view, 'max_document_depth'),
      maxDocumentValues: positiveInt(view, 'max_document_values'),
      maxParameterCount: positiveInt(view, 'max_parameter_count'),
    },
  }
}

function positiveInt(view: ConfigFile, key: string): number | undefined {
  if (!view.get('slapproxy', key)?.trim()) return undefined
  const n = view.int('slapproxy', key, 0)
  if (n < 1) throw new ConfigError(`${view.path}: ${key} must be a positive number`, `remove ${key} from [slapproxy] for the default`)
  return n
}

function shacacheConfig(flat: Map<string, string>): ShacacheConfig {
  const get = (key: string) => flat.get(key)?.trim() || flat.get(key.replace(/_/g, '-'))?.trim() || undefined
  const path = (key: string) => {
    const v = get(key)
    return v === undefined ? undefined : resolve(expandUser(v))
  }
  return {
    contentDirectory: path('shacache_content_directory'),
    metadataDirectory: path('shacache_metadata_directory'),
    signingKeyPath: path('shacache_signing_key_path'),
    upstreamCacheUrl: get('shacache_upstream_cache_url'),
    upstreamDirUrl: get('shacache_upstream_dir_url'),
  }
}

/**
 * `slapos request|supply|remove|service|computer|console`: the client configuration
 * (client-cli.md §1.1, cli.md §12.2). Key and certificate come from the command line, then
 * `[slapconsole]`, then - only when neither is set yet - from `[slapos]`.
 */
export interface ClientConfig {
  file: ConfigFile
  masterUrl: string
  /** HATEOAS entry point; when absent the master is asked (`getHateoasUrl`) */
  masterRestUrl?: string | undefined
  keyFile?: string | undefined
  certFile?: string | undefined
  /** 0.35.1 `[slapconsole] alias` lines `<name> <url>`, in file order */
  aliases: Map<string, string>
}

export function loadClientConfig(file: ConfigFile, overrides: { key_file?: string | undefined; cert_file?: string | undefined } = {}): ClientConfig {
  if (!file.has('slapos')) throw new ConfigError(`${file.path}: no [slapos] section`, 'add a [slapos] section with master_url')
  const masterUrl = file.get('slapos', 'master_url')?.trim()
  if (!masterUrl) throw new ConfigError(`${file.path}: No option 'master_url' in section: 'slapos'`, 'set master_url in [slapos] (e.g. http://127.0.0.1:8080 for a local proxy)')
  let keyFile = overrides.key_file || file.get('slapconsole', 'key_file')?.trim() || undefined
  let certFile = overrides.cert_file || file.get('slapconsole', 'cert_file')?.trim() || undefined
  if (!keyFile && !certFile) {
    keyFile = file.get('slapos', 'key_file')?.trim() || undefined
    certFile = file.get('slapos', 'cert_file')?.trim() || undefined
  }
  if (masterUrl.startsWith('https') && !keyFile && !certFile) {
    throw new ConfigError(`${file.path}: No option 'key_file' and/or 'cert_file'`, 'set cert_file and key_file in [slapconsole] (your certificate from the master)')
  }
  const aliases = new Map<string, string>()
  const aliasText = file.get('slapconsole', 'alias') ?? file.get('slapos', 'alias') ?? ''
  for (const line of aliasText.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const m = /^(\S+)\s+(\S+)$/.exec(line)
    if (!m) throw new ConfigError(`${file.path}: alias line '${line}' is not '<name> <url>'`)
    aliases.set(m[1] ?? '', m[2] ?? '')
  }
  // Like the original (os.path.expanduser only): relative paths are taken from the current directory.
  const path = (p: string | undefined) => (p ? resolve(expandUser(p)) : undefined)
  return {
    file,
    masterUrl,
    masterRestUrl: file.get('slapos', 'master_rest_url')?.trim() || undefined,
    keyFile: path(keyFile),
    certFile: path(certFile),
    aliases,
  }
}

/**
 * `slapos node format` (format.md §1.2): built-in defaults, then every key of [slapformat],
 * then every key of [slapos] (a key in both takes the [slapos] value), then the command
 * line. Booleans from the file must be exactly true/false, like the original.
 */
export interface FormatConfig {
  file: ConfigFile
  computerId: string
  masterUrl: string
  keyFile?: string | undefined
  certFile?: string | undefined
  masterCaFile?: string | undefined
  softwareRoot: string
  instanceRoot: string
  certificateRepositoryPath?: string | undefined
  instanceStorageHome?: string | undefined
  rootCheck: boolean
  managerList: string[]
  computerXml: string
  computerJson?: string | undefined
  logFile?: string | undefined
  interfaceName?: string | undefined
  ipv6Interface?: string | undefined
  ipv4LocalNetwork?: string | undefined
  partitionAmount: number
  partitionBaseName: string
  userBaseName: string
  tapBaseName: string
  softwareUser: string
  alterUser: boolean
  alterNetwork: boolean
  createTap: boolean
  tapIpv6: boolean
  tapGatewayInterface: string
  createTun: boolean
  tunIpv6: boolean
  partitionHasIpv6Range: boolean
  ipv6Prefixshift: number
  inputDefinitionFile?: string | undefined
  outputDefinitionFile?: string | undefined
  dryRun: boolean
  now: boolean
}

export const FORMAT_DEFAULTS = {
  rootCheck: true,
  softwareUser: 'slapsoft',
  alterUser: true,
  alterNetwork: true,
  createTap: true,
  tapIpv6: true,
  tapGatewayInterface: '',
  createTun: false,
  tunIpv6: true,
  partitionHasIpv6Range: true,
  ipv6Prefixshift: 16,
  // the original leaves these unset and then names partitions None0, None1...
  partitionBaseName: 'slappart',
  userBaseName: 'slapuser',
  tapBaseName: 'slaptap',
} as const

/** Command-line values of node format; undefined = not given. */
export interface FormatOverrides {
  computer_xml?: string | undefined
  computer_json?: string | undefined
  input_definition_file?: string | undefined
  output_definition_file?: string | undefined
  alter_user?: string | undefined
  alter_network?: string | undefined
  dry_run?: boolean | undefined
  now?: boolean | undefined
}

export function loadFormatConfig(file: ConfigFile, overrides: FormatOverrides = {}): FormatConfig {
  for (const s of ['slapformat', 'slapos']) {
    if (!file.has(s)) throw new ConfigError(`${file.path}: no [${s}] section`, `node format reads both [slapformat] and [slapos]`)
  }
  const flat = new Map<string, string>([...file.section('slapformat'), ...file.section('slapos')])
  for (const k of ['computer_xml', 'computer_json', 'input_definition_file', 'output_definition_file', 'alter_user', 'alter_network'] as const) {
    const v = overrides[k]
    if (v !== undefined) flat.set(k, v)
  }
  for (const k of ['bridge_name', 'no_bridge']) {
    if (flat.get(k)?.trim()) throw new ConfigError(`Option '${k}' is totally deprecated, please update your config file`, 'remove it; set interface_name (and create_tap) instead')
  }
  const get = (k: string) => {
    const v = flat.get(k)?.trim()
    return v ? v : undefined
  }
  const bool = (k: string, dflt: boolean) => {
    const v = get(k)
    if (v === undefined) return dflt
    const l = v.toLowerCase()
    if (l === 'true') return true
    if (l === 'false') return false
    throw new ConfigError(`Option '${k}' needs to be "True" or "False", wrong value: '${v}'`, 'For help use --help')
  }
  const alterNetwork = bool('alter_network', FORMAT_DEFAULTS.alterNetwork)
  const alterUser = bool('alter_user', FORMAT_DEFAULTS.alterUser)
  const partitionHasIpv6Range = bool('partition_has_ipv6_range', FORMAT_DEFAULTS.partitionHasIpv6Range)
  const createTap = bool('create_tap', FORMAT_DEFAULTS.createTap)
  const createTun = bool('create_tun', FORMAT_DEFAULTS.createTun)
  const tapIpv6 = bool('tap_ipv6', FORMAT_DEFAULTS.tapIpv6)
  const tunIpv6 = bool('tun_ipv6', FORMAT_DEFAULTS.tunIpv6)
  for (const k of ['computer_id', 'instance_root', 'master_url', 'software_root', 'computer_xml']) {
    if (!get(k)) throw new ConfigError(`Parameter '${k}' is not defined.`, `set ${k} in [${k === 'computer_xml' ? 'slapformat' : 'slapos'}] of ${file.path}`)
  }
  const amountText = get('partition_amount')
  if (amountText === undefined || !/^\d+$/.test(amountText)) {
    throw new ConfigError(`${file.path}: partition_amount ${amountText === undefined ? 'is not set' : `= ${amountText} is not a number`}`, 'set partition_amount in [slapformat]')
  }
  const partitionAmount = Number.parseInt(amountText, 10)
  const shiftText = get('ipv6_prefixshift')
  if (shiftText !== undefined && !/^\d+$/.test(shiftText)) throw new ConfigError(`${file.path}: ipv6_prefixshift = ${shiftText} is not an integer`)
  const ipv6Prefixshift = shiftText === undefined ? FORMAT_DEFAULTS.ipv6Prefixshift : Number.parseInt(shiftText, 10)
  if (2 ** ipv6Prefixshift < 4 * partitionAmount) {
    throw new ConfigError(`ipv6_prefixshift ${ipv6Prefixshift} is too small for partition_amount ${partitionAmount}`, 'raise ipv6_prefixshift (2**shift must be >= 4 * partition_amount)')
  }
  const existing = (k: string) => {
    const p = get(k)
    if (p === undefined) return undefined
    const abs = resolve(expandUser(p))
    try {
      statSync(abs)
    } catch {
      throw new ConfigError(`File '${abs}' does not exist or is not readable.`, `fix ${k} in ${file.path}`)
    }
    return abs
  }
  const keyFile = existing('key_file')
  const certFile = existing('cert_file')
  const masterCaFile = existing('master_ca_file')
  const abs = (k: string) => {
    const p = get(k)
    return p === undefined ? undefined : resolve(expandUser(p))
  }
  const rootCheck = get('root_check')
  return {
    file,
    computerId: get('computer_id') ?? '',
    masterUrl: get('master_url') ?? '',
    keyFile,
    certFile,
    masterCaFile,
    softwareRoot: abs('software_root') ?? '',
    instanceRoot: abs('instance_root') ?? '',
    certificateRepositoryPath: abs('certificate_repository_path'),
    instanceStorageHome: abs('instance_storage_home'),
    rootCheck: rootCheck === undefined ? FORMAT_DEFAULTS.rootCheck : bool('root_check', true),
    managerList: (get('manager_list') ?? '').split(/[\s,]+/).filter(Boolean),
    computerXml: abs('computer_xml') ?? '',
    computerJson: get('computer_json'),
    logFile: get('log_file'),
    interfaceName: get('interface_name'),
    ipv6Interface: get('ipv6_interface'),
    ipv4LocalNetwork: get('ipv4_local_network'),
    partitionAmount,
    partitionBaseName: flat.get('partition_base_name')?.trim() ?? FORMAT_DEFAULTS.partitionBaseName,
    userBaseName: flat.get('user_base_name')?.trim() ?? FORMAT_DEFAULTS.userBaseName,
    tapBaseName: flat.get('tap_base_name')?.trim() ?? FORMAT_DEFAULTS.tapBaseName,
    softwareUser: get('software_user') ?? FORMAT_DEFAULTS.softwareUser,
    alterUser,
    alterNetwork,
    createTap,
    tapIpv6,
    tapGatewayInterface: get('tap_gateway_interface') ?? FORMAT_DEFAULTS.tapGatewayInterface,
    createTun,
    tunIpv6,
    partitionHasIpv6Range,
    ipv6Prefixshift,
    inputDefinitionFile: abs('input_definition_file'),
    outputDefinitionFile: abs('output_definition_file'),
    // like the original, dry_run and now come from the command line only
    dryRun: overrides.dry_run === true,
    now: overrides.now === true,
  }
}
