/**
 * Stop-and-copy with the pages streamed to the target while CRIU dumps them (p.haul's way): the
 * source's `criu dump` speaks its page-server protocol over a socketpair whose other end the daemon
 * tees onto a bulk channel to the target and into a local file; on the target,
 * `criu page-server --ps-socket` (one end of a socketpair: no port another local user could
 * take) writes the pages into the incoming images dir. So the dump and the page transfer overlap,
 * and the pages are neither written, re-read and hashed on the source nor hashed on the target
 * (the channel's AEAD already protects every byte). The other images (KiBs) follow as usual.
 *
 * The local copy keeps the "nothing lost" rule: a rollback replays it into a local page server,
 * which writes the pages exactly as a plain dump would have.
 */
import { spawn } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { closeSync } from 'node:fs'
import { Socket as NetSocket } from 'node:net'
import type { Socket, SocketConstructorOpts } from 'node:net'
import { socketPair } from '../native/socketpair.js'
import { SocketReads } from './socket-reads.js'
import { ReadBufferPool } from './transfer/source.js'
import { readVpidHeader, vpidHeader } from './vpid-header.js'
import type { ByteChannel } from './ports.js'

/** Carries one migration's page stream; the source first writes the vpid (8 bytes, big-endian). */
export const PAGES_PROTOCOL = '/ssi/stop-copy-pages/1'

export class PageStreamError extends Error {
  static override name = 'PageStreamError'
  override name = 'PageStreamError'
}

/** The channel's first bytes: which migration the pages are for. */
export function pagesHeader (vpid: number): Uint8Array {
  return vpidHeader(vpid)
}

/** Reads the vpid header; returns it and a channel whose `read` yields what follows it. */
export async function readPagesHeader (channel: ByteChannel, signal: AbortSignal): Promise<{ vpid: number, rest: ByteChannel }> {
  return await readVpidHeader(channel, signal, () => new PageStreamError('page channel ended before its header'))
}

/** A `criu page-server` writing one dump's pages into a dir, fed through `socket`. */
export interface PageServerProcess {
  /** Our end of its page-server socket. */
  readonly socket: Socket
  /** Resolves once it has written every page and exited 0; rejects otherwise. */
  readonly done: Promise<void>
  /** Kills it (SIGKILL). */
  stop (): void
}

/**
 * A connected stream socketpair for a streamed dump: `theirs` goes to CRIU (DumpOptions
 * pageServerSocket), `ours` carries its page-server protocol. No port another local user could
 * take, and no TCP cork: CRIU corks its page-server socket, which over TCP held each of its
 * pipe-sized batches for the cork timer.
 */
export function pageSocketPair (): { ours: Socket, reads: SocketReads, theirs: number, closeTheirs: () => void } {
  const [oursFd, theirs] = socketPair('stream')
  let open = true
  const reads = new SocketReads()
  return {
    ours: new NetSocket({ fd: oursFd, readable: true, writable: true, allowHalfOpen: true, onread: reads.onread } as unknown as SocketConstructorOpts),
    reads,
    theirs,
    closeTheirs: () => {
      if (open) closeSync(theirs)
      open = false
    }
  }
}

const PS_FD = 3

/** Starts `criu page-server --ps-socket` for imagesDir (its log: `page-server.log` there). */
export function spawnPageServer (criuPath: string, imagesDir: string): PageServerProcess {
  const args = ['page-server', '-D', imagesDir, '--ps-socket', String(PS_FD), '-o', 'page-server.log', '-v2']
  const child = spawn(criuPath, args, { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] })
  const socket = child.stdio[PS_FD] as Socket
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', (err) => { reject(new PageStreamError(`cannot run ${criuPath}: ${err.message}`, { cause: err })) })
    child.once('exit', (code, sig) => {
      if (code === 0) resolve()
      else reject(new PageStreamError(`criu page-server ${sig !== null ? `killed by ${sig}` : `exited with ${code}`} (see ${imagesDir}/page-server.log)`))
    })
  })
  done.catch(() => {}) // observed through `done`
  socket.on('error', () => {}) // seen as the process's failure
  return { socket, done, stop: () => { child.kill('SIGKILL') } }
}

/**
 * Passes CRIU's page stream from `socket` on to `channel` and into `file` (created), and the
 * target's answers back. An answer reaches CRIU only once the file holds everything sent before
 * it: CRIU takes its last answer as "the pages are safe" and then kills the dumped tree.
 * Resolves with the bytes streamed once both directions ended; on failure tears both down.
 */
