/**
 * The images of a transfer still in progress, as a restore reading them while they arrive sees them
 * (../image-streamer.ts, `criu restore --stream`): which files there will be, how much of each is
 * on disk, and whether the whole transfer verified. The receiver (./receive.ts, ./sink.ts) reports
 * to it; a streamer and the target's restore wait on it.
 */
import { join } from 'node:path'
import type { StreamedImages } from '../image-streamer.js'

/** What the image writer reports as it writes (./sink.ts). */
export interface WriteObserver {
  /** The first `bytes` of `name` are on disk. */
  wrote(name: string, bytes: number): void
  /** All of `name` is on disk: `size` bytes. */
  completed(name: string, size: number): void
}

/** What the receiver reports of a whole transfer (./receive.ts ReceiveOptions.arrivals). */
export interface TransferObserver extends WriteObserver {
  listed(names: readonly string[], last: boolean): void
  verified(): void
  failed(err: Error): void
}

export class ArrivingImages implements StreamedImages, TransferObserver {
  private readonly listedNames = new Set<string>()
  private readonly onDisk = new Map<string, number>()
  private readonly sizes = new Map<string, number>()
  private allListed = false
  private verifiedOk = false
  private failure: Error | undefined
  private waiters: Array<() => void> = []

  constructor (private readonly dir: string) {}

  /** Files of one header; `last`: no header follows, so every file is known. */
  listed (names: readonly string[], last: boolean): void {
    for (const name of names) this.listedNames.add(name)
    if (last) this.allListed = true
    this.changed()
  }

  wrote (name: string, bytes: number): void {
    if (bytes > (this.onDisk.get(name) ?? 0)) this.onDisk.set(name, bytes)
    this.changed()
  }

  completed (name: string, size: number): void {
    this.onDisk.set(name, size)
    this.sizes.set(name, size)
    this.changed()
  }

  /** Every file arrived and matched its checksum. */
  verified (): void {
    this.verifiedOk = true
    this.changed()
  }

  /** The transfer broke: whoever waits fails with `err`. */
  failed (err: Error): void {
    this.failure ??= err
    this.changed()
  }

  path (name: string): string { return join(this.dir, name) }

  async has (name: string, signal: AbortSignal): Promise<boolean> {
    return await this.until(() => this.listedNames.has(name) || this.allListed ? this.listedNames.has(name) : undefined, signal)
  }

  async progress (name: string, from: number, signal: AbortSignal): Promise<{ bytes: number, complete: boolean }> {
    return await this.until(() => {
      const size = this.sizes.get(name)
      if (size !== undefined) return { bytes: size, complete: true }
      const bytes = this.onDisk.get(name) ?? 0
      return bytes > from ? { bytes, complete: false } : undefined
    }, signal)
  }

  /** Resolves once all of `name` is on disk. */
  async complete (name: string, signal: AbortSignal): Promise<void> {
    await this.until(() => this.sizes.has(name) ? true : undefined, signal)
  }

  /** Resolves once the whole transfer verified. */
  async whenVerified (signal: AbortSignal): Promise<void> {
    await this.until(() => this.verifiedOk ? true : undefined, signal)
  }

  /** Waits until `check` gives a value; rejects on the transfer's failure or on abort. */
  private async until<T> (check: () => T | undefined, signal: AbortSignal): Promise<T> {
    for (;;) {
      if (this.failure !== undefined) throw this.failure
      signal.throwIfAborted()
      const value = check()
      if (value !== undefined) return value
      await new Promise<void>(resolve => {
        const wake = (): void => { signal.removeEventListener('abort', wake); resolve() }
        this.waiters.push(wake)
        signal.addEventListener('abort', wake, { once: true })
      })
    }
  }

  private changed (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const wake of waiters) wake()
  }
}
