/**
 * A 4-node cluster of real daemons, each in its own network and UTS namespace on a bridge, facing
 * what a real cluster faces: partitions, latency, killed and hung nodes, crashed daemons. Each
 * test ends with every job accounted for (running once, or lost) and the cluster whole again.
 * Needs root, iproute2 and util-linux; the migration test also CRIU >= 4.2.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/cluster.js'
import { netnsClient, startNetnsCluster } from '../helpers/netns.js'
import type { NetnsCluster } from '../helpers/netns.js'
import type { NodeInfo } from '../../src/api/schema.js'

const NODES = ['n1', 'n2', 'n3', 'n4']

describe('netns cluster: nodes as separate hosts, faults injected', () => {
  let c: NetnsCluster
  const { cli, ps, allAlive } = netnsClient(() => c)
  const stateOn = async (node: string, vpid: number): Promise<string | undefined> => (await ps(node)).find(j => j.vpid === vpid)?.state
  const view = async (from: string): Promise<Record<string, string>> =>
    Object.fromEntries((await c.call<NodeInfo[]>(from, 'nodes')).map(n => [n.name, n.state]))
  /** Starts `sleep` detached on `node`, launched through `via` (its home node). */
  const startJob = async (via: string, node: string, seconds = 600): Promise<number> => {
    const r = await cli(via, ['run', '-d', '--node', node, '--', 'sleep', String(seconds)])
    expect(r.stderr).toBe('')
    return Number(r.stdout.trim())
  }
  const started: number[] = []

  beforeAll(async () => {
    c = await startNetnsCluster(NODES.length)
  }, 90_000)

  afterEach(async () => {
    await c?.heal()
  })

  afterAll(async () => {
    await c?.stop()
  }, 60_000)

  it('each node has its own hostname and address on the bridge; jobs run in their node\'s namespace', async () => {
    for (const [i, n] of NODES.entries()) {
      const pid = await c.pid(n)
      const { stdout } = await import('node:child_process').then(async cp => await new Promise<{ stdout: string }>((resolve, reject) => {
        cp.execFile('nsenter', ['-t', String(pid), '--uts', 'hostname'], (err, out) => { if (err != null) reject(err); else resolve({ stdout: out }) })
      }))
      expect(stdout.trim()).toBe(n)
      expect(c.address(n)).toMatch(new RegExp(`^10\\.213\\.\\d+\\.${11 + i}$`))
    }
    const nodes = await c.call<NodeInfo[]>('n2', 'nodes')
    expect(nodes.map(n => n.addresses[0]?.replace(/\/p2p\/.*/, '')).sort()).toEqual(NODES.map(n => `/ip4/${c.address(n)}/tcp/7100`))
    const r = await cli('n1', ['run', '--node', 'n3', '--', 'ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'])
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(` ${c.address('n3')}/24 `)
    // Nothing but the bridge joins them: with its link down, a node is cut off.
    await c.isolate('n4')
    await eventually(async () => (await view('n1')).n4 === 'dead', 20_000, 'n4 dead once its link is down')
    await eventually(async () => (await view('n4')).n1 === 'dead', 20_000, 'n1 dead as seen from the cut-off n4')
  })

  it('a partitioned node: the majority declares its jobs lost, the minority does not; healed, one copy runs again', async () => {
    await allAlive()
    const onN1 = await startJob('n2', 'n1') // launched from n2: n2 is its home
    const homedOnN1 = await startJob('n1', 'n3') // its home n1 will be cut off
    started.push(onN1, homedOnN1)
    for (const other of ['n2', 'n3', 'n4']) await c.partition('n1', other)

    await eventually(async () => await stateOn('n2', onN1) === 'lost', 30_000, 'job on n1 lost as seen by the majority')
    expect((await ps('n3')).find(j => j.vpid === onN1)).toMatchObject({ state: 'lost', node: 'n1', homeNode: 'n2', argv: ['sleep', '600'], owner: { uid: 0 } })
    const waited = await cli('n4', ['wait', String(onN1)])
    expect(waited.code).toBe(254)
    expect(waited.stderr).toMatch(new RegExp(`job ${onN1} was lost: node n1 died \\(declared dead by [34] of 4 nodes\\)`))
    // The minority sees the others dead but decides nothing: its job runs on.
    expect(Object.values(await view('n1')).filter(s => s === 'dead')).toHaveLength(3)
    expect(await stateOn('n1', onN1)).toBe('running')
    // A job whose home node is gone stays resolvable from the other nodes.
    const inspect = await cli('n2', ['inspect', '--json', String(homedOnN1)])
    expect(inspect.code).toBe(0)
    expect(JSON.parse(inspect.stdout)).toMatchObject({ vpid: homedOnN1, node: 'n3', state: 'running' })

    await c.heal()
    await allAlive()
    for (const n of NODES) {
      await eventually(async () => await stateOn(n, onN1) === 'running', 30_000, `job back to running as seen from ${n}`)
      const rows = (await ps(n)).filter(j => j.vpid === onN1 || j.vpid === homedOnN1)
      expect(rows.map(j => [j.vpid, j.node, j.state]).sort()).toEqual([[homedOnN1, 'n3', 'running'], [onN1, 'n1', 'running']].sort())
    }
  })

  it('with 50 ms latency and 1 % loss on every node the cluster stays whole and views agree', async () => {
    await allAlive()
    for (const n of NODES) await c.netem(n, { delayMs: 50, lossPercent: 1 })
    const vpid = await startJob('n1', 'n4', 2)
    started.push(vpid)
    const done = await cli('n3', ['wait', String(vpid)])
    expect(done.code).toBe(0)
    await new Promise(resolve => setTimeout(resolve, 3000))
    for (const n of NODES) {
      expect(Object.values(await view(n)).every(s => s === 'alive')).toBe(true)
      expect(await stateOn(n, vpid)).toBe('exited')
    }
  })

  it('a node killed during a job: its job is lost for good; the node restarted rejoins', async () => {
    await allAlive()
    const vpid = await startJob('n2', 'n4')
    await c.kill('n4')
    await eventually(async () => await stateOn('n1', vpid) === 'lost', 30_000, 'job of the killed node lost')
    const waited = await cli('n3', ['wait', String(vpid)])
    expect(waited.code).toBe(254)
    await c.start(['n4'])
    await allAlive()
    // Nothing of it survived on n4: it stays lost, listed once.
    await new Promise(resolve => setTimeout(resolve, 2000))
    for (const n of NODES) expect((await ps(n)).filter(j => j.vpid === vpid).map(j => j.state)).toEqual(['lost'])
  })

  it('a crashed daemon: its jobs are lost while it is gone, re-adopted and running again when it restarts', async () => {
    await allAlive()
    const vpid = await startJob('n2', 'n3')
    await c.killDaemon('n3')
    await eventually(async () => await stateOn('n1', vpid) === 'lost', 30_000, 'job lost while its daemon is down')
    await c.start(['n3'])
    await allAlive()
    await eventually(async () => await stateOn('n1', vpid) === 'running', 30_000, 'job re-adopted')
    expect(await stateOn('n2', vpid)).toBe('running')
    const waiting = cli('n1', ['wait', String(vpid)])
    expect((await cli('n4', ['kill', '-TERM', String(vpid)])).code).toBe(0)
    expect((await waiting).code).toBe(128 + 15)
  })

  it('a hung node (SIGSTOP), idle and during a job: declared dead, then back with its job when continued', async () => {
    await allAlive()
    await c.hang('n2') // idle: no job there
    await eventually(async () => (await view('n1')).n2 === 'dead', 30_000, 'hung idle node dead')
    await c.resume('n2')
    await allAlive()
    const vpid = await startJob('n1', 'n4')
    started.push(vpid)
    await c.hang('n4')
    await eventually(async () => await stateOn('n2', vpid) === 'lost', 30_000, 'job of the hung node lost')
    await c.resume('n4')
    await allAlive()
    for (const n of NODES) await eventually(async () => await stateOn(n, vpid) === 'running', 30_000, `job running again as seen from ${n}`)
  })

  it('migrates a job between two netns nodes with its vpid and whole output', async () => {
    await allAlive()
    const script = 'i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo $i; sleep 0.05; done'
    const r = await cli('n1', ['run', '-d', '--node', 'n1', '--', 'sh', '-c', script])
    const vpid = Number(r.stdout.trim())
    await eventually(async () => (await cli('n2', ['logs', String(vpid)])).stdout.split('\n').length > 5, 15_000, 'first lines')
    const moved = await cli('n3', ['migrate', String(vpid), 'n2'])
    expect(moved.stderr).toBe('')
    expect(moved.code).toBe(0)
    expect(await stateOn('n4', vpid)).toBe('running')
    expect((await ps('n4')).find(j => j.vpid === vpid)?.node).toBe('n2')
    expect((await cli('n4', ['wait', String(vpid)])).code).toBe(0)
    const lines = (await cli('n4', ['logs', String(vpid)])).stdout.trim().split('\n')
    expect(lines).toEqual(Array.from({ length: 100 }, (_, i) => String(i + 1)))
  })
})
