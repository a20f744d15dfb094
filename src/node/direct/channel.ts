/**
 * A ByteChannel over a direct TCP connection whose bytes are AES-256-GCM records (./records.ts).
 * One `socket.write` per record (natively sealed into a pooled buffer that comes back once the
 * socket flushed it) and no framing layers in between: this is what makes bulk data cheaper per
 * byte than a noise+yamux stream (see src/migration/transfer.ts). Received records are opened in
 * place, in the socket's own read buffers.
 */
import { timingSafeEqual } from 'node:crypto'
import { ChannelClosedError } from '../../migration/ports.js'
import { MAX_RECORD_BYTES, RecordOpener, RecordSealer, RecordType } from './records.js'
import type { Socket } from 'node:net'
import type { ByteChannel, ReadOptions } from '../../migration/ports.js'
import type { SocketReads } from '../../migration/socket-reads.js'
import type { OpenedRecord } from './records.js'

export interface DirectKeys {
  /** Seals what this end sends. */
  readonly send: Uint8Array
  /** Opens what the remote sends. */
  readonly receive: Uint8Array
  /** The one-time token both HELLO records carry. */
  readonly token: Uint8Array
}

/**
 * Plaintext bytes queued for the reader before the socket is paused (resumed below a quarter).
 * Small on purpose: chunks that wait in the queue outlive the daemon's small young generation
 * (--max-semi-space-size=2), get promoted and cost full GCs. Receiving 1 GiB into a daemon (load
 * ~8-10): 8 MiB gave 25-44 mark-compacts and 1.0-1.9 s of GC; 4 MiB 58 and 1.6 s; 2 MiB 2 and 0.4-0.6 s.
 */
const READ_HIGH_WATER = 2 * 1024 * 1024
/** Smaller records get a buffer of their own size (a page, a control frame): the pool is for bulk data. */
const MIN_POOLED_RECORD_BYTES = 64 * 1024
/** Assembled records up to this size (an image DATA frame in one record) come from the pool. */
const POOLED_RECORD_BYTES = 1024 * 1024 + 4096
/** Record buffers kept while unused: the queue (2 MiB), the one being filled, the one lent out. */
const POOL_KEEP = 6

/** Buffers for assembled records, handed back by a reader that reuses them (ReadOptions.reuse). */
class RecordPool {
  private readonly free: Buffer[] = []
  private readonly pooled = new WeakSet<ArrayBufferLike>()

  take (bytes: number): Buffer {
    if (bytes < MIN_POOLED_RECORD_BYTES || bytes > POOLED_RECORD_BYTES) return Buffer.allocUnsafe(bytes)
    const buf = this.free.pop() ?? this.fresh()
    return buf.subarray(0, bytes)
  }

  give (view: Uint8Array): void {
    if (this.pooled.has(view.buffer) && this.free.length < POOL_KEEP) this.free.push(Buffer.from(view.buffer, 0, POOLED_RECORD_BYTES))
  }

  private fresh (): Buffer {
    const buf = Buffer.allocUnsafeSlow(POOLED_RECORD_BYTES)
    this.pooled.add(buf.buffer)
    return buf
  }
}

export class DirectByteChannel implements ByteChannel {
  /** `write` seals (encrypts into new buffers) before it returns: the plaintext is free at once. */
  readonly copiesOnWrite = true
  private readonly sealer: RecordSealer
  private readonly opener: RecordOpener
  private failure: ChannelClosedError | undefined
  private helloSeen = false
  private ended = false
  private endSent = false
  private readCalled = false
  private discarding = false
  private readonly queue: Buffer[] = []
  private queued = 0
  private wake: (() => void) | undefined
  private helloWaiters: Array<(err?: Error) => void> = []
  private readonly pool = new RecordPool()
  /** The reader lends record buffers back (ReadOptions.reuse): known from `read`, before data flows. */
  private reusing = false
  /** Resolves once the TCP connection is closed (finished or torn down). */
  readonly closed: Promise<void>

