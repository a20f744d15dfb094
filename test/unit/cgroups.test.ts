/**
 * One compliance suite for every CgroupManager: the in-memory fake, the host's real manager, and on
 * a hybrid host (v1 controllers + a v2 mount at /sys/fs/cgroup/unified) also the v2 manager on that
 * mount, whose missing controllers must then be refused with CgroupUnsupportedError.
 * Real managers need root and a writable cgroupfs: the suite fails, saying so, when they are missing.
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  CgroupExistsError, CgroupLimitError, CgroupNotFoundError, CgroupUnsupportedError, CgroupV2Manager,
  FakeCgroupManager, createCgroupManager, parseV1Mounts
} from '../../src/ssi/cgroups/index.js'
import type { CgroupManager } from '../../src/ssi/cgroups/index.js'

const PREFIX = `ssi-test-${process.pid}`
const MiB = 1024 * 1024

interface Subject {
  readonly label: string
  readonly manager: () => CgroupManager
  readonly join: (m: CgroupManager, name: string, pid: number) => void
  /** Parent dirs to remove after the suite. */
  readonly parents: () => string[]
}

function requireRoot (): void {
  if (process.getuid?.() !== 0) throw new Error('real cgroup tests need root (run the suite as root)')
  if (!existsSync('/sys/fs/cgroup')) throw new Error('real cgroup tests need cgroupfs mounted at /sys/fs/cgroup')
}

const joinReal = (m: CgroupManager, name: string, pid: number): void => {
  for (const file of m.procsFiles(name)) writeFileSync(file, String(pid))
}

function subjects (): Subject[] {
  const hostV2 = existsSync('/sys/fs/cgroup/cgroup.controllers')
  const v1Parents = (): string[] => [...new Set(parseV1Mounts(readFileSync('/proc/self/mountinfo', 'utf8')).values())].map((m) => `${m}/${PREFIX}`)
  const list: Subject[] = [
    { label: 'fake', manager: () => new FakeCgroupManager(), join: (m, n, pid) => { (m as FakeCgroupManager).attach(n, pid) }, parents: () => [] },
    {
      label: `host (${hostV2 ? 'v2' : 'v1'})`,
      manager: () => { requireRoot(); return createCgroupManager({ prefix: PREFIX }) },
      join: joinReal,
      parents: () => hostV2 ? [`/sys/fs/cgroup/${PREFIX}`] : v1Parents()
    }
  ]
  if (!hostV2 && existsSync('/sys/fs/cgroup/unified/cgroup.controllers')) {
    list.push({
      label: 'v2 on the hybrid unified mount',
      manager: () => { requireRoot(); return new CgroupV2Manager({ root: '/sys/fs/cgroup/unified', prefix: PREFIX }) },
      join: joinReal,
      parents: () => [`/sys/fs/cgroup/unified/${PREFIX}`]
    })
  }
  return list
}

const children: ChildProcess[] = []
// exec: one process; a shell that forks sleep after the join would put two in the cgroup.
function startProcess (script = 'exec sleep 1000'): ChildProcess {
  const child = spawn('sh', ['-c', script], { stdio: 'ignore' })
  children.push(child)
  return child
}
const exited = (child: ChildProcess): Promise<unknown> =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', resolve))

afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL')
})

