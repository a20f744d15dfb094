/** Human formatting of sizes, durations and load for `ssi` output. */

const BYTE_UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const

/** 1288490188 → "1.2 GiB"; under 1 KiB in bytes ("512 B"). */
export function formatBytes (bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '?'
  if (bytes < 1024) return `${Math.round(bytes)} B`
  let value = bytes / 1024
  let unit = 0
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024
    unit++
  }
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${BYTE_UNITS[unit]}`
}

/** A size someone chose (a limit): exact when it is a whole number of units ("64 MiB", "1.5 GiB"). */
export function formatLimitBytes (bytes: number): string {
  for (let unit = BYTE_UNITS.length - 1; unit >= 0; unit--) {
    const value = bytes / 1024 ** (unit + 1)
    if (value >= 1 && Number.isInteger(value * 10)) return `${value} ${BYTE_UNITS[unit]}`
  }
  return formatBytes(bytes)
}

/** A short duration: "0.4s", "12.0s", "3m05s", "2h07m", "4d03h". Negative counts as 0. */
export function formatDuration (ms: number): string {
  if (!Number.isFinite(ms)) return '?'
  const s = Math.max(0, ms) / 1000
  if (s < 60) return `${s.toFixed(1)}s`
  const minutes = Math.floor(s / 60)
  if (minutes < 60) return `${minutes}m${pad2(Math.floor(s % 60))}s`
  const hours = Math.floor(minutes / 60)
  if (hours < 24) return `${hours}h${pad2(minutes % 60)}m`
  return `${Math.floor(hours / 24)}d${pad2(hours % 24)}h`
}

/** Time since `thenMs`: "0.4s ago". */
export function formatAgo (thenMs: number, nowMs: number): string {
  return `${formatDuration(nowMs - thenMs)} ago`
}

/** Load averages as "0.52/0.40/0.31". */
export function formatLoad (load: { readonly load1: number, readonly load5: number, readonly load15: number }): string {
  return [load.load1, load.load5, load.load15].map(n => n.toFixed(2)).join('/')
}

/** A libp2p peer id shortened to its distinctive tail: "…Xy7aBcD1" (they all start alike). */
export function shortPeerId (peerId: string): string {
  return peerId.length <= 10 ? peerId : `…${peerId.slice(-8)}`
}

/** The first address without its /p2p/<peer id> suffix, plus "+N" for the others; "-" if none. */
export function shortAddresses (addresses: readonly string[]): string {
  const first = addresses[0]
  if (first === undefined) return '-'
  const bare = first.replace(/\/p2p\/[^/]+$/, '')
  return addresses.length > 1 ? `${bare} +${addresses.length - 1}` : bare
}

function pad2 (n: number): string {
  return n < 10 ? `0${n}` : String(n)
}

/** A command line for display: words that need it are single-quoted, as a shell would want them. */
export function formatCommand (argv: readonly string[]): string {
  return argv.map(word => /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`).join(' ')
}

/** Cuts `text` to `max` characters, marking the cut with "…". */
export function truncate (text: string, max: number): string {
  const chars = [...text]
  return chars.length <= max ? text : `${chars.slice(0, Math.max(0, max - 1)).join('')}…`
}
