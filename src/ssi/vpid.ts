/**
 * Cluster-wide process ids without a central server: vpid = homeNodeId × 1,000,000 + n. The home
 * node (the one that launched the job) allocates n from a persisted counter, so any node can tell a
 * vpid's home from the number alone (2000017 → node 2) and ask it where the job runs now.
 */
export const VPIDS_PER_NODE = 1_000_000
/** Counter values are reserved in blocks, persisted before use, so a crash never hands one out twice. */
const RESERVE_BLOCK = 128

export class InvalidVpidError extends Error {
  static override name = 'InvalidVpidError'
  override name = 'InvalidVpidError'
}

export class VpidExhaustedError extends Error {
  static override name = 'VpidExhaustedError'
  override name = 'VpidExhaustedError'
}

export function homeNodeId (vpid: number): number {
  return Math.floor(vpid / VPIDS_PER_NODE)
}

/** Parses a vpid typed by a user, with a clear error. */
export function parseVpid (text: string | number): number {
  const n = typeof text === 'number' ? text : /^\d{1,15}$/.test(text.trim()) ? Number(text) : NaN
  if (!Number.isSafeInteger(n) || n % VPIDS_PER_NODE === 0 || homeNodeId(n) < 1 || homeNodeId(n) > 65_535) {
    throw new InvalidVpidError(`"${text}" is not a vpid (vpids look like 1000001: node id × 1000000 + a sequence number)`)
  }
  return n
}

export interface CounterStore {
  get<T>(key: string): Promise<T | undefined>
  put(key: string, value: unknown): Promise<void>
}

export class VpidAllocator {
  private next = 0
  private reservedUpTo = 0
  private queue: Promise<unknown> = Promise.resolve()

  /** `inUse` tells whether a vpid is still known (never reuse those after the counter wraps). */
  constructor (private readonly store: CounterStore, private readonly nodeId: number, private readonly inUse: (vpid: number) => boolean) {}

  /** Allocates the next free vpid. Serialised, so concurrent callers never collide. */
  async allocate (): Promise<number> {
    const result = this.queue.then(async () => await this.allocateNow())
    this.queue = result.catch(() => {})
    return await result
  }

  private async allocateNow (): Promise<number> {
    for (let tries = 0; tries < VPIDS_PER_NODE; tries++) {
      if (this.next === 0 || this.next >= this.reservedUpTo) await this.reserve()
      const n = this.next++
      const vpid = this.nodeId * VPIDS_PER_NODE + n
      if (!this.inUse(vpid)) return vpid
    }
    throw new VpidExhaustedError(`node ${this.nodeId} has no free vpid: ${VPIDS_PER_NODE - 1} jobs are still known`)
  }

  private async reserve (): Promise<void> {
    if (this.next === 0) this.next = (await this.store.get<number>('vpid/next')) ?? 1
    if (this.next >= VPIDS_PER_NODE) this.next = 1
    this.reservedUpTo = Math.min(VPIDS_PER_NODE, this.next + RESERVE_BLOCK)
    await this.store.put('vpid/next', this.reservedUpTo)
  }
}
