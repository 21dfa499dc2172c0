// slapos proxy start (old name slapproxy): run the local SlapOS master until SIGTERM/SIGINT.
// The work is in proxy-server.ts and proxy-db.ts; this file reads the configuration.
import { setFlagsFromString } from 'node:v8'
import type { CommandModule } from '../command.ts'
import { readConfig } from '../command.ts'
import { loadProxyConfig } from '../config.ts'
import { SlapError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'
import { createLogger, levelFromVerbosity } from '../log.ts'
import { ProxyDb } from '../proxy-db.ts'
import { applyLocalSoftwareReleaseRoot, startProxyServer } from '../proxy-server.ts'

const LOOPBACK = /^(127\.|::1$|\[::1\]$|localhost$)/

const proxyStart: CommandModule = {
  cfg: 'node',
  description:
    'Run a minimalist, stand-alone SlapOS Master (slapproxy) on one SQLite file: nodes format, ' +
    'install and deploy against it, clients request instances from it. It has no authentication.',
  options: (y) =>
    y
      .option('database-uri', { alias: 'u', type: 'string', describe: 'SQLite file of the proxy (default: [slapproxy] database_uri)' })
      .option('host', { type: 'string', describe: 'address to listen on (default: [slapproxy] host, else 127.0.0.1)' })
      .option('port', { type: 'number', describe: 'port to listen on, 0 = any free port (default: [slapproxy] port)' })
      .option('local-software-release-root', { type: 'string', describe: 'root of local-path software release URLs (default /)' })
      .option('console', { alias: 'c', type: 'boolean', hidden: true, describe: 'obsolete, ignored' }),
  async run(args, ctx) {
    // A long-running daemon serving a few nodes: trade peak speed for memory (see
    // docs/compatibility.md, Proxy). --optimize-for-size keeps the V8 heap small (small young
    // generation, eager old-generation collection, pooled pages given back); without the
    // compilers (Maglev, Turbofan, and the Sparkplug baseline) their code is never paged in
    // from the executable nor made in the heap: the interpreter is fast enough here, because
    // the big answers are cached bytes (~4,000 requests/s, 1 MB less under load than with
    // Sparkplug). A young generation of 1 MB that never grows: request garbage is small and
    // short-lived (~8 MB less under load).
    // Set before the proxy allocates anything; these flags are read by V8 as it goes.
    setFlagsFromString('--optimize-for-size')
    setFlagsFromString('--no-opt')
    setFlagsFromString('--no-maglev')
    setFlagsFromString('--no-sparkplug')
    setFlagsFromString('--semi-space-growth-factor=1')
    setFlagsFromString('--max-semi-space-size=1')
    const file = readConfig('node', args.cfg, ctx.env)
    const config = loadProxyConfig(file, {
      database_uri: args.databaseUri as string | undefined,
      host: args.host as string | undefined,
      port: typeof args.port === 'number' && !Number.isNaN(args.port) ? args.port : undefined,
      local_software_release_root: args.localSoftwareReleaseRoot as string | undefined,
    })
    const g = args.global
    const log =
      config.logFile && !g.logFile
        ? createLogger({ level: g.logLevel ?? levelFromVerbosity(g.verbosity), file: config.logFile, noTime: g.logTime, color: g.logColor })
        : ctx.log
    const db = ProxyDb.open({ path: config.databaseUri, computerId: config.computerId, log })
    try {
      applyLocalSoftwareReleaseRoot(db, config.localSoftwareReleaseRoot, log)
    } catch (err) {
      db.close()
      throw err
    }
    const proxy = await startProxyServer({
      db,
      host: config.host,
      port: config.port,
      computerId: config.computerId,
      softwareProducts: config.softwareProductList,
      multimaster: config.multimaster,
      publicDirectoryPath: config.publicDirectoryPath,
      shacache: config.shacache,
      allowedHosts: config.allowedHosts,
      limits: config.limits,
      log,
    }).catch((err: NodeJS.ErrnoException) => {
      db.close()
      throw new SlapError(`cannot listen on ${config.host}:${config.port}: ${err.code ?? err.message}`, {
        code: 'E_LISTEN',
        hint: err.code === 'EADDRINUSE' ? 'another program uses that port: stop it or choose another port' : 'check host and port in [slapproxy]',
      })
    })
    if (!LOOPBACK.test(config.host)) {
      log.warning(`The proxy listens on ${config.host}, reachable from other machines: it has no authentication, anyone who reaches it can request and destroy instances`)
    }
    log.info(`Listening on ${proxy.url} (database ${config.databaseUri})`)
    // Every route answers inside its own error boundary; this is the last line of defence:
    // an error that escaped it is a bug of ours, logged with its trace, and the proxy serves on.
    const escaped = (err: unknown) => {
      log.error(`internal error outside any request: ${err instanceof Error ? err.message : String(err)}`)
      if (err instanceof Error && err.stack) log.debug(err.stack)
    }
    process.on('uncaughtException', escaped)
    process.on('unhandledRejection', escaped)
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log.info(`${signal} received, stopping`)
        process.off('SIGTERM', onTerm)
        process.off('SIGINT', onInt)
        // give in-flight requests a moment, then drop what is left
        const force = setTimeout(() => proxy.server.closeAllConnections(), 5000)
        force.unref()
        void proxy.close().then(resolve)
      }
      const onTerm = () => stop('SIGTERM')
      const onInt = () => stop('SIGINT')
      process.on('SIGTERM', onTerm)
      process.on('SIGINT', onInt)
    })
    return EXIT.OK
  },
}
export default proxyStart
