/**
 * Wire format of a direct bulk connection (see ./README in bulk-transport.ts and README, Security):
 * a TCP byte stream in each direction made of AES-256-GCM records
 *
 *   type: u8 | length: u32 big-endian (ciphertext bytes) | ciphertext | 16-byte GCM tag
 *
 * The 5 header bytes are the record's additional authenticated data. Each direction has its own
 * fresh 256-bit key (exchanged over the Noise-protected libp2p stream) and numbers its records
 * from 0; the 96-bit nonce is 4 zero bytes and that counter. So a record that is altered, dropped,
 * reordered, replayed from another connection or moved to the other direction fails to decrypt.
 * The first record each way is HELLO (the one-time token), the last one END: a connection that
 * stops before END was cut, not finished.
 *
 * Every length is checked before anything is buffered; the parser is pure so it can be fuzzed.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto'
import { nativeAesGcm } from '../../native/aes-gcm.js'
import type { NativeAesGcm } from '../../native/aes-gcm.js'

export const RecordType = { hello: 1, data: 2, end: 3 } as const
export type RecordTypeValue = typeof RecordType[keyof typeof RecordType]

export const RECORD_HEADER_BYTES = 5
export const TAG_BYTES = 16
export const KEY_BYTES = 32
export const TOKEN_BYTES = 32
/** Largest record payload: a whole image DATA frame (1 MiB + 5) fits in one record. */
export const MAX_RECORD_BYTES = 4 * 1024 * 1024

export class DirectRecordError extends Error {
  static override name = 'DirectRecordError'
  override name = 'DirectRecordError'
}

const CIPHER = 'aes-256-gcm'
/** Plaintext bytes per cipher.update() when sealing (see RecordSealer.seal). */
const SEAL_PIECE_BYTES = 64 * 1024

function nonce (counter: number): Buffer {
  const iv = Buffer.alloc(12)
  iv.writeUIntBE(counter, 6, 6)
  return iv
}

/**
 * How records are sealed and opened: 'native' (OpenSSL's EVP through koffi, ../../native/aes-gcm.ts:
 * no allocation per record) where it can be bound, else 'node' (node:crypto). Same bytes either way.
 * SSI_DIRECT_CRYPTO=node forces the latter (to compare them).
 */
export type RecordCrypto = 'native' | 'node'
export function defaultRecordCrypto (): RecordCrypto {
  return process.env.SSI_DIRECT_CRYPTO !== 'node' && nativeAesGcm() !== undefined ? 'native' : 'node'
}

/** Payloads at least this large are sealed into a pooled output buffer (smaller ones: a fresh one). */
const POOLED_PAYLOAD_BYTES = 64 * 1024
/** A pooled record buffer fits an image DATA frame (1 MiB + 5) in one record, with room to spare. */
const POOLED_RECORD_BYTES = 1024 * 1024 + 4096
/** Pooled record buffers kept while unused (the socket holds one or two while it drains). */
const POOL_KEEP = 4

/** Seals records of one direction under `key`, numbering them from 0. */
export class RecordSealer {
  private counter = 0
  private readonly native: NativeAesGcm | undefined
  private readonly free: Buffer[] = []
  private readonly pooled = new WeakSet<ArrayBufferLike>()

  constructor (private readonly key: Uint8Array, crypto: RecordCrypto = defaultRecordCrypto()) {
    if (key.byteLength !== KEY_BYTES) throw new DirectRecordError(`a record key has ${KEY_BYTES} bytes, not ${key.byteLength}`)
    this.native = crypto === 'native' ? nativeAesGcm()?.(key, 'seal') : undefined
  }