for (const subject of subjects()) {
  describe(`CgroupManager compliance: ${subject.label}`, () => {
    let m: CgroupManager
    let seq = 0
    const fresh = (): string => `job-${++seq}`

    beforeAll(() => { m = subject.manager() })
    afterAll(async () => {
      for (let i = 1; i <= seq; i++) await m.destroy(`job-${i}`)
      for (const dir of subject.parents()) if (existsSync(dir)) rmdirSync(dir)
    })

    it('creates a cgroup with limits and reads them back, or refuses controllers it lacks', async () => {
      const name = fresh()
      const limits = { memoryBytes: 64 * MiB, cpus: 1.5, pids: 32 }
      const all = ['memory', 'cpu', 'pids'].every((c) => m.controllers.has(c as 'cpu'))
      if (!all) {
        await expect(m.create(name, limits)).rejects.toThrow(CgroupUnsupportedError)
        expect(await m.exists(name)).toBe(false)
        await m.create(name)
        expect(await m.limits(name)).toEqual({})
        return
      }
      expect(await m.exists(name)).toBe(false)
      await m.create(name, limits)
      expect(await m.exists(name)).toBe(true)
      expect(await m.limits(name)).toEqual(limits)
    })

    it('replaces limits (raising, lowering, removing)', async () => {
      if (!m.controllers.has('memory')) return expect(m.controllers.size).toBe(0)
      const name = fresh()
      await m.create(name, { memoryBytes: 64 * MiB })
      await m.setLimits(name, { memoryBytes: 256 * MiB })
      expect((await m.limits(name)).memoryBytes).toBe(256 * MiB)
      await m.setLimits(name, { memoryBytes: 16 * MiB })
      expect((await m.limits(name)).memoryBytes).toBe(16 * MiB)
      await m.setLimits(name, {})
      expect(await m.limits(name)).toEqual({})
    })

    it('refuses duplicates, bad names and bad limits', async () => {
      const name = fresh()
      await m.create(name)
      await expect(m.create(name)).rejects.toThrow(CgroupExistsError)
      await expect(m.create('../escape')).rejects.toThrow(CgroupLimitError)
      await expect(m.create(fresh(), { memoryBytes: -1 })).rejects.toThrow(CgroupLimitError)
      await expect(m.create(fresh(), { cpus: 0 })).rejects.toThrow(CgroupLimitError)
      await expect(m.create(fresh(), { pids: 1.5 })).rejects.toThrow(CgroupLimitError)
    })

    it('reports a missing cgroup as CgroupNotFoundError; destroying it is a no-op', async () => {
      const name = fresh()
      await expect(m.limits(name)).rejects.toThrow(CgroupNotFoundError)
      await expect(m.setLimits(name, {})).rejects.toThrow(CgroupNotFoundError)
      await expect(m.stats(name)).rejects.toThrow(CgroupNotFoundError)
      await m.destroy(name)
    })

    it('lists joined processes and their usage', async () => {
      const name = fresh()
      await m.create(name)
      const child = startProcess()
      subject.join(m, name, child.pid!)
      expect(await m.pids(name)).toEqual([child.pid])
      const stats = await m.stats(name)
      expect(stats.cpuUsageNs).toBeGreaterThanOrEqual(0)
      if (stats.pidsCurrent !== undefined) expect(stats.pidsCurrent).toBe(1)
      if (stats.memoryBytes !== undefined) expect(stats.memoryBytes).toBeGreaterThanOrEqual(0)
      expect(await m.oomKilled(name).catch(() => false)).toBe(false)
    })

    it('freezes (no CPU progress) and thaws', async () => {
      const name = fresh()
      await m.create(name)
      const child = startProcess('while :; do :; done')
      subject.join(m, name, child.pid!)
      await m.freeze(name)
      expect(await m.isFrozen(name)).toBe(true)
      const before = (await m.stats(name)).cpuUsageNs
      await new Promise((resolve) => setTimeout(resolve, 100))
      expect((await m.stats(name)).cpuUsageNs).toBe(before)
      await m.thaw(name)
      expect(await m.isFrozen(name)).toBe(false)
    })

    it('destroy kills every process in the cgroup and removes it', async () => {
      const name = fresh()
      await m.create(name, {})
      const kids = [startProcess(), startProcess()]
      for (const k of kids) subject.join(m, name, k.pid!)
      await m.destroy(name)
      await Promise.all(kids.map(exited))
      expect(kids.map((k) => k.signalCode)).toEqual(['SIGKILL', 'SIGKILL'])
      expect(await m.exists(name)).toBe(false)
      await m.destroy(name)
    })

    it('names the files a process joins and the OOM counter', () => {
      const files = m.procsFiles('job-x')
      if (m.kind === 'fake') return expect(files).toEqual([])
      expect(files.length).toBeGreaterThan(0)
      for (const f of files) expect(f).toMatch(new RegExp(`/${PREFIX}/job-x/cgroup.procs$`))
      if (m.controllers.has('memory')) expect(m.oomEventsFile('job-x')).toMatch(/memory\.(oom_control|events)$/)
    })
  })
}
