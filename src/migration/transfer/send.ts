/** The sending end of an image transfer: header, DATA frames (optionally zstd), trailer, result. */
import {
  DATA_CHUNK_BYTES, FRAME_HEADER_BYTES, FrameType, IMAGES_WIRE_VERSION, decodeResult, encodeCancel, encodeHeader,
  encodeTrailer, writeFrameHeader
} from '../../protocol/images.js'
import { createFileChecksum } from './checksum.js'
import { ImageTransferError, asTransferError, remoteTransferError } from './errors.js'
import { checkFollowed, sendGrowingFiles } from './follow.js'
import { readFrames } from './frames.js'
import { ProgressMeter } from './progress.js'
import { listImageDir, readImageData } from './source.js'
import { createZstdFilter } from './zstd.js'
import type { FileChecksum } from './checksum.js'
import type { FollowedFile, FollowOptions } from './follow.js'
import type { ChecksumAlgorithm, Compression, ImageFile, ImageHeader, ImageResult } from '../../protocol/images.js'
import type { ByteChannel } from '../ports.js'
import type { ProgressListener, TransferLogger } from './progress.js'
import type { DataChunk } from './source.js'
import type { ZstdOptions } from './zstd.js'

export interface SendOptions {
  /** 'none' (default) or 'zstd': zstd pays only on links slower than it compresses (see ../transfer.ts). */
  readonly compress?: Compression
  readonly zstd?: ZstdOptions
  /**
   * The per-file check the receiver compares (default 'sha256'). 'crc32' is ~8x cheaper and enough
   * over an authenticated channel when nobody needs the content's sha256 (see ./checksum.ts).
   */
  readonly checksum?: ChecksumAlgorithm
  readonly signal?: AbortSignal
  readonly onProgress?: ProgressListener
  /** Least time between two progress reports (default 100 ms; the last one always comes). */
  readonly progressIntervalMs?: number
  readonly logger?: TransferLogger
  /** DATA payload size in bytes (default 1 MiB). */
  readonly chunkBytes?: number
  /** Names the images for the receiver (the header's `label`), e.g. when it expects several at once. */
  readonly label?: string
  /** Files of the dir not to send (e.g. logs a process still writes). */
  readonly skip?: (name: string) => boolean
  /**
   * The dir is still being written: send the files `follow.match` names as they grow, and the rest
   * once `follow.done` resolved (see ./follow.ts). With compression, everything waits for `done`.
   */
  readonly follow?: FollowOptions
}

/** What a finished transfer moved. */
export interface TransferSummary {
  readonly files: number
  /** Image bytes (uncompressed). */
  readonly bytes: number
  /** DATA payload bytes on the wire. */
  readonly wireBytes: number
  readonly compression: Compression
  readonly elapsedMs: number
  /** Sender: image bytes sent before `follow.done` resolved, i.e. while the dir was still written (0 without `follow`). */
  readonly earlyBytes?: number
}

/** How long a cancelled sender waits for the receiver to acknowledge before resetting. */
const CANCEL_GRACE_MS = 2000

/**
 * Sends the regular files of the flat directory `dir` over `channel` and resolves once the
 * receiver has checked every digest and answered ok. Rejects with ImageTransferError (or
 * ImageIntegrityError, with `remote` set when the receiver found the problem). Does not close or
 * release the channel on success beyond closing its write side; aborts it on failure.
 */
export async function sendImageDir (channel: ByteChannel, dir: string, opts: SendOptions = {}): Promise<TransferSummary> {
  const compression = opts.compress ?? 'none'
  const checksum = opts.checksum ?? 'sha256'
  const stop = new AbortController()
  const signal = opts.signal === undefined ? stop.signal : AbortSignal.any([opts.signal, stop.signal])
  const result = watchResult(channel, signal, stop)
  result.catch(() => {}) // handled where it is awaited; this only keeps an early failure from being "unhandled"
  const meter = new ProgressMeter(0, 0, opts.onProgress, opts.progressIntervalMs)
  const moved = { bytes: 0 }
  try {
    let earlyBytes = 0
    opts.follow?.done.then(() => { earlyBytes = moved.bytes }, () => {})
    const followed = await sendFollowed(channel, dir, { compression, checksum }, meter, moved, signal, opts)
    const sentEarly = new Set(followed.map(f => f.file.name))
    const files = await listImageDir(dir, name => sentEarly.has(name) || opts.skip?.(name) === true)
    const header: ImageHeader = {
      v: IMAGES_WIRE_VERSION, compression, checksum, files, totalBytes: files.reduce((a, f) => a + f.size, 0),
      ...(opts.label === undefined ? {} : { label: opts.label })
    }
    meter.add(followed.length + header.files.length, header.totalBytes)
    await channel.write(encodeHeader(header), signal)
    const wireBytes = await sendData(channel, dir, header, followed, meter, moved, signal, opts)
    await channel.closeWrite(signal)
    const answer = await result
    if (answer === undefined) throw new ImageTransferError('the receiver closed the channel without a result', { code: 'channel' })
    if (!answer.ok) throw remoteTransferError(answer.failure, 'receiver refused the images')
    meter.update(moved.bytes, wireBytes, true)
    const count = followed.length + header.files.length
    opts.logger?.debug({ dir, files: count, bytes: moved.bytes, wireBytes, ms: Math.round(meter.elapsedMs) }, 'image dir sent')
    return { files: count, bytes: moved.bytes, wireBytes, compression, elapsedMs: meter.elapsedMs, earlyBytes }
  } catch (err) {
    const e = stop.signal.aborted ? stop.signal.reason as ImageTransferError : asTransferError(err, opts.signal, 'io', 'sending images')
    await giveUp(channel, e, result, opts.signal)
    opts.logger?.warn({ dir, err: e.message, code: e.code }, 'image dir send failed')
    throw e
  }
}

