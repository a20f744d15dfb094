/**
 * BulkTransport over libp2p: one stream per channel on the caller's protocol (e.g. '/ssi/images/1'),
 * raw bytes, over the node's existing noise+yamux connection. Written against the traps in
 * docs/libp2p.md: writers wait for the 'drain' event (not onDrain()), readers pause the stream for
 * backpressure with a raised maxReadBufferLength (yamux keeps sending up to its 16 MiB window after
 * a pause), and a read ends on 'end', never on 'remoteCloseWrite'.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { ChannelClosedError } from '../migration/ports.js'
import { NodeUnavailableError } from '../ssi/ports.js'
import { acceptDirect, connectDirect, DIRECT_SUFFIX } from './direct/handshake.js'
import type { BulkHandler, BulkTransport, ByteChannel } from '../migration/ports.js'
import type { Logger } from './logger.js'
import type { DirectResult } from './direct/handshake.js'
import type { DirectByteChannel } from './direct/channel.js'
import type { Connection, Libp2p, Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

/** Bytes a paused stream may still receive: yamux's largest window (16 MiB) plus headroom. */
export const BULK_MAX_READ_BUFFER = 32 * 1024 * 1024
/** Bytes a reader queues before it pauses the stream; it resumes below a quarter of this. */
export const BULK_READ_HIGH_WATER = 8 * 1024 * 1024

/**
 * Direct bulk connections (./direct/): for these protocols, channels run over a one-time TCP
 * connection of AES-256-GCM records negotiated over the libp2p stream, instead of over the stream
 * itself (noise+yamux cost about twice the CPU per byte). Either end without it, or a failed
 * connect, falls back to the stream.
 */
export interface DirectInit {
  readonly protocols: readonly string[]
  /** The IP to bind one-time ports on: the daemon's libp2p listen IP (undefined: never offer). */
  readonly bindHost: string | undefined
}

export interface BulkTransportInit {
  readonly host: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol' | 'dial'>
  /** Resolves a node name to its current PeerId string, or undefined if unknown. */
  readonly peerOf: (node: string) => string | undefined
  /** Resolves a PeerId string to a node name, or undefined for a peer not (yet) known. */
  readonly nodeOf: (peerId: string) => string | undefined
  /** Aborted when the daemon stops: open dials and every handler's signal follow it. */
  readonly shutdown: AbortSignal
  readonly logger?: Pick<Logger, 'debug' | 'warn'>
  /** Concurrent incoming channels per connection and protocol (default 16). */
  readonly maxInboundStreams?: number
  readonly readHighWater?: number
  readonly direct?: DirectInit
}

export class Libp2pBulkTransport implements BulkTransport {
  /** Open direct connections by the node at their other end (see `hangUp`). */
  private readonly directs = new Map<string, Set<DirectByteChannel>>()

  constructor (private readonly init: BulkTransportInit) {}

  /**
   * Aborts every open direct channel with `node` (e.g. once membership declares it dead). Its
   * libp2p streams end with the connection the daemon hangs up on; a direct TCP connection to a
   * hung (SIGSTOPped) host does not: its kernel keeps the connection up with a zero window, so a
   * writer would wait for 'drain' forever and a reader for the next byte.
   */
  hangUp (node: string, reason: Error): number {
    const open = this.directs.get(node)
    if (open === undefined) return 0
    this.directs.delete(node)
    for (const channel of open) channel.abort(reason)
    return open.size
  }

  async open (node: string, protocol: string, signal: AbortSignal): Promise<ByteChannel> {
    const peer = this.init.peerOf(node)
    if (peer === undefined) throw new NodeUnavailableError(`node ${node} is not a known live member of the cluster`)
    const dialSignal = AbortSignal.any([signal, this.init.shutdown])
    try {
      if (!this.usesDirect(protocol)) {
        const stream = await this.init.host.dialProtocol(peerIdFromString(peer), protocol, { signal: dialSignal })
        return new Libp2pByteChannel(stream, this.init.readHighWater)
      }
      const connection = await this.init.host.dial(peerIdFromString(peer), { signal: dialSignal })
      const stream = await connection.newStream([protocol + DIRECT_SUFFIX, protocol], { signal: dialSignal })
      if (stream.protocol !== protocol + DIRECT_SUFFIX) return new Libp2pByteChannel(stream, this.init.readHighWater)
      return this.toChannel(node, await connectDirect(stream, ipOf(connection), dialSignal).catch((err: unknown) => {
        stream.abort(err instanceof Error ? err : new Error(String(err)))
        throw err
      }))
    } catch (err) {
      if (signal.aborted) throw signal.reason
      throw new NodeUnavailableError(`cannot open ${protocol} to node ${node}: ${(err as Error).message}`, { cause: err })
    }
  }

