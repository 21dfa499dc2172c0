// Effectful part of `slapos node format` (commands/node-format.ts calls formatNode): reads
// what exists on the host, asks format-plan.ts what to do, applies the steps through the
// Runner and node:fs, writes slapos.xml (with its zip history), slapos.json and the
// .slapos-resource files, then posts the computer to the master.
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { networkInterfaces, release, arch } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { crc32, deflateRawSync } from 'node:zlib'
import type { FormatConfig } from './config.ts'
import { SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { computerDict, FormatError, planFormat, type ComputerModel, type HostAddress, type HostFacts, type Plan, type Step } from './format-plan.ts'
import type { Logger } from './log.ts'
import { runHook, type Manager } from './managers.ts'
import { dumps, loads, type PyDict } from './slap-protocol.ts'
import { runSync, type Runner } from './system.ts'

declare const SLAPOS_VERSION: string

/** The user and group databases; the real one reads `<etc>/passwd` and `<etc>/group` on each call. */
export interface UserDb {
  user(name: string): { uid: number; gid: number } | undefined
  groups(): Set<string>
  users(): Set<string>
}

export interface FormatDeps {
  runner: Runner
  log: Logger
  now(): Date
  /** progress lines for a person (stderr) */
  progress?: (line: string) => void
  users?: UserDb
  /** what exists on the host; the real reader by default */
  readHost?: (cfg: FormatConfig, users: UserDb) => HostFacts
  random?: () => number
  /** posts the computer; the SLAP client by default */
  post?: (cfg: FormatConfig, dict: PyDict) => Promise<void>
  /** longest wait for IPv6 duplicate address detection of all new addresses together */
  dadTimeoutMs?: number
  sleep?: (ms: number) => Promise<void>
  /** the managers of manager_list (node-extras §1.2: format before the partitions, formatTearDown after) */
  managers?: Manager[]
}

export interface FormatResult {
  exitCode: number
  computer: ComputerModel
  /** every command run (or, in dry-run, that would have run) */
  commands: string[][]
}

/** Formats the node as configured. Returns exit 0 (posted), 2 (post failed); throws on failure (exit 1). */
export async function formatNode(cfg: FormatConfig, deps: FormatDeps): Promise<FormatResult> {
  const log = deps.log
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)))
  const users = deps.users ?? etcUserDb('/etc')
  if (!cfg.now) {
    const s = (deps.random ?? Math.random)() * 3600
    log.info(`Sleeping for ${s.toFixed(3)} seconds. To disable this feature, use with --now parameter in manual.`)
    await sleep(s * 1000)
  }
  if (cfg.dryRun) log.info('Dry-run mode enabled.')
  if (!cfg.dryRun) await probeBinaries(cfg, deps.runner)
  let stored = null
  if (existsSync(cfg.computerXml)) {
    log.debug(`Loading previous computer data from '${cfg.computerXml}'`)
    try {
      stored = loads(readFileSync(cfg.computerXml, 'utf8'))
    } catch (err) {
      throw new FormatError(`${cfg.computerXml} cannot be read: ${(err as Error).message}`, `restore it from ${cfg.computerXml}.zip or move it away to start afresh`)
    }
  } else {
    log.warning(`Creating new computer data with id '${cfg.computerId}'`)
  }
  const facts = (deps.readHost ?? readHostFacts)(cfg, users)
  const plan = planFormat(cfg, {
    stored,
    facts,
    random: deps.random ?? Math.random,
    osType: osType(),
    pythonVersion: '',
    slaposVersion: typeof SLAPOS_VERSION === 'string' ? SLAPOS_VERSION : '0.0.0-dev',
  })
  if (plan.added) log.info(`Adding ${plan.added} new partitions`)
  else log.info('Updating computer')
  if (cfg.createTap && cfg.alterNetwork) log.info(`Tap creation mode enabled (${cfg.tapIpv6 ? 'with' : 'without'} IPv6).`)
  for (const [name, uid] of facts.tunOwners) {
    const p = plan.computer.partition_list.find((x) => x.tap.name === name || x.tun?.name === name)
    if (!p) continue
    const want = facts.uidOf(p.user.name) ?? 0
    if (uid !== want) log.warning(`Wrong owner of TUN/TAP interface ${name}! Not touching it. Expected ${want} got ${uid}`)
  }
  const applier = new Applier(cfg, deps, users, sleep)
  const managers = cfg.dryRun ? [] : (deps.managers ?? [])
  const computer = { instanceRoot: cfg.instanceRoot, softwareRoot: cfg.softwareRoot, log }
  await runHook(managers, 'format', computer)
  try {
    await applier.apply(plan)
  } finally {
    await runHook(managers, 'formatTearDown', computer)
  }
  if (cfg.certificateRepositoryPath && !existsSync(cfg.certificateRepositoryPath)) {
    mkdirSync(cfg.certificateRepositoryPath, { recursive: true, mode: 0o700 })
  }
  const dict = computerDict(plan.computer)
  if (cfg.dryRun) return { exitCode: EXIT.OK, computer: plan.computer, commands: applier.commands }
  writePartitionResources(plan, log)
  writeComputerXml(cfg.computerXml, dumps(dict, { pretty: true }), deps.now(), log)
  if (cfg.computerJson) atomicWrite(cfg.computerJson, pyJson(dict, 1) + '\n')
  log.info(`Posting information to '${cfg.masterUrl}'`)
  let exitCode: number = EXIT.OK
  try {
    await (deps.post ?? postComputer)(cfg, dict)
  } catch (err) {
    log.error(`failed to transfer information to '${cfg.masterUrl}': ${err instanceof Error ? err.message : String(err)}`)
    exitCode = EXIT.FORMAT_POST_FAILED
  }
  log.info('slapos successfully prepared the computer.')
  return { exitCode, computer: plan.computer, commands: applier.commands }
}

