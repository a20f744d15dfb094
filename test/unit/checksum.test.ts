/**
 * The crc32 of image transfers (src/migration/transfer/checksum.ts) is the same CRC-32/IEEE
 * whichever implementation runs (@node-rs/crc32, zlib's, the portable one), piece by piece or
 * whole: nodes with different ones must agree on every file.
 */
import { randomBytes } from 'node:crypto'
import * as zlib from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { createFileChecksum, portableCrc32 } from '../../src/migration/transfer/checksum.js'

describe('crc32 file checksum', () => {
  it('matches the portable CRC-32 and zlib\'s, over any split of the data', () => {
    for (const size of [0, 1, 63, 64, 4096, 1_000_003]) {
      const data = randomBytes(size)
      const c = createFileChecksum('crc32')
      for (let at = 0; at < size;) {
        const n = Math.min(size - at, 1 + ((at * 7919) % 70_000))
        c.update(data.subarray(at, at + n))
        at += n
      }
      const expected = portableCrc32(data).toString(16).padStart(8, '0')
      expect(c.digest()).toBe(expected)
      const zlibCrc = (zlib as unknown as { crc32?: (d: Uint8Array) => number }).crc32
      if (zlibCrc !== undefined) expect(zlibCrc(data).toString(16).padStart(8, '0')).toBe(expected)
    }
  })

  it('loads the PCLMUL implementation here (@node-rs/crc32 has a prebuilt binary for this platform)', async () => {
    const { crc32 } = await import('@node-rs/crc32')
    const data = randomBytes(100_000)
    expect(crc32(data)).toBe(portableCrc32(data))
  })
})
