/**
 * A job's record and lifecycle. The executing node owns the full record (`job/<vpid>` in its store);
 * the home node keeps where the job is (`loc/<vpid>`: its node, and its state as of its start, last
 * move or end: a started job stays 'starting' there until it ends or moves). Lifecycle moves go
 * through `transition`, so an impossible move (a finished job "starting" again) is an error rather
 * than a silent overwrite.
 */
export type JobState =
  | 'starting' // being spawned on its node
  | 'running'
  | 'migrating' // frozen on its node while it moves (migration issue)
  | 'exited' // ended by itself (any exit code)
  | 'killed' // ended by a signal
  | 'oom' // killed by the kernel for exceeding its memory limit
  | 'failed' // could not be started
  | 'lost' // its node died and it could not be recovered
  | 'moved' // migrated away: `node` says where it runs now (final on this node only)
  | 'checkpointed' // dumped to disk and stopped (`ssi checkpoint`): `ssi restore` brings it back

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(['exited', 'killed', 'oom', 'failed', 'lost', 'moved'])

const ALLOWED: Readonly<Record<JobState, readonly JobState[]>> = {
  starting: ['running', 'failed', 'exited', 'killed', 'oom'],
  // running -> moved: a stale copy superseded by the job restored elsewhere (LocalJobs.supersede).
  running: ['exited', 'killed', 'oom', 'migrating', 'lost', 'moved'],
  migrating: ['running', 'exited', 'killed', 'oom', 'lost', 'moved', 'checkpointed'],
  exited: [],
  killed: [],
  oom: [],
  failed: [],
  lost: ['running'],
  moved: [],
  checkpointed: ['running', 'moved', 'lost']
}

export class InvalidTransitionError extends Error {
  static override name = 'InvalidTransitionError'
  override name = 'InvalidTransitionError'
}

export interface ExitInfo {
  /** Exit code when the job exited by itself. */
  readonly code?: number
  /** Signal number when a signal ended it. */
  readonly signal?: number
  readonly oomKilled: boolean
}

export interface JobLimits {
  readonly memoryBytes?: number
  readonly cpus?: number
  readonly pids?: number
}

export interface JobOwner {
  readonly uid: number
  readonly gid: number
  readonly groups: readonly number[]
  readonly user: string
}

export interface JobRecord {
  readonly vpid: number
  readonly owner: JobOwner
  readonly argv: readonly string[]
  readonly cwd: string
  readonly hostname: string
  readonly limits: JobLimits
  /** Node it runs on now. */
  readonly node: string
  /** Node that launched it and allocated its vpid. */
  readonly homeNode: string
  readonly state: JobState
  readonly createdMs: number
  readonly startedMs?: number
  readonly endedMs?: number
  readonly exit?: ExitInfo
  /** Why it failed or was lost. */
  readonly error?: string
  /** Host pid of the job's init (tini) on its node: what CRIU dumps. */
  readonly hostPid?: number
  readonly jobDir?: string
  readonly stdin: boolean
  /** Its stdin was closed (end of file forwarded): a restored copy must close it again. */
  readonly stdinClosed?: boolean
  /** How its last migration ended (on the node that ran it last). */
  readonly migration?: MigrationNote
  /** The migration that brought it to this node: its source, and when that source started it (the migration's name). */
  readonly arrival?: { readonly from: string, readonly migrationStartedMs: number }
  /** Where its last stopping checkpoint went (`ssi checkpoint` without --leave-running). */
  readonly checkpointedTo?: CheckpointNote
}

/** A checkpoint that stopped the job: the node holding it, its dir there if known, when. */
export interface CheckpointNote {
  readonly node: string
  readonly dir?: string
  readonly atMs: number
}

/** The outcome of a job's last migration, for `ssi inspect`. */
export interface MigrationNote {
  readonly from: string
  readonly to: string
  /** 'moved': it runs on `to`; 'rolled-back': it runs on `from` again; 'lost': neither. */
  readonly outcome: 'moved' | 'rolled-back' | 'lost'
  readonly atMs: number
  /** Why it did not move, or what a restarted daemon found and did. */
  readonly detail?: string
}

export function transition (job: JobRecord, to: JobState, patch: Partial<JobRecord> = {}): JobRecord {
  if (!ALLOWED[job.state].includes(to)) {
    throw new InvalidTransitionError(`job ${job.vpid} cannot go from ${job.state} to ${to}`)
  }
  return { ...job, ...patch, state: to }
}

/** The terminal state an exit status means. */
export function stateForExit (exit: ExitInfo): JobState {
  if (exit.oomKilled) return 'oom'
  return exit.signal !== undefined ? 'killed' : 'exited'
}

/** Shell-style status: the exit code, or 128 + signal number. */
export function exitStatusCode (exit: ExitInfo): number {
  return exit.signal !== undefined ? 128 + exit.signal : exit.code ?? 0
}

/** Store keys: zero-padded so LevelDB's key order is vpid order. */
export const jobKey = (vpid: number): string => `job/${String(vpid).padStart(15, '0')}`
export const locKey = (vpid: number): string => `loc/${String(vpid).padStart(15, '0')}`
