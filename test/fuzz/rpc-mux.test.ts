/**
 * Fuzzes `/ssi/rpc-mux/1` (peer calls multiplexed on one long-lived stream) of a real daemon from a
 * key-holding libp2p node: >= 10,000 frames, each followed by a probe call. A frame the protocol
 * can read (a call of any method with odd params, a cancel, an ack) leaves the stream working: the
 * probe is answered; anything else loses the stream (reset). Never a hang; the daemon stays up with
 * bounded memory.
 */
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import { Unpackr } from 'msgpackr'
import { describe, expect, it } from 'vitest'
import { MAX_RPC_FRAME } from '../../src/node/peer-rpc.js'
import { RPC_MUX_PROTOCOL } from '../../src/node/rpc-mux.js'
import { fuzzTarget } from './peer.js'
import type { FuzzPeer } from './peer.js'
import { fuzzSeed, mutate, oddValues, pack, rawMsgpack, Rng, rssBytes } from './mutate.js'

const FRAMES = 10_000
const PROBE_BASE = 2 ** 45
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })
const METHODS = ['job.list', 'job.get', 'job.signal', 'job.wait', 'job.stdin', 'job.output', 'loc.get', 'migrate.status', 'migrate.cancel', 'nope']

/** One frame body; never a call of job.start or migrate.* that could validate. */
function nextFrame (rng: Rng): Buffer {
  const odd = (): unknown => rng.pick(oddValues(rng))
  const vpid = 987654321
  const valid = [
    pack({ t: 'call', id: 1 + rng.int(1000), v: 1, method: 'job.get', params: { vpid } }),
    pack({ t: 'call', id: 1 + rng.int(1000), v: 1, method: 'job.signal', params: { vpid, signal: 'SIGTERM', asUid: 1000 } }),
    pack({ t: 'cancel', id: 1 + rng.int(1000) }), pack({ t: 'ack', id: 1 + rng.int(1000), n: 1 })
  ]
  const r = rng.int(10)
  if (r < 4) return mutate(rng, rng.pick(valid))
  if (r < 7) return pack({ t: 'call', id: 1 + rng.int(1000), v: 1, method: rng.pick(METHODS), params: { vpid: odd(), signal: odd(), asUid: odd(), follow: odd(), data: odd() } })
  if (r < 8) return pack({ t: rng.pick(['call', 'cancel', 'ack', 'event', odd()]), id: odd(), v: odd(), n: odd(), method: odd() })
  if (r < 9) return rawMsgpack(rng)
  return rng.bytes(rng.int(300))
}

class MuxClient {
  readonly replies = new Map<number, { t: string }>()
  ended = false
  private constructor (private readonly lp: ReturnType<typeof lpStream>) {}

  static async open (peer: FuzzPeer): Promise<MuxClient> {
    const stream = await peer.host.dialProtocol(peerIdFromString(peer.target), RPC_MUX_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    const client = new MuxClient(lpStream(stream, { maxDataLength: MAX_RPC_FRAME }))
    void client.readLoop()
    return client
  }

  async send (body: Uint8Array): Promise<void> { await this.lp.write(body, { signal: AbortSignal.timeout(10_000) }) }

  /** Waits for the reply of call `id` or the end of the stream; false on timeout. */
  async until (id: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.ended && !this.replies.has(id)) {
      if (Date.now() > deadline) return false
      await new Promise(resolve => setTimeout(resolve, 2))
    }
    return true
  }

  close (): void { this.lp.unwrap().abort(new Error('fuzz done')) }

  private async readLoop (): Promise<void> {
    try {
      for (;;) {
        const f = unpackr.unpack((await this.lp.read()).subarray()) as { t: string, id: number }
        if (f.t !== 'event') this.replies.set(f.id, f)
      }
    } catch {
      this.ended = true
    }
  }
}

const seed = fuzzSeed()
const target = fuzzTarget()

describe(`peer RPC mux fuzz (FUZZ_SEED=${seed})`, () => {
  it(`survives ${FRAMES} malformed frames on ${RPC_MUX_PROTOCOL}: each is answered, tolerated or costs the stream`, async () => {
    const { cluster, peer } = target
    const rng = new Rng(seed)
    const pid = await cluster.pid('n1')
    const rssBefore = await rssBytes(pid)
    const counts = { tolerated: 0, streamLost: 0 }
    let probe = PROBE_BASE
    const frames = Array.from({ length: FRAMES }, () => nextFrame(rng))
    const problems: string[] = []
    // 8 streams at once, each fed its share of the frames in order.
    await Promise.all(Array.from({ length: 8 }, async (_, w) => {
      let client = await MuxClient.open(peer)
      for (let i = w; i < FRAMES; i += 8) {
        const frame = frames[i]!
        const id = ++probe
        try {
          await client.send(frame)
          await client.send(pack({ t: 'call', id, v: 1, method: 'job.list', params: {} }))
        } catch { /* the daemon reset the stream while we wrote */ }
        if (!await client.until(id, 15_000)) problems.push(`frame ${i} (${frame.subarray(0, 40).toString('hex')}): no answer and no reset (hang)`)
        if (client.replies.get(id)?.t === 'result') {
          counts.tolerated++
          client.replies.clear()
        } else {
          counts.streamLost++
          client.close()
          client = await MuxClient.open(peer)
        }
      }
      client.close()
    }))
    expect(problems.slice(0, 10)).toEqual([])
    console.log(JSON.stringify({ seed, frames: FRAMES, ...counts }))
    expect(counts.streamLost).toBeGreaterThan(FRAMES * 0.2)
    expect(counts.tolerated).toBeGreaterThan(FRAMES * 0.2)

    const status = await cluster.call<{ node: { name: string } }>('n1', 'status')
    expect(status.node.name).toBe('n1')
    expect(await cluster.pid('n1')).toBe(pid)
    const rssAfter = await rssBytes(pid)
    console.log(JSON.stringify({ rssBeforeMiB: rssBefore / 2 ** 20, rssAfterMiB: rssAfter / 2 ** 20 }))
    expect(rssAfter).toBeLessThan(rssBefore + 200 * 2 ** 20)
  }, 240_000)
})
