/**
 * ClusterJobs.runAttached: start and output in one job.run call, `started` before any output; with a
 * node that lacks job.run, job.start then job.output. A one-process fake PeerRpc plays node n2.
 */
import { describe, expect, it } from 'vitest'
import { MemoryStateStore } from '../../src/node/store.js'
import { ClusterJobs } from '../../src/ssi/jobs/cluster.js'
import { locKey } from '../../src/ssi/jobs/record.js'
import { PeerCallError } from '../../src/ssi/ports.js'
import { VpidAllocator } from '../../src/ssi/vpid.js'
import type { LocalJobs } from '../../src/ssi/jobs/local.js'
import type { JobRecord } from '../../src/ssi/jobs/record.js'
import type { NodeView, PeerCallOptions, PeerHandler, PeerRpc, PeerStreamOptions } from '../../src/ssi/ports.js'

const nodeView = (name: string, self: boolean): NodeView => ({
  name, id: Number(name.slice(1)), state: 'alive', self, jobs: 0, load: { runQueue: 0, load1: 0, cpus: 2 }, memory: { freeBytes: 8e9, totalBytes: 16e9 }
})

type Remote = (method: string, params: Record<string, unknown>, emit: (e: unknown) => Promise<void>) => Promise<unknown>

/** n2's side: each call is answered by `remote`; what was called is logged. */
class FakeRpc implements PeerRpc {
  readonly calls: string[] = []
  constructor (private readonly remote: Remote) {}
  handle (_method: string, _handler: PeerHandler): void {}
  async call (node: string, method: string, params: unknown, opts: PeerCallOptions = {}): Promise<unknown> {
    return await this.stream(node, method, params, { ...opts, onEvent: () => {} })
  }

  async stream (_node: string, method: string, params: unknown, opts: PeerStreamOptions): Promise<unknown> {
    this.calls.push(method)
    return await this.remote(method, params as Record<string, unknown>, async (e) => { await opts.onEvent(e) })
  }
}

function setup (remote: Remote): { jobs: ClusterJobs, rpc: FakeRpc, store: MemoryStateStore } {
  const store = new MemoryStateStore()
  const rpc = new FakeRpc(remote)
  const jobs = new ClusterJobs({
    rpc, store, local: {} as unknown as LocalJobs, allocator: new VpidAllocator(store, 1, () => false),
    view: { selfName: 'n1', selfId: 1, nodes: () => [nodeView('n1', true), nodeView('n2', false)] },
    logger: { warn () {} }
  })
  return { jobs, rpc, store }
}

const record = (p: Record<string, unknown>, state: JobRecord['state'], extra: Partial<JobRecord> = {}): JobRecord => ({
  vpid: p.vpid as number, owner: p.owner as JobRecord['owner'], argv: p.argv as string[], cwd: '/tmp', hostname: `vp${String(p.vpid)}`,
  limits: {}, node: 'n2', homeNode: 'n1', state, createdMs: 1, stdin: false, ...extra
})
const req = { argv: ['true'], env: {}, cwd: '/tmp', limits: {}, stdin: false, node: 'n2' }
const owner = { uid: 0, gid: 0, groups: [0], user: 'root' }
const out = (text: string): { fd: 1, data: Uint8Array } => ({ fd: 1, data: new TextEncoder().encode(text) })

describe('runAttached', () => {
  it('starts and follows in one job.run call, telling `started` before any output', async () => {
    const { jobs, rpc, store } = setup(async (method, p, emit) => {
      expect(method).toBe('job.run')
      await emit({ started: record(p, 'running') })
      await emit(out('a'))
      await emit(out('b'))
      return { record: record(p, 'exited', { exit: { code: 0, oomKilled: false } }) }
    })
    const seen: string[] = []
    const last = await jobs.runAttached(req, owner, {
      started: async (job) => { await new Promise(resolve => setTimeout(resolve, 10)); seen.push(`started ${job.state}`) },
      onChunk: (e) => { seen.push(new TextDecoder().decode(e.data)) }
    })
    expect(seen).toEqual(['started running', 'a', 'b'])
    expect(last?.state).toBe('exited')
    expect(rpc.calls).toEqual(['job.run'])
    expect((await store.get<{ state: string }>(locKey(last?.vpid ?? 0)))?.state).toBe('running') // kept when started
  })

  it('falls back to job.start and job.output (from offset 0) on a node without job.run', async () => {
    const { jobs, rpc } = setup(async (method, p, emit) => {
      if (method === 'job.run') throw new PeerCallError('unknown peer method job.run', 'UnknownMethodError', 'n2')
      if (method === 'job.start') return record(p, 'running')
      expect(method).toBe('job.output')
      expect([p.follow, p.stdoutOffset, p.stderrOffset]).toEqual([true, 0, 0])
      await emit(out('x'))
      return { record: record(p, 'exited', { exit: { code: 3, oomKilled: false } }) }
    })
    const seen: string[] = []
    const last = await jobs.runAttached(req, owner, { started: async () => { seen.push('started') }, onChunk: (e) => { seen.push(new TextDecoder().decode(e.data)) } })
    expect(seen).toEqual(['started', 'x'])
    expect(last?.exit?.code).toBe(3)
    expect(rpc.calls).toEqual(['job.run', 'job.start', 'job.output'])
  })

  it('records a start that failed as failed, and throws its error', async () => {
    const { jobs, store } = setup(async () => { throw new PeerCallError('ssi: true: command not found', 'JobStartError', 'n2') })
    let started = false
    await expect(jobs.runAttached(req, owner, { started: async () => { started = true }, onChunk: () => {} })).rejects.toThrow(/command not found/)
    expect(started).toBe(false)
    const locs = await store.list<{ state: string }>('loc/')
    expect(locs.map(l => l.value.state)).toEqual(['failed'])
  })
})
