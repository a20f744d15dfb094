/**
 * zstd as a byte-stream filter. Node 22.15+/23.8+ have zstd in zlib (used when present); Node 20
 * does not, so otherwise the `zstd` binary runs as a child process (stdin → stdout), which also
 * puts compression on another core. Both produce and accept standard zstd frames, so the two ends
 * of a transfer need not use the same kind.
 */
import { spawn } from 'node:child_process'
import * as zlib from 'node:zlib'
import type { Readable, Writable } from 'node:stream'

export type ZstdDirection = 'compress' | 'decompress'

export interface ZstdOptions {
  /** Compression level, 1 (fast, the default: images are large and links fast) to 19. */
  readonly level?: number
  /** Worker threads of the zstd binary when compressing (0 = one per core; default 1). */
  readonly threads?: number
  /** The zstd binary (default `zstd` on PATH). */
  readonly binary?: string
  /** Use the zstd binary even if zlib has zstd (for tests and benchmarks). */
  readonly forceBinary?: boolean
}

/**
 * A running filter. `write` resolves when it can take more (backpressure); `end` marks the end of
 * input; `output` yields the result and throws if the filter failed (corrupt input when
 * decompressing, a missing binary, ...). One writer and one reader; `destroy` stops it at once.
 */
export interface ByteFilter {
  write(chunk: Uint8Array): Promise<void>
  end(): void
  readonly output: AsyncIterable<Uint8Array>
  destroy(): void
}

export class ZstdError extends Error {
  static override name = 'ZstdError'
  override name = 'ZstdError'
}

type ZstdZlib = typeof zlib & {
  createZstdCompress?: (o?: object) => zlib.Zlib & Readable & Writable
  createZstdDecompress?: (o?: object) => zlib.Zlib & Readable & Writable
  constants: typeof zlib.constants & { ZSTD_c_compressionLevel?: number }
}

/** Which zstd this process would use: zlib's, or the binary's. */
export function zstdImplementation (opts: ZstdOptions = {}): 'zlib' | 'binary' {
  const z = zlib as ZstdZlib
  return opts.forceBinary !== true && typeof z.createZstdCompress === 'function' ? 'zlib' : 'binary'
}

export function createZstdFilter (direction: ZstdDirection, opts: ZstdOptions = {}): ByteFilter {
  return zstdImplementation(opts) === 'zlib' ? zlibFilter(direction, opts) : binaryFilter(direction, opts)
}

function zlibFilter (direction: ZstdDirection, opts: ZstdOptions): ByteFilter {
  const z = zlib as ZstdZlib
  const level = z.constants.ZSTD_c_compressionLevel
  const stream = direction === 'compress'
    ? z.createZstdCompress?.(level === undefined ? {} : { params: { [level]: opts.level ?? 1 } })
    : z.createZstdDecompress?.()
  if (stream === undefined) throw new ZstdError('zlib has no zstd')
  return {
    write: async (chunk) => { await writeWithBackpressure(stream, chunk) },
    end: () => { stream.end() },
    output: stream as AsyncIterable<Uint8Array>,
    destroy: () => { stream.destroy() }
  }
}

function binaryArgs (direction: ZstdDirection, opts: ZstdOptions): string[] {
  if (direction === 'decompress') return ['-d', '-q', '-c']
  return [`-${opts.level ?? 1}`, `-T${opts.threads ?? 1}`, '-q', '-c']
}

function binaryFilter (direction: ZstdDirection, opts: ZstdOptions): ByteFilter {
  const binary = opts.binary ?? 'zstd'
  const child = spawn(binary, binaryArgs(direction, opts), { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  let spawnError: Error | undefined
  child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 4096) stderr += d })
  child.on('error', (err) => { spawnError = err })
  child.stdin.on('error', () => { /* EPIPE when zstd dies early: reported through its exit status */ })
  const exited = new Promise<string>(resolve => {
    child.once('close', (code, signal) => { resolve(code === 0 ? '' : `exit status ${code ?? signal ?? '?'}`) })
  })
  const describe = (status: string): ZstdError => new ZstdError(spawnError !== undefined
    ? `cannot run ${binary}: ${spawnError.message} (install the zstd package)`
    : `zstd ${direction} failed (${status}): ${stderr.trim() || 'no message'}`, { cause: spawnError })
  async function * output (): AsyncGenerator<Uint8Array> {
    for await (const chunk of child.stdout) yield chunk as Uint8Array
    const status = await exited
    if (status !== '' || spawnError !== undefined) throw describe(status)
  }
  return {
    write: async (chunk) => {
      if (spawnError !== undefined) throw describe('not started')
      await writeWithBackpressure(child.stdin, chunk)
    },
    end: () => { child.stdin.end() },
    output: output(),
    destroy: () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') }
  }
}

async function writeWithBackpressure (w: Writable, chunk: Uint8Array): Promise<void> {
  if (w.destroyed || w.writableEnded) throw new ZstdError('zstd input is closed')
  if (w.write(chunk)) return
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      w.off('drain', onDrain).off('close', onClose).off('error', done)
      if (err !== undefined) reject(err)
      else resolve()
    }
    const onDrain = (): void => { done() }
    const onClose = (): void => { done(new ZstdError('zstd closed its input')) }
    w.on('drain', onDrain).on('close', onClose).on('error', done)
  })
}
