/**
 * Entry point of the `ssi` command (bin/ssi.js). Keep imports here to the bare minimum: the CLI must
 * start fast, so it loads commander, its own modules, and — only when a verb connects — the
 * control-API client (node:net + msgpack). Never libp2p, level, pino or zod.
 */
import { runCli } from './run.js'
import type { ApiClient, Printer } from './context.js'

const interrupt = new AbortController()
process.once('SIGINT', () => {
  interrupt.abort(new Error('interrupted'))
  process.once('SIGINT', () => { process.exit(130) }) // a second ^C does not wait
})
// `ssi nodes | head -1`: a closed pipe is not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => { process.exit(err.code === 'EPIPE' ? 0 : 1) })

const printer: Printer = {
  out: text => { process.stdout.write(`${text}\n`) },
  err: text => { process.stderr.write(`${text}\n`) }
}

async function connect (socketPath: string, signal: AbortSignal): Promise<ApiClient> {
  const { ControlClient } = await import('../api/client.js')
  return await ControlClient.connect(socketPath, { signal })
}

const code = await runCli(process.argv.slice(2), { printer, env: process.env, connect, signal: interrupt.signal })
// stdout and stderr are synchronous for files and pipes on Linux, so nothing printed is lost.
process.exit(code)
