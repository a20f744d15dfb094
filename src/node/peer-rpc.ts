/**
 * PeerRpc over libp2p: calls to a node share one long-lived stream (`/ssi/rpc-mux/1`, rpc-mux.ts);
 * `/ssi/rpc/1`, one stream per call, is still served and used with nodes that lack the former.
 * On `/ssi/rpc/1`, length-prefixed msgpack frames:
 * Request {v, method, params}; then zero or more {t:'event'} frames and one {t:'result'|'error'}.
 * Frames are size-limited and validated before use; a misbehaving peer gets an error and its
 * stream reset, never a crashed daemon.
 */
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import { z } from 'zod'
import { decodeWith, encodeMessage, PEER_PROTOCOL_VERSION } from '../protocol/peer.js'
import { NodeUnavailableError, PeerCallError } from '../ssi/ports.js'
import { RPC_MUX_PROTOCOL, RpcChannel, serveMux } from './rpc-mux.js'
import type { NodeHost } from './host.js'
import type { Logger } from './logger.js'
import type { PeerCallOptions, PeerHandler, PeerHandlerContext, PeerRpc, PeerStreamOptions } from '../ssi/ports.js'
import type { Connection, Stream } from '@libp2p/interface'

export const RPC_PROTOCOL = '/ssi/rpc/1'
/** Largest RPC frame: control messages only; bulk data (images) uses its own protocol. */
export const MAX_RPC_FRAME = 4 * 1024 * 1024

const requestSchema = z.object({ v: z.literal(PEER_PROTOCOL_VERSION), method: z.string().max(64), params: z.unknown() }).strict()
const replySchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('event'), event: z.unknown() }),
  z.object({ t: z.literal('result'), result: z.unknown() }),
  z.object({ t: z.literal('error'), name: z.string().max(128), message: z.string().max(8192) })
])

export interface PeerRpcInit {
  readonly host: NodeHost
  readonly selfName: string
  /** Resolves a node name to its current PeerId string, or undefined if unknown. */
  readonly peerOf: (node: string) => string | undefined
  /** Resolves a PeerId string to a node name, or undefined for a peer that never sent a heartbeat. */
  readonly nodeOf: (peerId: string) => string | undefined
  readonly logger: Logger
  readonly defaultTimeoutMs?: number
  /** Aborted when the daemon stops: every handler's signal follows it. */
  readonly shutdown: AbortSignal
}

export class Libp2pPeerRpc implements PeerRpc {
  private readonly handlers = new Map<string, PeerHandler>()
  /** One multiplexed stream per peer (by PeerId), shared by every call to it. */
  private readonly channels = new Map<string, Promise<RpcChannel>>()

  constructor (private readonly init: PeerRpcInit) {}

  async start (): Promise<void> {
    await this.init.host.handle(RPC_PROTOCOL, (stream, connection) => { void this.serve(stream, connection) }, { maxInboundStreams: 1024, maxOutboundStreams: 1024 })
    await this.init.host.handle(RPC_MUX_PROTOCOL, (stream, connection) => {
      const peer = connection.remotePeer.toString()
      const fromNode = (): string => this.init.nodeOf(peer) ?? peer
      void serveMux({ stream, fromNode, handlers: this.handlers, shutdown: this.init.shutdown, logger: this.init.logger, maxFrame: MAX_RPC_FRAME })
    }, { maxInboundStreams: 64, maxOutboundStreams: 64 })
  }

  handle (method: string, handler: PeerHandler): void {
    this.handlers.set(method, handler)
  }

  async call (node: string, method: string, params: unknown, opts: PeerCallOptions = {}): Promise<unknown> {
    return await this.stream(node, method, params, { ...opts, onEvent: () => {} })
  }

  async stream (node: string, method: string, params: unknown, opts: PeerStreamOptions): Promise<unknown> {
    const signal = this.callSignal(opts)
    if (node === this.init.selfName) return await this.callLocal(method, params, opts.onEvent, signal)
    const peer = this.init.peerOf(node)
    if (peer === undefined) throw new NodeUnavailableError(`node ${node} is not a known live member of the cluster`)
    const channel = await this.channel(node, peer, signal)
    if (channel !== undefined) return await channel.call(method, params, opts.onEvent, signal)
    return await this.callOnOwnStream(node, peer, method, params, opts.onEvent, signal)
  }

  /**
   * The multiplexed stream to `peer`, opened on first use and again after it closed; undefined if
   * the peer does not speak the protocol (an older node: one stream per call then).
   */
  private async channel (node: string, peer: string, signal: AbortSignal): Promise<RpcChannel | undefined> {
    const known = this.channels.get(peer)
    if (known !== undefined) {
      const ch = await known.catch(() => undefined)
      if (ch?.open === true) return ch
      if (this.channels.get(peer) === known) this.channels.delete(peer)
    }
    // Shared by every call to the peer, so not bound to this call's signal.
    const opening = this.openChannel(node, peer)
    this.channels.set(peer, opening)
    opening.catch(() => { if (this.channels.get(peer) === opening) this.channels.delete(peer) })
    try {
      return await raceSignal(opening, signal)
    } catch (err) {
      if ((err as Error).name === 'UnsupportedProtocolError') return undefined
      if (signal.aborted) throw err
      throw new NodeUnavailableError(`cannot reach node ${node}: ${(err as Error).message}`, { cause: err })
    }
  }