/** Users and groups of `<etc>/passwd` and `<etc>/group`, read afresh on every call (useradd changes them). */
export function etcUserDb(etc: string): UserDb {
  const rows = (f: string) => {
    try {
      return readFileSync(join(etc, f), 'utf8').split('\n').filter(Boolean).map((l) => l.split(':'))
    } catch {
      return []
    }
  }
  return {
    user(name) {
      const r = rows('passwd').find((x) => x[0] === name)
      return r ? { uid: Number(r[2]), gid: Number(r[3]) } : undefined
    },
    users: () => new Set(rows('passwd').map((x) => x[0] ?? '')),
    groups: () => new Set(rows('group').map((x) => x[0] ?? '')),
  }
}

/** Interfaces and addresses (node's getifaddrs view plus /sys for address-less links), TUN owners, users. */
export function readHostFacts(cfg: FormatConfig, users: UserDb): HostFacts {
  const interfaces = new Map<string, HostAddress[]>()
  for (const name of safeReaddir('/sys/class/net')) interfaces.set(name, [])
  for (const [name, list] of Object.entries(networkInterfaces())) {
    const l = interfaces.get(name) ?? []
    for (const a of list ?? []) l.push({ addr: a.address.split('%')[0] ?? a.address, prefixlen: Number(a.cidr?.split('/')[1] ?? (a.family === 'IPv6' ? 128 : 32)) })
    interfaces.set(name, l)
  }
  // node's view (libuv) skips links without carrier, such as TAPs: prefer iproute2's when present
  const ip = ipAddresses()
  if (ip) for (const [name, list] of ip) interfaces.set(name, list)
  const tunOwners = new Map<string, number>()
  for (const name of safeReaddir('/sys/devices/virtual/net')) {
    try {
      const v = readFileSync(`/sys/devices/virtual/net/${name}/owner`, 'utf8').trim()
      tunOwners.set(name, /^-?\d+$/.test(v) ? Number(v) : (users.user(v)?.uid ?? -1))
    } catch {
      // not a TUN/TAP device
    }
  }
  const storageDirs = cfg.instanceStorageHome ? safeReaddir(cfg.instanceStorageHome).filter((d) => /^data\d+$/.test(d)).map((d) => join(cfg.instanceStorageHome ?? '', d)) : []
  return { users: users.users(), groups: users.groups(), interfaces, tunOwners, uidOf: (n) => users.user(n)?.uid, storageDirs }
}

// --- internal ---

function ipAddresses(): Map<string, HostAddress[]> | undefined {
  let r
  try {
    r = runSync(['ip', '-j', 'addr'])
  } catch {
    return undefined
  }
  if (r.code !== 0) return undefined
  try {
    const links = JSON.parse(r.stdout) as { ifname?: string; addr_info?: { local?: string; prefixlen?: number }[] }[]
    const m = new Map<string, HostAddress[]>()
    for (const l of links) {
      if (!l.ifname) continue
      m.set(l.ifname, (l.addr_info ?? []).filter((a) => a.local).map((a) => ({ addr: a.local ?? '', prefixlen: a.prefixlen ?? 0 })))
    }
    return m
  } catch {
    return undefined
  }
}

