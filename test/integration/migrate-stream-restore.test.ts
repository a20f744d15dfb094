/**
 * Stop-copy with migration.streamRestore (real daemons, real CRIU): the target restores while the
 * images arrive (`criu restore --stream` through src/migration/image-streamer.ts) and holds the job
 * stopped until every file verified. Memory and output survive moves back and forth; a transfer
 * cut by the target's death, or corrupted, leaves the job running on the source with all its
 * output and nothing of it on the target.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import type { TestCluster } from '../helpers/cluster.js'
import { eventually } from '../helpers/cluster.js'
import { jobCgroupDirs, psJob, tearDown, twoNodes } from '../helpers/two-nodes.js'
import type { JobInfo } from '../../src/api/schema.js'

const STREAM = { migration: { streamRestore: true } }
const lines = (n: number, prefix = ''): string => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}\n`).join('')

/** A 2-node cluster restoring while receiving; `env` goes to n1's daemon only, `n2env(its dir)` to n2's. */
async function cluster (env: Record<string, string> = {}, n2env?: (dir: string) => Record<string, string>): Promise<TestCluster> {
  return await twoNodes({ extra: STREAM, n1env: env, ...(n2env === undefined ? {} : { n2env }) })
}

describe('stop-copy restoring while the images arrive (migration.streamRestore)', () => {
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
  const start = async (argv: string[], firstOutput: string): Promise<number> => {
    const r = await ssi(c?.socket('n1') ?? '', ['run', '-d', '--node', 'n1', '--', ...argv], { cwd: '/tmp' })
    expect(r.stderr).toBe('')
    const vpid = Number(r.stdout.trim())
    leftover.push(vpid)
    await eventually(async () => (await ssi(c?.socket('n1') ?? '', ['logs', String(vpid)])).stdout.includes(firstOutput), 30_000, 'first output')
    return vpid
  }
  /** No restored tree, cgroup or job dir of vpid on n2. */
  const nothingOnN2 = async (vpid: number): Promise<void> => {
    for (const dir of await jobCgroupDirs(c as TestCluster, 'n2', vpid)) expect(existsSync(dir)).toBe(false)
  }

  it('moves a job back and forth with its memory and output intact, restoring through the image streamer; it runs only once the images verified', async () => {
    // On n2, once the images verified and before CRIU is let go on: wait until CRIU restored the
    // tree (its log reaches the post-restore scripts), then the size of the job's output twice,
    // 0.5 s apart. A job that ran already would have printed meanwhile.
    const hookDir = await mkdtemp(join(tmpdir(), 'ssi-stream-hook-'))
    hookDirs.push(hookDir)
    const hook = join(hookDir, 'hook.sh')
    const sizes = join(hookDir, 'sizes')
    const hookScript = [
      '#!/bin/sh',
      '[ "$1" = target-restore-gated ] || exit 0',
      'dir=$SSI_TEST_N2/jobs/$2',
      'i=0; until grep -q "Running post-restore scripts" "$dir/restore.log" 2>/dev/null || [ $i -ge 400 ]; do i=$((i+1)); sleep 0.05; done',
      'a=$(stat -c %s "$dir/stdout"); sleep 0.5; b=$(stat -c %s "$dir/stdout")',
      `echo "$a $b" >> ${sizes}`,
      'exit 0'
    ].join('\n') + '\n'
    await writeFile(hook, hookScript, { mode: 0o755 })
    c = await cluster({}, dir => ({ SSI_TEST_MIGRATION_HOOK: hook, SSI_TEST_N2: join(dir, 'n2') }))
    // 48 MiB of varied bytes; every 0.2 s the job prints a counter and their sha256.
    const script = 'import hashlib,time\nb=bytearray(range(256))*196608\ni=0\nwhile True:\n i+=1\n print(i,hashlib.sha256(b).hexdigest(),flush=True)\n time.sleep(0.2)'
    const vpid = await start(['/usr/bin/python3', '-c', script], '\n')
    for (const to of ['n2', 'n1', 'n2', 'n1']) {
      const moved = await ssi(c.socket('n1'), ['migrate', '--json', '--mode', 'stop-copy', String(vpid), to], { timeoutMs: 60_000 })
      expect(moved.stderr).toBe('')
      expect(JSON.parse(moved.stdout)).toMatchObject({ node: to, bytesDuringDump: 0 }) // no following: sent after the dump
      expect(await job('n1', vpid)).toMatchObject({ node: to, state: 'running' })
      // CRIU read the images from our streamer (its log says so at level 4).
      const log = await readFile(join(c.dir, to, 'jobs', String(vpid), 'restore.log'), 'utf8')
      expect(log).toContain('Dismissing the image streamer')
    }
    // Twice on n2: restored, and printing nothing while the gate held it.
    const seen = (await readFile(sizes, 'utf8')).trim().split('\n').map(l => l.split(' ').map(Number))
    expect(seen.length).toBe(2)
    for (const [a, b] of seen) expect(b).toBe(a)
    const out = async (): Promise<string[]> => (await ssi(c?.socket('n1') ?? '', ['logs', String(vpid)])).stdout.trim().split('\n')
    const before = (await out()).length
    const all = (await eventually(async () => { const l = await out(); return l.length > before + 2 ? l : undefined }, 15_000, 'output after the moves')).value
    expect(all.map(l => Number(l.split(' ')[0]))).toEqual(all.map((_, i) => i + 1)) // none lost, none twice
    expect(new Set(all.map(l => l.split(' ')[1])).size).toBe(1) // the same memory throughout
  }, 180_000)

  it('a process the job had stopped stays stopped after the move; the rest runs on', async () => {
    c = await cluster()
    const vpid = await start(['sh', '-c', 'sleep 1000 & pid=$!; sleep 0.3; kill -STOP $pid; while :; do echo tick; sleep 0.1; done'], 'tick\ntick\n')
    const moved = await ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 60_000 })
    expect(moved.stderr).toBe('')
    const procs = join((await jobCgroupDirs(c, 'n2', vpid))[0] ?? '', 'cgroup.procs')
    const states = new Map<string, string>()
    for (const pid of (await readFile(procs, 'utf8')).trim().split('\n')) {
      const cmd = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replaceAll('\0', ' ').trim()
      states.set(cmd, (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.[0] ?? '?')
    }
    expect(states.get('sleep 1000'), JSON.stringify([...states])).toBe('T')
    const ticks = async (): Promise<number> => (await ssi(c?.socket('n1') ?? '', ['logs', String(vpid)])).stdout.split('\n').length
    const before = await ticks()
    await eventually(async () => (await ticks()) > before + 2, 10_000, 'ticks on n2')
  }, 60_000)

  it('target SIGKILLed mid-transfer: the job runs on at the source with all its output; nothing of it is left on the target', async () => {
    c = await cluster()
    const vpid = await start(['sh', '-c', 'exec perl -e \'$| = 1; my $x = "a" x (384 * 1024 * 1024 + $$); for my $i (1..150) { print "$i\\n"; print STDERR "e$i\\n"; select(undef, undef, undef, 0.03) } exit 4\''], '\n3\n')
    const inDir = join(c.dir, 'n2', 'migrations', 'in', String(vpid))
    const n2pid = await c.pid('n2')
    const migrating = ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    // Killed once CRIU reads pages on n2 (some have arrived) and before they all did.
    await eventually(async () => {
      const names = await readdir(inDir).catch(() => [] as string[])
      const pages = await Promise.all(names.filter(n => n.startsWith('pages-')).map(async f => (await stat(join(inDir, f))).size))
      return pages.reduce((a, b) => a + b, 0) > 4 * 1024 * 1024
    }, 60_000, 'pages arriving')
    process.kill(n2pid, 'SIGKILL')
    const r = await migrating
    expect(r.code, r.stdout + r.stderr).not.toBe(0)
    // Usually while the images are sent; on a loaded machine the last of them may have gone before n2 died.
    expect(r.stderr).toMatch(/migration of job \d+ (transferring failed: sending the images to n2 failed: |restoring failed: ).*; it runs here again/s)
    expect(await job('n1', vpid)).toMatchObject({ node: 'n1', state: 'running', migration: { outcome: 'rolled-back' } })
    await nothingOnN2(vpid)
    await c.start(['n2'])
    expect(existsSync(inDir)).toBe(false)
    expect((await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(4)
    const logs = await ssi(c.socket('n1'), ['logs', String(vpid)])
    expect(logs.stdout).toBe(lines(150))
    expect(logs.stderr).toBe(lines(150, 'e'))
  }, 180_000)

  it('corrupted image data is refused (the stopped copy on the target never runs); the job resumes on the source with all its output', async () => {
    c = await cluster({ SSI_TEST_FAULTS: 'corrupt-images' })
    const vpid = await start(['sh', '-c', 'i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo $i; echo e$i >&2; sleep 0.03; done; exit 5'], '\n3\n')
    const r = await ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/transferring failed: .*(crc32 mismatch|sha256 mismatch|corrupt).*; it runs here again/)
    expect(await job('n1', vpid)).toMatchObject({ node: 'n1', state: 'running' })
    await nothingOnN2(vpid)
    expect((await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(5)
    const logs = await ssi(c.socket('n1'), ['logs', String(vpid)])
    expect(logs.stdout).toBe(lines(150))
    expect(logs.stderr).toBe(lines(150, 'e'))
  }, 120_000)
})