  /**
   * The record as buffers to write in order (header, ciphertext, tag). Natively: one buffer, from a
   * pool when large; hand it back with `recycle` once the socket no longer needs it. Through
   * node:crypto: no concatenation copy, and the payload is encrypted in SEAL_PIECE_BYTES slices:
   * Node allocates a fresh output buffer per update(), and for 1 MiB outputs that allocation (fresh
   * pages each time) made AES-GCM run at ~1 GB/s here against ~2.8 GB/s in 64 KiB slices
   * (OpenSSL's own rate: ~4.4 GB/s).
   */
  seal (type: RecordTypeValue, payload: Uint8Array): Buffer[] {
    if (payload.byteLength > MAX_RECORD_BYTES) throw new DirectRecordError(`record payload of ${payload.byteLength} bytes is over ${MAX_RECORD_BYTES}`)
    if (this.native !== undefined) return [this.sealNative(this.native, type, payload)]
    const header = Buffer.allocUnsafe(RECORD_HEADER_BYTES)
    header[0] = type
    header.writeUInt32BE(payload.byteLength, 1)
    const cipher = createCipheriv(CIPHER, this.key, nonce(this.counter++))
    cipher.setAAD(header)
    const parts: Buffer[] = [header]
    for (let at = 0; at < payload.byteLength; at += SEAL_PIECE_BYTES) {
      parts.push(cipher.update(payload.subarray(at, Math.min(payload.byteLength, at + SEAL_PIECE_BYTES))))
    }
    cipher.final()
    parts.push(cipher.getAuthTag())
    return parts
  }

  /** Hands back the buffers of a sealed record once nothing refers to them (the socket flushed them). */
  recycle (parts: readonly Buffer[]): void {
    for (const p of parts) {
      if (this.pooled.has(p.buffer) && this.free.length < POOL_KEEP) this.free.push(Buffer.from(p.buffer, 0, POOLED_RECORD_BYTES))
    }
  }

  private sealNative (native: NativeAesGcm, type: RecordTypeValue, payload: Uint8Array): Buffer {
    const n = payload.byteLength
    const size = RECORD_HEADER_BYTES + n + TAG_BYTES
    const record = n >= POOLED_PAYLOAD_BYTES && size <= POOLED_RECORD_BYTES ? this.take().subarray(0, size) : Buffer.allocUnsafe(size)
    record[0] = type
    record.writeUInt32BE(n, 1)
    const header = record.subarray(0, RECORD_HEADER_BYTES)
    native.seal(nonce(this.counter++), header, payload, record.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + n), record.subarray(RECORD_HEADER_BYTES + n))
    return record
  }

  private take (): Buffer {
    const buf = this.free.pop()
    if (buf !== undefined) return buf
    const fresh = Buffer.allocUnsafeSlow(POOLED_RECORD_BYTES)
    this.pooled.add(fresh.buffer)
    return fresh
  }
}

export interface OpenedRecord {
  readonly type: RecordTypeValue
  /** The plaintext, possibly in several pieces; released only after its tag was verified. */
  readonly payload: Buffer[]
}

const KNOWN = new Set<number>(Object.values(RecordType))
const AUTH_FAILED = 'record failed authentication (altered, replayed, reordered or wrong key)'

/**
 * Incremental parser and opener for the records of one direction. `push` takes bytes as they
 * arrive and returns the records they complete; it throws DirectRecordError on a bad header, an
 * oversize record or a record that fails authentication (the connection must then be dropped).
 */
export class RecordOpener {
  private counter = 0
  private readonly head = Buffer.alloc(RECORD_HEADER_BYTES)
  private headFill = 0
  private need = -1
  private parts: Buffer[] = []
  private partsBytes = 0
  private failed = false
  private readonly native: NativeAesGcm | undefined
  /** Assembling: the record being copied together (see the constructor). */
  private record: Buffer | undefined

  /**
   * Natively, records are decrypted in place: the chunks pushed must not be used elsewhere. With
   * `assemble`, each record is instead copied into one buffer of its size that `assemble` gives
   * (e.g. from a pool), so the chunks pushed may be reused as soon as `push` returns (a socket's
   * single read buffer) and a record's payload comes out in one piece.
   */
  constructor (private readonly key: Uint8Array, crypto: RecordCrypto = defaultRecordCrypto(), private readonly assemble?: (bytes: number) => Buffer) {
    if (key.byteLength !== KEY_BYTES) throw new DirectRecordError(`a record key has ${KEY_BYTES} bytes, not ${key.byteLength}`)
    this.native = crypto === 'native' ? nativeAesGcm()?.(key, 'open') : undefined
  }

  /** True between records. */
  get atBoundary (): boolean {
    return this.need < 0 && this.headFill === 0
  }

  push (chunk: Uint8Array): OpenedRecord[] {
    if (this.failed) throw new DirectRecordError('record stream already failed')
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    const out: OpenedRecord[] = []
    try {
      let at = 0
      while (at < buf.byteLength) {
        if (this.need < 0) {
          at = this.readHead(buf, at)
          continue
        }
        const take = Math.min(this.need - this.partsBytes, buf.byteLength - at)
        if (this.assemble === undefined) this.parts.push(buf.subarray(at, at + take))
        else this.copyIn(buf, at, take)
        this.partsBytes += take
        at += take
        if (this.partsBytes === this.need) out.push(this.open())
      }
    } catch (err) {
      this.failed = true
      throw err
    }
    return out
  }

