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
import { closeSync } from 'node:fs'
import { Socket as NetSocket } from 'node:net'
import type { Socket } from 'node:net'
import { socketPair } from '../native/socketpair.js'
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
export function pageSocketPair (): { ours: Socket, theirs: number, closeTheirs: () => void } {
  const [oursFd, theirs] = socketPair('stream')
  let open = true
  return {
    ours: new NetSocket({ fd: oursFd, readable: true, writable: true }),
    theirs,
    closeTheirs: () => {
      if (open) closeSync(theirs)
      open = false
    }
  }
}

const PS_FD = 3
/** Bytes of the stream the local recording may lag behind the network. */
const MAX_UNWRITTEN = 16 * 1024 * 1024

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
export async function teePages (socket: Socket, channel: ByteChannel, file: string, signal: AbortSignal): Promise<{ bytes: number }> {
  const fh = await open(file, 'wx', 0o600)
  let bytes = 0
  let written: Promise<unknown> = Promise.resolve()
  let unwritten = 0
  const up = async (): Promise<void> => {
    // Not destroyed at the end of its input: answers may still have to go out on it.
    for await (const chunk of socket.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
      bytes += chunk.byteLength
      unwritten += chunk.byteLength
      // Queued in order (one file position); waited for only when far behind, not per chunk.
      written = written.then(async () => { await fh.write(chunk); unwritten -= chunk.byteLength })
      written.catch(() => {}) // awaited below; a failure must not go unhandled meanwhile
      await channel.write(chunk, signal)
      if (unwritten > MAX_UNWRITTEN) await written
    }
    await written
    await channel.closeWrite(signal)
  }
  const down = async (): Promise<void> => {
    for await (const chunk of channel.read(signal)) {
      await written
      if (!socket.write(chunk)) await new Promise<void>((resolve) => { socket.once('drain', resolve) })
    }
    socket.end()
  }
  const onAbort = (): void => { socket.destroy() }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    await Promise.all([up(), down()])
    await fh.close()
    return { bytes }
  } catch (err) {
    socket.destroy()
    channel.abort(err instanceof Error ? err : new Error(String(err)))
    await fh.close().catch(() => {})
    throw new PageStreamError(`page stream broke after ${bytes} bytes: ${(err as Error).message}`, { cause: err })
  } finally {
    signal.removeEventListener('abort', onAbort)
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
