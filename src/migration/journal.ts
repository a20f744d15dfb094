/**
 * The source's journal of its outgoing migrations: one record per job, written before each phase's
 * work starts (stop-and-copy.ts awaits it), deleted once the outcome is settled. A daemon that
 * restarts finds here every migration it was in the middle of, and `recoveryPlan` says how to end
 * each so that the job runs on exactly one node.
 */
import type { MigrationPhase } from './stop-and-copy.js'
import type { PostCopyPhase } from './post-copy.js'

export interface JournalEntry<D = unknown> {
  readonly vpid: number
  readonly target: string
  readonly phase: MigrationPhase | PostCopyPhase
  /** Absent: stop-copy. Post-copy entries never hold images to restore from (memory stays on the source). */
  readonly mode?: 'post-copy'
  readonly startedMs: number
  readonly updatedMs: number
  /** From 'transferring' on: where the images are, and what the dump returned. */
  readonly imagesDir?: string
  readonly dumped?: D
}

/** Key-value storage as the node's state store offers it. */
export interface JournalStore {
  get<T>(key: string): Promise<T | undefined>
  put(key: string, value: unknown): Promise<void>
  del(key: string): Promise<void>
  list<T>(prefix: string): Promise<Array<{ key: string, value: T }>>
}

const PREFIX = 'migration/'
const key = (vpid: number): string => `${PREFIX}${String(vpid).padStart(15, '0')}`

export class MigrationJournal<D = unknown> {
  constructor (private readonly store: JournalStore) {}

  async put (entry: JournalEntry<D>): Promise<void> { await this.store.put(key(entry.vpid), entry) }
  async del (vpid: number): Promise<void> { await this.store.del(key(vpid)) }
  async list (): Promise<Array<JournalEntry<D>>> { return (await this.store.list<JournalEntry<D>>(PREFIX)).map(e => e.value) }
}

/**
 * What a restarted source does with a journalled migration, given whether the job's tree still runs
 * here:
 * - 'resume': the tree was never dumped (or CRIU resumed it): it runs here; the target drops its copy.
 * - 'settle': the images were sent (or were being sent): ask the target; if it runs the job, the
 *   migration succeeded ('moved' here), else restore here from the images.
 * - 'forget': the target confirmed before the restart: the job moved.
 * - 'lost': the tree is gone and no complete images are known here.
 */
export type RecoveryAction = 'resume' | 'settle' | 'forget' | 'lost'

export function recoveryPlan (entry: JournalEntry, treeAlive: boolean): RecoveryAction {
  if (entry.phase === 'moved') return 'forget'
  if (treeAlive) return 'resume'
  if (entry.imagesDir !== undefined && entry.dumped !== undefined) return 'settle'
  return 'lost'
}

/**
 * A target's answer to "do you have this job?" (peer method migrate.status). 'pulling': it runs
 * there from a post-copy migration whose pages are still arriving (ask again: it ends running or lost).
 */
export type TargetHolds = 'absent' | 'incoming' | 'restoring' | 'running' | 'pulling'
