/**
 * Fuzzes the control socket of a real daemon with >= 10,000 malformed or mutated frames: each one
 * must get an error reply (or, for a frame the protocol may ignore, a later call must still be
 * answered), a broken length prefix must close the connection with an error, and afterwards the
 * daemon must still answer `status` with its memory bounded.
 */
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeFrameBody, FrameDecoder } from '../../src/api/framing.js'
import { clientMessageSchema, MAX_REQUEST_FRAME_BYTES, MAX_RESPONSE_FRAME_BYTES } from '../../src/api/schema.js'
import { makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import { fuzzSeed, listFiles, mutate, oddValues, pack, rawMsgpack, Rng, rssBytes } from './mutate.js'

const FRAMES = 10_000
const REPLY_TIMEOUT_MS = 5000
/** Ids of our own `status` probes: far above any id the fuzzer makes up. */
const PROBE_BASE = 2 ** 45

interface Reply { id?: unknown, type?: unknown }

/** A raw control connection: frames out, decoded replies in, close detection. */
class RawConnection {
  readonly replies: Reply[] = []
  closed = false
  private readonly decoder = new FrameDecoder(MAX_RESPONSE_FRAME_BYTES)
  private wake: (() => void) | undefined

  private constructor (readonly socket: Socket) {
    socket.on('data', chunk => {
      for (const body of this.decoder.push(chunk)) this.replies.push(decodeFrameBody(body) as Reply)
      this.notify()
    })
    socket.on('error', () => {})
    socket.on('close', () => { this.closed = true; this.notify() })
  }

  static async open (path: string): Promise<RawConnection> {
    const socket = connect(path)
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    return new RawConnection(socket)
  }

  sendBody (body: Buffer): void {
    const head = Buffer.alloc(4)
    head.writeUInt32BE(body.length)
    this.socket.write(Buffer.concat([head, body]))
  }

  /** Waits until `done()` holds or the connection closes; throws on timeout (a hang). */
  async until (done: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + REPLY_TIMEOUT_MS
    while (!done() && !this.closed) {
      if (Date.now() > deadline) throw new Error(`no answer within ${REPLY_TIMEOUT_MS} ms: ${what}`)
      await new Promise<void>(resolve => {
        const t = setTimeout(resolve, 50)
        this.wake = () => { clearTimeout(t); resolve() }
      })
    }
  }

  close (): void { this.socket.destroy() }

  private notify (): void { const w = this.wake; this.wake = undefined; w?.() }
}

/**
 * What the protocol does with a body: a valid call is answered under its own id (maybe after later
 * frames: handlers are async), a valid cancel or input of no call in flight may go unanswered, and
 * anything else is answered with an error at once.
 */
function classify (body: Buffer): { kind: 'call', id: number } | { kind: 'ignorable' } | { kind: 'bad' } {
  try {
    const parsed = clientMessageSchema.safeParse(decodeFrameBody(body))
    if (!parsed.success || parsed.data.v !== 1) return { kind: 'bad' }
    if (parsed.data.type !== 'call') return { kind: 'ignorable' }
    return parsed.data.id === 0 ? { kind: 'bad' } : { kind: 'call', id: parsed.data.id }
  } catch {
    return { kind: 'bad' }
  }
}

/** Valid frames to mutate. No `run`: a mutated but valid run would start a command as root. */
function validBodies (): Buffer[] {
  const call = (id: number, method: string, params: unknown): Buffer => pack({ v: 1, id, type: 'call', method, params })
  return [
    call(1, 'status', {}), call(2, 'nodes', {}), call(3, 'ps', { state: 'running' }),
    call(4, 'inspect', { vpid: 987654321 }), call(5, 'kill', { vpids: [987654321], signal: 'SIGTERM' }),
    call(6, 'wait', { vpid: '987654321' }), call(7, 'logs', { vpid: 987654321, follow: false }),
    call(8, 'migrate', { vpid: 987654321, node: 'n9' }),
    pack({ v: 1, id: 9, type: 'input', data: { stdin: Buffer.from('hi') } }), pack({ v: 1, id: 10, type: 'cancel' })
  ]
}

/** Valid msgpack of the wrong shape: envelopes with odd values in every field. */
function wrongShape (rng: Rng): Buffer {
  const odd = (): unknown => rng.pick(oddValues(rng))
  switch (rng.int(5)) {
    case 0: return pack(odd())
    case 1: return pack({ v: rng.pick([1, 0, 2, odd()]), id: odd(), type: 'call', method: 'status', params: odd() })
    case 2: return pack({ v: 1, id: 1 + rng.int(1000), type: 'call', method: rng.pick(['ps', 'kill', 'inspect', 'wait', 'logs', 'migrate', 'nodes', odd()]), params: { vpid: odd(), vpids: odd(), node: odd(), signal: odd(), state: odd(), follow: odd() } })
    // run with params that can never validate (no argv): its other fields get odd values.
    case 3: return pack({ v: 1, id: 1 + rng.int(1000), type: 'call', method: 'run', params: { env: odd(), cwd: odd(), memoryBytes: odd(), stdin: odd() } })
    default: return pack({ v: 1, id: odd(), type: rng.pick(['input', 'cancel', 'result', 'event', odd()]), data: odd() })
  }
}

function nextBody (rng: Rng, valid: Buffer[]): Buffer {
  const r = rng.int(10)
  if (r < 4) return mutate(rng, rng.pick(valid))
  if (r < 7) return wrongShape(rng)
  if (r < 9) return rawMsgpack(rng)
  return rng.bytes(rng.int(300))
}

let cluster: TestCluster
const seed = fuzzSeed()

beforeAll(async () => {
  cluster = await makeCluster({ nodes: 1 })
  await cluster.start()
})
afterAll(async () => { await cluster?.stop() })

describe(`control socket fuzz (FUZZ_SEED=${seed})`, () => {
  it(`answers ${FRAMES} malformed frames with errors, stays up, memory bounded`, async () => {
    const rng = new Rng(seed)
    const valid = validBodies()
    const pid = await cluster.pid('n1')
    const filesBefore = await listFiles(cluster.dir)
    await cluster.call('n1', 'status')
    const rssBefore = await rssBytes(pid)
    let conn = await RawConnection.open(cluster.socket('n1'))
    let probe = PROBE_BASE
    const counts = { bad: 0, call: 0, ignorable: 0 }
    for (let i = 0; i < FRAMES;) {
      // A batch of frames, each followed by a `status` probe: the replies between two probes answer
      // the frame between them. A valid call (answered asynchronously) ends its batch.
      const batch: Array<{ body: Buffer, kind: ReturnType<typeof classify>, probe: number }> = []
      const start = conn.replies.length
      while (batch.length < 50 && i < FRAMES) {
        const body = nextBody(rng, valid)
        const kind = classify(body)
        conn.sendBody(body)
        conn.sendBody(pack({ v: 1, id: ++probe, type: 'call', method: 'status' }))
        batch.push({ body, kind, probe })
        i++
        if (kind.kind === 'call') break
      }
      // Probe results come after their handler ran, error replies at once: count instead of pairing.
      // Every bad frame earns exactly one error, an ignorable one nothing, a call one final reply.
      const probes = new Set(batch.map(b => b.probe))
      const expected = batch.filter(b => b.kind.kind !== 'ignorable').length
      const answers = (): Reply[] => conn.replies.slice(start).filter(r => !probes.has(r.id as number) && r.type !== 'event')
      const what = `frames ${i - batch.length}..${i - 1}: ${batch.map(b => b.body.subarray(0, 40).toString('hex')).join(' ')}`
      const last = batch[batch.length - 1]!.probe
      await conn.until(() => conn.replies.some(r => r.id === last) && answers().length >= expected, what)
      expect(conn.closed, `${what}: a connection whose framing was intact closed`).toBe(false)
      expect(answers().length, what).toBe(expected)
      for (const r of answers()) expect(['error', 'result']).toContain(r.type)
      for (const b of batch) counts[b.kind.kind]++
      conn.replies.length = 0
    }
    conn.close()
    console.log(JSON.stringify({ seed, frames: FRAMES, ...counts }))
    expect(counts.bad).toBeGreaterThan(FRAMES * 0.8)

    // Broken framing: an oversized length prefix gets an error and a closed connection; a frame cut
    // short is dropped when the client goes away.
    for (let i = 0; i < 200; i++) {
      conn = await RawConnection.open(cluster.socket('n1'))
      if (i % 2 === 0) {
        const head = Buffer.alloc(4)
        head.writeUInt32BE(MAX_REQUEST_FRAME_BYTES + 1 + rng.int(2 ** 31))
        conn.socket.write(Buffer.concat([head, rng.bytes(rng.int(64))]))
        await conn.until(() => false, `oversized length prefix ${i}`)
        expect(conn.replies[0]).toMatchObject({ id: 0, type: 'error', error: { name: 'FrameTooLargeError' } })
      } else {
        const head = Buffer.alloc(4)
        head.writeUInt32BE(100 + rng.int(1000))
        conn.socket.end(Buffer.concat([head, rng.bytes(rng.int(100))]))
        await conn.until(() => false, `truncated frame ${i}`)
      }
      expect(conn.closed).toBe(true)
    }

    const status = await cluster.call<{ node: { name: string } }>('n1', 'status')
    expect(status.node.name).toBe('n1')
    const rssAfter = await rssBytes(pid)
    console.log(JSON.stringify({ rssBeforeMiB: rssBefore / 2 ** 20, rssAfterMiB: rssAfter / 2 ** 20 }))
    expect(rssAfter).toBeLessThan(rssBefore + 150 * 2 ** 20)
    expect(await cluster.pid('n1')).toBe(pid)
    const created = [...(await listFiles(cluster.dir)).keys()].filter(p => !filesBefore.has(p))
    expect(created).toEqual([])
  }, 240_000)

  it('bounds what it buffers for a client that floods bad frames and never reads the replies', async () => {
    const pid = await cluster.pid('n1')
    const rssBefore = await rssBytes(pid)
    const socket = connect(cluster.socket('n1'))
    socket.on('error', () => {})
    await new Promise<void>(resolve => socket.once('connect', resolve))
    socket.pause() // never read: every error reply stays with the daemon
    // 24 MiB of 5-byte frames (one invalid msgpack byte each): ~5 million frames that each earn a reply.
    const chunk = Buffer.alloc(13107 * 5)
    for (let at = 0; at + 5 <= chunk.length; at += 5) { chunk.writeUInt32BE(1, at); chunk[at + 4] = 0xc1 }
    let written = 0
    while (written < 24 * 2 ** 20) {
      written += chunk.length
      if (socket.write(chunk)) continue
      // The daemon stops reading once its replies back up: that is the bound we want.
      const drained = await Promise.race([new Promise(resolve => socket.once('drain', () => { resolve(true) })), new Promise(resolve => setTimeout(() => { resolve(false) }, 2000))])
      if (drained !== true) break
    }
    // The daemon works through what it read for a while: watch its peak.
    let rssFlooded = 0
    for (let i = 0; i < 4; i++) {
      await new Promise(resolve => setTimeout(resolve, 500))
      rssFlooded = Math.max(rssFlooded, await rssBytes(pid))
    }
    const sent = socket.bytesWritten - socket.writableLength
    socket.destroy()
    console.log(JSON.stringify({ sent, floodWrittenMiB: written / 2 ** 20, sentMiB: socket.bytesWritten / 2 ** 20, rssBeforeMiB: rssBefore / 2 ** 20, rssFloodedMiB: rssFlooded / 2 ** 20 }))
    expect(rssFlooded).toBeLessThan(rssBefore + 200 * 2 ** 20)
    const status = await cluster.call<{ node: { name: string } }>('n1', 'status')
    expect(status.node.name).toBe('n1')
  }, 240_000)
})
