/**
 * cgroup v2 (unified hierarchy at `root`, default /sys/fs/cgroup): the job's cgroup is
 * `<root>/<prefix>/<name>`; the memory, cpu and pids controllers (those the root offers) are
 * enabled in the subtree_control of `<root>` and `<root>/<prefix>`, which hold no processes (the
 * "no internal processes" rule). Limits: memory.max (+ memory.swap.max 0 so the kernel OOM-kills
 * instead of swapping), cpu.max, pids.max. Freezing by cgroup.freeze, killing by cgroup.kill.
 */
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, stat } from 'node:fs/promises'
import { CgroupExistsError, CgroupNotFoundError, CgroupUnsupportedError } from './errors.js'
import type { CgroupLimits, CgroupLogger, CgroupManager, CgroupOpOptions, CgroupStats, LimitController } from './types.js'
import {
  CPU_PERIOD_US, checkLimits, checkName, cpuQuotaUs, isErrno, killAll, parseKeyed, parsePids,
  readOptional, readText, removeDir, waitUntil, writeControl
} from './util.js'

const LIMIT_CONTROLLERS: readonly LimitController[] = ['memory', 'cpu', 'pids']

export interface CgroupV2Init {
  /** Mount point of the unified hierarchy (default /sys/fs/cgroup). */
  readonly root?: string
  readonly prefix: string
  readonly logger?: CgroupLogger
}

export class CgroupV2Manager implements CgroupManager {
  readonly kind = 'v2'
  readonly controllers: ReadonlySet<LimitController>
  private readonly root: string
  private parentReady: Promise<void> | undefined

  constructor (private readonly init: CgroupV2Init) {
    this.root = init.root ?? '/sys/fs/cgroup'
    const file = `${this.root}/cgroup.controllers`
    if (!existsSync(file)) throw new CgroupUnsupportedError(`${this.root} is not a cgroup v2 mount (no cgroup.controllers)`)
    const offered = new Set(readFileSync(file, 'utf8').trim().split(/\s+/))
    this.controllers = new Set(LIMIT_CONTROLLERS.filter((c) => offered.has(c)))
  }

  private dir (name: string): string {
    checkName(name)
    return `${this.root}/${this.init.prefix}/${name}`
  }

  private checkControllers (limits: CgroupLimits): void {
    const wanted: Array<[LimitController, unknown]> = [['memory', limits.memoryBytes], ['cpu', limits.cpus], ['pids', limits.pids]]
    for (const [controller, value] of wanted) {
      if (value !== undefined && !this.controllers.has(controller)) {
        throw new CgroupUnsupportedError(`cgroup v2 controller ${controller} is not available at ${this.root}`)
      }
    }
  }

  /** Creates `<root>/<prefix>` and delegates the controllers to it and its children, once. */
  private ensureParent (): Promise<void> {
    this.parentReady ??= (async () => {
      const parent = `${this.root}/${this.init.prefix}`
      await mkdir(parent, { recursive: true })
      for (const dir of [this.root, parent]) await this.enableControllers(dir)
    })().catch((err: unknown) => {
      this.parentReady = undefined
      throw err
    })
    return this.parentReady
  }

  private async enableControllers (dir: string): Promise<void> {
    const enabled = new Set((await readText(`${dir}/cgroup.subtree_control`)).split(/\s+/))
    const missing = [...this.controllers].filter((c) => !enabled.has(c))
    if (missing.length > 0) await writeControl(`${dir}/cgroup.subtree_control`, missing.map((c) => `+${c}`).join(' '), dir)
  }

  async create (name: string, limits: CgroupLimits = {}): Promise<void> {
    const dir = this.dir(name)
    checkLimits(limits)
    this.checkControllers(limits)
    await this.ensureParent()
    try {
      await mkdir(dir)
    } catch (err) {
      if (isErrno(err, 'EEXIST')) throw new CgroupExistsError(`cgroup ${name} already exists`, { cause: err })
      throw err
    }
    try {
      await this.setLimits(name, limits)
    } catch (err) {
      await removeDir(dir).catch(() => {})
      throw err
    }
    this.init.logger?.debug({ cgroup: name, limits }, 'cgroup created')
  }

