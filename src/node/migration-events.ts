/**
 * Progress of one migration as events for its caller (migrate.start's stream, relayed to the
 * control API): sent in order, one at a time, progress at most every `intervalMs`. Emitting never
 * blocks the migration; `flush` waits for what was queued.
 */
import type { MigrationEvent } from '../protocol/migrate.js'

export type EmitEvent = (event: MigrationEvent) => Promise<void> | void

export class MigrationEvents {
  private chain: Promise<void> = Promise.resolve()
  private lastProgress = -Infinity
  private pullStart = 0

  constructor (private readonly emit: EmitEvent | undefined, private readonly intervalMs = 200) {}

  send (event: MigrationEvent): void {
    const emit = this.emit
    if (emit === undefined) return
    this.chain = this.chain.then(async () => { await emit(event) }).catch(() => {}) // a caller gone away only loses progress
  }

  phase (phase: string): void {
    if (phase === 'pulling') this.pullStart = performance.now()
    this.send({ kind: 'phase', phase })
  }

  /** Transfer progress (images), already rate-limited by the sender. */
  transfer (p: { doneBytes: number, totalBytes: number, bytesPerSecond: number, etaMs: number | undefined }): void {
    this.send({ kind: 'progress', phase: 'transferring', doneBytes: p.doneBytes, totalBytes: p.totalBytes, bytesPerSecond: p.bytesPerSecond, etaMs: p.etaMs })
  }

  /** Post-copy page pull: `doneBytes` so far of an estimated `totalBytes`. */
  pull (doneBytes: number, totalBytes: number, force = false): void {
    const now = performance.now()
    if (!force && now - this.lastProgress < this.intervalMs) return
    this.lastProgress = now
    const seconds = (now - this.pullStart) / 1000
    const bytesPerSecond = seconds > 0 ? doneBytes / seconds : 0
    const total = Math.max(totalBytes, doneBytes)
    const etaMs = bytesPerSecond > 0 ? (total - doneBytes) / bytesPerSecond * 1000 : undefined
    this.send({ kind: 'progress', phase: 'pulling', doneBytes, totalBytes: total, bytesPerSecond, etaMs })
  }

  async flush (): Promise<void> { await this.chain }
}
