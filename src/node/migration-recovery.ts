/**
 * A restarted source settles the migrations its predecessor left in its journal, so that each job
 * ends up running on exactly one node (see recoveryPlan in src/migration/journal.ts):
 * - tree still here: it never stopped (or CRIU resumed it); the target drops what it holds;
 * - images sent or being sent: the target is asked what it holds. Running: the job moved. Absent or
 *   merely received: the target drops it and the job is restored here from its images. Still
 *   restoring: ask again. Unreachable: ask again until `settleTimeoutMs`, then restore here;
 * - target confirmed before the restart: the job moved.
 * Before the job runs here again (resume or restore), its home node is asked whether it restored the
 * job from a periodic checkpoint elsewhere meanwhile (this node was dead to the majority): then the
 * job runs there, and the tree or images here are stale.
 * The outcome lands in the job's record (`ssi inspect` shows it under "migration").
 */
import { rm } from 'node:fs/promises'
import { recoveryPlan } from '../migration/journal.js'
import type { JournalEntry, MigrationJournal, TargetHolds } from '../migration/journal.js'
import type { LocalJobs } from '../ssi/jobs/local.js'
import type { DumpedFile, JobRuntime, RuntimeJob } from '../ssi/jobs/runtime.js'
import type { PeerRpc } from '../ssi/ports.js'
import type { Logger } from './logger.js'
import type { Recovery } from '../ssi/failure/lost.js'
import { isVpidNotFound } from '../ssi/jobs/errors.js'
import { settlePostCopy } from './migration-post-copy-recovery.js'

export interface RecoveryInit {
  readonly entries: Array<JournalEntry<DumpedFile[]>>
  readonly journal: MigrationJournal<DumpedFile[]>
  readonly local: LocalJobs
  readonly runtime: JobRuntime
  readonly rpc: PeerRpc
  readonly logger: Logger
  readonly settleTimeoutMs: number
  readonly signal: AbortSignal
  readonly cancelTarget: (target: string, vpid: number) => Promise<void>
  readonly restoreHere: (vpid: number, dir: string, stdio: DumpedFile[], old: RuntimeJob | undefined) => Promise<RuntimeJob>
}

export async function recoverMigrations (init: RecoveryInit): Promise<void> {
  await Promise.all(init.entries.map(async entry => {
    const log = init.logger.child({ vpid: entry.vpid, target: entry.target, phase: entry.phase })
    try {
      await settle(init, entry)
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'could not settle an interrupted migration')
    }
  }))
}

const RETRY_MS = 500

async function settle (init: RecoveryInit, entry: JournalEntry<DumpedFile[]>): Promise<void> {
  const { local, journal } = init
  const { vpid, target, phase } = entry
  const job = local.recovered(vpid)
  if (job === undefined) { await journal.del(vpid); return }
  const why = `the daemon on ${local.get(vpid).node} restarted during the migration to ${target} (phase ${phase})`
  if (entry.mode === 'post-copy') {
    await settlePostCopy(init, entry, job, why)
    await rm(entry.imagesDir ?? '/nonexistent', { recursive: true, force: true })
    await journal.del(vpid)
    return
  }
  const plan = recoveryPlan(entry, job.treeAlive)
  init.logger.info({ vpid, target, phase, plan }, 'settling an interrupted migration')
  const elsewhere = plan === 'resume' || plan === 'settle' ? await restoredElsewhere(init, entry) : undefined
  if (elsewhere !== undefined) {
    await init.cancelTarget(target, vpid).catch(() => {})
    await local.markMoved(vpid, elsewhere, `${why}; meanwhile its home node restored it from a checkpoint on ${elsewhere}, where it runs now: the copy here was stale`)
  } else if (plan === 'forget') {
    await moved(init, entry, `${why}; ${target} had confirmed it runs there`)
  } else if (plan === 'resume') {
    await init.cancelTarget(target, vpid).catch(() => {})
    await local.resumeAfterMigration(vpid, job.runtime, `${why}; the job had not been stopped: it runs here again`, target)
  } else if (plan === 'lost') {
    await init.cancelTarget(target, vpid).catch(() => {})
    await local.loseAfterMigration(vpid, `${why}; its tree is gone and its images are incomplete`, target)
  } else {
    await settleWithTarget(init, entry, job.runtime, why)
  }
  await rm(entry.imagesDir ?? '/nonexistent', { recursive: true, force: true })
  await journal.del(vpid)
}

