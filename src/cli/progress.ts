/**
 * A live one-line progress display for the terminal (stderr): redrawn in place with `\r`, cleared
 * before anything else is printed. No dependency: a migration needs one line, not a widget kit.
 */
import type { MigrateEvent } from '../api/schema.js'

const MiB = 2 ** 20

function seconds (ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.round(ms / 1000)}s`
}

/** e.g. "transferring  812.0/1024.0 MiB  640.2 MiB/s  ETA 0.3s". */
export function describeMigrateProgress (e: Extract<MigrateEvent, { kind: 'progress' }>): string {
  const done = (e.doneBytes / MiB).toFixed(1)
  const total = (e.totalBytes / MiB).toFixed(1)
  const rate = `${(e.bytesPerSecond / MiB).toFixed(1)} MiB/s`
  const eta = e.etaMs === undefined ? '' : `  ETA ${seconds(e.etaMs)}`
  const what = e.phase === 'pulling' ? 'pulling pages' : e.phase
  return `${what}  ${done}/${total} MiB  ${rate}${eta}`
}

export class ProgressLine {
  private shown = 0

  /** `write` puts text on the terminal as is; `columns` is its width. */
  constructor (private readonly write: (text: string) => void, private readonly columns: number) {}

  update (text: string): void {
    const line = text.slice(0, Math.max(10, this.columns - 1))
    this.write(`\r${line}${' '.repeat(Math.max(0, this.shown - line.length))}`)
    this.shown = line.length
  }

  /** Erases the line (call before printing anything else). */
  clear (): void {
    if (this.shown === 0) return
    this.write(`\r${' '.repeat(this.shown)}\r`)
    this.shown = 0
  }
}
