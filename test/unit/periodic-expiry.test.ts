/**
 * Expiry of held checkpoints (src/node/checkpoint/periodic.ts): the home node's periodic schedule
 * notes when the job ended; `dropHeldAfterEndMs` later (config: jobs.retainFinishedMs +
 * jobs.heldCheckpointAfterReapMs) every live node is told to drop its held checkpoint and the
 * record goes. Not before, not while the holder is down, not once the job was restored; a job
 * already reaped when a round looks counts as ended then. Peers, cluster view and jobs are fakes.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { periodicKey, PeriodicCheckpoints } from '../../src/node/checkpoint/periodic.js'
import type { PeriodicRecord } from '../../src/node/checkpoint/periodic.js'
import { MemoryStateStore } from '../../src/node/store.js'
import { VpidNotFoundError } from '../../src/ssi/jobs/errors.js'
import type { ClusterJobs } from '../../src/ssi/jobs/cluster.js'
import type { ClusterView, NodeView, PeerRpc } from '../../src/ssi/ports.js'
import type { Logger } from '../../src/node/logger.js'

const VPID = 1_000_042
const AFTER = 60_000

interface Fake {
  periodic: PeriodicCheckpoints
  store: MemoryStateStore
  calls: Array<[string, string]>
  states: Record<string, NodeView['state']>
  job: { state?: string, endedMs?: number, gone?: boolean }
}

const running: PeriodicCheckpoints[] = []
afterEach(() => { for (const p of running.splice(0)) p.stop() })

function make (): Fake {
  const store = new MemoryStateStore()
  const calls: Array<[string, string]> = []
  const states: Record<string, NodeView['state']> = { n1: 'alive', n2: 'alive', n3: 'alive' }
  const job: Fake['job'] = { state: 'running' }
  const rpc = {
    call: async (node: string, method: string) => {
      calls.push([node, method])
      if (method === 'ckpt.dump') return { vpid: VPID, node, to: 'n3', takenMs: Date.now(), dumpMs: 5, transferMs: 1, bytes: 100, leftRunning: true }
      return {}
    }
  } as unknown as PeerRpc
  const view: ClusterView = {
    selfName: 'n1',
    selfId: 1,
    nodes: () => Object.entries(states).map(([name, state], i) => ({
      name, id: i + 1, state, self: name === 'n1', jobs: name === 'n3' ? 0 : 1, load: { runQueue: 0, load1: 0, cpus: 2 }, memory: { freeBytes: 1, totalBytes: 1 }
    }))
  }
  const jobs = {
    inspect: async () => {
      if (job.gone === true) throw new VpidNotFoundError(`no job with vpid ${VPID}`)
      return { vpid: VPID, node: 'n2', state: job.state, endedMs: job.endedMs }
    }
  } as unknown as ClusterJobs
  const logger = { info: () => {}, warn: () => {}, debug: () => {}, error: () => {}, child: () => logger } as unknown as Logger
  const periodic = new PeriodicCheckpoints({ selfName: 'n1', store, rpc, view, jobs, logger, dropHeldAfterEndMs: AFTER, sweepMs: 3_600_000 })
  running.push(periodic)
  return { periodic, store, calls, states, job }
}

async function until (what: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await what()) return
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  throw new Error('timed out')
}

const rec = async (f: Fake): Promise<PeriodicRecord | undefined> => await f.store.get<PeriodicRecord>(periodicKey(VPID))
const drops = (f: Fake): string[] => f.calls.filter(c => c[1] === 'ckpt.drop').map(c => c[0]).sort()

/** A job checkpointed once (held on n3), then ended at `endedMs`. */
async function endedJob (endedMs: number): Promise<Fake> {
  const f = make()
  await f.periodic.start()
  await f.periodic.schedule(VPID, 10)
  await until(async () => (await rec(f))?.last?.node === 'n3')
  f.job.state = 'exited'
  f.job.endedMs = endedMs
  await until(async () => (await rec(f))?.ended === true)
  expect((await rec(f))?.endedMs).toBe(endedMs)
  return f
}

describe('held checkpoints of ended jobs expire', () => {
  it('are dropped on every live node, and the record goes, dropHeldAfterEndMs after the job ended; not before', async () => {
    const f = await endedJob(1_000_000)
    expect(await f.periodic.expire(1_000_000 + AFTER - 1)).toEqual([])
    expect(drops(f)).toEqual([])
    expect(await rec(f)).toBeDefined()
    expect(await f.periodic.expire(1_000_000 + AFTER)).toEqual([VPID])
    expect(drops(f)).toEqual(['n1', 'n2', 'n3'])
    expect(await rec(f)).toBeUndefined()
  })

  it('wait while the holder is down, and go once it is back', async () => {
    const f = await endedJob(1_000_000)
    f.states.n3 = 'dead'
    expect(await f.periodic.expire(2_000_000)).toEqual([])
    expect(drops(f)).toEqual([])
    expect(await rec(f)).toBeDefined()
    f.states.n3 = 'alive'
    expect(await f.periodic.expire(2_000_000)).toEqual([VPID])
  })

  it('stay when the job was restored (its schedule resumed)', async () => {
    const f = await endedJob(1_000_000)
    f.job.state = 'running'
    await f.periodic.resume(VPID)
    expect((await rec(f))?.endedMs).toBeUndefined()
    expect(await f.periodic.expire(9_000_000)).toEqual([])
    expect(drops(f)).toEqual([])
  })

  it('a job already reaped when a round looks counts as ended from then', async () => {
    const f = make()
    await f.periodic.start()
    await f.periodic.schedule(VPID, 10)
    await until(async () => (await rec(f))?.last?.node === 'n3')
    f.job.gone = true
    const before = Date.now()
    await until(async () => (await rec(f))?.ended === true)
    const endedMs = (await rec(f))?.endedMs ?? 0
    expect(endedMs).toBeGreaterThanOrEqual(before)
    expect(await f.periodic.expire(endedMs + AFTER - 1)).toEqual([])
    expect(await f.periodic.expire(endedMs + AFTER)).toEqual([VPID])
  })
})
