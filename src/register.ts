// `slapos node register`: get a node certificate from the SlapOS Master's web site (token
// or login), then write the node configuration directory: ssl/key, ssl/certificate,
// ssl/partition_pki and slapos.cfg from the template (spec cli.md §11). Also home of the
// small web-site client used by register and configure client (these endpoints are the
// master's web site, not SLAP: they answer JSON, not xml_marshaller).
// Called by src/commands/node-register.ts and src/configure-client.ts.
import { chmodSync, existsSync, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Ctx } from './context.ts'
import { ConnectionError, SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { NODE_CONFIG_EXAMPLE, setKeys } from './templates.ts'

export interface RegisterOptions {
  nodeName: string
  /** the configuration directory D (dirname of --cfg) */
  configurationDirectory: string
  interfaceName: string
  masterUrl: string
  masterUrlWeb: string
  partitionNumber: number
  ipv4LocalNetwork: string
  ipv6Interface?: string | undefined
  softwareRoot: string
  instanceRoot: string
  createTap: boolean
  dryRun: boolean
  /** token mode (default) */
  token?: string | undefined
  /** login mode: forced prompt, or login (+ password) */
  loginAuth: boolean
  login?: string | undefined
  password?: string | undefined
}

/** Asks a person for a value (prompts go to stderr; hidden for passwords). */
export type Prompt = (question: string, hidden?: boolean) => Promise<string>

export interface CertificatePair {
  certificate: string
  key: string
}

/**
 * The computer id inside the certificate text the master returns: from the first `COMP-`
 * to the following `/email` (`CN=COMP-1234/emailAddress=...` -> `COMP-1234`).
 */
export function computerIdFromCertificate(certificate: string): string {
  const start = certificate.indexOf('COMP-')
  const end = start < 0 ? -1 : certificate.indexOf('/email', start)
  if (start < 0 || end < 0) {
    throw new SlapError('the certificate sent by the master names no node (no "COMP-.../email" in its subject)', {
      code: 'E_REGISTER_CERTIFICATE',
      hint: 'check --master-url-web: it must be the web site of a SlapOS Master',
    })
  }
  return certificate.slice(start, end)
}

/**
 * Where an existing configuration directory D goes: D.old, then D.old.1, D.old.2, ...;
 * like the original, the next name increments the LAST CHARACTER as a digit, so after
 * .9 comes .10, then .11 ... .19, then .110.
 */
export function backupPath(dir: string, exists: (p: string) => boolean): string {
  let candidate = `${dir}.old`
  while (exists(candidate)) {
    if (candidate.endsWith('.old')) candidate += '.1'
    else candidate = candidate.slice(0, -1) + String(Number(candidate.slice(-1)) + 1)
  }
  return candidate
}

/** The node configuration register writes (pure). */
export function nodeConfigFromTemplate(o: RegisterOptions, computerId: string): string {
  const d = o.configurationDirectory
  const text = setKeys(NODE_CONFIG_EXAMPLE, 'slapos', {
    computer_id: computerId,
    master_url: o.masterUrl,
    key_file: join(d, 'ssl', 'key'),
    cert_file: join(d, 'ssl', 'certificate'),
    certificate_repository_path: join(d, 'ssl', 'partition_pki'),
    software_root: o.softwareRoot,
    instance_root: o.instanceRoot,
  })
  return setKeys(text, 'slapformat', {
    interface_name: o.interfaceName,
    ipv4_local_network: o.ipv4LocalNetwork,
    partition_amount: o.partitionNumber,
    create_tap: o.createTap ? 'True' : 'False',
    ...(o.ipv6Interface ? { ipv6_interface: o.ipv6Interface } : {}),
  })
}

export async function registerNode(o: RegisterOptions, ctx: Ctx, prompt: Prompt): Promise<number> {
  const log = ctx.log
  const pair = await requestCertificate(o, ctx, prompt)
  const computerId = computerIdFromCertificate(pair.certificate)
  const d = o.configurationDirectory
  const ssl = join(d, 'ssl')
  const cfgPath = join(d, 'slapos.cfg')

  if (!o.dryRun && existsSync(cfgPath)) {
    const target = backupPath(d, (p) => {
      const there = existsSync(p)
      if (there) log.info(`Slapos configuration detected in ${p}`)
      return there
    })
    log.info(`Former slapos configuration detected in ${d} moving to ${target}`)
    renameSync(d, target)
  }
  // Partition users must be able to reach what is under D (e.g. the partition certificates).
  openAncestors(d, log)

  for (const p of [d, ssl]) {
    if (!existsSync(p)) {
      log.info(`Creating directory: ${p}`)
      if (!o.dryRun) {
        // missing parents are made open (0755), like the ancestors above
        mkdirSync(dirname(p), { recursive: true, mode: 0o755 })
        mkdirSync(p, { mode: 0o711 })
      }
    }
  }
  if (!o.dryRun) {
    // Never replace a certificate or key silently: set the old ones aside, numbered.
    for (const [name, content] of [
      ['key', pair.key],
      ['certificate', pair.certificate],
    ] as const) {
      const p = join(ssl, name)
      if (existsSync(p)) {
        const aside = backupPath(p, existsSync)
        log.warning(`${p} exists: moved to ${aside}`)
        renameSync(p, aside)
      }
      log.info(`Copying to '${p}', and setting minimum privileges`)
      // created 0600 from the start: the key is never readable by others, even briefly
      writeFileSync(p, content, { mode: 0o600 })
      chmodSync(p, 0o600)
    }
    const pki = join(ssl, 'partition_pki')
    if (!existsSync(pki)) mkdirSync(pki, { mode: 0o711 })
    chmodSync(d, 0o711)
    chmodSync(ssl, 0o711)
    chmodSync(pki, 0o711)
    const tmp = `${cfgPath}.tmp-${process.pid}`
    writeFileSync(tmp, nodeConfigFromTemplate(o, computerId), { encoding: 'utf8', mode: 0o644 })
    renameSync(tmp, cfgPath)
  }
  log.info(`SlapOS configuration written to ${cfgPath}`)
  log.info(`Node has successfully been configured as ${computerId}.`)
  log.info('Now please invoke slapos node boot on your site.')
  return EXIT.OK
}

/** One request to the master's web site. TLS is not verified, like the original (`verify=False`). */
export async function masterWebRequest(
  url: string,
  opts: { method: 'GET' | 'POST'; headers?: Record<string, string>; form?: Record<string, string>; auth?: { login: string; password: string } },
): Promise<{ status: number; body: string }> {
  const { request } = url.startsWith('https:') ? process.getBuiltinModule('node:https') : process.getBuiltinModule('node:http')
  const body = opts.form ? new URLSearchParams(opts.form).toString() : opts.method === 'POST' ? '' : undefined
  const headers: Record<string, string> = { ...opts.headers }
  if (body !== undefined) {
    headers['content-type'] = 'application/x-www-form-urlencoded'
    headers['content-length'] = String(Buffer.byteLength(body))
  }
  if (opts.auth) headers.authorization = 'Basic ' + Buffer.from(`${opts.auth.login}:${opts.auth.password}`).toString('base64')
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method, headers, rejectUnauthorized: false, timeout: 60_000 }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('no answer within 60 s')))
    req.on('error', (err: NodeJS.ErrnoException) => reject(new ConnectionError(`cannot reach ${url}: ${err.code ?? err.message}`, err)))
    req.end(body)
  })
}

