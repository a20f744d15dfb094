/**
 * Carries CRIU's page-server TCP connection between two nodes over an authenticated ByteChannel
 * (libp2p), so post-copy page traffic never uses a raw TCP port between hosts: on each node CRIU
 * talks to 127.0.0.1 only.
 *
 *   source: criu dump --lazy-pages (listens on 127.0.0.1:P) <- connectLoopback(P) <-+
 *                                                                                  | bridge()
 *   target: criu lazy-pages --page-server 127.0.0.1:Q -> listenLoopbackOnce() -> Q -+  over the channel
 *
 * Both loopback ends accept a single connection, and the listening one only from root (the uid
 * criu runs as), so another local user cannot take the page stream.
 */
import { createServer, connect } from 'node:net'
import type { Server, Socket } from 'node:net'
import { readFile } from 'node:fs/promises'
import type { ByteChannel } from './ports.js'

export class PageBridgeError extends Error {
  static override name = 'PageBridgeError'
  override name = 'PageBridgeError'
}

export interface BridgeStats {
  /** Bytes from the socket into the channel. */
  readonly sent: number
  /** Bytes from the channel into the socket. */
  readonly received: number
}

async function pumpSocketToChannel (socket: Socket, channel: ByteChannel, count: (n: number) => void, signal: AbortSignal): Promise<void> {
  for await (const chunk of socket as AsyncIterable<Buffer>) {
    count(chunk.byteLength)
    await channel.write(chunk, signal)
  }
  await channel.closeWrite(signal)
}

/**
 * The channel may reuse a chunk's buffer once the next one is asked for (1 MiB records of pages,
 * without an allocation each), so each write is waited for until the socket has taken all of it.
 */
async function pumpChannelToSocket (channel: ByteChannel, socket: Socket, count: (n: number) => void, signal: AbortSignal): Promise<void> {
  for await (const chunk of channel.read(signal, { reuse: true })) {
    count(chunk.byteLength)
    await new Promise<void>((resolve, reject) => {
      const onClose = (): void => { reject(new PageBridgeError('page-server socket closed while writing')) }
      socket.once('close', onClose)
      socket.write(chunk, (err) => {
        socket.off('close', onClose)
        if (err == null) resolve()
        else reject(new PageBridgeError(`writing to the page-server socket failed: ${err.message}`, { cause: err }))
      })
    })
  }
  socket.end()
}

export interface BridgeOptions {
  /** Running totals. */
  readonly onBytes?: (stats: BridgeStats) => void
  /**
   * Runs on an error before the socket is closed. CRIU's page server takes an EOF as "the target
   * has every page" and then kills the dumped tree: the source must kill CRIU first.
   */
  readonly beforeTeardown?: () => Promise<void>
}

/**
 * Copies bytes both ways between `socket` and `channel` until both directions have ended; each
 * end's half-close is passed on. Any error tears both down.
 */
export async function bridge (socket: Socket, channel: ByteChannel, signal: AbortSignal, opts: BridgeOptions = {}): Promise<BridgeStats> {
  const { onBytes } = opts
  const stats = { sent: 0, received: 0 }
  const report = (): void => { onBytes?.({ ...stats }) }
  const onAbort = (): void => { void (opts.beforeTeardown?.() ?? Promise.resolve()).catch(() => {}).finally(() => { socket.destroy() }) }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    await Promise.all([
      pumpSocketToChannel(socket, channel, n => { stats.sent += n; report() }, signal),
      pumpChannelToSocket(channel, socket, n => { stats.received += n; report() }, signal)
    ])
    return stats
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err))
    channel.abort(e)
    await opts.beforeTeardown?.().catch(() => {})
    socket.destroy()
    throw new PageBridgeError(`page transfer broke after ${stats.sent + stats.received} bytes: ${e.message}`, { cause: err })
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** Connects to a loopback port (CRIU's page server); half-open so each direction ends on its own. */
export async function connectLoopback (port: number, signal: AbortSignal): Promise<Socket> {
  signal.throwIfAborted()
  return await new Promise<Socket>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true })
    const onAbort = (): void => { socket.destroy(); reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once('connect', () => { signal.removeEventListener('abort', onAbort); resolve(socket) })
    socket.once('error', (err) => { signal.removeEventListener('abort', onAbort); reject(new PageBridgeError(`cannot connect to 127.0.0.1:${port}: ${err.message}`, { cause: err })) })
  })
}

/** The uid owning the loopback TCP connection from `remotePort` to `localPort`, from /proc/net/tcp. */
export async function loopbackPeerUid (localPort: number, remotePort: number): Promise<number | undefined> {
  const text = await readFile('/proc/net/tcp', 'utf8').catch(() => '')
  const hex = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0')
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/)
    if (cols[1]?.endsWith(`:${hex(remotePort)}`) === true && cols[2]?.endsWith(`:${hex(localPort)}`) === true) return Number(cols[7])
  }
  return undefined
}

export interface LoopbackListener {
  readonly port: number
  /** The one accepted connection (from uid `allowUid`); rejects if the signal aborts first. */
  readonly accepted: Promise<Socket>
  close (): void
}

/** Listens on 127.0.0.1 (a free port) for exactly one connection from `allowUid` (default root). */
export async function listenLoopbackOnce (signal: AbortSignal, allowUid = 0): Promise<LoopbackListener> {
  signal.throwIfAborted()
  let server: Server | undefined
  const accepted = new Promise<Socket>((resolve, reject) => {
    server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      void (async () => {
        const uid = await loopbackPeerUid(socket.localPort ?? 0, socket.remotePort ?? 0)
        if (uid !== allowUid) { socket.destroy(); return } // not criu: keep waiting for it
        server?.close()
        resolve(socket)
      })()
    })
    signal.addEventListener('abort', () => { server?.close(); reject(signal.reason) }, { once: true })
  })
  accepted.catch(() => {})
  const srv = server as unknown as Server
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => { srv.off('error', reject); resolve() })
  })
  const address = srv.address()
  if (address === null || typeof address === 'string') throw new PageBridgeError('loopback listener has no port')
  return { port: address.port, accepted, close: () => { srv.close() } }
}

/** A free loopback TCP port right now (for a CRIU page server to listen on). */
export async function freeLoopbackPort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>((resolve, reject) => { srv.once('error', reject); srv.listen(0, '127.0.0.1', resolve) })
  const address = srv.address()
  await new Promise<void>((resolve) => { srv.close(() => { resolve() }) })
  if (address === null || typeof address === 'string') throw new PageBridgeError('no free loopback port')
  return address.port
}
