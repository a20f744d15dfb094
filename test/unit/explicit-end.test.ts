/**
 * The explicit-end framing of post-copy's page channel (src/migration/explicit-end.ts): bytes pass
 * intact in both directions whatever the chunking, a clean end of the underlying channel without
 * the END frame is an error (a killed target's libp2p stream may end cleanly), and the page bridge
 * over it reports such an end as a broken pull (CRIU killed first) instead of passing an EOF on to
 * CRIU's page server.
 */
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { loopbackPair } from '../helpers/loopback.js'
import { MAX_FRAME_BYTES, withExplicitEnd } from '../../src/migration/explicit-end.js'
import { bridge, PageBridgeError } from '../../src/migration/page-bridge.js'
import { ChannelClosedError } from '../../src/migration/ports.js'
import { createMemoryChannelPair } from '../../src/migration/transfer.js'
import type { ByteChannel } from '../../src/migration/ports.js'

const cleanups: Array<() => void> = []
afterEach(() => { for (const c of cleanups.splice(0)) c() })

async function readAll (channel: ByteChannel): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const chunk of channel.read()) parts.push(chunk)
  return Buffer.concat(parts)
}

/** A read-only channel that yields `bytes` in the given piece sizes (cycled), then ends cleanly. */
function replaying (bytes: Buffer, sizes: number[]): ByteChannel {
  return {
    write: async () => { throw new Error('read-only') },
    closeWrite: async () => {},
    abort: () => {},
    read: () => ({
      async * [Symbol.asyncIterator] () {
        for (let at = 0, i = 0; at < bytes.byteLength; i++) {
          const n = sizes[i % sizes.length]!
          yield bytes.subarray(at, at + n)
          at += n
        }
      }
    })
  }
}

/** [the daemon's end, "CRIU"'s end] of a loopback TCP connection. */
async function socketPair (): Promise<[Socket, Socket]> {
  const [daemon, criu] = await loopbackPair()
  cleanups.push(() => { daemon.destroy(); criu.destroy() })
  return [daemon, criu]
}

describe('explicit-end channel', () => {
  it('passes bytes intact both ways and ends at the END frame', async () => {
    const [rawA, rawB] = createMemoryChannelPair({ highWaterMark: 64 * 1024 * 1024 })
    const a = withExplicitEnd(rawA)
    const b = withExplicitEnd(rawB)
    const pieces = [randomBytes(1), randomBytes(300_000), randomBytes(MAX_FRAME_BYTES + 3), randomBytes(0), randomBytes(4096)]
    const got = readAll(b)
    const back = readAll(a)
    for (const p of pieces) await a.write(p)
    await a.closeWrite()
    await b.write(Buffer.from('answer'))
    await b.closeWrite()
    expect((await got).equals(Buffer.concat(pieces))).toBe(true)
    expect((await back).toString()).toBe('answer')
  })

  it('parses frames split anywhere across chunks', async () => {
    const [rawA, rawB] = createMemoryChannelPair({ highWaterMark: 64 * 1024 * 1024 })
    const a = withExplicitEnd(rawA)
    const data = randomBytes(300_000)
    const wire = readAll(rawB)
    await a.write(data.subarray(0, 5))
    await a.write(data.subarray(5, 100_000))
    await a.write(data.subarray(100_000))
    await a.closeWrite()
    const bytes = await wire
    for (const sizes of [[1], [3, 7], [4], [65_537, 2]]) {
      expect((await readAll(withExplicitEnd(replaying(bytes, sizes)))).equals(data)).toBe(true)
    }
  })

  it('refuses a clean end without the END frame: a peer cut off is not a peer done', async () => {
    const [rawA, rawB] = createMemoryChannelPair()
    const a = withExplicitEnd(rawA)
    const got = readAll(withExplicitEnd(rawB))
    await a.write(randomBytes(1000))
    await rawA.closeWrite() // what a killed peer's stream can look like: EOF, no END
    await expect(got).rejects.toThrow(ChannelClosedError)
    await expect(got).rejects.toThrow(/without its end marker/)
  })

  it('refuses bytes after END and a frame over the limit', async () => {
    const end = Buffer.alloc(4)
    await expect(readAll(withExplicitEnd(replaying(Buffer.concat([end, Buffer.from([0, 0, 0, 1, 9])]), [9])))).rejects.toThrow(/after the end/)
    const huge = Buffer.alloc(4)
    huge.writeUInt32BE(MAX_FRAME_BYTES + 1)
    await expect(readAll(withExplicitEnd(replaying(huge, [4])))).rejects.toThrow(/over/)
  })

  it('page bridge on the source: a target whose stream just ends is a broken pull, torn down before CRIU gets an EOF', async () => {
    const [daemon, criu] = await socketPair()
    const [sourceRaw, targetRaw] = createMemoryChannelPair()
    let criuSawEof = false
    let eofBeforeTeardown: boolean | undefined
    criu.on('end', () => { criuSawEof = true })
    criu.on('error', () => {})
    criu.resume()
    const done = bridge(daemon, withExplicitEnd(sourceRaw), new AbortController().signal, {
      // The daemon kills CRIU here: it must not have had an EOF before (it would kill the job's tree).
      beforeTeardown: async () => {
        await new Promise(resolve => setTimeout(resolve, 50))
        eofBeforeTeardown = criuSawEof
      }
    })
    done.catch(() => {})
    const target = withExplicitEnd(targetRaw)
    await target.write(Buffer.from('page request'))
    await targetRaw.closeWrite() // the target died; its stream ended cleanly
    await expect(done).rejects.toThrow(PageBridgeError)
    await expect(done).rejects.toThrow(/without its end marker/)
    expect(eofBeforeTeardown).toBe(false)
  })

  it('page bridge on the source: a target that ends properly ends the pull', async () => {
    const [daemon, criu] = await socketPair()
    const [sourceRaw, targetRaw] = createMemoryChannelPair()
    const criuGot: Buffer[] = []
    const criuEnded = new Promise<void>(resolve => { criu.on('data', (d: Buffer) => criuGot.push(d)).on('end', () => { criu.end(); resolve() }) })
    const done = bridge(daemon, withExplicitEnd(sourceRaw), new AbortController().signal)
    const target = withExplicitEnd(targetRaw)
    const fromSource = readAll(target)
    await target.write(Buffer.from('last request'))
    await target.closeWrite()
    await criuEnded
    expect(Buffer.concat(criuGot).toString()).toBe('last request')
    await expect(done).resolves.toMatchObject({ received: 12 })
    expect((await fromSource).byteLength).toBe(0)
  })
})
