/** Progress reports and the logger surface of image transfer. */

/** Where a transfer stands; enough for a CLI to show MiB done, rate and ETA. */
export interface TransferProgress {
  /** Image bytes (uncompressed) sent or written and hashed so far. */
  readonly doneBytes: number
  readonly totalBytes: number
  /** DATA payload bytes on the wire so far (smaller than doneBytes when compressing). */
  readonly wireBytes: number
  readonly files: number
  readonly elapsedMs: number
  /** Mean rate since the start, in image bytes per second. */
  readonly bytesPerSecond: number
  /** Estimated time left at the mean rate; undefined before any byte moved, and while a file still grows (total not known). */
  readonly etaMs: number | undefined
}

export type ProgressListener = (progress: TransferProgress) => void

/** Optional logger (a pino-compatible subset); library code never writes to the console. */
export interface TransferLogger {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

/** Calls the listener at most every `intervalMs`, and always for the first and the last report. */
export class ProgressMeter {
  private readonly start = performance.now()
  private last = -Infinity

  constructor (
    private totalBytes: number,
    private files: number,
    private readonly listener: ProgressListener | undefined,
    private readonly intervalMs = 100
  ) {}

  get elapsedMs (): number {
    return performance.now() - this.start
  }

  /** While a growing file is sent the total is not known: no ETA then. */
  private totalKnown = true

  /** Raises the total to `bytes` (a growing file's data counts as soon as it is known). */
  atLeast (bytes: number): void {
    if (bytes > this.totalBytes) this.totalBytes = bytes
    this.totalKnown = false
  }

  /** Adds files and bytes announced by a later header (the last one makes the total known). */
  add (files: number, bytes: number): void {
    this.files += files
    this.totalBytes += bytes
    this.totalKnown = true
  }

  update (doneBytes: number, wireBytes: number, force = false): void {
    if (this.listener === undefined) return
    const now = performance.now()
    if (!force && now - this.last < this.intervalMs) return
    this.last = now
    const elapsedMs = now - this.start
    const bytesPerSecond = elapsedMs > 0 ? doneBytes / (elapsedMs / 1000) : 0
    const etaMs = bytesPerSecond > 0 && this.totalKnown ? (this.totalBytes - doneBytes) / bytesPerSecond * 1000 : undefined
    this.listener({ doneBytes, totalBytes: this.totalBytes, wireBytes, files: this.files, elapsedMs, bytesPerSecond, etaMs })
  }
}
