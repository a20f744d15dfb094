/**
 * Image transfer over real libp2p: two hosts (createNodeHost: TCP + noise bound to the cluster key + yamux) in this
 * process on 127.0.0.1 with the same cluster key. A ByteChannel compliance suite runs against the
 * libp2p channel, the direct AES-GCM TCP channel negotiated over it, and the in-memory fake; then
 * whole image dirs travel between the hosts over both, and the direct path's fallbacks are checked.
 */
import { createHash, randomBytes, randomFillSync } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ChannelClosedError } from '../../src/migration/ports.js'
import {
  IMAGES_PROTOCOL, ImageIntegrityError, ImageTransferError, createMemoryChannelPair, receiveImageDir, sendImageDir
} from '../../src/migration/transfer.js'
import { Libp2pBulkTransport, Libp2pByteChannel } from '../../src/node/bulk-transport.js'
import { DirectByteChannel } from '../../src/node/direct/channel.js'
import { createNodeHost } from '../../src/node/host.js'
import { clusterPrologue } from '../../src/node/identity.js'
import { IMAGES_WIRE_VERSION, decodeResult, encodeHeader, FRAME_HEADER_BYTES } from '../../src/protocol/images.js'
import { NodeUnavailableError } from '../../src/ssi/ports.js'
import type { ByteChannel } from '../../src/migration/ports.js'
import type { ReceiveOptions, ReceiveSummary, SendOptions } from '../../src/migration/transfer.js'
import type { NodeHost } from '../../src/node/host.js'

const MiB = 1024 * 1024
const TEST_PROTOCOL = '/ssi/test-bulk/1'
const DIRECT_TEST_PROTOCOL = '/ssi/test-bulk-direct/1'
/** Offered with no bind address (port 0) and with an address the dialer cannot reach. */
const NO_PORT_PROTOCOL = '/ssi/test-no-port/1'
const REFUSED_PROTOCOL = '/ssi/test-refused/1'

let hosts: NodeHost[] = []
/** a: plain libp2p; direct: node a with direct connections; b: the receiving node (direct for images). */
const transports: Record<string, Libp2pBulkTransport> = {}
let root: string
const shutdown = new AbortController()
/** What the receiving node does with the next incoming channel, per protocol. */
const onChannel = new Map<string, (channel: ByteChannel) => Promise<void>>()

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ssi-transfer-it-'))
  const prologue = clusterPrologue(randomBytes(32), 'transfer-test')
  hosts = await Promise.all(['a', 'b'].map(async () => await createNodeHost({
    privateKey: await generateKeyPair('Ed25519'), listen: '/ip4/127.0.0.1/tcp/0', prologue, dialTimeoutMs: 5000
  })))
  const ids: Record<string, string> = { a: hosts[0]!.peerId.toString(), b: hosts[1]!.peerId.toString() }
  const nodeOf = (peer: string): string | undefined => Object.keys(ids).find(n => ids[n] === peer)
  const direct = (protocols: string[], bindHost: string | undefined) => ({ protocols, bindHost })
  const make = (i: number, d?: ReturnType<typeof direct>): Libp2pBulkTransport =>
    new Libp2pBulkTransport({ host: hosts[i]!, peerOf: n => ids[n], nodeOf, shutdown: shutdown.signal, ...(d === undefined ? {} : { direct: d }) })
  transports.a = make(0)
  transports.direct = make(0, direct([DIRECT_TEST_PROTOCOL, IMAGES_PROTOCOL, NO_PORT_PROTOCOL, REFUSED_PROTOCOL], '127.0.0.1'))
  transports.b = make(1, direct([DIRECT_TEST_PROTOCOL, IMAGES_PROTOCOL], '127.0.0.1'))
  const noPort = make(1, direct([NO_PORT_PROTOCOL], undefined))
  const refused = make(1, direct([REFUSED_PROTOCOL], '127.0.0.2'))
  await hosts[0]!.dial(hosts[1]!.getMultiaddrs())
  for (const [protocol, t] of [[TEST_PROTOCOL, transports.b], [DIRECT_TEST_PROTOCOL, transports.b], [IMAGES_PROTOCOL, transports.b], [NO_PORT_PROTOCOL, noPort], [REFUSED_PROTOCOL, refused]] as const) {
    await t.handle(protocol, async (channel, fromNode) => {
      expect(fromNode).toBe('a')
      const handler = onChannel.get(protocol)
      if (handler === undefined) throw new Error('no test handler')
      await handler(channel)
    })
  }
}, 30_000)

