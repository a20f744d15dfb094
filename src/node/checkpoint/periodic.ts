/**
 * Periodic checkpoints (`ssi run --checkpoint-every 60s`), driven by the job's home node: every
 * period it has the job's node dump the job (leaving it running) and send the checkpoint to another
 * live node, which keeps it as the job's last good one (replacing the previous). The home node
 * records each in its store under `ckpt/<vpid>` (PeriodicRecord): which node holds it and when it
 * was taken. A period in which the job is not running (migrating, checkpointed) is skipped; the
 * schedule ends when the job has ended, and resumes when it is restored. Timers re-arm after each round, so rounds never overlap.
 */
import { TERMINAL_STATES } from '../../ssi/jobs/record.js'
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
}

export const periodicKey = (vpid: number): string => `ckpt/${String(vpid).padStart(15, '0')}`

export interface PeriodicInit {
  readonly selfName: string
  readonly store: JobStore
  readonly rpc: PeerRpc
  readonly view: ClusterView
  readonly jobs: ClusterJobs
  readonly logger: Logger
}

/** A round's dump + transfer deadline: at least this, or one period if longer. */
const MIN_ROUND_TIMEOUT_MS = 30_000

export class PeriodicCheckpoints {
  private readonly timers = new Map<number, NodeJS.Timeout>()
  private stopped = false

  constructor (private readonly init: PeriodicInit) {}

  /** Resumes the schedules recorded here (after a daemon restart). */
  async start (): Promise<void> {
    for (const { value } of await this.init.store.list<PeriodicRecord>('ckpt/')) {
      if (value.ended !== true) this.arm(value.vpid, value.everyMs)
    }
  }

  stop (): void {
    this.stopped = true
    for (const t of this.timers.values()) clearTimeout(t)
    this.timers.clear()
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
    if (rec.ended === true) await this.init.store.put(periodicKey(vpid), { ...rec, ended: false })
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
    const info = await this.init.jobs.inspect(vpid).catch(() => undefined)
    if (info === undefined) return true // its node does not answer now: try again next period
    if (TERMINAL_STATES.has(info.state)) {
      await this.init.store.put(periodicKey(vpid), { ...rec, ended: true })
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
