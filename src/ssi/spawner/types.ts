/**
 * The process-spawning side effect behind one interface: `JobSpawner`. `ShimJobSpawner` starts
 * each job under its own supervisor process (`ssi-shim`, detached from the daemon), so a daemon
 * restart neither kills nor loses running jobs: their output keeps going to files in the job dir,
 * and their exit status is written there by the shim. The job dir `<jobsRoot>/<id>` holds:
 *   spec      what the shim runs (NUL-separated key=value records, written by the spawner)
 *   pid       host pid of the job's tini and of the shim, with their /proc start times
 *   stdout, stderr   the job's output (append-only files)
 *   stdin     FIFO, when the spec asks for stdin
 *   exit      how the job ended (written atomically by the shim)
 *   shim.log  the shim's own diagnostics
 *
 * Concurrency: every method may be called concurrently for different jobs; `writeStdin` calls for
 * one job are written in call order. Everything that waits takes an AbortSignal.
 */
import type { CgroupStats } from '../cgroups/types.js'

export interface JobLimits {
  /** Memory in bytes; the kernel OOM-kills the job beyond it (no swap). */
  readonly memoryBytes?: number
  /** CPU bandwidth in CPUs, e.g. 1.5. */
  readonly cpus?: number
  /** Maximum number of tasks (processes + threads), tini included. */
  readonly pids?: number
}

export interface JobSpec {
  /** Names the job dir and the cgroup (e.g. the vpid in decimal): [A-Za-z0-9][A-Za-z0-9._-]*. */
  readonly id: string
  /** Command and arguments; argv[0] is looked up in env.PATH (else /bin:/usr/bin) by tini. */
  readonly argv: readonly string[]
  /** The job's whole environment (nothing is inherited from the daemon). */
  readonly env: Readonly<Record<string, string>>
  /** Absolute working directory, entered as the job's user. */
  readonly cwd: string
  readonly uid: number
  readonly gid: number
  /** Supplementary groups. */
  readonly groups: readonly number[]
  /** Host name inside the job's UTS namespace. */
  readonly hostname: string
  readonly limits: JobLimits
  /** true: stdin is the FIFO <jobDir>/stdin (see writeStdin); false: /dev/null. */
  readonly stdin: boolean
  /** Absolute dir under which the job dir `<jobsRoot>/<id>` is created. */
  readonly jobsRoot: string
  /**
   * true (default): a private mount namespace with a /proc of the job's PID namespace, so tools
   * such as ps see the job's own pids. CRIU must then dump with `--external mnt[]`.
   */
  readonly privateProc?: boolean
  /**
   * false: the job's io_uring_setup fails with ENOSYS (a seccomp filter), so programs fall back to
   * epoll and threads and the job stays migratable (CRIU cannot dump io_uring). Default true.
   */
  readonly ioUring?: boolean
}

/** Restarts a checkpointed job (migration): runs `command` as a child of a subreaper shim. */
export interface RestoreSpec {
  readonly id: string
  readonly jobsRoot: string
  /** E.g. [criu, 'restore', '-d', '--pidfile', pidFile, ...]; must exit 0 once the tree runs. */
  readonly command: readonly string[]
  /** File where `command` writes the host pid of the restored root. */
  readonly pidFile: string
  /** The job had stdin: keep a write end of <jobDir>/stdin open as `spawn` does. */
  readonly stdin: boolean
  /**
   * Limits of the job's cgroup (named by `id`), created before `command` runs; `command` joins
   * it, so a CRIU restoring with `--manage-cgroups=ignore` puts the tree there. Default none.
   */
  readonly limits?: JobLimits
  /**
   * The restored job lives only as long as this daemon until `confirm`: if the daemon dies first,
   * the shim kills it (a migration's target whose source rolls back must not keep a copy). Default false.
   */
  readonly hold?: boolean
  /**
   * How long the shim may take to report the restored job, ms (default: the spawner's start
   * timeout). A restore reading its images as they arrive takes as long as their transfer.
   */
  readonly timeoutMs?: number
}

export interface JobHandle {
  readonly id: string
  readonly jobDir: string
  /** Host pid of the job's init (tini): the CRIU dump root. */
  readonly hostPid: number
  /** Start time of hostPid (clock ticks since boot, /proc/<pid>/stat field 22): guards pid reuse. */
  readonly hostPidStart: number
  readonly shimPid: number
  readonly shimPidStart: number
  readonly stdoutPath: string
  readonly stderrPath: string
  /** The stdin FIFO, if the job has one. */
  readonly stdinPath: string | undefined
}

