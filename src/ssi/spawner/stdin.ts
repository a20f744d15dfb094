/**
 * Writers to jobs' stdin FIFOs. The FIFO is opened write-only and non-blocking (so a job that
 * has gone makes open fail with ENXIO instead of hanging) and written with plain non-blocking
 * writes, retried with a short back-off while the FIFO is full: a write resolves once the kernel
 * took all the data (back-pressure: when the job reads), and the caller may stop it between two
 * attempts (`paused`), learning exactly how many bytes went in. That exact count is what lets a
 * migration hand the rest to the job's next node without losing or repeating a byte.
 * The shim holds its own write end, so the job never sees EOF merely because this writer closed
 * (or the daemon restarted); `close` ends this writer and the caller then tells the shim.
 */
import { closeSync, constants, openSync, writeSync } from 'node:fs'
import { StdinClosedError } from './errors.js'

/** Back-off while the FIFO is full, ms: from the first to the last retry interval. */
const FIRST_RETRY_MS = 1
const MAX_RETRY_MS = 20

export class StdinWriters {
  private readonly fds = new Map<string, number>()

  private fdFor (path: string): number {
    const open = this.fds.get(path)
    if (open !== undefined) return open
    try {
      const fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK)
      this.fds.set(path, fd)
      return fd
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      const why = code === 'ENXIO' ? 'the job no longer reads its stdin' : code === 'ENOENT' ? 'the job has no stdin FIFO' : code
      throw new StdinClosedError(`cannot open ${path}: ${why}`, { cause: err })
    }
  }

  /**
   * Writes all of `data` unless `paused()` turns true while the FIFO is full (or before the
   * first byte); resolves with the number of bytes the FIFO took.
   */
  async write (path: string, data: Uint8Array | string, signal?: AbortSignal, paused: () => boolean = () => false): Promise<number> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data
    let done = 0
    let waitMs = FIRST_RETRY_MS
    while (done < bytes.byteLength) {
      signal?.throwIfAborted()
      if (paused()) return done
      const n = this.tryWrite(path, bytes.subarray(done))
      done += n
      if (n > 0) waitMs = FIRST_RETRY_MS
      else {
        await new Promise(resolve => setTimeout(resolve, waitMs))
        waitMs = Math.min(MAX_RETRY_MS, waitMs * 2)
      }
    }
    return done
  }

  /** One non-blocking write: bytes taken, 0 when the FIFO is full. */
  private tryWrite (path: string, bytes: Uint8Array): number {
    const fd = this.fdFor(path)
    try {
      return writeSync(fd, bytes)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return 0
      this.destroy(path)
      throw new StdinClosedError(`writing to ${path}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** Closes this process's writer (no-op if none is open); every write has completed by then. */
  async close (path: string): Promise<void> {
    this.destroy(path)
  }

  /** Drops the writer (the job is being released). */
  destroy (path: string): void {
    const fd = this.fds.get(path)
    this.fds.delete(path)
    if (fd !== undefined) try { closeSync(fd) } catch { /* already closed */ }
  }
}
