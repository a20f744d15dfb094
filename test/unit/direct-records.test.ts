/**
 * Direct-connection records (src/node/direct/records.ts) sealed and opened through OpenSSL's EVP
 * functions (src/native/aes-gcm.ts) and through node:crypto: the same bytes either way, pooled
 * output buffers reused without mixing records up, and in-place opening that releases nothing
 * unauthenticated.
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { nativeAesGcm } from '../../src/native/aes-gcm.js'
import { DirectRecordError, RecordOpener, RecordSealer, RecordType, defaultRecordCrypto } from '../../src/node/direct/records.js'
import type { RecordCrypto } from '../../src/node/direct/records.js'

const SIZES = [0, 1, 16, 5000, 65_535, 65_536, 1024 * 1024 + 5, 1024 * 1024 + 4096, 4 * 1024 * 1024]

function openOne (opener: RecordOpener, parts: Buffer[]): Buffer {
  const bytes = Buffer.concat(parts)
  const records = [...opener.push(bytes.subarray(0, 3)), ...opener.push(bytes.subarray(3, 70_000)), ...opener.push(bytes.subarray(70_000))]
  expect(records).toHaveLength(1)
  return Buffer.concat(records[0]?.payload ?? [])
}

describe('direct records', () => {
  it('binds OpenSSL\'s EVP functions in this Node (native is the default)', () => {
    expect(nativeAesGcm()).toBeDefined()
    expect(defaultRecordCrypto()).toBe('native')
  })

  for (const [from, to] of [['native', 'node'], ['node', 'native'], ['native', 'native']] as Array<[RecordCrypto, RecordCrypto]>) {
    it(`sealed through ${from} open through ${to}, for every payload size`, () => {
      const key = randomBytes(32)
      const sealer = new RecordSealer(key, from)
      const opener = new RecordOpener(key, to)
      for (const size of SIZES) {
        const payload = randomBytes(size)
        const parts = sealer.seal(RecordType.data, payload)
        expect(openOne(opener, parts).equals(payload)).toBe(true)
        sealer.recycle(parts)
      }
    })
  }

  it('reuses pooled record buffers only after recycle, never two records in one buffer', () => {
    const key = randomBytes(32)
    const sealer = new RecordSealer(key, 'native')
    const opener = new RecordOpener(key, 'node')
    const payloads = [1, 2, 3, 4, 5, 6].map(() => randomBytes(1024 * 1024 + 5))
    const held = payloads.slice(0, 3).map(p => sealer.seal(RecordType.data, p))
    expect(new Set(held.map(h => h[0]?.buffer)).size).toBe(3)
    const copies = held.map(h => Buffer.concat(h))
    for (const h of held) sealer.recycle(h)
    const later = payloads.slice(3).map(p => sealer.seal(RecordType.data, p))
    for (const parts of later) expect(held.some(h => h[0]?.buffer === parts[0]?.buffer)).toBe(true)
    // The records sealed before the reuse are intact in their copies, the later ones in the buffers.
    for (const [i, c] of copies.entries()) expect(openOne(opener, [c]).equals(payloads[i] ?? Buffer.alloc(0))).toBe(true)
    for (const [i, parts] of later.entries()) expect(openOne(opener, parts).equals(payloads[i + 3] ?? Buffer.alloc(0))).toBe(true)
  })

  it('opens in place but refuses a flipped bit natively, releasing nothing', () => {
    const key = randomBytes(32)
    const parts = new RecordSealer(key, 'node').seal(RecordType.data, randomBytes(100_000))
    const bytes = Buffer.concat(parts)
    bytes[50_000] = (bytes[50_000] ?? 0) ^ 1
    expect(() => new RecordOpener(key, 'native').push(bytes)).toThrow(DirectRecordError)
  })

  for (const crypto of ['native', 'node'] as RecordCrypto[]) {
    it(`assembling through ${crypto}: records cut anywhere across one reused read buffer come out whole; a flipped bit in body or tag is refused`, () => {
      const key = randomBytes(32)
      const sealer = new RecordSealer(key, 'native')
      const payloads = [0, 1, 15, 16, 17, 4096, 65_536 + 3, 1024 * 1024].map(n => randomBytes(n))
      const wire = Buffer.concat(payloads.flatMap(p => sealer.seal(RecordType.data, p).map(b => Buffer.from(b))))
      for (const cut of [1, 7, 4093, 65_536, 1024 * 1024 + 13]) {
        const opener = new RecordOpener(key, crypto, n => Buffer.alloc(n))
        const read = Buffer.alloc(cut) // the socket's one buffer, overwritten by every read
        const out: Buffer[] = []
        for (let at = 0; at < wire.byteLength; at += cut) {
          const n = wire.copy(read, 0, at, Math.min(wire.byteLength, at + cut))
          for (const r of opener.push(read.subarray(0, n))) out.push(Buffer.concat(r.payload))
        }
        expect(out.map(b => b.toString('hex'))).toEqual(payloads.map(p => p.toString('hex')))
      }
      const record = Buffer.concat(sealer.seal(RecordType.data, randomBytes(5000)).map(b => Buffer.from(b)))
      for (const at of [100, record.byteLength - 3]) { // body, tag
        const bad = Buffer.from(record)
        bad[at] = (bad[at] ?? 0) ^ 1
        expect(() => new RecordOpener(key, crypto, n => Buffer.alloc(n)).push(bad)).toThrow(DirectRecordError)
      }
    })
  }
})
