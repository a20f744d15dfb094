import { describe, expect, it } from 'vitest'
import { Packr } from 'msgpackr'
import { FrameDecoder, decodeFrameBody, encodeFrame, FRAME_HEADER_BYTES } from '../../src/api/framing.js'
import { FrameTooLargeError, MalformedFrameError } from '../../src/api/errors.js'

const frames = (decoder: FrameDecoder, chunk: Uint8Array): unknown[] => decoder.push(chunk).map(decodeFrameBody)

describe('framing', () => {
  it('round-trips a value through one frame with a big-endian length prefix', () => {
    const value = { v: 1, id: 7, type: 'call', method: 'nodes', params: { a: [1, 'x', null], b: 1.5 } }
    const frame = encodeFrame(value)
    expect(frame.readUInt32BE(0)).toBe(frame.length - FRAME_HEADER_BYTES)
    expect(frames(new FrameDecoder(), frame)).toEqual([value])
  })

  it('decodes a frame delivered one byte at a time', () => {
    const frame = encodeFrame({ hello: 'world', n: 42 })
    const decoder = new FrameDecoder()
    const out: unknown[] = []
    for (const byte of frame) out.push(...frames(decoder, Uint8Array.of(byte)))
    expect(out).toEqual([{ hello: 'world', n: 42 }])
    expect(decoder.bufferedBytes).toBe(0)
  })

  it('decodes many frames in one chunk, and a chunk that ends mid-header or mid-body', () => {
    const values = Array.from({ length: 500 }, (_, i) => ({ i, s: 'x'.repeat(i % 7) }))
    const all = Buffer.concat(values.map(v => encodeFrame(v)))
    expect(frames(new FrameDecoder(), all)).toEqual(values)
    for (const cut of [2, 5, 13, all.length - 3]) {
      const decoder = new FrameDecoder()
      expect([...frames(decoder, all.subarray(0, cut)), ...frames(decoder, all.subarray(cut))]).toEqual(values)
    }
  })

  it('reassembles a large frame from small chunks in linear time', () => {
    const big = { data: Buffer.alloc(900 * 1024, 7) }
    const frame = encodeFrame(big)
    const decoder = new FrameDecoder()
    const start = performance.now()
    const out: unknown[] = []
    for (let off = 0; off < frame.length; off += 16) out.push(...frames(decoder, frame.subarray(off, off + 16)))
    expect(performance.now() - start).toBeLessThan(2000)
    expect(out).toHaveLength(1)
    expect(Buffer.compare((out[0] as { data: Buffer }).data, big.data)).toBe(0)
  })

  it('accepts a frame of exactly the limit and rejects a length prefix above it, for good', () => {
    const decoder = new FrameDecoder(10)
    const ok = Buffer.alloc(14); ok.writeUInt32BE(10, 0)
    expect(decoder.push(ok)).toHaveLength(1)
    const tooBig = Buffer.alloc(4); tooBig.writeUInt32BE(11, 0)
    expect(() => decoder.push(tooBig)).toThrow(FrameTooLargeError)
    // The stream cannot be resynchronised: every later push fails too.
    expect(() => decoder.push(encodeFrame(1))).toThrow(FrameTooLargeError)
  })

  it('rejects an oversized length prefix before its body arrives', () => {
    const header = Buffer.alloc(4); header.writeUInt32BE(0xffffffff, 0)
    expect(() => new FrameDecoder().push(header)).toThrow(/4294967295 bytes exceeds the limit of 1048576/)
  })

  it('refuses to encode a frame above the limit', () => {
    expect(() => encodeFrame({ s: 'x'.repeat(100) }, 50)).toThrow(FrameTooLargeError)
  })

  it('reports malformed msgpack bodies (truncated, trailing bytes, empty) as MalformedFrameError', () => {
    const body = new Packr({ useRecords: false }).pack({ a: 1 })
    expect(() => decodeFrameBody(body.subarray(0, body.length - 1))).toThrow(MalformedFrameError)
    expect(() => decodeFrameBody(Buffer.concat([body, Buffer.from([1])]))).toThrow(MalformedFrameError)
    expect(() => decodeFrameBody(Buffer.alloc(0))).toThrow(/not valid msgpack/)
  })

  it('decodes maps as plain objects without prototype pollution', () => {
    // {"__proto__": {"polluted": 1}} hand-encoded
    const body = Buffer.from([0x81, 0xa9, ...Buffer.from('__proto__'), 0x81, 0xa8, ...Buffer.from('polluted'), 0x01])
    const value = decodeFrameBody(body) as object
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype)
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })
})
