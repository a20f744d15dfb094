/**
 * The receiving end of an image transfer: validate the header against the caps before touching the
 * disk, write the files (decompressing if asked), check every digest, answer, and on any failure
 * delete what was written and tell the sender why.
 */
import { mkdir, rmdir, statfs } from 'node:fs/promises'
import {
  FrameType, decodeCancel, decodeHeader, decodeTrailer, encodeResult, imageNameProblem
} from '../../protocol/images.js'
import { PeerMessageError } from '../../protocol/peer.js'
import { ImageIntegrityError, ImageTransferError, asTransferError } from './errors.js'
import { readFrames } from './frames.js'
import { ProgressMeter } from './progress.js'
import { ImageDirWriter } from './sink.js'
import { createZstdFilter, ZstdError } from './zstd.js'
import type { ImageHeader, ImageTrailer, ParsedFrame } from '../../protocol/images.js'
import type { ByteChannel } from '../ports.js'
import type { ProgressListener, TransferLogger } from './progress.js'
import type { TransferSummary } from './send.js'
import type { ZstdOptions } from './zstd.js'

export interface ReceiveOptions {
  /** Largest image (sum of file sizes, uncompressed) accepted, in bytes. */
  readonly maxTotalBytes: number
  /** Most files accepted (default 10,000; a CRIU dump of one job has tens). */
  readonly maxFiles?: number
  /** Refuse an image larger than the free space of destDir's filesystem (default true). */
  readonly checkFreeSpace?: boolean
  readonly signal?: AbortSignal
  readonly onProgress?: ProgressListener
  /** Least time between two progress reports (default 100 ms; the last one always comes). */
  readonly progressIntervalMs?: number
  readonly logger?: TransferLogger
  readonly zstd?: ZstdOptions
  /**
   * Also compute each file's sha256 when the sender checks with a cheaper checksum (default true):
   * for a caller that compares or re-checks the content by its sha256. Costs ~0.55 s of a core per GiB.
   */
  readonly sha256?: boolean
}

export interface ReceiveSummary extends TransferSummary {
  /** The files as the header listed them, with their sha256 digests (hex) when computed (see ReceiveOptions.sha256). */
  readonly images: ReadonlyArray<{ readonly name: string, readonly size: number, readonly sha256?: string }>
}

export const DEFAULT_MAX_FILES = 10_000
/** How long a refusing receiver waits for the sender to stop before resetting the channel. */
const REFUSE_GRACE_MS = 5000

type Frames = AsyncIterator<ParsedFrame>

/** Where to write images: a dir, or a function of the header's label (may throw to refuse them). */
export type ImageDestination = string | ((label: string | undefined) => string)

/**
 * Receives one image directory into `destDir` (created if missing; files must not exist there).
 * Resolves after every file's size and checksum matched and the sender was told so. On failure,
 * removes every file it created (and destDir if it created it), tells the sender why, and rejects
 * with ImageTransferError / ImageIntegrityError naming the file and the reason.
 */
export async function receiveImageDir (channel: ByteChannel, dest: ImageDestination, opts: ReceiveOptions): Promise<ReceiveSummary> {
  // Reused read buffers: every DATA piece is copied (written, hashed, decompressed) before the next.
  const frames = readFrames(channel, opts.signal, { reuse: true })
  let writer: ImageDirWriter | undefined
  let createdDir: string | undefined
  let destDir = typeof dest === 'string' ? dest : undefined
  try {
    const header = checkHeader(await firstFrame(frames), opts)
    destDir ??= (dest as (label: string | undefined) => string)(header.label)
    createdDir = await prepareDir(destDir, header, opts.checkFreeSpace ?? true)
    writer = new ImageDirWriter(destDir, header.files, header.checksum, opts.sha256 ?? true)
    const meter = new ProgressMeter(header.totalBytes, header.files.length, opts.onProgress, opts.progressIntervalMs)
    const { trailer, wireBytes } = await receiveData(frames, header, writer, meter, opts)
    const digests = await writer.finish()
    verify(header, trailer, digests, wireBytes)
    await channel.write(encodeResult({ ok: true, files: header.files.length, bytes: header.totalBytes }), opts.signal)
    await channel.closeWrite(opts.signal)
    meter.update(header.totalBytes, wireBytes, true)
    opts.logger?.debug({ destDir, files: header.files.length, bytes: header.totalBytes, ms: Math.round(meter.elapsedMs) }, 'image dir received')
    const images = header.files.map((f, i) => ({ name: f.name, size: f.size, ...(writer?.sha256[i] === undefined ? {} : { sha256: writer.sha256[i] }) }))
    return { files: header.files.length, bytes: header.totalBytes, wireBytes, compression: header.compression, elapsedMs: meter.elapsedMs, images }
  } catch (err) {
    const e = asTransferError(err, opts.signal, 'io', 'receiving images')
    await writer?.cleanup()
    if (createdDir !== undefined) await rmdir(createdDir).catch(() => {})
    await refuse(channel, frames, e)
    opts.logger?.warn({ destDir, err: e.message, code: e.code, file: e.file }, 'image dir receive failed')
    throw e
  }
}