  /**
   * The dialing end sends its HELLO at once; the listening end only after the dialer's HELLO
   * authenticated, so a stranger who connects first never gets a record under the listener's key.
   * `reads`: the socket reads into one reused buffer (made with its `onread`); without it, the
   * channel takes the socket's 'data' events.
   */
  constructor (private readonly socket: Socket, private readonly keys: DirectKeys, private readonly role: 'dialer' | 'listener', reads?: SocketReads) {
    this.sealer = new RecordSealer(keys.send)
    // Pooled only for a reader that hands the buffers back; any other gets one of each record's size.
    this.opener = new RecordOpener(keys.receive, undefined, reads === undefined ? undefined : bytes => this.reusing ? this.pool.take(bytes) : Buffer.allocUnsafe(bytes))
    socket.setNoDelay(true)
    if (reads !== undefined) {
      reads.attach(bytes => { this.onData(bytes) })
      socket.resume() // no 'data' listener starts it; flowing, it also emits 'end'
    } else {
      socket.on('data', (chunk: Buffer) => { this.onData(chunk) })
    }
    socket.on('end', () => { if (!this.ended) this.fail(new ChannelClosedError('channel reset by the remote (direct connection ended before its END record)')) })
    socket.on('error', (err) => { this.fail(new ChannelClosedError(`direct connection failed: ${err.message}`, { cause: err })) })
    socket.on('close', () => { if (!this.ended) this.fail(new ChannelClosedError('channel reset by the remote (direct connection closed)')) })
    this.closed = new Promise(resolve => { socket.once('close', () => { resolve() }) })
    if (role === 'dialer') this.writeRecord(RecordType.hello, keys.token)
  }

