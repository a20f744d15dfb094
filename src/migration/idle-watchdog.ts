/**
 * A bound on silence rather than on total time: a transfer of any size may take as long as it
 * keeps moving, but one that makes no progress for `idleMs` is given up (e.g. a target whose daemon
 * still answers heartbeats but no longer takes data). `signal` aborts then, with `reason()`.
 */
export class IdleWatchdog {
  private readonly ctl = new AbortController()
  private timer: NodeJS.Timeout | undefined
  readonly signal: AbortSignal = this.ctl.signal

  constructor (private readonly idleMs: number, private readonly reason: (idleMs: number) => Error) {
    this.touch()
  }

  /** Progress: the silence starts again from now. */
  touch (): void {
    if (this.ctl.signal.aborted) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => { this.ctl.abort(this.reason(this.idleMs)) }, this.idleMs)
    this.timer.unref()
  }

  /** The transfer ended: never abort. */
  stop (): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }
}
