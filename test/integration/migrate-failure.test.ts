/**
 * Migration when things break, on real daemons and real CRIU: the target daemon SIGKILLed in the
 * middle of the image transfer, the source daemon SIGKILLed before and after the target restored
 * the job (its journal lets the restarted source settle it), image data corrupted on the wire and
 * on the target's disk after it arrived.
 * Each time the job ends up on exactly one node with all its output and its exit status.
 * Daemons are killed at exact points through SSI_TEST_MIGRATION_HOOK (src/node/migration-hooks.ts).
 * Needs root and CRIU >= 4.2.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import type { CliResult } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import { criuUsing, jobCgroupDirs, psJob, tearDown, twoNodes } from '../helpers/two-nodes.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { JobInfo, NodeInfo, PsResult } from '../../src/api/schema.js'

const lines = (n: number, prefix = ''): string => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}\n`).join('')

/** Starts a 2-node cluster; `env` goes to n1's daemon only. */
async function cluster (env: Record<string, string> = {}, extra?: Record<string, unknown>): Promise<TestCluster> {
  return await twoNodes({ n1env: env, ...(extra === undefined ? {} : { extra }) })
}

describe('migration failures (real daemons, real CRIU)', () => {
  let c: TestCluster | undefined
  const leftover: number[] = []
  const hookDirs: string[] = []
  afterEach(async () => {
    for (const d of hookDirs.splice(0)) await rm(d, { recursive: true, force: true })
    if (c === undefined) return
    await tearDown(c, leftover)
    c = undefined
  })

  const job = async (node: string, vpid: number): Promise<JobInfo | undefined> => await psJob(c as TestCluster, node, vpid)
  const start = async (script: string): Promise<number> => {
    const r = await ssi(c?.socket('n1') ?? '', ['run', '-d', '--node', 'n1', '--', 'sh', '-c', script])
    expect(r.stderr).toBe('')
    const vpid = Number(r.stdout.trim())
    leftover.push(vpid)
    await eventually(async () => (await ssi(c?.socket('n1') ?? '', ['logs', String(vpid)])).stdout.includes('\n3\n'), 30_000, 'first lines')
    return vpid
  }
  /** The daemon's pid, and a promise that resolves once that process is gone. */
  const gone = async (node: string): Promise<void> => {
    const pid = await c?.pid(node)
    await eventually(async () => { try { process.kill(pid ?? -1, 0); return false } catch { return true } }, 30_000, `${node} gone`)
  }
  const counting = (n: number, code: number): string => `i=0; while [ $i -lt ${n} ]; do i=$((i+1)); echo $i; echo e$i >&2; sleep 0.03; done; exit ${code}`

  it('target SIGKILLed mid-transfer: the job runs on at the source with all its output; nothing of it is left on the target', async () => {
    c = await cluster()
    // ~256 MiB of memory, so the transfer lasts long enough to be cut.
    const vpid = await start(`exec perl -e '$| = 1; my $x = "a" x (256 * 1024 * 1024 + $$); for my $i (1..150) { print "$i\\n"; print STDERR "e$i\\n"; select(undef, undef, undef, 0.03) } exit 4'`)
    const inDir = join(c.dir, 'n2', 'migrations', 'in', String(vpid))
    const n2pid = await c.pid('n2')
    const migrating = ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    // Kill n2 as soon as some of the images (but not all) are there.
    await eventually(async () => {
      const sizes = await Promise.all((await readdir(inDir)).map(async f => (await stat(join(inDir, f))).size))
      return sizes.reduce((a, b) => a + b, 0) > 1024 * 1024
    }, 60_000, 'the transfer under way')
    // The target's CRIU started when the migration was prepared and waits for the images.
    expect((await criuUsing(`${inDir}.restore`)).length).toBeGreaterThan(0)
    process.kill(n2pid, 'SIGKILL')
    const r = await migrating
    expect(r.code).not.toBe(0)
    // Streamed pages (migration.streamPages) break during the dump, which lets the tree run on; files break while sent.
    expect(r.stderr).toMatch(/dump of job \d+ failed: streaming the pages to n2 failed: |migration of job \d+ transferring failed: sending the images to n2 failed: .*; it runs here again/s)
    expect(await job('n1', vpid)).toMatchObject({ node: 'n1', state: 'running', migration: { from: 'n1', to: 'n2', outcome: 'rolled-back' } })
    // On the target: no process of the job. Its restore, started when the migration was prepared
    // (migration.earlyRestore), failed with its daemon (CRIU reading its held inventory saw EOF);
    // what that left (the job's dir and an empty cgroup) goes, with the images, once it restarts.
    await eventually(async () => (await criuUsing(`${inDir}.restore`)).length === 0, 10_000, 'no CRIU left restoring')
    await c.start(['n2'])
    expect(existsSync(inDir)).toBe(false)
    expect(existsSync(`${inDir}.restore`)).toBe(false)
    const cgroups = await jobCgroupDirs(c, 'n2', vpid)
    await eventually(async () => cgroups.every(dir => !existsSync(dir)) && !existsSync(join(c?.dir ?? '', 'n2', 'jobs', String(vpid))), 20_000, 'the restore\'s leftovers removed')
    const waited = await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })
    expect(waited.code).toBe(4)
    const logs = await ssi(c.socket('n1'), ['logs', String(vpid)])
    expect(logs.stdout).toBe(lines(150))
    expect(logs.stderr).toBe(lines(150, 'e'))
    expect((await job('n2', vpid))?.node).toBe('n1')
  }, 180_000)

  for (const when of ['before', 'after'] as const) {
    it(`source SIGKILLed ${when} the target restored the job: the restarted source settles it on exactly one node`, async () => {
      const dir = await mkdtemp('/tmp/ssi-hook-')
      hookDirs.push(dir)
      const hook = join(dir, 'hook')
      // Kills its parent (the daemon) once, at the point named in the file `point`.
      await writeFile(hook, `#!/bin/sh\nif [ "$1" = "$(cat ${dir}/point 2>/dev/null)" ]; then rm -f ${dir}/point; kill -9 $PPID; sleep 10; fi\nexit 0\n`, { mode: 0o755 })
      c = await cluster({ SSI_TEST_MIGRATION_HOOK: hook })
      const vpid = await start(counting(200, 9))
      // 'source-restoring' runs after the transfer, before the target is told to restore;
      // 'source-moved' after the target restored it, before the source commits.
      await writeFile(join(dir, 'point'), when === 'before' ? 'source-restoring' : 'source-moved')
      const n1gone = gone('n1')
      const r = await ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
      expect(r.code).not.toBe(0)
      await n1gone
      await c.start(['n1'])
      const expected = when === 'before' ? 'n1' : 'n2'
      const settled = await eventually(async () => {
        const all = (JSON.parse((await ssi(c?.socket('n1') ?? '', ['ps', '--json'])).stdout) as PsResult).jobs.filter(j => j.vpid === vpid)
        return all.length === 1 && ['running', 'exited'].includes(all[0]?.state ?? '') && all[0]?.node === expected ? all[0] : undefined
      }, 90_000, `job settled on ${expected}`)
      expect(['running', 'exited']).toContain(settled.value.state)
      expect(settled.value.migration).toMatchObject(when === 'before'
        ? { from: 'n1', to: 'n2', outcome: 'rolled-back', detail: expect.stringMatching(/restarted during the migration to n2 .*n2 did not run it \(incoming\): restored here/) }
        : { from: 'n1', to: 'n2', outcome: 'moved' })
      const inspect = await ssi(c.socket('n1'), ['inspect', String(vpid)])
      expect(inspect.stdout).toMatch(when === 'before' ? /migration +n1 -> n2 rolled-back .*restarted during the migration/ : /migration +n1 -> n2 moved/)
      // Exactly one copy: the other node does not run it.
      const other = when === 'before' ? 'n2' : 'n1'
      expect((JSON.parse((await ssi(c.socket(other), ['ps', '--json'])).stdout) as PsResult).jobs.filter(j => j.vpid === vpid)).toHaveLength(1)
      await eventually(async () => !existsSync(join(c?.dir ?? '', 'n1', 'migrations', 'out', String(vpid))), 10_000, 'images removed')
      const waited = await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })
      expect(waited.code).toBe(9)
      const logs = await ssi(c.socket('n1'), ['logs', String(vpid)])
      expect(logs.stdout).toBe(lines(200))
      expect(logs.stderr).toBe(lines(200, 'e'))
    }, 240_000)
  }

  it('source SIGKILLed after the target restored the job, which moves on to a third node meanwhile: the restarted source counts it moved, no second copy', async () => {
    const dir = await mkdtemp('/tmp/ssi-hook-')
    hookDirs.push(dir)
    const hook = join(dir, 'hook')
    await writeFile(hook, `#!/bin/sh\nif [ "$1" = "$(cat ${dir}/point 2>/dev/null)" ]; then rm -f ${dir}/point; kill -9 $PPID; sleep 10; fi\nexit 0\n`, { mode: 0o755 })
    c = await makeCluster({ nodes: 3 })
    process.env.SSI_TEST_MIGRATION_HOOK = hook
    try { await c.start(['n1']) } finally { delete process.env.SSI_TEST_MIGRATION_HOOK }
    await c.start(['n2', 'n3'])
    await eventually(async () => (await c?.call<NodeInfo[]>('n1', 'nodes'))?.filter(n => n.state === 'alive').length === 3, 30_000, '3 alive')
    const vpid = await start(counting(300, 6))
    // Killed after n2 restored and confirmed it, before its journal says so: it still says 'restoring'.
    await writeFile(join(dir, 'point'), 'source-moved')
    const n1gone = gone('n1')
    expect((await ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })).code).not.toBe(0)
    await n1gone
    const onward = await ssi(c.socket('n2'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n3'], { timeoutMs: 120_000 })
    expect(onward.stderr).toBe('')
    // n2 no longer runs it, but its record says that n1's migration brought it there: n1 must not restore its images.
    await c.start(['n1'])
    await eventually(async () => !existsSync(join(c?.dir ?? '', 'n1', 'migrations', 'out', String(vpid))), 60_000, 'n1 settled its journal')
    const copies = (JSON.parse((await ssi(c.socket('n1'), ['ps', '--json'])).stdout) as PsResult).jobs.filter(j => j.vpid === vpid)
    expect(copies.map(j => j.node), JSON.stringify(copies)).toEqual(['n3'])
    const n1procs = join((await jobCgroupDirs(c, 'n1', vpid))[0] ?? '', 'cgroup.procs')
    expect(existsSync(n1procs) ? (await readFile(n1procs, 'utf8')).trim() : '').toBe('')
    expect((await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(6)
    expect((await ssi(c.socket('n1'), ['logs', String(vpid)])).stdout).toBe(lines(300))
  }, 240_000)

  it('target SIGKILLed after restoring, before confirming: the source rolls back; the restarted target kills its unconfirmed copy', async () => {
    const dir = await mkdtemp('/tmp/ssi-hook-')
    hookDirs.push(dir)
    const hook = join(dir, 'hook')
    await writeFile(hook, `#!/bin/sh\nif [ "$1" = "target-restored" ]; then kill -9 $PPID; sleep 10; fi\nexit 0\n`, { mode: 0o755 })
    c = await makeCluster({ nodes: 2 })
    await c.start(['n1'])
    process.env.SSI_TEST_MIGRATION_HOOK = hook
    try { await c.start(['n2']) } finally { delete process.env.SSI_TEST_MIGRATION_HOOK }
    await eventually(async () => (await c?.call<NodeInfo[]>('n1', 'nodes'))?.filter(n => n.state === 'alive').length === 2, 30_000, '2 alive')
    const vpid = await start(counting(400, 8)) // ~12 s: the copy on n2 would still run when checked
    const r = await ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/restoring failed: .*; it runs here again/s)
    expect(await job('n1', vpid)).toMatchObject({ node: 'n1', state: 'running' })
    const cgroupOnN2 = join((await jobCgroupDirs(c, 'n2', vpid))[0] ?? '', 'cgroup.procs')
    // Its shim killed the copy it held for n2's daemon as soon as that daemon died: it never ran next to the rolled-back job.
    const copyGone = async (): Promise<boolean> => !existsSync(cgroupOnN2) || (await readFile(cgroupOnN2, 'utf8')).trim() === ''
    await eventually(copyGone, 3_000, 'the copy on n2 killed while n2 is down')
    // Without the hook this time; the restarted n2 cleans up what is left of the copy it never confirmed.
    await c.start(['n2'])
    await eventually(copyGone, 30_000, 'the copy on n2 gone')
    expect((await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(8)
    expect((await ssi(c.socket('n1'), ['logs', String(vpid)])).stdout).toBe(lines(400))
  }, 180_000)

  it('with migration.recheckBeforeRestore, images corrupted on the target\'s disk after they arrived are refused before `criu restore`; the job resumes on the source', async () => {
    const dir = await mkdtemp('/tmp/ssi-hook-')
    hookDirs.push(dir)
    const hook = join(dir, 'hook')
    c = await makeCluster({ nodes: 2, extra: { migration: { recheckBeforeRestore: true } } })
    // On the target (n2), once the images are in: overwrite 8 bytes of the largest image in place.
    await writeFile(hook, `#!/bin/sh\nif [ "$1" = target-received ]; then f=$(ls -S "${c.dir}"/n2/migrations/in/$2/*.img | head -1); printf 'CORRUPT!' | dd of="$f" bs=1 seek=64 conv=notrunc 2>/dev/null; echo "$f" > ${dir}/corrupted; fi\nexit 0\n`, { mode: 0o755 })
    await c.start(['n1'])
    process.env.SSI_TEST_MIGRATION_HOOK = hook
    try { await c.start(['n2']) } finally { delete process.env.SSI_TEST_MIGRATION_HOOK }
    await eventually(async () => (await c?.call<NodeInfo[]>('n1', 'nodes'))?.filter(n => n.state === 'alive').length === 2, 30_000, '2 alive')
    const vpid = await start(counting(150, 6))
    const r = await ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    expect(r.code).not.toBe(0)
    expect(existsSync(join(dir, 'corrupted'))).toBe(true)
    expect(r.stderr).toMatch(/changed on disk after they arrived: .*\.img is corrupt \(sha256 mismatch\).*; it runs here again/)
    expect(await job('n1', vpid)).toMatchObject({ node: 'n1', state: 'running' })
    expect((await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(6)
    const logs: CliResult = await ssi(c.socket('n1'), ['logs', String(vpid)])
    expect(logs.stdout).toBe(lines(150))
  }, 120_000)

  it('a target that stops taking image data (alive, answering heartbeats) is given up after migration.transferIdleMs; the job runs on at the source, nothing left on the target', async () => {
    c = await cluster({ SSI_TEST_FAULTS: 'stall-images' }, { migration: { transferIdleMs: 2000 } })
    const vpid = await start(counting(150, 3))
    const startedMs = Date.now()
    const r = await ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    expect(Date.now() - startedMs).toBeLessThan(30_000)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/transferring failed: sending the images to n2 failed: .*n2 took no data and sent no answer for 2000 ms.*; it runs here again/s)
    expect(await job('n1', vpid)).toMatchObject({ node: 'n1', state: 'running' })
    await eventually(async () => !existsSync(join(c?.dir ?? '', 'n2', 'migrations', 'in', String(vpid))), 10_000, 'nothing left on n2')
    expect((await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(3)
    expect((await ssi(c.socket('n1'), ['logs', String(vpid)])).stdout).toBe(lines(150))
  }, 120_000)

  it('corrupted image data is detected and refused; the job resumes on the source with all its output', async () => {
    c = await cluster({ SSI_TEST_FAULTS: 'corrupt-images' })
    const vpid = await start(counting(150, 5))
    const r = await ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/transferring failed: .*(crc32 mismatch|sha256 mismatch|corrupt).*; it runs here again/)
    expect(await job('n1', vpid)).toMatchObject({ node: 'n1', state: 'running' })
    const inDir = join(c.dir, 'n2', 'migrations', 'in', String(vpid))
    expect(existsSync(inDir)).toBe(false)
    // The restore the target started at the prepare got no inventory: CRIU, its dir, the job's dir and cgroup are gone.
    expect(existsSync(`${inDir}.restore`)).toBe(false)
    expect(await criuUsing(`${inDir}.restore`)).toEqual([])
    expect(existsSync(join(c.dir, 'n2', 'jobs', String(vpid)))).toBe(false)
    for (const dir of await jobCgroupDirs(c, 'n2', vpid)) expect(existsSync(dir)).toBe(false)
    expect((await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(5)
    const logs: CliResult = await ssi(c.socket('n1'), ['logs', String(vpid)])
    expect(logs.stdout).toBe(lines(150))
    expect(logs.stderr).toBe(lines(150, 'e'))
  }, 120_000)
})
