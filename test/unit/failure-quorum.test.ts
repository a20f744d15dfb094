import { describe, expect, it } from 'vitest'
import { confirmedDead, majorityOf, tallyVotes } from '../../src/ssi/failure/quorum.js'
import { FailureHandler } from '../../src/ssi/failure/handler.js'
import type { FailureHandlerInit } from '../../src/ssi/failure/handler.js'
import type { ClusterView, NodeView, PeerHandler, PeerRpc } from '../../src/ssi/ports.js'
import type { JobRecord } from '../../src/ssi/jobs/record.js'

describe('majority agreement on dead nodes', () => {
  it('needs more than half of the configured cluster', () => {
    expect([1, 2, 3, 4, 5].map(majorityOf)).toEqual([1, 2, 2, 3, 3])
  })

  it('a 3-node majority side of a 4-node cluster confirms the isolated node; the isolated node alone confirms nobody', () => {
    const majority = tallyVotes(['n1'], [['n1'], ['n1']])
    expect(confirmedDead(majority, 4)).toEqual(['n1'])
    const minority = tallyVotes(['n2', 'n3', 'n4'], [])
    expect(confirmedDead(minority, 4)).toEqual([])
  })

  it('an even split decides nothing', () => {
    expect(confirmedDead(tallyVotes(['n3', 'n4'], [['n3', 'n4']]), 4)).toEqual([])
  })

  it('a peer that does not see the node dead does not vote for it', () => {
    expect(confirmedDead(tallyVotes(['n4'], [['n4'], []]), 4)).toEqual([])
  })
})

/** A FailureHandler over an in-memory store and scripted peers. */
function handlerWith (nodes: NodeView[], peerDead: Record<string, string[]>, peerJobs: Record<string, Array<Partial<JobRecord>>> = {}, extra: Partial<FailureHandlerInit> = {}): { handler: FailureHandler, store: Map<string, unknown>, signals: unknown[] } {
  const store = new Map<string, unknown>()
  const signals: unknown[] = []
  const handlers = new Map<string, PeerHandler>()
  const rpc: PeerRpc = {
    async call (node, method, params) {
      if (method === 'failure.suspects') return { dead: peerDead[node] ?? [] }
      if (method === 'job.signal' || method === 'job.supersede') { signals.push({ method, ...params as object }); return {} }
      if (method === 'job.list') return peerJobs[node] ?? []
      if (method === 'job.get') {
        const job = (peerJobs[node] ?? []).find(j => j.vpid === (params as { vpid: number }).vpid)
        if (job === undefined) throw new Error(`no job with vpid ${(params as { vpid: number }).vpid} on ${node}`)
        return job
      }
      throw new Error(`unexpected ${method}`)
    },
    async stream () { throw new Error('no streams') },
    handle (method, h) { handlers.set(method, h) }
  }
  const view: ClusterView = { selfName: 'n2', selfId: 2, nodes: () => nodes }
  const jobStore = {
    get: async <T>(k: string) => store.get(k) as T | undefined,
    put: async (k: string, v: unknown) => { store.set(k, v) },
    del: async (k: string) => { store.delete(k) },
    list: async <T>(prefix: string) => [...store].filter(([k]) => k.startsWith(prefix)).map(([key, value]) => ({ key, value: value as T }))
  }
  const handler = new FailureHandler({ rpc, view, store: jobStore, nodes: ['n1', 'n2', 'n3', 'n4'], logger: { info () {}, warn () {} }, startupGraceMs: 0, ...extra })
  return { handler, store, signals }
}

const node = (name: string, state: NodeView['state']): NodeView => ({
  name, id: Number(name.slice(1)), state, self: name === 'n2', load: { runQueue: 0, load1: 0, cpus: 1 }, memory: { freeBytes: 0, totalBytes: 0 }, jobs: 0
})

