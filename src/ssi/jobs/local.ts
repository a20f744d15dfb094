/**
 * Jobs executing on this node: their records (`job/<vpid>`), their runtime handles, and the watch
 * that records each exit. Survives daemon restarts: `recover()` re-adopts what is still running and
 * records what ended meanwhile.
 */
import { JobPermissionError, JobStateError, VpidNotFoundError } from './errors.js'
import { TERMINAL_STATES, jobKey, stateForExit, transition } from './record.js'
import type { CheckpointNote, ExitInfo, JobRecord } from './record.js'
import type { JobRuntime, RuntimeJob } from './runtime.js'
import type { JobStartParams } from '../../protocol/jobs.js'
import * as migration from './local-migration.js'
import { recoverJobs } from './local-recovery.js'
import type { JobBook } from './local-migration.js'

export interface JobStore {
  get<T>(key: string): Promise<T | undefined>
  put(key: string, value: unknown): Promise<void>
  del(key: string): Promise<void>
  list<T>(prefix: string): Promise<Array<{ key: string, value: T }>>
}

export interface LocalJobsLogger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
}

export interface LocalJobsInit {
  readonly node: string
  readonly store: JobStore
  readonly runtime: JobRuntime
  readonly logger: LocalJobsLogger
  /** Told of every state change, e.g. to update the job's home node. */
  readonly onChange: (job: JobRecord) => void
  readonly retainFinishedMs: number
  /** Whether fencing has frozen the job (its processes are stopped while this node sees no majority). */
  readonly isFenced?: (vpid: number) => boolean
}

/** A job's record and runtime handle, with a promise of its end (LocalJobs' bookkeeping). */
export interface JobEntry {
  record: JobRecord
  runtime?: RuntimeJob
  ended: Promise<JobRecord>
  resolveEnded: (r: JobRecord) => void
  /** Set by `recover` for a migration left to the migration service: whether its tree still runs. */
  treeAlive?: boolean
}

export interface JobSnapshot extends JobRecord {
  readonly cpuPercent: number
  readonly rssBytes: number
  /** Frozen by fencing (see LocalJobsInit.isFenced). */
  readonly fenced?: boolean
}

/** What `stdin` did: bytes written here; `movedTo`: the job moved there, send the rest of the data (and the eof) to it. */
export interface StdinResult {
  readonly written: number
  readonly movedTo?: string
}

/** How often a stdin write paused by a migration looks whether the migration has ended, ms. */
const STDIN_MIGRATION_POLL_MS = 20

async function abortableSleep (ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  await new Promise(resolve => setTimeout(resolve, ms))
}

export class LocalJobs {
  private readonly jobs = new Map<number, JobEntry>()
  private readonly cpuSamples = new Map<number, { ns: number, at: number }>()
  private readonly watchAbort = new AbortController()

  /** The bookkeeping below, for local-recovery.ts and local-migration.ts. */
  private readonly book: JobBook

  constructor (private readonly init: LocalJobsInit) {
    this.book = {
      init,
      track: record => this.track(record),
      update: async (entry, record, notify) => { await this.update(entry, record, notify) },
      finish: async (entry, exit) => { await this.finish(entry, exit) },
      watch: entry => { this.watch(entry) },
      entry: vpid => this.entry(vpid),
      authorize: (record, uid, action) => { this.authorize(record, uid, action) },
      forgetCpu: vpid => { this.cpuSamples.delete(vpid) }
    }
  }

  /**
   * Loads records and re-adopts jobs left running by an earlier daemon. Jobs 'migrating' for which
   * `journalled` is true are left so, for the migration service to settle (see `recovered`).
   */
  async recover (journalled: (vpid: number) => boolean = () => false): Promise<void> {
    await recoverJobs(this.init, this.book, journalled)
  }

  stop (): void {
    this.watchAbort.abort()
  }

  has (vpid: number): boolean { return this.jobs.has(vpid) }

  runningCount (): number {
    let n = 0
    for (const e of this.jobs.values()) if (!TERMINAL_STATES.has(e.record.state)) n++
    return n
  }

