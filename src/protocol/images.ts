/**
 * Wire format of checkpoint-image transfer (`/ssi/images/1`), the one module both ends import.
 *
 * The byte stream in each direction is a sequence of frames: a 5-byte frame header
 * (type: u8, payload length: u32 big-endian) and the payload. Sender → receiver:
 *
 *   HEADER   msgpack ImageHeader: version, compression, checksum algorithm, files (name, size, mode)
 *   DATA*    raw bytes: the files' contents concatenated in header order (a zero-size file has
 *            none); with compression 'zstd', one zstd stream of that concatenation, cut anywhere
 *   TRAILER  msgpack ImageTrailer: one digest per file, over its uncompressed content
 *   (or CANCEL instead, at any point: the sender gives up and says why)
 *
 * A file still being written when the transfer starts (CRIU's pages while it dumps) goes first, in
 * a section of its own, so the transfer overlaps the dump (uncompressed transfers only):
 *
 *   HEADER   with `continued`: exactly one file, `growing`, size 0 (not known yet)
 *   DATA*    that file's bytes as they are written
 *   SIZE     msgpack ImageSize: the file's final size, once its writer is done
 *   HEADER   the other files as above (no `continued`), DATA*, and the TRAILER, whose digests
 *            cover every file of both sections in order
 *
 * Receiver → sender: one RESULT frame, sent after every digest was checked (ok) or as soon as
 * the receiver refuses (a bad name, a cap, a digest mismatch, ...).
 *
 * Frame types only ever gain values at the end; the header carries the version. Control frames
 * (everything but DATA) are at most MAX_CONTROL_FRAME bytes and are validated before use.
 */
import { z } from 'zod'
import { decodeWith, encodeMessage, PeerMessageError } from './peer.js'

export const IMAGES_PROTOCOL = '/ssi/images/1'
export const IMAGES_WIRE_VERSION = 1

export const FrameType = { header: 1, data: 2, trailer: 3, result: 4, cancel: 5, size: 6 } as const
export type FrameTypeValue = typeof FrameType[keyof typeof FrameType]

export const FRAME_HEADER_BYTES = 5
/** Largest control frame: a header for ~15,000 files with long names. */
export const MAX_CONTROL_FRAME = 4 * 1024 * 1024
/** Largest DATA frame a receiver accepts (senders use DATA_CHUNK_BYTES). */
export const MAX_DATA_FRAME = 8 * 1024 * 1024
/** Payload of the DATA frames a sender writes: large, so per-frame costs vanish. */
export const DATA_CHUNK_BYTES = 1024 * 1024
/** Most files the wire format can describe; receivers usually cap lower. */
export const MAX_WIRE_FILES = 65_536
/** Longest file name (bytes of UTF-8), as on Linux filesystems. */
export const MAX_NAME_BYTES = 255

export const compressionSchema = z.enum(['none', 'zstd'])
export type Compression = z.infer<typeof compressionSchema>

/** Values only ever gain members at the end (see src/migration/transfer/checksum.ts). */
export const checksumSchema = z.enum(['sha256', 'crc32'])
export type ChecksumAlgorithm = z.infer<typeof checksumSchema>

const size = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)

export const imageFileSchema = z.object({
  /** A plain file name: image dirs are flat (see imageNameProblem). */
  name: z.string().min(1).max(MAX_NAME_BYTES * 4),
  size,
  /** Permission bits (0o7777 at most; receivers keep only 0o777). */
  mode: z.number().int().min(0).max(0o7777),
  /** Still being written: `size` is 0 and a SIZE frame after its data gives the real one. */
  growing: z.literal(true).optional()
}).strict()
export type ImageFile = z.infer<typeof imageFileSchema>

export const imageHeaderSchema = z.object({
  v: z.literal(IMAGES_WIRE_VERSION),
  compression: compressionSchema,
  checksum: checksumSchema,
  files: z.array(imageFileSchema).max(MAX_WIRE_FILES),
  /** Sum of the files' sizes: the uncompressed DATA length. */
  totalBytes: size,
  /** What the images are, for a receiver expecting several at once (a migration: its vpid). */
  label: z.string().max(256).optional(),
  /** Another HEADER follows this one's file (a growing one) and its SIZE frame. */
  continued: z.literal(true).optional()
}).strict()
export type ImageHeader = z.infer<typeof imageHeaderSchema>