afterAll(async () => {
  shutdown.abort()
  await Promise.all(hosts.map(async h => { await h.stop() }))
  await rm(root, { recursive: true, force: true })
})

/** A connected pair: `a` opened by node a, `b` handed to node b's handler (kept open until `done`). */
async function libp2pPair (protocol = TEST_PROTOCOL, from = 'a'): Promise<{ a: ByteChannel, b: ByteChannel, done: () => void }> {
  let release!: () => void
  const held = new Promise<void>(resolve => { release = resolve })
  const incoming = new Promise<ByteChannel>(resolve => {
    onChannel.set(protocol, async (ch) => { resolve(ch); await held })
  })
  const a = await transports[from]!.open('b', protocol, AbortSignal.timeout(5000))
  await a.write(new Uint8Array([0])) // the remote handler runs once the stream carries data
  const b = await incoming
  const first = await nextChunk(b)
  expect([...first]).toEqual([0])
  return { a, b: replay(b, first.subarray(1)), done: release }
}

/** Reads one chunk from `ch` and hands back a channel that yields the rest. */
const iterators = new WeakMap<ByteChannel, AsyncIterator<Uint8Array>>()
async function nextChunk (ch: ByteChannel): Promise<Uint8Array> {
  let it = iterators.get(ch)
  if (it === undefined) {
    it = ch.read()[Symbol.asyncIterator]()
    iterators.set(ch, it)
  }
  const r = await it.next()
  if (r.done === true) throw new Error('ended')
  return r.value
}
function replay (ch: ByteChannel, rest: Uint8Array): ByteChannel {
  const it = iterators.get(ch)!
  return {
    write: async (c, s) => { await ch.write(c, s) },
    closeWrite: async (s) => { await ch.closeWrite(s) },
    abort: (e) => { ch.abort(e) },
    read: () => ({
      async * [Symbol.asyncIterator] () {
        if (rest.byteLength > 0) yield rest
        for (;;) {
          const r = await it.next()
          if (r.done === true) return
          yield r.value
        }
      }
    })
  }
}

async function readAll (ch: ByteChannel, signal?: AbortSignal): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of ch.read(signal)) parts.push(c)
  return Buffer.concat(parts)
}

const implementations: Array<[string, () => Promise<{ a: ByteChannel, b: ByteChannel, done: () => void }>]> = [
  ['in-memory fake', async () => { const [a, b] = createMemoryChannelPair(); return { a, b, done: () => {} } }],
  ['libp2p', async () => await libp2pPair()],
  ['direct TCP (AES-256-GCM records)', async () => await libp2pPair(DIRECT_TEST_PROTOCOL, 'direct')]
]

