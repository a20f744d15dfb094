/**
 * Serves a restore's images to `criu restore --stream` (CRIU's img-streamer.c, "serve" side) while
 * they may still be arriving, so a migration's restore can run alongside the transfer instead of
 * after it. CRIU then reads each image through a pipe, in order, never seeking.
 *
 * The protocol, over `<imagesDir>/streamer-serve.sock` (one connection; CRIU opens images one at a
 * time and closes the connection when it needs no more):
 *   CRIU -> u32 length (host order) + ImgStreamerRequestEntry { 1: string filename }
 *   us   -> u32 length + ImgStreamerReplyEntry { 1: bool exists }
 *   if it exists: CRIU -> one byte with SCM_RIGHTS: the write end of a pipe it reads the file from.
 * We splice the file into the pipe as it grows (tmpfs pages move without a copy) and close the
 * pipe at its end. CRIU sees a broken transfer as a pipe that ends early and fails the restore.
 */
import { closeSync, openSync } from 'node:fs'
import { join } from 'node:path'
import { acceptNow, closeFd, listenUnix, pipeSize, recvFdNow, recvNow, sendAll, setPipeSize, spliceNow, waitReadable } from '../native/fd-passing.js'
import { SpliceWorker } from './splice-worker.js'

export const STREAMER_SOCKET = 'streamer-serve.sock'
/** Longest request CRIU sends: an image file name. */
const MAX_REQUEST_BYTES = 4096
const PIPE_BYTES = 4 * 1024 * 1024

export class ImageStreamerError extends Error {
  static override name = 'ImageStreamerError'
  override name = 'ImageStreamerError'
}

/** The images a streamer serves: complete, or still being received. */
export interface StreamedImages {
  /** Whether `name` is (or will be) one of the images; waits until that is known. */
  has(name: string, signal: AbortSignal): Promise<boolean>
  /**
   * Waits until more than `from` bytes of `name` are on disk, or all of it is; says how many are
   * and whether that is all. Rejects if the image will never be complete (the transfer broke).
   */
  progress(name: string, from: number, signal: AbortSignal): Promise<{ bytes: number, complete: boolean }>
  /** Where `name` is on disk. */
  path(name: string): string
}

export interface StreamerSummary {
  /** The images CRIU asked for, in order (those it was told do not exist included). */
  readonly requested: readonly string[]
  /** Bytes spliced to CRIU. */
  readonly bytes: number
}

/**
 * One restore's streamer. Listens at once (before CRIU starts); `done` settles when CRIU closed
 * the connection and every pipe was filled, or fails on the first error (which closes all pipes).
 */
export class ImageStreamer {
  readonly done: Promise<StreamerSummary>
  private readonly stop = new AbortController()
  private readonly listening: number
  private readonly fds = new Set<number>()
  private readonly requested: string[] = []
  /** Every worker started, and those no pump is using. */
  private readonly workers: SpliceWorker[] = []
  private readonly spareWorkers: SpliceWorker[] = []
  private bytes = 0

  constructor (imagesDir: string, private readonly images: StreamedImages, signal: AbortSignal) {
    this.listening = listenUnix(join(imagesDir, STREAMER_SOCKET))
    this.fds.add(this.listening)
    const both = AbortSignal.any([signal, this.stop.signal])
    // One worker started now: a thread takes ~10 ms to start, CRIU's first page file comes soon.
    this.spareWorkers.push(this.newWorker())
    this.done = this.run(both).finally(() => { this.closeAll(); this.stopWorkers() })
    this.done.catch(() => {})
  }

  /** Stops serving: CRIU's pipes and connection close, so a restore still reading fails. */
  close (reason: Error = new ImageStreamerError('the image streamer was closed')): void {
    this.stop.abort(reason)
    this.closeAll()
  }

  private async run (signal: AbortSignal): Promise<StreamerSummary> {
    const conn = await this.accept(signal)
    const pumps: Array<Promise<void>> = []
    try {
      for (;;) {
        const name = await this.nextRequest(conn, signal)
        if (name === undefined) break // CRIU needs no more images
        this.requested.push(name)
        const exists = await raceAbort(this.images.has(name, signal), signal)
        signal.throwIfAborted()
        sendAll(conn, encodeReply(exists))
        if (!exists) continue
        const pipe = await this.receivePipe(conn, signal)
        const pump = this.pump(name, pipe, signal)
        // A pump that fails stops the whole restore at once (CRIU may be blocked on another image).
        pump.catch((err: unknown) => { this.stop.abort(err) })
        pumps.push(pump)
      }
    } catch (err) {
      this.stop.abort(err)
      await Promise.allSettled(pumps)
      throw err
    }
    // Every pump settled before `done` does (and the workers stop): none still holds a pipe then.
    const failed = (await Promise.allSettled(pumps)).find(r => r.status === 'rejected')
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
    return { requested: this.requested, bytes: this.bytes }
  }

  private async accept (signal: AbortSignal): Promise<number> {
    for (;;) {
      const fd = acceptNow(this.listening)
      if (fd !== undefined) {
        this.fds.add(fd)
        return fd
      }
      await waitReadable(this.listening, signal)
    }
  }

