/**
 * Sizes and durations as people type them ("512MiB", "60s"), shared by the daemon's config and the
 * CLI. No dependencies, so the CLI can import it without start-up cost.
 */

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1000, kib: 1024,
  m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1000 ** 4, tib: 1024 ** 4
}

/** Parses "512MiB", "2G" (binary), "1.5GB" (decimal) or a plain number of bytes. */
export function parseBytes (value: string | number): number {
  if (typeof value === 'number') return checkBytes(value, String(value))
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value)
  const unit = UNITS[(m?.[2] ?? '').toLowerCase()]
  if (m == null || unit === undefined) {
    throw new RangeError(`"${value}" is not a size (examples: 4096, 512MiB, 2G)`)
  }
  return checkBytes(Math.round(Number(m[1]) * unit), value)
}

function checkBytes (n: number, original: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`"${original}" is not a positive size`)
  return n
}

/** Parses "60s", "500ms", "2m", "1h" or a plain number of milliseconds. */
export function parseDurationMs (value: string | number): number {
  if (typeof value === 'number') return value
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value)
  if (m == null) throw new RangeError(`"${value}" is not a duration (examples: 500ms, 60s, 5m)`)
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h' ?? 'ms']
  return Math.round(Number(m[1]) * factor)
}
