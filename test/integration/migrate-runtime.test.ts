/**
 * The job runtime's migration primitives (runtime-host.ts) on the real host: checkpoint a job,
 * then restore it in place from its images, as a source does when a migration fails after the
 * dump (rollback): same job dir, same output files, its exit recorded by the new shim.
 * Needs root, tini, gcc and CRIU >= 4.2.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createCgroupManager, parseV1Mounts, removeEmptyCgroupPrefix } from '../../src/ssi/cgroups/index.js'
import { createJobRuntime } from '../../src/ssi/jobs/runtime-host.js'
import { jobCgroupPrefix } from '../../src/ssi/jobs/node-cgroups.js'
import type { JobRuntime } from '../../src/ssi/jobs/runtime.js'

const NODE = `mrt${process.pid}`
let root: string
let runtime: JobRuntime

const quiet = { debug () {}, info () {}, warn () {}, error () {} }
const lines = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(l => l !== '') : [])
const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('migration tests need root (namespaces, cgroups, CRIU)')
  execFileSync(join(import.meta.dirname, '../../scripts/build-shim.sh'), { stdio: 'pipe' })
  root = mkdtempSync(join(tmpdir(), 'ssi-migrate-runtime-'))
  runtime = await createJobRuntime({ cluster: 'rt', node: NODE, jobsRoot: join(root, 'jobs'), logger: quiet })
})

afterAll(async () => {
  // The runtime's cgroup prefix is ssi-<cluster>-<node>; every job cgroup in it is gone by now.
  await removeEmptyCgroupPrefix(jobCgroupPrefix('rt', NODE))
  const parents = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? ['/sys/fs/cgroup']
    : [...new Set(parseV1Mounts(readFileSync('/proc/self/mountinfo', 'utf8')).values())]
  expect(parents.filter(p => existsSync(`${p}/${jobCgroupPrefix('rt', NODE)}`))).toEqual([])
  if (root !== undefined) rmSync(root, { recursive: true, force: true })
})

describe('job runtime: checkpoint and restore in place (rollback)', () => {
  it('restores a checkpointed job into its own job dir; output and exit continue there', async () => {
    const owner = { uid: 0, gid: 0, groups: [], user: 'root' }
    const script = 'i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo $i; sleep 0.02; done; exit 4'
    const job = await runtime.start({ vpid: 77, argv: ['sh', '-c', script], env: { PATH: '/usr/bin:/bin' }, cwd: '/', owner, hostname: 'vp77', limits: {}, stdin: false })
    const paths = runtime.paths(77)
    while (lines(paths.stdout).length < 5) await sleep(20)
    const images = join(root, 'images')
    mkdirSync(images)
    const stdio = await runtime.checkpoint(job, images)
    expect(stdio.map(f => f.stream).sort()).toEqual(['stderr', 'stdout'])
    expect((await runtime.waitExit(job)).signal).toBe(9)
    const frozenAt = lines(paths.stdout).length
    await runtime.release(job)

    const again = await runtime.restore({ vpid: 77, imagesDir: images, limits: {}, stdio })
    expect(again.jobDir).toBe(paths.jobDir)
    expect(await runtime.waitExit(again)).toMatchObject({ code: 4, oomKilled: false })
    expect(lines(paths.stdout)).toEqual(Array.from({ length: 50 }, (_, i) => String(i + 1)))
    expect(frozenAt).toBeLessThan(50)
    await runtime.release(again)
  }, 30_000)
})

describe('job runtime: adoption after a killed daemon', () => {
  it('a job that never started (its restore was cut short) has the cgroup made for it removed', async () => {
    const cgroups = createCgroupManager({ prefix: jobCgroupPrefix('rt', NODE) })
    await cgroups.create('999999', {})
    mkdirSync(join(root, 'jobs', '999999'), { recursive: true }) // a job dir with no pid record
    expect(await runtime.adopt(999999)).toBeUndefined()
    expect(await cgroups.exists('999999')).toBe(false)
  })
})
