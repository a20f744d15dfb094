/**
 * Direct channels reading into one reused socket buffer (src/node/direct/channel.ts SocketReads,
 * handshake.ts withReads): an accepted connection's handle moves to a socket with `onread` (Node's
 * private `_handle`: this file runs on Node 20, 22 and 24 through scripts/test-node-majors.sh),
 * records are assembled into pooled buffers, and a reader that reuses them still gets every byte.
 */
import { createHash, randomBytes } from 'node:crypto'
import { connect, createServer } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { DirectByteChannel } from '../../src/node/direct/channel.js'
import { SocketReads } from '../../src/migration/socket-reads.js'
import { withReads } from '../../src/node/direct/handshake.js'
import type { Server, Socket } from 'node:net'

let server: Server | undefined
afterEach(() => { server?.close() })

/** A listener and a dialer channel over loopback, both reading into reused buffers. */
async function pair (): Promise<{ listener: DirectByteChannel, dialer: DirectByteChannel, listenerReused: boolean }> {
  const keys = { a: randomBytes(32), b: randomBytes(32), token: randomBytes(32) }
  const accepted = new Promise<{ socket: Socket, reads?: SocketReads }>(resolve => {
    server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, s => { resolve(withReads(s)) })
  })
  const port = await new Promise<number>(resolve => { server?.listen(0, '127.0.0.1', () => { resolve((server?.address() as { port: number }).port) }) })
  const reads = new SocketReads()
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true, onread: reads.onread }, () => { resolve(s) })
    s.once('error', reject)
  })
  const dialer = new DirectByteChannel(socket, { send: keys.a, receive: keys.b, token: keys.token }, 'dialer', reads)
  const a = await accepted
  const listener = new DirectByteChannel(a.socket, { send: keys.b, receive: keys.a, token: keys.token }, 'listener', a.reads)
  await Promise.all([listener.authenticated(), dialer.authenticated()])
  return { listener, dialer, listenerReused: a.reads !== undefined }
}

async function sendAll (ch: DirectByteChannel, data: Buffer): Promise<void> {
  for (let at = 0; at < data.byteLength; at += 1024 * 1024 + 5) await ch.write(data.subarray(at, at + 1024 * 1024 + 5))
  await ch.closeWrite()
}

/** Hashes what arrives; with `reuse`, after a pause per chunk so reused buffers would show a mix-up. */
async function digestOf (ch: DirectByteChannel, reuse: boolean): Promise<{ digest: string, bytes: number, buffers: Set<ArrayBufferLike> }> {
  const h = createHash('sha256')
  const buffers = new Set<ArrayBufferLike>()
  let bytes = 0
  for await (const chunk of ch.read(undefined, { reuse })) {
    buffers.add(chunk.buffer)
    if (buffers.size % 7 === 0) await new Promise(resolve => setImmediate(resolve))
    h.update(chunk)
    bytes += chunk.byteLength
  }
  return { digest: h.digest('hex'), bytes, buffers }
}

describe('direct channel with reused read buffers', () => {
  it('an accepted connection moves to a socket reading into one buffer (this Node has the handle to move)', async () => {
    const { listener, dialer, listenerReused } = await pair()
    expect(listenerReused).toBe(true)
    listener.abort(new Error('done'))
    dialer.abort(new Error('done'))
  })

  it('delivers 48 MiB intact both ways; a reusing reader is lent a few pooled buffers, not one per record', async () => {
    const { listener, dialer } = await pair()
    const up = randomBytes(48 * 1024 * 1024)
    const down = randomBytes(20 * 1024 * 1024 + 123)
    const [got, , back] = await Promise.all([digestOf(listener, true), sendAll(dialer, up), digestOf(dialer, false), sendAll(listener, down)])
    expect(got.bytes).toBe(up.byteLength)
    expect(got.digest).toBe(createHash('sha256').update(up).digest('hex'))
    expect(got.buffers.size).toBeLessThan(12) // ~47 records through a pool of a handful
    expect(back.digest).toBe(createHash('sha256').update(down).digest('hex'))
    expect(back.buffers.size).toBeGreaterThan(15) // not reused: a buffer of its own per record
  })
})
