/**
 * A stopped cluster leaves no cgroup of its nodes behind (cgroup v1 and v2): jobs that ended while
 * no daemon watched them (their daemon killed, or stopping) used to leave their (empty) job cgroups
 * and with them the node's `ssi-<cluster>-<node>` dir in every hierarchy.
 * Needs root (cgroups).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { parseV1Mounts } from '../../src/ssi/cgroups/index.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { NodeInfo } from '../../src/api/schema.js'

/** Every `ssi-<cluster>-*` dir in any hierarchy. */
function nodeCgroups (cluster: string): string[] {
  const parents = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? ['/sys/fs/cgroup']
    : [...new Set(parseV1Mounts(readFileSync('/proc/self/mountinfo', 'utf8')).values())]
  return parents.flatMap(p => readdirSync(p).filter(d => d.startsWith(`ssi-${cluster}-`)).map(d => join(p, d)))
}

describe('node cgroups on teardown', () => {
  let c: TestCluster | undefined
  afterAll(async () => { await c?.stop() })

  it('a cluster stopped after its jobs ended unseen (their daemon killed) leaves no ssi-<cluster>-* cgroup', async () => {
    if (process.getuid?.() !== 0) throw new Error('this test needs root (cgroups)')
    c = await makeCluster({ nodes: 2 })
    const cluster = c
    await cluster.start()
    await eventually(async () => (await cluster.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
    const run = async (node: string, argv: string[]): Promise<number> =>
      (await cluster.call<{ vpid: number }>('n1', 'run', { argv, env: {}, cwd: '/tmp', detach: true, node })).vpid
    await run('n1', ['true'])
    const jobs = await Promise.all([1, 2, 3].map(async () => await run('n2', ['sleep', '1'])))
    // n2's daemon dies under its jobs: they end under their shims, and no daemon sees them end.
    process.kill(await cluster.pid('n2'), 'SIGKILL')
    await eventually(async () => jobs.every(vpid => existsSync(join(cluster.dir, 'n2', 'jobs', String(vpid), 'exit'))), 30_000, 'the jobs ended')
    expect(nodeCgroups(cluster.config.name).some(d => d.endsWith('-n2'))).toBe(true)
    await cluster.stop()
    c = undefined
    expect(nodeCgroups(cluster.config.name)).toEqual([])
  })
})
