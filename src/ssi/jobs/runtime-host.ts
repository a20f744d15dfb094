/**
 * The real JobRuntime: the per-job shim spawner over the host's cgroup manager (v1 or v2). Each
 * node gets its own cgroup prefix (cluster and node name), so nodes and clusters on one machine never
 * share a job cgroup.
 */
import { closeSync, constants, openSync, readSync } from 'node:fs'
import { mkdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Criu, findCriu } from '../../migration/criu/index.js'
import { gateScript, restoreCommand } from '../../migration/restore-command.js'
import { replayPages, spawnPageServer } from '../../migration/page-stream.js'
import type { PageServerProcess } from '../../migration/page-stream.js'
import { findExternalFiles } from '../../migration/stdio-files.js'
import { unusedMounts } from '../../migration/used-mounts.js'
import { createCgroupManager } from '../cgroups/index.js'
import type { CgroupManager } from '../cgroups/index.js'
import { createJobSpawner, JobNotFoundError, readChunk } from '../spawner/index.js'
import { jobCgroupPrefix } from './node-cgroups.js'
import type { ExitInfo } from './record.js'
import { LAZY_PIPE_MAX_SIZE } from '../../migration/modes.js'
import type { MigrationCapabilities } from '../../migration/modes.js'
import type { LazyPagesDaemon } from '../../migration/criu/index.js'
import type { CheckpointOptions, DumpedFile, JobRuntime, JobUsage, LazyCheckpoint, RuntimeJob, RuntimeRestoreSpec, RuntimeSpec } from './runtime.js'
import type { ExitStatus, JobHandle, JobSpawner, SpawnerLogger } from '../spawner/index.js'

export interface JobRuntimeInit {
  readonly cluster: string
  readonly node: string
  readonly jobsRoot: string
  readonly logger: SpawnerLogger
  readonly shimPath?: string
  /** Where CRIU writes its logs (one per request); default `<jobsRoot>/../criu`. */
  readonly criuWorkDir?: string
  /** Jobs may use io_uring (then they cannot migrate); default false: see JobSpec.ioUring. */
  readonly allowIoUring?: boolean
}

interface HostRuntimeJob extends RuntimeJob { readonly handle: JobHandle }

const toExit = (e: ExitStatus): ExitInfo => ({ code: e.code, signal: e.signal, oomKilled: e.oomKilled })

export async function createJobRuntime (init: JobRuntimeInit): Promise<JobRuntime> {
  const cgroups = createCgroupManager({ prefix: jobCgroupPrefix(init.cluster, init.node), logger: init.logger })
  const spawner = createJobSpawner({ cgroups, shimPath: init.shimPath, logger: init.logger })
  return new HostJobRuntime(spawner, init.jobsRoot, init.criuWorkDir ?? join(init.jobsRoot, '..', 'criu'), init.logger, cgroups, init.allowIoUring ?? false)
}

class HostJobRuntime implements JobRuntime {
  readonly restoresStreaming = true
  readonly restoresEarly = true
  private criu: Promise<Criu> | undefined
  private caps: Promise<MigrationCapabilities> | undefined

  constructor (private readonly spawner: JobSpawner, private readonly jobsRoot: string, private readonly criuWorkDir: string, private readonly logger: SpawnerLogger, private readonly cgroups?: CgroupManager, private readonly allowIoUring = false) {}

  /**
   * Runs a dump leaving out the mounts the job does not use (unusedMounts); if that dump fails,
   * once more without leaving anything out, so a mount type CRIU cannot skip costs nothing.
   */
  private async skippingUnusedMounts<T> (job: RuntimeJob, dump: (skipMounts: string[]) => Promise<T>, signal?: AbortSignal, retry = true): Promise<T> {
    const skip = await unusedMounts(job.hostPid).catch(() => [] as string[])
    if (skip.length === 0) return await dump([])
    this.logger.debug({ vpid: job.vpid, skip }, 'dump leaves out unused mounts')
    try {
      return await dump(skip)
    } catch (err) {
      if (signal?.aborted === true || !retry) throw err
      this.logger.warn({ vpid: job.vpid, skip, err: String(err) }, 'dump with unused mounts left out failed; retrying with every mount')
      return await dump([])
    }
  }

