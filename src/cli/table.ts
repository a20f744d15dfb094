/** Plain-text tables: aligned columns separated by two spaces, no dependency. */

export interface TableOptions {
  /** Indexes of columns to right-align (numbers). */
  readonly rightAlign?: readonly number[]
}

/** Lines of a table with a header row. Rows shorter than the header are padded with empty cells. */
export function formatTable (header: readonly string[], rows: ReadonlyArray<readonly string[]>, options: TableOptions = {}): string[] {
  const all = [header, ...rows]
  const widths = header.map((_, col) => Math.max(...all.map(row => width(row[col] ?? ''))))
  const right = new Set(options.rightAlign ?? [])
  return all.map(row => header.map((_, col) => {
    const cell = row[col] ?? ''
    const pad = ' '.repeat((widths[col] ?? 0) - width(cell))
    return right.has(col) && row !== header ? pad + cell : cell + pad
  }).join('  ').trimEnd())
}

/** `key  value` lines with the keys aligned. */
export function formatKeyValues (pairs: ReadonlyArray<readonly [string, string]>): string[] {
  const keyWidth = Math.max(0, ...pairs.map(([key]) => width(key)))
  return pairs.map(([key, value]) => `${key}${' '.repeat(keyWidth - width(key))}  ${value}`.trimEnd())
}

/** Display width, counting code points (good enough for the ASCII and `…` we print). */
function width (text: string): number {
  let n = 0
  for (const _ of text) n++
  return n
}