export async function teePages (socket: Socket, channel: ByteChannel, file: string, signal: AbortSignal, reads?: SocketReads): Promise<{ bytes: number }> {
  const fh = await open(file, 'wx', 0o600)
  const up = new TeeBatches(socket, channel, fh, signal, reads)
  const down = async (): Promise<void> => {
    for await (const chunk of channel.read(signal)) {
      await up.recorded()
      if (!socket.write(chunk)) await new Promise<void>((resolve) => { socket.once('drain', resolve) })
    }
    socket.end()
  }
  const onAbort = (): void => { socket.destroy() }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    await Promise.all([up.done, down()])
    await fh.close()
    return { bytes: up.bytes }
  } catch (err) {
    socket.destroy()
    channel.abort(err instanceof Error ? err : new Error(String(err)))
    await fh.close().catch(() => {})
    throw new PageStreamError(`page stream broke after ${up.bytes} bytes: ${(err as Error).message}`, { cause: err })
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** Bytes gathered from CRIU's socket before they go on (one record, one file write). */
const BATCH_BYTES = 1024 * 1024
/** Bytes handed on but not yet sent, or not yet in the recording, above which CRIU's socket is paused. */
const MAX_BEHIND = 8 * 1024 * 1024

/**
 * CRIU's side of teePages: its reads (~64-200 KiB each) are gathered into pooled 1 MiB batches,
 * each sent as one channel write and appended to the recording as one file write, in order. Per
 * read, the channel write and the thread-pool hop of the file write cost more than the bytes
 * (a 1 GiB dump moved ~300 MB/s). A partial batch goes on at the end of the event-loop turn
 * that read it, so CRIU's small requests (which wait for an answer) never wait for more data.
 */
class TeeBatches {
  bytes = 0
  readonly done: Promise<void>
  private readonly pool = new ReadBufferPool(BATCH_BYTES, 16)
  private batch: Buffer | undefined
  private fill = 0
  private scheduled = false
  private sent: Promise<void> = Promise.resolve()
  private written: Promise<void> = Promise.resolve()
  private unsent = 0
  private unwritten = 0

  /** `reads`: the socket reads into one reused buffer (made with its `onread`); else its 'data' events. */
  constructor (private readonly socket: Socket, private readonly channel: ByteChannel, private readonly fh: FileHandle, private readonly signal: AbortSignal, reads?: SocketReads) {
    this.done = new Promise<void>((resolve, reject) => {
      let ended = false
      if (reads === undefined) {
        socket.on('data', (chunk: Buffer) => { this.take(chunk) })
      } else {
        reads.attach(bytes => { this.take(bytes) })
        socket.resume() // no 'data' listener starts it; flowing, it also emits 'end'
      }
      const onEnd = (): void => {
        if (ended) return
        ended = true
        this.flush()
        this.sent.then(async () => { await this.written; await channel.closeWrite(signal) }).then(resolve, reject)
      }
      socket.once('end', onEnd)
      if (socket.readableEnded) onEnd() // it ended before this attached (nothing was left to read)
      socket.once('error', reject)
      socket.once('close', () => { if (!ended) reject(new PageStreamError('CRIU\'s page socket closed before its end')) })
    })
    this.done.catch(() => {}) // awaited by teePages
  }

  /** Resolves once the recording holds every byte handed on so far. */
  async recorded (): Promise<void> {
    this.flush()
    await this.written
  }

  private take (chunk: Buffer): void {
    for (let at = 0; at < chunk.byteLength;) {
      this.batch ??= this.pool.take()
      const n = Math.min(chunk.byteLength - at, BATCH_BYTES - this.fill)
      chunk.copy(this.batch, this.fill, at, at + n)
      this.fill += n
      at += n
      if (this.fill === BATCH_BYTES) this.flush()
    }
    if (this.fill > 0 && !this.scheduled) {
      this.scheduled = true
      setImmediate(() => { this.scheduled = false; this.flush() })
    }
  }

  private flush (): void {
    const batch = this.batch
    if (batch === undefined || this.fill === 0) return
    const data = batch.subarray(0, this.fill)
    this.batch = undefined
    this.fill = 0
    this.bytes += data.byteLength
    this.unsent += data.byteLength
    this.unwritten += data.byteLength
    // Two chains, each in order: the channel copies (seals) what it is given before its write
    // resolves, the file write needs the batch until it is done; then the batch is reused.
    const sent = this.sent.then(async () => { await this.channel.write(data, this.signal) })
    const written = this.written.then(async () => { await this.fh.write(data) })
    this.sent = sent.then(() => { this.unsent -= data.byteLength; this.maybeResume() })
    this.written = written.then(() => { this.unwritten -= data.byteLength; this.maybeResume() })
    // Reused only if the channel no longer refers to it once its write resolved.
    if (this.channel.copiesOnWrite === true) void Promise.all([sent, written]).then(() => { this.pool.give(batch) }, () => {})
    this.sent.catch(() => {})
    this.written.catch(() => {})
    if (this.unsent > MAX_BEHIND || this.unwritten > MAX_BEHIND) this.socket.pause()
  }

  private maybeResume (): void {
    if (this.unsent <= MAX_BEHIND / 4 && this.unwritten <= MAX_BEHIND / 4 && this.socket.isPaused()) this.socket.resume()
  }
}

/** Rebuilds a streamed dump's pages in imagesDir from its recorded stream (`teePages`' file). */
export async function replayPages (criuPath: string, file: string, imagesDir: string, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  const ps = spawnPageServer(criuPath, imagesDir)
  const onAbort = (): void => { ps.stop() }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    ps.socket.resume() // its answers are not needed: the recording is complete
    const input = createReadStream(file)
    input.on('error', (err) => { ps.socket.destroy(err); ps.stop() })
    input.pipe(ps.socket)
    await ps.done
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
}
