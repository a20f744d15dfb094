/**
 * Repeating timers that fire on multiples of their period on the wall clock (epoch ms), so every
 * daemon of a cluster sends its heartbeats at about the same instant. An idle daemon's CPU goes
 * mostly to waking up; with aligned senders the heartbeats of all peers arrive together and are
 * read in one or two wake-ups per period instead of one per peer, and a daemon's own timers
 * (heartbeat, re-dial) share one wake-up too. Clocks need not agree: misaligned nodes only lose the
 * batching, never a heartbeat.
 */

export interface AlignedTimer {
  stop(): void
}

/** ms from `nowMs` to the next multiple of `periodMs`, in (0, periodMs]. */
export function msToNextMultiple (nowMs: number, periodMs: number): number {
  return periodMs - (((nowMs % periodMs) + periodMs) % periodMs)
}

/**
 * Calls `fn` at every multiple of `periodMs` of `now()`. Each target is the previous one plus the
 * period, so a timer firing a little early does not run `fn` twice; after a stall longer than a
 * period (or a clock step) it resynchronises to the next multiple instead of catching up.
 */
export function alignedInterval (periodMs: number, fn: () => void, now: () => number = Date.now): AlignedTimer {
  let target = now() + msToNextMultiple(now(), periodMs)
  let timer: NodeJS.Timeout | undefined
  const arm = (): void => {
    const t = now()
    if (target - t <= 0 || target - t > 2 * periodMs) target = t + msToNextMultiple(t, periodMs)
    timer = setTimeout(tick, target - t)
  }
  const tick = (): void => {
    target += periodMs
    try { fn() } finally { if (timer !== undefined) arm() }
  }
  arm()
  return {
    stop () {
      clearTimeout(timer)
      timer = undefined
    }
  }
}
