/**
 * The receiving end of an image transfer: validate the header against the caps before touching the
 * disk, write the files (decompressing if asked), check every digest, answer, and on any failure
 * delete what was written and tell the sender why.
 */
import { mkdir, rmdir, statfs } from 'node:fs/promises'
import {
  FrameType, decodeCancel, decodeHeader, decodeSize, decodeTrailer, encodeResult, imageNameProblem
} from '../../protocol/images.js'
import { PeerMessageError } from '../../protocol/peer.js'
import { ImageIntegrityError, ImageTransferError, asTransferError } from './errors.js'
import { readFrames } from './frames.js'
import { ProgressMeter } from './progress.js'
import { ImageDirWriter } from './sink.js'
import { createZstdFilter, ZstdError } from './zstd.js'
import type { TransferObserver } from './arrivals.js'
import type { ImageFile, ImageHeader, ImageTrailer, ParsedFrame } from '../../protocol/images.js'
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
  /** Told of every header, every write and the outcome: a restore reading the files as they arrive. */
  readonly arrivals?: TransferObserver
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
    const sections = new Sections(await firstFrame(frames), opts)
    const first = sections.first
    destDir ??= (dest as (label: string | undefined) => string)(first.label)
    createdDir = await prepareDir(destDir, first, opts.checkFreeSpace ?? true)
    writer = new ImageDirWriter(destDir, first.files, first.checksum, opts.sha256 ?? true, opts.arrivals)
    opts.arrivals?.listed(first.files.map(f => f.name), first.continued !== true)
    const meter = new ProgressMeter(first.totalBytes, first.files.length, opts.onProgress, opts.progressIntervalMs)
    const { trailer, wireBytes, files } = await receiveData(frames, sections, writer, meter, opts, destDir)
    const digests = await writer.finish()
    verify(files, first.checksum, trailer, digests, wireBytes)
    const bytes = files.reduce((a, f) => a + f.size, 0)
    await channel.write(encodeResult({ ok: true, files: files.length, bytes }), opts.signal)
    await channel.closeWrite(opts.signal)
    meter.update(bytes, wireBytes, true)
    opts.arrivals?.verified()
    opts.logger?.debug({ destDir, files: files.length, bytes, ms: Math.round(meter.elapsedMs) }, 'image dir received')
    const images = files.map((f, i) => ({ name: f.name, size: f.size, ...(writer?.sha256[i] === undefined ? {} : { sha256: writer.sha256[i] }) }))
    return { files: files.length, bytes, wireBytes, compression: first.compression, elapsedMs: meter.elapsedMs, images }
  } catch (err) {
    const e = asTransferError(err, opts.signal, 'io', 'receiving images')
    opts.arrivals?.failed(e)
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
  const frame = first.value
  if (frame.kind === 'control' && frame.type === FrameType.cancel) throw cancelled(frame.payload)
  if (frame.kind !== 'control' || frame.type !== FrameType.header) {
    throw new ImageTransferError('the first frame is not an image header', { code: 'protocol' })
  }
  try {
    return decodeHeader(frame.payload)
  } catch (err) {
    if (err instanceof PeerMessageError) throw new ImageTransferError(err.message, { code: 'protocol', cause: err })
    throw err
  }
}

/**
 * Names, caps and duplicates: everything that can be refused before anything is written. `seen`,
 * `filesBefore` and `bytesBefore` carry what earlier sections of the same transfer listed and wrote.
 */
function checkHeader (header: ImageHeader, opts: ReceiveOptions, seen: Set<string>, filesBefore: number, bytesBefore: number): ImageHeader {
  const maxFiles = opts.maxFiles ?? DEFAULT_MAX_FILES
  if (filesBefore + header.files.length > maxFiles) {
    throw new ImageTransferError(`the image has ${filesBefore + header.files.length} files, over the limit of ${maxFiles}`, { code: 'too-many-files' })
  }
  if (bytesBefore + header.totalBytes > opts.maxTotalBytes) {
    throw new ImageTransferError(`the image has ${bytesBefore + header.totalBytes} bytes, over the limit of ${opts.maxTotalBytes}`, { code: 'too-large' })
  }
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
    await checkFree(destDir, header.totalBytes).catch(async (err: unknown) => {
      if (created !== undefined) await rmdir(created).catch(() => {})
      throw err
    })
  }
  return created
}

async function checkFree (destDir: string, bytes: number): Promise<void> {
  const fs = await statfs(destDir)
  const free = fs.bavail * fs.bsize
  if (bytes > free) throw new ImageTransferError(`the image needs ${bytes} bytes, ${destDir} has ${free} free`, { code: 'no-space' })
}

interface DataSink {
  write(bytes: Uint8Array): Promise<void>
  end(): Promise<void>
  destroy(): void
}

/** The sections of one transfer as they arrive: the files so far (with final sizes) and the header in force. */
class Sections {
  readonly files: ImageFile[]
  private readonly names = new Set<string>()
  /** A growing section whose SIZE frame arrived: only a HEADER may come next. */
  sized = false
  /** The header in force. */
  header: ImageHeader

