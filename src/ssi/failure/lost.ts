/**
 * Lost-job records kept by a job's home node: when the majority declares the job's node dead, the
 * home node writes `lost/<vpid>` (the last record it was told, now `lost`) and points `loc/<vpid>` at
 * state `lost`. `ssi ps`, `inspect` and `wait` read them; a rejoining node that still has the job
 * takes the record back.
 */
import { TERMINAL_STATES } from '../jobs/record.js'
import type { JobStore } from '../jobs/local.js'
import type { JobRecord, JobState } from '../jobs/record.js'

export const lostKey = (vpid: number): string => `lost/${String(vpid).padStart(15, '0')}`
/** `recovered/<vpid>` on the home node: the job was restored from a checkpoint after its node died. */
export const recoveredKey = (vpid: number): string => `recovered/${String(vpid).padStart(15, '0')}`

/** A lost job restored from its last periodic checkpoint: it was rolled back to `takenMs`. */
export interface Recovery {
  /** The node that died with the job. */
  readonly fromNode: string
  /** Where it runs again. */
  readonly node: string
  /** Epoch ms the checkpoint was taken: the job's state is that of this moment. */
  readonly takenMs: number
  /** Epoch ms of the restore. */
  readonly atMs: number
}

/** The home node's location record of a job (`loc/<vpid>`); `record` is the last full record it was told. */
export interface LocationRecord {
  readonly vpid: number
  readonly node: string
  readonly state: string
  readonly record?: JobRecord
}

/** Whether a location says the job may still be running on its node. */
export function mayBeRunning (loc: LocationRecord): boolean {
  return !TERMINAL_STATES.has(loc.state as JobState)
}

/** The lost record of a job whose node died: its last known record, or what the location says. */
export function lostRecord (loc: LocationRecord, home: string, reason: string, now: number): JobRecord {
  const base: JobRecord = loc.record ?? {
    vpid: loc.vpid,
    owner: { uid: 0, gid: 0, groups: [], user: '?' },
    argv: ['?'],
    cwd: '/',
    hostname: `vp${loc.vpid}`,
    limits: {},
    node: loc.node,
    homeNode: home,
    state: 'running',
    createdMs: now,
    stdin: false
  }
  return { ...base, node: loc.node, state: 'lost', endedMs: now, error: reason }
}

/** Every lost record this node keeps, as `ps` rows. */
export async function listLost (store: JobStore): Promise<Array<JobRecord & { cpuPercent: number, rssBytes: number }>> {
  return (await store.list<JobRecord>('lost/')).map(e => ({ ...e.value, cpuPercent: 0, rssBytes: 0 }))
}
