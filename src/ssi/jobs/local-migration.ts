/**
 * A migration's (or a checkpoint's) effect on LocalJobs' record of a job: marked `migrating`, then
 * moved away, running here again after a rollback, or lost; and a job a migration brought here.
 * Functions over LocalJobs' bookkeeping (`JobBook`), as local-recovery.ts does for restarts.
 */
import { JobStateError } from './errors.js'
import { TERMINAL_STATES, transition } from './record.js'
import type { JobRecord, MigrationNote } from './record.js'
import type { RuntimeJob } from './runtime.js'
import type { JobEntry, LocalJobsInit } from './local.js'
import type { RecoveryBook } from './local-recovery.js'

/** What these need of LocalJobs: its bookkeeping, and who may act on a job. */
export interface JobBook extends RecoveryBook {
  readonly init: Pick<LocalJobsInit, 'node' | 'runtime' | 'logger'>
  entry(vpid: number): JobEntry
  authorize(record: JobRecord, uid: number, action: string): void
  forgetCpu(vpid: number): void
}

/**
 * Marks a running job 'migrating' for `asUid` (its owner or root): from now on the end of its
 * tree is not its exit. @throws JobPermissionError, JobStateError (not running, already migrating)
 */
export async function beginMigration (book: JobBook, vpid: number, asUid: number, action: string): Promise<{ record: JobRecord, runtime: RuntimeJob }> {
  const e = book.entry(vpid)
  book.authorize(e.record, asUid, action)
  if (e.record.state !== 'running' || e.runtime === undefined) {
    throw new JobStateError(e.record.state === 'migrating' ? `job ${vpid} is already migrating` : `job ${vpid} is not running (${e.record.state})`)
  }
  // A migration carries the stdin FIFO (and what it holds) to the target; a checkpoint could not be fed again after a restore.
  if (e.record.stdin && action !== 'migrate') throw new JobStateError(`job ${vpid} reads stdin forwarded by \`ssi run -i\`, which a restored checkpoint could not be fed again: it cannot be checkpointed (give it input from a file instead)`)
  await book.update(e, transition(e.record, 'migrating'))
  return { record: e.record, runtime: e.runtime }
}

/** The migration finished: the job runs on `node` now. Frees what is left of it here. */
export async function markMoved (book: JobBook, vpid: number, node: string, detail?: string): Promise<JobRecord> {
  const e = book.entry(vpid)
  const migration: MigrationNote = { from: book.init.node, to: node, outcome: 'moved', atMs: Date.now(), detail }
  await book.update(e, transition(e.record, 'moved', { node, endedMs: Date.now(), migration }))
  if (e.runtime !== undefined) await book.init.runtime.release(e.runtime).catch(() => {})
  return e.record
}

/** The migration failed and the job runs here again (restored from its images, or never dumped). */
export async function resumeAfterMigration (book: JobBook, vpid: number, runtime: RuntimeJob | undefined, error: string, target?: string): Promise<void> {
  const e = book.entry(vpid)
  book.init.logger.warn({ vpid, err: error }, 'migration rolled back')
  if (runtime !== undefined) e.runtime = runtime
  e.treeAlive = undefined
  const migration: MigrationNote | undefined = target === undefined ? e.record.migration : { from: book.init.node, to: target, outcome: 'rolled-back', atMs: Date.now(), detail: error }
  await book.update(e, transition(e.record, 'running', { hostPid: e.runtime?.hostPid, migration }))
  // Also when the tree was never dumped: an exit while 'migrating' was ignored (a job that ended as
  // CRIU seized it stayed 'running' forever). A second watcher of a live tree is harmless.
  book.watch(e)
}

/** The migration failed and even the rollback did: the job is lost. */
export async function loseAfterMigration (book: JobBook, vpid: number, error: string, target?: string): Promise<void> {
  const e = book.entry(vpid)
  const migration: MigrationNote | undefined = target === undefined ? undefined : { from: book.init.node, to: target, outcome: 'lost', atMs: Date.now(), detail: error }
  await book.update(e, transition(e.record, 'lost', { endedMs: Date.now(), error, migration }))
  // Nothing of it runs here (or may: a frozen leftover is killed with its cgroup), nor will again.
  if (e.runtime !== undefined) await book.init.runtime.release(e.runtime).catch(err => { book.init.logger.warn({ vpid, err: (err as Error).message }, 'cgroup cleanup failed') })
}

/**
 * A job here that cannot go on (its post-copy page pull broke) is lost, with why; its migration
 * note stays. Also over an end it met meanwhile (a crash on memory that never arrived says less).
 */
export async function loseHere (book: JobBook, vpid: number, error: string): Promise<void> {
  const e = book.entry(vpid)
  if (e.record.state === 'lost' || e.record.state === 'moved') return
  const record = TERMINAL_STATES.has(e.record.state)
    ? { ...e.record, state: 'lost' as const, error }
    : transition(e.record, 'lost', { endedMs: Date.now(), error })
  await book.update(e, record)
}

/** Takes over a job restored here by a migration, with its vpid, owner and history. */
export async function adoptMigrated (book: JobBook, record: JobRecord, runtime: RuntimeJob): Promise<JobRecord> {
  const { endedMs: _e, exit: _x, error: _r, ...rest } = record
  const entry = book.track({ ...rest, node: book.init.node, state: 'running', hostPid: runtime.hostPid, jobDir: runtime.jobDir })
  entry.runtime = runtime
  book.forgetCpu(record.vpid)
  await book.update(entry, entry.record)
  book.watch(entry)
  return entry.record
}
