/**
 * Fuzzes direct bulk connections (src/node/direct/): the record opener with >= 20,000 mutated
 * record streams (bit flips, truncations, junk, replays, wrong keys, huge lengths), and a listening
 * transport with mutated handshake messages and strangers on its one-time TCP port. The opener may
 * only ever release records that were sealed under its key, in order; anything else is a
 * DirectRecordError. The listener must refuse every stranger and bad message without hanging, hand
 * its handler nothing unauthenticated, and still serve a real peer afterwards.
 */
import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Libp2pBulkTransport } from '../../src/node/bulk-transport.js'
import { DirectByteChannel } from '../../src/node/direct/channel.js'
import { DIRECT_SUFFIX } from '../../src/node/direct/handshake.js'
import { DirectRecordError, RecordOpener, RecordSealer, RecordType } from '../../src/node/direct/records.js'
import { createNodeHost } from '../../src/node/host.js'
import { clusterPrologue } from '../../src/node/identity.js'
import { decodeWith } from '../../src/protocol/peer.js'
import { fuzzSeed, mutate, pack, Rng } from './mutate.js'
import type { RecordCrypto, RecordTypeValue } from '../../src/node/direct/records.js'
import type { NodeHost } from '../../src/node/host.js'
import { z } from 'zod'

const seed = fuzzSeed()
const PROTOCOL = '/ssi/test-direct-fuzz/1'

interface Sealed { readonly type: RecordTypeValue, readonly payload: Buffer }

/** Both implementations (native EVP and node:crypto), chosen per stream and per end: same bytes. */
const CRYPTO: RecordCrypto[] = ['native', 'node']

function sealAll (key: Buffer, records: Sealed[], crypto?: RecordCrypto): Buffer {
  const sealer = new RecordSealer(key, crypto)
  return Buffer.concat(records.flatMap(r => sealer.seal(r.type, r.payload)))
}

/**
 * Feeds `bytes` in random slices; returns the records opened before the first error (if any). Half
 * the openers assemble records (as a channel reading into one reused socket buffer does): their
 * slices come through one scratch buffer that is overwritten after each push.
 */
function openAll (rng: Rng, key: Buffer, bytes: Buffer): { opened: Sealed[], error?: unknown } {
  const assembling = rng.int(2) === 0
  const opener = new RecordOpener(key, rng.pick(CRYPTO), assembling ? n => Buffer.allocUnsafe(n) : undefined)
  const scratch = Buffer.allocUnsafe(70_000)
  const opened: Sealed[] = []
  try {
    for (let at = 0; at < bytes.length;) {
      const n = 1 + rng.int(Math.min(bytes.length - at, rng.pick([7, 300, 70_000])))
      const slice = assembling ? scratch.subarray(0, bytes.copy(scratch, 0, at, at + n)) : bytes.subarray(at, at + n)
      for (const r of opener.push(slice)) opened.push({ type: r.type, payload: Buffer.concat(r.payload) })
      if (assembling) slice.fill(0xa5)
      at += n
    }
  } catch (error) {
    return { opened, error }
  }
  return { opened }
}

describe(`direct connection fuzz (FUZZ_SEED=${seed})`, () => {
  it('the record opener releases only the sealed records, in order, from >= 20,000 mutated streams', () => {
    const rng = new Rng(seed)
    const key = randomBytes(32)
    let refused = 0
    for (let i = 0; i < 20_000; i++) {
      const records: Sealed[] = [{ type: RecordType.hello, payload: rng.bytes(32) }]
      for (let n = rng.int(4); n > 0; n--) records.push({ type: RecordType.data, payload: rng.bytes(rng.pick([0, 1, 100, 5000])) })
      records.push({ type: RecordType.end, payload: Buffer.alloc(0) })
      const valid = sealAll(key, records, rng.pick(CRYPTO))
      const variant = rng.int(6)
      const input = variant === 0
        ? sealAll(randomBytes(32), records) // a stranger's key
        : variant === 1
          ? Buffer.concat([valid, valid]) // replayed after itself
          : variant === 2
            ? Buffer.concat([Buffer.from([rng.pick([0, 2, 4, 255]), 0xff, 0xff, 0xff, rng.int(256)]), rng.bytes(rng.int(64))]) // bad type or huge length
            : mutate(rng, valid)
      const { opened, error } = openAll(rng, key, input)
      if (error !== undefined) {
        expect(error).toBeInstanceOf(DirectRecordError)
        refused++
      }
      // Whatever was released is a prefix of what was sealed under this key.
      opened.forEach((r, j) => {
        expect(r.type).toBe(records[j % records.length]?.type)
        expect(r.payload.equals(records[j % records.length]?.payload ?? Buffer.alloc(0))).toBe(true)
      })
      if (variant === 1) { // the replay's first record fails (a push that fails releases nothing)
        expect(error).toBeInstanceOf(DirectRecordError)
        expect(opened.length).toBeLessThanOrEqual(records.length)
      }
    }
    expect(refused).toBeGreaterThan(15_000)
  })
})

