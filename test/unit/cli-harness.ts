/**
 * Runs the CLI against a stub client with injected terminal, stdin and signals, so the job verbs can
 * be tested by what they print, the params they send and their exit codes, without a process.
 */
import { AsyncQueue } from '../../src/api/async-queue.js'
import { CallCancelledError } from '../../src/api/errors.js'
import { runCli } from '../../src/cli/run.js'
import type { ApiClient, OutputSink, Printer } from '../../src/cli/context.js'

export const NOW = 1_700_000_000_000

/** A streaming call as the command sees it; the test drives its events and result. */
export interface StubStream {
  readonly method: string
  readonly params: Record<string, unknown>
  readonly inputs: unknown[]
  cancelled: boolean
  emit(event: unknown): void
  finish(result: unknown): void
  fail(err: unknown): void
}

export interface RunOptions {
  readonly env?: Record<string, string>
  readonly stdin?: () => AsyncIterable<Uint8Array>
  readonly columns?: number
  /** stderr is a terminal this wide (live progress lines). */
  readonly stderrColumns?: number
  readonly output?: OutputSink
  /** The CLI's interrupt signal (aborted on Ctrl-C when no job is in the foreground). */
  readonly signal?: AbortSignal
}

export interface Harness {
  readonly out: string[]
  readonly err: string[]
  /** Raw output in the order written. */
  readonly written: Array<{ fd: 1 | 2, text: string }>
  readonly calls: Array<{ method: string, params: Record<string, unknown> }>
  readonly streams: StubStream[]
  connects: number
  nowMs: number
  /** Whether a command is subscribed to signals right now. */
  readonly subscribed: boolean
  /** Answers of `call`, by method: a value, an Error to throw, or a function of the params. */
  answers: Record<string, unknown>
  /** Called when a command opens a stream (to script it). */
  onStream: (stream: StubStream) => void
  /** Resolves each `send` of a stream; replace to hold inputs back (backpressure). */
  sendGate: () => Promise<void>
  /** Delivers a signal to the subscribed command. */
  signal(name: string): void
  stdout(): string
  stderr(): string
  run(argv: string[], options?: RunOptions): Promise<number>
}

export function harness (answers: Record<string, unknown> = {}): Harness {
  let handler: ((signal: string) => void) | undefined
  const h: Harness = {
    out: [], err: [], written: [], calls: [], streams: [], connects: 0, nowMs: NOW, answers,
    get subscribed () { return handler !== undefined },
    onStream: () => {},
    sendGate: async () => {},
    signal (name) {
      if (handler === undefined) throw new Error(`nobody listens for ${name}`)
      handler(name)
    },
    stdout: () => h.written.filter(w => w.fd === 1).map(w => w.text).join(''),
    stderr: () => h.written.filter(w => w.fd === 2).map(w => w.text).join(''),
    async run (argv, options = {}) {
      const printer: Printer = { out: t => { h.out.push(t) }, err: t => { h.err.push(t) } }
      const output: OutputSink = options.output ?? {
        write: async (fd, data) => { h.written.push({ fd, text: Buffer.from(data).toString() }) }
      }
      return await runCli(argv, {
        printer,
        env: options.env ?? { PATH: '/usr/bin:/bin', HOME: '/home/ada', LANG: 'C.UTF-8' },
        connect: async () => { h.connects++; return stubClient(h) },
        now: () => h.nowMs,
        signal: options.signal,
        output,
        stdin: options.stdin ?? (() => { throw new Error('stdin must not be read') }),
        onSignal: (fn) => {
          handler = fn
          return () => { handler = undefined }
        },
        cwd: () => '/home/ada/work',
        columns: options.columns,
        stderrColumns: options.stderrColumns
      })
    }
  }
  return h
}

function stubClient (h: Harness): ApiClient {
  const client = {
    async call (method: string, params: Record<string, unknown>) {
      h.calls.push({ method, params })
      const answer = h.answers[method]
      if (answer instanceof Error) throw answer
      return typeof answer === 'function' ? (answer as (p: unknown) => unknown)(params) : answer
    },
    stream (method: string, params: Record<string, unknown>) {
      h.calls.push({ method, params })
      const stream = stubStream(method, params, h)
      h.streams.push(stream)
      h.onStream(stream)
      return stream.call
    },
    close () {}
  }
  return client as unknown as ApiClient
}

function stubStream (method: string, params: Record<string, unknown>, h: Harness): StubStream & { call: unknown } {
  const queue = new AsyncQueue<unknown>({ highWaterMark: 1_000_000 })
  let resolve!: (value: unknown) => void
  let reject!: (err: unknown) => void
  const result = new Promise((res, rej) => { resolve = res; reject = rej })
  result.catch(() => {})
  const stream = {
    method,
    params,
    inputs: [] as unknown[],
    cancelled: false,
    emit: (event: unknown) => { queue.push(event) },
    finish: (value: unknown) => { queue.end(); resolve(value) },
    fail: (err: unknown) => { queue.end(err); reject(err) },
    call: {
      id: 1,
      result,
      send: async (input: unknown) => {
        await h.sendGate()
        stream.inputs.push(input)
      },
      cancel: () => {
        stream.cancelled = true
        stream.fail(new CallCancelledError(`${method} cancelled by the client`))
      },
      [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator]()
    }
  }
  return stream
}

export async function waitFor (predicate: () => boolean, what = 'condition', timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 2))
  }
}

export const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text))
