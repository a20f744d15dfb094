import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ControlClient } from '../../src/api/client.js'
import { streamOutput } from '../../src/cli/io.js'
import { runCli } from '../../src/cli/run.js'
import { ControlServer } from '../../src/node/control-server.js'
import { waitFor } from './cli-harness.js'
import type { ApiClient, Printer } from '../../src/cli/context.js'

/** A terminal that reads slowly: each write completes on a later tick; records the most it had buffered. */
class SlowTerminal extends Writable {
  readonly chunks: Buffer[] = []
  maxBuffered = 0
  constructor () { super({ highWaterMark: 16 * 1024 }) }
  override _write (chunk: Buffer, _encoding: string, done: () => void): void {
    this.maxBuffered = Math.max(this.maxBuffered, this.writableLength)
    this.chunks.push(chunk)
    setImmediate(done)
  }

  text (): string { return Buffer.concat(this.chunks).toString() }
}

const LINES = 100_000
const expected = Array.from({ length: LINES }, (_, i) => `line ${i}\n`).join('')

describe('streamOutput: the real terminal writer', () => {
  it('writes 100k lines in order, waiting for a full stream to drain instead of buffering them', async () => {
    const stdout = new SlowTerminal()
    const stderr = new SlowTerminal()
    const sink = streamOutput(stdout, stderr)
    for (let i = 0; i < LINES; i++) await sink.write(i % 1000 === 0 ? 2 : 1, Buffer.from(`line ${i}\n`))
    await waitFor(() => stdout.writableLength === 0 && stderr.writableLength === 0, 'the streams to flush')
    const all = Array.from({ length: LINES }, (_, i) => `line ${i}\n`)
    expect(stdout.text()).toBe(all.filter((_, i) => i % 1000 !== 0).join(''))
    expect(stderr.text()).toBe(all.filter((_, i) => i % 1000 === 0).join(''))
    expect(stdout.maxBuffered).toBeLessThan(17 * 1024) // never much past the high-water mark
  })

  it('drops writes to a closed stream instead of waiting forever', async () => {
    const stdout = new SlowTerminal()
    stdout.destroy()
    await streamOutput(stdout, new SlowTerminal()).write(1, Buffer.from('x'))
    expect(stdout.chunks).toEqual([])
  })
})

describe('ssi run against a real control server', () => {
  let dir: string
  let server: ControlServer
  const logger = { debug () {}, info () {}, warn () {}, error () {} }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ssi-cli-run-'))
    server = new ControlServer({ socketPath: join(dir, 'ssi.sock'), logger })
  })
  afterEach(async () => {
    await server.stop()
    await rm(dir, { recursive: true, force: true })
  })

  async function ssi (argv: string[], stdout: Writable, extra: { stdin?: () => AsyncIterable<Uint8Array>, onSignal?: (h: (s: string) => void) => () => void } = {}): Promise<{ code: number, err: string[] }> {
    const err: string[] = []
    const printer: Printer = { out: () => {}, err: t => { err.push(t) } }
    const connect = async (path: string): Promise<ApiClient> => await ControlClient.connect(path)
    const code = await runCli(['--socket', join(dir, 'ssi.sock'), ...argv], {
      printer, env: { PATH: '/bin' }, connect, output: streamOutput(stdout, new SlowTerminal()), cwd: () => '/w', ...extra
    })
    return { code, err }
  }

  it('streams 100k lines of output to a slow terminal, complete and in order, and exits with the status', async () => {
    server.handle('run', async (params, ctx) => {
      await ctx.emit({ kind: 'started', vpid: 1000001, node: 'n1' })
      for (let i = 0; i < LINES; i++) await ctx.emit({ kind: 'output', fd: 1, data: Buffer.from(`line ${i}\n`) })
      return { vpid: 1000001, node: 'n1', state: 'exited', exit: { code: params.argv.length, oomKilled: false }, status: params.argv.length, limits: {} }
    })
    await server.start()
    const stdout = new SlowTerminal()
    const { code, err } = await ssi(['run', '--', 'seq', '--json', 'x'], stdout)
    expect(err).toEqual([])
    expect(code).toBe(3)
    await waitFor(() => stdout.writableLength === 0, 'stdout to flush')
    expect(stdout.text()).toBe(expected)
  })

  it('forwards stdin (-i) and a Ctrl-C through the real client', async () => {
    let forward: ((s: string) => void) | undefined
    server.handle('run', async (_params, ctx) => {
      await ctx.emit({ kind: 'started', vpid: 1000001, node: 'n1' })
      for await (const input of ctx.inputs) {
        if (input.stdin !== undefined) await ctx.emit({ kind: 'output', fd: 1, data: input.stdin })
        if (input.eof === true) forward?.('SIGINT') // as if the user pressed Ctrl-C now
        if (input.signal !== undefined) {
          return { vpid: 1000001, node: 'n1', state: 'killed', exit: { signal: 2, oomKilled: false }, status: 130, limits: {} }
        }
      }
      throw new Error('inputs ended without a signal')
    })
    await server.start()
    async function * stdin (): AsyncIterable<Uint8Array> { yield Buffer.from('hello '); yield Buffer.from('world\n') }
    const stdout = new SlowTerminal()
    const onSignal = (handler: (s: string) => void): () => void => { forward = handler; return () => { forward = undefined } }
    const { code, err } = await ssi(['run', '-i', '--', 'cat'], stdout, { stdin, onSignal })
    expect(err).toEqual([])
    expect(code).toBe(130)
    await waitFor(() => stdout.writableLength === 0, 'stdout to flush')
    expect(stdout.text()).toBe('hello world\n')
  })
})
