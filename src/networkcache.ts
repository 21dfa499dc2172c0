// The binary cache of `slapos node software` (spec grid.md §3.3): instead of building a
// Software Release for hours, download a pre-built archive of `<software_root>/<md5(url)>`
// that a trusted builder signed; after a successful build, publish ours. Used by
// grid-software.ts (and, for the look-up and the signature check, by the `slapos cachelookup` commands).
//
// The wire is the one of the shadir/shacache servers:
//
//   GET  <dir-url>/<md5(url)>    -> JSON list of [entry JSON text, base64 signature]
//   GET  <cache-url>/<sha512>    -> the archive (its sha512 must be the name)
//   POST <cache-url>             <- the archive; 201, body = its sha512      (upload)
//   PUT  <dir-url>/<md5(url)>    <- [entry JSON text, signature]; 201         (upload)
//
// An entry is {"sha512", "software_url", "software_root", "multiarch", "os"}; the signature is
// RSA PKCS#1 v1.5 (or the key's own scheme) over SHA-1 of the entry text, and only entries
// signed by a certificate of `signature-certificate-list` are used. The archive is a tar.gz
// whose only top-level member is `<md5(url)>`.
//
// Like the original, any problem here only means "not downloaded" / "not uploaded": it is
// logged and the caller builds with buildout. Unlike it, members with absolute names or `..`
// are refused, and the archive is extracted next to the software path then renamed into place,
// so that a half-extracted release never looks installed.
import type { X509Certificate } from 'node:crypto'
import { closeSync, constants, createReadStream, createWriteStream, existsSync, fstatSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { join } from 'node:path'
import { procOfChildren } from './beneath.ts'
import type { NetworkcacheConfig } from './config.ts'
import type { Logger } from './log.ts'
import type { Runner } from './system.ts'
import { pythonJson } from './shadir.ts'

// node:crypto costs a process ~1.4 MB of private memory and ~1 MB of code pages, and time to
// load: taken on first use only
const nodeCrypto = (): typeof import('node:crypto') => process.getBuiltinModule('node:crypto')

/** What an entry must match on this machine: `gcc -dumpmachine` and the distribution. */
export interface MachineInfo {
  multiarch: string
  /** (id, version, codename), as Python's distro library gives them */
  os: [string, string, string]
}

/** A shadir entry once read (old entries normalised). */
export interface CacheEntry {
  sha512: string
  multiarch: string
  os: unknown
  [key: string]: unknown
}

export interface DownloadJob {
  cfg: NetworkcacheConfig
  url: string
  /** md5 of the URL: the shadir key and the archive's top directory */
  hash: string
  softwareRoot: string
  runner: Runner
  env: NodeJS.ProcessEnv
  log: Logger
}

// --- pure parts ---

/** Python's distro-based `_debianize`: raspbian is debian, Debian keeps its major version and no codename. */
export function debianize(os: readonly string[]): [string, string, string] {
  let [name = '', version = '', codename = ''] = os
  name = name.toLowerCase()
  if (name === 'raspbian') name = 'debian'
  if (name === 'debian') {
    if (version.includes('.')) version = version.split('.')[0] ?? ''
    codename = ''
  }
  return [name, version, codename]
}

export function osMatches(a: readonly string[], b: readonly string[]): boolean {
  const x = debianize(a)
  const y = debianize(b)
  return x[0] === y[0] && x[1] === y[1] && x[2] === y[2]
}

/** An entry's JSON text; entries older than `multiarch` (machine x86_64, os as a Python tuple string) are converted. Throws when unusable. */
export function loadEntry(text: string): CacheEntry {
  const entry = readEntry(text)
  if (typeof entry.sha512 !== 'string' || entry.sha512 === '') throw new Error('entry has no sha512')
  return entry
}

/** loadEntry without the sha512 check: what `cachelookup binary-sr` shows. */
export function readEntry(text: string): CacheEntry {
  const entry = JSON.parse(text) as Record<string, unknown>
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new Error('entry is not an object')
  if (!('multiarch' in entry) && entry.machine === 'x86_64') {
    entry.multiarch = 'x86_64-linux-gnu'
    entry.os = parsePythonTuple(String(entry.os))
  }
  if (typeof entry.multiarch !== 'string') throw new Error('entry has no multiarch')
  return entry as CacheEntry
}

/** Same multiarch and a matching distribution (the entry's os must be a list of three strings). */
export function isCompatible(machine: MachineInfo, entry: CacheEntry): boolean {
  const os = entry.os
  if (!Array.isArray(os) || os.length !== 3 || !os.every((x) => typeof x === 'string')) return false
  return machine.multiarch === entry.multiarch && osMatches(os as string[], machine.os)
}

/** True when one of the certificates verifies the base64 signature of `content` (SHA-1). */
export function verifySignature(content: string, signature: string, certificates: readonly X509Certificate[]): boolean {
  if (!signature) return false
  const sig = Buffer.from(signature, 'base64')
  const data = Buffer.from(content, 'utf8')
  for (const cert of certificates) {
    try {
      if (nodeCrypto().verify('sha1', data, cert.publicKey, sig)) return true
    } catch {
      // a key type that cannot verify this signature: try the next certificate
    }
  }
  return false
}

/** A shadir entry as the `cachelookup` commands list it: its JSON text, and whether a trusted certificate signed it. */
export interface ListedEntry {
  text: string
  verified: boolean
}

/**
 * Every [entry, signature] pair of a directory answer, trusted or not, in its order, each with
 * whether one of the certificates verifies its signature (libnetworkcache's unfiltered
 * `select_generic`, as `download_entry_list` gives it). Throws when the answer is not a list of pairs.
 */
export function listEntries(answer: unknown, certificates: readonly X509Certificate[]): ListedEntry[] {
  if (!Array.isArray(answer) || !answer.every((x) => Array.isArray(x) && typeof x[0] === 'string')) {
    throw new Error('the directory answer is not a list of [entry, signature]')
  }
  return (answer as Array<[string, unknown]>).map(([text, signature]) => ({
    text,
    verified: verifySignature(text, typeof signature === 'string' ? signature : '', certificates),
  }))
}

/**
 * The entries to try, in the directory's order: signed by a trusted certificate, readable, and
 * compatible with this machine. `rejected` says why the others were left out.
 */
export function selectEntries(answer: unknown, certificates: readonly X509Certificate[], machine: MachineInfo): { entries: CacheEntry[]; rejected: string[] } {
  if (!Array.isArray(answer)) throw new Error('the directory answer is not a JSON list')
  const entries: CacheEntry[] = []
  const rejected: string[] = []
  answer.forEach((item: unknown, i) => {
    if (!Array.isArray(item) || typeof item[0] !== 'string') {
      rejected.push(`entry ${i}: not an [entry, signature] pair`)
      return
    }
    const [text, signature] = item as [string, unknown]
    if (!verifySignature(text, typeof signature === 'string' ? signature : '', certificates)) {
      rejected.push(`entry ${i}: not signed by a trusted certificate`)
      return
    }
    let entry: CacheEntry
    try {
      entry = loadEntry(text)
    } catch (e) {
      rejected.push(`entry ${i}: ${e instanceof Error ? e.message : String(e)}`)
      return
    }
    if (!isCompatible(machine, entry)) {
      rejected.push(`entry ${i}: built for ${entry.multiarch} ${JSON.stringify(entry.os)}`)
      return
    }
    entries.push(entry)
  })
  return { entries, rejected }
}

/** Why an archive member cannot be extracted (undefined: fine). Every member must be `<hash>` or below it. */
export function badMember(name: string, hash: string): string | undefined {
  if (name.startsWith('/')) return `absolute member name ${name}`
  const parts = name.split('/')
  if (parts.includes('..')) return `member name with .. ${name}`
  if (parts[0] !== hash) return `member outside ${hash}/: ${name}`
  return undefined
}

/** The (id, version, codename) of Python's distro library, from os-release text (and /etc/debian_version for Debian without VERSION_ID). */
export function distributionTuple(osRelease: string, debianVersion = ''): [string, string, string] {
  const props = new Map<string, string>()
  for (const line of osRelease.split('\n')) {
    const m = /^\s*([A-Za-z0-9_]+)=(.*)$/.exec(line)
    if (!m) continue
    let v = (m[2] ?? '').trim()
    if (/^(["']).*\1$/.test(v)) v = v.slice(1, -1)
    props.set((m[1] ?? '').toLowerCase(), v.replace(/\\(.)/g, '$1'))
  }
  const normalized: Record<string, string> = { ol: 'oracle', 'opensuse-leap': 'opensuse' }
  const rawId = (props.get('id') ?? '').toLowerCase().replaceAll(' ', '_')
  const id = normalized[rawId] ?? rawId
  let version = props.get('version_id') ?? ''
  if (!version && (id === 'debian' || (props.get('id_like') ?? '').split(' ').includes('debian'))) version = debianVersion.trim()
  let codename = props.get('version_codename') || props.get('ubuntu_codename') || ''
  if (!codename && props.has('version')) {
    const m = /\((\D+)\)|,\s*(\D+)/.exec(props.get('version') ?? '')
    codename = m ? (m[1] ?? m[2] ?? '') : ''
  }
  return [id, version, codename]
}

/** The certificates of `signature-certificate-list` that load; the others are logged and ignored. */
export function loadCertificates(pems: readonly string[] | undefined, log?: Logger): X509Certificate[] {
  const out: X509Certificate[] = []
  for (const pem of pems ?? []) {
    try {
      out.push(new (nodeCrypto().X509Certificate)(pem))
    } catch (e) {
      log?.info(`Ignored wrong certificate in signature-certificate-list: ${e instanceof Error ? e.message : String(e)}`)
    }
  }
  return out
}

// --- effects ---

/** `gcc -dumpmachine` and the distribution. Throws when gcc cannot be run: the original then neither downloads nor uploads. */
export async function machineInfo(runner: Runner, env: NodeJS.ProcessEnv): Promise<MachineInfo> {
  let r
  try {
    r = await runner.run(['gcc', '-dumpmachine'], { env })
  } catch (e) {
    throw new Error(`cannot run gcc -dumpmachine (${e instanceof Error ? e.message : String(e)}): the binary cache needs gcc to name this machine`)
  }
  const multiarch = r.stdout.trim()
  if (r.code !== 0 || !multiarch) throw new Error(`gcc -dumpmachine failed: ${r.stderr.trim() || `exit ${r.code}`}`)
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8')
    } catch {
      return undefined
    }
  }
  const osRelease = read('/etc/os-release') ?? read('/usr/lib/os-release') ?? ''
  return { multiarch, os: distributionTuple(osRelease, read('/etc/debian_version') ?? '') }
}

/** The shadir answer for a key: the parsed JSON (a list of [entry, signature]). HTTP errors throw. */
export async function fetchDirectory(dirUrl: string, key: string): Promise<unknown> {
  const res = await request('GET', joinUrl(dirUrl, key), { timeoutMs: TIMEOUT_MS })
  const body = await readBody(res)
  if (!ok(res)) throw new HttpError(res, body)
  try {
    return JSON.parse(body.toString('utf8'))
  } catch {
    throw new Error(`Failed to parse json response (${body.toString('utf8').slice(0, 200)})`)
  }
}

/**
 * §3.2 step 2: the signed, compatible archive of `job.url`, extracted as
 * `<software_root>/<hash>`. Returns true when installed; false (and a log line) otherwise.
 */
export async function downloadSoftware(job: DownloadJob): Promise<boolean> {
  const { cfg, url, hash, log } = job
  const cacheUrl = cfg.downloadBinaryCacheUrl
  const dirUrl = cfg.downloadBinaryDirUrl
  if (!cacheUrl || !dirUrl) {
    if (cacheUrl || dirUrl) log.warning('networkcache badly configured: download-binary-cache-url and download-binary-dir-url are both needed')
    return false
  }
  const prefix = cfg.downloadBlacklist.find((p) => url.startsWith(p))
  if (prefix !== undefined) {
    log.warning(`URL ${prefix} is blacklisted`)
    return false
  }
  log.info(`Downloading ${url} binary from network cache.`)
  let work: WorkDir | undefined
  try {
    const machine = await machineInfo(job.runner, job.env)
    const answer = await fetchDirectory(dirUrl, hash)
    const { entries, rejected } = selectEntries(answer, loadCertificates(cfg.signatureCertificateList, log), machine)
    for (const why of rejected) log.debug(`Binary cache: ${why}`)
    work = workDir(job.softwareRoot, `.${hash}.download-`)
    const archive = join(work.path, 'archive')
    let found = false
    for (const entry of entries) {
      // an entry whose archive cannot be fetched is skipped, as the original does
      const res = await request('GET', joinUrl(cacheUrl, entry.sha512), { timeoutMs: TIMEOUT_MS }).catch(() => undefined)
      if (!res) continue
      if (!ok(res)) {
        res.resume()
        continue
      }
      const sha512 = await saveChecked(res, archive)
      if (sha512 !== entry.sha512) throw new Error(`invalid checksum: the archive's sha512 is ${sha512}, the entry says ${entry.sha512}`)
      found = true
      break
    }
    if (!found) {
      const why = rejected.length ? ` (${rejected.slice(0, 3).join('; ')}${rejected.length > 3 ? '; ...' : ''})` : ''
      log.info(`Failed to download from network cache ${url}: no trusted archive for ${machine.multiarch} ${JSON.stringify(machine.os)}${why}`)
      return false
    }
    log.info('Extracting archive of cached software release...')
    await extractArchive(archive, job.softwareRoot, hash, work.path, job.runner, job.env)
    return true
  } catch (e) {
    // a signed archive that tries to write elsewhere is worth an operator's attention
    const line = `Failed to download from network cache ${url}: ${e instanceof Error ? e.message : String(e)}`
    if (e instanceof RefusedArchive) log.warning(line)
    else log.info(line)
    return false
  } finally {
    work?.done()
  }
}

/** A directory of this process in the software root, reached by `path` whatever its name becomes. */
interface WorkDir {
  /** `/proc/<pid>/fd/<n>`: for this process and the commands it runs (tar) */
  path: string
  /** removes it with all it holds */
  done(): void
}

/**
 * A fresh directory (0700, ours) in the software root. The software user owns that root and
 * may rename the directory and put a link under its name, so everything in it is reached
 * through the open descriptor's path instead (`/proc/<pid>/fd/<n>`, which tar, a child, can
 * use too): a link planted meanwhile never leads root's writes, extraction or removal elsewhere.
 */
function workDir(softwareRoot: string, prefix: string): WorkDir {
  const made = mkdtempSync(join(softwareRoot, prefix))
  const fd = openSync(made, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW)
  const st = fstatSync(fd)
  if (st.uid !== process.getuid?.() || (st.mode & 0o777) !== 0o700) {
    closeSync(fd)
    throw new Error(`${made} was replaced as it was made`)
  }
  const path = `${procOfChildren()}/fd/${fd}`
  return {
    path,
    done() {
      try {
        // inside a directory only we may enter: nothing there can be swapped
        for (const name of readdirSync(path)) rmSync(join(path, name), { recursive: true, force: true })
        // the directory itself by its name, only if that name still leads to it (else the
        // empty directory stays where its owner moved it)
        const now = lstatSync(made, { throwIfNoEntry: false })
        if (now?.isDirectory() && now.ino === st.ino && now.dev === st.dev) rmdirSync(made)
      } catch {
        // a name swapped meanwhile: what the run did stands, the leftover is empty
      } finally {
        closeSync(fd)
      }
    },
  }
}

/**
 * Lists the archive (every member must be `<hash>` or below, no absolute name, no `..`), extracts
 * it with permissions (and, as root, owners) into `work`, then renames `<work>/tree/<hash>` to
 * `<softwareRoot>/<hash>`. Throws on any problem; nothing is left at the software path then.
 */
export async function extractArchive(archive: string, softwareRoot: string, hash: string, work: string, runner: Runner, env: NodeJS.ProcessEnv): Promise<void> {
  const tarEnv = { ...env, LC_ALL: 'C' }
  const index = join(work, 'members')
  const list = await runner.run(['tar', '-t', '-P', '-f', archive, `--index-file=${index}`], { env: tarEnv })
  if (list.code !== 0) throw new Error(`tar cannot list the archive: ${list.stderr.trim() || `exit ${list.code}`}`)
  const members = readFileSync(index, 'utf8').split('\n').filter(Boolean)
  if (members.length === 0) throw new Error('the archive is empty')
  for (const m of members) {
    const bad = badMember(m, hash)
    if (bad) throw new RefusedArchive(`refused archive: ${bad}`)
  }
  const tree = join(work, 'tree')
  rmSync(tree, { recursive: true, force: true })
  mkdirSync(tree)
  const x = await runner.run(['tar', '-x', '-p', '-f', archive, '-C', tree], { env: tarEnv })
  if (x.code !== 0) throw new Error(`tar cannot extract the archive: ${x.stderr.trim() || `exit ${x.code}`}`)
  const top = join(tree, hash)
  if (!existsSync(top) || !lstatSync(top).isDirectory()) throw new Error(`the archive has no directory ${hash}`)
  renameSync(top, join(softwareRoot, hash))
}

export interface UploadJob extends DownloadJob {
  abort?: AbortSignal | undefined
  /** milliseconds between tries (the original: 30 minutes) */
  retryDelayMs?: number
}

/**
 * §3.2 step 4: archive `<software_root>/<hash>` (arcname `<hash>`) and publish it, up to three
 * tries. The caller checked the upload URLs, `.shared` and the upload blacklist. Returns true
 * once published.
 */
export async function uploadSoftware(job: UploadJob): Promise<boolean> {
  const { log, hash } = job
  log.info('Creating archive of software release...')
  const work = workDir(job.softwareRoot, `.${hash}.upload-`)
  try {
    const archive = join(work.path, 'archive.tar.gz')
    const c = await job.runner.run(['tar', '-c', '-z', '-f', archive, '-C', job.softwareRoot, hash], { env: { ...job.env, LC_ALL: 'C' } })
    if (c.code !== 0) {
      log.info(`Failed to upload file. tar cannot create the archive: ${c.stderr.trim() || `exit ${c.code}`}`)
      return false
    }
    for (let i = 0; i < 3; i++) {
      log.info(`Trying to upload archive of software release (try ${i})...`)
      const outcome = await uploadOnce(job, archive)
      if (outcome === 'done') return true
      // a configuration problem does not go away by waiting (the original waits anyway)
      if (outcome === 'fatal' || i === 2 || job.abort?.aborted) break
      // let the cache digest a partial upload before trying again
      await sleep(job.retryDelayMs ?? 30 * 60 * 1000, job.abort)
      if (job.abort?.aborted) break
    }
    return false
  } finally {
    work.done()
  }
}

/** One try: 'done', 'retry' (the network or a server failed) or 'fatal' (configuration, this machine). */
async function uploadOnce(job: UploadJob, archive: string): Promise<'done' | 'retry' | 'fatal'> {
  const { cfg, log, url, hash } = job
  const cacheUrl = cfg.uploadBinaryCacheUrl
  const dirUrl = cfg.uploadBinaryDirUrl
  if (!cacheUrl || !dirUrl) return 'fatal'
  log.info(`Uploading ${url} binary into network cache.`)
  let privateKey: ReturnType<typeof import('node:crypto').createPrivateKey> | undefined
  let machine: MachineInfo
  try {
    if (cfg.signaturePrivateKeyFile) {
      privateKey = nodeCrypto().createPrivateKey(readFileSync(cfg.signaturePrivateKeyFile))
      // an upload nobody could verify would be downloaded by no node, and rebuilt and uploaded again
      const pub = nodeCrypto().createPublicKey(privateKey).export({ type: 'spki', format: 'pem' })
      const certs = loadCertificates(cfg.signatureCertificateList, log)
      if (!certs.some((c) => c.publicKey.export({ type: 'spki', format: 'pem' }) === pub)) {
        throw new Error('Invalid configuration: no matching certificate for private key (continuing would cause duplicate uploads because it would never manage to download these uploads)')
      }
    }
    machine = await machineInfo(job.runner, job.env)
  } catch (e) {
    log.info(`Failed to upload file. ${e instanceof Error ? e.message : String(e)}`)
    return 'fatal'
  }
  try {
    const sha512 = await fileSha512(archive)
    const tls = (where: 'shacache' | 'shadir'): TlsFiles => ({
      ca: where === 'shacache' ? cfg.shacacheCaFile : cfg.shadirCaFile,
      cert: where === 'shacache' ? cfg.shacacheCertFile : cfg.shadirCertFile,
      key: where === 'shacache' ? cfg.shacacheKeyFile : cfg.shadirKeyFile,
    })
    // already in the cache: only the directory entry is added
    const have = await request('GET', joinUrl(cacheUrl, sha512), { timeoutMs: TIMEOUT_MS, tls: tls('shacache') })
    have.resume()
    if (!ok(have)) {
      const size = statSync(archive).size
      const res = await request('POST', cacheUrl.replace(/\/+$/, ''), {
        timeoutMs: UPLOAD_TIMEOUT_MS,
        tls: tls('shacache'),
        headers: { 'Content-Length': String(size), 'Content-Type': 'application/octet-stream' },
        body: archive,
      })
      const body = (await readBody(res)).toString('utf8')
      if (!ok(res)) throw new HttpError(res, Buffer.from(body))
      if (res.statusCode !== 201 || body !== sha512) throw new Error(`Failed to upload data to SHACACHE Server. Response code: ${res.statusCode}. Response data: ${body.slice(0, 200)}`)
    }
    const entry = pythonJson({ sha512, software_url: url, software_root: job.softwareRoot, multiarch: machine.multiarch, os: machine.os })
    const signature = privateKey ? nodeCrypto().sign('sha1', Buffer.from(entry, 'utf8'), privateKey).toString('base64') : ''
    const res = await request('PUT', joinUrl(dirUrl, hash), {
      timeoutMs: UPLOAD_TIMEOUT_MS,
      tls: tls('shadir'),
      headers: { 'Content-Type': 'application/json' },
      data: pythonJson([entry, signature]),
    })
    const body = (await readBody(res)).toString('utf8')
    if (res.statusCode !== 201) throw new Error(`Failed to upload data to SHADIR Server. Response code: ${res.statusCode}. Response data: ${body.slice(0, 200)}`)
    log.info(`Uploaded ${url} binary into network cache (sha512 ${sha512.slice(0, 16)}...).`)
    return 'done'
  } catch (e) {
    log.info(`Failed to upload file. ${e instanceof Error ? e.message : String(e)}`)
    return 'retry'
  }
}

// --- HTTP ---

// the original waits this long for a connection and the first bytes, not for the whole transfer
const TIMEOUT_MS = 60_000
const UPLOAD_TIMEOUT_MS = 3600_000

interface TlsFiles {
  ca?: string | undefined
  cert?: string | undefined
  key?: string | undefined
}

interface RequestOptions {
  timeoutMs: number
  headers?: Record<string, string>
  tls?: TlsFiles
  /** a file sent as the body */
  body?: string
  /** a text sent as the body */
  data?: string
}

/** An archive with a member that would land outside `<software_root>/<md5>/`. */
export class RefusedArchive extends Error {}

export class HttpError extends Error {
  readonly status: number
  constructor(res: IncomingMessage, body: Buffer) {
    super(`HTTP Error ${res.statusCode}: ${res.statusMessage ?? ''}${body.length ? ` (${body.toString('utf8').slice(0, 200).trim()})` : ''}`)
    this.status = res.statusCode ?? 0
  }
}

function ok(res: IncomingMessage): boolean {
  const s = res.statusCode ?? 0
  return s >= 200 && s < 300
}

function joinUrl(base: string, name: string): string {
  return `${base.replace(/\/+$/, '')}/${name}`
}

/** One request with node's http/https (loaded on first use); user:password in the URL becomes Basic authentication. */
function request(method: string, url: string, opts: RequestOptions): Promise<IncomingMessage> {
  const u = new URL(url)
  const https = u.protocol === 'https:'
  if (!https && u.protocol !== 'http:') return Promise.reject(new Error(`unsupported URL scheme: ${url}`))
  const mod = https ? process.getBuiltinModule('node:https') : process.getBuiltinModule('node:http')
  const headers: Record<string, string> = { Connection: 'close', ...opts.headers }
  if (u.username) headers.Authorization = `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}`
  if (opts.data !== undefined) headers['Content-Length'] = String(Buffer.byteLength(opts.data))
  const tls: Record<string, Buffer> = {}
  if (https && opts.tls?.ca) tls.ca = readFileSync(opts.tls.ca)
  if (https && opts.tls?.cert) tls.cert = readFileSync(opts.tls.cert)
  if (https && opts.tls?.key) tls.key = readFileSync(opts.tls.key)
  return new Promise((resolve, reject) => {
    const req = mod.request(
      { method, protocol: u.protocol, hostname: u.hostname.replace(/^\[|\]$/g, ''), port: u.port || undefined, path: `${u.pathname}${u.search}`, headers, timeout: opts.timeoutMs, ...tls },
      (res) => {
        res.setTimeout(opts.timeoutMs, () => res.destroy(new Error(`no data from ${u.host} for ${opts.timeoutMs / 1000} s`)))
        resolve(res)
      },
    )
    req.on('timeout', () => req.destroy(new Error(`${u.host} did not answer within ${opts.timeoutMs / 1000} s`)))
    req.on('error', reject)
    if (opts.body !== undefined) createReadStream(opts.body).on('error', (e) => req.destroy(e)).pipe(req)
    else req.end(opts.data)
  })
}

function readBody(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    res.on('data', (c: Buffer) => chunks.push(c))
    res.on('end', () => resolve(Buffer.concat(chunks)))
    res.on('error', reject)
  })
}