  async handle (protocol: string, handler: BulkHandler): Promise<void> {
    const limit = this.init.maxInboundStreams ?? 16
    await this.init.host.handle(protocol, (stream, connection) => {
      const peer = connection.remotePeer.toString()
      void this.serve(new Libp2pByteChannel(stream, this.init.readHighWater), this.init.nodeOf(peer) ?? peer, handler)
    }, { maxInboundStreams: limit, maxOutboundStreams: limit, force: true })
    if (!this.usesDirect(protocol)) return
    await this.init.host.handle(protocol + DIRECT_SUFFIX, (stream, connection) => {
      const peer = connection.remotePeer.toString()
      const fromNode = this.init.nodeOf(peer) ?? peer
      acceptDirect(stream, this.init.direct?.bindHost, this.init.shutdown).then(
        r => { void this.serve(this.toChannel(fromNode, r), fromNode, handler) },
        (err: unknown) => {
          this.init.logger?.debug({ protocol, fromNode, err: (err as Error).message }, 'direct bulk handshake failed')
          stream.abort(err instanceof Error ? err : new Error(String(err)))
        })
    }, { maxInboundStreams: limit, maxOutboundStreams: limit, force: true })
  }

  async unhandle (protocol: string): Promise<void> {
    await this.init.host.unhandle(protocol)
    if (this.usesDirect(protocol)) await this.init.host.unhandle(protocol + DIRECT_SUFFIX)
  }

  private usesDirect (protocol: string): boolean {
    return this.init.direct?.protocols.includes(protocol) === true
  }

  private toChannel (node: string, r: DirectResult): ByteChannel {
    if (r.kind !== 'direct') return new Libp2pByteChannel(r.stream, this.init.readHighWater)
    const open = this.directs.get(node) ?? new Set()
    this.directs.set(node, open)
    open.add(r.channel)
    void r.channel.closed.then(() => {
      open.delete(r.channel)
      if (open.size === 0 && this.directs.get(node) === open) this.directs.delete(node)
    })
    return r.channel
  }

  private async serve (channel: ByteChannel, fromNode: string, handler: BulkHandler): Promise<void> {
    try {
      await handler(channel, fromNode, this.init.shutdown)
      // The stream is released once the remote closes its side too (or by its inactivity timeout).
      await channel.closeWrite(AbortSignal.timeout(10_000))
    } catch (err) {
      this.init.logger?.debug({ fromNode, err: (err as Error).message }, 'bulk channel handler failed')
      channel.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }
}

/** The IP address a connection reached its peer at, if it runs over IP. */
function ipOf (connection: Pick<Connection, 'remoteAddr'>): string | undefined {
  return ipOfAddr(connection.remoteAddr)
}

/** The IP of a multiaddr (e.g. a daemon's listen address: where to bind one-time direct ports). */
export function ipOfAddr (addr: Multiaddr | string): string | undefined {
  const ma = typeof addr === 'string' ? multiaddr(addr) : addr
  return ma.getComponents().find(c => c.name === 'ip4' || c.name === 'ip6')?.value
}

/** A ByteChannel over one libp2p stream. */
export class Libp2pByteChannel implements ByteChannel {
  private failure: ChannelClosedError | undefined
  private readCalled = false
  /** Attached from the start: without a 'message' listener yamux keeps opening its window. */
  private readonly reader: PausingReader

  constructor (private readonly stream: Stream, highWater = BULK_READ_HIGH_WATER) {
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, BULK_MAX_READ_BUFFER)
    this.reader = new PausingReader(stream, highWater)
    stream.addEventListener('close', (evt: StreamCloseEvent) => {
      if (evt.error !== undefined) {
        this.failure ??= new ChannelClosedError(evt.local === true ? `channel aborted: ${evt.error.message}` : 'channel reset by the remote', { cause: evt.error })
      }
    }, { once: true })
  }

  async write (chunk: Uint8Array, signal?: AbortSignal): Promise<void> {
    this.checkSignal(signal)
    this.checkWritable()
    let ready: boolean
    try {
      ready = this.stream.send(chunk)
    } catch (err) {
      throw this.failure ?? new ChannelClosedError(`cannot write: ${(err as Error).message}`, { cause: err })
    }
    if (!ready) await this.waitFor('drain', signal)
  }

  async closeWrite (signal?: AbortSignal): Promise<void> {
    this.checkSignal(signal)
    if (this.failure !== undefined) throw this.failure
    try {
      await this.stream.close({ signal })
    } catch (err) {
      this.checkSignal(signal)
      throw this.failure ?? new ChannelClosedError(`cannot close: ${(err as Error).message}`, { cause: err })
    }
  }

  read (signal?: AbortSignal): AsyncIterable<Uint8Array> {
    if (this.readCalled) throw new Error('ByteChannel.read() may be called only once')
    this.readCalled = true
    return this.chunks(signal)
  }