export interface ExitStatus {
  /** Exit code when the job's main process exited by itself. */
  readonly code?: number
  /**
   * Signal that ended the job's main process. tini reports a child killed by signal N as exit
   * code 128 + N, which is decoded here (as a shell does): a process calling exit(130) reads as
   * SIGINT. A signal that killed tini itself (SIGKILL from outside) is reported as such.
   */
  readonly signal?: number
  /** The kernel OOM-killed a process of the job's cgroup. */
  readonly oomKilled: boolean
  readonly coreDumped?: boolean
  /** When the shim saw the job end (ms since the epoch). */
  readonly finishedMs: number
}

export type AdoptResult =
  | { readonly state: 'running', readonly handle: JobHandle }
  | { readonly state: 'exited', readonly handle: JobHandle, readonly exit: ExitStatus }
  /** Neither the shim nor tini is alive and no exit was recorded (e.g. the host rebooted). */
  | { readonly state: 'lost', readonly handle: JobHandle }

export type OutputStream = 'stdout' | 'stderr'

export interface FollowOptions {
  /** Byte offset to start from (default 0). */
  readonly fromOffset?: number
  readonly signal?: AbortSignal
}

export interface JobSpawner {
  /**
   * Starts the job; resolves once tini runs in the job's namespaces and cgroup (the command itself
   * may still fail, e.g. exit 127 when not found). @throws JobSpecError, JobExistsError, JobStartError,
   * RuntimeBinaryError. `ready` is awaited after the job dir, spec and cgroup are made and before
   * the job is launched, so the caller's own bookkeeping (recording the job) can overlap that work;
   * if it rejects, nothing is launched and the cgroup is removed.
   */
  spawn(spec: JobSpec, signal?: AbortSignal, ready?: Promise<void>): Promise<JobHandle>
  /** Runs a restore command under a subreaper shim that then supervises the restored root. */
  restore(spec: RestoreSpec, signal?: AbortSignal): Promise<JobHandle>
  /** Lets a job restored with `hold` outlive this daemon (no-op otherwise); false if its shim was already gone. */
  confirm(handle: JobHandle): boolean
  /** Re-attaches to the job of `jobDir` (e.g. after a daemon restart). @throws JobNotFoundError */
  adopt(jobDir: string): Promise<AdoptResult>
  /** The exit status if the job has ended, else undefined. Never blocks. */
  exitStatus(handle: JobHandle): Promise<ExitStatus | undefined>
  /** Resolves once the job has ended. @throws JobLostError if its shim died without recording it */
  waitExit(handle: JobHandle, signal?: AbortSignal): Promise<ExitStatus>
  /**
   * Signals the job's tini, which forwards catchable signals to the job's process group; SIGKILL
   * ends tini and thereby the whole PID namespace. False if the job is no longer running.
   */
  kill(handle: JobHandle, signal: NodeJS.Signals | number): Promise<boolean>
  /** Up to maxBytes (default 1 MiB) of output from `fromOffset`. */
  readOutput(handle: JobHandle, stream: OutputStream, fromOffset?: number, maxBytes?: number): Promise<{ data: Buffer, nextOffset: number }>
  /** Output from `fromOffset`, live (tail -f) until the job has ended and everything is read. */
  followOutput(handle: JobHandle, stream: OutputStream, opts?: FollowOptions): AsyncIterable<Buffer>
  /**
   * Writes to the job's stdin; resolves once the kernel took the data, with its byte count. Stops
   * early (fewer bytes) only when `paused()` turns true while the FIFO is full. @throws StdinClosedError
   */
  writeStdin(handle: JobHandle, data: Uint8Array | string, signal?: AbortSignal, paused?: () => boolean): Promise<number>
  /** The job reads EOF once what was written is consumed. */
  closeStdin(handle: JobHandle): Promise<void>
  /** Usage of the job's cgroup, undefined once it is gone. */
  stats(handle: JobHandle): Promise<CgroupStats | undefined>
  /** Kills whatever is left, removes the cgroup; with removeDir also the job dir and its output. */
  release(handle: JobHandle, opts?: { readonly removeDir?: boolean, readonly signal?: AbortSignal }): Promise<void>
}

export interface SpawnerLogger {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}
