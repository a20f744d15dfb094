/**
 * What the job service needs from the executing node's runtime (spawner + cgroups): start a job
 * isolated, find it again after a daemon restart, learn its exit, signal it, read its output, and
 * sample its usage. `createJobRuntime` (runtime-host.ts) implements it with the per-job shim and the
 * host's cgroup manager.
 */
import type { ExitInfo, JobLimits, JobOwner } from './record.js'
import type { LazyPagesDaemon } from '../../migration/criu/lazy-pages.js'
import type { MigrationCapabilities } from '../../migration/modes.js'
import type { PageServerProcess } from '../../migration/page-stream.js'

export interface RuntimeSpec {
  readonly vpid: number
  readonly argv: readonly string[]
  readonly env: Readonly<Record<string, string>>
  readonly cwd: string
  readonly owner: JobOwner
  readonly hostname: string
  readonly limits: JobLimits
  readonly stdin: boolean
}

export interface RuntimeJob {
  readonly vpid: number
  readonly jobDir: string
  /** Host pid of the job's init inside its PID namespace. */
  readonly hostPid: number
}

export interface JobUsage {
  readonly cpuUsageNs: number
  readonly memoryBytes: number
}

/** What the target of a migration restores: images plus the job's output files already in place. */
export interface RuntimeRestoreSpec {
  readonly vpid: number
  /** CRIU images of the dumped job. */
  readonly imagesDir: string
  readonly limits: JobLimits
  /** CRIU's names of the job's output files in the images (from `checkpoint`), redirected to this node's files. */
  readonly stdio: readonly DumpedFile[]
  /** Post-copy: memory comes from a lazy-pages daemon started for imagesDir (startLazyPages). */
  readonly lazyPages?: boolean
  /** The restored job dies with this daemon until `confirmRestored` (a migration's target). */
  readonly hold?: boolean
  /** The images come through an image streamer in imagesDir while they arrive. */
  readonly stream?: boolean
  /**
   * A FIFO CRIU reads a verdict from once the tree is restored and before it runs: "go" lets it
   * run, anything else or the writer's end kills it (restore then fails). Until then `restore` waits.
   */
  readonly gate?: string
  /**
   * CRIU starts before the images are complete (a streamer, or an inventory held back:
   * src/migration/inventory-hold.ts), so the restore lasts as long as the transfer: no start
   * timeout, the caller's signal bounds it.
   */
  readonly waitsForImages?: boolean
}

/** A post-copy dump in progress: the images but memory are written, pages are being served. */
export interface LazyCheckpoint {
  readonly stdio: DumpedFile[]
  /** Settles when the page server has ended: resolves once the target has every page (CRIU then kills the tree). */
  readonly served: Promise<void>
  /** When CRIU was about to freeze the tree (its pre-dump notification), in epoch ms: the job ran until then. */
  readonly freezingAtMs?: number
}

/** An output file of a dumped job: CRIU's key for it, and which stream it is. */
export interface DumpedFile {
  readonly key: string
  readonly stream: 'stdout' | 'stderr' | 'stdin'
}

export interface CheckpointOptions {
  readonly leaveRunning?: boolean
  readonly onFrozen?: () => Promise<void>
  /**
   * Stop-copy with streamed pages: CRIU sends the pages over this connected stream socket (our
   * fd: CRIU gets its own copy; the other end bridges to the target, src/migration/page-stream.ts)
   * instead of writing them into imagesDir.
   */
  readonly pageServerSocket?: number
}

