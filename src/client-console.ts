// slapos console (old name slapconsole): the namespace of slapos.client.init (`slap`,
// `request`, `supply`, `getInformation`, `product`, 0.35.1 software aliases) offered to a
// JavaScript REPL or to a script file. Called by commands/console.ts only.
//
// The original is a Python console; ours evaluates JavaScript. Calls that talk to the master
// return promises: the REPL awaits them before printing, a script writes `await request(...)`.
// request() returns a handle that is also a promise, so the original's habit
// `x = request(...)` then `x.getConnectionParameter(...)` works as written.
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { PassThrough } from 'node:stream'
import { inspect } from 'node:util'
import { runInThisContext } from 'node:vm'
import { Connection, fromJson, Instance, serviceInformation } from './client.ts'
import { ConfigError, describeError, NotFoundError, SlapError } from './errors.ts'
import type { PyDict, PyValue } from './slap-protocol.ts'

export const BANNER = [
  'slapos console: JavaScript with the slap API of this configuration.',
  '  slap                       the connection (slap.registerOpenOrder().request(...), slap.registerSupply().supply(...))',
  "  request(url, title, parameters?, softwareType?, filter?, state?, shared?)   e.g. x = request(product.kvm, 'mykvm')",
  "                             then x.getConnectionParameter('url'), x.getState(), ... as in the original",
  "  supply(url, computerGuid, state = 'available')",
  "  getInformation(title)      service information (HATEOAS)",
  '  product.<name>             best software release URL of a software product',
  'Unlike the original (Python), this is JavaScript: parameters are objects ({key: "value"}), and calls',
  'to the master return promises: the console waits for them; in scripts write `await`.',
  'An error prints one line and the console goes on; the exit status is 1 if a statement failed.',
].join('\n')

/** Everything the console and its scripts see as globals. */
export function consoleNamespace(conn: Connection): Record<string, unknown> {
  const openOrder = {
    request: (...args: unknown[]) => pendingInstance(requestFrom(conn, args)),
    getInformation: (reference: unknown) => getInformation(conn, reference),
  }
  const supplyObject = {
    supply: (url: unknown, computerGuid: unknown = null, state: unknown = 'available') =>
      conn.supply(String(url), computerGuid === null || computerGuid === undefined ? null : String(computerGuid), String(state)),
  }
  const slap = {
    masterUrl: conn.config.masterUrl,
    registerOpenOrder: () => openOrder,
    registerSupply: () => supplyObject,
    registerComputer: (computerGuid: unknown) => computerHandle(conn, String(computerGuid)),
    registerComputerPartition: (computerGuid: unknown, partitionId: unknown) => {
      if (!computerGuid || !partitionId) throw new NotFoundError('registerComputerPartition needs a computer and a partition id')
      return conn.slap.registerComputerPartition(String(computerGuid), String(partitionId))
    },
    getSoftwareReleaseListFromSoftwareProduct: (product?: unknown, url?: unknown) =>
      conn.slap.getSoftwareReleaseListFromSoftwareProduct(product === undefined ? null : String(product), url === undefined ? null : String(url)),
    /** the SlapClient itself: one method per SLAP endpoint */
    client: () => conn.slap,
  }
  const product = new Proxy({} as Record<string, unknown>, {
    get(_target, name) {
      if (typeof name !== 'string' || name === 'then') return undefined
      if (name === 'get') return (n: unknown) => conn.productUrl(String(n))
      return conn.productUrl(name)
    },
  })
  const ns: Record<string, unknown> = {
    slap,
    request: openOrder.request,
    supply: supplyObject.supply,
    getInformation: openOrder.getInformation,
    product,
    software_list: [...conn.config.aliases.keys()],
  }
  for (const [name, url] of conn.config.aliases) {
    if (name in ns) throw new ConfigError(`alias ${name} would hide the console's ${name}`, 'rename the alias')
    ns[name] = url
  }
  return ns
}

/**
 * Runs a script file with the namespace as globals (cli.md §12.4): `__file__` is the script,
 * `argv` (and `sys.argv`) is [script, ...args]; top-level `await` works. A thrown error ends
 * the script and becomes the command's error (exit 1).
 */
