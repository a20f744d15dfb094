/**
 * A single-consumer async queue: producers push, one consumer iterates with `for await`. It tells the
 * producer when it is full (`push` returns false) and calls `onDrained` once the consumer has caught
 * up, so a socket reader can pause and resume instead of buffering without bound.
 */
export interface AsyncQueueInit {
  /** `push` returns false at this many queued items. */
  readonly highWaterMark?: number
  /** Called when the queue, after reporting full, drains to half the high-water mark. */
  readonly onDrained?: () => void
}

export class AsyncQueue<T> implements AsyncIterable<T> {
  private items: T[] = []
  private head = 0
  private waiter: ((result: IteratorResult<T>) => void) | undefined
  private failWaiter: ((err: unknown) => void) | undefined
  private done = false
  private error: unknown = undefined
  private full = false
  private readonly highWaterMark: number

  constructor (private readonly init: AsyncQueueInit = {}) {
    this.highWaterMark = init.highWaterMark ?? 1024
  }

  get length (): number {
    return this.items.length - this.head
  }

  get ended (): boolean {
    return this.done
  }

  /** Queues an item (dropped once ended). Returns false when the producer should pause. */
  push (item: T): boolean {
    if (this.done) return true
    if (this.waiter !== undefined) {
      this.settle({ value: item, done: false })
      return true
    }
    this.items.push(item)
    if (this.length >= this.highWaterMark) this.full = true
    return !this.full
  }

  /** Ends the queue: the consumer gets the queued items, then the end (or `err`, thrown). */
  end (err?: unknown): void {
    if (this.done) return
    this.done = true
    this.error = err
    if (this.waiter === undefined) return
    if (err !== undefined) this.fail(err)
    else this.settle({ value: undefined, done: true })
  }

  next (): Promise<IteratorResult<T>> {
    if (this.length > 0) {
      const value = this.items[this.head] as T
      this.items[this.head++] = undefined as T
      if (this.length === 0) { this.items = []; this.head = 0 }
      this.checkDrained()
      return Promise.resolve({ value, done: false })
    }
    if (this.done) {
      return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true })
    }
    return new Promise((resolve, reject) => { this.waiter = resolve; this.failWaiter = reject })
  }

  [Symbol.asyncIterator] (): AsyncIterator<T> {
    return {
      next: async () => await this.next(),
      return: async () => {
        this.end()
        this.items = []
        this.head = 0
        this.checkDrained()
        return { value: undefined, done: true }
      }
    }
  }

  private checkDrained (): void {
    if (this.full && this.length <= this.highWaterMark / 2) {
      this.full = false
      this.init.onDrained?.()
    }
  }

  private settle (result: IteratorResult<T>): void {
    const waiter = this.waiter
    this.waiter = undefined
    this.failWaiter = undefined
    waiter?.(result)
  }

  private fail (err: unknown): void {
    const failWaiter = this.failWaiter
    this.waiter = undefined
    this.failWaiter = undefined
    failWaiter?.(err)
  }
}