/** `{"certificate": ..., "key": ...}` of a master's answer, or a clear error. */
export function parseCertificatePair(body: string, url: string): CertificatePair {
  try {
    const v = JSON.parse(body) as { certificate?: unknown; key?: unknown }
    if (typeof v.certificate === 'string' && typeof v.key === 'string') return { certificate: v.certificate, key: v.key }
  } catch {
    // reported below
  }
  throw new SlapError(`${url} did not answer a certificate and a key`, {
    code: 'E_REGISTER_ANSWER',
    hint: 'check --master-url-web: it must be the web site of a SlapOS Master',
  })
}

// --- internal ---

const ACCESS_DENIED_TOKEN = 'Access denied to the SlapOS Master. Please check the authentication token or require a new one.'

async function requestCertificate(o: RegisterOptions, ctx: Ctx, prompt: Prompt): Promise<CertificatePair> {
  const web = o.masterUrlWeb.replace(/\/+$/, '')
  const loginMode = o.loginAuth || o.login !== undefined
  let res: { status: number; body: string }
  let url: string
  if (loginMode) {
    const auth = await checkLogin(o, web, prompt, ctx)
    url = `${web}/Person_requestComputer?title=${encodeURIComponent(o.nodeName)}`
    res = await masterWebRequest(url, { method: 'GET', auth })
  } else {
    let token = o.token?.trim() ?? ''
    while (!token) token = (await prompt('Computer security token: ')).trim()
    url = `${web}/Person_requestComputer`
    res = await masterWebRequest(url, { method: 'POST', form: { title: o.nodeName }, headers: { 'X-Access-Token': token } })
  }
  const ok = res.status >= 200 && res.status < 400
  if (!ok && res.body.includes('Certificate still active.')) {
    throw new SlapError(
      `The node name "${o.nodeName}" is already in use. Please change the name, or revoke the active certificate if you want to replace the node.`,
      { code: 'E_NODE_NAME_IN_USE' },
    )
  }
  if (res.status === 403) {
    throw new SlapError(loginMode ? 'Access denied to the SlapOS Master. Please check username and password.' : ACCESS_DENIED_TOKEN, {
      code: 'E_ACCESS_DENIED',
      hint: loginMode ? 'check --login and the password' : 'ask the master for a new token (Token of a compute node) and pass it with --token',
    })
  }
  if (!ok && loginMode && res.body.includes('NotImplementedError')) {
    throw new SlapError('This SlapOS server does not support login/password authentication. Please use the token.', { code: 'E_LOGIN_UNSUPPORTED' })
  }
  if (!ok) throw new SlapError(`${url} answered HTTP ${res.status}`, { code: 'E_REGISTER_HTTP', hint: 'check --master-url-web, or retry later' })
  return parseCertificatePair(res.body, url)
}

