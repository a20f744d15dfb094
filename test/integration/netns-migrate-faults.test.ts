/**
 * Faults in the middle of a migration, and a hung daemon, on a 3-node netns cluster of real
 * daemons (each node its own network + UTS namespace): the whole source node killed after it sent
 * the images, the whole target node killed in the middle of the transfer and after it restored the
 * job, and a node whose daemon hangs (SIGSTOP) under a running job. Each ends with the job accounted
 * for: running on exactly one node (checked against the processes in every node's namespace) or
 * reported lost by `ssi wait`, never twice; its output whole. Points in a migration are reached
 * through SSI_TEST_MIGRATION_HOOK (src/node/migration-hooks.ts). Needs root, iproute2, CRIU >= 4.2.
 */
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/cluster.js'
import { netnsClient, startNetnsCluster } from '../helpers/netns.js'
import type { NetnsCluster } from '../helpers/netns.js'
import type { JobInfo } from '../../src/api/schema.js'

const NODES = ['n1', 'n2', 'n3']
const lines = (n: number): string => Array.from({ length: n }, (_, i) => `${i + 1}\n`).join('')

describe('netns cluster: nodes die in the middle of a migration', () => {
  let c: NetnsCluster
  let hookDir: string
  const { cli, ps, allAlive } = netnsClient(() => c)
  const rows = async (node: string, vpid: number): Promise<Array<[string, string]>> =>
    (await ps(node)).filter(j => j.vpid === vpid).map(j => [j.state, j.node])
  /** The job's shell in each node's namespace: [n1, n2, n3] counts. */
  const copies = async (marker: string): Promise<number[]> => await Promise.all(NODES.map(async n => (await c.processesWith(n, marker)).length))
  /** A job on `node` (home `home`) counting until the file `${marker}-stop` exists, then exiting with `code`. */
  const counting = async (marker: string, node: string, home: string, code: number): Promise<number> => {
    const script = `${marker}=1; i=0; while [ ! -e ${hookDir}/${marker}-stop ]; do i=$((i+1)); echo $i; sleep 0.05; done; exit ${code}`
    const r = await cli(home, ['run', '-d', '--node', node, '--', 'sh', '-c', script])
    expect(r.stderr).toBe('')
    const vpid = Number(r.stdout.trim())
    await eventually(async () => (await cli(home, ['logs', String(vpid)])).stdout.includes('\n3\n'), 30_000, 'first lines')
    return vpid
  }
  /** Stops the counting job and checks its exit status and that its output is 1..N, none lost or repeated. */
  const finish = async (marker: string, vpid: number, code: number, from: string): Promise<void> => {
    // It runs (three more lines) before it is told to stop: a job frozen for most of the test (a
    // hung source) may have printed only a few lines so far.
    const count = async (): Promise<number> => (await cli(from, ['logs', String(vpid)])).stdout.split('\n').length - 1
    const before = await count()
    await eventually(async () => await count() >= before + 3, 30_000, 'the job printing again')
    await writeFile(join(hookDir, `${marker}-stop`), '')
    expect((await cli(from, ['wait', String(vpid)])).code).toBe(code)
    const out = (await cli(from, ['logs', String(vpid)])).stdout
    expect(out).toBe(lines(out.split('\n').length - 1))
    expect(out.split('\n').length).toBeGreaterThan(10)
  }
  /** Like `counting` (exit 4) on n1, home n3, holding ~168 MiB so that a transfer lasts long enough to be cut. */
  const bigJob = async (marker: string): Promise<number> => {
    const perl = `$| = 1; my $x = "${marker}" x (24 * 1024 * 1024 + $$); my $i = 0; until (-e "${hookDir}/${marker}-stop") { $i++; print "$i\\n"; select(undef, undef, undef, 0.05) } exit 4`
    const r = await cli('n3', ['run', '-d', '--node', 'n1', '--', 'perl', '-e', perl])
    const vpid = Number(r.stdout.trim())
    await eventually(async () => (await cli('n3', ['logs', String(vpid)])).stdout.includes('\n3\n'), 30_000, 'first lines')
    return vpid
  }
  /** Resolves once more than 1 MiB of the job's images reached n2. */
  const transferUnderWay = async (vpid: number): Promise<void> => {
    const inDir = join(c.dir, 'n2', 'migrations', 'in', String(vpid))
    await eventually(async () => {
      const sizes = await Promise.all((await readdir(inDir)).map(async f => (await stat(join(inDir, f))).size))
      return sizes.reduce((a, b) => a + b, 0) > 1024 * 1024
    }, 60_000, 'the transfer under way')
  }
  /** Makes the next migration stop at `point` (a hook point) until the test acts; resolves once it is there. */
  const pauseAt = async (point: string): Promise<() => Promise<void>> => {
    await writeFile(join(hookDir, point), '')
    return async () => { await eventually(async () => existsSync(join(hookDir, `${point}.reached`)), 60_000, `migration at ${point}`) }
  }

  beforeAll(async () => {
    c = await startNetnsCluster(NODES.length, async () => {
      hookDir = await mkdtemp('/tmp/ssi-nthook-')
      const hook = join(hookDir, 'hook')
      // Pauses the daemon's migration at the point named by a file in hookDir (once), so the test can
      // kill the node there; every other point passes at once.
      await writeFile(hook, `#!/bin/sh\nif [ -e ${hookDir}/$1 ]; then rm -f ${hookDir}/$1; touch ${hookDir}/$1.reached; sleep 50; fi\nexit 0\n`, { mode: 0o755 })
      // Kept for the whole suite: nodes restarted by a test get it too.
      process.env.SSI_TEST_MIGRATION_HOOK = hook
    })
  }, 90_000)

  afterEach(async () => {
    await c?.heal()
    for (const f of await readdir(hookDir)) if (f !== 'hook') await rm(join(hookDir, f), { force: true })
  })

  afterAll(async () => {
    delete process.env.SSI_TEST_MIGRATION_HOOK
    await c?.stop()
    if (hookDir !== undefined) await rm(hookDir, { recursive: true, force: true })
  }, 60_000)

  it('source node killed after sending the images: the job is lost while the node is down; restarted, the node restores it once, output whole', async () => {
    await allAlive()
    const vpid = await counting('srckill', 'n1', 'n3', 6) // home n3 survives
    const reached = await pauseAt('source-restoring')
    const migrating = cli('n3', ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'])
    await reached()
    await c.kill('n1') // daemon, shims, the hook: the whole host
    expect((await migrating).code).not.toBe(0)
    await eventually(async () => (await rows('n3', vpid))[0]?.[0] === 'lost', 30_000, 'job lost with its node')
    const waited = await cli('n2', ['wait', String(vpid)])
    expect(waited.code).toBe(254)
    expect(waited.stderr).toMatch(new RegExp(`job ${vpid} was lost: node n1 died`))
    expect(await copies('srckill')).toEqual([0, 0, 0])

    // The restarted source finds its journal: the target never ran the job, so it restores it from its images.
    await c.start(['n1'])
    await allAlive()
    for (const n of NODES) await eventually(async () => JSON.stringify(await rows(n, vpid)) === '[["running","n1"]]', 60_000, `job running once on n1 as seen from ${n}`)
    expect(await copies('srckill')).toEqual([1, 0, 0])
    expect(existsSync(join(c.dir, 'n2', 'migrations', 'in', String(vpid)))).toBe(false)
    const inspect = JSON.parse((await cli('n2', ['inspect', '--json', String(vpid)])).stdout) as JobInfo
    expect(inspect.migration).toMatchObject({ from: 'n1', to: 'n2', outcome: 'rolled-back', detail: expect.stringMatching(/restarted during the migration to n2/) })
    await finish('srckill', vpid, 6, 'n2')
  }, 180_000)

  it('target node killed in the middle of the transfer: the job runs on at the source, once, output whole; the target comes back empty', async () => {
    await allAlive()
    const vpid = await bigJob('tgtkill')
    const inDir = join(c.dir, 'n2', 'migrations', 'in', String(vpid))
    const migrating = cli('n3', ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], 120_000)
    await transferUnderWay(vpid)
    await c.kill('n2')
    const moved = await migrating
    expect(moved.code).not.toBe(0)
    // The pages stream to the target while CRIU dumps, so the cut shows in the dump or in the transfer.
    expect(moved.stderr).toMatch(/migration of job \d+ transferring failed: .*; it runs here again|dump of job \d+ failed: /s)
    for (const n of ['n1', 'n3']) expect(await rows(n, vpid)).toEqual([['running', 'n1']])
    expect(await copies('tgtkill')).toEqual([1, 0, 0])
    await c.start(['n2'])
    await allAlive()
    await eventually(async () => !existsSync(inDir), 20_000, 'the partial images removed on the restarted target')
    expect(await copies('tgtkill')).toEqual([1, 0, 0])
    expect(await rows('n2', vpid)).toEqual([['running', 'n1']])
    await finish('tgtkill', vpid, 4, 'n2')
  }, 180_000)

  it('target node killed after restoring the job, before confirming: the source rolls back; one copy runs, output whole', async () => {
    await allAlive()
    const vpid = await counting('rstkill', 'n1', 'n3', 7)
    const reached = await pauseAt('target-restored')
    const migrating = cli('n3', ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'])
    await reached()
    expect(await copies('rstkill')).toEqual([0, 1, 0]) // restored there, unconfirmed
    await c.kill('n2')
    const r = await migrating
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/restoring failed: .*; it runs here again/s)
    for (const n of ['n1', 'n3']) expect(await rows(n, vpid)).toEqual([['running', 'n1']])
    expect(await copies('rstkill')).toEqual([1, 0, 0])
    await c.start(['n2'])
    await allAlive()
    await new Promise(resolve => setTimeout(resolve, 1000))
    expect(await copies('rstkill')).toEqual([1, 0, 0])
    expect(await rows('n2', vpid)).toEqual([['running', 'n1']])
    await finish('rstkill', vpid, 7, 'n2')
  }, 180_000)

  it('target node hung (SIGSTOP) in the middle of the transfer: the source gives up once it is declared dead and runs the job on; continued, the target drops the partial images and takes the job', async () => {
    await allAlive()
    const vpid = await bigJob('tgthang')
    const inDir = join(c.dir, 'n2', 'migrations', 'in', String(vpid))
    const startedMs = Date.now()
    const migrating = cli('n3', ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], 120_000)
    await transferUnderWay(vpid)
    await c.hang('n2')
    const r = await migrating
    // Declared dead after failureDetection.deadAfterMs: the source does not wait for a hung target.
    expect(Date.now() - startedMs).toBeLessThan(60_000)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/migration of job \d+ transferring failed: .*node n2 stopped answering and was declared dead.*; it runs here again/s)
    for (const n of ['n1', 'n3']) expect(await rows(n, vpid)).toEqual([['running', 'n1']])
    expect(await copies('tgthang')).toEqual([1, 0, 0])
    await c.resume('n2')
    await allAlive()
    // Its receive broke: the continued target drops the partial images at once, not after incomingTtlMs.
    await eventually(async () => !existsSync(inDir), 20_000, 'the partial images removed on the continued target')
    expect(await copies('tgthang')).toEqual([1, 0, 0])
    expect(await rows('n2', vpid)).toEqual([['running', 'n1']])
    // Nothing of the broken migration blocks the next one between the same two nodes.
    const again = await cli('n3', ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], 120_000)
    expect(again.stderr).toBe('')
    expect(again.code).toBe(0)
    for (const n of NODES) await eventually(async () => JSON.stringify(await rows(n, vpid)) === '[["running","n2"]]', 30_000, `job running on n2 as seen from ${n}`)
    expect(await copies('tgthang')).toEqual([0, 1, 0])
    await finish('tgthang', vpid, 4, 'n3')
  }, 240_000)

  it('source node hung (SIGSTOP) in the middle of the transfer: lost while hung; continued, the job runs on exactly one node, output whole', async () => {
    await allAlive()
    const vpid = await bigJob('srchang')
    const migrating = cli('n3', ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], 120_000)
    await transferUnderWay(vpid)
    await c.hang('n1')
    await eventually(async () => (await rows('n3', vpid))[0]?.[0] === 'lost', 30_000, 'job lost while its node hangs')
    // Still frozen on n1 (the pages stream while CRIU dumps) or dumped: nowhere else.
    expect((await copies('srchang')).slice(1)).toEqual([0, 0])
    await c.resume('n1')
    await migrating // its outcome as the CLI saw it depends on when n3 hung up on n1; what counts is below
    await allAlive()
    // Either the continued source finished the migration or rolled it back: one of the two.
    const where = (await eventually(async () => { const r = await rows('n3', vpid); return r.length === 1 && r[0]?.[0] === 'running' ? r[0][1] : undefined }, 60_000, 'the job running again')).value
    expect(['n1', 'n2']).toContain(where)
    for (const n of NODES) await eventually(async () => JSON.stringify(await rows(n, vpid)) === JSON.stringify([['running', where]]), 60_000, `job running once on ${where} as seen from ${n}`)
    expect(await copies('srchang')).toEqual(NODES.map(n => (n === where ? 1 : 0)))
    await finish('srchang', vpid, 4, 'n3')
  }, 180_000)

  it('a node whose daemon hangs (SIGSTOP) under a running job: lost for the others while its job runs on; continued, it is running again, once', async () => {
    await allAlive()
    const vpid = await counting('dhang', 'n2', 'n1', 0)
    await c.hangDaemon('n2')
    await eventually(async () => (await rows('n1', vpid))[0]?.[0] === 'lost', 30_000, 'job lost as seen by its home node')
    expect(await rows('n3', vpid)).toEqual([['lost', 'n2']])
    expect(await copies('dhang')).toEqual([0, 1, 0]) // nothing restored it elsewhere: no checkpoint
    await c.resume('n2')
    await allAlive()
    for (const n of NODES) await eventually(async () => JSON.stringify(await rows(n, vpid)) === '[["running","n2"]]', 30_000, `job running again as seen from ${n}`)
    expect(await copies('dhang')).toEqual([0, 1, 0])
    await finish('dhang', vpid, 0, 'n3')
  }, 120_000)
  it('a partition while a job with periodic checkpoints runs on the minority side: frozen there (fenced), restored once by the majority; healed, one copy runs', async () => {
    await allAlive()
    const r = await cli('n1', ['run', '-d', '--checkpoint-every', '1s', '--node', 'n3', '--', 'sh', '-c', 'fenced=1; i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done'])
    const vpid = Number(r.stdout.trim())
    const inspect = async (from: string): Promise<JobInfo> => JSON.parse((await cli(from, ['inspect', '--json', String(vpid)])).stdout) as JobInfo
    await eventually(async () => (await inspect('n1')).checkpoint?.takenMs, 30_000, 'a first periodic checkpoint')
    for (const other of ['n1', 'n2']) await c.partition('n3', other)

    // The minority freezes the job before the majority restores it: never two running copies.
    await eventually(async () => (await c.processStates('n3', 'fenced=1')).join() === 'T', 20_000, 'the job frozen on the minority side')
    const frozenSeenMs = Date.now()
    // `ps` on the minority side says so, rather than `running`.
    const psOnN3 = async (): Promise<JobInfo | undefined> => (JSON.parse((await cli('n3', ['ps', '--json'])).stdout) as { jobs: JobInfo[] }).jobs.find(j => j.vpid === vpid)
    await eventually(async () => (await psOnN3())?.fenced === true, 10_000, 'ps on n3 showing the job fenced')
    expect((await cli('n3', ['ps'])).stdout).toMatch(new RegExp(`^${vpid} +root +fenced +n3 `, 'm'))
    const recovered = (await eventually(async () => (await inspect('n2')).recovered, 40_000, 'the job restored by the majority')).value
    expect(recovered).toMatchObject({ fromNode: 'n3' })
    expect(['n1', 'n2']).toContain(recovered.node)
    const at = NODES.indexOf(recovered.node)
    expect(frozenSeenMs).toBeLessThan(recovered.atMs)
    expect(await c.processStates('n3', 'fenced=1')).toEqual(['T'])
    expect(await copies('fenced=1')).toEqual(NODES.map((n, i) => (i === at || n === 'n3' ? 1 : 0)))
    expect((await c.processStates(recovered.node, 'fenced=1'))[0]).not.toBe('T')

    await c.heal()
    await allAlive()
    // Back in the majority, n3 learns from the home node that the job runs elsewhere: its frozen copy is killed.
    await eventually(async () => (await copies('fenced=1'))[2] === 0, 30_000, 'the stale copy on n3 gone')
    const live = (j: [string, string]): [string, string] => [j[0] === 'migrating' ? 'running' : j[0], j[1]]
    for (const n of NODES) {
      await eventually(async () => JSON.stringify((await rows(n, vpid)).map(live)) === JSON.stringify([['running', recovered.node]]), 30_000, `one running copy as seen from ${n}`)
    }
    expect(await copies('fenced=1')).toEqual(NODES.map((_, i) => (i === at ? 1 : 0)))
    await eventually(async () => (await cli('n3', ['kill', '-KILL', String(vpid)])).code === 0, 20_000, 'the job killed')
    expect((await cli('n2', ['wait', String(vpid)])).code).toBe(137)
  }, 150_000)
})
