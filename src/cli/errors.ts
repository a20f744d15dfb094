/** Errors of the CLI itself (as opposed to errors the daemon returns). */

/** Bad arguments found by a verb (not by commander): one line on stderr and exit 2. */
export class UsageError extends Error {
  static override name = 'UsageError'
  override name = 'UsageError'
}

/** Parses a vpid typed by the user: a positive integer (the daemon checks it names a job). */
export function parseVpidArg (text: string): number {
  const n = /^\d{1,16}$/.test(text) ? Number(text) : NaN
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new UsageError(`"${text}" is not a vpid: vpids are positive integers such as 1000001 (see ssi ps)`)
  }
  return n
}

/** `path` made absolute against `cwd` (no node:path: the CLI loads as little as it can). */
export function absolutePath (cwd: string, path: string): string {
  return path.startsWith('/') ? path : `${cwd.replace(/\/+$/, '')}/${path}`
}
