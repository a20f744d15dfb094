/**
 * The xsalsa20 (pnet cipher) work-around in src/node/bulk-transport.ts: without it, one large
 * message followed by alternating use of two ciphers (the two directions of a pnet connection)
 * grows the shared wasm memory until every send throws "Maximum memory size exceeded".
 */
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import { patchPnetCipher } from '../../src/node/bulk-transport.js'

interface Cipher { update(input: Uint8Array, output?: Uint8Array): Uint8Array }
const XSalsa20 = createRequire(import.meta.url)('xsalsa20') as (nonce: Uint8Array, key: Uint8Array) => Cipher

describe('pnet cipher work-around', () => {
  it('is installed and survives 1 MiB messages alternating with small ones in two ciphers', () => {
    expect(patchPnetCipher()).toBe(true)
    const out = XSalsa20(Buffer.alloc(24, 1), Buffer.alloc(32, 2))
    const back = XSalsa20(Buffer.alloc(24, 3), Buffer.alloc(32, 4))
    const big = Buffer.alloc(1024 * 1024)
    for (let i = 0; i < 300; i++) {
      out.update(big)
      back.update(Buffer.alloc(100))
    }
  })

  it('produces the same keystream as feeding the cipher in one piece', () => {
    const nonce = randomBytes(24)
    const key = randomBytes(32)
    const data = randomBytes(3 * 1024 * 1024 + 77)
    const whole = XSalsa20(nonce, key).update(data)
    const pieces = XSalsa20(nonce, key)
    const parts = [data.subarray(0, 1000), data.subarray(1000, 2 * 1024 * 1024), data.subarray(2 * 1024 * 1024)].map(p => pieces.update(p))
    expect(Buffer.concat(parts).equals(Buffer.from(whole))).toBe(true)
    // and it really is a cipher: decrypting restores the data
    expect(Buffer.from(XSalsa20(nonce, key).update(whole)).equals(data)).toBe(true)
  })
})
