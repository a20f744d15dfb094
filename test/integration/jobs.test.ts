/**
 * The cluster process namespace end to end: a real 3-node cluster (separate daemon processes, real
 * libp2p), jobs launched through the real CLI, isolated in real namespaces and cgroups.
 */
import { chmod, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import type { CliOptions } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { JobInfo, NodeInfo, PsResult } from '../../src/api/schema.js'

const NOBODY = 65534

describe('cluster process namespace (3 real daemons)', () => {
  let c: TestCluster
  let sock: string
  const run = async (args: string[], opts: CliOptions = {}): ReturnType<typeof ssi> => await ssi(sock, args, opts)
  const ps = async (): Promise<JobInfo[]> => (JSON.parse((await run(['ps', '--json'])).stdout) as PsResult).jobs

  beforeAll(async () => {
    c = await makeCluster({ nodes: 3 })
    await chmod(c.dir, 0o755) // other users reach the control socket; authorization is per call
    await c.start()
    sock = c.socket('n1')
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 3, 15_000, '3 alive')
  })
  afterAll(async () => { await c?.stop() })

  it('delivers 100k numbered lines complete and in order, stderr separately, with the exit code', async () => {
    const r = await run(['run', '--node', 'n2', '--', 'sh', '-c', 'seq 1 100000; echo oops >&2; exit 7'])
    expect(r.code).toBe(7)
    const lines = r.stdout.trimEnd().split('\n')
    expect(lines).toHaveLength(100_000)
    expect(lines.every((l, i) => l === String(i + 1))).toBe(true)
    expect(r.stderr).toBe('oops\n')
  })

  it('isolates the job: pid 1 is tini, own hostname, runs as the caller in the caller\'s cwd', async () => {
    const r = await run(['run', '--', 'sh', '-c', 'echo $$ $(cat /proc/1/comm) $(hostname) $(id -u):$(id -g) $(pwd)'], { uid: NOBODY, gid: NOBODY, cwd: '/tmp' })
    expect(r.stderr).toBe('')
    const [pid, init, host, ids, cwd] = r.stdout.trim().split(' ')
    expect(Number(pid)).toBeLessThan(10)
    expect(init).toBe('tini')
    expect(host).toMatch(/^vp\d+$/)
    expect(ids).toBe(`${NOBODY}:${NOBODY}`)
    expect(cwd).toBe('/tmp')
  })

  it('places jobs on every node automatically and lists them from any node', async () => {
    const vpids: number[] = []
    for (let i = 0; i < 6; i++) {
      const r = await run(['run', '-d', '--', 'sleep', '30'])
      expect(r.code).toBe(0)
      vpids.push(Number(r.stdout.trim()))
    }
    const jobs = (await ps()).filter(j => vpids.includes(j.vpid))
    expect(jobs).toHaveLength(6)
    expect(new Set(jobs.map(j => j.node)).size).toBeGreaterThan(1)
    const fromN3 = JSON.parse((await ssi(c.socket('n3'), ['ps', '--json'])).stdout) as PsResult
    expect(fromN3.jobs.map(j => j.vpid)).toEqual(expect.arrayContaining(vpids))
    const killed = await run(['kill', '-KILL', ...vpids.map(String)])
    expect(killed.code).toBe(0)
    for (const v of vpids) expect((await run(['wait', String(v)])).code).toBe(137)
  })

  it('forwards Ctrl-C of `ssi run` to the job and exits 128+N', async () => {
    let pid = 0
    const started = run(['run', '--', 'sh', '-c', 'echo ready; sleep 30'], { onSpawn: p => { pid = p } })
    await eventually(async () => (await ps()).some(j => j.state === 'running' && j.argv.join(' ').includes('echo ready')), 10_000, 'job running')
    process.kill(pid, 'SIGINT')
    const r = await started
    expect(r.stdout).toBe('ready\n')
    expect(r.code).toBe(130)
  })

  it('run -i: a job that ends while stdin still flows ends the command at once, with no stdin error', async () => {
    // Its init (tini) keeps the FIFO open while the job runs, so the writes fail only once it ended.
    const r = await run(['run', '-i', '--node', 'n2', '--', 'sh', '-c', 'head -c 1 >/dev/null; exec 0<&-; sleep 1; echo done'], { input: 'x'.repeat(4 * 1024 * 1024), timeoutMs: 20_000 })
    expect(r).toMatchObject({ code: 0, stdout: 'done\n', stderr: '' })
  })

  it('enforces limits: OOM-kills and reports a job beyond --memory, caps forks with --pids', async () => {
    const oom = await run(['run', '--memory', '32M', '--', 'sh', '-c', 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived'])
    expect(oom.code).toBe(137)
    expect(oom.stderr).toMatch(/out of memory \(limit 32(\.0)? MiB\)/)
    const forks = await run(['run', '--pids', '5', '--', 'sh', '-c', 'for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait'])
    expect(forks.stderr).toMatch(/fork|Resource temporarily unavailable|Cannot/i)
  })

  it('lets only the owner or root signal a job', async () => {
    const r = await run(['run', '-d', '--', 'sleep', '30'])
    const vpid = r.stdout.trim()
    const denied = await run(['kill', vpid], { uid: NOBODY, gid: NOBODY })
    expect(denied.code).not.toBe(0)
    expect(denied.stderr).toMatch(/permission denied/)
    const own = await run(['run', '-d', '--', 'sleep', '30'], { uid: NOBODY, gid: NOBODY })
    expect((await run(['kill', own.stdout.trim()], { uid: NOBODY, gid: NOBODY })).code).toBe(0)
    expect((await run(['kill', vpid])).code).toBe(0)
    expect((await run(['wait', vpid])).code).toBe(143)
  })

  it('rejects bad input with one clear line', async () => {
    const unknownVpid = await run(['kill', '3999999'])
    expect(unknownVpid.code).not.toBe(0)
    expect(unknownVpid.stderr).toMatch(/no job with vpid 3999999/)
    const unknownNode = await run(['run', '--node', 'n9', '--', 'true'])
    expect(unknownNode.stderr).toMatch(/unknown node "n9"/)
    expect(unknownNode.code).toBe(125) // ssi's own error, never a job status
    const plainFile = join(c.dir, 'not-executable')
    await writeFile(plainFile, 'echo hi\n', { mode: 0o644 })
    const notExecutable = await run(['run', '--', plainFile])
    expect(notExecutable.code).toBe(126)
    const notFound = await run(['run', '--', 'no-such-command-xyz'])
    expect(notFound.code).toBe(127)
    expect(notFound.stderr).toMatch(/no-such-command-xyz/)
    const badLimit = await run(['run', '--memory', 'lots', '--', 'true'])
    expect(badLimit.code).toBe(125)
    expect(badLimit.stderr.trim().split('\n')).toHaveLength(1)
    for (const r of [unknownVpid, unknownNode]) expect(r.stderr.trim().split('\n')).toHaveLength(1)
  })

  it('loses nothing when the daemon restarts under a running job', async () => {
    const r = await run(['run', '--node', 'n2', '-d', '--', 'sh', '-c', 'for i in $(seq 1 80); do echo line$i; sleep 0.1; done; exit 5'])
    const vpid = r.stdout.trim()
    await new Promise(resolve => setTimeout(resolve, 800))
    process.kill(await c.pid('n2'), 'SIGKILL')
    // SIGKILL is asynchronous: a start while the old daemon still exits would find it "running".
    await eventually(async () => await c.pid('n2').then(() => false, () => true), 10_000, 'the killed daemon to be gone')
    await c.start(['n2'])
    // Listed again once n2 rejoins; the job may have finished meanwhile (it is not stopped by the restart).
    await eventually(async () => (await ps()).some(j => String(j.vpid) === vpid && ['running', 'exited'].includes(j.state)), 20_000, 'job listed again')
    const waited = await run(['wait', vpid])
    expect(waited.code).toBe(5)
    const lines = Array.from({ length: 80 }, (_, i) => `line${i + 1}`)
    const logs = await run(['logs', vpid])
    expect(logs.stdout.trim().split('\n')).toEqual(lines)
    // A restart after the end: the record is loaded with no runtime handle; its output is still there.
    process.kill(await c.pid('n2'), 'SIGKILL')
    await eventually(async () => await c.pid('n2').then(() => false, () => true), 10_000, 'the killed daemon to be gone')
    await c.start(['n2'])
    await eventually(async () => (await ps()).some(j => String(j.vpid) === vpid && j.state === 'exited'), 20_000, 'the ended job listed again')
    expect((await run(['logs', vpid])).stdout.trim().split('\n')).toEqual(lines)
    expect((await run(['wait', vpid])).code).toBe(5)
  })
})
