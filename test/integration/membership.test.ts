import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { NodeInfo } from '../../src/api/schema.js'

const nodes = async (c: TestCluster, from: string): Promise<NodeInfo[]> => await c.call<NodeInfo[]>(from, 'nodes')
const stateOf = async (c: TestCluster, from: string, name: string): Promise<NodeInfo | undefined> =>
  (await nodes(c, from)).find(n => n.name === name)

describe('membership and failure detection (3 real daemons on loopback)', () => {
  let c: TestCluster
  beforeAll(async () => {
    c = await makeCluster({ nodes: 3 })
    await c.start()
  })
  afterAll(async () => { await c?.stop() })

  it('converges: every node lists all three as alive, with load and memory', async () => {
    for (const from of ['n1', 'n2', 'n3']) {
      await eventually(async () => {
        const list = await nodes(c, from)
        return list.length === 3 && list.every(n => n.state === 'alive') && list
      }, 15_000, `${from} to see 3 alive nodes`)
    }
    const list = await nodes(c, 'n1')
    expect(list[0]?.self).toBe(true)
    for (const n of list) {
      expect(n.load.cpus).toBeGreaterThan(0)
      expect(n.memory.totalBytes).toBeGreaterThan(n.memory.freeBytes)
      expect(n.peerId).toMatch(/^12D3Koo/)
    }
    const status = await c.call<{ members: { alive: number } }>('n2', 'status')
    expect(status.members.alive).toBe(3)
  })

  it('marks a SIGKILLed node dead quickly, and it rejoins with the same PeerId', async () => {
    const before = await stateOf(c, 'n1', 'n3')
    process.kill(await c.pid('n3'), 'SIGKILL')
    const { ms } = await eventually(async () => (await stateOf(c, 'n1', 'n3'))?.state === 'dead', 10_000, 'n3 dead on n1')
    // deadAfterMs is 2500; the dropped connection is noticed much sooner. Generous bound: timing is benchmarked.
    expect(ms).toBeLessThan(2500 + 2000)
    await c.start(['n3'])
    await eventually(async () => (await stateOf(c, 'n1', 'n3'))?.state === 'alive', 15_000, 'n3 alive again')
    expect((await stateOf(c, 'n1', 'n3'))?.peerId).toBe(before?.peerId)
    await eventually(async () => (await nodes(c, 'n3')).filter(n => n.state === 'alive').length === 3 || undefined, 15_000, 'n3 to see everyone')
  })

  it('marks a hung (SIGSTOPped) node suspect, then dead, and alive again after SIGCONT', async () => {
    await eventually(async () => (await stateOf(c, 'n1', 'n2'))?.state === 'alive', 10_000, 'n2 alive')
    const pid = await c.pid('n2')
    process.kill(pid, 'SIGSTOP')
    try {
      await eventually(async () => (await stateOf(c, 'n1', 'n2'))?.state === 'suspect', 5000, 'n2 suspect')
      const { ms } = await eventually(async () => (await stateOf(c, 'n1', 'n2'))?.state === 'dead', 10_000, 'n2 dead')
      expect(ms).toBeLessThan(2500 + 3000)
      expect((await stateOf(c, 'n3', 'n2'))?.state).not.toBe('alive')
    } finally {
      process.kill(pid, 'SIGCONT')
    }
    await eventually(async () => (await stateOf(c, 'n1', 'n2'))?.state === 'alive', 15_000, 'n2 alive after SIGCONT')
  })

  it('keeps out a node holding a different cluster key', async () => {
    const intruder = await makeCluster({ nodes: 1, name: 'test', extra: { bootstrap: c.config.nodes.map(n => n.listen) } })
    try {
      await intruder.start()
      await new Promise(r => setTimeout(r, 3000))
      const seenByIntruder = await nodes(intruder, 'n1')
      expect(seenByIntruder.map(n => n.peerId)).toEqual([seenByIntruder[0]?.peerId])
      const intruderId = seenByIntruder[0]?.peerId
      for (const from of ['n1', 'n2', 'n3']) {
        expect((await nodes(c, from)).map(n => n.peerId)).not.toContain(intruderId)
      }
    } finally {
      await intruder.stop()
    }
  })
})
