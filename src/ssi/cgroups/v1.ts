/**
 * cgroup v1: one hierarchy per controller (memory, cpu, cpuacct, pids, freezer), found in
 * /proc/self/mountinfo; the job's cgroup is `<mount>/<prefix>/<name>` in each. Limits: memory via
 * memory.limit_in_bytes (+ memory.memsw.limit_in_bytes at the same value so the job cannot swap,
 * else memory.swappiness 0), CPU via cpu.cfs_quota_us / cpu.cfs_period_us, tasks via pids.max.
 */
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { CgroupExistsError, CgroupNotFoundError, CgroupUnsupportedError } from './errors.js'
import type { CgroupLimits, CgroupLogger, CgroupManager, CgroupOpOptions, CgroupStats, LimitController } from './types.js'
import {
  CPU_PERIOD_US, checkLimits, checkName, cpuQuotaUs, isErrno, killAll, parseKeyed, parsePids,
  readOptional, readText, removeDir, waitUntil, writeControl
} from './util.js'

/** Controllers whose hierarchies a job joins. */
const V1_CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids', 'freezer'] as const
type V1Controller = typeof V1_CONTROLLERS[number]

/** Above this a v1 limit means "unlimited" (the kernel reports PAGE_COUNTER_MAX pages). */
const UNLIMITED = 2n ** 62n

function unescapeMount (path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)))
}

/** Mount points of the v1 controllers under `root`, from mountinfo text. */
export function parseV1Mounts (mountinfo: string, root = '/sys/fs/cgroup'): Map<V1Controller, string> {
  const mounts = new Map<V1Controller, string>()
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ')
    const fields = left?.split(' ') ?? []
    const [fstype, , superOpts] = right?.split(' ') ?? []
    const mountPoint = fields[4] === undefined ? '' : unescapeMount(fields[4])
    if (fstype !== 'cgroup' || !(mountPoint === root || mountPoint.startsWith(`${root}/`))) continue
    const opts = new Set(superOpts?.split(','))
    for (const c of V1_CONTROLLERS) if (opts.has(c) && !mounts.has(c)) mounts.set(c, mountPoint)
  }
  return mounts
}

export interface CgroupV1Init {
  /** Controller → mount point; default: from /proc/self/mountinfo under /sys/fs/cgroup. */
  readonly mounts?: ReadonlyMap<string, string>
  readonly prefix: string
  readonly logger?: CgroupLogger
}

export class CgroupV1Manager implements CgroupManager {
  readonly kind = 'v1'
  readonly controllers: ReadonlySet<LimitController>
  private readonly mounts: ReadonlyMap<string, string>
  private readonly hasMemsw: boolean
  /** Prefix dirs made (or found) already: a job's cgroup then costs one mkdir per hierarchy. */
  private readonly parentsMade = new Set<string>()

  constructor (private readonly init: CgroupV1Init) {
    this.mounts = init.mounts ?? parseV1Mounts(readFileSync('/proc/self/mountinfo', 'utf8'))
    if (this.mounts.size === 0) throw new CgroupUnsupportedError('no cgroup v1 controller is mounted')
    this.controllers = new Set((['memory', 'cpu', 'pids'] as const).filter((c) => this.mounts.has(c)))
    const memory = this.mounts.get('memory')
    this.hasMemsw = memory !== undefined && existsSync(`${memory}/memory.memsw.limit_in_bytes`)
  }

  private dir (controller: string, name: string): string | undefined {
    const mount = this.mounts.get(controller)
    return mount === undefined ? undefined : `${mount}/${this.init.prefix}/${name}`
  }

  /** One dir per distinct hierarchy (co-mounted controllers such as cpu,cpuacct share one). */
  private dirs (name: string): string[] {
    return [...new Set(V1_CONTROLLERS.map((c) => this.dir(c, name)).filter((d) => d !== undefined))]
  }

  private need (controller: string, name: string): string {
    const dir = this.dir(controller, name)
    if (dir === undefined) throw new CgroupUnsupportedError(`cgroup v1 controller ${controller} is not mounted`)
    return dir
  }