describe.each(implementations)('ByteChannel compliance: %s', (_name, makePair) => {
  let done = (): void => {}
  afterEach(() => { done() })

  it('delivers bytes in order and intact in both directions, and ends after closeWrite', async () => {
    const p = await makePair()
    done = p.done
    const data = randomFillSync(Buffer.alloc(24 * MiB + 123))
    const sending = (async () => {
      for (let at = 0; at < data.byteLength; at += MiB) await p.a.write(data.subarray(at, at + MiB))
      await p.a.closeWrite()
    })()
    const [got] = await Promise.all([readAll(p.b), sending])
    expect(got.equals(data)).toBe(true)
    await p.b.write(Buffer.from('answer'))
    await p.b.closeWrite()
    expect((await readAll(p.a)).toString()).toBe('answer')
  })

  it('applies backpressure: a writer whose reader does not read is held back, with no data lost', async () => {
    const p = await makePair()
    done = p.done
    let written = 0
    const chunk = (i: number): Buffer => Buffer.alloc(MiB, i & 0xff)
    const writer = (async () => {
      for (let i = 0; i < 128; i++) { await p.a.write(chunk(i)); written += MiB }
      await p.a.closeWrite()
    })()
    await new Promise(resolve => setTimeout(resolve, 500))
    expect(written).toBeLessThan(64 * MiB) // bounded: reader queue + yamux window + socket buffers
    const got = await readAll(p.b)
    await writer
    expect(got.byteLength).toBe(128 * MiB)
    for (let i = 0; i < 128; i++) expect(got[i * MiB + 777]).toBe(i & 0xff)
  })

  it('abort fails the remote read and write with ChannelClosedError, and later local operations', async () => {
    const p = await makePair()
    done = p.done
    const reading = readAll(p.b)
    await p.a.write(Buffer.alloc(1000))
    p.a.abort(new Error('test abort'))
    await expect(reading).rejects.toBeInstanceOf(ChannelClosedError)
    await expect(p.a.write(Buffer.alloc(1))).rejects.toBeInstanceOf(ChannelClosedError)
    await expect((async () => { for (let i = 0; i < 100; i++) await p.b.write(Buffer.alloc(MiB)) })()).rejects.toBeInstanceOf(ChannelClosedError)
  })

  it('an aborted signal rejects a blocked write with its reason and aborts the channel', async () => {
    const p = await makePair()
    done = p.done
    const ac = new AbortController()
    const reason = new Error('deadline')
    const writing = (async () => { for (;;) await p.a.write(Buffer.alloc(MiB), ac.signal) })()
    setTimeout(() => { ac.abort(reason) }, 200)
    await expect(writing).rejects.toBe(reason)
    await expect(readAll(p.b)).rejects.toBeInstanceOf(ChannelClosedError)
  })

  it('read() may be called once', async () => {
    const p = await makePair()
    done = p.done
    void p.a.read()
    expect(() => { void p.a.read()[Symbol.asyncIterator]().next() }).toThrow()
    p.a.abort(new Error('done'))
  })
})

describe('Libp2pBulkTransport', () => {
  it('refuses unknown nodes and unhandled protocols with NodeUnavailableError', async () => {
    await expect(transports.a!.open('nope', TEST_PROTOCOL, AbortSignal.timeout(2000))).rejects.toBeInstanceOf(NodeUnavailableError)
    await expect(transports.a!.open('b', '/ssi/none/1', AbortSignal.timeout(2000))).rejects.toBeInstanceOf(NodeUnavailableError)
  })
})

describe('direct connections: negotiation and fallback', () => {
  /** Opens `protocol` from `from`, checks the channel kind, and round-trips 3 MiB through an echo. */
  async function roundTrip (protocol: string, from: string, kind: unknown): Promise<void> {
    onChannel.set(protocol, async (ch) => {
      const got = await readAll(ch)
      await ch.write(createHash('sha256').update(got).digest())
    })
    const ch = await transports[from]!.open('b', protocol, AbortSignal.timeout(15_000))
    expect(ch).toBeInstanceOf(kind)
    const data = randomFillSync(Buffer.alloc(3 * MiB + 7))
    await ch.write(data)
    await ch.closeWrite()
    expect((await readAll(ch)).equals(createHash('sha256').update(data).digest())).toBe(true)
  }

  it('uses a direct connection when both ends have it', async () => {
    await roundTrip(DIRECT_TEST_PROTOCOL, 'direct', DirectByteChannel)
  })
  it('a dialer without direct connections still reaches a listener with them (over the stream)', async () => {
    await roundTrip(DIRECT_TEST_PROTOCOL, 'a', Libp2pByteChannel)
  })
  it('falls back to the stream when the listener has no address to offer', async () => {
    await roundTrip(NO_PORT_PROTOCOL, 'direct', Libp2pByteChannel)
  })
  it('falls back to the stream when the dialer cannot reach the offered port', async () => {
    await roundTrip(REFUSED_PROTOCOL, 'direct', Libp2pByteChannel)
  }, 20_000)

  it('hangUp(node) aborts the direct channels with that node: a writer stalled on a peer that stopped reading (a hung host) is released', async () => {
    const p = await libp2pPair(DIRECT_TEST_PROTOCOL, 'direct')
    try {
      expect(transports.direct!.hangUp('nobody', new Error('x'))).toBe(0)
      // The receiving end never reads on: like a SIGSTOPped daemon, whose kernel keeps the TCP connection up.
      let written = 0
      const writing = (async () => { for (;;) { await p.a.write(Buffer.alloc(MiB)); written += MiB } })()
      writing.catch(() => {})
      let last = -1
      while (written !== last) { last = written; await new Promise(resolve => setTimeout(resolve, 300)) }
      expect(written).toBeLessThan(64 * MiB) // stalled
      expect(transports.direct!.hangUp('b', new Error('node b stopped answering and was declared dead'))).toBe(1)
      await expect(writing).rejects.toBeInstanceOf(ChannelClosedError)
      await expect(writing).rejects.toThrow(/node b stopped answering/)
      await expect(readAll(p.b)).rejects.toBeInstanceOf(ChannelClosedError) // the other end sees the cut
      expect(transports.direct!.hangUp('b', new Error('again'))).toBe(0) // closed channels are forgotten
    } finally {
      p.done()
    }
  })
})

