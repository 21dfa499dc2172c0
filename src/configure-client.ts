// `slapos configure client`: fetch the certificate and key of a person's account from the
// SlapOS Master's web site with a token, and write slapos-client.cfg, client.crt and
// client.key next to each other, all 0600 (spec cli.md §13.1). Never replaces a file.
// Called by src/commands/configure-client.ts.
import { existsSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Ctx } from './context.ts'
import { SlapError } from './errors.ts'
import { EXIT } from './exit-codes.ts'
import { masterWebRequest, parseCertificatePair, type Prompt } from './register.ts'
import { CLIENT_CONFIG_EXAMPLE, setKeys } from './templates.ts'

export interface ClientSetupOptions {
  cfgPath: string
  masterUrl: string
  masterUrlWeb: string
  token?: string | undefined
}

/** The client configuration written for these files (pure). */
export function clientConfigFromTemplate(masterUrl: string, certFile: string, keyFile: string): string {
  const text = setKeys(CLIENT_CONFIG_EXAMPLE, 'slapos', { master_url: masterUrl })
  return setKeys(text, 'slapconsole', { cert_file: certFile, key_file: keyFile })
}

export async function configureClient(o: ClientSetupOptions, ctx: Ctx, prompt: Prompt): Promise<number> {
  let token = o.token?.trim() ?? ''
  while (!token) token = (await prompt('Credential security token: ')).trim()
  const dir = dirname(o.cfgPath)
  const certPath = join(dir, 'client.crt')
  const keyPath = join(dir, 'client.key')
  for (const [p, what] of [
    [o.cfgPath, 'configuration'],
    [certPath, 'certificate'],
    [keyPath, 'key'],
  ] as const) {
    if (existsSync(p)) {
      throw new SlapError(`There is a file in ${p}. Please remove it before creating a new ${what}.`, {
        code: 'E_CLIENT_CONFIGURED',
        hint: 'or pass another --cfg path',
      })
    }
  }
  if (!existsSync(dir)) {
    ctx.log.debug(`Creating directory ${dir}`)
    mkdirSync(dir, { recursive: true, mode: 0o700 })
  }
  const url = `${o.masterUrlWeb.replace(/\/+$/, '')}/Person_getCertificate`
  const res = await masterWebRequest(url, { method: 'POST', form: {}, headers: { 'X-Access-Token': token } })
  if (res.status === 403) {
    throw new SlapError('Access denied to the SlapOS Master. Please check the authentication token or require a new one.', {
      code: 'E_ACCESS_DENIED',
      hint: 'ask the master for a new token and pass it with --token',
    })
  }
  if (res.status < 200 || res.status >= 400) throw new SlapError(`${url} answered HTTP ${res.status}`, { code: 'E_CLIENT_HTTP', hint: 'check --master-url-web, or retry later' })
  const pair = parseCertificatePair(res.body, url)
  // all three or none: a failure half-way removes what this run wrote
  const written: string[] = []
  try {
    for (const [p, content] of [
      [o.cfgPath, clientConfigFromTemplate(o.masterUrl, certPath, keyPath)],
      [certPath, pair.certificate],
      [keyPath, pair.key],
    ] as const) {
      writeFileSync(p, content, { mode: 0o600, flag: 'wx' })
      written.push(p)
      ctx.log.debug(`Wrote ${p}`)
    }
  } catch (err) {
    for (const p of written) unlinkSync(p)
    throw err
  }
  ctx.log.info(`SlapOS client configuration written to ${o.cfgPath}`)
  return EXIT.OK
}