  async start (p: JobStartParams): Promise<JobRecord> {
    if (this.jobs.has(p.vpid)) throw new JobStateError(`vpid ${p.vpid} is already known on ${this.init.node}`)
    const record: JobRecord = {
      vpid: p.vpid, owner: p.owner, argv: p.argv, cwd: p.cwd, hostname: `vp${p.vpid}`, limits: p.limits,
      node: this.init.node, homeNode: p.homeNode, state: 'starting', createdMs: Date.now(), stdin: p.stdin
    }
    const entry = this.track(record)
    // The home node recorded where the job goes before it asked for it; it hears of the job's end
    // (or failure), not of these two steps, which saves two peer calls per start. The record is
    // written while the runtime prepares the job's dir and cgroup; the job is launched only once
    // it is (so a restarted daemon finds every job it launched).
    const recorded = this.update(entry, record, false)
    recorded.catch(() => {}) // awaited below; the runtime may fail before it awaits it
    try {
      entry.runtime = await this.init.runtime.start({ ...p, hostname: record.hostname }, undefined, recorded)
    } catch (err) {
      await recorded.catch(() => {}) // its write first: the failure must be the record that stays
      await this.update(entry, transition(record, 'failed', { endedMs: Date.now(), error: (err as Error).message }))
      throw err
    }
    await this.update(entry, transition(record, 'running', { hostPid: entry.runtime.hostPid, jobDir: entry.runtime.jobDir, startedMs: Date.now() }), false)
    this.watch(entry)
    return entry.record
  }

  private track (record: JobRecord): JobEntry {
    let resolveEnded!: (r: JobRecord) => void
    const ended = new Promise<JobRecord>(resolve => { resolveEnded = resolve })
    const entry: JobEntry = { record, ended, resolveEnded }
    this.jobs.set(record.vpid, entry)
    return entry
  }

  private watch (entry: JobEntry): void {
    const rt = entry.runtime
    if (rt === undefined) return
    this.init.runtime.waitExit(rt, this.watchAbort.signal).then(
      async exit => { await this.finish(entry, exit) },
      async err => {
        if (this.watchAbort.signal.aborted) return
        this.init.logger.warn({ vpid: rt.vpid, err: (err as Error).message }, 'lost track of a job exit')
        // Nobody will record its end: say so rather than leave waiters (wait, logs -f) hanging.
        if (entry.record.state === 'running' && entry.runtime === rt) {
          await this.update(entry, transition(entry.record, 'lost', { endedMs: Date.now(), error: `lost track of its exit: ${(err as Error).message}` }))
        }
      }
    ).catch(err => { this.init.logger.warn({ vpid: rt.vpid, err: (err as Error).message }, 'could not record a job end') })
  }

  private async finish (entry: JobEntry, exit: ExitInfo): Promise<void> {
    // While migrating, the end of the supervised tree is CRIU's doing: the migration decides.
    if (TERMINAL_STATES.has(entry.record.state) || entry.record.state === 'migrating' || entry.record.state === 'checkpointed') return
    const ended = transition(entry.record, stateForExit(exit), { exit, endedMs: Date.now() })
    // Waiters hear of the end before the store write: the shim's exit file already holds it (a
    // restarted daemon records it from there), and an attached run's last answer waited for the write.
    entry.record = ended
    entry.resolveEnded(ended)
    await this.update(entry, ended)
    if (entry.runtime !== undefined) {
      await this.init.runtime.release(entry.runtime).catch(err => { this.init.logger.warn({ vpid: entry.record.vpid, err: (err as Error).message }, 'cgroup cleanup failed') })
    }
    this.cpuSamples.delete(entry.record.vpid)
  }

  private async update (entry: JobEntry, record: JobRecord, notify = true): Promise<void> {
    entry.record = record
    await this.init.store.put(jobKey(record.vpid), record)
    if (TERMINAL_STATES.has(record.state)) entry.resolveEnded(record)
    if (notify) this.init.onChange(record)
  }

  private entry (vpid: number): JobEntry {
    const e = this.jobs.get(vpid)
    if (e === undefined) throw new VpidNotFoundError(`no job with vpid ${vpid} on ${this.init.node}`)
    return e
  }

  get (vpid: number): JobRecord { return this.entry(vpid).record }

  /** Running jobs here (not migrating, not ended), with the host pid of each one's init. */
  running (): Array<{ record: JobRecord, hostPid: number }> {
    return [...this.jobs.values()].flatMap(e => e.record.state === 'running' && e.runtime !== undefined ? [{ record: e.record, hostPid: e.runtime.hostPid }] : [])
  }

  async snapshot (vpid: number): Promise<JobSnapshot> {
    const e = this.entry(vpid)
    const usage = e.runtime !== undefined && !TERMINAL_STATES.has(e.record.state) ? await this.init.runtime.usage(e.runtime) : undefined
    const fenced = e.record.state === 'running' && this.init.isFenced?.(vpid) === true ? { fenced: true } : {}
    return { ...e.record, cpuPercent: usage === undefined ? 0 : this.cpuPercent(vpid, usage.cpuUsageNs), rssBytes: usage?.memoryBytes ?? 0, ...fenced }
  }

  /** Jobs of this node; jobs that moved away are listed by the node they moved to. */
  async list (): Promise<JobSnapshot[]> {
    const here = [...this.jobs.entries()].filter(([, e]) => e.record.state !== 'moved').map(([v]) => v)
    return await Promise.all(here.sort((a, b) => a - b).map(async v => await this.snapshot(v)))
  }

