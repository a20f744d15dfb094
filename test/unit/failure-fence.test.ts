import { describe, expect, it } from 'vitest'
import { Fencer } from '../../src/ssi/failure/fence.js'
import type { FenceJob, FenceTarget } from '../../src/ssi/failure/fence.js'
import type { ClusterView, NodeView, PeerRpc } from '../../src/ssi/ports.js'
import { MemoryStateStore } from '../../src/node/store.js'

const node = (name: string, state: NodeView['state']): NodeView => ({
  name, id: Number(name.slice(1)), state, self: name === 'n3', load: { runQueue: 0, load1: 0, cpus: 1 }, memory: { freeBytes: 0, totalBytes: 0 }, jobs: 0
})

/** A Fencer on n3 of n1..n4 over a scripted view, home-node answers and a recording job target. */
function fencerWith (jobs: FenceJob[], store?: MemoryStateStore): {
  fencer: Fencer
  actions: string[]
  see: (states: Record<string, NodeView['state']>) => void
  homeSays: Map<number, { node: string, state: string } | Error>
} {
  let nodes: NodeView[] = []
  const see = (states: Record<string, NodeView['state']>): void => { nodes = Object.entries(states).map(([n, s]) => node(n, s)) }
  const homeSays = new Map<number, { node: string, state: string } | Error>()
  const rpc: PeerRpc = {
    async call (_node, method, params) {
      if (method !== 'loc.get') throw new Error(`unexpected ${method}`)
      const answer = homeSays.get((params as { vpid: number }).vpid)
      if (answer === undefined || answer instanceof Error) throw answer ?? new Error('no answer')
      return { vpid: (params as { vpid: number }).vpid, ...answer }
    },
    async stream () { throw new Error('no streams') },
    handle () {}
  }
  const view: ClusterView = { selfName: 'n3', selfId: 3, nodes: () => nodes }
  const actions: string[] = []
  const target: FenceTarget = {
    restorable: async () => jobs,
    freeze: async v => { actions.push(`freeze ${v}`) },
    thaw: async v => { actions.push(`thaw ${v}`) },
    kill: async v => { actions.push(`kill ${v}`) }
  }
  const fencer = new Fencer({ rpc, view, nodes: ['n1', 'n2', 'n3', 'n4'], jobs: target, logger: { info () {}, warn () {} }, store })
  return { fencer, actions, see, homeSays }
}

const signal = new AbortController().signal

describe('Fencer (the minority side of a partition)', () => {
  it('freezes, once, only the restorable jobs whose home node it cannot see while it sees no majority', async () => {
    const { fencer, actions, see } = fencerWith([{ vpid: 1000001, homeNode: 'n1' }, { vpid: 3000001, homeNode: 'n3' }, { vpid: 4000001, homeNode: 'n4' }])
    see({ n1: 'alive', n2: 'alive', n3: 'alive', n4: 'suspect' })
    await fencer.tick(signal)
    expect(actions).toEqual([]) // a majority (3 of 4) in view: nothing to fence
    see({ n1: 'suspect', n2: 'dead', n3: 'alive', n4: 'alive' })
    await fencer.tick(signal)
    await fencer.tick(signal)
    // 2 of 4 is no majority. n3's own job and n4's (home on this side) cannot be restored by the other side.
    expect(actions).toEqual(['freeze 1000001'])
    expect(fencer.fenced()).toEqual([1000001])
  })

  it('a daemon restarted while its jobs are frozen settles them as its predecessor would have (the frozen set is stored)', async () => {
    const store = new MemoryStateStore()
    const before = fencerWith([{ vpid: 1000001, homeNode: 'n1' }], store)
    before.see({ n1: 'dead', n2: 'dead', n3: 'alive', n4: 'dead' })
    await before.fencer.tick(signal)
    expect(before.actions).toEqual(['freeze 1000001'])
    // The daemon restarts: a new Fencer over the same store; the job's processes are still stopped.
    const after = fencerWith([{ vpid: 1000001, homeNode: 'n1' }], store)
    after.homeSays.set(1000001, { node: 'n3', state: 'lost' })
    after.see({ n1: 'alive', n2: 'alive', n3: 'alive', n4: 'dead' })
    await after.fencer.tick(signal)
    expect(after.actions).toEqual(['thaw 1000001'])
    expect(await store.list('fenced/')).toEqual([])
  })

  it('back in a majority: kills the frozen copy of a job restored elsewhere, continues one that was not', async () => {
    const { fencer, actions, see, homeSays } = fencerWith([{ vpid: 1000001, homeNode: 'n1' }, { vpid: 1000002, homeNode: 'n1' }])
    see({ n1: 'dead', n2: 'dead', n3: 'alive', n4: 'dead' })
    await fencer.tick(signal)
    expect(actions).toEqual(['freeze 1000001', 'freeze 1000002'])
    homeSays.set(1000001, { node: 'n2', state: 'running' })
    homeSays.set(1000002, { node: 'n3', state: 'lost' })
    see({ n1: 'alive', n2: 'alive', n3: 'alive', n4: 'dead' })
    await fencer.tick(signal)
    expect(actions.slice(2)).toEqual(['kill 1000001', 'thaw 1000002'])
    expect(fencer.fenced()).toEqual([])
  })

  it('keeps a job frozen while its live home node does not answer; continues it if the home node is dead (only the home restores)', async () => {
    const { fencer, actions, see, homeSays } = fencerWith([{ vpid: 1000001, homeNode: 'n1' }])
    see({ n1: 'dead', n2: 'dead', n3: 'alive', n4: 'dead' })
    await fencer.tick(signal)
    homeSays.set(1000001, new Error('timed out'))
    see({ n1: 'alive', n2: 'alive', n3: 'alive', n4: 'dead' })
    await fencer.tick(signal)
    expect(actions).toEqual(['freeze 1000001'])
    see({ n1: 'dead', n2: 'alive', n3: 'alive', n4: 'alive' })
    await fencer.tick(signal)
    expect(actions).toEqual(['freeze 1000001', 'thaw 1000001'])
  })
})