describe('FailureHandler', () => {
  it('marks the jobs launched here that ran on a majority-dead node lost, and only those', async () => {
    const { handler, store } = handlerWith([node('n2', 'alive'), node('n1', 'dead'), node('n3', 'alive'), node('n4', 'alive')], { n3: ['n1'], n4: ['n1'] })
    store.set('loc/000000002000001', { vpid: 2000001, node: 'n1', state: 'running' })
    store.set('loc/000000002000002', { vpid: 2000002, node: 'n3', state: 'running' })
    store.set('loc/000000002000003', { vpid: 2000003, node: 'n1', state: 'exited' })
    await handler.tick()
    expect(handler.deadNodes()).toEqual(['n1'])
    expect(store.get('loc/000000002000001')).toMatchObject({ state: 'lost' })
    expect(store.get('lost/000000002000001')).toMatchObject({ vpid: 2000001, state: 'lost', node: 'n1', error: 'node n1 died (declared dead by 3 of 4 nodes)' })
    expect(store.get('loc/000000002000002')).toMatchObject({ state: 'running' })
    expect(store.has('lost/000000002000003')).toBe(false)
  })

  it('on the minority side nothing is declared', async () => {
    const { handler, store } = handlerWith([node('n2', 'alive'), node('n1', 'dead'), node('n3', 'dead'), node('n4', 'dead')], {})
    store.set('loc/000000002000001', { vpid: 2000001, node: 'n1', state: 'running' })
    await handler.tick()
    expect(handler.deadNodes()).toEqual([])
    expect(store.get('loc/000000002000001')).toMatchObject({ state: 'running' })
  })

  it('a rejoined node\'s copy of a job that runs elsewhere now (restored from a checkpoint) is superseded: killed, pointing at the live copy', async () => {
    const job = { vpid: 2000001, homeNode: 'n2', node: 'n1', state: 'running' as const }
    const { handler, store, signals } = handlerWith([], {}, { n1: [job], n3: [{ ...job, node: 'n3' }] })
    store.set('loc/000000002000001', { vpid: 2000001, node: 'n3', state: 'running' })
    await handler.reconcile('n1')
    expect(signals).toEqual([{ method: 'job.supersede', vpid: 2000001, node: 'n3' }])
    expect(store.get('loc/000000002000001')).toMatchObject({ node: 'n3' })
  })

  it('a job that moved while its home node was away is not killed when the home node sees its node again', async () => {
    // Home (n2) last heard "runs on n3"; the job then migrated n3 -> n1 while n2 was down, so n3 only has a 'moved' record.
    const job = { vpid: 2000001, homeNode: 'n2', node: 'n1', state: 'running' as const }
    const { handler, store, signals } = handlerWith([], {}, { n1: [job], n3: [{ ...job, node: 'n1', state: 'moved' }] })
    store.set('loc/000000002000001', { vpid: 2000001, node: 'n3', state: 'running' })
    await handler.reconcile('n1')
    expect(signals).toEqual([])
    expect(store.get('loc/000000002000001')).toMatchObject({ node: 'n1', state: 'running' })
  })

  it('restores a lost job only after restoreDelayMs (the fencing head start), and not if its node is back by then', async () => {
    const nodes = [node('n2', 'alive'), node('n1', 'dead'), node('n3', 'alive'), node('n4', 'alive')]
    const restored: number[] = []
    const restore: FailureHandlerInit['restore'] = async r => { restored.push(r.vpid); return { node: 'n3', takenMs: 1 } }
    const { handler, store } = handlerWith(nodes, { n3: ['n1'], n4: ['n1'] }, {}, { restore, restoreDelayMs: 150 })
    store.set('loc/000000002000001', { vpid: 2000001, node: 'n1', state: 'running' })
    await handler.tick()
    expect(store.get('loc/000000002000001')).toMatchObject({ state: 'lost' })
    expect(restored).toEqual([])
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(restored).toEqual([2000001])

    // Another node dies, then is back within the delay: nothing restored (it reconciles instead).
    const back = handlerWith(nodes, { n3: ['n1'], n4: ['n1'] }, {}, { restore, restoreDelayMs: 150 })
    back.store.set('loc/000000002000009', { vpid: 2000009, node: 'n1', state: 'running' })
    await back.handler.tick()
    nodes[1] = node('n1', 'alive')
    await back.handler.tick()
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(restored).toEqual([2000001])
    back.handler.stop()
    handler.stop()
  })
})
