import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { jobCgroupPrefix, removeEndedJobCgroups } from '../../src/ssi/jobs/node-cgroups.js'

/** A cgroup v2 tree in a temp dir (plain dirs: rmdir behaves as on cgroupfs for empty ones). */
describe('removeEndedJobCgroups (cgroup v2 layout)', () => {
  let dir: string | undefined
  afterEach(async () => { if (dir !== undefined) await rm(dir, { recursive: true, force: true }) })

  async function tree (jobs: Record<string, 'ended' | 'running' | 'no dir'>): Promise<{ root: string, stateDir: string, prefix: string }> {
    dir = await mkdtemp(join(tmpdir(), 'ssi-node-cgroups-'))
    const root = join(dir, 'cgroup')
    const stateDir = join(dir, 'n1')
    const prefix = join(root, jobCgroupPrefix('c', 'n1'))
    await mkdir(prefix, { recursive: true })
    await writeFile(join(root, 'cgroup.controllers'), 'cpu memory pids\n')
    for (const [id, state] of Object.entries(jobs)) {
      await mkdir(join(prefix, id))
      if (state === 'no dir') continue
      await mkdir(join(stateDir, 'jobs', id), { recursive: true })
      if (state === 'ended') await writeFile(join(stateDir, 'jobs', id, 'exit'), 'code=0\n')
    }
    return { root, stateDir, prefix }
  }

  it('removes the cgroups of ended jobs and of jobs without a dir, then the node dir', async () => {
    const t = await tree({ 1000001: 'ended', 1000002: 'no dir' })
    await removeEndedJobCgroups('c', { name: 'n1', stateDir: t.stateDir }, t.root)
    expect(existsSync(t.prefix)).toBe(false)
  })

  it('keeps a job cgroup whose job has no exit record yet, and so the node dir', async () => {
    const t = await tree({ 1000001: 'ended', 1000003: 'running' })
    await removeEndedJobCgroups('c', { name: 'n1', stateDir: t.stateDir }, t.root)
    expect(existsSync(join(t.prefix, '1000001'))).toBe(false)
    expect(existsSync(join(t.prefix, '1000003'))).toBe(true)
  })

  it('keeps a cgroup the kernel will not remove (one with tasks: here, not empty)', async () => {
    const t = await tree({ 1000001: 'ended' })
    await writeFile(join(t.prefix, '1000001', 'cgroup.procs'), '42\n')
    await removeEndedJobCgroups('c', { name: 'n1', stateDir: t.stateDir }, t.root)
    expect(existsSync(join(t.prefix, '1000001'))).toBe(true)
  })
})
