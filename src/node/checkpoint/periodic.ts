/**
 * Periodic checkpoints (`ssi run --checkpoint-every 60s`), driven by the job's home node: every
 * period it has the job's node dump the job (leaving it running) and send the checkpoint to another
 * live node, which keeps it as the job's last good one (replacing the previous). The home node
 * records each in its store under `ckpt/<vpid>` (PeriodicRecord): which node holds it and when it
 * was taken. A period in which the job is not running (migrating, checkpointed) is skipped; the
 * schedule ends when the job has ended, and resumes when it is restored. Timers re-arm after each round, so rounds never overlap.
 * Once the job has ended and its record was reaped (config jobs.retainFinishedMs, then
 * jobs.heldCheckpointAfterReapMs), its held checkpoint is dropped and the record goes (`expire`).
 */
import { TERMINAL_STATES } from '../../ssi/jobs/record.js'
import { isVpidNotFound } from '../../ssi/jobs/errors.js'
import type { ClusterJobs } from '../../ssi/jobs/cluster.js'
import type { JobStore } from '../../ssi/jobs/local.js'
import type { ClusterView, PeerRpc } from '../../ssi/ports.js'
import type { CkptDumpResult } from '../../protocol/checkpoint.js'
import type { Logger } from '../logger.js'

/** The home node's record of a job's periodic checkpoints (`ckpt/<vpid>`). */
export interface PeriodicRecord {
  readonly vpid: number
  /** Period, ms. */
  readonly everyMs: number
  /** The last good checkpoint: the node holding it, when it was taken (epoch ms), dump time, size. */
  readonly last?: { readonly node: string, readonly takenMs: number, readonly dumpMs: number, readonly bytes: number }
  /** Why the latest round failed (cleared by a good one). */
  readonly lastError?: string
  /** The job ended: no more rounds. */
  readonly ended?: boolean
  /** When a round found it ended (epoch ms): its held checkpoint expires from then (PeriodicInit.dropHeldAfterEndMs). */
  readonly endedMs?: number
}

export const periodicKey = (vpid: number): string => `ckpt/${String(vpid).padStart(15, '0')}`

export interface PeriodicInit {
  readonly selfName: string
  readonly store: JobStore
  readonly rpc: PeerRpc
  readonly view: ClusterView
  readonly jobs: ClusterJobs
  readonly logger: Logger
  /**
   * How long after the job ended its held checkpoint and this record are kept, ms: the job's record
   * is reaped after jobs.retainFinishedMs, its checkpoint goes heldCheckpointAfterReapMs later
   * (config). Undefined: kept for ever.
   */
  readonly dropHeldAfterEndMs?: number
  /** How often expired held checkpoints are looked for, ms (default 60 000). */
  readonly sweepMs?: number
}

/** A round's dump + transfer deadline: at least this, or one period if longer. */
const MIN_ROUND_TIMEOUT_MS = 30_000

export class PeriodicCheckpoints {
  private readonly timers = new Map<number, NodeJS.Timeout>()
  private sweeper: NodeJS.Timeout | undefined
  private stopped = false

  constructor (private readonly init: PeriodicInit) {}

  /** Resumes the schedules recorded here (after a daemon restart). */
  async start (): Promise<void> {
    for (const { value } of await this.init.store.list<PeriodicRecord>('ckpt/')) {
      if (value.ended !== true) this.arm(value.vpid, value.everyMs)
    }
    if (this.init.dropHeldAfterEndMs === undefined || this.stopped) return
    this.sweeper = setInterval(() => { void this.expire().catch(() => {}) }, this.init.sweepMs ?? 60_000)
    this.sweeper.unref()
  }

  stop (): void {
    this.stopped = true
    clearInterval(this.sweeper)
    for (const t of this.timers.values()) clearTimeout(t)
    this.timers.clear()
  }

  /**
   * Drops the held checkpoints of jobs that ended more than dropHeldAfterEndMs ago (on every live
   * node: a holder replaced while a drop failed may keep an older one), then their records. A
   * record whose holder is not alive now stays for the next sweep. Returns the vpids dropped.
   */
  async expire (now = Date.now()): Promise<number[]> {
    const after = this.init.dropHeldAfterEndMs
    if (after === undefined) return []
    const dropped: number[] = []
    for (const { value: rec } of await this.init.store.list<PeriodicRecord>('ckpt/')) {
      if (rec.ended !== true || rec.endedMs === undefined || now - rec.endedMs < after || this.stopped) continue
      const alive = this.init.view.nodes().filter(n => n.state === 'alive').map(n => n.name)
      const holder = rec.last?.node
      if (holder !== undefined && !alive.includes(holder)) continue
      const results = await Promise.allSettled(alive.map(async n => await this.init.rpc.call(n, 'ckpt.drop', { vpid: rec.vpid }, { timeoutMs: 10_000 })))
      if (holder !== undefined && results[alive.indexOf(holder)]?.status !== 'fulfilled') continue
      // Restored meanwhile (resume) re-armed it: keep it then.
      if ((await this.record(rec.vpid))?.ended !== true) continue
      await this.init.store.del(periodicKey(rec.vpid))
      this.init.logger.info({ vpid: rec.vpid, holder, endedMs: rec.endedMs }, 'held checkpoint of an ended job expired')
      dropped.push(rec.vpid)
    }
    return dropped
  }

