// slapos computer list: the compute nodes the master knows (client-cli.md §4.3).
import { readConfig, type CommandModule } from '../command.ts'
import { Connection } from '../client.ts'
import { loadClientConfig } from '../config.ts'
import { EXIT } from '../exit-codes.ts'

const computerList: CommandModule = {
  cfg: 'client',
  description: 'Print the reference and title of every compute node.',
  options: (y) => y.option('json', { type: 'boolean', describe: 'print a JSON list of {reference, title}' }),
  async run(args, ctx) {
    const conn = new Connection(loadClientConfig(readConfig('client', args.cfg, ctx.env)), ctx.log)
    const rows = await (await conn.hateoas()).search('portal_type:"Compute Node" AND validation_state:validated', ['title', 'reference'])
    const computers = rows.map((r) => ({ reference: String(r.reference ?? ''), title: String(r.title ?? '') }))
    if (args.json === true) ctx.io.out(JSON.stringify(computers, null, 2) + '\n')
    else if (computers.length === 0) ctx.io.out('No existing computer.\n')
    else ctx.io.out(['List of Computers:', ...computers.map((c) => `${c.reference} ${c.title}`)].join('\n') + '\n')
    return EXIT.OK
  },
}
export default computerList