export async function runScript(file: string, args: string[], ns: Record<string, unknown>, print: (s: string) => void): Promise<void> {
  let code: string
  try {
    code = readFileSync(file, 'utf8')
  } catch (e) {
    throw new ConfigError(`${file}: Not found or not a regular file. (${(e as NodeJS.ErrnoException).code ?? String(e)})`)
  }
  if (code.startsWith('#!')) code = '//' + code.slice(2)
  const argv = [file, ...args]
  const globals: Record<string, unknown> = {
    ...ns,
    __file__: resolve(file),
    __filename: resolve(file),
    argv,
    sys: { argv },
    print: (...xs: unknown[]) => print(xs.map(show).join(' ') + '\n'),
  }
  const names = Object.keys(globals).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n))
  // The script body becomes an async function whose parameters are the namespace: functions
  // it defines see `request`, `supply`, ... and top-level await is allowed. Same first line,
  // so error positions match the file.
  const fn = runInThisContext(`(async function (${names.join(', ')}) {${code}\n})`, { filename: resolve(file) }) as (...a: unknown[]) => Promise<unknown>
  await fn(...names.map((n) => globals[n]))
}

/**
 * The interactive console on the process's terminal (or piped stdin). Resolves when it is
 * closed, with true if a statement failed (each failure printed as one line, as the
 * console goes on to the next).
 */
export async function runRepl(ns: Record<string, unknown>, opts: { banner: boolean }): Promise<boolean> {
  const repl = await import('node:repl')
  if (opts.banner && process.stdin.isTTY) process.stdout.write(BANNER + '\n')
  const tty = process.stdin.isTTY === true
  // Piped input is handed to the REPL one line at a time, each once the previous statement
  // (and the master calls it started) has finished, so the output stays in input order.
  const input = tty ? process.stdin : new PassThrough()
  const server = repl.start({
    prompt: '>>> ',
    input,
    output: process.stdout,
    useGlobal: true,
    ignoreUndefined: true,
    terminal: tty && process.stdout.isTTY === true,
    writer: (v) => show(v),
  })
  if (!tty) feedLines(server, input as PassThrough)
  Object.assign(server.context, ns, { print: (...xs: unknown[]) => process.stdout.write(xs.map(show).join(' ') + '\n') })
  // Await what the master calls return, so `request(url, 'x')` prints the instance; one
  // statement at a time, so piped input runs in order like the original's console.
  const evaluate = server.eval.bind(server)
  let failed = false
  const fail = (e: unknown) => {
    failed = true
    process.stdout.write(errorLine(e) + '\n')
  }
  // A statement that throws goes to the REPL's domain, which prints it (through `writer`: one
  // line) and never calls back: the statement ends there, and the next one may start.
  let finishing: (() => void) | undefined
  const failedStatement = () => {
    failed = true
    finishing?.()
  }
  const internals = server as unknown as { _domain?: NodeJS.EventEmitter; _handleError?: (...a: unknown[]) => unknown }
  if (internals._domain) internals._domain.on('error', failedStatement)
  else if (typeof internals._handleError === 'function') {
    // Bun's REPL has no domain: it prints a throwing statement through _handleError
    const print = internals._handleError.bind(server)
    internals._handleError = (...a: unknown[]) => {
      const r = print(...a)
      failedStatement()
      return r
    }
  }
  let queue: Promise<void> = Promise.resolve()
  const awaiting: typeof server.eval = (cmd, context, file, cb) => {
    queue = queue.then(
      () =>
        new Promise<void>((done) => {
          finishing = done
          evaluate(cmd, context, file, (err, result) => {
            if (err || !isThenable(result)) {
              cb(err, result)
              return done()
            }
            ;(result as Promise<unknown>).then(
              (r) => cb(null, r),
              (e: unknown) => {
                // the session goes on after an error of the master, the configuration or the code
                fail(e)
                cb(null, undefined)
              },
            ).finally(done)
          })
        }),
    )
  }
  ;(server as unknown as { eval: typeof server.eval }).eval = awaiting
  const history = join(homedir(), '.slapconsolehistory')
  if (process.stdin.isTTY) server.setupHistory(history, () => undefined)
  await new Promise<void>((res) => server.on('exit', () => res()))
  await queue
  return failed
}

/**
 * What request() returns: the instance's methods callable at once (each waits for the
 * request), and a promise of the Instance itself (`await request(...)`, or the console
 * waiting for it before printing).
 */
function pendingInstance(requested: Promise<Instance>): unknown {
  // a rejection nobody waits for is reported when a method or the console waits for it
  requested.catch(() => undefined)
  return new Proxy(Object.create(null) as Record<string, unknown>, {
    get(_target, name) {
      if (name === 'then') return requested.then.bind(requested)
      if (name === 'catch') return requested.catch.bind(requested)
      if (name === 'finally') return requested.finally.bind(requested)
      if (typeof name !== 'string') return undefined
      if (typeof (Instance.prototype as unknown as Record<string, unknown>)[name] === 'function') {
        return (...args: unknown[]) => requested.then((i) => (i as unknown as Record<string, (...a: unknown[]) => unknown>)[name]!(...args))
      }
      // properties (computerId, partitionId, ...): a promise of the value
      return requested.then((i) => (i as unknown as Record<string, unknown>)[name])
    },
  })
}

