/**
 * CRIU's own timing of a dump, from the `stats-dump` file it leaves in the images dir: two magic
 * words, a little-endian u32 length, then a StatsEntry protobuf (images/stats.proto) whose field 1
 * is a DumpStatsEntry: freezing_time (1), frozen_time (2), memdump_time (3), memwrite_time (4), µs.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

export interface DumpStats {
  /** Time to freeze the tree, µs. */
  readonly freezingUs: number
  /** Time the tree stayed frozen while CRIU dumped it, µs. */
  readonly frozenUs: number
  readonly memdumpUs: number
  readonly memwriteUs: number
}

function varint (buf: Buffer, at: number): [number, number] {
  let value = 0
  let shift = 0
  for (let i = at; i < buf.length && shift < 53; i++) {
    const byte = buf[i] as number
    value += (byte & 0x7f) * 2 ** shift
    shift += 7
    if ((byte & 0x80) === 0) return [value, i + 1]
  }
  throw new Error('truncated varint')
}

/** The varint fields of one message (other wire types are skipped). */
function fields (buf: Buffer): Map<number, number | Buffer> {
  const out = new Map<number, number | Buffer>()
  let at = 0
  while (at < buf.length) {
    const [tag, next] = varint(buf, at)
    at = next
    const wire = tag & 7
    if (wire === 0) {
      const [v, n] = varint(buf, at)
      out.set(Math.floor(tag / 8), v)
      at = n
    } else if (wire === 2) {
      const [len, n] = varint(buf, at)
      out.set(Math.floor(tag / 8), buf.subarray(n, n + len))
      at = n + len
    } else if (wire === 1) at += 8
    else if (wire === 5) at += 4
    else throw new Error(`unsupported wire type ${wire}`)
  }
  return out
}

export function parseDumpStats (file: Buffer): DumpStats {
  if (file.length < 12) throw new Error('stats-dump is too short')
  const size = file.readUInt32LE(8)
  const entry = fields(file.subarray(12, 12 + size)).get(1)
  if (!(entry instanceof Buffer)) throw new Error('stats-dump has no dump entry')
  const dump = fields(entry)
  const num = (n: number): number => { const v = dump.get(n); return typeof v === 'number' ? v : 0 }
  return { freezingUs: num(1), frozenUs: num(2), memdumpUs: num(3), memwriteUs: num(4) }
}

/**
 * The stats of the dump in imagesDir, or undefined if CRIU left none. Synchronous: a few hundred
 * bytes, read inside a migration's downtime while the page send keeps the thread pool busy (the
 * four hops of an async read took up to 17 ms there).
 */
export function readDumpStats (imagesDir: string): DumpStats | undefined {
  let file: Buffer
  try { file = readFileSync(join(imagesDir, 'stats-dump')) } catch { return undefined }
  try { return parseDumpStats(file) } catch { return undefined }
}
