/**
 * Framing of the control API on a stream socket: each frame is a 4-byte big-endian body length
 * followed by a msgpack body. Both sides use the same plain msgpackr settings (no records, no
 * structure extensions) so any msgpack implementation can speak the protocol.
 */
// 'msgpackr/pack' is the pure-JS build (~7 ms to import against ~18 ms for the package root).
import { Packr } from 'msgpackr/pack'
import { FrameTooLargeError, MalformedFrameError, truncate } from './errors.js'
import { MAX_REQUEST_FRAME_BYTES } from './constants.js'

/** Bytes of the length prefix. */
export const FRAME_HEADER_BYTES = 4

const EMPTY = Buffer.alloc(0)
const packr = new Packr({ useRecords: false, mapsAsObjects: true })

/**
 * Encodes `value` as one frame (prefix + body).
 * @throws FrameTooLargeError when the body exceeds `maxFrameBytes`.
 */
export function encodeFrame (value: unknown, maxFrameBytes: number = MAX_REQUEST_FRAME_BYTES): Buffer {
  const body = packr.pack(value)
  if (body.length > maxFrameBytes) throw new FrameTooLargeError(body.length, maxFrameBytes)
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length)
  frame.writeUInt32BE(body.length, 0)
  body.copy(frame, FRAME_HEADER_BYTES)
  return frame
}

/**
 * Decodes one frame body.
 * @throws MalformedFrameError naming why msgpack refused it (including trailing bytes).
 */
export function decodeFrameBody (body: Uint8Array): unknown {
  try {
    return packr.unpack(body)
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    throw new MalformedFrameError(`frame body is not valid msgpack: ${truncate(reason, 160)}`, { cause: err })
  }
}

/**
 * Splits a byte stream into frame bodies. Chunks are queued, not concatenated, and every byte is
 * copied at most once (a body that sits inside one chunk is returned as a view of it), so large or
 * finely fragmented input costs linear time. After an oversized length prefix the decoder is
 * poisoned: the stream cannot be resynchronised, so the caller must close the connection.
 */
export class FrameDecoder {
  private chunks: Buffer[] = []
  private head = 0
  private buffered = 0
  private bodyLength = -1
  private failed: FrameTooLargeError | undefined

  constructor (readonly maxFrameBytes: number = MAX_REQUEST_FRAME_BYTES) {}

  /** Bytes received but not yet returned as frames. */
  get bufferedBytes (): number {
    return this.buffered
  }

  /**
   * Adds received bytes; returns the frame bodies completed by them, in order.
   * @throws FrameTooLargeError when a length prefix exceeds the limit (and on every later push).
   */
  push (chunk: Uint8Array): Buffer[] {
    if (this.failed !== undefined) throw this.failed
    if (chunk.length > 0) {
      this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length))
      this.buffered += chunk.length
    }
    const frames: Buffer[] = []
    for (;;) {
      if (this.bodyLength < 0) {
        if (this.buffered < FRAME_HEADER_BYTES) break
        const length = this.take(FRAME_HEADER_BYTES).readUInt32BE(0)
        if (length > this.maxFrameBytes) {
          this.failed = new FrameTooLargeError(length, this.maxFrameBytes)
          this.chunks = []
          throw this.failed
        }
        this.bodyLength = length
      }
      if (this.buffered < this.bodyLength) break
      frames.push(this.take(this.bodyLength))
      this.bodyLength = -1
    }
    return frames
  }

  /** Removes and returns the next `n` buffered bytes (`n` <= buffered). */
  private take (n: number): Buffer {
    const first = this.chunks[this.head]
    let out: Buffer
    if (first !== undefined && first.length >= n) {
      out = first.subarray(0, n)
      this.consume(first, n)
    } else {
      out = Buffer.allocUnsafe(n)
      let filled = 0
      while (filled < n) {
        const chunk = this.chunks[this.head] as Buffer
        const k = Math.min(chunk.length, n - filled)
        chunk.copy(out, filled, 0, k)
        filled += k
        this.consume(chunk, k)
      }
    }
    this.buffered -= n
    return out
  }

  private consume (chunk: Buffer, n: number): void {
    if (n < chunk.length) {
      this.chunks[this.head] = chunk.subarray(n)
      return
    }
    this.chunks[this.head++] = EMPTY // release the chunk's memory now
    if (this.head === this.chunks.length) {
      this.chunks = []
      this.head = 0
    } else if (this.head >= 64 && this.head * 2 >= this.chunks.length) {
      // Drop consumed slots now and then instead of shift()ing each one (O(n) per shift).
      this.chunks = this.chunks.slice(this.head)
      this.head = 0
    }
  }
}