/** sha256: 64 hex digits; crc32: 8. A digest of the wrong kind simply does not match. */
const hexDigest = z.string().regex(/^[0-9a-f]{8,64}$/)

export const imageTrailerSchema = z.object({
  /** One lower-case hex digest per file, in header order. */
  digests: z.array(hexDigest).max(MAX_WIRE_FILES),
  /** DATA payload bytes the sender wrote (compressed size when compressing). */
  wireBytes: size
}).strict()
export type ImageTrailer = z.infer<typeof imageTrailerSchema>

export const imageSizeSchema = z.object({ size }).strict()
export type ImageSize = z.infer<typeof imageSizeSchema>

export const transferFailureSchema = z.object({
  /** Error class name, e.g. 'ImageIntegrityError'. */
  name: z.string().max(128),
  /** Machine-readable reason (see TransferErrorCode in src/migration/transfer). */
  code: z.string().max(64),
  message: z.string().max(8192),
  file: z.string().max(MAX_NAME_BYTES * 4).optional()
}).strict()
export type TransferFailure = z.infer<typeof transferFailureSchema>

export const imageResultSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), files: z.number().int().nonnegative(), bytes: size }).strict(),
  z.object({ ok: z.literal(false), failure: transferFailureSchema }).strict()
])
export type ImageResult = z.infer<typeof imageResultSchema>

export const imageCancelSchema = transferFailureSchema
export type ImageCancel = TransferFailure

/** Why `name` is not acceptable as an image file name, or undefined if it is. */
export function imageNameProblem (name: string): string | undefined {
  if (name.length === 0) return 'is empty'
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) return `is longer than ${MAX_NAME_BYTES} bytes`
  if (name === '.' || name === '..') return 'is a directory reference'
  if (name.includes('/')) return 'contains a slash: image directories are flat (no paths, no absolute names)'
  if (name.includes('\\')) return 'contains a backslash'
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'contains a NUL or control character'
  return undefined
}

/** A complete frame: header and payload in one buffer. */
export function encodeFrame (type: FrameTypeValue, payload: Uint8Array): Uint8Array {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.byteLength)
  writeFrameHeader(frame, type, payload.byteLength)
  frame.set(payload, FRAME_HEADER_BYTES)
  return frame
}

export function writeFrameHeader (buf: Uint8Array, type: FrameTypeValue, length: number): void {
  buf[0] = type
  new DataView(buf.buffer, buf.byteOffset, FRAME_HEADER_BYTES).setUint32(1, length)
}

export const encodeHeader = (h: ImageHeader): Uint8Array => encodeFrame(FrameType.header, encodeMessage(h))
export const encodeTrailer = (t: ImageTrailer): Uint8Array => encodeFrame(FrameType.trailer, encodeMessage(t))
export const encodeResult = (r: ImageResult): Uint8Array => encodeFrame(FrameType.result, encodeMessage(r))
export const encodeCancel = (c: ImageCancel): Uint8Array => encodeFrame(FrameType.cancel, encodeMessage(c))
export const encodeSize = (s: ImageSize): Uint8Array => encodeFrame(FrameType.size, encodeMessage(s))

/** Decodes and validates a HEADER payload (shape only; names and caps are the receiver's job). */
export function decodeHeader (payload: Uint8Array): ImageHeader {
  const header = decodeWith(imageHeaderSchema, payload, MAX_CONTROL_FRAME, 'image header')
  const sum = header.files.reduce((acc, f) => acc + f.size, 0)
  if (sum !== header.totalBytes) {
    throw new PeerMessageError(`invalid image header: totalBytes ${header.totalBytes} is not the sum of the file sizes (${sum})`)
  }
  const problem = growingProblem(header)
  if (problem !== undefined) throw new PeerMessageError(`invalid image header: ${problem}`)
  return header
}