/** The login loop of the original: a pair is valid when the home page shows `Logout`. */
async function checkLogin(o: RegisterOptions, web: string, prompt: Prompt, ctx: Ctx): Promise<{ login: string; password: string }> {
  const valid = async (login: string, password: string) => (await masterWebRequest(web, { method: 'GET', auth: { login, password } })).body.includes('Logout')
  if (o.login !== undefined && o.password !== undefined) {
    if (await valid(o.login, o.password)) return { login: o.login, password: o.password }
    ctx.log.warning('Wrong login/password')
    throw new SlapError('Access denied to the SlapOS Master. Please check username and password.', { code: 'E_ACCESS_DENIED' })
  }
  if (o.login !== undefined) {
    const password = await prompt('Password: ', true)
    if (await valid(o.login, password)) return { login: o.login, password }
    ctx.log.warning('Wrong login/password')
  }
  for (;;) {
    const login = await prompt('SlapOS Master Login: ')
    const password = await prompt('Password: ', true)
    if (await valid(login, password)) return { login, password }
    ctx.log.warning('Wrong login/password')
  }
}

/** Adds g+rx,o+rx to every ancestor of `dir` (not `/`) that lacks them; done even in dry-run. */
function openAncestors(dir: string, log: Ctx['log']): void {
  for (let p = dirname(dir); p !== '/' && p !== dirname(p); p = dirname(p)) {
    let st
    try {
      st = statSync(p)
    } catch {
      continue
    }
    const wanted = st.mode | 0o055
    if ((st.mode & 0o055) !== 0o055) {
      log.debug(`Making ${p} readable and searchable by partition users`)
      chmodSync(p, wanted & 0o7777)
    }
  }
}

/**
 * Prompts on stderr and reads one line of stdin; a hidden answer is not echoed on a
 * terminal. One reader serves every prompt (piped answers arrive in one chunk). End of
 * input without an answer is an error, not an endless loop.
 */
export function terminalPrompt(): Prompt {
  let lines: AsyncIterator<string> | undefined
  let muted = false
  return async (question, hidden = false) => {
    if (!lines) {
      const { createInterface } = await import('node:readline')
      const tty = process.stdin.isTTY === true
      const rl = createInterface({ input: process.stdin, output: tty ? process.stderr : undefined, terminal: tty })
      // swallow the echo of a hidden answer
      const writer = rl as unknown as { _writeToOutput?: (s: string) => void }
      const write = writer._writeToOutput?.bind(rl)
      if (write) writer._writeToOutput = (s: string) => void (muted ? undefined : write(s))
      lines = rl[Symbol.asyncIterator]()
    }
    process.stderr.write(question)
    muted = hidden
    try {
      const next = await lines.next()
      if (next.done) throw new SlapError('no answer: the input ended', { code: 'E_NO_INPUT', hint: 'pass the value as an option (--token, --login, --password)' })
      return next.value
    } finally {
      if (muted) process.stderr.write('\n')
      muted = false
    }
  }
}
