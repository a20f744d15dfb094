/**
 * The real JobRuntime: the per-job shim spawner over the host's cgroup manager (v1 or v2). Each
 * node gets its own cgroup prefix, so several nodes on one machine never share a job cgroup.
 */
import { join } from 'node:path'
import { createCgroupManager } from '../cgroups/index.js'
import { createJobSpawner, JobNotFoundError } from '../spawner/index.js'
import type { ExitInfo } from './record.js'
import type { JobRuntime, JobUsage, RuntimeJob, RuntimeSpec } from './runtime.js'
import type { ExitStatus, JobHandle, JobSpawner, SpawnerLogger } from '../spawner/index.js'

export interface JobRuntimeInit {
  readonly node: string
  readonly jobsRoot: string
  readonly logger: SpawnerLogger
  readonly shimPath?: string
}

interface HostRuntimeJob extends RuntimeJob { readonly handle: JobHandle }

const toExit = (e: ExitStatus): ExitInfo => ({ code: e.code, signal: e.signal, oomKilled: e.oomKilled })

export async function createJobRuntime (init: JobRuntimeInit): Promise<JobRuntime> {
  const cgroups = createCgroupManager({ prefix: `ssi-${init.node}`, logger: init.logger })
  const spawner = createJobSpawner({ cgroups, shimPath: init.shimPath, logger: init.logger })
  return new HostJobRuntime(spawner, init.jobsRoot)
}

class HostJobRuntime implements JobRuntime {
  constructor (private readonly spawner: JobSpawner, private readonly jobsRoot: string) {}

  private wrap (vpid: number, handle: JobHandle): HostRuntimeJob {
    return { vpid, jobDir: handle.jobDir, hostPid: handle.hostPid, handle }
  }

  private handle (job: RuntimeJob): JobHandle { return (job as HostRuntimeJob).handle }

  async start (spec: RuntimeSpec, signal?: AbortSignal): Promise<RuntimeJob> {
    const handle = await this.spawner.spawn({
      id: String(spec.vpid),
      argv: spec.argv,
      env: spec.env,
      cwd: spec.cwd,
      uid: spec.owner.uid,
      gid: spec.owner.gid,
      groups: spec.owner.groups,
      hostname: spec.hostname,
      limits: spec.limits,
      stdin: spec.stdin,
      jobsRoot: this.jobsRoot
    }, signal)
    return this.wrap(spec.vpid, handle)
  }

  async adopt (vpid: number): Promise<{ job: RuntimeJob, exit?: ExitInfo } | undefined> {
    try {
      const r = await this.spawner.adopt(join(this.jobsRoot, String(vpid)))
      if (r.state === 'lost') return undefined
      return { job: this.wrap(vpid, r.handle), exit: r.state === 'exited' ? toExit(r.exit) : undefined }
    } catch (err) {
      if (err instanceof JobNotFoundError) return undefined
      throw err
    }
  }

  async waitExit (job: RuntimeJob, signal?: AbortSignal): Promise<ExitInfo> {
    return toExit(await this.spawner.waitExit(this.handle(job), signal))
  }

  async signal (job: RuntimeJob, signal: NodeJS.Signals): Promise<void> {
    await this.spawner.kill(this.handle(job), signal)
  }

  async * output (job: RuntimeJob, fd: 1 | 2, offset: number, follow: boolean, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const stream = fd === 1 ? 'stdout' : 'stderr'
    if (follow) {
      yield * this.spawner.followOutput(this.handle(job), stream, { fromOffset: offset, signal })
      return
    }
    let next = offset
    for (;;) {
      const { data, nextOffset } = await this.spawner.readOutput(this.handle(job), stream, next, 1024 * 1024)
      if (data.byteLength === 0) return
      yield data
      next = nextOffset
    }
  }

  async writeStdin (job: RuntimeJob, data: Uint8Array): Promise<void> { await this.spawner.writeStdin(this.handle(job), data) }
  async closeStdin (job: RuntimeJob): Promise<void> { await this.spawner.closeStdin(this.handle(job)) }

  async usage (job: RuntimeJob): Promise<JobUsage | undefined> {
    const s = await this.spawner.stats(this.handle(job))
    return s === undefined ? undefined : { cpuUsageNs: s.cpuUsageNs, memoryBytes: s.memoryBytes ?? 0 }
  }

  async release (job: RuntimeJob): Promise<void> { await this.spawner.release(this.handle(job)) }
  async remove (job: RuntimeJob): Promise<void> { await this.spawner.release(this.handle(job), { removeDir: true }) }
}