/** A growing file comes alone, uncompressed, in a `continued` header, and only there. */
function growingProblem (header: ImageHeader): string | undefined {
  const growing = header.files.filter(f => f.growing === true)
  if (header.continued !== true) return growing.length === 0 ? undefined : 'a growing file outside a continued header'
  if (header.files.length !== 1 || growing.length !== 1) return 'a continued header must list exactly one file, a growing one'
  if (header.totalBytes !== 0) return 'a growing file is announced with size 0'
  if (header.compression !== 'none') return 'a growing file cannot be compressed'
  return undefined
}

export function decodeSize (payload: Uint8Array): ImageSize {
  return decodeWith(imageSizeSchema, payload, MAX_CONTROL_FRAME, 'image file size')
}

export function decodeTrailer (payload: Uint8Array): ImageTrailer {
  return decodeWith(imageTrailerSchema, payload, MAX_CONTROL_FRAME, 'image trailer')
}

export function decodeResult (payload: Uint8Array): ImageResult {
  return decodeWith(imageResultSchema, payload, MAX_CONTROL_FRAME, 'image transfer result')
}

export function decodeCancel (payload: Uint8Array): ImageCancel {
  return decodeWith(imageCancelSchema, payload, MAX_CONTROL_FRAME, 'image transfer cancel')
}

/** What the parser yields: a whole control frame, or a piece of a DATA frame's payload. */
export type ParsedFrame =
  | { readonly kind: 'control', readonly type: FrameTypeValue, readonly payload: Uint8Array }
  | { readonly kind: 'data', readonly bytes: Uint8Array }

const KNOWN_TYPES = new Set<number>(Object.values(FrameType))

/**
 * Incremental frame parser. DATA payloads are passed on piece by piece as views of the input
 * (no copy, no waiting for the whole frame); control frames are assembled, after their length was
 * checked against MAX_CONTROL_FRAME. Throws PeerMessageError on an unknown type or oversize frame.
 */
export class ImageFrameParser {
  private readonly head = new Uint8Array(FRAME_HEADER_BYTES)
  private headFill = 0
  private type: FrameTypeValue | undefined
  private remaining = 0
  private control: Uint8Array | undefined
  private controlFill = 0

  /** True between frames: the input so far ended exactly at a frame boundary. */
  get atBoundary (): boolean {
    return this.type === undefined && this.headFill === 0
  }

  push (chunk: Uint8Array): ParsedFrame[] {
    const out: ParsedFrame[] = []
    let at = 0
    while (at < chunk.byteLength) {
      if (this.type === undefined) {
        at = this.readHead(chunk, at)
        if (this.type !== undefined && this.remaining === 0) this.finishFrame(out)
        continue
      }
      const take = Math.min(this.remaining, chunk.byteLength - at)
      const piece = chunk.subarray(at, at + take)
      at += take
      this.remaining -= take
      if (this.type === FrameType.data) out.push({ kind: 'data', bytes: piece })
      else this.appendControl(piece)
      if (this.remaining === 0) this.finishFrame(out)
    }
    return out
  }

  private readHead (chunk: Uint8Array, at: number): number {
    const take = Math.min(FRAME_HEADER_BYTES - this.headFill, chunk.byteLength - at)
    this.head.set(chunk.subarray(at, at + take), this.headFill)
    this.headFill += take
    if (this.headFill < FRAME_HEADER_BYTES) return at + take
    const type = this.head[0] ?? 0
    const length = new DataView(this.head.buffer).getUint32(1)
    if (!KNOWN_TYPES.has(type)) throw new PeerMessageError(`unknown image frame type ${type}`)
    const max = type === FrameType.data ? MAX_DATA_FRAME : MAX_CONTROL_FRAME
    if (length > max) throw new PeerMessageError(`image frame of type ${type} is ${length} bytes, over the ${max}-byte limit`)
    this.type = type as FrameTypeValue
    this.remaining = length
    this.headFill = 0
    if (type !== FrameType.data) {
      this.control = new Uint8Array(length)
      this.controlFill = 0
    }
    return at + take
  }

  private appendControl (piece: Uint8Array): void {
    this.control?.set(piece, this.controlFill)
    this.controlFill += piece.byteLength
  }

  private finishFrame (out: ParsedFrame[]): void {
    const type = this.type
    if (type !== undefined && type !== FrameType.data) {
      out.push({ kind: 'control', type, payload: this.control ?? new Uint8Array(0) })
    }
    this.type = undefined
    this.control = undefined
  }
}
