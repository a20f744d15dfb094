/**
 * The header of a per-migration bulk channel (the streamed pages of a stop-and-copy dump, a
 * post-copy page-server connection): the opener first writes the job's vpid, 8 bytes big-endian,
 * so the receiver knows which migration the bytes that follow belong to.
 */
import type { ByteChannel } from './ports.js'

const HEADER_BYTES = 8

/** The channel's first bytes for `vpid`. */
export function vpidHeader (vpid: number): Buffer {
  const header = Buffer.alloc(HEADER_BYTES)
  header.writeBigUInt64BE(BigInt(vpid))
  return header
}

/**
 * Reads the vpid header; returns it and a channel whose `read` yields what follows it.
 * @throws the error of `tooShort()` if the channel ends before its header
 */
export async function readVpidHeader (channel: ByteChannel, signal: AbortSignal, tooShort: () => Error): Promise<{ vpid: number, rest: ByteChannel }> {
  const reader = channel.read(signal)[Symbol.asyncIterator]()
  let head: Uint8Array = new Uint8Array(0)
  while (head.byteLength < HEADER_BYTES) {
    const next = await reader.next()
    if (next.done === true) throw tooShort()
    head = Buffer.concat([head, next.value])
  }
  const vpid = Number(Buffer.from(head).readBigUInt64BE(0))
  const extra = head.subarray(HEADER_BYTES)
  async function * rest (): AsyncGenerator<Uint8Array> {
    if (extra.byteLength > 0) yield extra
    for (;;) {
      const next = await reader.next()
      if (next.done === true) return
      yield next.value
    }
  }
  return {
    vpid,
    rest: {
      write: async (chunk, s) => { await channel.write(chunk, s) },
      closeWrite: async (s) => { await channel.closeWrite(s) },
      read: () => rest(),
      abort: (err) => { channel.abort(err) }
    }
  }
}