async function settleWithTarget (init: RecoveryInit, entry: JournalEntry<DumpedFile[]>, old: RuntimeJob | undefined, why: string): Promise<void> {
  const { vpid, target } = entry
  const holds = await askTarget(init, target, vpid, entry.startedMs)
  if (holds === 'running') {
    await moved(init, entry, `${why}; ${target} had restored it`)
    return
  }
  await init.cancelTarget(target, vpid).catch(() => {})
  const restored = await init.restoreHere(vpid, entry.imagesDir ?? '', entry.dumped ?? [], old)
  const said = holds === undefined ? `${target} did not answer for ${init.settleTimeoutMs} ms` : `${target} did not run it (${holds})`
  await init.local.resumeAfterMigration(vpid, restored, `${why}; ${said}: restored here from its images`, target)
}

async function moved (init: RecoveryInit, entry: JournalEntry<DumpedFile[]>, detail: string): Promise<void> {
  await init.local.markMoved(entry.vpid, entry.target, detail)
}

/**
 * The node the job runs on now if its home node restored it there from a checkpoint after this
 * migration began; undefined if it did not, or did not answer within `settleTimeoutMs`.
 */
async function restoredElsewhere (init: RecoveryInit, entry: JournalEntry<DumpedFile[]>): Promise<string | undefined> {
  const { homeNode, node: self } = init.local.get(entry.vpid)
  const deadline = Date.now() + init.settleTimeoutMs
  for (;;) {
    init.signal.throwIfAborted()
    try {
      const loc = await init.rpc.call(homeNode, 'loc.get', { vpid: entry.vpid }, { signal: init.signal, timeoutMs: 5000 }) as { node?: string, recovered?: Recovery }
      const r = loc.recovered
      return r !== undefined && r.node !== self && r.node === loc.node && r.atMs >= entry.startedMs ? r.node : undefined
    } catch (err) {
      // A vpid the home node no longer knows was not restored by it; an unreachable home may be joining yet.
      if (isVpidNotFound(err) || Date.now() > deadline) return undefined
      init.logger.debug({ vpid: entry.vpid, home: homeNode, err: (err as Error).message }, 'home node not answering yet')
    }
    await new Promise(resolve => setTimeout(resolve, RETRY_MS))
  }
}

/** What the target holds, once it is neither unreachable nor still restoring; undefined after the deadline. */
export async function askTarget (init: RecoveryInit, target: string, vpid: number, migrationStartedMs?: number): Promise<Exclude<TargetHolds, 'restoring' | 'pulling'> | undefined> {
  let deadline = Date.now() + init.settleTimeoutMs
  for (;;) {
    init.signal.throwIfAborted()
    try {
      const answer = await init.rpc.call(target, 'migrate.status', { vpid, ...(migrationStartedMs === undefined ? {} : { migrationStartedMs }) }, { signal: init.signal, timeoutMs: 5000 }) as { holds?: TargetHolds }
      if (answer.holds === 'running' || answer.holds === 'absent' || answer.holds === 'incoming') return answer.holds
      // Still restoring (or pulling pages): that ends one way or the other, and then it answers for sure.
      deadline = Date.now() + init.settleTimeoutMs
    } catch (err) {
      init.logger.debug({ vpid, target, err: (err as Error).message }, 'target not answering yet')
    }
    if (Date.now() > deadline) return undefined
    await new Promise(resolve => setTimeout(resolve, RETRY_MS))
  }
}
