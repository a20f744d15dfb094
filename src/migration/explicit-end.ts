/**
 * A ByteChannel whose end is explicit, for byte streams where an EOF means "done" to whoever reads
 * them (CRIU's page server takes it as "the target has every page"). A libp2p stream of a peer that
 * was killed can end cleanly, so over the libp2p fallback of a bulk channel a clean end does not
 * prove the writer finished; the direct path has its END record, this layer gives every path one.
 *
 * Wire: frames of `length: u32 big-endian | bytes`; a frame of length 0 is END (empty writes are
 * not sent). A read that ends without END throws ChannelClosedError; bytes after END are refused.
 */
import { ChannelClosedError } from './ports.js'
import type { ByteChannel } from './ports.js'

const LENGTH_BYTES = 4
/** Largest frame payload; longer writes go as several frames. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024
/** Writes up to this size are copied behind their length (one channel write); longer ones go as two. */
const COPY_BELOW_BYTES = 256 * 1024

function lengthPrefix (n: number): Buffer {
  const b = Buffer.allocUnsafe(LENGTH_BYTES)
  b.writeUInt32BE(n, 0)
  return b
}

/** Wraps `channel` (both ends must): the returned channel's read ends only at the remote's END. */
export function withExplicitEnd (channel: ByteChannel): ByteChannel {
  let endSent = false
  return {
    write: async (chunk, signal) => {
      if (endSent) throw new ChannelClosedError('channel is closed for writing')
      for (let at = 0; at < chunk.byteLength; at += MAX_FRAME_BYTES) {
        const piece = chunk.subarray(at, Math.min(chunk.byteLength, at + MAX_FRAME_BYTES))
        if (piece.byteLength < COPY_BELOW_BYTES) {
          await channel.write(Buffer.concat([lengthPrefix(piece.byteLength), piece]), signal)
        } else {
          await channel.write(lengthPrefix(piece.byteLength), signal)
          await channel.write(piece, signal)
        }
      }
    },
    closeWrite: async (signal) => {
      if (!endSent) {
        endSent = true
        await channel.write(lengthPrefix(0), signal)
      }
      await channel.closeWrite(signal)
    },
    read: (signal, opts) => unframe(channel.read(signal, opts)),
    abort: (err) => { channel.abort(err) }
  }
}

/** The payloads of the frames in `chunks`, until END. */
async function * unframe (chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const head = Buffer.alloc(LENGTH_BYTES)
  let headFill = 0
  let left = 0 // payload bytes of the current frame still to come
  let ended = false
  for await (const chunk of chunks) {
    let at = 0
    while (at < chunk.byteLength) {
      if (ended) throw new ChannelClosedError('the remote sent data after the end of its stream')
      if (left > 0) {
        const n = Math.min(left, chunk.byteLength - at)
        yield chunk.subarray(at, at + n)
        left -= n
        at += n
        continue
      }
      const n = Math.min(LENGTH_BYTES - headFill, chunk.byteLength - at)
      head.set(chunk.subarray(at, at + n), headFill)
      headFill += n
      at += n
      if (headFill < LENGTH_BYTES) continue
      headFill = 0
      left = head.readUInt32BE(0)
      if (left > MAX_FRAME_BYTES) throw new ChannelClosedError(`frame of ${left} bytes is over ${MAX_FRAME_BYTES}`)
      if (left === 0) ended = true
    }
  }
  if (!ended) {
    throw new ChannelClosedError('the remote stream ended without its end marker: it was cut off (e.g. its node died), not finished')
  }
}
