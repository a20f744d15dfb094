/**
 * The lifecycle of one migration as a state machine (runc's state_linux.go): allowed transitions
 * come from a table, an invalid move throws, and each move reports the ms spent in the phase left.
 * Shared by stop-and-copy (./stop-and-copy.ts) and post-copy (./post-copy.ts).
 */
export type Transitions<Ph extends string> = Readonly<Record<Ph, readonly Ph[]>>

export class PhaseMachine<Ph extends string, Detail> {
  detail: Detail
  private mark = Date.now()

  /**
   * `forward`: phases whose work must not start unless the listener took them (e.g. journalled
   * them) — a listener error there stops the step; for any other phase (an outcome) it is ignored.
   */
  constructor (
    public phase: Ph,
    private readonly next: Transitions<Ph>,
    initialDetail: Detail,
    private readonly onPhase?: (phase: Ph, detail: Detail) => void | Promise<void>,
    private readonly forward: ReadonlySet<Ph> = new Set()
  ) {
    this.detail = initialDetail
  }

  /** Moves on (after the listener has seen it); returns the ms spent in the phase left. */
  async to (next: Ph, detail?: Detail): Promise<number> {
    if (!this.next[this.phase].includes(next)) throw new Error(`migration cannot go from ${this.phase} to ${next}`)
    const now = Date.now()
    const spent = now - this.mark
    this.phase = next
    this.mark = now
    if (detail !== undefined) this.detail = detail
    try {
      await this.onPhase?.(next, this.detail)
    } catch (err) {
      if (this.forward.has(next)) throw err
    }
    return spent
  }
}
