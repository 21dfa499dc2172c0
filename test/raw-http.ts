// Requests written byte for byte on a socket, for the tests of hostile input: no HTTP client
// normalises the request-target, the headers or the body on the way.
import { connect } from 'node:net'
import type { StartedProxy } from './helpers.ts'

/** Every request-target that ended the process (issue corpus, item 1). */
export const CRASH_TARGETS = ['//', '///', '//?a=1', '//@/', '//:/', '/\\', '//%zz/', '//[::1/', 'http://', 'http://[/', 'http://a:99999/', '*', '%', '/%', '/%E0%A4']

export interface RawAnswer {
  status: number
  head: string
  body: string
}

/** One request written byte for byte on a new connection (no client normalises it); the whole answer. */
export function raw(p: StartedProxy, text: string | Buffer, timeoutMs = 10_000): Promise<RawAnswer> {
  const { hostname, port } = new URL(p.url)
  return new Promise((resolve, reject) => {
    const s = connect(Number(port), hostname)
    const chunks: Buffer[] = []
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`no answer within ${timeoutMs} ms to ${JSON.stringify(String(text).slice(0, 120))}`))
    }, timeoutMs)
    s.on('data', (c: Buffer) => chunks.push(c))
    s.on('error', () => undefined)
    s.on('close', () => {
      clearTimeout(timer)
      const all = Buffer.concat(chunks).toString('latin1')
      const split = all.indexOf('\r\n\r\n')
      const head = split < 0 ? all : all.slice(0, split)
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0), head, body: split < 0 ? '' : all.slice(split + 4) })
    })
    s.write(text)
  })
}

/** A GET of `target` with Connection: close and the given extra header lines. */
export function rawGet(p: StartedProxy, target: string, headers = `Host: ${new URL(p.url).host}\r\n`): Promise<RawAnswer> {
  return raw(p, `GET ${target} HTTP/1.1\r\n${headers}Connection: close\r\n\r\n`)
}

