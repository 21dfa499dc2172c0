// Headless Chromium driven over the DevTools protocol (Node's WebSocket): the panel tests open
// the proxy's page in it. Debian's package `chromium`; a test without it calls skip().
import { spawn, type ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { tempDir } from './helpers.ts'

export const CHROMIUM = '/usr/bin/chromium'

/** Headless Chromium driven over the DevTools protocol (Node's WebSocket), one page. */
export class Browser {
  private constructor(
    private readonly child: ChildProcess,
    private readonly profile: string,
    readonly page: Page,
  ) {}

  static async start(url: string): Promise<Browser> {
    const profile = tempDir('slapos-chromium-')
    const child = spawn(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--remote-debugging-port=0', `--user-data-dir=${profile}`, url], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    try {
      const port = await new Promise<string>((resolve, reject) => {
        let err = ''
        const timer = setTimeout(() => reject(new Error(`chromium did not start:\n${err}`)), 30_000)
        child.stderr?.setEncoding('utf8').on('data', (s: string) => {
          err += s
          const m = /DevTools listening on ws:\/\/[^:]+:(\d+)\//.exec(err)
          if (m?.[1]) {
            clearTimeout(timer)
            resolve(m[1])
          }
        })
        child.once('exit', () => reject(new Error(`chromium exited:\n${err}`)))
      })
      const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { type: string; url: string; webSocketDebuggerUrl: string }[]
      const target = targets.find((x) => x.type === 'page')
      if (!target) throw new Error('chromium has no page')
      return new Browser(child, profile, await Page.connect(target.webSocketDebuggerUrl))
    } catch (err) {
      child.kill('SIGKILL')
      rmSync(profile, { recursive: true, force: true })
      throw err
    }
  }

  async close(): Promise<void> {
    this.page.close()
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r))
      this.child.kill('SIGTERM')
      const force = setTimeout(() => this.child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(force)
    }
    rmSync(this.profile, { recursive: true, force: true })
  }
}

export class Page {
  private next = 1
  private readonly pending = new Map<number, { resolve(v: any): void; reject(e: Error): void }>()

  private constructor(private readonly ws: WebSocket) {
    ws.addEventListener('message', (ev) => {
      const m = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string } }
      const waiter = m.id === undefined ? undefined : this.pending.get(m.id)
      if (!waiter) return
      this.pending.delete(m.id!)
      if (m.error) waiter.reject(new Error(m.error.message))
      else waiter.resolve(m.result)
    })
  }

  static connect(url: string): Promise<Page> {
    const ws = new WebSocket(url)
    return new Promise((resolve, reject) => {
      ws.addEventListener('open', () => resolve(new Page(ws)))
      ws.addEventListener('error', () => reject(new Error(`cannot connect to ${url}`)))
    })
  }

  /** The value of a page expression (promises awaited). */
  async eval(expression: string): Promise<any> {
    const id = this.next++
    const answer = new Promise<any>((resolve, reject) => this.pending.set(id, { resolve, reject }))
    this.ws.send(JSON.stringify({ id, method: 'Runtime.evaluate', params: { expression, awaitPromise: true, returnByValue: true } }))
    const r = await answer
    if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`)
    return r.result.value
  }

  /** Polls until the expression is true (15 s at most). */
  async waitFor(expression: string): Promise<void> {
    const end = Date.now() + 15_000
    for (;;) {
      let ok = false
      try {
        ok = (await this.eval(expression)) === true
      } catch {
        // the page may not be there yet
      }
      if (ok) return
      if (Date.now() > end) throw new Error(`timed out waiting for ${expression}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  close(): void {
    this.ws.close()
  }
}