  async create (name: string, limits: CgroupLimits = {}): Promise<void> {
    checkName(name)
    checkLimits(limits)
    this.checkControllers(limits)
    const dirs = this.dirs(name)
    const created: string[] = []
    try {
      await this.makeDirs(dirs, created)
      await this.writeLimits(name, limits, true)
    } catch (err) {
      for (const dir of created.reverse()) await removeDir(dir).catch(() => {})
      if (isErrno(err, 'EEXIST')) throw new CgroupExistsError(`cgroup ${name} already exists`, { cause: err })
      throw err
    }
    this.init.logger?.debug({ cgroup: name, limits }, 'cgroup created')
  }

  /** mkdir of the job's dir in every hierarchy at once; the prefix dirs only when first needed. */
  private async makeDirs (dirs: readonly string[], created: string[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const parents = [...new Set(dirs.map((d) => dirname(d)))].filter((p) => !this.parentsMade.has(p))
      await Promise.all(parents.map(async (p) => { await mkdir(p, { recursive: true }); this.parentsMade.add(p) }))
      const results = await Promise.allSettled(dirs.map(async (dir) => { await mkdir(dir); created.push(dir) }))
      const failed = results.find((r) => r.status === 'rejected')
      if (failed === undefined) return
      const err: unknown = failed.reason
      // A prefix dir removed behind our back: make it again, once.
      if (attempt > 0 || !isErrno(err, 'ENOENT')) throw err
      this.parentsMade.clear()
    }
  }

  private checkControllers (limits: CgroupLimits): void {
    if (limits.memoryBytes !== undefined) this.need('memory', '')
    if (limits.cpus !== undefined) this.need('cpu', '')
    if (limits.pids !== undefined) this.need('pids', '')
  }

  async setLimits (name: string, limits: CgroupLimits): Promise<void> {
    checkName(name)
    checkLimits(limits)
    this.checkControllers(limits)
    if (!(await this.exists(name))) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    await this.writeLimits(name, limits, false)
  }

  /**
   * Writes the limits, each controller's files in parallel. A `fresh` cgroup already has the
   * kernel's defaults (no memory, CPU or pids limit), so unset limits need no write there.
   */
  private async writeLimits (name: string, limits: CgroupLimits, fresh: boolean): Promise<void> {
    const memory = this.dir('memory', name)
    const cpu = this.dir('cpu', name)
    const pids = this.dir('pids', name)
    const unset = (v: unknown): boolean => fresh && v === undefined
    await Promise.all([
      memory === undefined || unset(limits.memoryBytes) ? undefined : this.setMemory(memory, name, limits.memoryBytes, fresh),
      cpu === undefined || unset(limits.cpus)
        ? undefined
        : (async () => {
            await writeControl(`${cpu}/cpu.cfs_period_us`, String(CPU_PERIOD_US), name)
            await writeControl(`${cpu}/cpu.cfs_quota_us`, limits.cpus === undefined ? '-1' : String(cpuQuotaUs(limits.cpus)), name)
          })(),
      pids === undefined || unset(limits.pids) ? undefined : writeControl(`${pids}/pids.max`, limits.pids === undefined ? 'max' : String(limits.pids), name)
    ])
  }

  /** memsw must stay >= the limit: raise memsw first, lower the limit first. */
  private async setMemory (dir: string, name: string, bytes: number | undefined, fresh: boolean): Promise<void> {
    const value = bytes === undefined ? '-1' : String(bytes)
    const limitFile = `${dir}/memory.limit_in_bytes`
    if (!this.hasMemsw) {
      await writeControl(limitFile, value, name)
      if (bytes !== undefined) await writeControl(`${dir}/memory.swappiness`, '0', name)
      return
    }
    // A fresh cgroup has no limit: lowering it goes limit first.
    const current = fresh ? UNLIMITED : BigInt(await readText(limitFile))
    const order = bytes === undefined || BigInt(bytes) > current
      ? [`${dir}/memory.memsw.limit_in_bytes`, limitFile]
      : [limitFile, `${dir}/memory.memsw.limit_in_bytes`]
    for (const file of order) await writeControl(file, value, name)
  }

