/**
 * An in-memory ByteChannel pair: the fake next to the BulkTransport port, for testing transfer
 * logic in one process. It keeps the port's contract (bounded buffering, backpressure, abort seen
 * by both ends as ChannelClosedError); the same compliance suite runs against it and libp2p.
 */
import { ChannelClosedError } from '../ports.js'
import type { ByteChannel } from '../ports.js'

export interface MemoryChannelOptions {
  /** Bytes a direction buffers before `write` waits for the reader (default 4 MiB). */
  readonly highWaterMark?: number
}

type Wake = () => void

/** One direction: a bounded queue of chunks between one writer and one reader. */
class Pipe {
  private readonly chunks: Uint8Array[] = []
  private bytes = 0
  private ended = false
  private readerError: Error | undefined
  private writerError: Error | undefined
  private wakeReader: Wake | undefined
  private wakeWriter: Wake | undefined

  constructor (private readonly highWaterMark: number) {}

  async push (chunk: Uint8Array, signal?: AbortSignal): Promise<void> {
    this.checkWritable()
    if (chunk.byteLength > 0) {
      this.chunks.push(chunk)
      this.bytes += chunk.byteLength
      this.wake('reader')
    }
    while (this.bytes > this.highWaterMark) {
      await this.sleep('writer', signal)
      this.checkWritable()
    }
  }

  end (): void {
    this.checkWritable()
    this.ended = true
    this.wake('reader')
  }

  fail (readerError: Error, writerError: Error): void {
    this.readerError ??= readerError
    this.writerError ??= writerError
    this.chunks.length = 0
    this.bytes = 0
    this.wake('reader')
    this.wake('writer')
  }

  async * pull (signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    for (;;) {
      signal?.throwIfAborted()
      if (this.readerError !== undefined) throw this.readerError
      const chunk = this.chunks.shift()
      if (chunk !== undefined) {
        this.bytes -= chunk.byteLength
        if (this.bytes <= this.highWaterMark) this.wake('writer')
        yield chunk
        continue
      }
      if (this.ended) return
      await this.sleep('reader', signal)
    }
  }

  private checkWritable (): void {
    if (this.writerError !== undefined) throw this.writerError
    if (this.ended) throw new ChannelClosedError('channel is closed for writing')
  }

  private wake (who: 'reader' | 'writer'): void {
    const wake = who === 'reader' ? this.wakeReader : this.wakeWriter
    if (who === 'reader') this.wakeReader = undefined
    else this.wakeWriter = undefined
    wake?.()
  }

  private async sleep (who: 'reader' | 'writer', signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { reject(signal?.reason) }
      const wake = (): void => { signal?.removeEventListener('abort', onAbort); resolve() }
      if (who === 'reader') this.wakeReader = wake
      else this.wakeWriter = wake
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }
}

class MemoryChannel implements ByteChannel {
  private readCalled = false

  constructor (readonly outgoing: Pipe, readonly incoming: Pipe) {}

  async write (chunk: Uint8Array, signal?: AbortSignal): Promise<void> {
    await this.guard(signal, async () => { await this.outgoing.push(chunk, signal) })
  }

  async closeWrite (signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    this.outgoing.end()
  }

  read (signal?: AbortSignal): AsyncIterable<Uint8Array> {
    if (this.readCalled) throw new Error('ByteChannel.read() may be called only once')
    this.readCalled = true
    return this.pull(signal)
  }

  private async * pull (signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    try {
      yield * this.incoming.pull(signal)
    } catch (err) {
      if (signal?.aborted === true && err === signal.reason) this.abort(err as Error)
      throw err
    }
  }

  abort (err: Error): void {
    const local = new ChannelClosedError(`channel aborted: ${err.message}`, { cause: err })
    const remote = new ChannelClosedError('channel reset by the remote')
    this.outgoing.fail(remote, local)
    this.incoming.fail(local, remote)
  }

  private async guard (signal: AbortSignal | undefined, op: () => Promise<void>): Promise<void> {
    try {
      await op()
    } catch (err) {
      if (signal?.aborted === true && err === signal.reason) this.abort(err as Error)
      throw err
    }
  }
}

/** Two connected ends: what one writes, the other reads. */
export function createMemoryChannelPair (opts: MemoryChannelOptions = {}): [ByteChannel, ByteChannel] {
  const hwm = opts.highWaterMark ?? 4 * 1024 * 1024
  const ab = new Pipe(hwm)
  const ba = new Pipe(hwm)
  return [new MemoryChannel(ab, ba), new MemoryChannel(ba, ab)]
}
