import { readFile } from 'node:fs/promises'
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

/** Reads the host's load. Falls back to os.loadavg() where /proc/loadavg is missing. */
export async function sampleLoad (): Promise<LoadSample> {
  const [load1, load5, load15] = loadavg() as [number, number, number]
  let runQueue = 0
  try {
    const text = await readFile('/proc/loadavg', 'utf8')
    // "0.52 0.58 0.59 3/1234 5678": running/total; minus one for our own reader.
    runQueue = Math.max(0, Number(text.split(' ')[3]?.split('/')[0] ?? '1') - 1)
  } catch { /* not Linux: leave 0 */ }
  return {
    runQueue,
    load1,
    load5,
    load15,
    cpus: cpus().length,
    freeBytes: await availableMemory(),
    totalBytes: totalmem()
  }
}

/** MemAvailable counts reclaimable cache as free, which is what placement cares about. */
async function availableMemory (): Promise<number> {
  try {
    const text = await readFile('/proc/meminfo', 'utf8')
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(text)
    if (m != null) return Number(m[1]) * 1024
  } catch { /* fall through */ }
  return freemem()
}