/** The growing sections (none without `follow`); with compression, only the wait for the writer. */
async function sendFollowed (channel: ByteChannel, dir: string, { compression, checksum }: { compression: Compression, checksum: ChecksumAlgorithm }, meter: ProgressMeter, moved: { bytes: number }, signal: AbortSignal, opts: SendOptions): Promise<FollowedFile[]> {
  const follow = opts.follow
  if (follow === undefined) return []
  if (compression !== 'none') {
    await follow.done.catch((err: unknown) => { throw new ImageTransferError(`the images' writer failed: ${(err as Error).message}`, { code: 'cancelled', cause: err }) })
    return []
  }
  const ctx = { channel, dir, checksum, label: opts.label, chunkBytes: opts.chunkBytes ?? DATA_CHUNK_BYTES, reuse: channel.copiesOnWrite === true, meter, signal, moved }
  return await sendGrowingFiles(ctx, follow)
}

/**
 * Reads the receiver's answer concurrently with sending, so a refusal stops the sender at once
 * (through `stop`) instead of after the whole image went over the wire.
 */
async function watchResult (channel: ByteChannel, signal: AbortSignal, stop: AbortController): Promise<ImageResult | undefined> {
  const p = (async () => {
    for await (const frame of readFrames(channel, signal)) {
      if (frame.kind !== 'control' || frame.type !== FrameType.result) {
        throw new ImageTransferError(`unexpected frame from the receiver (type ${frame.kind === 'data' ? FrameType.data : frame.type})`, { code: 'protocol' })
      }
      const answer = decodeResult(frame.payload)
      if (!answer.ok) stop.abort(remoteTransferError(answer.failure, 'receiver refused the images'))
      return answer
    }
    return undefined
  })()
  p.catch((err: unknown) => {
    if (!stop.signal.aborted && !signal.aborted) stop.abort(asTransferError(err, undefined, 'channel', 'image channel'))
  })
  return await p
}

/** Cancels with a reason the receiver can report, unless the channel itself is gone. */
async function giveUp (channel: ByteChannel, err: ImageTransferError, result: Promise<unknown>, signal?: AbortSignal): Promise<void> {
  if (err.remote || err.code === 'channel' || err.code === 'aborted' || signal?.aborted === true) {
    channel.abort(err)
    return
  }
  try {
    const grace = AbortSignal.timeout(CANCEL_GRACE_MS)
    await channel.write(encodeCancel({ name: err.name, code: err.code, message: err.message, file: err.file }), grace)
    await channel.closeWrite(grace)
    await Promise.race([result, new Promise(resolve => { grace.addEventListener('abort', resolve) })])
  } catch {
    // The receiver could not be told; the reset below is all it gets.
  }
  channel.abort(err)
}

/** The last section's data and the trailer (whose digests cover the growing sections too). */
async function sendData (channel: ByteChannel, dir: string, header: ImageHeader, followed: readonly FollowedFile[], meter: ProgressMeter, moved: { bytes: number }, signal: AbortSignal, opts: SendOptions): Promise<number> {
  const hashes = new FileHashes(header.files, header.checksum)
  const chunks = readImageData(dir, header.files, opts.chunkBytes ?? DATA_CHUNK_BYTES, signal)
  const base = moved.bytes // growing sections are never compressed: their wire bytes are their bytes
  const wire = header.compression === 'zstd'
    ? await sendCompressed(channel, chunks, hashes, meter, moved, signal, opts)
    : await sendPlain(channel, chunks, hashes, meter, moved, signal, channel.copiesOnWrite === true)
  checkFollowed(dir, followed)
  const wireBytes = base + wire
  await channel.write(encodeTrailer({ digests: [...followed.map(f => f.digest), ...hashes.digests()], wireBytes }), signal)
  return wireBytes
}

/** Frames of files up to this size are gathered into one write: a dump's ~25 small images. */
const GATHER_BYTES = 64 * 1024

/**
 * `reuse`: the channel is done with a chunk once its write settled, so its buffer is read into
 * again. Frames of small files go out together (`Gathered`): a write per 100-byte image cost a
 * few ms of every migration's downtime here, in event-loop turns and records.
 */
