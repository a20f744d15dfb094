import { Level } from 'level'

/**
 * The node's persistent state: job records, vpid counters, known peers. Keys are namespaced strings
 * ("job/2000017"), values JSON. Writes are durable once the promise resolves. Safe for concurrent
 * use from one process; LevelDB's lock keeps a second daemon off the same directory.
 */
export interface StateStore {
  get<T>(key: string): Promise<T | undefined>
  put(key: string, value: unknown): Promise<void>
  del(key: string): Promise<void>
  /** Applies puts (value defined) and deletes (value undefined) atomically. */
  batch(ops: ReadonlyArray<{ key: string, value?: unknown }>): Promise<void>
  /** All entries whose key starts with `prefix`, in key order. */
  list<T>(prefix: string): Promise<Array<{ key: string, value: T }>>
  close(): Promise<void>
}

export class StoreLockedError extends Error {
  static override name = 'StoreLockedError'
  override name = 'StoreLockedError'
}

export class LevelStateStore implements StateStore {
  private constructor (private readonly db: Level<string, unknown>) {}

  static async open (dir: string): Promise<LevelStateStore> {
    const db = new Level<string, unknown>(dir, { valueEncoding: 'json' })
    try {
      await db.open()
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause
      if (cause?.code === 'LEVEL_LOCKED') {
        throw new StoreLockedError(`state store ${dir} is in use by another ssi daemon`, { cause: err })
      }
      throw err
    }
    return new LevelStateStore(db)
  }

  async get<T>(key: string): Promise<T | undefined> {
    return await this.db.get(key) as T | undefined
  }

  async put (key: string, value: unknown): Promise<void> {
    await this.db.put(key, value)
  }

  async del (key: string): Promise<void> {
    await this.db.del(key)
  }

  async batch (ops: ReadonlyArray<{ key: string, value?: unknown }>): Promise<void> {
    await this.db.batch(ops.map(op => op.value === undefined
      ? { type: 'del' as const, key: op.key }
      : { type: 'put' as const, key: op.key, value: op.value }))
  }

  async list<T>(prefix: string): Promise<Array<{ key: string, value: T }>> {
    const out: Array<{ key: string, value: T }> = []
    for await (const [key, value] of this.db.iterator({ gte: prefix, lt: prefix + '\xff' })) {
      out.push({ key, value: value as T })
    }
    return out
  }

  async close (): Promise<void> {
    await this.db.close()
  }
}

/** In-memory store for unit tests; same contract as LevelStateStore. */
export class MemoryStateStore implements StateStore {
  private readonly data = new Map<string, string>()

  async get<T>(key: string): Promise<T | undefined> {
    const v = this.data.get(key)
    return v === undefined ? undefined : JSON.parse(v) as T
  }

  async put (key: string, value: unknown): Promise<void> { this.data.set(key, JSON.stringify(value)) }
  async del (key: string): Promise<void> { this.data.delete(key) }

  async batch (ops: ReadonlyArray<{ key: string, value?: unknown }>): Promise<void> {
    for (const op of ops) {
      if (op.value === undefined) this.data.delete(op.key)
      else this.data.set(op.key, JSON.stringify(op.value))
    }
  }

  async list<T>(prefix: string): Promise<Array<{ key: string, value: T }>> {
    return [...this.data.keys()].filter(k => k.startsWith(prefix)).sort()
      .map(key => ({ key, value: JSON.parse(this.data.get(key) ?? 'null') as T }))
  }

  async close (): Promise<void> {}
}
