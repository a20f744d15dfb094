/**
 * Entry point of the `ssi` command (bin/ssi.js). Keep imports here to the bare minimum: the CLI must
 * start fast, so it loads commander, its own modules, and — only when a verb connects — the
 * control-API client (node:net + msgpack). Never libp2p, level, pino or zod.
 */
import { streamOutput } from './io.js'
import { runCli } from './run.js'
import type { ApiClient, Printer, SignalSource } from './context.js'

/** Signals a foreground `ssi run` forwards to its job instead of dying from them. */
const FORWARDED_SIGNALS = ['SIGTERM', 'SIGHUP', 'SIGQUIT'] as const

const interrupt = new AbortController()
let forward: ((signal: string) => void) | undefined

process.on('SIGINT', () => {
  if (forward !== undefined) forward('SIGINT')
  else if (interrupt.signal.aborted) process.exit(130) // a second ^C does not wait
  else interrupt.abort(new Error('interrupted'))
})

const onSignal: SignalSource = (handler) => {
  forward = handler
  for (const name of FORWARDED_SIGNALS) process.on(name, handler)
  return () => {
    if (forward === handler) forward = undefined
    for (const name of FORWARDED_SIGNALS) process.off(name, handler)
  }
}

// `ssi nodes | head -1`: a closed pipe is not an error worth a stack trace. A foreground job gets
// SIGPIPE instead, as it would writing to the pipe itself (`ssi run yes | head -1` ends `yes`).
let sentSigpipe = false
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE' && forward !== undefined) {
    if (!sentSigpipe) forward('SIGPIPE')
    sentSigpipe = true
    return
  }
  process.exit(err.code === 'EPIPE' ? 0 : 1)
})

const printer: Printer = {
  out: text => { process.stdout.write(`${text}\n`) },
  err: text => { process.stderr.write(`${text}\n`) }
}

async function connect (socketPath: string, signal: AbortSignal): Promise<ApiClient> {
  const { ControlClient } = await import('../api/client.js')
  return await ControlClient.connect(socketPath, { signal })
}

// No top-level await: the bundle may be built as CommonJS (scripts/bundle-cli.mjs).
void runCli(process.argv.slice(2), {
  printer,
  env: process.env,
  connect,
  signal: interrupt.signal,
  output: streamOutput(process.stdout, process.stderr),
  stdin: () => process.stdin,
  onSignal,
  cwd: () => process.cwd(),
  columns: process.stdout.isTTY ? process.stdout.columns : undefined,
  stderrColumns: process.stderr.isTTY ? process.stderr.columns : undefined
}).then(code => {
  // stdout and stderr are synchronous for files and pipes on Linux, so nothing printed is lost.
  process.exit(code)
})