  private async openChannel (node: string, peer: string): Promise<RpcChannel> {
    const signal = AbortSignal.any([this.init.shutdown, AbortSignal.timeout(this.init.defaultTimeoutMs ?? 30_000)])
    const stream = await this.init.host.dialProtocol(peerIdFromString(peer), RPC_MUX_PROTOCOL, { signal })
    return new RpcChannel(stream, node, MAX_RPC_FRAME)
  }

  private async callOnOwnStream (node: string, peer: string, method: string, params: unknown, onEvent: PeerStreamOptions['onEvent'], signal: AbortSignal): Promise<unknown> {
    let stream: Stream
    try {
      stream = await this.init.host.dialProtocol(peerIdFromString(peer), RPC_PROTOCOL, { signal })
    } catch (err) {
      throw new NodeUnavailableError(`cannot reach node ${node}: ${(err as Error).message}`, { cause: err })
    }
    try {
      return await this.exchange(stream, node, method, params, onEvent, signal)
    } finally {
      if (stream.status === 'open') stream.abort(new Error('call finished'))
    }
  }

  private callSignal (opts: PeerCallOptions): AbortSignal {
    const signals = [AbortSignal.timeout(opts.timeoutMs ?? this.init.defaultTimeoutMs ?? 30_000), this.init.shutdown]
    if (opts.signal !== undefined) signals.push(opts.signal)
    return AbortSignal.any(signals)
  }

  private async exchange (stream: Stream, node: string, method: string, params: unknown, onEvent: PeerStreamOptions['onEvent'], signal: AbortSignal): Promise<unknown> {
    const lp = lpStream(stream, { maxDataLength: MAX_RPC_FRAME })
    await lp.write(encodeMessage({ v: PEER_PROTOCOL_VERSION, method, params }), { signal })
    for (;;) {
      let frame
      try {
        frame = await lp.read({ signal })
      } catch (err) {
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('call aborted', { cause: err })
        throw new NodeUnavailableError(`node ${node} closed the call ${method}: ${(err as Error).message}`, { cause: err })
      }
      const reply = decodeWith(replySchema, frame.subarray(), MAX_RPC_FRAME, `${method} reply from ${node}`)
      if (reply.t === 'event') await onEvent(reply.event)
      else if (reply.t === 'result') return reply.result
      else throw new PeerCallError(reply.message, reply.name, node)
    }
  }

  private async callLocal (method: string, params: unknown, onEvent: PeerStreamOptions['onEvent'], signal: AbortSignal): Promise<unknown> {
    const handler = this.handlers.get(method)
    if (handler === undefined) throw new PeerCallError(`unknown peer method ${method}`, 'UnknownMethodError', this.init.selfName)
    const ctx: PeerHandlerContext = { fromNode: this.init.selfName, signal, emit: async (e) => { await onEvent(e) } }
    try {
      // Round-trip through msgpack so local and remote calls see identical values.
      return decodeWith(z.unknown(), encodeMessage(await handler(params, ctx)), Infinity, 'result')
    } catch (err) {
      const e = err as Error
      throw new PeerCallError(e.message, e.name, this.init.selfName, { cause: err })
    }
  }

  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const fromNode = this.init.nodeOf(connection.remotePeer.toString()) ?? connection.remotePeer.toString()
    const lp = lpStream(stream, { maxDataLength: MAX_RPC_FRAME })
    const ac = new AbortController()
    const signal = AbortSignal.any([ac.signal, this.init.shutdown])
    stream.addEventListener('close', () => { ac.abort(new Error('caller went away')) })
    const send = async (msg: unknown): Promise<void> => { await lp.write(encodeMessage(msg), { signal }) }
    let reply: unknown
    try {
      const req = decodeWith(requestSchema, (await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray(), MAX_RPC_FRAME, 'rpc request')
      const handler = this.handlers.get(req.method)
      if (handler === undefined) throw Object.assign(new Error(`unknown peer method ${req.method}`), { name: 'UnknownMethodError' })
      const result = await handler(req.params, { fromNode, signal, emit: async (event) => { await send({ t: 'event', event }) } })
      reply = { t: 'result', result }
    } catch (err) {
      const e = err as Error
      this.init.logger.debug({ err: e.message, fromNode }, 'peer call failed')
      reply = { t: 'error', name: e.name ?? 'Error', message: String(e.message).slice(0, 8000) }
    }
    try {
      await send(reply)
      await stream.close({ signal: AbortSignal.timeout(5000) })
    } catch (err) {
      stream.abort(err as Error)
    }
  }
}

/** Resolves or rejects like `p`, or rejects when `signal` aborts first (p keeps running). */
async function raceSignal<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => {
      onAbort = () => { reject(signal.reason instanceof Error ? signal.reason : new Error('call aborted')) }
      signal.addEventListener('abort', onAbort, { once: true })
    })])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}
