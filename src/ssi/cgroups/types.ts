/**
 * The cgroup side effect behind one interface (runc `cgroups.Manager`): one cgroup per job, named
 * by the job id, under a common prefix (`ssi`) of each hierarchy. `createCgroupManager` picks
 * `CgroupV1Manager` or `CgroupV2Manager` for the host; `FakeCgroupManager` keeps state in memory
 * for unit tests. The same compliance suite (test/unit/cgroups.test.ts) runs against all three.
 *
 * Blocking and concurrency: every method touches only cgroupfs files and is cheap, except
 * `freeze` and `destroy`, which wait for the kernel (bounded by `signal` and a timeout). Calls on
 * different names may run concurrently; calls on one name must not race its create/destroy.
 */

/** Resource limits of one cgroup; an absent field means "no limit". */
export interface CgroupLimits {
  /** Memory in bytes (RAM only: swap is disabled where the kernel allows). Page-rounded down. */
  readonly memoryBytes?: number
  /** CPU bandwidth as a number of CPUs, e.g. 1.5 (quota 150 ms per 100 ms period). */
  readonly cpus?: number
  /** Maximum number of tasks (processes and threads). */
  readonly pids?: number
}

export interface CgroupStats {
  /** CPU time consumed by all tasks, in nanoseconds. */
  readonly cpuUsageNs: number
  /** Memory charged (v1 memory.usage_in_bytes, v2 memory.current); undefined without the controller. */
  readonly memoryBytes: number | undefined
  /** Tasks in the cgroup; undefined without the pids controller. */
  readonly pidsCurrent: number | undefined
}

/** Controllers that can carry limits. */
export type LimitController = 'memory' | 'cpu' | 'pids'

export interface CgroupLogger {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

export interface CgroupOpOptions {
  readonly signal?: AbortSignal
  /** Give up after this many ms (default 10 000). */
  readonly timeoutMs?: number
}

export interface CgroupManager {
  readonly kind: 'v1' | 'v2' | 'fake'
  /** Limit controllers available here; a limit on another one throws CgroupUnsupportedError. */
  readonly controllers: ReadonlySet<LimitController>
  /** Creates the cgroup with these limits. @throws CgroupExistsError, CgroupLimitError, CgroupUnsupportedError */
  create(name: string, limits?: CgroupLimits): Promise<void>
  /** Replaces the limits (absent fields become unlimited). @throws CgroupNotFoundError */
  setLimits(name: string, limits: CgroupLimits): Promise<void>
  limits(name: string): Promise<CgroupLimits>
  exists(name: string): Promise<boolean>
  /**
   * The cgroup.procs files a process must write itself into ("0") to join the cgroup in every
   * hierarchy. Empty for the fake. Does not check that the cgroup exists.
   */
  procsFiles(name: string): readonly string[]
  /** File whose "oom_kill N" line counts OOM kills (v1 memory.oom_control, v2 memory.events). */
  oomEventsFile(name: string): string | undefined
  /** Host pids of the processes in the cgroup. */
  pids(name: string): Promise<number[]>
  stats(name: string): Promise<CgroupStats>
  /** True if the kernel OOM-killed a task of this cgroup. */
  oomKilled(name: string): Promise<boolean>
  /** Freezes every task; resolves once the kernel reports the cgroup frozen. */
  freeze(name: string, opts?: CgroupOpOptions): Promise<void>
  thaw(name: string, opts?: CgroupOpOptions): Promise<void>
  isFrozen(name: string): Promise<boolean>
  /** SIGKILLs every task, waits until the cgroup is empty, removes it. No-op if absent. */
  destroy(name: string, opts?: CgroupOpOptions): Promise<void>
}