  // ---- migration ------------------------------------------------------------------------------

  /** Marks a running job 'migrating' (see local-migration.ts). @throws JobPermissionError, JobStateError */
  async beginMigration (vpid: number, asUid: number, action = 'migrate'): Promise<{ record: JobRecord, runtime: RuntimeJob }> {
    return await migration.beginMigration(this.book, vpid, asUid, action)
  }

  /** A 'migrating' job left by `recover`: its runtime handle if any, and whether its tree runs. */
  recovered (vpid: number): { record: JobRecord, runtime?: RuntimeJob, treeAlive: boolean } | undefined {
    const e = this.jobs.get(vpid)
    if (e === undefined || e.record.state !== 'migrating') return undefined
    return { record: e.record, runtime: e.runtime, treeAlive: e.treeAlive ?? false }
  }

  /**
   * This node's copy of the job is stale: its home node restored the job from a checkpoint on `node`
   * while this node was away. The copy is killed (with its cgroup) and the record points at `node`,
   * so waiters and followers here go on there, as after a migration. False if it is not running here.
   */
  async supersede (vpid: number, node: string): Promise<boolean> {
    const e = this.jobs.get(vpid)
    if (e === undefined || e.record.state !== 'running' || node === this.init.node) return false
    await this.markMoved(vpid, node, `a stale copy: the job was restored from a checkpoint on ${node} while ${this.init.node} was away`)
    return true
  }

  /** The migration finished: the job runs on `node` now. Frees what is left of it here. */
  async markMoved (vpid: number, node: string, detail?: string): Promise<JobRecord> { return await migration.markMoved(this.book, vpid, node, detail) }

  /** The migration failed and the job runs here again (restored from its images, or never dumped). */
  async resumeAfterMigration (vpid: number, runtime: RuntimeJob | undefined, error: string, target?: string): Promise<void> {
    await migration.resumeAfterMigration(this.book, vpid, runtime, error, target)
  }

  /** The migration failed and even the rollback did: the job is lost. */
  async loseAfterMigration (vpid: number, error: string, target?: string): Promise<void> { await migration.loseAfterMigration(this.book, vpid, error, target) }

  /** A job here that cannot go on (its post-copy page pull broke) is lost, with why. */
  async lose (vpid: number, error: string): Promise<void> { await migration.loseHere(this.book, vpid, error) }

  /** Whether vpid may be restored here: unknown, or it moved away earlier. */
  canReceive (vpid: number): boolean {
    const e = this.jobs.get(vpid)
    return e === undefined || e.record.state === 'moved' || TERMINAL_STATES.has(e.record.state)
  }

  /** Takes over a job restored here by a migration, with its vpid, owner and history. */
  async adoptMigrated (record: JobRecord, runtime: RuntimeJob): Promise<JobRecord> { return await migration.adoptMigrated(this.book, record, runtime) }

  /**
   * A checkpoint to disk (begun with beginMigration) ended: the tree was stopped by CRIU after a
   * good dump (`stopped`), or runs on (--leave-running, or a failed dump).
   */
  async endCheckpoint (vpid: number, stopped: boolean, to?: CheckpointNote): Promise<void> {
    const e = this.entry(vpid)
    await this.update(e, transition(e.record, stopped ? 'checkpointed' : 'running', stopped && to !== undefined ? { checkpointedTo: to } : {}))
    if (stopped && e.runtime !== undefined) await this.init.runtime.release(e.runtime).catch(() => {})
    // An exit while 'migrating' was ignored: watch again (a second watcher of a live tree is harmless).
    if (!stopped) this.watch(e)
  }

  /** A checkpointed job restored on this node: the same entry, so its waiters keep waiting. */
  async resumeFromCheckpoint (vpid: number, runtime: RuntimeJob): Promise<JobRecord> {
    const e = this.entry(vpid)
    e.runtime = runtime
    this.cpuSamples.delete(vpid)
    await this.update(e, transition(e.record, 'running', { hostPid: runtime.hostPid, jobDir: runtime.jobDir }))
    this.watch(e)
    return e.record
  }

  /** Drops the record (and output) of an ended job that runs elsewhere again, restored from a checkpoint. */
  async forget (vpid: number): Promise<void> {
    const e = this.jobs.get(vpid)
    if (e === undefined || !TERMINAL_STATES.has(e.record.state)) return
    await this.removeFiles(vpid, e)
    await this.init.store.del(jobKey(vpid))
    this.jobs.delete(vpid)
  }

  private async removeFiles (vpid: number, e: JobEntry): Promise<void> {
    const removed = e.runtime !== undefined ? this.init.runtime.remove(e.runtime) : this.init.runtime.removeStored(vpid)
    await removed.catch((err: unknown) => { this.init.logger.warn({ vpid, err: String(err) }, 'could not remove the files of a finished job') })
  }

