/**
 * In-memory CgroupManager for unit tests of code that uses cgroups. It keeps names, limits and the
 * frozen flag, and the pids that tests `attach`; procsFiles() is empty, so a real process spawned
 * with it joins no cgroup. destroy() SIGKILLs the attached pids, as the real managers do.
 */
import { CgroupExistsError, CgroupNotFoundError } from './errors.js'
import type { CgroupLimits, CgroupManager, CgroupStats, LimitController } from './types.js'
import { checkLimits, checkName, killAll } from './util.js'

interface FakeCgroup {
  limits: CgroupLimits
  frozen: boolean
  oomKills: number
  readonly pids: Set<number>
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export class FakeCgroupManager implements CgroupManager {
  readonly kind = 'fake'
  readonly controllers: ReadonlySet<LimitController> = new Set<LimitController>(['memory', 'cpu', 'pids'])
  private readonly groups = new Map<string, FakeCgroup>()

  private get (name: string): FakeCgroup {
    checkName(name)
    const group = this.groups.get(name)
    if (group === undefined) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    return group
  }

  /** Test hook: records `pid` as a member of the cgroup. */
  attach (name: string, pid: number): void {
    this.get(name).pids.add(pid)
  }

  /** Test hook: counts an OOM kill, as the kernel would. */
  simulateOomKill (name: string): void {
    this.get(name).oomKills++
  }

  async create (name: string, limits: CgroupLimits = {}): Promise<void> {
    checkName(name)
    checkLimits(limits)
    if (this.groups.has(name)) throw new CgroupExistsError(`cgroup ${name} already exists`)
    this.groups.set(name, { limits: { ...limits }, frozen: false, oomKills: 0, pids: new Set() })
  }

  async setLimits (name: string, limits: CgroupLimits): Promise<void> {
    checkLimits(limits)
    this.get(name).limits = { ...limits }
  }

  async limits (name: string): Promise<CgroupLimits> {
    return { ...this.get(name).limits }
  }

  async exists (name: string): Promise<boolean> {
    checkName(name)
    return this.groups.has(name)
  }

  procsFiles (name: string): readonly string[] {
    checkName(name)
    return []
  }

  oomEventsFile (name: string): string | undefined {
    checkName(name)
    return undefined
  }

  async pids (name: string): Promise<number[]> {
    const group = this.groups.get(name)
    return group === undefined ? [] : [...group.pids].filter(alive).sort((a, b) => a - b)
  }

  async stats (name: string): Promise<CgroupStats> {
    const group = this.get(name)
    return { cpuUsageNs: 0, memoryBytes: 0, pidsCurrent: [...group.pids].filter(alive).length }
  }

  async oomKilled (name: string): Promise<boolean> {
    return this.get(name).oomKills > 0
  }

  async freeze (name: string): Promise<void> {
    this.get(name).frozen = true
  }

  async thaw (name: string): Promise<void> {
    this.get(name).frozen = false
  }

  async isFrozen (name: string): Promise<boolean> {
    return this.get(name).frozen
  }

  async destroy (name: string): Promise<void> {
    checkName(name)
    const group = this.groups.get(name)
    if (group === undefined) return
    killAll([...group.pids])
    this.groups.delete(name)
  }
}
