import { readFileSync } from 'node:fs'
import { cpus, freemem, totalmem, loadavg } from 'node:os'

/** A node's load as gossiped in heartbeats. */
export interface LoadSample {
  /** Runnable tasks right now (from /proc/loadavg), a sharper signal than the averages. */
  readonly runQueue: number
  readonly load1: number
  readonly load5: number
  readonly load15: number
  readonly cpus: number
  readonly freeBytes: number
  readonly totalBytes: number
}

/**
 * Reads the host's load. Falls back to os.loadavg() where /proc/loadavg is missing. Synchronous
 * reads on purpose: procfs files are generated in memory and never block, and four thread-pool hops
 * per file cost more CPU than the read itself at several samples a second.
 */
export function sampleLoad (): LoadSample {
  const [load1, load5, load15] = loadavg() as [number, number, number]
  let runQueue = 0
  try {
    const text = readFileSync('/proc/loadavg', 'utf8')
    // "0.52 0.58 0.59 3/1234 5678": running/total; minus one for our own reader.
    runQueue = Math.max(0, Number(text.split(' ')[3]?.split('/')[0] ?? '1') - 1)
  } catch { /* not Linux: leave 0 */ }
  return {
    runQueue,
    load1,
    load5,
    load15,
    cpus: cpuCount(),
    freeBytes: availableMemory(),
    totalBytes: totalmem()
  }
}

/** MemAvailable counts reclaimable cache as free, which is what placement cares about. */
function availableMemory (): number {
  try {
    const text = readFileSync('/proc/meminfo', 'utf8')
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(text)
    if (m != null) return Number(m[1]) * 1024
  } catch { /* fall through */ }
  return freemem()
}

let cachedCpuCount: number | undefined
/** os.cpus() parses /proc/cpuinfo and /proc/stat on every call: once is enough for a daemon's life. */
function cpuCount (): number {
  cachedCpuCount ??= Math.max(1, cpus().length)
  return cachedCpuCount
}