  /** CPU use since the previous sample (or since start), in percent of one core. */
  private cpuPercent (vpid: number, ns: number): number {
    const now = Date.now()
    const prev = this.cpuSamples.get(vpid) ?? { ns: 0, at: this.jobs.get(vpid)?.record.startedMs ?? now }
    this.cpuSamples.set(vpid, { ns, at: now })
    const wallNs = (now - prev.at) * 1e6
    // A restored job (e.g. after a migration rolled back) counts from 0 again in its new cgroup.
    const usedNs = ns >= prev.ns ? ns - prev.ns : ns
    return wallNs > 0 ? Math.round((usedNs / wallNs) * 1000) / 10 : 0
  }

  authorize (record: JobRecord, uid: number, action: string): void {
    if (uid !== 0 && uid !== record.owner.uid) {
      throw new JobPermissionError(`permission denied: job ${record.vpid} belongs to ${record.owner.user} (uid ${record.owner.uid}); only its owner or root may ${action} it`)
    }
  }

  async signal (vpid: number, sig: NodeJS.Signals, asUid: number): Promise<void> {
    const e = this.entry(vpid)
    this.authorize(e.record, asUid, 'signal')
    if (TERMINAL_STATES.has(e.record.state) || e.record.state === 'checkpointed' || e.runtime === undefined) {
      throw new JobStateError(`job ${vpid} is not running (${e.record.state})`)
    }
    await this.init.runtime.signal(e.runtime, sig)
  }

  async wait (vpid: number, signal?: AbortSignal): Promise<JobRecord> {
    const e = this.entry(vpid)
    if (signal === undefined) return await e.ended
    return await Promise.race([e.ended, new Promise<never>((_r, reject) => {
      signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
    })])
  }

  /**
   * The record once the job has ended here or is migrating away: what a follower that has read all
   * of the output reports (the exit is recorded a moment after the output ends).
   */
  async settled (vpid: number, signal?: AbortSignal): Promise<JobRecord> {
    const e = this.entry(vpid)
    if (TERMINAL_STATES.has(e.record.state) || e.record.state === 'migrating' || e.record.state === 'checkpointed') return e.record
    return await this.wait(vpid, signal)
  }

  /** The job's output; with `follow`, until it has ended and all is read. */
  output (vpid: number, fd: 1 | 2, offset: number, follow: boolean, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const e = this.entry(vpid)
    if (e.runtime !== undefined) return this.init.runtime.output(e.runtime, fd, offset, follow, signal)
    // Loaded by `recover` without a handle: nothing writes to its files any more.
    if (TERMINAL_STATES.has(e.record.state) || e.record.state === 'checkpointed') return this.init.runtime.storedOutput(vpid, fd, offset)
    return (async function * () {})()
  }

  /**
   * Writes to the job's stdin (then closes it if `eof`). While the job migrates, writing pauses
   * (bytes already in its FIFO travel in the images); if it moved, answers how many bytes went in
   * here and where it runs now, and the caller sends the rest there: no byte lost or repeated.
   */
  async stdin (vpid: number, asUid: number, data: Uint8Array | undefined, eof: boolean, signal?: AbortSignal): Promise<StdinResult> {
    const e = this.entry(vpid)
    this.authorize(e.record, asUid, 'write to')
    if (!e.record.stdin) throw new JobStateError(`job ${vpid} was not started with stdin (-i)`)
    const bytes = data ?? new Uint8Array(0)
    let written = 0
    // A function, not a narrowed property: the state changes across the awaits.
    const migrating = (): boolean => e.record.state === 'migrating'
    for (;;) {
      while (migrating()) await abortableSleep(STDIN_MIGRATION_POLL_MS, signal)
      if (e.record.state === 'moved') return { written, movedTo: e.record.node }
      if (e.runtime === undefined) throw new JobStateError(`job ${vpid} was not started with stdin (-i)`)
      if (written < bytes.byteLength) written += await this.init.runtime.writeStdin(e.runtime, bytes.subarray(written), migrating)
      if (written < bytes.byteLength || migrating()) continue
      if (eof) {
        await this.init.runtime.closeStdin(e.runtime)
        await this.update(e, { ...e.record, stdinClosed: true }, false)
      }
      return { written }
    }
  }

  /** Forgets finished jobs older than the retention period, with their output. */
  async collectGarbage (now = Date.now()): Promise<number> {
    let removed = 0
    for (const [vpid, e] of this.jobs) {
      if (!TERMINAL_STATES.has(e.record.state) || now - (e.record.endedMs ?? now) < this.init.retainFinishedMs) continue
      await this.removeFiles(vpid, e)
      await this.init.store.del(jobKey(vpid))
      this.jobs.delete(vpid)
      removed++
    }
    return removed
  }
}