  async limits (name: string): Promise<CgroupLimits> {
    checkName(name)
    if (!(await this.exists(name))) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    const out: { memoryBytes?: number, cpus?: number, pids?: number } = {}
    const memory = this.dir('memory', name)
    const mem = memory === undefined ? undefined : BigInt(await readText(`${memory}/memory.limit_in_bytes`))
    if (mem !== undefined && mem < UNLIMITED) out.memoryBytes = Number(mem)
    const cpu = this.dir('cpu', name)
    if (cpu !== undefined) {
      const quota = Number(await readText(`${cpu}/cpu.cfs_quota_us`))
      if (quota > 0) out.cpus = quota / Number(await readText(`${cpu}/cpu.cfs_period_us`))
    }
    const pids = this.dir('pids', name)
    const max = pids === undefined ? 'max' : await readText(`${pids}/pids.max`)
    if (max !== 'max') out.pids = Number(max)
    return out
  }

  async exists (name: string): Promise<boolean> {
    checkName(name)
    const first = this.dirs(name)[0]
    return first !== undefined && (await stat(first).then(() => true, () => false))
  }

  procsFiles (name: string): readonly string[] {
    checkName(name)
    return this.dirs(name).map((d) => `${d}/cgroup.procs`)
  }

  oomEventsFile (name: string): string | undefined {
    const dir = this.dir('memory', name)
    return dir === undefined ? undefined : `${dir}/memory.oom_control`
  }

  async pids (name: string): Promise<number[]> {
    checkName(name)
    const texts = await Promise.all(this.dirs(name).map(async (dir) => await readOptional(`${dir}/cgroup.procs`)))
    const all = new Set(texts.flatMap((text) => parsePids(text ?? '')))
    return [...all].sort((a, b) => a - b)
  }

  async stats (name: string): Promise<CgroupStats> {
    checkName(name)
    if (!(await this.exists(name))) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    const read = async (controller: string, file: string): Promise<number | undefined> => {
      const dir = this.dir(controller, name)
      const text = dir === undefined ? undefined : await readOptional(`${dir}/${file}`)
      return text === undefined ? undefined : Number(text)
    }
    return {
      cpuUsageNs: (await read('cpuacct', 'cpuacct.usage')) ?? 0,
      memoryBytes: await read('memory', 'memory.usage_in_bytes'),
      pidsCurrent: await read('pids', 'pids.current')
    }
  }

  async oomKilled (name: string): Promise<boolean> {
    checkName(name)
    const file = this.oomEventsFile(name)
    const text = file === undefined ? undefined : await readOptional(file)
    if (text === undefined) throw new CgroupNotFoundError(`cgroup ${name} has no memory.oom_control`)
    return (parseKeyed(text).get('oom_kill') ?? 0) > 0
  }

  async freeze (name: string, opts?: CgroupOpOptions): Promise<void> {
    await this.setFreezer(name, 'FROZEN', opts)
  }

  async thaw (name: string, opts?: CgroupOpOptions): Promise<void> {
    await this.setFreezer(name, 'THAWED', opts)
  }

  private async setFreezer (name: string, state: 'FROZEN' | 'THAWED', opts?: CgroupOpOptions): Promise<void> {
    checkName(name)
    const file = `${this.need('freezer', name)}/freezer.state`
    await writeControl(file, state, name)
    await waitUntil(async () => (await readText(file)) === state, `cgroup ${name} ${state}`, opts)
  }

  async isFrozen (name: string): Promise<boolean> {
    checkName(name)
    const dir = this.need('freezer', name)
    const state = await readOptional(`${dir}/freezer.state`)
    if (state === undefined) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    return state === 'FROZEN'
  }

  async destroy (name: string, opts?: CgroupOpOptions): Promise<void> {
    checkName(name)
    const dirs = this.dirs(name)
    if ((await this.pids(name)).length > 0) await this.killTasks(name, opts)
    await Promise.all(dirs.map(async (dir) => { await removeDir(dir, opts) }))
    this.init.logger?.debug({ cgroup: name }, 'cgroup destroyed')
  }

  /** Freezes (so nothing forks meanwhile), SIGKILLs every task, thaws, waits for the cgroup to empty. */
  private async killTasks (name: string, opts?: CgroupOpOptions): Promise<void> {
    const freezer = this.mounts.has('freezer')
    if (freezer) await this.freeze(name, opts).catch(() => {})
    killAll(await this.pids(name))
    if (freezer) await this.thaw(name, opts).catch(() => {})
    await waitUntil(async () => {
      const left = await this.pids(name)
      killAll(left)
      return left.length === 0
    }, `cgroup ${name} to empty`, opts)
  }
}