/** Writes the body to `path` and returns its sha512 (hex). */
function saveChecked(res: IncomingMessage, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = nodeCrypto().createHash('sha512')
    const out = createWriteStream(path, { mode: 0o600 })
    res.on('data', (c: Buffer) => hash.update(c))
    res.on('error', (e) => {
      out.destroy()
      reject(e)
    })
    out.on('error', reject)
    out.on('finish', () => resolve(hash.digest('hex')))
    res.pipe(out)
  })
}

function fileSha512(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = nodeCrypto().createHash('sha512')
    createReadStream(path)
      .on('data', (c) => hash.update(c))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject)
  })
}

function sleep(ms: number, abort?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      abort?.removeEventListener('abort', done)
      resolve()
    }
    abort?.addEventListener('abort', done, { once: true })
  })
}

/** `('debian', '6.0.6', '')` or `['a', 'b']` as Python's literal_eval reads a tuple or list of strings. */
function parsePythonTuple(text: string): string[] {
  const m = /^\s*[([]\s*([\s\S]*?)\s*[)\]]\s*$/.exec(text)
  if (!m) throw new Error(`cannot read os ${text}`)
  const out: string[] = []
  const re = /'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"/g
  for (const s of (m[1] ?? '').matchAll(re)) out.push((s[1] ?? s[2] ?? '').replace(/\\(.)/g, '$1'))
  return out
}
