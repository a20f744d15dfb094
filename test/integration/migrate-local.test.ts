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
import { findExternalFiles } from '../../src/migration/stdio-files.js'
import { until } from '../helpers/until.js'

const PREFIX = `ssi-migrate-local-${process.pid}`
let root: string
let criuPath: string
let criu: Criu
let cgroups: CgroupManager
let spawner: ShimJobSpawner
const handles: JobHandle[] = []

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

/** Dumps `job` (output files external), copies its output into `<dstRoot>/<id>` and restores it there. */
async function hop (job: JobHandle, id: string, dstRoot: string): Promise<JobHandle> {
  const images = join(root, `images-${id}`)
  mkdirSync(images)
  const files = await findExternalFiles(job.hostPid, { stdout: job.stdoutPath, stderr: job.stderrPath })
  expect(files.map((f) => f.name).sort()).toEqual(['stderr', 'stdout'])
  await criu.dump({ pid: job.hostPid, imagesDir: images, external: ['mnt[]', ...files.map((f) => f.key)], extMasters: true, manageCgroups: 'IGNORE' })
  expect((await spawner.waitExit(job)).signal).toBe(9) // what the source must not report as the job's exit

  const dstDir = join(dstRoot, id)
  mkdirSync(dstDir, { recursive: true })
  copyFileSync(job.stdoutPath, join(dstDir, 'stdout'))
  copyFileSync(job.stderrPath, join(dstDir, 'stderr'))
  const pidFile = join(dstDir, 'restored.pid')
  const command = restoreCommand({
    criuPath,
    imagesDir: images,
    pidFile,
    logFile: join(dstDir, 'restore.log'),
    stdio: files.map((f) => ({ key: f.key, newPath: join(dstDir, f.name) }))
  })
  const restored = await spawner.restore({ id, jobsRoot: dstRoot, command, pidFile, stdin: false, limits: { pids: 32 } })
  handles.push(restored)
  expect(await cgroups.pids(id)).toContain(restored.hostPid)
  return restored
}

describe('stop-and-copy of a spawner job (runtime level)', () => {
  it('dumps a job, restores it as another job id in its own cgroup, twice; output continues in the new files', async () => {
    const job = await spawner.spawn(counterSpec('m1', join(root, 'a')))
    handles.push(job)
    await until('some output', () => (lines(job.stdoutPath).length >= 5 ? true : undefined))
    const second = await hop(job, 'm2', join(root, 'b'))
    const frozenAt = lines(job.stdoutPath).length
    await until('output on the second', () => (lines(second.stdoutPath).length >= frozenAt + 5 ? true : undefined))
    const third = await hop(second, 'm3', join(root, 'c'))

    expect(await spawner.waitExit(third)).toMatchObject({ code: 5, oomKilled: false })
    expect(lines(third.stdoutPath)).toEqual(Array.from({ length: 60 }, (_, i) => String(i + 1)))
    expect(lines(third.stderrPath)).toEqual(Array.from({ length: 60 }, (_, i) => `e${i + 1}`))
    expect(lines(job.stdoutPath).length).toBe(frozenAt) // the old file got nothing after the dump
    expect(frozenAt).toBeLessThan(60)
  }, 30_000)
})