  abort (err: Error): void {
    this.failure ??= new ChannelClosedError(`channel aborted: ${err.message}`, { cause: err })
    this.stream.abort(err)
  }

  private async * chunks (signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    const reader = this.reader
    try {
      for (;;) {
        this.checkSignal(signal)
        const chunk = reader.take()
        if (chunk !== undefined) {
          yield chunk
          continue
        }
        if (this.failure !== undefined || reader.closedWithError) throw this.failure ?? new ChannelClosedError('channel reset by the remote')
        if (reader.ended) return
        await reader.wait(signal)
      }
    } finally {
      reader.discard()
    }
  }

  private checkWritable (): void {
    if (this.failure !== undefined) throw this.failure
    if (this.stream.writeStatus !== 'writable') throw new ChannelClosedError(`channel is ${this.stream.writeStatus} for writing`)
  }

  private checkSignal (signal?: AbortSignal): void {
    if (signal?.aborted !== true) return
    this.abort(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)))
    throw signal.reason
  }

  /** Waits for `event` (trap 1: the event, not onDrain()), failing on close or abort. */
  private async waitFor (event: 'drain', signal?: AbortSignal): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: unknown): void => {
        this.stream.removeEventListener(event, onEvent)
        this.stream.removeEventListener('close', onClose)
        signal?.removeEventListener('abort', onAbort)
        if (err === undefined) resolve()
        else reject(err)
      }
      const onEvent = (): void => { done() }
      const onClose = (): void => { done(this.failure ?? new ChannelClosedError('channel closed while waiting to write')) }
      const onAbort = (): void => {
        done(signal?.reason)
        this.abort(signal?.reason instanceof Error ? signal.reason : new Error('aborted'))
      }
      this.stream.addEventListener(event, onEvent)
      this.stream.addEventListener('close', onClose)
      signal?.addEventListener('abort', onAbort)
    })
  }
}

/**
 * Queues a stream's messages and pauses the stream while the queue is above `highWater` (yamux
 * then withholds window updates, which stops the sender), resuming below a quarter of it.
 */
class PausingReader {
  ended: boolean
  closedWithError = false
  private discarding = false
  private readonly queue: Uint8Array[] = []
  private queued = 0
  private paused = false
  private wake: (() => void) | undefined

  private readonly onMessage = (evt: StreamMessageEvent): void => {
    if (this.discarding) return
    const data = evt.data
    if (data instanceof Uint8Array) this.push(data)
    else for (const buf of data) this.push(buf)
    if (this.queued >= this.highWater && !this.paused) {
      this.paused = true
      // Not synchronously: this may run inside stream.resume(), which ends by re-opening the yamux
      // window (sendResume) and would undo a pause made here, letting the read buffer overflow.
      queueMicrotask(() => { if (this.paused && this.stream.readStatus === 'readable') this.stream.pause() })
    }
    this.notify()
  }

  /** 'end' also fires on a reset or abort (before 'close'): the status tells them apart. */
  private readonly onEnd = (): void => {
    if (this.stream.status === 'reset' || this.stream.status === 'aborted') this.closedWithError = true
    this.ended = true
    this.notify()
  }
  /** A clean close with nothing left in the stream's buffer also means no more data will come. */
  private readonly onClose = (evt: StreamCloseEvent): void => {
    if (evt.error !== undefined) this.closedWithError = true
    else if (this.stream.readBufferLength === 0) this.ended = true
    this.notify()
  }

  constructor (private readonly stream: Stream, private readonly highWater: number) {
    this.ended = stream.readableEnded
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('end', this.onEnd)
    stream.addEventListener('close', this.onClose)
  }

  take (): Uint8Array | undefined {
    const chunk = this.queue.shift()
    if (chunk === undefined) return undefined
    this.queued -= chunk.byteLength
    if (this.paused && this.queued <= this.highWater / 4) this.resume()
    return chunk
  }

  async wait (signal?: AbortSignal): Promise<void> {
    await new Promise<void>(resolve => {
      const onAbort = (): void => { this.notify() }
      this.wake = () => { signal?.removeEventListener('abort', onAbort); resolve() }
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /**
   * The consumer stopped reading: drop what is queued and whatever still arrives, so the remote is
   * never stalled by a channel nobody reads (the listener stays until the stream closes).
   */
  discard (): void {
    this.discarding = true
    this.queue.length = 0
    this.queued = 0
    if (this.paused) this.resume()
  }

  private push (buf: Uint8Array): void {
    if (buf.byteLength === 0) return
    this.queue.push(buf)
    this.queued += buf.byteLength
  }

  private resume (): void {
    this.paused = false
    try {
      if (this.stream.readStatus === 'paused') this.stream.resume()
    } catch (err) {
      // The stream closed meanwhile: its 'close' event already ended this reader.
      this.stream.log?.('bulk channel resume failed: %s', (err as Error).message)
    }
  }

  private notify (): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }
}
