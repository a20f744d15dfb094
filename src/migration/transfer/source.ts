/** The sending end's file access: list an image dir and read it as DATA-frame-sized chunks. */
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { FRAME_HEADER_BYTES, imageNameProblem } from '../../protocol/images.js'
import { ImageTransferError } from './errors.js'
import type { FileHandle } from 'node:fs/promises'
import type { ImageFile } from '../../protocol/images.js'

/** One chunk of a file, read into a buffer that has room for the DATA frame header in front. */
export interface DataChunk {
  /** Index of the file in the header's list. */
  readonly file: number
  /** FRAME_HEADER_BYTES of free space, then `body`: fill in the header and send it as is. */
  readonly frame: Uint8Array
  readonly body: Uint8Array
  /** Hands the buffer back for a later read; only when nothing refers to it any more. */
  release(): void
}

/**
 * Read buffers kept for reuse. A fresh 1 MiB Buffer per chunk costs an mmap, 256 first-touch page
 * faults and a munmap after GC; reused ones cost none of that (see ../transfer.ts).
 */
export class ReadBufferPool {
  private readonly free: Buffer[] = []

  /** `size`: bytes of every buffer; `keep`: most buffers kept while unused. */
  constructor (readonly size: number, private readonly keep = 8) {}

  take (): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafe(this.size)
  }

  give (buf: Buffer): void {
    if (buf.byteLength === this.size && this.free.length < this.keep) this.free.push(buf)
  }
}

/**
 * Lists a flat image directory: regular files only, sorted by name but CRIU's page files last, by
 * number: a restore reading the images as they arrive (`criu restore --stream`) needs every other
 * image before the memory. A symlink, subdirectory or other special file, or an unsafe name, is
 * refused (CRIU image dirs never hold them).
 */
export async function listImageDir (dir: string, skip?: (name: string) => boolean): Promise<ImageFile[]> {
  // Synchronous: a dump's ~25 entries on a local filesystem take microseconds each, where a
  // thread-pool hop per lstat cost a few ms of every migration's downtime.
  const entries = readdirSync(dir, { withFileTypes: true })
  const files: ImageFile[] = []
  for (const entry of entries.sort((a, b) => compareImageNames(a.name, b.name))) {
    if (skip?.(entry.name) === true) continue
    const problem = imageNameProblem(entry.name)
    if (problem !== undefined) throw new ImageTransferError(`image file name ${JSON.stringify(entry.name)} ${problem}`, { code: 'bad-name', file: entry.name })
    if (!entry.isFile()) {
      throw new ImageTransferError(`${join(dir, entry.name)} is not a regular file: image dirs hold only regular files`, { code: 'not-a-file', file: entry.name })
    }
    const st = lstatSync(join(dir, entry.name))
    files.push({ name: entry.name, size: st.size, mode: st.mode & 0o7777 })
  }
  return files
}

const PAGES = /^pages-(\d+)\.img$/

/** Name order, except that CRIU's pages-N.img come after every other file, in N's order. */
export function compareImageNames (a: string, b: string): number {
  const pa = PAGES.exec(a)
  const pb = PAGES.exec(b)
  if (pa !== null && pb !== null) return Number(pa[1]) - Number(pb[1])
  if (pa !== null || pb !== null) return pa !== null ? 1 : -1
  return a < b ? -1 : a > b ? 1 : 0
}

/**
 * Reads the files in order as chunks of up to `chunkBytes`, a few reads ahead of the consumer so
 * the disk and the network overlap. A file that changed size since it was listed is an error
 * ('source-changed'): the image would not match what the header promised.
 */
export async function * readImageData (dir: string, files: readonly ImageFile[], chunkBytes: number, signal?: AbortSignal): AsyncGenerator<DataChunk> {
  const pool = new ReadBufferPool(FRAME_HEADER_BYTES + chunkBytes)
  for (const [index, file] of files.entries()) {
    signal?.throwIfAborted()
    if (file.size <= Math.min(SMALL_FILE_BYTES, chunkBytes)) {
      const chunk = readSmallFile(dir, index, file, pool)
      if (file.size > 0) yield chunk // an empty file sends no DATA, as below
      else chunk.release()
      continue
    }
    const fh = await openSource(dir, file)
    try {
      yield * readFileChunks(fh, index, file, pool, signal)
      const st = await fh.stat()
      if (st.size !== file.size) throw changed(file, st.size)
    } finally {
      await fh.close()
    }
  }
}