function safeReaddir(d: string): string[] {
  try {
    return readdirSync(d)
  } catch {
    return []
  }
}

class Applier {
  commands: string[][] = []
  private pendingDad: { iface: string; addr: string; prefixlen: number }[] = []
  private done = 0

  constructor(
    readonly cfg: FormatConfig,
    readonly deps: FormatDeps,
    readonly users: UserDb,
    readonly sleep: (ms: number) => Promise<void>,
  ) {}

  get log(): Logger {
    return this.deps.log
  }

  async apply(plan: Plan): Promise<void> {
    const total = plan.computer.partition_list.length
    for (const step of plan.steps) {
      await this.step(step)
      if (step.kind === 'partdir' && step.path.startsWith(plan.computer.instance_root + '/')) {
        this.done++
        this.deps.progress?.(`partition ${this.done}/${total} ready: ${basename(step.path)}`)
      }
    }
    await this.waitForDad()
  }

  private async run(argv: string[]): Promise<{ code: number; output: string }> {
    this.commands.push(argv)
    this.log.debug(argv.join(' '))
    if (this.cfg.dryRun) return { code: 0, output: '' }
    try {
      const r = await this.deps.runner.run(argv)
      return { code: r.code ?? 1, output: r.stdout + r.stderr }
    } catch (err) {
      throw new FormatError(`cannot run ${argv[0]}: ${(err as Error).message}`, `install ${argv[0]} (iproute2, passwd, procps) or set alter_user/alter_network = false`)
    }
  }

  private async must(argv: string[]): Promise<string> {
    const r = await this.run(argv)
    if (r.code !== 0) throw new FormatError(`'${argv.join(' ')}' failed (exit ${r.code}): ${r.output.trim()}`)
    return r.output
  }

  private fsop(text: string, f: () => void): void {
    this.log.debug(text)
    if (!this.cfg.dryRun) f()
  }

  private ids(user: string): { uid: number; gid: number } {
    if (user === 'root') return { uid: 0, gid: 0 }
    const u = this.users.user(user)
    if (!u) {
      if (this.cfg.dryRun) return { uid: 12345, gid: 54321 }
      throw new FormatError(`user ${user} does not exist`, 'run with alter_user = true to create it')
    }
    return u
  }

  private async step(s: Step): Promise<void> {
    switch (s.kind) {
      case 'rootdir': {
        if (!existsSync(s.path)) this.fsop(`makedirs('${s.path}', 493)`, () => mkdirSync(s.path, { recursive: true, mode: 0o755 }))
        else if ((statSync(s.path).mode & 0o7777) !== 0o755) this.fsop(`chmod('${s.path}', 493)`, () => chmodSync(s.path, 0o755))
        return
      }
      case 'partdir': {
        if (!existsSync(s.path)) this.fsop(`mkdir('${s.path}', 488)`, () => mkdirSync(s.path, { mode: 0o750 }))
        if (s.owner) {
          const { uid, gid } = this.ids(s.owner)
          this.fsop(`chown('${s.path}', ${uid}, ${gid})`, () => chownSync(s.path, uid, gid))
        }
        this.fsop(`chmod('${s.path}', 488)`, () => chmodSync(s.path, 0o750))
        return
      }
      case 'chown': {
        const { uid, gid } = this.ids(s.user)
        this.fsop(`chown('${s.path}', ${uid}, ${gid})`, () => chownSync(s.path, uid, gid))
        return
      }
      case 'run': {
        if (s.check) await this.must(s.argv)
        else await this.run(s.argv)
        return
      }
      case 'speed': {
        for (const argv of s.argvs) if ((await this.run(argv)).code !== 0) break
        return
      }
      case 'ensure': {
        const r = await this.run(s.show)
        if (r.code === 0 && s.has.every((h) => r.output.includes(h))) return
        if (s.del && s.delIf && r.output.includes(s.delIf)) await this.must(s.del)
        await this.must(s.add)
        return
      }
      case 'addr': {
        if (s.argv) await this.must(s.argv)
        if (!s.v6) return
        const out = await this.must(['ip', '-6', 'addr', 'list', s.iface])
        if (this.cfg.dryRun) return
        const line = out.split('\n').find((l) => l.includes(s.addr))
        if (line === undefined) throw new FormatError(`IPv6 ${s.addr} is not on ${s.iface} after adding it`)
        // Unlike the original (2 s sleep and a check after every address), addresses still
        // in duplicate address detection are checked once, together, at the end.
        if (line.includes('tentative') && !s.tap) this.pendingDad.push({ iface: s.iface, addr: s.addr, prefixlen: s.prefixlen })
        return
      }
      case 'pause':
        return
    }
  }