  /** The next file name CRIU asks for; undefined once it closed the connection between requests. */
  private async nextRequest (conn: number, signal: AbortSignal): Promise<string | undefined> {
    const head = await readExact(conn, 4, signal, true)
    if (head === undefined) return undefined
    const length = head.readUInt32LE(0)
    if (length === 0 || length > MAX_REQUEST_BYTES) throw new ImageStreamerError(`CRIU sent a request of ${length} bytes`)
    const body = await readExact(conn, length, signal, false)
    return decodeRequest(body as Buffer)
  }

  private async receivePipe (conn: number, signal: AbortSignal): Promise<number> {
    for (;;) {
      const fd = recvFdNow(conn)
      if (fd !== undefined) {
        this.fds.add(fd)
        return fd
      }
      await waitReadable(conn, signal)
    }
  }

  /**
   * Splices `name` into `pipe` as it arrives, then closes the pipe (CRIU's end of file). An image
   * that fits the empty pipe goes in one splice here; a larger or growing one through a worker
   * (./splice-worker.ts), which waits in the kernel while CRIU drains the pipe. The pipe is this
   * pump's from now on: closed when it ends, never while a worker splices into it.
   */
  private async pump (name: string, pipe: number, signal: AbortSignal): Promise<void> {
    this.fds.delete(pipe)
    let file: number | undefined
    let worker: SpliceWorker | undefined
    try {
      setPipeSize(pipe, PIPE_BYTES) // a 64 KiB pipe costs a wake-up of CRIU per 64 KiB
      const room = pipeSize(pipe)
      let sent = 0
      for (;;) {
        const { bytes, complete } = await raceAbort(this.images.progress(name, sent, signal), signal)
        signal.throwIfAborted()
        file ??= openSync(this.images.path(name), 'r')
        if (sent === 0 && complete && bytes <= room) sent = this.spliceWhole(name, file, pipe, bytes)
        if (sent < bytes) {
          worker ??= this.takeWorker()
          const m = await worker.move(file, pipe, bytes - sent)
          sent += m.moved
          this.bytes += m.moved
          // CRIU closed the pipe: it read what it needed, or failed on its own (its log says which).
          if (m.broken) return
          if (m.ended) throw new ImageStreamerError(`image ${name} ended at ${sent} bytes, before the ${bytes} said to be there`)
          signal.throwIfAborted()
        }
        if (complete) return
      }
    } finally {
      if (worker !== undefined) this.spareWorkers.push(worker)
      if (file !== undefined) closeSync(file)
      closeFd(pipe)
    }
  }

  /** All of a complete image that fits the (empty) pipe: one splice that cannot block. */
  private spliceWhole (name: string, file: number, pipe: number, bytes: number): number {
    let sent = 0
    while (sent < bytes) {
      const n = spliceNow(file, pipe, bytes - sent)
      if (n === undefined) return sent // the pipe is fuller than it should be: the worker goes on
      if (n === 0) throw new ImageStreamerError(`image ${name} ended at ${sent} bytes, before the ${bytes} said to be there`)
      sent += n
      this.bytes += n
    }
    return sent
  }

  private takeWorker (): SpliceWorker {
    return this.spareWorkers.pop() ?? this.newWorker()
  }

  private newWorker (): SpliceWorker {
    const worker = new SpliceWorker()
    this.workers.push(worker)
    return worker
  }

  private closeAll (): void {
    for (const fd of this.fds) closeFd(fd)
    this.fds.clear()
  }

  /** Ends the workers (each once its splice, if any, returned). */
  private stopWorkers (): void {
    for (const worker of this.workers) worker.stop()
    this.workers.length = 0
    this.spareWorkers.length = 0
  }
}

/** `work`, or the abort's reason first: what StreamedImages wait for may never come once stopped. */
async function raceAbort<T> (work: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  let onAbort = (): void => {}
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([work, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** Exactly n bytes from the socket; undefined if it closed before the first (when `endOk`). */
async function readExact (fd: number, n: number, signal: AbortSignal, endOk: boolean): Promise<Buffer | undefined> {
  const buf = Buffer.alloc(n)
  let at = 0
  while (at < n) {
    signal.throwIfAborted()
    const got = recvNow(fd, buf.subarray(at))
    if (got === undefined) {
      await waitReadable(fd, signal)
      continue
    }
    if (got === 0) {
      if (at === 0 && endOk) return undefined
      throw new ImageStreamerError(`CRIU closed the streamer connection inside a request (${at} of ${n} bytes)`)
    }
    at += got
  }
  return buf
}

/** ImgStreamerRequestEntry { required string filename = 1 }, checked to be a plain file name. */
export function decodeRequest (body: Buffer): string {
  if (body[0] !== 0x0a) throw new ImageStreamerError(`unexpected field tag 0x${(body[0] ?? 0).toString(16)} in a streamer request`)
  let length = 0
  let at = 1
  for (let shift = 0; ; shift += 7) {
    const byte = body[at++]
    if (byte === undefined || shift > 21) throw new ImageStreamerError('a malformed length in a streamer request')
    length |= (byte & 0x7f) << shift
    if (byte < 0x80) break
  }
  if (at + length !== body.length) throw new ImageStreamerError(`a streamer request of ${body.length} bytes holds a name of ${length}`)
  const name = body.subarray(at).toString('utf8')
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new ImageStreamerError(`CRIU asked for an image named ${JSON.stringify(name)}`)
  }
  return name
}

/** u32 length + ImgStreamerReplyEntry { required bool exists = 1 }. */
export function encodeReply (exists: boolean): Buffer {
  return Buffer.from([2, 0, 0, 0, 0x08, exists ? 1 : 0])
}
