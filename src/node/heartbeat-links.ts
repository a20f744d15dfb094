/**
 * Heartbeat links: one long-lived outbound stream to every connected peer on the cluster's heartbeat
 * protocol (`/ssi/<cluster>/heartbeat/<v>`), carrying length-prefixed, size-limited frames. Replaces
 * gossipsub for membership: a heartbeat costs one small write per peer instead of a signed gossip
 * message plus gossipsub's own heartbeat (together ~0.7 % of a core per heartbeat/s), and the
 * sender's identity is the Noise-authenticated connection's PeerId.
 *
 * Concurrency: a link writes at most one frame at a time; while a write waits (a hung peer stops
 * reading), newer frames for that peer are dropped: heartbeats are idempotent and only the latest
 * matters. A link that fails is forgotten and reopened at the next broadcast while connected.
 */
import { lpStream } from '@libp2p/utils'
import type { Logger } from './logger.js'
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { LengthPrefixedStream } from '@libp2p/utils'

export interface HeartbeatLinksInit {
  readonly host: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol' | 'getConnections' | 'addEventListener' | 'removeEventListener'>
  /** The protocol id, e.g. `/ssi/<cluster>/heartbeat/1`. */
  readonly protocol: string
  /** Largest frame accepted; a longer one resets the stream. */
  readonly maxFrameBytes: number
  /** ms an outbound link may take to open. */
  readonly openTimeoutMs: number
  /** Called for every received frame (not yet validated) with the sender's authenticated PeerId. */
  readonly onFrame: (frame: Uint8Array, from: PeerId) => void
  /** Called when a new outbound link opened: the peer has not heard from us on it yet. */
  readonly onLinked: (peer: PeerId) => void
  readonly logger: Pick<Logger, 'debug'>
}

interface Link {
  readonly stream: Stream
  readonly lp: LengthPrefixedStream<Stream>
  writing: boolean
}

export class HeartbeatLinks {
  private readonly links = new Map<string, Link>()
  private readonly opening = new Set<string>()
  private readonly inbound = new Set<Stream>()
  private readonly stopping = new AbortController()
  private started = false

  constructor (private readonly init: HeartbeatLinksInit) {}

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await this.init.host.handle(this.init.protocol, (stream, connection) => { void this.serve(stream, connection) }, {
      // One link per direction and peer; a few more cover a link being replaced.
      maxInboundStreams: 4, maxOutboundStreams: 4, force: true
    })
    this.init.host.addEventListener('connection:open', this.onConnection)
    for (const conn of this.init.host.getConnections()) this.open(conn.remotePeer)
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.stopping.abort(new Error('heartbeat links stopping'))
    this.init.host.removeEventListener('connection:open', this.onConnection)
    for (const link of this.links.values()) link.stream.abort(new Error('heartbeat links stopping'))
    for (const stream of this.inbound) stream.abort(new Error('heartbeat links stopping'))
    this.links.clear()
    await this.init.host.unhandle(this.init.protocol).catch(() => {})
  }

  /** Sends `frame` on every link, opening links to connected peers that have none. */
  broadcast (frame: Uint8Array): void {
    if (!this.started) return
    for (const conn of this.init.host.getConnections()) {
      const key = conn.remotePeer.toString()
      const link = this.links.get(key)
      if (link === undefined) this.open(conn.remotePeer)
      else this.send(key, link, frame)
    }
  }

  private readonly onConnection = (evt: CustomEvent<Connection>): void => { this.open(evt.detail.remotePeer) }

  private send (key: string, link: Link, frame: Uint8Array): void {
    if (link.writing) return
    link.writing = true
    link.lp.write(frame, { signal: this.stopping.signal }).then(() => { link.writing = false }, (err: Error) => {
      this.drop(key, link, err)
    })
  }

  private open (peer: PeerId): void {
    const key = peer.toString()
    if (!this.started || this.links.has(key) || this.opening.has(key)) return
    this.opening.add(key)
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.init.openTimeoutMs)])
    this.init.host.dialProtocol(peer, this.init.protocol, { signal }).then(stream => {
      if (!this.started) { stream.abort(new Error('heartbeat links stopping')); return }
      const link: Link = { stream, lp: lpStream(stream, { maxDataLength: this.init.maxFrameBytes }), writing: false }
      this.links.set(key, link)
      stream.addEventListener('close', () => { if (this.links.get(key) === link) this.links.delete(key) }, { once: true })
      this.init.onLinked(peer)
    }, (err: Error) => {
      this.init.logger.debug({ peer: key, err: err.message }, 'heartbeat link could not be opened')
    }).finally(() => { this.opening.delete(key) })
  }

  private drop (key: string, link: Link, err: Error): void {
    if (this.links.get(key) === link) this.links.delete(key)
    if (link.stream.status === 'open') link.stream.abort(err)
    this.init.logger.debug({ peer: key, err: err.message }, 'heartbeat link dropped')
  }

  /** Reads frames from a peer's link until it closes; an oversized frame resets it. */
  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: this.init.maxFrameBytes })
    this.inbound.add(stream)
    try {
      for (;;) {
        const frame = await lp.read({ signal: this.stopping.signal })
        this.init.onFrame(frame.subarray(), connection.remotePeer)
      }
    } catch (err) {
      this.init.logger.debug({ peer: connection.remotePeer.toString(), err: (err as Error).message }, 'inbound heartbeat link ended')
      if (stream.status === 'open') stream.abort(err as Error)
    } finally {
      this.inbound.delete(stream)
    }
  }
}