describe(`direct listener fuzz (FUZZ_SEED=${seed})`, () => {
  let hosts: NodeHost[] = []
  const shutdown = new AbortController()
  let direct: Libp2pBulkTransport
  const received: Buffer[] = []

  beforeAll(async () => {
    const prologue = clusterPrologue(randomBytes(32), 'direct-fuzz')
    hosts = await Promise.all([0, 1].map(async () => await createNodeHost({ privateKey: await generateKeyPair('Ed25519'), listen: '/ip4/127.0.0.1/tcp/0', prologue, dialTimeoutMs: 5000 })))
    const ids = [hosts[0]!.peerId.toString(), hosts[1]!.peerId.toString()]
    const init = { protocols: [PROTOCOL], bindHost: '127.0.0.1' }
    const listener = new Libp2pBulkTransport({ host: hosts[1]!, peerOf: () => undefined, nodeOf: () => 'a', shutdown: shutdown.signal, direct: init })
    direct = new Libp2pBulkTransport({ host: hosts[0]!, peerOf: () => ids[1], nodeOf: () => 'b', shutdown: shutdown.signal, direct: init })
    await listener.handle(PROTOCOL, async (channel) => {
      for await (const c of channel.read()) received.push(Buffer.from(c))
    })
    await hosts[0]!.dial(hosts[1]!.getMultiaddrs())
  }, 30_000)

  afterAll(async () => {
    shutdown.abort()
    await Promise.all(hosts.map(async h => { await h.stop() }))
  })

  const offerSchema = z.object({ port: z.number(), token: z.instanceof(Uint8Array), dialerKey: z.instanceof(Uint8Array), listenerKey: z.instanceof(Uint8Array) }).passthrough()

  /** Sends `bytes` and a FIN to a TCP port and waits until the listener drops the connection (or 3 s). */
  async function stranger (port: number, bytes: Buffer): Promise<'dropped' | 'timeout'> {
    return await new Promise(resolve => {
      const s = connect({ host: '127.0.0.1', port })
      const timer = setTimeout(() => { s.destroy(); resolve('timeout') }, 3000)
      s.on('error', () => {})
      s.resume() // read (and ignore) what the listener says, so its FIN is seen
      s.on('close', () => { clearTimeout(timer); resolve('dropped') })
      s.on('connect', () => { s.end(bytes) })
    })
  }

  it('refuses strangers on the one-time port and mutated handshake messages, then serves a real peer', async () => {
    const rng = new Rng(seed ^ 0x5eed)
    const peer = hosts[1]!.peerId
    for (let round = 0; round < 40; round++) {
      const stream = await hosts[0]!.dialProtocol(peer, PROTOCOL + DIRECT_SUFFIX, { signal: AbortSignal.timeout(10_000) })
      const lp = lpStream(stream)
      const offer = decodeWith(offerSchema, (await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray(), 1024, 'offer')
      expect(offer.port).toBeGreaterThan(0)
      // Strangers: right token, wrong keys; random bytes; a valid record stream under another key.
      const attempts = [
        sealAll(randomBytes(32), [{ type: RecordType.hello, payload: Buffer.from(offer.token) }]),
        rng.bytes(1 + rng.int(200)),
        mutate(rng, sealAll(Buffer.from(offer.dialerKey), [{ type: RecordType.hello, payload: Buffer.from(offer.token) }])),
        sealAll(Buffer.from(offer.listenerKey), [{ type: RecordType.hello, payload: Buffer.from(offer.token) }]) // the other direction's key
      ]
      const outcomes = await Promise.all(attempts.map(async b => await stranger(offer.port, b)))
      expect(outcomes, `round ${round}: ${JSON.stringify(outcomes)}`).toEqual(['dropped', 'dropped', 'dropped', 'dropped'])
      const status = rng.int(2) === 0 ? mutate(rng, pack({ connected: true })) : pack(rng.pick([{ connected: false }, { fallback: 7 }, { x: 1 }, 'connected', [1]]))
      await lp.write(status).catch(() => {})
      // The listener answers a bad status by resetting the stream, a plausible one with a decision.
      const answer = await lp.read({ signal: AbortSignal.timeout(25_000) }).then(() => 'answered', () => 'reset')
      expect(['answered', 'reset']).toContain(answer)
      stream.abort(new Error('fuzz round done'))
    }
    expect(received.reduce((a, b) => a + b.length, 0)).toBe(0)
    const ch = await direct.open('b', PROTOCOL, AbortSignal.timeout(10_000))
    expect(ch).toBeInstanceOf(DirectByteChannel)
    await ch.write(Buffer.from('real peer'))
    await ch.closeWrite()
    await expect.poll(() => Buffer.concat(received).toString(), { timeout: 10_000 }).toBe('real peer')
  }, 300_000)
})