  /** Starts checkpointing vpid (a job of this home node) every `everyMs`. */
  async schedule (vpid: number, everyMs: number): Promise<void> {
    await this.init.store.put(periodicKey(vpid), { vpid, everyMs } satisfies PeriodicRecord)
    this.arm(vpid, everyMs)
  }

  /** A job with a schedule was restored: its rounds go on (they stopped if it had ended). */
  async resume (vpid: number): Promise<void> {
    const rec = await this.record(vpid)
    if (rec === undefined) return
    if (rec.ended === true) {
      const { endedMs: _ended, ...running } = rec
      await this.init.store.put(periodicKey(vpid), { ...running, ended: false })
    }
    this.arm(vpid, rec.everyMs)
  }

  async record (vpid: number): Promise<PeriodicRecord | undefined> {
    return await this.init.store.get<PeriodicRecord>(periodicKey(vpid))
  }

  private arm (vpid: number, everyMs: number): void {
    if (this.stopped) return
    clearTimeout(this.timers.get(vpid))
    const t = setTimeout(() => {
      void this.round(vpid).then(again => { if (again) this.arm(vpid, everyMs) }, () => { this.arm(vpid, everyMs) })
    }, everyMs)
    t.unref()
    this.timers.set(vpid, t)
  }

  /** One round; false when the schedule is over. */
  private async round (vpid: number): Promise<boolean> {
    const rec = await this.record(vpid)
    if (rec === undefined || rec.ended === true || this.stopped) return false
    let gone = false
    const info = await this.init.jobs.inspect(vpid).catch((err: unknown) => { gone = isVpidNotFound(err); return undefined })
    if (gone) {
      // Ended and already reaped (e.g. this node was down meanwhile): it expires from now.
      await this.init.store.put(periodicKey(vpid), { ...rec, ended: true, endedMs: Date.now() })
      return false
    }
    if (info === undefined) return true // its node does not answer now: try again next period
    if (TERMINAL_STATES.has(info.state)) {
      await this.init.store.put(periodicKey(vpid), { ...rec, ended: true, endedMs: info.endedMs ?? Date.now() })
      return false
    }
    if (info.state !== 'running') return true
    const holder = this.pickHolder(info.node, rec.last?.node)
    if (holder === undefined) {
      await this.init.store.put(periodicKey(vpid), { ...rec, lastError: `no live node other than ${info.node} to hold a checkpoint` })
      return true
    }
    try {
      const timeoutMs = Math.max(MIN_ROUND_TIMEOUT_MS, rec.everyMs)
      const r = await this.init.rpc.call(info.node, 'ckpt.dump', { vpid, asUid: 0, leaveRunning: true, to: holder, timeoutMs }, { timeoutMs: timeoutMs + 10_000 }) as CkptDumpResult
      await this.init.rpc.call(holder, 'ckpt.keep', { vpid, from: info.node }, { timeoutMs: 2 * 60_000 })
      const { lastError: _e, ...kept } = rec
      await this.init.store.put(periodicKey(vpid), { ...kept, last: { node: holder, takenMs: r.takenMs, dumpMs: r.dumpMs, bytes: r.bytes } } satisfies PeriodicRecord)
      this.init.logger.info({ vpid, holder, dumpMs: r.dumpMs, bytes: r.bytes }, 'periodic checkpoint kept')
      const previous = rec.last?.node
      if (previous !== undefined && previous !== holder) {
        await this.init.rpc.call(previous, 'ckpt.drop', { vpid }, { timeoutMs: 10_000 }).catch(() => {})
      }
    } catch (err) {
      this.init.logger.warn({ vpid, holder, err: (err as Error).message }, 'periodic checkpoint failed')
      await this.init.store.put(periodicKey(vpid), { ...rec, lastError: (err as Error).message })
    }
    return true
  }

  /** The previous holder if it is still a good one, else the live node (not the job's) with fewest jobs. */
  private pickHolder (jobNode: string, previous: string | undefined): string | undefined {
    const alive = this.init.view.nodes().filter(n => n.state === 'alive' && n.name !== jobNode)
    if (previous !== undefined && alive.some(n => n.name === previous)) return previous
    return alive.sort((a, b) => a.jobs - b.jobs || a.name.localeCompare(b.name))[0]?.name
  }
}