/** Runs one transfer from node a's `src` into node b's `dest`. */
let sender = 'a'
async function transfer (src: string, dest: string, send: SendOptions = {}, recv: Partial<ReceiveOptions> = {}, wrap = (c: ByteChannel) => c) {
  let received!: Promise<ReceiveSummary>
  const handled = new Promise<void>(resolve => {
    onChannel.set(IMAGES_PROTOCOL, async (ch) => {
      received = receiveImageDir(ch, dest, { maxTotalBytes: 2 ** 34, ...recv })
      resolve()
      await received
    })
  })
  const channel = await transports[sender]!.open('b', IMAGES_PROTOCOL, AbortSignal.timeout(5000))
  expect(channel).toBeInstanceOf(sender === 'direct' ? DirectByteChannel : Libp2pByteChannel)
  const sent = sendImageDir(wrap(channel), src, send)
  await Promise.race([handled, sent.catch(() => {})])
  await handled
  const [s, r] = await Promise.allSettled([sent, received])
  return { sent: s, received: r }
}

function failure (r: PromiseSettledResult<unknown>): ImageTransferError {
  if (r.status === 'fulfilled') throw new Error('expected a failure')
  expect(r.reason).toBeInstanceOf(ImageTransferError)
  return r.reason as ImageTransferError
}

async function sha256File (path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const c of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(c as Buffer)
  return h.digest('hex')
}

async function makeDir (name: string, files: Record<string, number | Buffer>): Promise<string> {
  const dir = join(root, name)
  await mkdir(dir)
  for (const [file, content] of Object.entries(files)) {
    if (Buffer.isBuffer(content)) { await writeFile(join(dir, file), content); continue }
    const fh = await import('node:fs/promises').then(async fs => await fs.open(join(dir, file), 'w', 0o600))
    for (let left = content; left > 0; left -= 16 * MiB) await fh.write(randomFillSync(Buffer.alloc(Math.min(left, 16 * MiB))))
    await fh.close()
  }
  return dir
}

const exists = async (p: string): Promise<boolean> => await stat(p).then(() => true, () => false)