  /** Resolves once the remote's HELLO (with the token) arrived and authenticated. */
  async authenticated (signal?: AbortSignal): Promise<void> {
    if (this.helloSeen) return
    if (this.failure !== undefined) throw this.failure
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { reject(signal?.reason) }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.helloWaiters.push(err => {
        signal?.removeEventListener('abort', onAbort)
        if (err === undefined) resolve()
        else reject(err)
      })
    })
  }

  async write (chunk: Uint8Array, signal?: AbortSignal): Promise<void> {
    this.check(signal)
    if (this.endSent) throw new ChannelClosedError('channel is closed for writing')
    let ok = true
    for (let at = 0; at < chunk.byteLength; at += MAX_RECORD_BYTES) {
      ok = this.writeRecord(RecordType.data, chunk.subarray(at, Math.min(chunk.byteLength, at + MAX_RECORD_BYTES)))
    }
    if (!ok) await this.waitDrain(signal)
  }

  async closeWrite (signal?: AbortSignal): Promise<void> {
    this.check(signal)
    if (this.endSent) return
    this.writeRecord(RecordType.end, new Uint8Array(0))
    this.endSent = true
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { reject(signal?.reason) }
      signal?.addEventListener('abort', onAbort, { once: true })
      // The FIN follows END: the remote may keep writing (allowHalfOpen on both ends).
      this.socket.end(() => { signal?.removeEventListener('abort', onAbort); resolve() })
    })
    if (this.failure !== undefined && !this.ended) throw this.failure
  }

  read (signal?: AbortSignal, opts?: ReadOptions): AsyncIterable<Uint8Array> {
    if (this.readCalled) throw new Error('ByteChannel.read() may be called only once')
    this.readCalled = true
    this.reusing = opts?.reuse === true
    return this.chunks(signal, this.reusing)
  }

  abort (err: Error): void {
    this.fail(new ChannelClosedError(`channel aborted: ${err.message}`, { cause: err }))
  }

  private writeRecord (type: typeof RecordType[keyof typeof RecordType], payload: Uint8Array): boolean {
    const parts = this.sealer.seal(type, payload)
    if (parts.length === 1 && parts[0] !== undefined) {
      // Pooled output: back to the sealer once the socket flushed it (not after a failed write).
      return this.socket.write(parts[0], err => { if (err == null) this.sealer.recycle(parts) })
    }
    this.socket.cork()
    let ok = true
    for (const p of parts) ok = this.socket.write(p)
    this.socket.uncork()
    return ok
  }

  private onData (chunk: Buffer): void {
    let records: OpenedRecord[]
    try {
      records = this.opener.push(chunk)
    } catch (err) {
      this.fail(new ChannelClosedError(`direct connection: ${(err as Error).message}`, { cause: err }))
      return
    }
    for (const r of records) {
      if (this.failure !== undefined) return
      this.onRecord(r)
    }
    if (this.queued >= READ_HIGH_WATER && !this.socket.isPaused()) this.socket.pause()
    this.notify()
  }

  private onRecord (r: OpenedRecord): void {
    if (!this.helloSeen) {
      const token = Buffer.concat(r.payload)
      if (r.type !== RecordType.hello || token.byteLength !== this.keys.token.byteLength || !timingSafeEqual(token, this.keys.token)) {
        this.fail(new ChannelClosedError('direct connection: the first record is not a valid HELLO'))
        return
      }
      this.helloSeen = true
      if (this.role === 'listener') this.writeRecord(RecordType.hello, this.keys.token)
      for (const w of this.helloWaiters.splice(0)) w()
      return
    }
    if (this.ended || r.type === RecordType.hello) {
      this.fail(new ChannelClosedError(`direct connection: unexpected record type ${r.type}${this.ended ? ' after END' : ''}`))
      return
    }
    if (r.type === RecordType.end) {
      this.ended = true
      return
    }
    if (this.discarding) return
    for (const piece of r.payload) {
      this.queue.push(piece)
      this.queued += piece.byteLength
    }
  }

  private async * chunks (signal: AbortSignal | undefined, reuse: boolean): AsyncGenerator<Uint8Array> {
    try {
      yield * this.pull(signal, reuse)
    } finally {
      // The consumer stopped reading: drop what is queued and what still comes, so the remote is
      // never stalled by a channel nobody reads.
      this.discarding = true
      this.queue.length = 0
      this.queued = 0
      if (this.socket.isPaused() && this.failure === undefined) this.socket.resume()
    }
  }

  /** With `reuse`, a chunk's buffer goes back to the pool when the loop asks for the next one. */
  private async * pull (signal: AbortSignal | undefined, reuse: boolean): AsyncGenerator<Uint8Array> {
    for (;;) {
      this.check(signal)
      const chunk = this.queue.shift()
      if (chunk !== undefined) {
        this.queued -= chunk.byteLength
        if (this.queued <= READ_HIGH_WATER / 4 && this.socket.isPaused() && this.failure === undefined) this.socket.resume()
        yield chunk
        if (reuse) this.pool.give(chunk)
        continue
      }
      if (this.failure !== undefined) throw this.failure
      if (this.ended) return
      await new Promise<void>(resolve => {
        const onAbort = (): void => { this.notify() }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.wake = () => { signal?.removeEventListener('abort', onAbort); resolve() }
      })
    }
  }

  private async waitDrain (signal?: AbortSignal): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: unknown): void => {
        this.socket.off('drain', onDrain)
        this.socket.off('close', onClose)
        signal?.removeEventListener('abort', onAbort)
        if (err === undefined) resolve()
        else reject(err)
      }
      const onDrain = (): void => { done() }
      const onClose = (): void => { done(this.failure ?? new ChannelClosedError('channel closed while waiting to write')) }
      const onAbort = (): void => {
        done(signal?.reason)
        this.abort(signal?.reason instanceof Error ? signal.reason : new Error('aborted'))
      }
      this.socket.on('drain', onDrain)
      this.socket.on('close', onClose)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
    if (this.failure !== undefined) throw this.failure
  }

  private check (signal?: AbortSignal): void {
    if (signal?.aborted === true) {
      this.abort(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)))
      throw signal.reason
    }
    if (this.failure !== undefined) throw this.failure
  }

  private fail (err: ChannelClosedError): void {
    if (this.failure !== undefined) return
    this.failure = err
    this.queue.length = 0
    this.queued = 0
    this.socket.destroy()
    for (const w of this.helloWaiters.splice(0)) w(err)
    this.notify()
  }

  private notify (): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }
}
