/** Shared helpers for benchmarks: process sampling and percentiles. */
import { open, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'

export function percentile (sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i] ?? NaN
}

export function summarize (samples: readonly number[]): { n: number, p50: number, p99: number, mean: number, min: number, max: number } {
  const s = [...samples].sort((a, b) => a - b)
  const round = (x: number): number => Math.round(x * 100) / 100
  return {
    n: s.length,
    p50: round(percentile(s, 50)),
    p99: round(percentile(s, 99)),
    mean: round(s.reduce((a, b) => a + b, 0) / Math.max(1, s.length)),
    min: round(s[0] ?? NaN),
    max: round(s[s.length - 1] ?? NaN)
  }
}

export async function rssBytes (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024
}

/** CPU seconds (user + system) a process has used so far. */
export async function cpuSeconds (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (USER_HZ = 100)
}

export const sleep = async (ms: number): Promise<void> => { await new Promise(r => setTimeout(r, ms)) }

/** A build under comparison: `name=path/to/bin/ssid.js[@{json config extra}]` on the command line. */
export interface Variant { name: string, ssid: string, extra: Record<string, unknown> }

export function parseVariants (args: readonly string[]): Variant[] {
  return args.map(arg => {
    const [name, rest] = arg.split('=') as [string, string]
    const at = rest.indexOf('@')
    return { name, ssid: at < 0 ? rest : rest.slice(0, at), extra: at < 0 ? {} : JSON.parse(rest.slice(at + 1)) as Record<string, unknown> }
  })
}

/**
 * This VM hands memory that stayed free for a while back to its host (DAMON pageout and free page
 * reporting): the first touch of such a page then costs a fault on the host too, which made a
 * 1 GiB dump, copy or transfer up to 3x slower in whichever run came first. Touching and freeing
 * `mib` MiB (e.g. what a migration allocates: images at both ends, the restored job) right before
 * each measured run gives a benchmark and its baseline the same warm memory.
 */
export async function touchMemory (mib: number): Promise<void> {
  const path = join('/dev/shm', `ssi-bench-touch-${process.pid}`)
  const block = Buffer.alloc(4 * 1048576, 1)
  const fh = await open(path, 'w', 0o600)
  try {
    for (let i = 0; i < Math.max(1, Math.ceil(mib / 4)); i++) await fh.write(block)
  } finally {
    await fh.close()
    await rm(path, { force: true })
  }
}
