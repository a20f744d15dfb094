/**
 * Checkpoint dirs received from other nodes, waiting for the call that says what to do with them
 * (keep as a job's last checkpoint, restore here, move into a user's dir). Keyed by sending node
 * and vpid: one checkpoint of a vpid is in flight at a time (the job is 'migrating' meanwhile).
 * The image transfer and the control call race, so either may come first; unclaimed dirs are
 * deleted after `ttlMs`.
 */
import { rm } from 'node:fs/promises'
import { CheckpointStateError } from '../../migration/checkpoint/errors.js'

type Outcome = { readonly dir: string } | { readonly error: Error }

interface Slot {
  outcome?: Outcome
  waiters: Array<(o: Outcome) => void>
  timer?: NodeJS.Timeout
}

export class Arrivals {
  private readonly slots = new Map<string, Slot>()
  private closed = false

  constructor (private readonly ttlMs = 10 * 60_000) {}

  /**
   * The daemon stops: unclaimed dirs are deleted now (not left for the next start), waiters fail,
   * and a dir that still arrives is deleted at once.
   */
  async close (): Promise<void> {
    this.closed = true
    const slots = [...this.slots.values()]
    this.slots.clear()
    for (const s of slots) {
      clearTimeout(s.timer)
      for (const w of s.waiters.splice(0)) w({ error: new CheckpointStateError('the daemon is stopping') })
      if (s.outcome !== undefined && 'dir' in s.outcome) await rm(s.outcome.dir, { recursive: true, force: true })
    }
  }

  private slot (from: string, vpid: number): Slot {
    const key = `${from}/${vpid}`
    let s = this.slots.get(key)
    if (s === undefined) {
      s = { waiters: [] }
      this.slots.set(key, s)
    }
    return s
  }

  /** Records a received (and verified) dir, or why receiving failed. */
  put (from: string, vpid: number, outcome: Outcome): void {
    if (this.closed) {
      if ('dir' in outcome) void rm(outcome.dir, { recursive: true, force: true })
      return
    }
    const key = `${from}/${vpid}`
    const s = this.slot(from, vpid)
    if (s.outcome !== undefined && 'dir' in s.outcome) void rm(s.outcome.dir, { recursive: true, force: true })
    clearTimeout(s.timer)
    const waiter = s.waiters.shift()
    if (waiter !== undefined) {
      if (s.waiters.length === 0) this.slots.delete(key)
      waiter(outcome)
      return
    }
    s.outcome = outcome
    s.timer = setTimeout(() => {
      if (this.slots.get(key) !== s) return
      this.slots.delete(key)
      if ('dir' in outcome) void rm(outcome.dir, { recursive: true, force: true })
    }, this.ttlMs)
    s.timer.unref()
  }

  /** The dir vpid's checkpoint from `from` arrived in; waits for it up to `timeoutMs`. */
  async take (from: string, vpid: number, timeoutMs: number, signal?: AbortSignal): Promise<string> {
    const key = `${from}/${vpid}`
    const s = this.slot(from, vpid)
    const outcome = s.outcome ?? await new Promise<Outcome>((resolve, reject) => {
      const done = (o: Outcome): void => { clearTimeout(timer); signal?.removeEventListener('abort', onAbort); resolve(o) }
      const drop = (err: Error): void => {
        s.waiters = s.waiters.filter(w => w !== done)
        if (s.waiters.length === 0 && s.outcome === undefined) this.slots.delete(key)
        reject(err)
      }
      const onAbort = (): void => { clearTimeout(timer); drop(signal?.reason as Error) }
      const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); drop(new CheckpointStateError(`no checkpoint of job ${vpid} arrived from ${from}`)) }, timeoutMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      s.waiters.push(done)
    })
    if (s.outcome !== undefined) {
      clearTimeout(s.timer)
      this.slots.delete(key)
    }
    if ('error' in outcome) throw outcome.error
    return outcome.dir
  }
}
