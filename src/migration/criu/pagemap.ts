/**
 * Reads the lazy ranges of a dump's pagemap images (pagemap-<pid>.img): which memory the lazy-pages
 * daemon will ask the source's page server for. Used to fetch those pages ahead of the daemon's
 * requests (../page-prefetch.ts).
 *
 * Image layout (CRIU images/pagemap.proto, criu/include/magic.h): two u32 magics, then entries each
 * prefixed by a u32 length: one PagemapHead, then PagemapEntry { vaddr = 1, nr_pages = 2 (u32, 0 in
 * newer CRIU), flags = 4, pages = 5 (u64 page count, newer CRIU) }.
 */
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'

export const PAGE_SIZE = 4096
/** PagemapEntry flags (criu/include/pagemap.h). */
const PE_LAZY = 1 << 1
const IMG_COMMON_MAGIC = 0x54564319
const PAGEMAP_MAGIC = 0x56084025

export class PagemapError extends Error {
  static override name = 'PagemapError'
  override name = 'PagemapError'
}

/** Lazily served memory of one task: [start, end) in the dumped address space, page aligned. */
export interface LazyRange {
  /** The task's pid in the dump (the page-server requests' dst_id). */
  readonly pid: number
  readonly start: number
  readonly end: number
}

/** Decodes a protobuf message's varint fields (the only wire type PagemapEntry uses). */
function varintFields (buf: Buffer): Map<number, bigint> {
  const fields = new Map<number, bigint>()
  let pos = 0
  const varint = (): bigint => {
    let v = 0n
    for (let shift = 0n; ; shift += 7n) {
      if (pos >= buf.length) throw new PagemapError('truncated varint')
      const b = buf[pos++] ?? 0
      v |= BigInt(b & 0x7f) << shift
      if ((b & 0x80) === 0) return v
    }
  }
  while (pos < buf.length) {
    const key = Number(varint())
    if ((key & 7) !== 0) throw new PagemapError(`unexpected wire type ${key & 7} in a pagemap entry`)
    fields.set(key >> 3, varint())
  }
  return fields
}

/** The lazy ranges of one pagemap image (its bytes), for task `pid`. */
export function parsePagemap (img: Buffer, pid: number): LazyRange[] {
  if (img.length < 8 || img.readUInt32LE(0) !== IMG_COMMON_MAGIC || img.readUInt32LE(4) !== PAGEMAP_MAGIC) {
    throw new PagemapError(`pagemap of ${pid} has no pagemap magic`)
  }
  const ranges: LazyRange[] = []
  let pos = 8
  for (let index = 0; pos < img.length; index++) {
    if (pos + 4 > img.length) throw new PagemapError(`pagemap of ${pid} is truncated`)
    const size = img.readUInt32LE(pos)
    const body = img.subarray(pos + 4, pos + 4 + size)
    if (body.length !== size) throw new PagemapError(`pagemap of ${pid} is truncated`)
    pos += 4 + size
    if (index === 0) continue // PagemapHead
    const f = varintFields(body)
    if (((Number(f.get(4) ?? 0n)) & PE_LAZY) === 0) continue
    const pages = Number(f.get(5) ?? f.get(2) ?? 0n)
    const start = Number(f.get(1) ?? 0n)
    if (pages > 0 && Number.isSafeInteger(start + pages * PAGE_SIZE)) ranges.push({ pid, start, end: start + pages * PAGE_SIZE })
  }
  return ranges
}

/** Every lazy range of the dump in `imagesDir`, by pid then address. */
export async function readLazyRanges (imagesDir: string): Promise<LazyRange[]> {
  const names = (await readdir(imagesDir)).filter(n => /^pagemap-\d+\.img$/.test(n))
  const all: LazyRange[] = []
  for (const name of names) {
    const pid = Number(/\d+/.exec(name)?.[0])
    all.push(...parsePagemap(await readFile(join(imagesDir, name)), pid))
  }
  return all.sort((a, b) => a.pid - b.pid || a.start - b.start)
}

/** A set of disjoint [start, end) intervals, kept sorted (a handful per task: linear is fine). */
export class RangeSet {
  private spans: Array<{ start: number, end: number }> = []

  add (start: number, end: number): void {
    if (end <= start) return
    const kept = this.spans.filter(s => s.end < start || s.start > end)
    const merged = this.spans.filter(s => !(s.end < start || s.start > end))
    const lo = Math.min(start, ...merged.map(s => s.start))
    const hi = Math.max(end, ...merged.map(s => s.end))
    this.spans = [...kept, { start: lo, end: hi }].sort((a, b) => a.start - b.start)
  }

  remove (start: number, end: number): void {
    if (end <= start) return
    this.spans = this.spans.flatMap(s => {
      if (s.end <= start || s.start >= end) return [s]
      const parts: Array<{ start: number, end: number }> = []
      if (s.start < start) parts.push({ start: s.start, end: start })
      if (s.end > end) parts.push({ start: end, end: s.end })
      return parts
    })
  }

  /** The first part at or after `from`, at most `maxLen` long. */
  firstFrom (from: number, maxLen: number): { start: number, end: number } | undefined {
    const s = this.spans.find(x => x.end > from)
    if (s === undefined) return undefined
    const start = Math.max(s.start, from)
    return { start, end: Math.min(s.end, start + maxLen) }
  }

  get size (): number { return this.spans.reduce((n, s) => n + s.end - s.start, 0) }
}