  /** One wait for all addresses still tentative; a failed DAD removes the address and fails. */
  private async waitForDad(): Promise<void> {
    if (!this.pendingDad.length) return
    const deadline = Date.now() + (this.deps.dadTimeoutMs ?? 5000)
    this.log.info(`Waiting for duplicate address detection of ${this.pendingDad.length} IPv6 address(es)`)
    while (this.pendingDad.length) {
      await this.sleep(200)
      const byIface = new Map<string, string>()
      for (const p of this.pendingDad) {
        if (!byIface.has(p.iface)) byIface.set(p.iface, (await this.run(['ip', '-6', 'addr', 'list', p.iface])).output)
      }
      const still: typeof this.pendingDad = []
      for (const p of this.pendingDad) {
        const line = (byIface.get(p.iface) ?? '').split('\n').find((l) => l.includes(p.addr)) ?? ''
        if (line.includes('dadfailed') || (line.includes('tentative') && Date.now() > deadline)) {
          await this.run(['ip', 'addr', 'del', `${p.addr}/${p.prefixlen}`, 'dev', p.iface])
          throw new FormatError(`IPv6 ${p.addr} on ${p.iface} failed duplicate address detection (another host uses it?)`, 'check the network, then run node format again')
        }
        if (line.includes('tentative')) still.push(p)
      }
      this.pendingDad = still
    }
  }
}

async function probeBinaries(cfg: FormatConfig, runner: Runner): Promise<void> {
  const probes: string[][] = []
  if (cfg.alterUser) probes.push(['groupadd'], ['useradd'], ['usermod'], ['passwd', '-h'])
  if (cfg.createTap || cfg.alterNetwork) probes.push(['ip'])
  const missing: string[] = []
  await Promise.all(
    probes.map(async (argv) => {
      try {
        await runner.run(argv)
      } catch {
        missing.push(argv[0] ?? '')
      }
    }),
  )
  if (missing.length) {
    throw new FormatError(`Some required binaries are missing or not functional: ${missing.sort().join(',')}`, 'install iproute2 and passwd, or set alter_user/alter_network = false')
  }
}

function osType(): string {
  let id = ''
  let version = ''
  let name = ''
  try {
    const text = readFileSync('/etc/os-release', 'utf8')
    const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm').exec(text)?.[1] ?? ''
    id = get('ID')
    version = get('VERSION_ID')
    name = get('NAME')
  } catch {
    // not Linux, or a minimal root
  }
  return JSON.stringify([`Linux-${release()}-${arch() === 'x64' ? 'x86_64' : arch()}`, id, version, name]).replace(/","/g, '", "')
}

async function postComputer(cfg: FormatConfig, dict: PyDict): Promise<void> {
  const { SlapClient } = await import('./slap-client.ts')
  const both = cfg.keyFile && cfg.certFile
  const client = new SlapClient({ masterUrl: cfg.masterUrl, keyFile: both ? cfg.keyFile : undefined, certFile: both ? cfg.certFile : undefined, caFile: cfg.masterCaFile })
  try {
    await client.loadComputerConfigurationFromXML(dict)
  } catch (err) {
    if (err instanceof SlapError && err.code === 'E_NOT_FOUND') {
      throw new FormatError(
        "This SlapOS node is not recognised by SlapOS Master and/or computer_id and certificates don't match. Please make sure computer_id of slapos.cfg looks like 'COMP-123' and is correct. Error is : 404 Not Found.",
      )
    }
    throw err
  }
}

/** Python json.dumps(v, indent, sort_keys=True): sorted keys, ASCII escapes. */
export function pyJson(v: unknown, indent: number): string {
  const sort = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(sort)
    if (x !== null && typeof x === 'object') return Object.fromEntries(Object.keys(x).sort().map((k) => [k, sort((x as Record<string, unknown>)[k])]))
    return x
  }
  return JSON.stringify(sort(v), null, indent).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

function writePartitionResources(plan: Plan, log: Logger): void {
  for (const p of plan.computer.partition_list) {
    const file = join(p.path, '.slapos-resource')
    const text = pyJson(JSON.parse(JSON.stringify(p)), 4)
    let old: string | undefined
    try {
      old = readFileSync(file, 'utf8')
    } catch {
      old = undefined
    }
    if (old === text) continue
    atomicWrite(file, text, 0o644)
    log.debug(`Partition resources saved to ${p.reference}`)
  }
}

