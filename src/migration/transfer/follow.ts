/**
 * The sending end of growing sections (see src/protocol/images.ts): files a writer still appends to
 * when the transfer starts, sent as they grow, so the transfer overlaps their writing. A migration
 * follows CRIU's pages-*.img while CRIU dumps: the dump and the transfer then share the time in
 * which the job is frozen instead of taking it in turn.
 *
 * A followed file is complete once its writer closed it (inotify IN_CLOSE_WRITE) or once `done`
 * resolved; only then is its size final and sent. Appending writers only (CRIU appends to its page
 * files): a file that changed size after it was sent fails the send at the end ('source-changed');
 * one rewritten in place at the same size is not noticed.
 */
import { constants, lstatSync, readdirSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ClosedFilesWatch } from '../../native/inotify.js'
import { FRAME_HEADER_BYTES, FrameType, IMAGES_WIRE_VERSION, encodeHeader, encodeSize, writeFrameHeader } from '../../protocol/images.js'
import { createFileChecksum } from './checksum.js'
import { ImageTransferError } from './errors.js'
import { ReadBufferPool, readFileChunks } from './source.js'
import type { FileHandle } from 'node:fs/promises'
import type { ChecksumAlgorithm, ImageFile } from '../../protocol/images.js'
import type { ByteChannel } from '../ports.js'
import type { ProgressMeter } from './progress.js'
import type { FileChecksum } from './checksum.js'

export interface FollowOptions {
  /** Files a writer may still be appending to when the send starts (a migration: CRIU's pages-*.img). */
  readonly match: (name: string) => boolean
  /**
   * Settles once the writer is done: resolved, the followed files are complete and the rest of the
   * dir is final (the send goes on with it); rejected, the send is given up with that reason.
   */
  readonly done: Promise<unknown>
  /** How often the dir and a followed file are looked at while the writer works (default 2 ms). */
  readonly pollMs?: number
}

/** A file sent in a growing section, with its final size, and its digest. */
export interface FollowedFile {
  readonly file: ImageFile
  readonly digest: string
}

export interface FollowContext {
  readonly channel: ByteChannel
  readonly dir: string
  readonly checksum: ChecksumAlgorithm
  readonly label: string | undefined
  readonly chunkBytes: number
  /** The channel is done with a chunk once its write settled (see send.ts). */
  readonly reuse: boolean
  readonly meter: ProgressMeter
  readonly signal: AbortSignal
  /** Image bytes sent so far (all sections), updated as data goes. */
  readonly moved: { bytes: number }
}

/** Where the writer stands; `settled` resolves (never rejects) when `done` settles. */
class WriterState {
  resolved = false
  failure: unknown
  readonly settled: Promise<void>

  constructor (done: Promise<unknown>) {
    this.settled = done.then(() => { this.resolved = true }, (err: unknown) => { this.failure = err ?? new Error('the writer failed') })
  }

  /** True once the writer is done; throws if it failed. */
  check (): boolean {
    if (this.failure !== undefined) {
      throw new ImageTransferError(`the images' writer failed: ${(this.failure as Error).message ?? String(this.failure)}`, { code: 'cancelled', cause: this.failure })
    }
    return this.resolved
  }

  async pause (ms: number, signal: AbortSignal): Promise<void> {
    await Promise.race([sleep(ms, undefined, { signal }), this.settled])
  }
}

/**
 * Sends every matching file as its own growing section, in name order, while the writer works;
 * returns once `done` resolved (files matching only then go with the rest of the dir).
 * Without inotify, a followed file is complete only when `done` resolves.
 */
export async function sendGrowingFiles (ctx: FollowContext, follow: FollowOptions): Promise<FollowedFile[]> {
  const state = new WriterState(follow.done)
  const pollMs = follow.pollMs ?? 2
  const watch = watchClosed(ctx.dir)
  const sent: FollowedFile[] = []
  try {
    for (;;) {
      const name = await nextGrowing(ctx, follow.match, new Set(sent.map(s => s.file.name)), state, pollMs)
      if (name === undefined) return sent
      sent.push(await sendGrowing(ctx, name, state, watch, pollMs, sent.length))
    }
  } finally {
    watch?.close()
  }
}