async function firstFrame (frames: Frames): Promise<ImageHeader> {
  const first = await frames.next()
  if (first.done === true) throw new ImageTransferError('the sender closed the channel before the header', { code: 'channel' })
  if (first.value.kind !== 'control' || first.value.type !== FrameType.header) {
    throw new ImageTransferError('the first frame is not an image header', { code: 'protocol' })
  }
  try {
    return decodeHeader(first.value.payload)
  } catch (err) {
    if (err instanceof PeerMessageError) throw new ImageTransferError(err.message, { code: 'protocol', cause: err })
    throw err
  }
}

/** Names, caps and duplicates: everything that can be refused before anything is written. */
function checkHeader (header: ImageHeader, opts: ReceiveOptions): ImageHeader {
  const maxFiles = opts.maxFiles ?? DEFAULT_MAX_FILES
  if (header.files.length > maxFiles) {
    throw new ImageTransferError(`the image has ${header.files.length} files, over the limit of ${maxFiles}`, { code: 'too-many-files' })
  }
  if (header.totalBytes > opts.maxTotalBytes) {
    throw new ImageTransferError(`the image has ${header.totalBytes} bytes, over the limit of ${opts.maxTotalBytes}`, { code: 'too-large' })
  }
  const seen = new Set<string>()
  for (const { name } of header.files) {
    const problem = imageNameProblem(name)
    if (problem !== undefined) throw new ImageTransferError(`image file name ${JSON.stringify(name)} ${problem}`, { code: 'bad-name', file: name })
    if (seen.has(name)) throw new ImageTransferError(`image file ${name} is listed twice`, { code: 'bad-name', file: name })
    seen.add(name)
  }
  return header
}

/** Creates destDir if needed (returning it, so a failure can remove it) and checks free space. */
async function prepareDir (destDir: string, header: ImageHeader, checkFreeSpace: boolean): Promise<string | undefined> {
  const created = await mkdir(destDir, { recursive: true, mode: 0o700 }) === undefined ? undefined : destDir
  if (checkFreeSpace) {
    const fs = await statfs(destDir)
    const free = fs.bavail * fs.bsize
    if (header.totalBytes > free) {
      if (created !== undefined) await rmdir(created).catch(() => {})
      throw new ImageTransferError(`the image needs ${header.totalBytes} bytes, ${destDir} has ${free} free`, { code: 'no-space' })
    }
  }
  return created
}

interface DataSink {
  write(bytes: Uint8Array): Promise<void>
  end(): Promise<void>
  destroy(): void
}

async function receiveData (frames: Frames, header: ImageHeader, writer: ImageDirWriter, meter: ProgressMeter, opts: ReceiveOptions): Promise<{ trailer: ImageTrailer, wireBytes: number }> {
  const sink = header.compression === 'zstd' ? decompressingSink(writer, opts.zstd) : plainSink(writer)
  let wireBytes = 0
  try {
    for (;;) {
      opts.signal?.throwIfAborted()
      const next = await frames.next()
      if (next.done === true) throw new ImageTransferError('the sender closed the channel before the trailer', { code: 'channel' })
      const frame = next.value
      if (frame.kind === 'data') {
        wireBytes += frame.bytes.byteLength
        await sink.write(frame.bytes)
        meter.update(writer.doneBytes, wireBytes)
      } else if (frame.type === FrameType.trailer) {
        await sink.end()
        return { trailer: decodeControl(() => decodeTrailer(frame.payload)), wireBytes }
      } else if (frame.type === FrameType.cancel) {
        const c = decodeControl(() => decodeCancel(frame.payload))
        throw new ImageTransferError(`the sender cancelled the transfer: ${c.message}`, { code: 'cancelled', file: c.file, remote: true })
      } else {
        throw new ImageTransferError(`unexpected frame type ${frame.type} during image data`, { code: 'protocol' })
      }
    }
  } finally {
    sink.destroy()
  }
}

