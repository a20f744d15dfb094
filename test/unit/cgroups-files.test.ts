/**
 * File formats of the cgroup managers, checked on a plain directory that mimics cgroupfs: the v2
 * limit files (this host has no v2 memory/cpu/pids controllers to check them for real) and the v1
 * mount discovery from mountinfo (incl. co-mounted cpu,cpuacct).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { CgroupV2Manager, parseV1Mounts } from '../../src/ssi/cgroups/index.js'

describe('CgroupV2Manager files', () => {
  const dirs: string[] = []
  afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }) })

  it('delegates controllers and writes memory.max, cpu.max, pids.max', async () => {
    const root = mkdtempSync(join(tmpdir(), 'cg2-'))
    dirs.push(root)
    writeFileSync(join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n')
    writeFileSync(join(root, 'cgroup.subtree_control'), 'cpu\n')
    const m = new CgroupV2Manager({ root, prefix: 'ssi' })
    expect([...m.controllers].sort()).toEqual(['cpu', 'memory', 'pids'])
    mkdirSync(join(root, 'ssi'))
    writeFileSync(join(root, 'ssi', 'cgroup.subtree_control'), '')
    await m.create('7', { memoryBytes: 64 << 20, cpus: 1.5, pids: 64 })
    expect(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +pids')
    expect(readFileSync(join(root, 'ssi', 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu +pids')
    const read = (f: string): string => readFileSync(join(root, 'ssi', '7', f), 'utf8')
    expect([read('memory.max'), read('cpu.max'), read('pids.max')]).toEqual([String(64 << 20), '150000 100000', '64'])
    expect(await m.limits('7')).toEqual({ memoryBytes: 64 << 20, cpus: 1.5, pids: 64 })
    expect(m.procsFiles('7')).toEqual([join(root, 'ssi', '7', 'cgroup.procs')])
    expect(m.oomEventsFile('7')).toBe(join(root, 'ssi', '7', 'memory.events'))
  })
})

describe('parseV1Mounts', () => {
  it('maps each controller to its mount under the root, co-mounted ones to the same dir', () => {
    const info = [
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
      '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct',
      '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
      '37 31 0:34 / /sys/fs/cgroup/free\\040zer rw,relatime - cgroup cgroup rw,freezer',
      '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd',
      '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
      '50 1 0:40 / /other/pids rw - cgroup cgroup rw,pids'
    ].join('\n')
    expect(Object.fromEntries(parseV1Mounts(info))).toEqual({
      cpu: '/sys/fs/cgroup/cpu,cpuacct',
      cpuacct: '/sys/fs/cgroup/cpu,cpuacct',
      memory: '/sys/fs/cgroup/memory',
      freezer: '/sys/fs/cgroup/free zer'
    })
  })
})
