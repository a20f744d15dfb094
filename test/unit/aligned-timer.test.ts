import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { alignedInterval, msToNextMultiple } from '../../src/node/aligned-timer.js'

describe('msToNextMultiple', () => {
  it('is the time to the next multiple, a full period on a multiple', () => {
    expect(msToNextMultiple(10_250, 1000)).toBe(750)
    expect(msToNextMultiple(10_000, 1000)).toBe(1000)
    expect(msToNextMultiple(10_999, 1000)).toBe(1)
    expect(msToNextMultiple(-250, 1000)).toBe(250)
  })
})

describe('alignedInterval', () => {
  beforeEach(() => { vi.useFakeTimers({ now: 1_000_250 }) })
  afterEach(() => { vi.useRealTimers() })

  it('fires on wall-clock multiples of the period, once each', () => {
    const at: number[] = []
    const t = alignedInterval(1000, () => { at.push(Date.now()) })
    vi.advanceTimersByTime(3_500)
    t.stop()
    expect(at).toEqual([1_001_000, 1_002_000, 1_003_000])
  })

  it('a timer that fires early does not run twice for one multiple', () => {
    // The injected clock runs 0.2 % slow: each timer fires a couple of ms before its multiple on it.
    const at: number[] = []
    const slow = (): number => 1_000_250 + (Date.now() - 1_000_250) * 0.998
    const t = alignedInterval(1000, () => { at.push(slow()) }, slow)
    vi.advanceTimersByTime(3_500)
    t.stop()
    expect(at).toHaveLength(3)
    expect(at[0]).toBeLessThan(1_001_000)
    for (let i = 1; i < at.length; i++) expect((at[i] ?? 0) - (at[i - 1] ?? 0)).toBeGreaterThan(990)
  })

  it('after a stall it skips to the next multiple instead of catching up', () => {
    const at: number[] = []
    let stalled = false
    const t = alignedInterval(1000, () => {
      at.push(Date.now())
      if (!stalled) { stalled = true; vi.setSystemTime(Date.now() + 2_500) }
    })
    vi.advanceTimersByTime(3_000)
    t.stop()
    // 1 002 000 and 1 003 000 passed during the stall: not run late, one after the other.
    expect(at).toEqual([1_001_000, 1_004_000, 1_005_000])
  })

  it('stop, also from inside the callback, ends it', () => {
    let n = 0
    const t = alignedInterval(100, () => { if (++n === 2) t.stop() })
    vi.advanceTimersByTime(1_000)
    expect(n).toBe(2)
    t.stop()
  })
})