  /** The first header, checked against the caps before anything is written. */
  constructor (readonly first: ImageHeader, opts: ReceiveOptions) {
    checkHeader(first, opts, this.names, 0, 0)
    this.header = first
    this.files = first.files.map(f => ({ ...f }))
  }

  get growing (): boolean { return this.header.continued === true }

  /** A later header, checked against the caps with everything before it. */
  next (header: ImageHeader, opts: ReceiveOptions, doneBytes: number): void {
    if (!this.growing || !this.sized) throw new ImageTransferError('an image header arrived in the middle of a section', { code: 'protocol' })
    if (header.checksum !== this.first.checksum || header.compression !== this.first.compression || header.label !== this.first.label) {
      throw new ImageTransferError('a later image header changes the checksum, compression or label', { code: 'protocol' })
    }
    checkHeader(header, opts, this.names, this.files.length, doneBytes)
    this.files.push(...header.files.map(f => ({ ...f })))
    this.header = header
    this.sized = false
  }
}

async function receiveData (frames: Frames, sections: Sections, writer: ImageDirWriter, meter: ProgressMeter, opts: ReceiveOptions, destDir: string): Promise<{ trailer: ImageTrailer, wireBytes: number, files: ImageFile[] }> {
  const sink = sections.first.compression === 'zstd' ? decompressingSink(writer, opts.zstd) : plainSink(writer)
  let wireBytes = 0
  try {
    for (;;) {
      opts.signal?.throwIfAborted()
      const next = await frames.next()
      if (next.done === true) throw new ImageTransferError('the sender closed the channel before the trailer', { code: 'channel' })
      const frame = next.value
      if (frame.kind === 'data') {
        if (sections.sized) throw new ImageTransferError('image data arrived after a growing file\'s size', { code: 'protocol' })
        wireBytes += frame.bytes.byteLength
        await sink.write(frame.bytes)
        if (sections.growing) checkGrowth(writer.doneBytes, opts.maxTotalBytes, meter)
        meter.update(writer.doneBytes, wireBytes)
      } else if (frame.type === FrameType.size) {
        if (!sections.growing || sections.sized) throw new ImageTransferError('a file size arrived outside a growing section', { code: 'protocol' })
        const { size } = decodeControl(() => decodeSize(frame.payload))
        await writer.endGrowing(size)
        const file = sections.files[sections.files.length - 1]
        if (file !== undefined) file.size = size
        sections.sized = true
      } else if (frame.type === FrameType.header) {
        const header = decodeControl(() => decodeHeader(frame.payload))
        sections.next(header, opts, writer.doneBytes)
        if (opts.checkFreeSpace ?? true) await checkFree(destDir, header.totalBytes)
        writer.add(header.files)
        opts.arrivals?.listed(header.files.map(f => f.name), header.continued !== true)
        meter.add(header.files.length, header.totalBytes)
      } else if (frame.type === FrameType.trailer) {
        if (sections.growing) throw new ImageTransferError('the trailer arrived inside a growing section', { code: 'protocol' })
        await sink.end()
        return { trailer: decodeControl(() => decodeTrailer(frame.payload)), wireBytes, files: sections.files.map(({ growing: _, ...f }) => f) }
      } else if (frame.type === FrameType.cancel) {
        throw cancelled(frame.payload)
      } else {
        throw new ImageTransferError(`unexpected frame type ${frame.type} during image data`, { code: 'protocol' })
      }
    }
  } finally {
    sink.destroy()
  }
}

/** A growing file counts against the cap as it arrives. */
function checkGrowth (doneBytes: number, maxTotalBytes: number, meter: ProgressMeter): void {
  if (doneBytes > maxTotalBytes) {
    throw new ImageTransferError(`the image has over ${maxTotalBytes} bytes, the limit`, { code: 'too-large' })
  }
  meter.atLeast(doneBytes)
}

/** The sender's CANCEL, as the error this end fails with. */
function cancelled (payload: Uint8Array): ImageTransferError {
  const c = decodeControl(() => decodeCancel(payload))
  return new ImageTransferError(`the sender cancelled the transfer: ${c.message}`, { code: 'cancelled', file: c.file, remote: true })
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

function verify (files: readonly ImageFile[], checksum: ImageHeader['checksum'], trailer: ImageTrailer, digests: readonly string[], wireBytes: number): void {
  if (trailer.digests.length !== files.length) {
    throw new ImageTransferError(`the trailer has ${trailer.digests.length} digests for ${files.length} files`, { code: 'protocol' })
  }
  if (trailer.wireBytes !== wireBytes) {
    throw new ImageIntegrityError(`the sender wrote ${trailer.wireBytes} data bytes but ${wireBytes} arrived`, {})
  }
  files.forEach((file, i) => {
    if (digests[i] !== trailer.digests[i]) {
      throw new ImageIntegrityError(`${file.name}: ${checksum} mismatch (sender ${trailer.digests[i] ?? '?'}, received ${digests[i] ?? '?'})`, { file: file.name })
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
