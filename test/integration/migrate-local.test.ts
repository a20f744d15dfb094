/**
 * Stop-and-copy at the runtime level (no daemons): a counter job started by the real spawner
 * (tini, private /proc, mount namespace, its own cgroup) is dumped by CRIU, its output copied into
 * a new job dir, and restored through the shim's restore mode as another job id in another cgroup,
 * with stdout/stderr redirected to the new files by inherit_fd. Needs root, tini, gcc and CRIU >= 4.2.
 */
import { execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Criu, findCriu } from '../../src/migration/criu/index.js'
import { createCgroupManager, parseV1Mounts } from '../../src/ssi/cgroups/index.js'
import type { CgroupManager } from '../../src/ssi/cgroups/index.js'
import { ShimJobSpawner, findTini } from '../../src/ssi/spawner/index.js'
import type { JobHandle, JobSpec } from '../../src/ssi/spawner/index.js'
import { restoreCommand } from '../../src/migration/restore-command.js'

const PREFIX = `ssi-migrate-local-${process.pid}`
let root: string
let criuPath: string
let criu: Criu
let cgroups: CgroupManager
let spawner: ShimJobSpawner
const handles: JobHandle[] = []

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

async function until<T> (what: string, probe: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

const lines = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : [])

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('migration tests need root (namespaces, cgroups, CRIU)')
  findTini()
  execFileSync(join(import.meta.dirname, '../../scripts/build-shim.sh'), { stdio: 'pipe' })
  criuPath = (await findCriu()).path
  root = mkdtempSync(join(tmpdir(), 'ssi-migrate-local-'))
  chmodSync(root, 0o755)
  criu = new Criu({ criuPath, workDir: root })
  cgroups = createCgroupManager({ prefix: PREFIX })
  spawner = new ShimJobSpawner({ cgroups, pollIntervalMs: 50 })
})

afterAll(async () => {
  for (const h of handles) await spawner.release(h).catch(() => {})
  const parents = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? [`/sys/fs/cgroup/${PREFIX}`]
    : [...new Set(parseV1Mounts(readFileSync('/proc/self/mountinfo', 'utf8')).values())].map((m) => `${m}/${PREFIX}`)
  for (const dir of parents) if (existsSync(dir)) rmdirSync(dir)
  if (root !== undefined) rmSync(root, { recursive: true, force: true })
})

function counterSpec (id: string, jobsRoot: string): JobSpec {
  return {
    id,
    argv: ['sh', '-c', 'i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo $i; echo e$i >&2; sleep 0.02; done; exit 5'],
    env: { PATH: '/usr/bin:/bin' },
    cwd: '/',
    uid: 0,
    gid: 0,
    groups: [],
    hostname: 'counter',
    limits: { pids: 32 },
    stdin: false,
    jobsRoot
  }
}

describe('stop-and-copy of a spawner job (runtime level)', () => {
  it('dumps a job, restores it as another job id in its own cgroup, output continues in the new files', async () => {
    const srcRoot = join(root, 'src')
    const dstRoot = join(root, 'dst')
    const job = await spawner.spawn(counterSpec('m1', srcRoot))
    handles.push(job)
    await until('some output', () => (lines(job.stdoutPath).length >= 5 ? true : undefined))

    const images = join(root, 'images')
    mkdirSync(images)
    await criu.dump({ pid: job.hostPid, imagesDir: images, external: ['mnt[]'], manageCgroups: 'IGNORE' })
    const killed = await spawner.waitExit(job)
    expect(killed.signal).toBe(9) // what the source must not report as the job's exit
    const frozenAt = lines(job.stdoutPath).length

    const dstDir = join(dstRoot, 'm2')
    mkdirSync(dstDir, { recursive: true })
    copyFileSync(job.stdoutPath, join(dstDir, 'stdout'))
    copyFileSync(job.stderrPath, join(dstDir, 'stderr'))
    const pidFile = join(dstDir, 'restored.pid')
    const command = restoreCommand({
      criuPath,
      imagesDir: images,
      pidFile,
      logFile: join(dstDir, 'restore.log'),
      stdio: [{ oldPath: job.stdoutPath, newPath: join(dstDir, 'stdout') }, { oldPath: job.stderrPath, newPath: join(dstDir, 'stderr') }]
    })
    const restored = await spawner.restore({ id: 'm2', jobsRoot: dstRoot, command, pidFile, stdin: false, limits: { pids: 32 } })
    handles.push(restored)
    expect(await cgroups.pids('m2')).toContain(restored.hostPid)

    const exit = await spawner.waitExit(restored)
    expect(exit).toMatchObject({ code: 5, oomKilled: false })
    const out = lines(restored.stdoutPath)
    expect(out).toEqual(Array.from({ length: 60 }, (_, i) => String(i + 1)))
    expect(lines(restored.stderrPath)).toEqual(Array.from({ length: 60 }, (_, i) => `e${i + 1}`))
    expect(lines(job.stdoutPath).length).toBe(frozenAt) // the old file got nothing after the dump
    expect(frozenAt).toBeLessThan(60)
  }, 30_000)
})
