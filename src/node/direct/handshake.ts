/**
 * Negotiates a direct bulk connection over a libp2p stream that the peers opened on
 * `<protocol>/direct/1` (Noise-encrypted, bound to the peer's key and the cluster prologue):
 *
 *   listener → dialer   OFFER    { port (0: no direct path), token, dialerKey, listenerKey }
 *   dialer   → listener STATUS   { connected: true } after its TCP connect and HELLO, or { fallback }
 *   listener → dialer   DECISION { direct }: true once the dialer's HELLO authenticated on a TCP
 *                                 connection to `port`, false otherwise
 *
 * With `direct` both ends use the TCP connection (./channel.ts) and close the stream; without it
 * they go on with the stream itself, so a firewall or a missing route costs a few seconds, never
 * the transfer. Fresh random keys and token per channel: nothing is reused across transfers.
 */
import { randomBytes } from 'node:crypto'
import { Socket as NetSocket, createServer, connect } from 'node:net'
import { lpStream } from '@libp2p/utils'
import { z } from 'zod'
import { decodeWith, encodeMessage } from '../../protocol/peer.js'
import { DirectByteChannel } from './channel.js'
import { SocketReads } from '../../migration/socket-reads.js'
import { KEY_BYTES, TOKEN_BYTES } from './records.js'
import type { Server, Socket, SocketConstructorOpts } from 'node:net'
import type { DirectKeys } from './channel.js'
import type { Stream } from '@libp2p/interface'
import type { LengthPrefixedStream } from '@libp2p/utils'

export const DIRECT_SUFFIX = '/direct/1'
/** Handshake messages are tiny; anything larger is refused. */
const MAX_MESSAGE = 1024
/** How long each step may take before the handshake gives up (the dialer's TCP connect: CONNECT_MS). */
const STEP_MS = 10_000
const CONNECT_MS = 3000
/** How long the listener waits for the HELLO of a dialer that says it connected. */
const HELLO_MS = 5000
/** Strangers connecting to the one-time port at once: more are dropped unread. */
const MAX_PENDING = 8

const bytes = (n: number): z.ZodType<Uint8Array> => z.instanceof(Uint8Array).refine(b => b.byteLength === n, `must be ${n} bytes`)
const offerSchema = z.object({
  v: z.literal(1), port: z.number().int().min(0).max(65535), token: bytes(TOKEN_BYTES), dialerKey: bytes(KEY_BYTES), listenerKey: bytes(KEY_BYTES)
}).strict()
const statusSchema = z.union([z.object({ connected: z.literal(true) }).strict(), z.object({ fallback: z.string().max(512) }).strict()])
const decisionSchema = z.object({ direct: z.boolean() }).strict()

type Lp = LengthPrefixedStream<Stream>
export type DirectResult = { readonly kind: 'direct', readonly channel: DirectByteChannel } | { readonly kind: 'stream', readonly stream: Stream }

async function readMessage<T> (lp: Lp, schema: z.ZodType<T>, what: string, signal: AbortSignal): Promise<T> {
  const msg = await lp.read({ signal: AbortSignal.any([signal, AbortSignal.timeout(STEP_MS)]) })
  return decodeWith(schema, msg.subarray(), MAX_MESSAGE, what)
}

/** The listening end (the stream's handler). Binds a one-time TCP port on `bindHost`. */
export async function acceptDirect (stream: Stream, bindHost: string | undefined, signal: AbortSignal): Promise<DirectResult> {
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE })
  const token = randomBytes(TOKEN_BYTES)
  const dialerKey = randomBytes(KEY_BYTES)
  const listenerKey = randomBytes(KEY_BYTES)
  const server = bindHost === undefined ? undefined : await listenOnce(bindHost).catch(() => undefined)
  try {
    const port = server === undefined ? 0 : (server.address() as { port: number }).port
    await lp.write(encodeMessage({ v: 1, port, token, dialerKey, listenerKey }), { signal })
    const channel = server === undefined ? undefined : await awaitDialer(lp, server, { send: listenerKey, receive: dialerKey, token }, signal)
    try {
      await lp.write(encodeMessage({ direct: channel !== undefined }), { signal })
    } catch (err) {
      channel?.abort(err as Error)
      throw err
    }
    return finish(lp, stream, channel)
  } finally {
    server?.close()
  }
}

/**
 * Reads the dialer's status and, if it connected, waits (HELLO_MS at most) for its HELLO on the
 * one-time port; strangers there are refused all along. Undefined: go on over the stream.
 */
async function awaitDialer (lp: Lp, server: Server, keys: DirectKeys, signal: AbortSignal): Promise<DirectByteChannel | undefined> {
  const stop = new AbortController()
  const accepted = acceptAuthenticated(server, keys, AbortSignal.any([signal, stop.signal]))
  let timer: NodeJS.Timeout | undefined
  let chosen: DirectByteChannel | undefined
  try {
    const status = await readMessage(lp, statusSchema, 'direct status', signal)
    if (!('connected' in status)) return undefined
    timer = setTimeout(() => { stop.abort() }, HELLO_MS)
    chosen = await accepted
    return chosen
  } finally {
    clearTimeout(timer)
    stop.abort()
    // Refused or failed: a connection that authenticated meanwhile is not used.
    void accepted.then(c => { if (c !== chosen) c?.abort(new Error('the direct handshake did not choose this connection')) })
  }
}

