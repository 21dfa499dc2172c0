// slapos request: ask the master for an instance (or a shared instance) of a software
// release and show its state and connection parameters (client-cli.md §2). The work is in
// client.ts; this file maps options to one request and the answer to output and exit code.
import { readConfig, type CommandModule } from '../command.ts'
import {
  Connection,
  legacyConfigWord,
  loadSoftwareSchema,
  NOT_READY_MESSAGE,
  parseKeyValues,
  pformat,
  readParametersFile,
  parametersFromFile,
  schemaSerialisation,
  SERIALISATIONS,
  toJson,
  type Serialisation,
} from '../client.ts'
import { loadClientConfig } from '../config.ts'
import { ResourceNotReadyError, SlapError, UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'
import { parseJsonInXml, type PyDict } from '../slap-protocol.ts'

const request: CommandModule = {
  cfg: 'client',
  usage: '<reference> <software-url>',
  description:
    'Request an instance (REFERENCE is its title) of SOFTWARE_URL and print its state and connection parameters.\n' +
    'Exit 2 while the master is still allocating it: rerun the same command later.',
  // positionals are checked in run; unknown options are still refused
  options: (y) =>
    y
      .strict(false)
      .strictOptions()
      .option('node', { type: 'string', array: true, describe: "where to deploy: 'key=value ...' (e.g. computer_guid=COMP-1234)" })
      .option('type', { type: 'string', describe: 'software type to request (default: default)' })
      .option('state', { type: 'string', describe: 'requested state: started, stopped or destroyed' })
      .option('slave', { type: 'boolean', alias: 'shared', describe: 'request a shared (slave) instance' })
      .option('parameters', { type: 'string', array: true, alias: 'configuration', describe: "instance parameters: 'key=value ...' (0.35.1 name: --configuration)" })
      .option('parameters-file', { type: 'string', describe: 'instance parameters in a file: .json, .yaml/.yml or .xml' })
      .option('force-serialisation', { type: 'string', choices: SERIALISATIONS as unknown as string[], describe: 'serialisation of --parameters-file when the software release does not declare it' })
      .option('json', { type: 'boolean', describe: 'print the result as JSON on stdout' })
      .conflicts('parameters', 'parameters-file'),
  async run(args, ctx) {
    const { words, cfg } = legacyConfigWord(args._.map(String), 2, args.cfg)
    if (words.length !== 2) throw new UsageError('slapos request: error: expected REFERENCE and SOFTWARE_URL', 'example: slapos request my-instance https://example.com/software.cfg')
    const [reference, softwareText] = words as [string, string]
    const filter = parseKeyValues(args.node as string[] | undefined, '--node')
    let parameters: PyDict = parseKeyValues(args.parameters as string[] | undefined, '--parameters')
    const type = (args.type as string | undefined) ?? null
    // the file's own problems (missing, unreadable, not JSON/YAML/XML) come first
    const file = args.parametersFile === undefined ? undefined : await readParametersFile(args.parametersFile as string)
    const config = loadClientConfig(readConfig('client', cfg, ctx.env))
    const conn = new Connection(config, ctx.log)

    ctx.log.info(`Validating request parameters for ${reference} as an instance of ${softwareText} ...`)
    const softwareUrl = await conn.softwareUrl(softwareText)
    const schema = await loadSoftwareSchema(softwareUrl, ctx.log)
    if (file !== undefined) {
      const forced = args.forceSerialisation as Serialisation | undefined
      const serialisation = forced ?? schemaSerialisation(schema, type, true)
      if (!serialisation && !('xml' in file)) {
        throw new SlapError(`the serialisation of ${softwareUrl} is unknown (no ${softwareUrl}.json, or no serialisation in it)`, {
          code: 'E_SERIALISATION',
          hint: 'pass --force-serialisation xml or --force-serialisation json-in-xml',
        })
      }
      parameters = parametersFromFile(file, serialisation)
    }

    ctx.log.info(`Requesting ${reference} as an instance of ${softwareUrl} ...`)
    try {
      const instance = await conn.request({
        softwareRelease: softwareUrl,
        partitionReference: reference,
        partitionParameterKw: parameters,
        softwareType: type,
        filterKw: filter,
        state: (args.state as string | undefined) ?? null,
        shared: args.slave === true,
      })
      const state = await instance.getState()
      let published: unknown = toJson(await instance.getConnectionParameterDict())
      if (schemaSerialisation(schema, type, false) === 'json-in-xml' && published && typeof published === 'object' && '_' in published) {
        published = parseJsonInXml({ _: (published as { _: unknown })._ }) ?? published
      }
      if (args.json === true) {
        ctx.io.out(
          JSON.stringify(
            { reference, 'software-url': softwareUrl, ready: true, state, 'computer-id': instance.computerId, 'partition-id': instance.partitionId, 'connection-parameters': published },
            null,
            2,
          ) + '\n',
        )
      } else {
        ctx.io.out(
          `Instance requested.\nState is : ${state}.\nConnection parameters of instance are:\n${pformat(published as PyDict)}\n` +
            'You can rerun the command to get up-to-date information.\n',
        )
      }
      return EXIT.OK
    } catch (e) {
      if (!(e instanceof ResourceNotReadyError)) throw e
      ctx.log.warning(NOT_READY_MESSAGE)
      if (args.json === true) ctx.io.out(JSON.stringify({ reference, 'software-url': softwareUrl, ready: false }, null, 2) + '\n')
      return EXIT.NOT_READY
    }
  },
}
export default request
