/** IdleWatchdog (src/migration/idle-watchdog.ts): aborts after a silence, not after a total time. */
import { describe, expect, it } from 'vitest'
import { IdleWatchdog } from '../../src/migration/idle-watchdog.js'

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

describe('IdleWatchdog', () => {
  it('does not abort while touched more often than idleMs, however long that goes on', async () => {
    const w = new IdleWatchdog(150, ms => new Error(`silent for ${ms} ms`))
    for (let i = 0; i < 8; i++) { await sleep(50); w.touch() }
    expect(w.signal.aborted).toBe(false)
    w.stop()
  })

  it('aborts with its reason after idleMs without a touch', async () => {
    const w = new IdleWatchdog(100, ms => new Error(`silent for ${ms} ms`))
    await sleep(60)
    w.touch()
    await sleep(60)
    expect(w.signal.aborted).toBe(false)
    await sleep(80)
    expect(w.signal.aborted).toBe(true)
    expect((w.signal.reason as Error).message).toBe('silent for 100 ms')
  })

  it('never aborts once stopped', async () => {
    const w = new IdleWatchdog(50, () => new Error('x'))
    w.stop()
    await sleep(100)
    expect(w.signal.aborted).toBe(false)
  })
})
