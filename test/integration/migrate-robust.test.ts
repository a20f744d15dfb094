/**
 * Migration's "nothing lost" guarantees on real daemons and real CRIU: a deterministic job moved
 * back and forth ten times ends byte-identical to an unmigrated run with the same status and the
 * same in-namespace PIDs; limits still hold on the target (cgroup files, OOM, pids cap); several
 * migrations from one node at once all succeed. Needs root and CRIU >= 4.2.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import type { CliOptions, CliResult } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { JobInfo, NodeInfo, PsResult } from '../../src/api/schema.js'
import { processTree } from '../../src/migration/precheck.js'

/** In-namespace pids of the job's long-lived processes (NSpid's last field), sorted: what a restore must keep. */
async function innerPids (hostPid: number): Promise<number[]> {
  const pids: number[] = []
  for (const pid of await processTree(hostPid)) {
    if (['seq', 'sleep'].includes((await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim())) continue
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
    const ns = /^NSpid:\s*(.+)$/m.exec(status)?.[1]?.trim().split(/\s+/)
    if (ns !== undefined) pids.push(Number(ns[ns.length - 1]))
  }
  return pids.sort((a, b) => a - b)
}

/** The cgroup v1 file (or v2 file) of a job's tree for one controller. */
async function cgroupFile (hostPid: number, controller: string, v1File: string, v2File: string): Promise<string> {
  const lines = (await readFile(`/proc/${hostPid}/cgroup`, 'utf8')).trim().split('\n')
  const v1 = lines.map(l => l.split(':')).find(([, ctrls]) => (ctrls ?? '').split(',').includes(controller))
  if (v1 !== undefined) return (await readFile(`/sys/fs/cgroup/${controller}${v1[2] ?? ''}/${v1File}`, 'utf8')).trim()
  const v2 = lines.find(l => l.startsWith('0::'))?.slice(3) ?? ''
  return (await readFile(`/sys/fs/cgroup${v2}/${v2File}`, 'utf8')).trim()
}

describe('migration keeps everything (real daemons, real CRIU)', () => {
  let c: TestCluster
  let work: string
  const leftover: number[] = []
  const run = async (args: string[], opts: CliOptions = {}): Promise<CliResult> => await ssi(c.socket('n1'), args, opts)
  const job = async (vpid: number): Promise<JobInfo | undefined> =>
    (JSON.parse((await run(['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid)
  const start = async (node: string, argv: string[], extra: string[] = []): Promise<number> => {
    const r = await run(['run', '-d', '--node', node, ...extra, '--', ...argv])
    expect(r.stderr).toBe('')
    const vpid = Number(r.stdout.trim())
    leftover.push(vpid)
    return vpid
  }
  const migrate = async (vpid: number, to: string): Promise<void> => {
    const r = await run(['migrate', String(vpid), to], { timeoutMs: 120_000 })
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
  }

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('migration tests need root (CRIU)')
    work = await mkdtemp(join(tmpdir(), 'ssi-robust-'))
    c = await makeCluster({ nodes: 3 })
    await c.start()
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 3, 30_000, '3 alive')
  })
  afterAll(async () => {
    if (leftover.length > 0) await run(['kill', '-KILL', ...leftover.map(String)]).catch(() => {})
    for (const v of leftover) await run(['wait', String(v)], { timeoutMs: 10_000 }).catch(() => {})
    await c?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('a deterministic job moved n1 <-> n2 ten times ends byte-identical to an unmigrated run, same status, same vpid and pids', async () => {
    // A pipeline (sh generator | sha256sum) printing numbered progress, then the digest once the
    // test says go: the output does not depend on how long the migrations take.
    const go = join(work, 'go-hash')
    // The generator waits for go at its end, so the pipeline's processes live through every hop.
    const script = `exec 3>&1; i=0
      { while [ $i -lt 300 ]; do i=$((i+1)); seq $((i*500)) $((i*500+499)); echo "progress $i" >&3; echo "err $i" >&2; sleep 0.02; done
        while [ ! -e ${go} ]; do sleep 0.05; done; } | sha256sum
      echo done; exit 7`
    const vpid = await start('n1', ['sh', '-c', script])
    await eventually(async () => (await run(['logs', String(vpid)])).stdout.includes('progress 3\n'), 20_000, 'first progress')
    const first = await job(vpid)
    // tini, sh, the generator's subshell and sha256sum.
    const pids = (await innerPids(first?.hostPid ?? -1)).slice(0, 4)
    expect(pids.slice(0, 2)).toEqual([1, 2])
    const following = run(['logs', '-f', String(vpid)], { timeoutMs: 180_000 })
    for (let hop = 1; hop <= 10; hop++) {
      const to = hop % 2 === 1 ? 'n2' : 'n1'
      await migrate(vpid, to)
      const now = await job(vpid)
      expect(now).toMatchObject({ vpid, node: to, state: 'running' })
      // seq and sleep come and go (a fork not yet exec'd still looks like sh); the long-lived four keep their pids.
      expect(await innerPids(now?.hostPid ?? -1)).toEqual(expect.arrayContaining(pids))
    }
    await writeFile(go, '')
    const migrated = await run(['wait', String(vpid)], { timeoutMs: 60_000 })
    const logs = await run(['logs', String(vpid)])

    const refVpid = await start('n3', ['sh', '-c', script])
    const reference = await run(['wait', String(refVpid)], { timeoutMs: 60_000 })
    const refLogs = await run(['logs', String(refVpid)])
    expect(reference.code).toBe(7)
    expect(migrated.code).toBe(7)
    expect(refLogs.stdout).toMatch(/progress 300\n[0-9a-f]{64} {2}-\ndone\n$/)
    expect(logs.stdout).toBe(refLogs.stdout)
    expect(logs.stderr).toBe(refLogs.stderr)
    expect((await following).stdout).toBe(refLogs.stdout)
  }, 180_000)

  it('limits hold on the target: cgroup files, the pids cap, and an OOM kill reported as oom', async () => {
    const go = join(work, 'go-limits')
    // perl: a failed fork is a value it can count, not the end of the shell.
    const script = `while [ ! -e ${go} ]; do sleep 0.05; done
      exec perl -e '$| = 1; my $f = 0; for (1..40) { my $p = fork(); if (!defined $p) { $f++ } elsif ($p == 0) { sleep 60; exit 0 } }
        print "forks failed: $f\\n"; my $n = 300_000_000 + $f; my $x = "a" x $n; print "survived\\n"'`
    const vpid = await start('n1', ['sh', '-c', script], ['--memory', '64M', '--pids', '16'])
    await migrate(vpid, 'n2')
    const info = await job(vpid)
    expect(info).toMatchObject({ node: 'n2', state: 'running', limits: { memoryBytes: 64 * 2 ** 20, pids: 16 } })
    const hostPid = info?.hostPid ?? -1
    expect(await cgroupFile(hostPid, 'memory', 'memory.limit_in_bytes', 'memory.max')).toBe(String(64 * 2 ** 20))
    expect(await cgroupFile(hostPid, 'pids', 'pids.max', 'pids.max')).toBe('16')
    expect((await readFile(`/proc/${hostPid}/cgroup`, 'utf8'))).toContain('-n2/')
    await writeFile(go, '')
    const waited = await run(['wait', String(vpid)], { timeoutMs: 60_000 })
    expect(waited.code).not.toBe(0)
    const end = await job(vpid)
    expect(end).toMatchObject({ node: 'n2', state: 'oom', exit: { oomKilled: true } })
    const logs = await run(['logs', String(vpid)])
    // 16 pids: tini, perl and 14 children; the other 26 forks failed.
    expect({ out: logs.stdout, err: logs.stderr }).toMatchObject({ out: expect.stringMatching(/^forks failed: 2[0-9]\n$/) })
  }, 120_000)

  it('runs several migrations from one node at once, to one target and to another; a second one of the same job is refused', async () => {
    const argv = ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done']
    const vpids = [await start('n1', argv), await start('n1', argv), await start('n1', argv), await start('n1', argv)]
    const targets = ['n2', 'n2', 'n3', 'n3']
    await eventually(async () => (await run(['logs', String(vpids[3])])).stdout.includes('\n3\n'), 20_000, 'jobs running')
    const again = run(['migrate', String(vpids[0]), 'n3'], { timeoutMs: 120_000 })
    const all = await Promise.all(vpids.map(async (v, i) => await run(['migrate', String(v), targets[i] ?? ''], { timeoutMs: 120_000 })))
    const dup = await again
    const first = all[0]
    // Exactly one of the two migrations of vpids[0] won; the other was refused, never half-done.
    expect([first?.code, dup.code].sort()).toEqual([0, 1])
    expect((first?.code === 0 ? dup : first)?.stderr).toMatch(/already (migrating|runs on)/)
    for (const [i, r] of all.slice(1).entries()) expect({ i, code: r.code, err: r.stderr }).toEqual({ i, code: 0, err: '' })
    const where0 = first?.code === 0 ? 'n2' : 'n3'
    for (const [i, v] of vpids.entries()) {
      expect(await job(v)).toMatchObject({ node: i === 0 ? where0 : targets[i], state: 'running' })
      const before = (await run(['logs', String(v)])).stdout.length
      await eventually(async () => (await run(['logs', String(v)])).stdout.length > before, 20_000, `job ${v} output continuing`)
      const lines = (await run(['logs', String(v)])).stdout.trim().split('\n')
      expect(lines).toEqual(lines.map((_, k) => String(k + 1)))
    }
    const ps = (await run(['ps', '--json'])).stdout
    for (const v of vpids) expect(ps.match(new RegExp(`"vpid": ${v},`, 'g'))).toHaveLength(1)
  }, 120_000)
})