  /**
   * Into the record's own buffer. Natively, the ciphertext is decrypted on the way (out of place):
   * one pass over the bytes instead of a copy and then a decryption in place (bench:transfer: the
   * copy was ~30 % of what decrypting cost). The tag is copied as it is.
   */
  private copyIn (buf: Buffer, at: number, take: number): void {
    if (this.record === undefined) {
      const record = (this.assemble as (bytes: number) => Buffer)(this.need)
      this.record = record.byteLength === this.need ? record : record.subarray(0, this.need)
      this.parts.push(this.record)
      this.native?.openBegin(nonce(this.counter), this.head)
    }
    if (this.native === undefined) {
      buf.copy(this.record, this.partsBytes, at, at + take)
      return
    }
    const inBody = Math.max(0, Math.min(take, this.need - TAG_BYTES - this.partsBytes))
    if (inBody > 0) this.native.openUpdate(buf.subarray(at, at + inBody), this.record.subarray(this.partsBytes, this.partsBytes + inBody))
    if (inBody < take) buf.copy(this.record, this.partsBytes + inBody, at + inBody, at + take)
  }

  private readHead (buf: Buffer, at: number): number {
    const take = Math.min(RECORD_HEADER_BYTES - this.headFill, buf.byteLength - at)
    buf.copy(this.head, this.headFill, at, at + take)
    this.headFill += take
    if (this.headFill < RECORD_HEADER_BYTES) return at + take
    const type = this.head[0] ?? 0
    const length = this.head.readUInt32BE(1)
    if (!KNOWN.has(type)) throw new DirectRecordError(`unknown record type ${type}`)
    if (length > MAX_RECORD_BYTES) throw new DirectRecordError(`record of ${length} bytes is over the ${MAX_RECORD_BYTES}-byte limit`)
    this.need = length + TAG_BYTES
    this.headFill = 0
    return at + take
  }

  private open (): OpenedRecord {
    const header = Buffer.from(this.head)
    const type = header[0] as RecordTypeValue
    const decrypted = this.native !== undefined && this.assemble !== undefined
    // A record with no bytes after its header never reached copyIn, which begins the opening.
    if (decrypted && this.record === undefined) this.native?.openBegin(nonce(this.counter), this.head)
    const { body, tag } = splitTag(this.parts, this.partsBytes)
    this.parts = []
    this.partsBytes = 0
    this.need = -1
    this.record = undefined
    if (decrypted) {
      // Decrypted already (copyIn); none of it leaves unless the tag checks out.
      this.counter++
      if (!(this.native as NativeAesGcm).openFinish(tag)) throw new DirectRecordError(AUTH_FAILED)
      return { type, payload: body }
    }
    if (this.native !== undefined) {
      // In place; none of it leaves unless the tag checked out.
      if (!this.native.open(nonce(this.counter++), header, body, tag)) throw new DirectRecordError(AUTH_FAILED)
      return { type, payload: body }
    }
    const decipher = createDecipheriv(CIPHER, this.key, nonce(this.counter++))
    decipher.setAAD(header)
    decipher.setAuthTag(tag)
    // Piece by piece (no concatenation copy); none of it leaves before final() checked the tag.
    const payload = body.map(piece => decipher.update(piece))
    try {
      decipher.final()
    } catch (err) {
      throw new DirectRecordError(AUTH_FAILED, { cause: err })
    }
    return { type, payload }
  }
}

/** Splits a record's pieces into the ciphertext pieces and the 16-byte tag at their end. */
function splitTag (parts: Buffer[], total: number): { body: Buffer[], tag: Buffer } {
  const bodyBytes = total - TAG_BYTES
  const body: Buffer[] = []
  const tag = Buffer.alloc(TAG_BYTES)
  let at = 0
  for (const part of parts) {
    const inBody = Math.max(0, Math.min(part.byteLength, bodyBytes - at))
    if (inBody > 0) body.push(part.subarray(0, inBody))
    if (inBody < part.byteLength) part.copy(tag, Math.max(0, at - bodyBytes), inBody)
    at += part.byteLength
  }
  return { body, tag }
}
