/**
 * Container-host suite: three ssi nodes, each in its own Docker container (own root filesystem
 * imported from this host's files, own network stack and PID namespace) on an internal Docker
 * network. Real daemons, real libp2p over the container network, real CRIU inside the containers;
 * the CLI runs inside the containers (`docker exec`). Needs root, a Docker engine
 * (scripts/provision-docker.sh) and the CRIU bundle (scripts/provision.sh).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { getContainerRuntimeClient } from 'testcontainers'
import { eventually } from '../helpers/cluster.js'
import { ensureNodeImage } from './image.js'
import { startContainerCluster } from './cluster.js'
import type { ContainerCluster } from './cluster.js'
import type { JobInfo, PsResult } from '../../src/api/schema.js'

const lines = (n: number, prefix = ''): string => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}\n`).join('')

describe('container hosts (Docker, real daemons, real CRIU)', () => {
  let c: ContainerCluster

  const ps = async (node: string): Promise<JobInfo[]> => {
    const r = await c.ssi(node, ['ps', '--json'])
    if (r.code !== 0) throw new Error(`ssi ps on ${node}: ${r.stderr}`)
    return (JSON.parse(r.stdout) as PsResult).jobs
  }
  const job = async (node: string, vpid: number): Promise<JobInfo | undefined> => (await ps(node)).find(j => j.vpid === vpid)
  const logs = async (node: string, vpid: number): Promise<string> => (await c.ssi(node, ['logs', String(vpid)])).stdout
  /**
   * The job's shell (`sh -c <script with marker>`, not its tini) in the node's container. A child
   * the shell forked for `sleep` carries the same command line until it execs: not counted.
   */
  const processesWith = async (node: string, marker: string): Promise<string[]> => {
    const rows = (await c.exec(node, ['ps', '-eo', 'pid=,ppid=,args='])).stdout.split('\n')
      .map(l => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l)).filter(m => m !== null)
      .map(m => ({ pid: m[1], ppid: m[2], args: m[3] as string }))
      .filter(r => r.args.startsWith('sh -c ') && r.args.includes(marker))
    return rows.filter(r => !rows.some(p => p.pid === r.ppid)).map(r => r.args)
  }
  /** Starts `sh -c script` on `node` through the CLI of `from` (the job's home node). */
  const runJob = async (node: string, script: string, from = node): Promise<number> => {
    const r = await c.ssi(from, ['run', '-d', '--node', node, '--', 'sh', '-c', script])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    return Number(r.stdout.trim())
  }

  /** Makes the next migration on `node` wait at hook `point`; the returned function resolves once it is there. */
  const pauseAt = async (node: string, point: string): Promise<() => Promise<void>> => {
    expect((await c.exec(node, ['sh', '-c', `: > /tmp/hook-${point}`])).code).toBe(0)
    return async () => { await eventually(async () => (await c.exec(node, ['ls', `/tmp/hook-${point}.reached`])).code === 0, 60_000, `migration at ${point} on ${node}`) }
  }
  /** The job's output is 1..N (N > 10): none lost, none repeated. */
  const counted = (out: string): void => {
    expect(out).toBe(lines(out.split('\n').length - 1))
    expect(out.split('\n').length).toBeGreaterThan(10)
  }

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('the container suite needs root (CRIU, cgroups, Docker)')
    try { await getContainerRuntimeClient() } catch (err) {
      throw new Error(`the container suite needs a Docker engine: run scripts/provision-docker.sh (${(err as Error).message})`)
    }
    const image = await ensureNodeImage()
    c = await startContainerCluster(image.tag, 3)
    for (const n of c.nodes) {
      await eventually(async () => (await c.nodesSeenBy(n)).filter(x => x.state === 'alive').length === 3, 60_000, `3 nodes alive as seen by ${n}`)
    }
  }, 240_000)

  afterAll(async () => { await c?.stop() }, 60_000)

  it('every node sees all three alive at their container addresses; hosts share no filesystem', async () => {
    for (const n of c.nodes) {
      const seen = await c.nodesSeenBy(n)
      expect(seen.map(x => [x.name, x.state]).sort()).toEqual([['n1', 'alive'], ['n2', 'alive'], ['n3', 'alive']])
      for (const peer of seen) expect(peer.addresses.some(a => a.startsWith(`/ip4/${c.ip(peer.name)}/tcp/7000/`))).toBe(true)
    }
    expect(new Set(c.nodes.map(n => c.ip(n))).size).toBe(3)
    expect((await c.exec('n1', ['sh', '-c', 'echo here > /tmp/only-on-n1 && cat /proc/sys/kernel/hostname'])).stdout.trim()).toBe('n1')
    expect((await c.exec('n2', ['cat', '/tmp/only-on-n1'])).code).not.toBe(0)
    expect((await c.exec('n2', ['ls', '/var/lib/ssi'])).stdout.split('\n').filter(l => l !== '')).toEqual(['n2'])
  })

  it('migrates a job n1 -> n2 -> n3 -> n1 across containers (stop-copy twice, then post-copy): same vpid, the process really moves, output and exit status kept', async () => {
    const marker = 'cmig'
    const script = `${marker}=1; i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo $i; echo e$i >&2; sleep 0.05; done; exit 3`
    const vpid = await runJob('n1', script)
    await eventually(async () => (await logs('n1', vpid)).split('\n').length > 10, 20_000, 'first lines')
    expect(await processesWith('n1', marker)).toHaveLength(1)

    let from = 'n1'
    for (const [to, mode] of [['n2', 'stop-copy'], ['n3', 'stop-copy'], ['n1', 'post-copy']] as const) {
      const r = await c.ssi(from, ['migrate', '--json', '--mode', mode, String(vpid), to])
      if (r.code !== 0) expect.fail(`${r.stderr}\n${to}:\n${await c.diagnostics(to)}\n${from}:\n${await c.diagnostics(from)}`)
      if (mode === 'stop-copy') expect(r.stderr).toBe('')
      else expect(r.stderr).toMatch(/page pull complete/)
      const report = JSON.parse(r.stdout) as Record<string, unknown>
      expect(report).toMatchObject({ vpid, from, node: to, mode })
      expect(report.bytes).toBeGreaterThan(0)
      // The image crossed hosts: the process now lives in the target container only.
      expect(await processesWith(to, marker)).toHaveLength(1)
      expect(await processesWith(from, marker)).toHaveLength(0)
      for (const n of c.nodes) expect(await job(n, vpid)).toMatchObject({ node: to, state: 'running', homeNode: 'n1' })
      from = to
    }

    const waited = await c.ssi('n2', ['wait', String(vpid)])
    expect(waited.code).toBe(3)
    const out = await c.ssi('n3', ['logs', String(vpid)])
    expect(out.stdout).toBe(lines(400))
    expect(out.stderr).toBe(lines(400, 'e'))
    expect((await ps('n1')).filter(j => j.vpid === vpid)).toHaveLength(1)
  }, 150_000)

  it('a container killed mid-job is seen dead by the survivors; its job is lost, theirs and their migrations go on', async () => {
    const victim = 'n3'
    const doomed = await runJob(victim, 'sleep 120', 'n1') // home n1, runs on n3
    await eventually(async () => (await job('n1', doomed))?.state === 'running', 20_000, 'job on the victim running')
    // Runs until /tmp/stop exists in the container it runs in (each container has its own /tmp).
    const survivorJob = await runJob('n2', 'i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo $i; sleep 0.05; done; exit 5')
    await eventually(async () => (await logs('n2', survivorJob)).length > 0, 20_000, 'survivor job output')

    // A third job is in the middle of a migration from the victim to n2 when the victim dies:
    // dumped there, images sent, not yet restored on n2.
    const inFlight = await runJob(victim, 'cinflight=1; i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done', 'n1')
    await eventually(async () => (await logs('n1', inFlight)).length > 0, 20_000, 'in-flight job output')
    const reached = await pauseAt(victim, 'source-restoring')
    const migrating = c.ssi('n1', ['migrate', '--mode', 'stop-copy', String(inFlight), 'n2'])
    await reached()

    await c.kill(victim)
    expect((await migrating).code).not.toBe(0)
    for (const n of ['n1', 'n2']) {
      await eventually(async () => (await c.nodesSeenBy(n)).find(x => x.name === victim)?.state === 'dead', 30_000, `${victim} dead as seen by ${n}`)
      expect((await c.nodesSeenBy(n)).filter(x => x.state === 'alive').map(x => x.name).sort()).toEqual(['n1', 'n2'].sort())
    }
    // Two of three nodes see n3 dead, a majority: the job's home node marks it lost.
    for (const n of ['n1', 'n2']) await eventually(async () => (await job(n, doomed))?.state === 'lost', 30_000, `job ${doomed} lost as seen by ${n}`)
    const waited = await c.ssi('n2', ['wait', String(doomed)])
    expect(waited.code).toBe(254)
    expect(waited.stderr).toMatch(new RegExp(`job ${doomed} was lost: node ${victim} died`))
    // The job caught mid-migration is lost with its source, and runs nowhere: n2 never restored it.
    for (const n of ['n1', 'n2']) await eventually(async () => (await job(n, inFlight))?.state === 'lost', 30_000, `job ${inFlight} lost as seen by ${n}`)
    expect((await c.ssi('n1', ['wait', String(inFlight)])).code).toBe(254)
    for (const n of ['n1', 'n2']) expect(await processesWith(n, 'cinflight')).toHaveLength(0)

    // The survivors still work together: move the surviving job n2 -> n1 and let it finish there.
    const moved = await c.ssi('n2', ['migrate', String(survivorJob), 'n1'])
    expect(moved.stderr).toBe('')
    expect(moved.code).toBe(0)
    expect(await processesWith('n1', '/tmp/stop')).toHaveLength(1)
    expect((await c.exec('n2', ['sh', '-c', 'echo > /tmp/stop'])).code).toBe(0) // the old host: no effect
    await new Promise(resolve => setTimeout(resolve, 500))
    expect((await job('n2', survivorJob))?.state).toBe('running')
    expect((await c.exec('n1', ['sh', '-c', 'echo > /tmp/stop'])).code).toBe(0)
    expect((await c.ssi('n1', ['wait', String(survivorJob)])).code).toBe(5)
    counted(await logs('n2', survivorJob))
  }, 120_000)

  it('a target container killed after restoring a migrating job, before confirming: the source runs it on, once, output whole', async () => {
    // n3 died in the test before; n1 and n2 are left.
    const vpid = await runJob('n1', 'ctgt=1; i=0; while [ ! -e /tmp/ctgt-stop ]; do i=$((i+1)); echo $i; sleep 0.05; done; exit 6')
    await eventually(async () => (await logs('n1', vpid)).split('\n').length > 11, 20_000, 'ten lines')
    const reached = await pauseAt('n2', 'target-restored')
    const migrating = c.ssi('n1', ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'])
    await reached()
    expect(await processesWith('n2', 'ctgt')).toHaveLength(1) // restored there, not confirmed
    expect(await processesWith('n1', 'ctgt')).toHaveLength(0)
    await c.kill('n2')
    const r = await migrating
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/restoring failed: .*; it runs here again/s)
    expect(await job('n1', vpid)).toMatchObject({ node: 'n1', state: 'running', migration: { from: 'n1', to: 'n2', outcome: 'rolled-back' } })
    expect(await processesWith('n1', 'ctgt')).toHaveLength(1)
    expect((await c.exec('n1', ['sh', '-c', 'echo > /tmp/ctgt-stop'])).code).toBe(0)
    expect((await c.ssi('n1', ['wait', String(vpid)])).code).toBe(6)
    counted(await logs('n1', vpid))
  }, 120_000)
})