  /** Found on first use, so nodes that never migrate need no CRIU. */
  private async criuDriver (): Promise<Criu> {
    this.criu ??= (async () => {
      await mkdir(this.criuWorkDir, { recursive: true, mode: 0o700 })
      const found = await findCriu()
      return new Criu({ criuPath: found.path, workDir: this.criuWorkDir })
    })()
    this.criu.catch(() => { this.criu = undefined })
    return await this.criu
  }

  private wrap (vpid: number, handle: JobHandle): HostRuntimeJob {
    return { vpid, jobDir: handle.jobDir, hostPid: handle.hostPid, handle }
  }

  private handle (job: RuntimeJob): JobHandle { return (job as HostRuntimeJob).handle }

  async start (spec: RuntimeSpec, signal?: AbortSignal, ready?: Promise<void>): Promise<RuntimeJob> {
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
      jobsRoot: this.jobsRoot,
      ioUring: this.allowIoUring
    }, signal, ready)
    return this.wrap(spec.vpid, handle)
  }

  async adopt (vpid: number): Promise<{ job: RuntimeJob, exit?: ExitInfo } | undefined> {
    try {
      const r = await this.spawner.adopt(join(this.jobsRoot, String(vpid)))
      if (r.state === 'lost') {
        // Its shim and init are gone (the node was killed under it): nothing can use its cgroup again.
        await this.spawner.release(r.handle).catch((err: unknown) => { this.logger.warn({ vpid, err: String(err) }, 'could not remove the cgroup of a lost job') })
        return undefined
      }
      return { job: this.wrap(vpid, r.handle), exit: r.state === 'exited' ? toExit(r.exit) : undefined }
    } catch (err) {
      if (!(err instanceof JobNotFoundError)) throw err
      // Never started (e.g. a restore its daemon was killed in): a cgroup made for it is garbage.
      if (await this.cgroups?.exists(String(vpid)).catch(() => false) === true) await this.cgroups?.destroy(String(vpid), { timeoutMs: 5000 }).catch(() => {})
      return undefined
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

  async * storedOutput (vpid: number, fd: 1 | 2, offset: number): AsyncIterable<Uint8Array> {
    const path = fd === 1 ? this.paths(vpid).stdout : this.paths(vpid).stderr
    for (let next = offset; ;) {
      const data = await readChunk(path, next, 1024 * 1024)
      if (data.byteLength === 0) return
      yield data
      next += data.byteLength
    }
  }

  async removeStored (vpid: number): Promise<void> {
    if (await this.cgroups?.exists(String(vpid)).catch(() => false) === true) await this.cgroups?.destroy(String(vpid), { timeoutMs: 5000 })
    await rm(this.paths(vpid).jobDir, { recursive: true, force: true })
  }

  async writeStdin (job: RuntimeJob, data: Uint8Array, paused?: () => boolean): Promise<number> { return await this.spawner.writeStdin(this.handle(job), data, undefined, paused) }
  async closeStdin (job: RuntimeJob): Promise<void> { await this.spawner.closeStdin(this.handle(job)) }

  async usage (job: RuntimeJob): Promise<JobUsage | undefined> {
    const s = await this.spawner.stats(this.handle(job))
    return s === undefined ? undefined : { cpuUsageNs: s.cpuUsageNs, memoryBytes: s.memoryBytes ?? 0 }
  }

  async release (job: RuntimeJob): Promise<void> { await this.spawner.release(this.handle(job)) }
  async remove (job: RuntimeJob): Promise<void> { await this.spawner.release(this.handle(job), { removeDir: true }) }

  paths (vpid: number): { jobDir: string, stdout: string, stderr: string } {
    const jobDir = join(this.jobsRoot, String(vpid))
    return { jobDir, stdout: join(jobDir, 'stdout'), stderr: join(jobDir, 'stderr') }
  }

  /** Mounts are the node's (`mnt[]` external), and so are the output files; the cgroup stays here. */
  async checkpoint (job: RuntimeJob, imagesDir: string, signal?: AbortSignal, opts: CheckpointOptions = {}): Promise<DumpedFile[]> {
    // CRIU writes its log and stats-dump (its own phase times) into the work dir: one per dump.
    const criu = new Criu({ criuPath: (await this.criuDriver()).criuPath, workDir: imagesDir })
    const stdio = await this.dumpedStdio(job)
    const { leaveRunning, onFrozen, pageServerSocket } = opts
    const onNotify = onFrozen === undefined ? undefined : async (script: string): Promise<void> => { if (script === 'post-dump') await onFrozen() }
    const dump = async (skipMounts: string[]): Promise<void> => {
      await criu.dump({ pid: job.hostPid, imagesDir, external: ['mnt[]', ...stdio.map(f => f.key)], manageCgroups: 'IGNORE', extMasters: true, signal, leaveRunning, onNotify, skipMounts, pageServerSocket })
    }
    // A page server takes one dump: no second try there (the migration rolls back instead).
    await this.skippingUnusedMounts(job, dump, signal, pageServerSocket === undefined)
    return stdio
  }

  /** The job's stdio files as CRIU external files; its stdin FIFO too (restored onto the new node's FIFO, with what it held). */
  async dumpedStdio (job: RuntimeJob): Promise<DumpedFile[]> {
    const p = this.paths(job.vpid)
    const stdin = join(p.jobDir, 'stdin')
    const hasStdin = (await stat(stdin).catch(() => undefined))?.isFIFO() === true
    const files = await findExternalFiles(job.hostPid, { stdout: p.stdout, stderr: p.stderr, ...(hasStdin ? { stdin } : {}) })
    return files.map(f => ({ key: f.key, stream: f.name as DumpedFile['stream'] }))
  }

  async capabilities (signal?: AbortSignal): Promise<MigrationCapabilities> {
    this.caps ??= (async () => {
      const features = await (await this.criuDriver()).checkFeatures({ signal })
      const pipeMax = Number((await readFile('/proc/sys/fs/pipe-max-size', 'utf8').catch(() => '0')).trim())
      const lazyPagesWhy = !features.lazyPages
        ? 'CRIU finds no usable userfaultfd (lazy pages) on this kernel'
        : pipeMax < LAZY_PIPE_MAX_SIZE ? `fs.pipe-max-size is ${pipeMax}, CRIU's lazy dump needs >= ${LAZY_PIPE_MAX_SIZE} (sysctl -w fs.pipe-max-size=${LAZY_PIPE_MAX_SIZE})` : undefined
      return { memTrack: features.memTrack, lazyPages: lazyPagesWhy === undefined, lazyPagesWhy }
    })()
    this.caps.catch(() => { this.caps = undefined })
    return await this.caps
  }

  async checkpointLazy (job: RuntimeJob, imagesDir: string, port: number, signal?: AbortSignal): Promise<LazyCheckpoint> {
    const criu = new Criu({ criuPath: (await this.criuDriver()).criuPath, workDir: imagesDir })
    const stdio = await this.dumpedStdio(job)
    let freezingAtMs: number | undefined
    const start = async (skipMounts: string[]): Promise<{ served: Promise<void> }> => {
      let ready = (): void => {}
      const serving = new Promise<void>((resolve) => { ready = resolve })
      const served = criu.dump({
        pid: job.hostPid, imagesDir, external: ['mnt[]', ...stdio.map(f => f.key)], manageCgroups: 'IGNORE', extMasters: true, signal,
        lazyPages: true, pageServer: { address: '127.0.0.1', port }, skipMounts,
        onNotify: (script) => {
          if (script === 'pre-dump') freezingAtMs = Date.now() // CRIU's last step before it seizes the tree
          if (script === 'status-ready') ready()
        }
      }).then(() => {})
      served.catch(() => {})
      await Promise.race([serving, served.then(() => { throw new Error('the lazy dump ended before its page server was ready') })])
      return { served }
    }
    const { served } = await this.skippingUnusedMounts(job, start, signal)
    return { stdio, served, freezingAtMs }
  }

  async startLazyPages (imagesDir: string, port: number, signal?: AbortSignal): Promise<LazyPagesDaemon> {
    // The daemon's socket goes into its work dir; the restore (work dir = images dir) looks there.
    const criu = new Criu({ criuPath: (await this.criuDriver()).criuPath, workDir: imagesDir })
    return await criu.startLazyPages({ imagesDir, pageServer: { address: '127.0.0.1', port }, signal })
  }

  async receivePages (imagesDir: string): Promise<PageServerProcess> {
    return spawnPageServer((await this.criuDriver()).criuPath, imagesDir)
  }

  async replayPages (streamFile: string, imagesDir: string, signal?: AbortSignal): Promise<void> {
    await replayPages((await this.criuDriver()).criuPath, streamFile, imagesDir, signal)
  }

  async restore (spec: RuntimeRestoreSpec, signal?: AbortSignal): Promise<RuntimeJob> {
    const criu = await this.criuDriver()
    const p = this.paths(spec.vpid)
    const pidFile = join(p.jobDir, 'restored.pid')
    await unlink(pidFile).catch(() => {})
    const command = restoreCommand({
      criuPath: criu.criuPath,
      imagesDir: spec.imagesDir,
      pidFile,
      logFile: join(p.jobDir, 'restore.log'),
      stdio: spec.stdio.map(f => f.stream === 'stdin'
        ? { key: f.key, newPath: join(p.jobDir, 'stdin'), fifo: true }
        : { key: f.key, newPath: f.stream === 'stdout' ? p.stdout : p.stderr }),
      lazyPages: spec.lazyPages,
      stream: spec.stream,
      actionScript: spec.gate === undefined ? undefined : join(p.jobDir, 'restore-gate.sh')
    })
    // CRIU execs an action script itself: a file, not a command line.
    if (spec.gate !== undefined) await writeFile(join(p.jobDir, 'restore-gate.sh'), gateScript(spec.gate), { mode: 0o700 })
    // The shim makes <jobDir>/stdin and keeps a write end, as for a started job; CRIU puts back
    // what the old FIFO held. A FIFO left here (a rollback) must not still hold those bytes.
    const stdin = spec.stdio.some(f => f.stream === 'stdin')
    if (stdin) await drainFifo(join(p.jobDir, 'stdin'))
    // Streaming or started early, the restore lasts as long as the transfer: bounded by the
    // caller's signal (the source's deadline after its send, a broken transfer, a cancel), not by
    // the start timeout.
    const timeoutMs = spec.stream === true || spec.waitsForImages === true ? 24 * 3600_000 : undefined
    const handle = await this.spawner.restore({ id: String(spec.vpid), jobsRoot: this.jobsRoot, command, pidFile, stdin, limits: spec.limits, hold: spec.hold, timeoutMs }, signal)
    return this.wrap(spec.vpid, handle)
  }

  confirmRestored (job: RuntimeJob): boolean { return this.spawner.confirm(this.handle(job)) }

}

/** Discards what a FIFO holds (no-op if there is none): non-blocking, so it never waits for a writer. */
async function drainFifo (path: string): Promise<void> {
  if ((await stat(path).catch(() => undefined))?.isFIFO() !== true) return
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    const buf = Buffer.alloc(64 * 1024)
    for (;;) {
      const n = (() => { try { return readSync(fd, buf) } catch { return 0 } })() // EAGAIN: empty, writers open
      if (n === 0) return
    }
  } finally {
    closeSync(fd)
  }
}
