/**
 * Per-file checksums of an image transfer (the header's `checksum`):
 * - 'sha256' names the content: a checkpoint's signed manifest and a re-check before restore
 *   compare against it. ~0.55 s of one core per GiB with SHA-NI, more under load.
 * - 'crc32' (CRC-32/IEEE as zlib's: @node-rs/crc32's PCLMUL code, ~12 GiB/s here; zlib's own, ~4.5,
 *   where that cannot load or with SSI_CRC32=zlib) only catches accidents: a bug or a bit flip
 *   between the file read on one end and the file write on the other. That is all an end-to-end
 *   check has to catch when the channel itself is authenticated (AES-GCM records on the direct
 *   path, Noise on the libp2p stream): tampering on the wire fails there. Migrations use it.
 */
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import * as zlib from 'node:zlib'
import type { ChecksumAlgorithm } from '../../protocol/images.js'

/** A running digest of one file's content. */
export interface FileChecksum {
  update(bytes: Uint8Array): void
  /** Lower-case hex: 64 digits for sha256, 8 for crc32. Call once. */
  digest(): string
}

type Crc32 = (data: Uint8Array, value?: number) => number

/**
 * The fastest CRC-32 here: @node-rs/crc32 (a prebuilt native module: optional, so a missing or
 * unloadable binary falls back), else zlib.crc32 (Node 20.15 / 22.2 on). Same values either way.
 */
function nativeCrc32Function (): Crc32 | undefined {
  if (process.env.SSI_CRC32 !== 'zlib') {
    try {
      return (createRequire(import.meta.url)('@node-rs/crc32') as { crc32: Crc32 }).crc32
    } catch {
      // no prebuilt binary for this platform: zlib's below
    }
  }
  return (zlib as unknown as { crc32?: Crc32 }).crc32
}
const nativeCrc32 = nativeCrc32Function()

/** True when crc32 runs at native speed here (senders then prefer it). */
export const FAST_CRC32 = nativeCrc32 !== undefined

let table: Uint32Array | undefined
/** Plain CRC-32 (IEEE, as zlib's): slow but correct, for a peer that chose crc32 on an old Node. */
export function portableCrc32 (data: Uint8Array, value = 0): number {
  table ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n
    for (let k = 0; k < 8; k++) c = (c & 1) !== 0 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    return c >>> 0
  })
  let c = ~value >>> 0
  for (const byte of data) c = (table[(c ^ byte) & 0xff] ?? 0) ^ (c >>> 8)
  return ~c >>> 0
}

const crc32 = nativeCrc32 ?? portableCrc32

class Crc32Checksum implements FileChecksum {
  private value = 0
  update (bytes: Uint8Array): void { this.value = crc32(bytes, this.value) }
  digest (): string { return this.value.toString(16).padStart(8, '0') }
}

class Sha256Checksum implements FileChecksum {
  private readonly hash = createHash('sha256')
  update (bytes: Uint8Array): void { this.hash.update(bytes) }
  digest (): string { return this.hash.digest('hex') }
}

export function createFileChecksum (algorithm: ChecksumAlgorithm): FileChecksum {
  return algorithm === 'crc32' ? new Crc32Checksum() : new Sha256Checksum()
}