function decodeControl<T> (decode: () => T): T {
  try {
    return decode()
  } catch (err) {
    if (err instanceof PeerMessageError) throw new ImageTransferError(err.message, { code: 'protocol', cause: err })
    throw err
  }
}

function plainSink (writer: ImageDirWriter): DataSink {
  return { write: async (b) => { await writer.write(b) }, end: async () => {}, destroy: () => {} }
}

/**
 * zstd between the frames and the writer. Decompressed output beyond the header's sizes is refused
 * by the writer, so a small compressed stream cannot expand past the cap (no zip bomb).
 */
function decompressingSink (writer: ImageDirWriter, zstd?: ZstdOptions): DataSink {
  const filter = createZstdFilter('decompress', zstd)
  let failure: unknown
  const pump = (async () => {
    for await (const out of filter.output) await writer.write(out)
  })().catch((err: unknown) => {
    failure = err instanceof ZstdError
      ? new ImageIntegrityError(`compressed image data is corrupt: ${err.message}`, { cause: err })
      : err
    filter.destroy()
  })
  const check = (): void => { if (failure !== undefined) throw failure }
  return {
    write: async (bytes) => {
      check()
      // A copy: zstd may still hold the chunk after write() resolved, and the channel reuses it.
      await Promise.race([filter.write(Buffer.from(bytes)), pump.then(check)]).catch((err: unknown) => { check(); throw err })
    },
    end: async () => {
      check()
      filter.end()
      await pump
      check()
    },
    destroy: () => { filter.destroy() }
  }
}

function verify (header: ImageHeader, trailer: ImageTrailer, digests: readonly string[], wireBytes: number): void {
  if (trailer.digests.length !== header.files.length) {
    throw new ImageTransferError(`the trailer has ${trailer.digests.length} digests for ${header.files.length} files`, { code: 'protocol' })
  }
  if (trailer.wireBytes !== wireBytes) {
    throw new ImageIntegrityError(`the sender wrote ${trailer.wireBytes} data bytes but ${wireBytes} arrived`, {})
  }
  header.files.forEach((file, i) => {
    if (digests[i] !== trailer.digests[i]) {
      throw new ImageIntegrityError(`${file.name}: ${header.checksum} mismatch (sender ${trailer.digests[i] ?? '?'}, received ${digests[i] ?? '?'})`, { file: file.name })
    }
  })
}

/**
 * Tells the sender why (unless the channel is gone or the sender itself gave up), then lets it
 * stop on its own for a moment before resetting the channel.
 */
async function refuse (channel: ByteChannel, frames: Frames, err: ImageTransferError): Promise<void> {
  if (err.code === 'channel' || err.code === 'aborted') {
    channel.abort(err)
    return
  }
  const grace = AbortSignal.timeout(REFUSE_GRACE_MS)
  try {
    const failure = { name: err.name, code: err.code, message: err.message.slice(0, 8000), file: err.file }
    await channel.write(encodeResult({ ok: false, failure }), grace)
    await channel.closeWrite(grace)
    await drain(frames, grace)
  } catch {
    // Whatever happens now, the reset below ends it.
  }
  channel.abort(err)
}

async function drain (frames: Frames, grace: AbortSignal): Promise<void> {
  const timedOut = new Promise<void>(resolve => { grace.addEventListener('abort', () => { resolve() }) })
  for (;;) {
    const next = await Promise.race([frames.next(), timedOut.then(() => ({ done: true as const, value: undefined }))])
    if (next.done === true) return
  }
}
