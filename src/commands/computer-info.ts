// slapos computer info: reference and title of one compute node (client-cli.md §4.4).
import { readConfig, type CommandModule } from '../command.ts'
import { Connection, documentProperties } from '../client.ts'
import { loadClientConfig } from '../config.ts'
import { SlapError, UsageError } from '../errors.ts'
import { EXIT } from '../exit-codes.ts'

const computerInfo: CommandModule = {
  cfg: 'client',
  usage: '<reference>',
  description: 'Print the reference and title of the compute node REFERENCE. Exit 2 when it does not exist.',
  // positionals are checked in run; unknown options are still refused
  options: (y) => y.strict(false).strictOptions().option('json', { type: 'boolean', describe: 'print {reference, title} as JSON' }),
  async run(args, ctx) {
    const words = args._.map(String)
    if (words.length !== 1) throw new UsageError('slapos computer info: error: expected REFERENCE', 'example: slapos computer info COMP-1234')
    const reference = words[0]!
    const conn = new Connection(loadClientConfig(readConfig('client', args.cfg, ctx.env)), ctx.log)
    const api = await conn.hateoas()
    const rows = await api.search(`portal_type:"Compute Node" AND validation_state:validated AND reference:="${reference}"`, ['title', 'reference', 'relative_url'])
    if (rows.length === 0) {
      ctx.log.warning(`Computer ${reference} does not exist.`)
      return EXIT.NOT_READY
    }
    const relativeUrl = rows[0]!.relative_url
    if (typeof relativeUrl !== 'string') throw new SlapError(`the master gave no relative_url for computer ${reference}`, { code: 'E_HATEOAS' })
    const p = documentProperties(await api.traverse(relativeUrl))
    const computer = { reference: String(p.reference ?? reference), title: String(p.title ?? '') }
    if (args.json === true) ctx.io.out(JSON.stringify(computer, null, 2) + '\n')
    else ctx.io.out(`Computer Reference: ${computer.reference}\nComputer Title    : ${computer.title}\n`)
    return EXIT.OK
  },
}
export default computerInfo