/** One line for a failed statement: the error's name and message, never a stack. */
function errorLine(e: unknown): string {
  if (e instanceof SlapError) return `${e.name}: ${describeError(e)}`
  if (e instanceof Error) return `${e.name}: ${e.message.split('\n')[0] ?? ''}`
  return `Error: ${show(e)}`
}

// --- internal ---

function feedLines(server: import('node:repl').REPLServer, input: PassThrough): void {
  const pending: string[] = []
  let ready = true
  let ended = false
  const next = () => {
    const line = pending.shift()
    if (line !== undefined) {
      ready = false
      input.write(line + '\n')
    } else if (ended) input.end()
    else ready = true
  }
  const displayPrompt = server.displayPrompt.bind(server)
  server.displayPrompt = (preserveCursor?: boolean) => {
    displayPrompt(preserveCursor)
    setImmediate(next)
  }
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
  lines.on('line', (l) => {
    pending.push(l)
    if (ready) next()
  })
  lines.on('close', () => {
    ended = true
    if (ready) next()
  })
}

function isThenable(v: unknown): boolean {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function'
}

/** Python-like display: strings as they are, data as JSON-ish, instances as their summary. */
function show(v: unknown): string {
  if (typeof v === 'string') return v
  // errors (the REPL's own report of a failed statement, or a value) as one line, no stack
  if (v instanceof Error) return errorLine(v)
  if (v instanceof Instance) return `<Instance ${v.computerId ?? '?'}/${v.partitionId ?? '?'}>`
  return inspect(v, { depth: 6, colors: false })
}

const REQUEST_KEYS = ['software_release', 'partition_reference', 'partition_parameter_kw', 'software_type', 'filter_kw', 'state', 'shared'] as const

/**
 * `request(software_release, partition_reference, partition_parameter_kw=None, software_type=None,
 * filter_kw=None, state=None, shared=False)`, positional like the original, or one object with
 * those names (JavaScript has no keyword arguments).
 */
async function requestFrom(conn: Connection, args: unknown[]): Promise<Instance> {
  const only = args[0]
  const named: Record<string, unknown> =
    args.length === 1 && only !== null && typeof only === 'object' && !Array.isArray(only)
      ? (only as Record<string, unknown>)
      : Object.fromEntries(REQUEST_KEYS.map((k, i) => [k, args[i]]))
  const url = named.software_release ?? named.softwareRelease
  const reference = named.partition_reference ?? named.partitionReference
  if (typeof url !== 'string' || typeof reference !== 'string') {
    throw new SlapError('request(software_release, partition_reference, ...) needs two strings', { code: 'E_USAGE' })
  }
  const dict = (v: unknown, name: string): PyDict | null => {
    if (v === undefined || v === null) return null
    if (typeof v !== 'object' || Array.isArray(v)) throw new SlapError(`Unexpected type of ${name} '${String(v)}'`, { code: 'E_USAGE' })
    return fromJson(v) as PyDict
  }
  const opt = (v: unknown): string | null => (v === undefined || v === null ? null : String(v))
  return conn.request({
    softwareRelease: await conn.softwareUrl(url),
    partitionReference: reference,
    partitionParameterKw: dict(named.partition_parameter_kw ?? named.partitionParameterKw, 'partition_parameter_kw'),
    softwareType: opt(named.software_type ?? named.softwareType),
    filterKw: dict(named.filter_kw ?? named.filterKw, 'filter_kw'),
    state: opt(named.state),
    shared: Boolean(named.shared),
  })
}

async function getInformation(conn: Connection, reference: unknown): Promise<Record<string, unknown>> {
  const info = await serviceInformation(conn, String(reference), false)
  if (!info) throw new NotFoundError(`Instance ${String(reference)} does not exist.`)
  return info
}

function computerHandle(conn: Connection, computerGuid: string) {
  return {
    computerGuid,
    getComputerPartitionList: async () => (await conn.slap.getFullComputerInformation(computerGuid))._computer_partition_list,
    getSoftwareReleaseList: async () => (await conn.slap.getFullComputerInformation(computerGuid))._software_release_list,
    bang: (message: unknown) => conn.slap.computerBang(computerGuid, String(message)),
    getStatus: () => conn.slap.getComputerStatus(computerGuid),
    updateConfiguration: (xml: unknown) => conn.slap.loadComputerConfigurationFromXML(typeof xml === 'string' ? xml : (fromJson(xml) as PyValue as PyDict)),
  }
}
