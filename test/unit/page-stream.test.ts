/**
 * Streamed pages of stop-and-copy (src/migration/page-stream.ts) with a loopback socket in place
 * of CRIU's dump and an in-memory channel in place of the bulk transport: the stream reaches the
 * target and the local recording byte for byte, the target's answers reach "CRIU" only once the
 * recording holds what came before them, a broken channel breaks the dump's socket, and the
 * vpid header frames the channel. The real CRIU page server is covered by the migrate suites.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { loopbackPair } from '../helpers/loopback.js'
import { pagesHeader, readPagesHeader, teePages } from '../../src/migration/page-stream.js'
import { createMemoryChannelPair } from '../../src/migration/transfer.js'
import type { ByteChannel } from '../../src/migration/ports.js'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => { for (const c of cleanups.splice(0)) await c() })

async function tmp (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ssi-page-stream-'))
  cleanups.push(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

/** [the daemon's end, "CRIU dump"'s end] of a loopback TCP connection. */
async function socketPair (): Promise<[Socket, Socket]> {
  const [daemon, dumper] = await loopbackPair()
  cleanups.push(async () => { daemon.destroy(); dumper.destroy() })
  return [daemon, dumper]
}

async function readAll (channel: ByteChannel): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const chunk of channel.read()) parts.push(chunk)
  return Buffer.concat(parts)
}

const never = new AbortController().signal

describe('page stream', () => {
  it('passes the dump\'s bytes to the target and the recording, and the target\'s answer back after them', async () => {
    const dir = await tmp()
    const file = join(dir, '1.pages')
    const [daemon, dumper] = await socketPair()
    const [source, target] = createMemoryChannelPair()
    const pages = randomBytes(3 * 1024 * 1024 + 17)
    const tee = teePages(daemon, source, file, never)
    const answer = new Promise<Buffer>(resolve => dumper.once('data', resolve))
    dumper.write(pages)
    dumper.end()
    const got = await readAll(target)
    // The answer travels only after the recording holds every byte sent before it.
    await target.write(Buffer.from('ack!'))
    await target.closeWrite()
    expect((await answer).toString()).toBe('ack!')
    expect((await stat(file)).size).toBe(pages.byteLength)
    expect(await tee).toEqual({ bytes: pages.byteLength })
    expect(got.equals(pages)).toBe(true)
    expect((await readFile(file)).equals(pages)).toBe(true)
  })

  it('a broken channel breaks the dump\'s connection (CRIU then fails the dump and resumes the tree)', async () => {
    const dir = await tmp()
    const [daemon, dumper] = await socketPair()
    const [source] = createMemoryChannelPair()
    const closed = new Promise<void>(resolve => dumper.once('close', () => { resolve() }))
    dumper.on('error', () => {})
    const tee = teePages(daemon, source, join(dir, '1.pages'), never)
    dumper.write(randomBytes(64 * 1024))
    source.abort(new Error('link down'))
    dumper.write(randomBytes(64 * 1024))
    await expect(tee).rejects.toThrow(/page stream broke/)
    await closed
  })

  it('refuses to overwrite an earlier recording', async () => {
    const dir = await tmp()
    const [daemon, dumper] = await socketPair()
    const [source, target] = createMemoryChannelPair()
    const first = teePages(daemon, source, join(dir, 'x'), never)
    dumper.end()
    await readAll(target)
    await target.closeWrite()
    await first
    const [daemon2] = await socketPair()
    await expect(teePages(daemon2, createMemoryChannelPair()[0], join(dir, 'x'), never)).rejects.toThrow(/EEXIST/)
  })

  it('frames the channel with the vpid, whatever the chunking', async () => {
    const [a, b] = createMemoryChannelPair()
    const header = pagesHeader(4_000_000_123)
    await a.write(header.subarray(0, 3))
    await a.write(Buffer.concat([header.subarray(3), Buffer.from('pages')]))
    await a.closeWrite()
    const { vpid, rest } = await readPagesHeader(b, never)
    expect(vpid).toBe(4_000_000_123)
    expect((await readAll(rest)).toString()).toBe('pages')
  })
})