  async setLimits (name: string, limits: CgroupLimits): Promise<void> {
    const dir = this.dir(name)
    checkLimits(limits)
    this.checkControllers(limits)
    if (!(await this.exists(name))) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    if (this.controllers.has('memory')) {
      await writeControl(`${dir}/memory.max`, limits.memoryBytes === undefined ? 'max' : String(limits.memoryBytes), name)
      if (existsSync(`${dir}/memory.swap.max`)) {
        await writeControl(`${dir}/memory.swap.max`, limits.memoryBytes === undefined ? 'max' : '0', name)
      }
    }
    if (this.controllers.has('cpu')) {
      const quota = limits.cpus === undefined ? 'max' : String(cpuQuotaUs(limits.cpus))
      await writeControl(`${dir}/cpu.max`, `${quota} ${CPU_PERIOD_US}`, name)
    }
    if (this.controllers.has('pids')) {
      await writeControl(`${dir}/pids.max`, limits.pids === undefined ? 'max' : String(limits.pids), name)
    }
  }

  async limits (name: string): Promise<CgroupLimits> {
    const dir = this.dir(name)
    if (!(await this.exists(name))) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    const out: { memoryBytes?: number, cpus?: number, pids?: number } = {}
    const memory = await readOptional(`${dir}/memory.max`)
    if (memory !== undefined && memory !== 'max') out.memoryBytes = Number(memory)
    const [quota, period] = (await readOptional(`${dir}/cpu.max`))?.split(' ') ?? []
    if (quota !== undefined && quota !== 'max') out.cpus = Number(quota) / Number(period)
    const pids = await readOptional(`${dir}/pids.max`)
    if (pids !== undefined && pids !== 'max') out.pids = Number(pids)
    return out
  }

  async exists (name: string): Promise<boolean> {
    return await stat(this.dir(name)).then(() => true, () => false)
  }

  procsFiles (name: string): readonly string[] {
    return [`${this.dir(name)}/cgroup.procs`]
  }

  oomEventsFile (name: string): string | undefined {
    return this.controllers.has('memory') ? `${this.dir(name)}/memory.events` : undefined
  }

  async pids (name: string): Promise<number[]> {
    return parsePids((await readOptional(`${this.dir(name)}/cgroup.procs`)) ?? '').sort((a, b) => a - b)
  }

  async stats (name: string): Promise<CgroupStats> {
    const dir = this.dir(name)
    const cpu = await readOptional(`${dir}/cpu.stat`)
    if (cpu === undefined) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    const num = async (file: string): Promise<number | undefined> => {
      const text = await readOptional(`${dir}/${file}`)
      return text === undefined ? undefined : Number(text)
    }
    return {
      cpuUsageNs: (parseKeyed(cpu).get('usage_usec') ?? 0) * 1000,
      memoryBytes: await num('memory.current'),
      pidsCurrent: await num('pids.current')
    }
  }

  async oomKilled (name: string): Promise<boolean> {
    const dir = this.dir(name)
    if (!(await this.exists(name))) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    const events = await readOptional(`${dir}/memory.events`)
    return (parseKeyed(events ?? '').get('oom_kill') ?? 0) > 0
  }

  async freeze (name: string, opts?: CgroupOpOptions): Promise<void> {
    await this.setFrozen(name, true, opts)
  }

  async thaw (name: string, opts?: CgroupOpOptions): Promise<void> {
    await this.setFrozen(name, false, opts)
  }

  private async setFrozen (name: string, frozen: boolean, opts?: CgroupOpOptions): Promise<void> {
    await writeControl(`${this.dir(name)}/cgroup.freeze`, frozen ? '1' : '0', name)
    await waitUntil(async () => (await this.isFrozen(name)) === frozen, `cgroup ${name} ${frozen ? 'frozen' : 'thawed'}`, opts)
  }

  async isFrozen (name: string): Promise<boolean> {
    const events = await readOptional(`${this.dir(name)}/cgroup.events`)
    if (events === undefined) throw new CgroupNotFoundError(`cgroup ${name} does not exist`)
    return parseKeyed(events).get('frozen') === 1
  }

  async destroy (name: string, opts?: CgroupOpOptions): Promise<void> {
    const dir = this.dir(name)
    if (!(await this.exists(name))) return
    if ((await this.pids(name)).length > 0) await this.killTasks(name, opts)
    await removeDir(dir, opts)
    this.init.logger?.debug({ cgroup: name }, 'cgroup destroyed')
  }

  /** cgroup.kill (Linux 5.14+) kills atomically, forks included; else freeze, SIGKILL, thaw. */
  private async killTasks (name: string, opts?: CgroupOpOptions): Promise<void> {
    const dir = this.dir(name)
    if (existsSync(`${dir}/cgroup.kill`)) {
      await writeControl(`${dir}/cgroup.kill`, '1', name)
    } else {
      await this.freeze(name, opts).catch(() => {})
      killAll(await this.pids(name))
      await this.thaw(name, opts).catch(() => {})
    }
    await waitUntil(async () => {
      const left = await this.pids(name)
      killAll(left)
      return left.length === 0
    }, `cgroup ${name} to empty`, opts)
  }
}
