/**
 * Fuzzes membership heartbeats of a real 2-node cluster from a key-holding libp2p node: >= 10,000
 * mutated heartbeats on a heartbeat link (`/ssi/<cluster>/heartbeat/1`, length-prefixed frames). Every invalid one must be dropped with a
 * logged reason (counted in the daemon's log), a valid one must not take another node's name or id,
 * the member table must stay bounded, the real peer must stay alive in the daemon's view, and the
 * daemon must keep answering with bounded memory.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { describe, expect, it } from 'vitest'
import { decodeHeartbeat, PEER_PROTOCOL_VERSION } from '../../src/protocol/peer.js'
import { MAX_MEMBERS } from '../../src/node/membership.js'
import { eventually } from '../helpers/cluster.js'
import type { NodeInfo } from '../../src/api/schema.js'
import { fuzzTarget } from './peer.js'
import { fuzzSeed, mutate, oddValues, pack, rawMsgpack, Rng, rssBytes } from './mutate.js'

const MESSAGES = 10_000

const seed = fuzzSeed()
const target = fuzzTarget(2)

/** A valid heartbeat of a made-up node, with no addresses (so nothing the daemon would dial). */
function heartbeat (cluster: string, rng: Rng, seq: number): Record<string, unknown> {
  return {
    v: PEER_PROTOCOL_VERSION, kind: 'heartbeat', cluster, name: `fz${rng.int(8)}`, id: 60_000 + rng.int(8), seq, bootMs: 1, sentMs: Date.now(),
    addresses: [], load: { runQueue: 1, load1: 0.5, load5: 0.5, load15: 0.5, cpus: 2 }, memory: { freeBytes: 1e9, totalBytes: 2e9 }, jobs: 0
  }
}

function nextMessage (rng: Rng, cluster: string, seq: number): Buffer {
  const base = heartbeat(cluster, rng, seq)
  const odd = (): unknown => rng.pick(oddValues(rng))
  const r = rng.int(10)
  if (r < 4) return mutate(rng, pack(base))
  if (r < 6) {
    const key = rng.pick([...Object.keys(base), 'extra'])
    // Never an address list (it could name a host the daemon would dial).
    return pack({ ...base, [key]: key === 'addresses' ? rng.pick([7, 'x', [1]]) : odd() })
  }
  if (r < 7) return pack({ ...base, name: rng.pick(['n1', 'n2']), id: rng.pick([1, 2, 3]) }) // claims a real node
  if (r < 8) return rawMsgpack(rng)
  if (r < 9) return rng.bytes(rng.int(5000))
  return pack({ ...base, name: 'x'.repeat(rng.int(100)), addresses: [], jobs: rng.pick([-1, 2 ** 60, 1.5]) })
}

const isValid = (data: Buffer): boolean => { try { decodeHeartbeat(data); return true } catch { return false } }

async function countLog (path: string, text: string): Promise<number> {
  return (await readFile(path, 'utf8')).split('\n').filter(l => l.includes(text)).length
}

describe(`heartbeat fuzz (FUZZ_SEED=${seed})`, () => {
  it(`drops ${MESSAGES} malformed heartbeats with a logged reason; membership and the daemon stay sound`, async () => {
    const { cluster, peer } = target
    const rng = new Rng(seed)
    const pid = await cluster.pid('n1')
    const log = join(cluster.config.nodes[0]!.stateDir, 'daemon.log')
    const protocol = `/ssi/${cluster.config.name}/heartbeat/${PEER_PROTOCOL_VERSION}`
    const link = lpStream(await peer.host.dialProtocol(peerIdFromString(peer.target), protocol, { signal: AbortSignal.timeout(10_000) }))
    const droppedBefore = await countLog(log, 'dropped invalid heartbeat')
    const rssBefore = await rssBytes(pid)
    // The fuzz peer is member 'fz0' (one peer is one node): kept alive, so it is never declared dead
    // (which hangs up its connection) while the made-up names of the fuzz frames are refused.
    const keepAlive = async (seq: number): Promise<void> => { await link.write(pack({ ...heartbeat(cluster.config.name, rng, seq), name: 'fz0', id: 60_000 })) }
    await keepAlive(0)
    await eventually(async () => (await cluster.call<NodeInfo[]>('n1', 'nodes')).some(n => n.name === 'fz0' && n.state === 'alive'), 15_000, 'fz0 alive')
    let invalid = 0
    for (let i = 1; i <= MESSAGES; i++) {
      if (i % 50 === 0) await keepAlive(i)
      const data = nextMessage(rng, cluster.config.name, i)
      if (!isValid(data)) invalid++
      await link.write(data)
      if (i % 200 === 0) await new Promise(resolve => setTimeout(resolve, 5)) // let the daemon keep up
    }
    // Every invalid heartbeat is dropped with a reason in the log.
    const { value: dropped } = await eventually(async () => {
      const n = await countLog(log, 'dropped invalid heartbeat') - droppedBefore
      return n >= invalid ? n : undefined
    }, 60_000, `${invalid} 'dropped invalid heartbeat' log lines`).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}; found ${await countLog(log, 'dropped invalid heartbeat') - droppedBefore}`)
    })
    console.log(JSON.stringify({ seed, messages: MESSAGES, invalid, dropped }))
    expect(dropped).toBe(invalid)
    expect(invalid).toBeGreaterThan(MESSAGES * 0.5)

    // n2 is still n2 (name and id), alive; no made-up member took a real node's name or id.
    const nodes = await cluster.call<NodeInfo[]>('n1', 'nodes')
    const n2 = nodes.find(n => n.name === 'n2')
    expect(n2).toMatchObject({ id: 2, state: 'alive' })
    expect(nodes.filter(n => n.id === 1 || n.id === 2).map(n => n.name).sort()).toEqual(['n1', 'n2'])
    expect(nodes.length).toBeLessThanOrEqual(MAX_MEMBERS + 1)
    const ghostIds = nodes.filter(n => !n.self && n.name !== 'n2' && n.state !== 'dead').map(n => n.id)
    expect(new Set(ghostIds).size).toBe(ghostIds.length)

    const status = await cluster.call<{ node: { name: string } }>('n1', 'status')
    expect(status.node.name).toBe('n1')
    expect(await cluster.pid('n1')).toBe(pid)
    const rssAfter = await rssBytes(pid)
    console.log(JSON.stringify({ rssBeforeMiB: rssBefore / 2 ** 20, rssAfterMiB: rssAfter / 2 ** 20 }))
    expect(rssAfter).toBeLessThan(rssBefore + 200 * 2 ** 20)
  }, 240_000)
})