export interface JobRuntime {
  /**
   * Starts the job; resolves once its init runs (the exit may follow at any time). `ready`: awaited
   * right before the launch (see JobSpawner.spawn); its rejection fails the start.
   */
  start(spec: RuntimeSpec, signal?: AbortSignal, ready?: Promise<void>): Promise<RuntimeJob>
  /** Re-attaches to a job started by an earlier daemon; undefined if nothing is left of it. */
  adopt(vpid: number): Promise<{ job: RuntimeJob, exit?: ExitInfo } | undefined>
  /** Resolves with the exit once the job has ended (immediately if it already has). */
  waitExit(job: RuntimeJob, signal?: AbortSignal): Promise<ExitInfo>
  signal(job: RuntimeJob, signal: NodeJS.Signals): Promise<void>
  /** Output so far, then live until the job has ended and everything is read (when `follow`). */
  output(job: RuntimeJob, fd: 1 | 2, offset: number, follow: boolean, signal?: AbortSignal): AsyncIterable<Uint8Array>
  /** Bytes the job's stdin took: all of data, unless `paused()` turned true while it was full. */
  writeStdin(job: RuntimeJob, data: Uint8Array, paused?: () => boolean): Promise<number>
  closeStdin(job: RuntimeJob): Promise<void>
  usage(job: RuntimeJob): Promise<JobUsage | undefined>
  /**
   * The output of a job this daemon holds no handle for (one that ended, or stopped for a checkpoint,
   * before a daemon restart), read from its files in `paths(vpid)`.
   */
  storedOutput(vpid: number, fd: 1 | 2, offset: number): AsyncIterable<Uint8Array>
  /** Deletes the dir (output files) of such a job, and its cgroup if one is left. */
  removeStored(vpid: number): Promise<void>
  /** Frees the job's cgroup after it ended; its output stays until `remove`. */
  release(job: RuntimeJob): Promise<void>
  /** Deletes everything left of a finished job (output files, dir). */
  remove(job: RuntimeJob): Promise<void>
  /** Where this node keeps a job's dir and output files (whether or not it exists yet). */
  paths(vpid: number): { readonly jobDir: string, readonly stdout: string, readonly stderr: string }
  /**
   * Dumps the job's tree into imagesDir (which must exist; CRIU's log and stats-dump go there too);
   * CRIU kills the tree afterwards unless `opts.leaveRunning`. `opts.onFrozen` runs after the dump
   * while the tree is still frozen (e.g. to copy its output files at exactly the dumped point).
   */
  checkpoint(job: RuntimeJob, imagesDir: string, signal?: AbortSignal, opts?: CheckpointOptions): Promise<DumpedFile[]>
  /**
   * Restores a dumped job under a new supervisor in `paths(vpid).jobDir`, whose stdout/stderr must
   * already hold the output so far; resolves once the tree runs (then waitExit as for `start`).
   */
  restore(spec: RuntimeRestoreSpec, signal?: AbortSignal): Promise<RuntimeJob>
  /** A job restored with `hold` is taken on (recorded): it outlives this daemon from now on. False: it is already gone. */
  confirmRestored(job: RuntimeJob): boolean
  /** `restore` takes `stream` and `gate` (a CRIU that reads images from a streamer). */
  readonly restoresStreaming?: boolean
  /** `restore` runs CRIU, which reads the images only as it needs them: it may start before they are complete (`waitsForImages`). */
  readonly restoresEarly?: boolean
  /** CRIU's names of the job's stdio files, as `checkpoint` will return them (a target may start its restore with them). */
  dumpedStdio?(job: RuntimeJob): Promise<DumpedFile[]>
  /** What this host can do for migration (post-copy, pre-copy); optional for runtimes without CRIU. */
  capabilities?(signal?: AbortSignal): Promise<MigrationCapabilities>
  /**
   * Post-copy source: dumps all but memory into imagesDir and serves the pages on 127.0.0.1:port;
   * resolves once the page server listens (the tree stays frozen until `served`).
   */
  checkpointLazy?(job: RuntimeJob, imagesDir: string, port: number, signal?: AbortSignal): Promise<LazyCheckpoint>
  /** Post-copy target: starts `criu lazy-pages` for imagesDir pulling from 127.0.0.1:port; then `restore` with lazyPages. */
  startLazyPages?(imagesDir: string, port: number, signal?: AbortSignal): Promise<LazyPagesDaemon>
  /** Stop-copy target of streamed pages: a CRIU page server writing them into imagesDir. Absent: no streaming. */
  receivePages?(imagesDir: string): Promise<PageServerProcess>
  /** Rebuilds the pages of a streamed dump in imagesDir from its recorded stream (a rollback). */
  replayPages?(streamFile: string, imagesDir: string, signal?: AbortSignal): Promise<void>
}
