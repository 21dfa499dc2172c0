// slapos service list: the title and software release of every instance tree (client-cli.md §4.1).
import { readConfig, type CommandModule } from '../command.ts'
import { Connection } from '../client.ts'
import { loadClientConfig } from '../config.ts'
import { EXIT } from '../exit-codes.ts'

const serviceList: CommandModule = {
  cfg: 'client',
  description: 'Print a JSON object {title: software release URL} of your services (root instances).',
  options: (y) => y.option('json', { type: 'boolean', describe: 'accepted for symmetry: the output is always JSON' }),
  async run(args, ctx) {
    const conn = new Connection(loadClientConfig(readConfig('client', args.cfg, ctx.env)), ctx.log)
    const rows = await (await conn.hateoas()).search('portal_type:"Instance Tree" AND validation_state:validated', ['title', 'url_string'])
    const services: Record<string, unknown> = {}
    for (const r of rows) if (typeof r.title === 'string') services[r.title] = r.url_string ?? null
    const sorted = Object.fromEntries(Object.keys(services).sort().map((k) => [k, services[k]]))
    ctx.io.out(JSON.stringify(sorted, null, 2) + '\n')
    return EXIT.OK
  },
}
export default serviceList
