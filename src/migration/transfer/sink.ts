/**
 * The receiving end's file access: splits the image byte stream into the header's files, writes
 * each with O_EXCL|O_NOFOLLOW inside the destination dir, checksums it on the way, and removes
 * everything it created when the transfer fails.
 */
import { closeSync, constants, fchmodSync, openSync, writeSync } from 'node:fs'
import { open, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { createFileChecksum } from './checksum.js'
import { ImageIntegrityError, ImageTransferError } from './errors.js'
import { ReadBufferPool } from './source.js'
import type { WriteObserver } from './arrivals.js'
import type { FileHandle } from 'node:fs/promises'
import type { ChecksumAlgorithm, ImageFile } from '../../protocol/images.js'
import type { FileChecksum } from './checksum.js'

/** Pieces at least this large are written directly (writeDirect)... */
const DIRECT_WRITE_BYTES = 256 * 1024
/** ...until one such write takes longer than this, ms (a 1 MiB write to tmpfs takes ~0.3). */
const SLOW_DIRECT_WRITE_MS = 20
/** Bytes gathered before one writev: large writes, a few in flight while the next fills. */
const WRITE_BATCH_BYTES = 1024 * 1024
/** Positional writes run concurrently in the thread pool; this bounds the memory they pin. */
const WRITES_IN_FLIGHT = 4

interface OpenFile {
  /** Undefined for a small file: created and written in one go when it is complete (writeSmall). */
  readonly fh: FileHandle | undefined
  /** The header's checksum, and a sha256 too when asked for one and the checksum is not it. */
  readonly hashes: readonly FileChecksum[]
  readonly file: ImageFile
  written: number
}

/**
 * Writes the files of one transfer. Not safe for concurrent calls: await each `write`. Names must
 * have been validated (plain names, no slash) before: they are joined to `dir` as they are.
 */
export class ImageDirWriter {
  /** Bytes of image data accepted so far. */
  doneBytes = 0
  /** Hex digests (the header's checksum) of the files completed so far, in header order. */
  readonly digests: string[] = []
  /** Their sha256 digests, when the checksum is sha256 or `sha256` was asked for. */
  readonly sha256: string[] = []
  private readonly created: string[] = []
  private index = 0
  private current: OpenFile | undefined
  /** Data is copied into pooled batch buffers: what `write` gets may be reused once it returns. */
  private readonly buffers = new ReadBufferPool(WRITE_BATCH_BYTES, WRITES_IN_FLIGHT + 1)
  private batch: Buffer | undefined
  private batchBytes = 0
  private batchPosition = 0
  private readonly inFlight = new Set<Promise<void>>()
  /** Where the current file's batches still being written start (all settle before the next file). */
  private readonly pendingAt = new Set<number>()
  private writeError: unknown
  /** Large pieces are written synchronously (see writeDirect) while that stays fast. */
  private direct = true

  private readonly files: ImageFile[]

  constructor (
    private readonly dir: string,
    files: readonly ImageFile[],
    private readonly checksum: ChecksumAlgorithm = 'sha256',
    private readonly wantSha256 = true,
    /** Told what is on disk as it gets there (a restore reading the files as they arrive). */
    private readonly observer?: WriteObserver
  ) {
    this.files = [...files]
  }

  /** Files of a later header, written after those listed so far. */
  add (files: readonly ImageFile[]): void {
    this.files.push(...files)
  }

  /** Takes `bytes` (copied: the caller may reuse them once this resolves). */
  async write (bytes: Uint8Array): Promise<void> {
    let at = 0
    while (at < bytes.byteLength) {
      const cur = this.current ?? await this.openNext()
      const room = cur.file.growing === true ? Infinity : cur.file.size - cur.written
      if (this.direct && cur.fh !== undefined && this.batchBytes === 0 && Math.min(room, bytes.byteLength - at) >= DIRECT_WRITE_BYTES) {
        at += this.writeDirect(cur, bytes.subarray(at, at + Math.min(room, bytes.byteLength - at)))
        if (cur.file.growing !== true && cur.written === cur.file.size) await this.closeCurrent(cur)
        continue
      }
      const take = Math.min(room, bytes.byteLength - at, WRITE_BATCH_BYTES - this.batchBytes)
      const piece = bytes.subarray(at, at + take)
      for (const h of cur.hashes) h.update(piece)
      this.batch ??= this.buffers.take()
      this.batch.set(piece, this.batchBytes)
      this.batchBytes += take
      cur.written += take
      at += take
      this.doneBytes += take
      if (cur.file.growing !== true && cur.written === cur.file.size) await this.closeCurrent(cur)
      else if (this.batchBytes >= WRITE_BATCH_BYTES) await this.flush(cur)
    }
  }

  /**
   * A large piece goes to the file at once, synchronously, from the caller's buffer: no copy into a
   * batch (the kernel copies it anyway), no thread-pool hop. Measured with bench:transfer --large
   * --direct on tmpfs: the receiver used 0.92-1.01 CPU-s per GiB against 1.13-1.25 batching. A
   * filesystem that makes a write wait (a disk throttling dirty pages) would stall the event loop,
   * so one slow write sends the rest of the transfer back to batched writes in the thread pool.
   */
  private writeDirect (cur: OpenFile, piece: Uint8Array): number {
    for (const h of cur.hashes) h.update(piece)
    const fd = (cur.fh as FileHandle).fd
    const start = performance.now()
    try {
      for (let at = 0; at < piece.byteLength;) {
        const n = writeSync(fd, piece, at, piece.byteLength - at, this.batchPosition + at)
        if (n === 0) throw new Error('the filesystem accepted no bytes')
        at += n
      }
    } catch (err) {
      throw fsError(err, cur.file, 'write')
    }
    if (performance.now() - start > SLOW_DIRECT_WRITE_MS) this.direct = false
    this.batchPosition += piece.byteLength
    cur.written += piece.byteLength
    this.doneBytes += piece.byteLength
    this.reportOnDisk(cur)
    return piece.byteLength
  }

  /** The growing file being written is complete at `size` bytes (its SIZE frame). */
  async endGrowing (size: number): Promise<void> {
    const cur = this.current ?? await this.openNext()
    if (cur.file.growing !== true) throw new ImageTransferError(`a file size arrived for ${cur.file.name}, which is not a growing file`, { code: 'protocol', file: cur.file.name })
    if (cur.written !== size) {
      throw new ImageIntegrityError(`${cur.file.name}: ${cur.written} bytes arrived, the sender says it has ${size}`, { file: cur.file.name })
    }
    await this.closeCurrent(cur)
  }

  /** Creates trailing empty files; fails if any file is still short. Returns the digests. */
  async finish (): Promise<readonly string[]> {
    while (this.index < this.files.length || this.current !== undefined) {
      const cur = this.current ?? await this.openNext()
      if (cur.file.growing === true) {
        throw new ImageTransferError(`${cur.file.name}: the data ended without the growing file's size`, { code: 'protocol', file: cur.file.name })
      }
      if (cur.written < cur.file.size) {
        throw new ImageIntegrityError(`${cur.file.name}: data ended after ${cur.written} of ${cur.file.size} bytes`, { file: cur.file.name })
      }
      await this.closeCurrent(cur)
    }
    return this.digests
  }

  /** Closes what is open and deletes every file this writer created. Never throws. */
  async cleanup (): Promise<void> {
    await this.settle()
    await this.current?.fh?.close().catch(() => {})
    this.current = undefined
    await Promise.all(this.created.map(async path => { await unlink(path).catch(() => {}) }))
    this.created.length = 0
  }

  private async openNext (): Promise<OpenFile> {
    const file = this.files[this.index]
    if (file === undefined) {
      throw new ImageIntegrityError(`received more image data than the ${this.doneBytes} bytes the header announced`, {})
    }
    this.index++
    const path = join(this.dir, file.name)
    let fh: FileHandle | undefined
    if (file.size > SMALL_FILE_BYTES || file.growing === true) {
      try {
        fh = await open(path, CREATE_FLAGS, 0o600)
      } catch (err) {
        throw createError(err, path, file)
      }
      this.created.push(path)
    }
    const hashes = [createFileChecksum(this.checksum)]
    if (this.wantSha256 && this.checksum !== 'sha256') hashes.push(createFileChecksum('sha256'))
    this.current = { fh, hashes, file, written: 0 }
    this.batchPosition = 0
    return this.current
  }

  private async closeCurrent (cur: OpenFile): Promise<void> {
    if (cur.fh === undefined) {
      this.writeSmall(cur)
    } else {
      await this.flush(cur)
      await this.settle()
      this.throwWriteError(cur)
      this.current = undefined
      try {
        await cur.fh.chmod(cur.file.mode & 0o777)
      } finally {
        await cur.fh.close()
      }
    }
    this.observer?.completed(cur.file.name, cur.written)
    const [check, sha256] = cur.hashes.map(h => h.digest())
    this.digests.push(check ?? '')
    if (this.checksum === 'sha256') this.sha256.push(check ?? '')
    else if (sha256 !== undefined) this.sha256.push(sha256)
  }

  /**
   * A small file, complete in the batch: created, written, chmodded and closed synchronously
   * (microseconds each, where four thread-pool hops per file cost a few ms of every migration).
   */
  private writeSmall (cur: OpenFile): void {
    const path = join(this.dir, cur.file.name)
    let fd: number
    try {
      fd = openSync(path, CREATE_FLAGS, 0o600)
    } catch (err) {
      throw createError(err, path, cur.file)
    }
    this.created.push(path)
    this.current = undefined
    try {
      const data = this.batch?.subarray(0, this.batchBytes) ?? new Uint8Array(0)
      for (let at = 0; at < data.byteLength;) {
        const n = writeSync(fd, data, at, data.byteLength - at, at)
        if (n === 0) throw new Error('the filesystem accepted no bytes')
        at += n
      }
      fchmodSync(fd, cur.file.mode & 0o777)
    } catch (err) {
      throw fsError(err, cur.file, 'write')
    } finally {
      closeSync(fd)
    }
    this.batchBytes = 0 // the batch buffer stays for the next file
  }

  /** Starts writing the gathered batch, waiting first if WRITES_IN_FLIGHT are still running. */
  private async flush (cur: OpenFile): Promise<void> {
    if (cur.fh === undefined) return // a small file is written whole, by writeSmall
    while (this.inFlight.size >= WRITES_IN_FLIGHT) await Promise.race(this.inFlight)
    this.throwWriteError(cur)
    const buf = this.batch
    if (this.batchBytes === 0 || buf === undefined) return
    const position = this.batchPosition
    const bufs = [buf.subarray(0, this.batchBytes)]
    this.batchPosition += this.batchBytes
    this.batch = undefined
    this.batchBytes = 0
    const fh = cur.fh
    this.pendingAt.add(position)
    const write: Promise<void> = writeAll(fh, bufs, position).then(() => {
      this.inFlight.delete(write)
      this.buffers.give(buf)
      this.pendingAt.delete(position)
      this.reportOnDisk(cur)
    }, (err: unknown) => {
      this.inFlight.delete(write)
      this.writeError ??= err
    })
    this.inFlight.add(write)
  }

  /** Tells the observer how much of `cur` is on disk: up to the first batch still being written. */
  private reportOnDisk (cur: OpenFile): void {
    if (this.observer === undefined) return
    let prefix = this.batchPosition
    for (const at of this.pendingAt) prefix = Math.min(prefix, at)
    this.observer.wrote(cur.file.name, prefix)
  }

  private async settle (): Promise<void> {
    await Promise.all(this.inFlight)
  }

  private throwWriteError (cur: OpenFile): void {
    if (this.writeError !== undefined) throw fsError(this.writeError, cur.file, 'write')
  }
}

const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW
/** Files up to this size (all of a dump's but its pages) are written in one go, synchronously. */
const SMALL_FILE_BYTES = 64 * 1024

function createError (err: unknown, path: string, file: ImageFile): ImageTransferError {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'EEXIST') return new ImageTransferError(`${path} already exists: refusing to overwrite it`, { code: 'exists', file: file.name, cause: err })
  return fsError(err, file, 'create')
}

async function writeAll (fh: FileHandle, bufs: Uint8Array[], position: number): Promise<void> {
  let pending = bufs
  let pos = position
  while (pending.length > 0) {
    const { bytesWritten } = await fh.writev(pending, pos)
    if (bytesWritten === 0) throw new Error('the filesystem accepted no bytes')
    pos += bytesWritten
    pending = dropBytes(pending, bytesWritten)
  }
}

/** What is left of `bufs` after the first `n` bytes were written (short writes are rare). */
function dropBytes (bufs: Uint8Array[], n: number): Uint8Array[] {
  let left = n
  let i = 0
  while (i < bufs.length && left >= (bufs[i]?.byteLength ?? 0)) left -= bufs[i++]?.byteLength ?? 0
  const rest = bufs.slice(i)
  const first = rest[0]
  if (first !== undefined && left > 0) rest[0] = first.subarray(left)
  return rest
}

function fsError (err: unknown, file: ImageFile, op: string): ImageTransferError {
  const e = err as NodeJS.ErrnoException
  const code = e.code === 'ENOSPC' || e.code === 'EDQUOT' ? 'no-space' : 'io'
  return new ImageTransferError(`cannot ${op} ${file.name}: ${e.message}`, { code, file: file.name, cause: err })
}
