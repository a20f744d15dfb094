/**
 * Message-sized reads from a stream of chunks, and socket writes that respect backpressure: what the
 * page-server proxy (./page-prefetch.ts) needs to parse CRIU's page protocol off a byte stream.
 */
import type { Socket } from 'node:net'

export class StreamEndedError extends Error {
  static override name = 'StreamEndedError'
  override name = 'StreamEndedError'
}

export class ByteReader {
  private bufs: Buffer[] = []
  private len = 0

  constructor (private readonly source: AsyncIterator<Uint8Array>) {}

  /** Exactly n bytes; undefined at a clean end (nothing buffered); StreamEndedError inside a message. */
  async read (n: number): Promise<Buffer | undefined> {
    while (this.len < n) {
      const next = await this.source.next()
      if (next.done === true) {
        if (this.len === 0) return undefined
        throw new StreamEndedError(`stream ended ${this.len} bytes into a ${n}-byte message`)
      }
      const v = next.value
      this.bufs.push(Buffer.from(v.buffer, v.byteOffset, v.byteLength))
      this.len += v.byteLength
    }
    const first = this.bufs[0] as Buffer
    let out: Buffer
    if (first.length >= n) {
      out = first.subarray(0, n)
      if (first.length === n) this.bufs.shift(); else this.bufs[0] = first.subarray(n)
    } else {
      const all = Buffer.concat(this.bufs, this.len)
      out = all.subarray(0, n)
      this.bufs = all.length > n ? [all.subarray(n)] : []
    }
    this.len -= n
    return out
  }

  /** What is buffered, then the rest of the stream as it comes. */
  async * rest (): AsyncGenerator<Uint8Array> {
    const buffered = this.bufs
    this.bufs = []
    this.len = 0
    yield * buffered
    for (;;) {
      const next = await this.source.next()
      if (next.done === true) return
      yield next.value
    }
  }
}

/** Writes to a socket, waiting for 'drain' when its buffer is full. */
export async function writeSocket (socket: Socket, buf: Uint8Array): Promise<void> {
  if (socket.write(buf)) return
  await new Promise<void>((resolve, reject) => {
    const onClose = (): void => { socket.off('drain', onDrain); reject(new StreamEndedError('socket closed while writing')) }
    const onDrain = (): void => { socket.off('close', onClose); resolve() }
    socket.once('drain', onDrain)
    socket.once('close', onClose)
  })
}