function atomicWrite(file: string, text: string, mode = 0o644): void {
  const tmp = `${file}.tmp-${process.pid}`
  writeFileSync(tmp, text, { mode })
  chmodSync(tmp, mode)
  renameSync(tmp, file)
}

function stampOf(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0')
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}:${p(d.getMinutes())}`
}

/** format.md §6.3: unchanged + zip present -> nothing; else archive the old file into the zip, write the new one. */
export function writeComputerXml(file: string, text: string, now: Date, log: Logger): void {
  const zip = `${file}.zip`
  let old: Buffer | undefined
  try {
    old = readFileSync(file)
  } catch {
    old = undefined
  }
  if (old !== undefined && existsSync(zip) && old.toString('utf8') === text) return
  mkdirSync(dirname(file), { recursive: true })
  if (old !== undefined) {
    const entry = `${basename(file)}.${stampOf(now)}`
    try {
      zipAppend(zip, entry, old)
    } catch {
      try {
        renameSync(zip, `${zip}_broken_${stampOf(now)}`)
        zipAppend(zip, entry, old)
      } catch (err) {
        log.error(`Can't backup ${file}: ${(err as Error).message}`)
      }
    }
  }
  atomicWrite(file, text)
}

/** Appends one deflated entry to a zip file (created when missing); throws on a corrupt zip. */
export function zipAppend(zip: string, name: string, data: Buffer): void {
  let entries: Buffer[] = [] // central directory records
  let body = Buffer.alloc(0)
  if (existsSync(zip)) {
    const buf = readFileSync(zip)
    const eocd = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]))
    if (eocd < 0 || eocd + 22 > buf.length) throw new Error(`${zip} is not a zip file`)
    const count = buf.readUInt16LE(eocd + 10)
    const cdSize = buf.readUInt32LE(eocd + 12)
    const cdOff = buf.readUInt32LE(eocd + 16)
    if (cdOff + cdSize > eocd) throw new Error(`${zip} is corrupt`)
    let o = cdOff
    for (let i = 0; i < count; i++) {
      if (buf.readUInt32LE(o) !== 0x02014b50) throw new Error(`${zip} is corrupt`)
      const len = 46 + buf.readUInt16LE(o + 28) + buf.readUInt16LE(o + 30) + buf.readUInt16LE(o + 32)
      entries.push(buf.subarray(o, o + len))
      o += len
    }
    body = buf.subarray(0, cdOff)
  }
  const nameBuf = Buffer.from(name, 'utf8')
  const comp = deflateRawSync(data)
  const crc = crc32(data)
  const d = new Date()
  const dosTime = (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1)
  const dosDate = ((d.getFullYear() - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate()
  const local = Buffer.alloc(30)
  local.writeUInt32LE(0x04034b50, 0)
  local.writeUInt16LE(20, 4)
  local.writeUInt16LE(0x0800, 6)
  local.writeUInt16LE(8, 8)
  local.writeUInt16LE(dosTime, 10)
  local.writeUInt16LE(dosDate, 12)
  local.writeUInt32LE(crc, 14)
  local.writeUInt32LE(comp.length, 18)
  local.writeUInt32LE(data.length, 22)
  local.writeUInt16LE(nameBuf.length, 26)
  local.writeUInt16LE(0, 28)
  const central = Buffer.alloc(46)
  central.writeUInt32LE(0x02014b50, 0)
  central.writeUInt16LE(20, 4)
  central.writeUInt16LE(20, 6)
  central.writeUInt16LE(0x0800, 8)
  central.writeUInt16LE(8, 10)
  central.writeUInt16LE(dosTime, 12)
  central.writeUInt16LE(dosDate, 14)
  central.writeUInt32LE(crc, 16)
  central.writeUInt32LE(comp.length, 20)
  central.writeUInt32LE(data.length, 24)
  central.writeUInt16LE(nameBuf.length, 28)
  central.writeUInt32LE(0o100644 * 65536, 38)
  central.writeUInt32LE(body.length, 42)
  entries = [...entries, Buffer.concat([central, nameBuf])]
  const newBody = Buffer.concat([body, local, nameBuf, comp])
  const cd = Buffer.concat(entries)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(entries.length, 8)
  end.writeUInt16LE(entries.length, 10)
  end.writeUInt32LE(cd.length, 12)
  end.writeUInt32LE(newBody.length, 16)
  const tmp = `${zip}.tmp-${process.pid}`
  writeFileSync(tmp, Buffer.concat([newBody, cd, end]))
  renameSync(tmp, zip)
}