/** Files up to this size (most of a dump's files: all but the pages) are read synchronously. */
const SMALL_FILE_BYTES = 64 * 1024

/** A small file in one synchronous read: five thread-pool hops (open, stat, read, stat, close) fewer. */
function readSmallFile (dir: string, index: number, file: ImageFile, pool: ReadBufferPool): DataChunk {
  const fd = openSync(join(dir, file.name), constants.O_RDONLY | constants.O_NOFOLLOW)
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new ImageTransferError(`${file.name} is no longer a regular file`, { code: 'source-changed', file: file.name })
    if (st.size !== file.size) throw changed(file, st.size)
    const buf = pool.take()
    const frame = buf.subarray(0, FRAME_HEADER_BYTES + file.size)
    let filled = 0
    while (filled < file.size) {
      const n = readSync(fd, frame, FRAME_HEADER_BYTES + filled, file.size - filled, filled)
      if (n === 0) throw changed(file, filled)
      filled += n
    }
    if (fstatSync(fd).size !== file.size) throw changed(file, fstatSync(fd).size)
    return { file: index, frame, body: frame.subarray(FRAME_HEADER_BYTES), release: () => { pool.give(buf) } }
  } finally {
    closeSync(fd)
  }
}

async function openSource (dir: string, file: ImageFile): Promise<FileHandle> {
  const fh = await open(join(dir, file.name), constants.O_RDONLY | constants.O_NOFOLLOW)
  const st = await fh.stat()
  if (!st.isFile() || st.size !== file.size) {
    await fh.close()
    throw st.isFile() ? changed(file, st.size) : new ImageTransferError(`${file.name} is no longer a regular file`, { code: 'source-changed', file: file.name })
  }
  return fh
}

/** Reads kept in flight ahead of the consumer, so the disk (thread pool) and the network overlap. */
const READ_AHEAD = 4

/** Reads [from, until) of the file as chunks of the pool's size, READ_AHEAD reads ahead. */
export async function * readFileChunks (fh: FileHandle, index: number, file: ImageFile, pool: ReadBufferPool, signal?: AbortSignal, from = 0, until = file.size): AsyncGenerator<DataChunk> {
  let offset = from
  const pending: Array<Promise<DataChunk>> = []
  const chunkBytes = pool.size - FRAME_HEADER_BYTES
  const fill = (): void => {
    while (pending.length < READ_AHEAD && offset < until) {
      const length = Math.min(chunkBytes, until - offset)
      const p = readChunk(fh, index, file, offset, length, pool)
      p.catch(() => {}) // awaited in order below; this only marks a later failure as handled
      pending.push(p)
      offset += length
    }
  }
  try {
    fill()
    for (let next = pending.shift(); next !== undefined; next = pending.shift()) {
      const chunk = await next
      signal?.throwIfAborted()
      fill()
      yield chunk
    }
  } finally {
    // The consumer may stop early: let reads in flight finish before the handle is closed.
    await Promise.allSettled(pending)
  }
}

async function readChunk (fh: FileHandle, index: number, file: ImageFile, position: number, length: number, pool: ReadBufferPool): Promise<DataChunk> {
  const buf = pool.take()
  const frame = buf.subarray(0, FRAME_HEADER_BYTES + length)
  let filled = 0
  while (filled < length) {
    const { bytesRead } = await fh.read(frame, FRAME_HEADER_BYTES + filled, length - filled, position + filled)
    if (bytesRead === 0) throw changed(file, position + filled)
    filled += bytesRead
  }
  return { file: index, frame, body: frame.subarray(FRAME_HEADER_BYTES), release: () => { pool.give(buf) } }
}

function changed (file: ImageFile, size: number): ImageTransferError {
  return new ImageTransferError(`${file.name} changed while being sent (listed with ${file.size} bytes, now ${size})`, { code: 'source-changed', file: file.name })
}
