/**
 * Reading a socket into one reused buffer (Node's `onread`) instead of a fresh 64 KiB Buffer per
 * read, for bulk streams whose bytes are copied or decrypted on arrival anyway: the daemons run
 * with a small young generation, and a GiB of per-read Buffers costs major GCs and fresh pages
 * (zeroed by the kernel) for every one of them: twice the CPU of the data itself.
 */

/**
 * Bytes of a socket's one reused read buffer (Node's own reads are 64 KiB each). 1 MiB, about one
 * record of the direct channel: measured with bench:transfer --large --direct, the receiver used
 * 1.13-1.25 CPU-s per GiB against 1.19-1.30 with 256 KiB (fewer reads, fewer records assembled
 * from two reads), 858-962 MB/s against 788-928; 4 MiB was no better.
 */
const READ_BUFFER_BYTES = 1024 * 1024

/**
 * Where a socket made with `onread: reads.onread` puts what it reads: `attach`'s sink gets each
 * read as a view of the one buffer, valid until the sink returns. Bytes read before a sink attaches
 * are kept (copied) for it.
 */
export class SocketReads {
  private sink: ((bytes: Buffer) => void) | undefined
  private readonly early: Buffer[] = []
  readonly onread = {
    buffer: Buffer.allocUnsafeSlow(READ_BUFFER_BYTES),
    callback: (n: number, buf: Uint8Array): boolean => {
      const bytes = Buffer.from(buf.buffer, buf.byteOffset, n)
      if (this.sink !== undefined) this.sink(bytes)
      else this.early.push(Buffer.from(bytes))
      return true
    }
  }

  attach (sink: (bytes: Buffer) => void): void {
    this.sink = sink
    for (const b of this.early.splice(0)) sink(b)
  }
}