function watchClosed (dir: string): ClosedFilesWatch | undefined {
  try {
    return new ClosedFilesWatch(dir)
  } catch {
    return undefined // no inotify (or out of watches): files are complete when the writer is
  }
}

/** Lowest-numbered matching file not sent yet, or undefined once the writer is done. */
async function nextGrowing (ctx: FollowContext, match: (name: string) => boolean, sent: ReadonlySet<string>, state: WriterState, pollMs: number): Promise<string | undefined> {
  for (;;) {
    ctx.signal.throwIfAborted()
    if (state.check()) return undefined
    const names = readdirSync(ctx.dir).filter(n => match(n) && !sent.has(n)).sort(byNumber)
    if (names[0] !== undefined) return names[0]
    ctx.meter.update(ctx.moved.bytes, ctx.moved.bytes) // waiting is not idling
    await state.pause(pollMs, ctx.signal)
  }
}

/** Name order, but pages-10.img after pages-9.img. */
function byNumber (a: string, b: string): number {
  const num = (s: string): number => Number(/(\d+)/.exec(s)?.[1] ?? 0)
  return num(a) - num(b) || (a < b ? -1 : a > b ? 1 : 0)
}

async function sendGrowing (ctx: FollowContext, name: string, state: WriterState, watch: ClosedFilesWatch | undefined, pollMs: number, index: number): Promise<FollowedFile> {
  const path = join(ctx.dir, name)
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW)
  try {
    const st = await fh.stat()
    if (!st.isFile()) throw new ImageTransferError(`${path} is not a regular file: image dirs hold only regular files`, { code: 'not-a-file', file: name })
    const mode = st.mode & 0o7777
    await ctx.channel.write(encodeHeader({
      v: IMAGES_WIRE_VERSION, compression: 'none', checksum: ctx.checksum, files: [{ name, size: 0, mode, growing: true }], totalBytes: 0, continued: true,
      ...(ctx.label === undefined ? {} : { label: ctx.label })
    }), ctx.signal)
    const hash = createFileChecksum(ctx.checksum)
    const pool = new ReadBufferPool(FRAME_HEADER_BYTES + ctx.chunkBytes)
    let offset = 0
    for (;;) {
      // Complete first, size second: a size read after the writer closed the file is final.
      const complete = state.check() || watch?.hasClosed(name) === true
      const size = (await fh.stat()).size
      offset = await sendAvailable(ctx, fh, { name, size: 0, mode }, index, pool, offset, complete ? size : size - (size - offset) % ctx.chunkBytes, hash)
      if (complete) break
      ctx.meter.update(ctx.moved.bytes, ctx.moved.bytes) // waiting for the writer is not idling
      await state.pause(pollMs, ctx.signal)
    }
    await ctx.channel.write(encodeSize({ size: offset }), ctx.signal)
    return { file: { name, size: offset, mode }, digest: hash.digest() }
  } finally {
    await fh.close()
  }
}

/** Sends [offset, until) of the file in DATA frames; returns the new offset. */
async function sendAvailable (ctx: FollowContext, fh: FileHandle, file: ImageFile, index: number, pool: ReadBufferPool, offset: number, until: number, hash: FileChecksum): Promise<number> {
  let sent = offset
  for await (const chunk of readFileChunks(fh, index, file, pool, ctx.signal, offset, until)) {
    hash.update(chunk.body)
    writeFrameHeader(chunk.frame, FrameType.data, chunk.body.byteLength)
    await ctx.channel.write(chunk.frame, ctx.signal)
    if (ctx.reuse) chunk.release()
    sent += chunk.body.byteLength
    ctx.moved.bytes += chunk.body.byteLength
    ctx.meter.atLeast(ctx.moved.bytes)
    ctx.meter.update(ctx.moved.bytes, ctx.moved.bytes)
  }
  return sent
}

/** Throws unless every followed file still has the size it was sent with (once the writer is done). */
export function checkFollowed (dir: string, followed: readonly FollowedFile[]): void {
  for (const { file } of followed) {
    const size = lstatSync(join(dir, file.name)).size
    if (size !== file.size) {
      throw new ImageTransferError(`${file.name} changed while being sent (sent ${file.size} bytes, now ${size})`, { code: 'source-changed', file: file.name })
    }
  }
}