async function sendPlain (channel: ByteChannel, chunks: AsyncIterable<DataChunk>, hashes: FileHashes, meter: ProgressMeter, moved: { bytes: number }, signal: AbortSignal, reuse: boolean): Promise<number> {
  let done = 0
  const gathered = new Gathered(GATHER_BYTES)
  for await (const chunk of chunks) {
    hashes.update(chunk.file, chunk.body)
    writeFrameHeader(chunk.frame, FrameType.data, chunk.body.byteLength)
    if (!gathered.add(chunk.frame)) {
      await gathered.flush(channel, signal)
      if (!gathered.add(chunk.frame)) await channel.write(chunk.frame, signal) // a large one
    }
    if (reuse || gathered.holds(chunk.frame)) chunk.release()
    done += chunk.body.byteLength
    moved.bytes += chunk.body.byteLength
    meter.update(moved.bytes, moved.bytes)
  }
  await gathered.flush(channel, signal)
  return done
}

/** Small frames copied together into one buffer, written as one. */
class Gathered {
  private buf: Buffer | undefined
  private fill = 0
  private last: Uint8Array | undefined

  constructor (private readonly size: number) {}

  /** Copies `frame` in if it is small and fits; false: the caller writes it itself (after `flush`). */
  add (frame: Uint8Array): boolean {
    this.last = undefined
    if (frame.byteLength > this.size / 4) return false
    this.buf ??= Buffer.allocUnsafe(this.size)
    if (this.fill + frame.byteLength > this.size) return false
    this.buf.set(frame, this.fill)
    this.fill += frame.byteLength
    this.last = frame
    return true
  }

  /** Whether the last frame added was copied (its buffer is free at once). */
  holds (frame: Uint8Array): boolean { return this.last === frame }

  async flush (channel: ByteChannel, signal: AbortSignal): Promise<void> {
    if (this.buf === undefined || this.fill === 0) return
    const out = this.buf.subarray(0, this.fill)
    this.buf = undefined // the channel may keep it (copiesOnWrite false)
    this.fill = 0
    await channel.write(out, signal)
  }
}

/** Feeds the files into zstd and, concurrently, its output into DATA frames of chunkBytes. */
async function sendCompressed (channel: ByteChannel, chunks: AsyncIterable<DataChunk>, hashes: FileHashes, meter: ProgressMeter, moved: { bytes: number }, signal: AbortSignal, opts: SendOptions): Promise<number> {
  const filter = createZstdFilter('compress', opts.zstd)
  let wire = 0
  const feed = async (): Promise<void> => {
    for await (const chunk of chunks) {
      hashes.update(chunk.file, chunk.body)
      await filter.write(chunk.body)
      moved.bytes += chunk.body.byteLength
      meter.update(moved.bytes, wire)
    }
    filter.end()
  }
  const frames = new FrameBuilder(opts.chunkBytes ?? DATA_CHUNK_BYTES, async (frame, n) => {
    await channel.write(frame, signal)
    wire += n
  })
  const drain = async (): Promise<void> => {
    for await (const out of filter.output) await frames.add(out)
    await frames.flush()
  }
  try {
    await Promise.all([feed(), drain()])
    return wire
  } catch (err) {
    throw asTransferError(err, signal, 'io', 'compressing images')
  } finally {
    filter.destroy()
  }
}

/** Gathers small pieces (zstd output) into full DATA frames. */
class FrameBuilder {
  private frame: Buffer
  private fill = 0

  constructor (private readonly size: number, private readonly emit: (frame: Uint8Array, payload: number) => Promise<void>) {
    this.frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + size)
  }

  async add (bytes: Uint8Array): Promise<void> {
    let at = 0
    while (at < bytes.byteLength) {
      const n = Math.min(this.size - this.fill, bytes.byteLength - at)
      this.frame.set(bytes.subarray(at, at + n), FRAME_HEADER_BYTES + this.fill)
      this.fill += n
      at += n
      if (this.fill === this.size) await this.flush()
    }
  }

  async flush (): Promise<void> {
    if (this.fill === 0) return
    const frame = this.frame.subarray(0, FRAME_HEADER_BYTES + this.fill)
    writeFrameHeader(frame, FrameType.data, this.fill)
    const n = this.fill
    this.frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + this.size)
    this.fill = 0
    await this.emit(frame, n)
  }
}

/** One checksum per file, over its content; an empty file's digest is that of no bytes. */
class FileHashes {
  private readonly hashes: Array<FileChecksum | undefined>

  constructor (files: readonly ImageFile[], private readonly algorithm: ChecksumAlgorithm) {
    this.hashes = files.map(() => undefined)
  }

  update (file: number, bytes: Uint8Array): void {
    let h = this.hashes[file]
    if (h === undefined) {
      h = createFileChecksum(this.algorithm)
      this.hashes[file] = h
    }
    h.update(bytes)
  }

  digests (): string[] {
    return this.hashes.map(h => (h ?? createFileChecksum(this.algorithm)).digest())
  }
}