describe.each([['a libp2p stream', 'a'], ['a direct TCP connection', 'direct']])('image transfer between two libp2p hosts over %s', (_via, from) => {
  let src: string
  beforeAll(async () => {
    sender = from
    src = await makeDir(`big-${from}`, { 'pages-1.img': 256 * MiB, 'core-1.img': 4321, 'mm-1.img': 3 * MiB + 1, 'empty.img': Buffer.alloc(0), 'inventory.img': Buffer.from('inv') })
  }, 60_000)

  it('moves a dir with a 256 MiB file byte-identically', async () => {
    const dest = join(root, 'dest-big')
    const { sent, received } = await transfer(src, dest)
    if (received.status === 'rejected') throw received.reason
    if (sent.status === 'rejected') throw sent.reason
    expect(received.status).toBe('fulfilled')
    expect(sent.status).toBe('fulfilled')
    const summary = (received as PromiseFulfilledResult<ReceiveSummary>).value
    for (const f of summary.images) expect(await sha256File(join(dest, f.name))).toBe(f.sha256)
    for (const f of await readdir(src)) expect(await sha256File(join(dest, f))).toBe(await sha256File(join(src, f)))
    await rm(dest, { recursive: true })
  }, 120_000)

  it('detects a byte flipped in transit: ImageIntegrityError, nothing left behind', async () => {
    const dest = join(root, 'dest-flip')
    let seen = 0
    const flipAt = 100 * MiB + 12345
    const { sent, received } = await transfer(src, dest, {}, {}, ch => ({
      read: (s) => ch.read(s),
      closeWrite: async (s) => { await ch.closeWrite(s) },
      abort: (e) => { ch.abort(e) },
      write: async (chunk, s) => {
        if (flipAt >= seen && flipAt < seen + chunk.byteLength) chunk[flipAt - seen] = (chunk[flipAt - seen] ?? 0) ^ 1
        seen += chunk.byteLength
        await ch.write(chunk, s)
      }
    }))
    const err = failure(received)
    expect(err).toBeInstanceOf(ImageIntegrityError)
    expect(err.file).toBe('pages-1.img')
    expect(failure(sent)).toBeInstanceOf(ImageIntegrityError)
    expect(await exists(dest)).toBe(false)
  }, 120_000)

  it.each(['../evil', '/etc/evil'])('refuses a header naming %j before anything is written', async (name) => {
    const dest = join(root, 'dest-evil')
    let received!: Promise<unknown>
    onChannel.set(IMAGES_PROTOCOL, async (ch) => { received = receiveImageDir(ch, dest, { maxTotalBytes: MiB }).catch(e => e); await received })
    const ch = await transports[sender]!.open('b', IMAGES_PROTOCOL, AbortSignal.timeout(5000))
    await ch.write(encodeHeader({ v: IMAGES_WIRE_VERSION, compression: 'none', checksum: 'sha256', files: [{ name, size: 4, mode: 0o600 }], totalBytes: 4 }))
    const answer = await readAll(ch)
    await ch.closeWrite() // a real sender stops at once on a refusal; the receiver then finishes
    const result = decodeResult(answer.subarray(FRAME_HEADER_BYTES))
    expect(result.ok).toBe(false)
    expect(result.ok ? '' : result.failure.code).toBe('bad-name')
    expect(((await received) as ImageTransferError).code).toBe('bad-name')
    expect(await exists(dest)).toBe(false)
    expect(await exists(join(root, 'evil'))).toBe(false)
  })

  it('refuses an image over the receiver\'s size cap before anything is written', async () => {
    const dest = join(root, 'dest-cap')
    const { sent, received } = await transfer(src, dest, {}, { maxTotalBytes: 100 * MiB })
    expect(failure(received).code).toBe('too-large')
    const s = failure(sent)
    expect(s.code).toBe('too-large')
    expect(s.remote).toBe(true)
    expect(await exists(dest)).toBe(false)
  })

  it('a sender aborting mid-way makes the receiver fail cleanly and clean up', async () => {
    const dest = join(root, 'dest-abort')
    const ac = new AbortController()
    const { sent, received } = await transfer(src, dest, {
      signal: ac.signal, progressIntervalMs: 0, onProgress: p => { if (p.doneBytes >= 64 * MiB) ac.abort(new Error('operator cancelled')) }
    })
    expect(failure(sent).code).toBe('aborted')
    expect(failure(received).code).toBe('channel')
    expect(await exists(dest)).toBe(false)
  }, 60_000)

  it.each(['none', 'zstd'] as const)('compression %s: a mixed dir arrives byte-identically', async (compress) => {
    const mixed = await makeDir(`mixed-${compress}-${from}`, {
      'pages-1.img': Buffer.concat([Buffer.alloc(8 * MiB), randomFillSync(Buffer.alloc(4 * MiB)), Buffer.alloc(8 * MiB, 'text ')]),
      'core-1.img': 70_000
    })
    const dest = join(root, `dest-${compress}-${from}`)
    const { sent, received } = await transfer(mixed, dest, { compress })
    expect(received.status).toBe('fulfilled')
    const s = (sent as PromiseFulfilledResult<Awaited<ReturnType<typeof sendImageDir>>>).value
    if (compress === 'zstd') expect(s.wireBytes).toBeLessThan(s.bytes / 3)
    else expect(s.wireBytes).toBe(s.bytes)
    for (const f of await readdir(mixed)) expect(await sha256File(join(dest, f))).toBe(await sha256File(join(mixed, f)))
  }, 60_000)
})
