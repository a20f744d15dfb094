/**
 * Re-adoption after a daemon restart (LocalJobs.recover): loads the job records, re-adopts the
 * trees still running under their shims, records what ended meanwhile, and settles migrations the
 * daemon stopped in the middle of (unless the migration journal has them).
 */
import { TERMINAL_STATES, transition } from './record.js'
import type { ExitInfo, JobRecord } from './record.js'
import type { JobEntry, LocalJobsInit } from './local.js'

/** What recovery needs of LocalJobs' bookkeeping. */
export interface RecoveryBook {
  track(record: JobRecord): JobEntry
  update(entry: JobEntry, record: JobRecord, notify?: boolean): Promise<void>
  finish(entry: JobEntry, exit: ExitInfo): Promise<void>
  watch(entry: JobEntry): void
}

/**
 * Loads records and re-adopts jobs left running by an earlier daemon. Jobs 'migrating' for which
 * `journalled` is true are left so, for the migration service to settle (see LocalJobs.recovered).
 */
export async function recoverJobs (init: Pick<LocalJobsInit, 'store' | 'runtime' | 'logger'>, book: RecoveryBook, journalled: (vpid: number) => boolean): Promise<void> {
  for (const { value } of await init.store.list<JobRecord>('job/')) {
    const entry = book.track(value)
    if (TERMINAL_STATES.has(value.state)) { entry.resolveEnded(value); continue }
    if (value.state === 'checkpointed') continue // nothing runs: it waits for `ssi restore`
    const found = await init.runtime.adopt(value.vpid)
    if (value.state === 'migrating' && journalled(value.vpid)) {
      entry.runtime = found?.job
      entry.treeAlive = found !== undefined && found.exit === undefined
      continue
    }
    if (found === undefined) {
      await book.update(entry, transition(value, value.state === 'starting' ? 'failed' : 'lost', { endedMs: Date.now(), error: 'nothing of the job was left when the daemon restarted' }))
      continue
    }
    entry.runtime = found.job
    if (value.state === 'migrating') {
      await recoverMigrating(book, entry, found.exit !== undefined)
      if (found.exit !== undefined) continue
    }
    if (value.state === 'starting') await book.update(entry, transition(value, 'running', { hostPid: found.job.hostPid, startedMs: Date.now() }))
    if (found.exit !== undefined) await book.finish(entry, found.exit)
    else book.watch(entry)
    init.logger.info({ vpid: value.vpid, state: entry.record.state }, 're-adopted job')
  }
}

/**
 * The daemon stopped during a migration away. A tree still running was never dumped (or CRIU
 * resumed it): it runs here again. A tree that is gone was dumped; whether a target restored it
 * is not known here, so it is reported lost here (the target, if it has it, reports it running).
 */
async function recoverMigrating (book: RecoveryBook, entry: JobEntry, gone: boolean): Promise<void> {
  const error = 'the daemon stopped while the job was migrating away'
  // Not told to the home node: it may already point at the target that restored the job.
  if (gone) await book.update(entry, transition(entry.record, 'lost', { endedMs: Date.now(), error: `${error}; its tree is gone here` }), false)
  else await book.update(entry, transition(entry.record, 'running'))
}
