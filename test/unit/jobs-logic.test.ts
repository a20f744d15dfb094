import { describe, expect, it } from 'vitest'
import { MemoryStateStore } from '../../src/node/store.js'
import { leastLoaded, RecentPlacements } from '../../src/ssi/placement.js'
import { exitStatusCode, InvalidTransitionError, stateForExit, transition } from '../../src/ssi/jobs/record.js'
import { homeNodeId, InvalidVpidError, parseVpid, VpidAllocator } from '../../src/ssi/vpid.js'
import type { JobRecord } from '../../src/ssi/jobs/record.js'
import type { NodeView } from '../../src/ssi/ports.js'

describe('vpids', () => {
  it('embed the home node id and are unique, also across a restart', async () => {
    const store = new MemoryStateStore()
    const a = new VpidAllocator(store, 2, () => false)
    const first = await Promise.all(Array.from({ length: 300 }, async () => await a.allocate()))
    expect(new Set(first).size).toBe(300)
    expect(first.every(v => homeNodeId(v) === 2)).toBe(true)
    const restarted = new VpidAllocator(store, 2, () => false)
    const next = await restarted.allocate()
    expect(first).not.toContain(next)
    expect(next).toBeGreaterThan(Math.max(...first))
  })

  it('skip vpids still in use after the counter wraps', async () => {
    const store = new MemoryStateStore()
    await store.put('vpid/next', 999_999)
    const inUse = new Set([1_000_001, 1_000_002])
    const a = new VpidAllocator(store, 1, v => inUse.has(v))
    expect(await a.allocate()).toBe(1_999_999)
    expect(await a.allocate()).toBe(1_000_003)
  })

  it('parse user input with a clear error', () => {
    expect(parseVpid('2000017')).toBe(2_000_017)
    for (const bad of ['abc', '17', '2000000', '-1', '1e6', '']) {
      expect(() => parseVpid(bad)).toThrow(InvalidVpidError)
    }
  })
})

const node = (name: string, over: Partial<NodeView> = {}): NodeView => ({
  name, id: Number(name.slice(1)), state: 'alive', self: false, jobs: 0,
  load: { runQueue: 0, load1: 0, cpus: 2 }, memory: { freeBytes: 8e9, totalBytes: 16e9 }, ...over
})

describe('least-loaded placement', () => {
  it('picks the node with the lowest load per cpu among alive ones', () => {
    const nodes = [node('n1', { jobs: 4 }), node('n2', { jobs: 1 }), node('n3', { state: 'dead' })]
    expect(leastLoaded.pick(nodes, {}, new Map())).toBe('n2')
    expect(leastLoaded.pick([node('n1', { jobs: 4, load: { runQueue: 4, load1: 4, cpus: 8 } }), node('n2', { jobs: 2 })], {}, new Map())).toBe('n1')
  })

  it('counts recent placements so a burst spreads before gossip catches up', () => {
    const nodes = [node('n1'), node('n2'), node('n3')]
    const recent = new RecentPlacements(60_000)
    const picks = Array.from({ length: 9 }, () => {
      const n = leastLoaded.pick(nodes, {}, recent.counts()) ?? 'none'
      recent.add(n)
      return n
    })
    expect(picks.filter(p => p === 'n1')).toHaveLength(3)
    expect(picks.filter(p => p === 'n3')).toHaveLength(3)
  })

  it('skips nodes without the memory the job asks for, and says none fits', () => {
    const nodes = [node('n1', { memory: { freeBytes: 1e9, totalBytes: 2e9 } }), node('n2')]
    expect(leastLoaded.pick(nodes, { memoryBytes: 4e9 }, new Map())).toBe('n2')
    expect(leastLoaded.pick(nodes, { memoryBytes: 64e9 }, new Map())).toBeUndefined()
  })
})

describe('job lifecycle', () => {
  const job = { vpid: 1_000_001, state: 'running' } as JobRecord
  it('allows only legal transitions', () => {
    expect(transition(job, 'exited').state).toBe('exited')
    expect(() => transition(transition(job, 'exited'), 'running')).toThrow(InvalidTransitionError)
    expect(() => transition({ ...job, state: 'failed' }, 'running')).toThrow(/cannot go from failed to running/)
  })
  it('maps exits to states and shell status codes', () => {
    expect(stateForExit({ code: 3, oomKilled: false })).toBe('exited')
    expect(stateForExit({ signal: 9, oomKilled: true })).toBe('oom')
    expect(stateForExit({ signal: 15, oomKilled: false })).toBe('killed')
    expect(exitStatusCode({ signal: 15, oomKilled: false })).toBe(143)
    expect(exitStatusCode({ code: 127, oomKilled: false })).toBe(127)
  })
})