/** The dialing end: `remoteHost` is the IP the libp2p connection reached the peer at. */
export async function connectDirect (stream: Stream, remoteHost: string | undefined, signal: AbortSignal): Promise<DirectResult> {
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE })
  const offer = await readMessage(lp, offerSchema, 'direct offer', signal)
  let channel: DirectByteChannel | undefined
  if (offer.port !== 0) {
    try {
      if (remoteHost === undefined) throw new Error('the connection has no IP address')
      const reads = new SocketReads()
      const socket = await connectTcp(remoteHost, offer.port, reads, AbortSignal.any([signal, AbortSignal.timeout(CONNECT_MS)]))
      channel = new DirectByteChannel(socket, { send: offer.dialerKey, receive: offer.listenerKey, token: offer.token }, 'dialer', reads)
      await lp.write(encodeMessage({ connected: true }), { signal })
    } catch (err) {
      signal.throwIfAborted()
      channel?.abort(err as Error)
      channel = undefined
      await lp.write(encodeMessage({ fallback: (err as Error).message.slice(0, 500) }), { signal })
    }
  }
  const decision = await readMessage(lp, decisionSchema, 'direct decision', signal)
  if (!decision.direct) {
    channel?.abort(new Error('the listener chose libp2p'))
    channel = undefined
  } else if (channel === undefined) {
    throw new Error('the listener chose a direct connection that this end does not have')
  }
  return finish(lp, stream, channel)
}

/** Hands the stream back (with any unread bytes) or, on a direct connection, closes it. */
function finish (lp: Lp, stream: Stream, channel: DirectByteChannel | undefined): DirectResult {
  const raw = lp.unwrap()
  if (channel === undefined) return { kind: 'stream', stream: raw }
  raw.close().catch((err: unknown) => { raw.abort(err as Error) })
  return { kind: 'direct', channel }
}

async function listenOnce (host: string): Promise<Server> {
  // Paused: each connection's handle moves to a socket that reads into one reused buffer (withReads).
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true })
  server.maxConnections = MAX_PENDING
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host, port: 0, backlog: MAX_PENDING }, () => { server.off('error', reject); resolve() })
  })
  return server
}

/**
 * The first connection whose HELLO authenticates under the offered keys, or undefined when the
 * signal ends the wait. Every other connection is dropped.
 */
async function acceptAuthenticated (server: Server, keys: DirectKeys, signal: AbortSignal): Promise<DirectByteChannel | undefined> {
  return await new Promise(resolve => {
    let winner: DirectByteChannel | undefined
    const pending = new Set<DirectByteChannel>()
    const done = (c: DirectByteChannel | undefined): void => {
      server.off('connection', onConnection)
      // Connections the kernel accepted before close() still arrive: drop them.
      server.on('connection', (late: Socket) => { late.destroy() })
      signal.removeEventListener('abort', onAbort)
      for (const p of pending) if (p !== c) p.abort(new Error('another connection won'))
      server.close()
      resolve(c)
    }
    const onAbort = (): void => { if (winner === undefined) done(undefined) }
    const onConnection = (accepted: Socket): void => {
      const { socket, reads } = withReads(accepted)
      const channel = new DirectByteChannel(socket, keys, 'listener', reads)
      pending.add(channel)
      channel.authenticated(signal).then(() => {
        if (winner !== undefined) return
        winner = channel
        done(channel)
      }, () => { pending.delete(channel); channel.abort(new Error('not authenticated')) })
    }
    server.on('connection', onConnection)
    signal.addEventListener('abort', onAbort, { once: true })
    if (signal.aborted) onAbort()
  })
}

/**
 * An accepted (paused) connection as a socket reading into one reused buffer. Node offers `onread`
 * only to sockets it constructs, so the accepted socket's handle moves to a new one (its private
 * `_handle`: checked on Node 20, 22 and 24 by test/unit/direct-channel.test.ts). Where that is not
 * possible, the accepted socket itself, reading as usual.
 */
export function withReads (accepted: Socket): { socket: Socket, reads?: SocketReads } {
  const internal = accepted as unknown as { _handle?: object | null }
  const handle = internal._handle
  if (handle === undefined || handle === null) {
    accepted.resume()
    return { socket: accepted }
  }
  const reads = new SocketReads()
  internal._handle = null
  // Destroying the handle-less shell only updates the server's connection count.
  accepted.destroy()
  const socket = new NetSocket({ handle, onread: reads.onread, allowHalfOpen: true, readable: true, writable: true } as unknown as SocketConstructorOpts)
  return { socket, reads }
}

async function connectTcp (host: string, port: number, reads: SocketReads, signal: AbortSignal): Promise<Socket> {
  return await new Promise((resolve, reject) => {
    const socket = connect({ host, port, allowHalfOpen: true, noDelay: true, onread: reads.onread })
    const onAbort = (): void => { socket.destroy(); reject(new Error(`direct connection to ${host}:${port} timed out`)) }
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once('connect', () => { signal.removeEventListener('abort', onAbort); socket.off('error', reject); resolve(socket) })
    socket.once('error', (err) => { signal.removeEventListener('abort', onAbort); reject(err) })
  })
}
