/**
 * Node failure with periodic checkpoints, on a 4-node netns cluster of real daemons: a job whose
 * node is killed is restored once, by its home node, from its newest checkpoint on a live node,
 * keeping its vpid; `ssi inspect` shows it was rolled back. Needs root, iproute2, CRIU >= 4.2.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/cluster.js'
import { netnsClient, startNetnsCluster } from '../helpers/netns.js'
import type { NetnsCluster } from '../helpers/netns.js'
import type { JobInfo } from '../../src/api/schema.js'

const NODES = ['n1', 'n2', 'n3', 'n4']

describe('netns cluster: a lost job with periodic checkpoints is restored', () => {
  let c: NetnsCluster
  const { cli, ps, allAlive } = netnsClient(() => c)

  beforeAll(async () => {
    c = await startNetnsCluster(NODES.length)
  }, 90_000)

  afterAll(async () => {
    await c?.stop()
  }, 60_000)

  it('a node killed under a job with periodic checkpoints: the job is restored once on a live node, same vpid, rolled back to its checkpoint', async () => {
    const script = 'i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done'
    const r = await cli('n1', ['run', '-d', '--checkpoint-every', '1s', '--node', 'n4', '--', 'sh', '-c', script])
    expect(r.stderr).toBe('')
    const vpid = Number(r.stdout.trim())
    const inspect = async (from: string): Promise<JobInfo> => JSON.parse((await cli(from, ['inspect', '--json', String(vpid)])).stdout) as JobInfo
    const taken = (await eventually(async () => (await inspect('n1')).checkpoint?.takenMs, 30_000, 'a first periodic checkpoint')).value
    await c.kill('n4')
    const recovered = (await eventually(async () => (await inspect('n2')).recovered, 40_000, 'the job restored from its checkpoint')).value
    expect(recovered.fromNode).toBe('n4')
    expect(recovered.node).not.toBe('n4')
    expect(recovered.takenMs).toBeGreaterThanOrEqual(taken)
    expect(recovered.takenMs).toBeLessThan(recovered.atMs)
    const shown = (await cli('n3', ['inspect', String(vpid)])).stdout
    expect(shown).toMatch(/recovered\s+lost with n4, restored on n\d .*: rolled back to \d{4}-\d\d-\d\dT/)
    // 'migrating' while a periodic checkpoint dumps it.
    const live = (j: JobInfo): [string, string] => [j.state === 'migrating' ? 'running' : j.state, j.node]
    for (const n of ['n1', 'n2', 'n3']) {
      expect((await ps(n)).filter(j => j.vpid === vpid).map(live)).toEqual([['running', recovered.node]])
    }
    // The killed node comes back empty: the job still runs once, where it was restored.
    await c.start(['n4'])
    await allAlive()
    await new Promise(resolve => setTimeout(resolve, 2000))
    for (const n of NODES) expect((await ps(n)).filter(j => j.vpid === vpid).map(live)).toEqual([['running', recovered.node]])
    // A periodic checkpoint may hold it ('migrating') for a moment: signals wait for that.
    await eventually(async () => (await cli('n4', ['kill', '-KILL', String(vpid)])).code === 0, 20_000, 'the job killed')
    expect((await cli('n4', ['wait', String(vpid)])).code).toBe(137)
  })
})
