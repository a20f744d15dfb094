/**
 * JobSpawner over ssi-shim (see shim/ssi-shim.c and types.ts for the job dir layout). The daemon
 * only writes the spec, starts the shim and afterwards reads files the shim and the job write;
 * signals go straight to the job's tini through a pidfd after checking its start time.
 */
import { closeSync, writeSync } from 'node:fs'
import { mkdir, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { constants } from 'node:os'
import { join } from 'node:path'
import { closePidfd, pidfdOpen, pidfdSendSignal } from '../../native/pidfd.js'
import { socketPair } from '../../native/socketpair.js'
import { CgroupExistsError } from '../cgroups/errors.js'
import type { CgroupManager, CgroupStats } from '../cgroups/types.js'
import { JobExistsError, JobLostError, JobNotFoundError, JobStartError, StdinClosedError } from './errors.js'
import { DEFAULT_SHIM_PATH, checkShim, findTini, runShim } from './launch.js'
import { followFile, readChunk } from './output.js'
import { encodeRestoreSpec, encodeRunSpec, validateJobSpec, validateRestoreSpec } from './spec.js'
import { awaitOldShim, handleFor, isSameProcess, readExitRecord, readPidRecord } from './state.js'
import type { PidRecord } from './state.js'
import { StdinWriters } from './stdin.js'
import { DirWatcher } from './watch.js'
import type {
  AdoptResult, ExitStatus, FollowOptions, JobHandle, JobSpawner, JobSpec, OutputStream, RestoreSpec, SpawnerLogger
} from './types.js'

/** Configuration of ShimJobSpawner. */
export interface ShimJobSpawnerInit {
  /** Cgroup manager for the jobs' cgroups (one per job, named by the job id). */
  readonly cgroups: CgroupManager
  /** ssi-shim binary; default dist/ssi-shim of this checkout (scripts/build-shim.sh). */
  readonly shimPath?: string
  /** tini binary; default /usr/bin/tini, /opt/ssi/bin/tini, then $PATH. */
  readonly tiniPath?: string
  /** ms between checks when inotify says nothing (exit, output, shim liveness); default 250. */
  readonly pollIntervalMs?: number
  /** ms to wait for the shim's report that the job runs; default 10 000. */
  readonly startTimeoutMs?: number
  readonly logger?: SpawnerLogger
}

const SIGUSR1 = constants.signals.SIGUSR1

export class ShimJobSpawner implements JobSpawner {
  private readonly pollMs: number
  private readonly stdin = new StdinWriters()
  private binaries: { shim: string, tini: string } | undefined
  /** Our ends of the sockets of restored jobs on hold (by job id): closing one without "go" kills its job. */
  private readonly held = new Map<string, number>()
  /** Jobs roots known to exist: a job then costs one mkdir. */
  private readonly rootsMade = new Set<string>()

  constructor (private readonly init: ShimJobSpawnerInit) {
    this.pollMs = init.pollIntervalMs ?? 250
  }

  /** Resolved on first use, so a daemon can adopt jobs even where tini is missing. */
  private bins (): { shim: string, tini: string } {
    this.binaries ??= { shim: checkShim(this.init.shimPath ?? DEFAULT_SHIM_PATH), tini: findTini(this.init.tiniPath) }
    return this.binaries
  }

  async spawn (spec: JobSpec, signal?: AbortSignal, ready?: Promise<void>): Promise<JobHandle> {
    signal?.throwIfAborted()
    await validateJobSpec(spec)
    const { shim, tini } = this.bins()
    const jobDir = join(spec.jobsRoot, spec.id)
    await this.makeJobDir(spec.jobsRoot, jobDir)
    const cg = this.init.cgroups
    const extras = { tini, procsFiles: cg.procsFiles(spec.id), oomFile: cg.oomEventsFile(spec.id) }
    // Independent steps at once: each is a few file system calls.
    const [cgroup, specFile] = await Promise.allSettled([
      this.createCgroup(spec),
      writeFile(join(jobDir, 'spec'), encodeRunSpec(spec, extras), { mode: 0o600 })
    ])
    if (cgroup.status === 'rejected') throw cgroup.reason
    try {
      if (specFile.status === 'rejected') throw specFile.reason
      await ready
      const rec = await runShim(shim, 'run', jobDir, this.init.startTimeoutMs ?? 10_000, signal)
      this.init.logger?.debug({ job: spec.id, hostPid: rec.pid, shimPid: rec.shim }, 'job started')
      return handleFor(spec.id, jobDir, rec, spec.stdin)
    } catch (err) {
      // Kills the job too if it got as far as its cgroup (e.g. when aborted mid-start).
      await this.init.cgroups.destroy(spec.id).catch(() => {})
      throw err
    }
  }

  private async makeJobDir (jobsRoot: string, jobDir: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (!this.rootsMade.has(jobsRoot)) {
        await mkdir(jobsRoot, { recursive: true, mode: 0o711 })
        this.rootsMade.add(jobsRoot)
      }
      try {
        await mkdir(jobDir, { mode: 0o711 })
        return
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'EEXIST') throw new JobExistsError(`job dir ${jobDir} already exists`, { cause: err })
        if (code !== 'ENOENT' || attempt > 0) throw err
        this.rootsMade.delete(jobsRoot) // removed behind our back: make it again
      }
    }
  }

  private async createCgroup (spec: Pick<JobSpec, 'id' | 'limits'>): Promise<void> {
    try {
      await this.init.cgroups.create(spec.id, spec.limits)
    } catch (err) {
      if (err instanceof CgroupExistsError) throw new JobExistsError(`a cgroup for job ${spec.id} already exists`, { cause: err })
      throw err
    }
  }

  async restore (spec: RestoreSpec, signal?: AbortSignal): Promise<JobHandle> {
    signal?.throwIfAborted()
    validateRestoreSpec(spec)
    const jobDir = join(spec.jobsRoot, spec.id)
    await mkdir(jobDir, { recursive: true, mode: 0o711 })
    // The shim of the run CRIU just killed (a rollback restores into its dir) must be done writing first.
    if (await awaitOldShim(jobDir, 5000, signal)) this.init.logger?.warn({ job: spec.id }, 'the previous shim of a restored job did not end: killed it')
    // State of an earlier run of this job (e.g. copied with its output) is not this run's.
    for (const stale of ['pid', 'exit', 'spec']) await unlink(join(jobDir, stale)).catch(() => {})
    const shim = checkShim(this.init.shimPath ?? DEFAULT_SHIM_PATH)
    const cg = this.init.cgroups
    await this.createCgroup({ id: spec.id, limits: spec.limits ?? {} })
    try {
      await writeFile(join(jobDir, 'spec'), encodeRestoreSpec(spec, cg.oomEventsFile(spec.id), cg.procsFiles(spec.id)), { mode: 0o600 })
      const rec = await this.runRestoreShim(shim, jobDir, spec, signal)
      this.init.logger?.debug({ job: spec.id, hostPid: rec.pid, shimPid: rec.shim }, 'job restored')
      return handleFor(spec.id, jobDir, rec, spec.stdin)
    } catch (err) {
      await cg.destroy(spec.id).catch(() => {})
      throw err
    }
  }

  /** With `hold`, the shim gets one end of a socket pair as its fd 0; we keep the other until `confirm`. */
  private async runRestoreShim (shim: string, jobDir: string, spec: RestoreSpec, signal?: AbortSignal): Promise<PidRecord> {
    const timeoutMs = spec.timeoutMs ?? this.init.startTimeoutMs ?? 10_000
    if (spec.hold !== true) return await runShim(shim, 'restore', jobDir, timeoutMs, signal)
    this.drop(spec.id)
    const [ours, theirs] = socketPair('stream')
    this.held.set(spec.id, ours)
    try {
      let started: Promise<PidRecord>
      try {
        started = runShim(shim, 'restore', jobDir, timeoutMs, signal, theirs)
      } finally {
        closeSync(theirs) // the shim has its copy: spawn() forked before returning
      }
      return await started
    } catch (err) {
      this.drop(spec.id)
      throw err
    }
  }

  confirm (handle: JobHandle): boolean {
    const fd = this.held.get(handle.id)
    if (fd === undefined) return true
    this.held.delete(handle.id)
    try {
      return writeSync(fd, 'go\n') === 3
    } catch {
      return false // EPIPE: the shim is gone (and with it the job)
    } finally {
      closeSync(fd)
    }
  }

  /** Closes our end of a held job's socket without "go": its shim kills the job. */
  private drop (id: string): void {
    const fd = this.held.get(id)
    if (fd === undefined) return
    this.held.delete(id)
    try { closeSync(fd) } catch { /* already closed */ }
  }

  async adopt (jobDir: string): Promise<AdoptResult> {
    const rec = await readPidRecord(jobDir)
    if (rec === undefined) {
      const exit = await readExitRecord(jobDir).catch(() => undefined)
      const why = exit?.kind === 'error' ? `: it failed to start (${exit.error})` : ''
      throw new JobNotFoundError(`no job was started in ${jobDir}${why}`)
    }
    const id = jobDir.split('/').filter((p) => p !== '').pop() ?? ''
    const handle = handleFor(id, jobDir, rec, await this.hasStdin(jobDir))
    const exit = await this.exitStatus(handle)
    if (exit !== undefined) return { state: 'exited', handle, exit }
    if (isSameProcess(rec.shim, rec.shimStart) || isSameProcess(rec.pid, rec.start)) return { state: 'running', handle }
    const late = await this.exitStatus(handle) // the shim may have written it between the two checks
    return late === undefined ? { state: 'lost', handle } : { state: 'exited', handle, exit: late }
  }

  private async hasStdin (jobDir: string): Promise<boolean> {
    return (await stat(join(jobDir, 'stdin')).catch(() => undefined))?.isFIFO() === true
  }

  async exitStatus (handle: JobHandle): Promise<ExitStatus | undefined> {
    const rec = await readExitRecord(handle.jobDir)
    if (rec === undefined) return undefined
    if (rec.kind === 'error') throw new JobStartError(`job ${handle.id} did not start: ${rec.error}`)
    if (rec.oomKills !== undefined) return rec.status
    // No counter in the exit file (no memory controller, or a fake): ask the cgroup if it is left.
    const oom = await this.init.cgroups.oomKilled(handle.id).catch(() => false)
    return oom ? { ...rec.status, oomKilled: true } : rec.status
  }

  async waitExit (handle: JobHandle, signal?: AbortSignal): Promise<ExitStatus> {
    const watcher = new DirWatcher(handle.jobDir, this.pollMs, ['exit'])
    try {
      for (;;) {
        const exit = await this.exitStatus(handle)
        if (exit !== undefined) return exit
        if (!isSameProcess(handle.shimPid, handle.shimPidStart)) {
          const late = await this.exitStatus(handle)
          if (late !== undefined) return late
          throw new JobLostError(`the supervisor of job ${handle.id} (pid ${handle.shimPid}) died without recording its exit`)
        }
        await watcher.next(signal)
      }
    } finally {
      watcher.close()
    }
  }

  async kill (handle: JobHandle, sig: NodeJS.Signals | number): Promise<boolean> {
    return signalProcess(handle.hostPid, handle.hostPidStart, typeof sig === 'number' ? sig : constants.signals[sig])
  }

  async readOutput (handle: JobHandle, stream: OutputStream, fromOffset = 0, maxBytes = 1 << 20): Promise<{ data: Buffer, nextOffset: number }> {
    const data = await readChunk(stream === 'stdout' ? handle.stdoutPath : handle.stderrPath, fromOffset, maxBytes)
    return { data, nextOffset: fromOffset + data.length }
  }

  followOutput (handle: JobHandle, stream: OutputStream, opts: FollowOptions = {}): AsyncIterable<Buffer> {
    return followFile({
      path: stream === 'stdout' ? handle.stdoutPath : handle.stderrPath,
      fromOffset: opts.fromOffset ?? 0,
      pollMs: this.pollMs,
      signal: opts.signal,
      finished: async () => (await readExitRecord(handle.jobDir)) !== undefined ||
        (!isSameProcess(handle.shimPid, handle.shimPidStart) && !isSameProcess(handle.hostPid, handle.hostPidStart))
    })
  }

  async writeStdin (handle: JobHandle, data: Uint8Array | string, signal?: AbortSignal, paused?: () => boolean): Promise<number> {
    if (handle.stdinPath === undefined) throw new StdinClosedError(`job ${handle.id} was started without stdin`)
    return await this.stdin.write(handle.stdinPath, data, signal, paused)
  }

  /** Closes our writer, then has the shim close its own (SIGUSR1): the job then reads EOF. */
  async closeStdin (handle: JobHandle): Promise<void> {
    if (handle.stdinPath === undefined) throw new StdinClosedError(`job ${handle.id} was started without stdin`)
    await this.stdin.close(handle.stdinPath)
    signalProcess(handle.shimPid, handle.shimPidStart, SIGUSR1)
  }

  async stats (handle: JobHandle): Promise<CgroupStats | undefined> {
    return await this.init.cgroups.stats(handle.id).catch(() => undefined)
  }

  async release (handle: JobHandle, opts: { removeDir?: boolean, signal?: AbortSignal } = {}): Promise<void> {
    this.drop(handle.id)
    if (handle.stdinPath !== undefined) this.stdin.destroy(handle.stdinPath)
    await this.init.cgroups.destroy(handle.id, { signal: opts.signal })
    if (opts.removeDir === true) await rm(handle.jobDir, { recursive: true, force: true })
  }
}

/** Signals pid through a pidfd if it is still the (live) process started at `start`; false if it is gone. */
export function signalProcess (pid: number, start: number, sig: number): boolean {
  let fd: number
  try {
    fd = pidfdOpen(pid)
  } catch {
    return false
  }
  try {
    if (!isSameProcess(pid, start)) return false
    pidfdSendSignal(fd, sig)
    return true
  } catch (err) {
    if ((err as { code?: string }).code === 'ESRCH') return false
    throw err
  } finally {
    closePidfd(fd)
  }
}
