/**
 * Image-transfer protocol logic over the in-memory ByteChannel pair: round trips, refusals before
 * anything is written, integrity failures with clean-up, cancellation, compression, progress.
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, mkdir, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as zlib from 'node:zlib'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  ImageIntegrityError, ImageTransferError, createMemoryChannelPair, receiveImageDir, sendImageDir
} from '../../src/migration/transfer.js'
import { portableCrc32 } from '../../src/migration/transfer/checksum.js'
import { FrameType, encodeTrailer, imageNameProblem } from '../../src/protocol/images.js'
import { data, header, receiveFrames } from '../helpers/image-frames.js'
import type { ByteChannel } from '../../src/migration/ports.js'
import type { ReceiveOptions, SendOptions, TransferProgress } from '../../src/migration/transfer.js'
import type { ImageFile } from '../../src/protocol/images.js'

let root: string
beforeEach(async () => { root = await mkdtemp(join(tmpdir(), 'ssi-transfer-unit-')) })
afterEach(async () => { await rm(root, { recursive: true, force: true }) })

const MiB = 1024 * 1024

async function makeImageDir (files: Record<string, Buffer>): Promise<string> {
  const dir = join(root, 'src')
  await mkdir(dir)
  for (const [name, data] of Object.entries(files)) await writeFile(join(dir, name), data, { mode: 0o640 })
  return dir
}

async function expectSameDir (a: string, b: string): Promise<void> {
  const names = (await readdir(a)).sort()
  expect((await readdir(b)).sort()).toEqual(names)
  for (const n of names) {
    expect((await readFile(join(b, n))).equals(await readFile(join(a, n)))).toBe(true)
    expect((await stat(join(b, n))).mode & 0o777).toBe((await stat(join(a, n))).mode & 0o777)
  }
}

/** Wraps a channel so a test can rewrite or drop what is written through it. */
function tamper (inner: ByteChannel, edit: (chunk: Uint8Array, offset: number) => Uint8Array | undefined): ByteChannel {
  let offset = 0
  return {
    write: async (chunk, signal) => {
      const out = edit(chunk, offset)
      offset += chunk.byteLength
      if (out !== undefined) await inner.write(out, signal)
    },
    closeWrite: async (signal) => { await inner.closeWrite(signal) },
    read: (signal) => inner.read(signal),
    abort: (err) => { inner.abort(err) }
  }
}

function flip (chunk: Uint8Array, at: number, mask: number): void {
  chunk[at] = (chunk[at] ?? 0) ^ mask
}

async function transfer (src: string, dest: string, send: SendOptions = {}, recv: Partial<ReceiveOptions> = {}, wrap = (c: ByteChannel) => c) {
  const [a, b] = createMemoryChannelPair()
  const [sent, received] = await Promise.allSettled([
    sendImageDir(wrap(a), src, send),
    receiveImageDir(b, dest, { maxTotalBytes: 1 << 30, ...recv })
  ])
  return { sent, received }
}

/** `transfer` with the byte at stream offset `at` XORed with `mask` on its way. */
async function transferFlipping (src: string, dest: string, at: number, mask: number, send: SendOptions = {}, recv: Partial<ReceiveOptions> = {}): ReturnType<typeof transfer> {
  return await transfer(src, dest, send, recv, c => tamper(c, (chunk, offset) => {
    if (at >= offset && at < offset + chunk.byteLength) flip(chunk, at - offset, mask)
    return chunk
  }))
}

function reason (r: PromiseSettledResult<unknown>): ImageTransferError {
  expect(r.status).toBe('rejected')
  const err = (r as PromiseRejectedResult).reason as unknown
  expect(err).toBeInstanceOf(ImageTransferError)
  return err as ImageTransferError
}

async function exists (path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false)
}

describe('image names', () => {
  it('accepts plain names and refuses paths, dot entries, NUL and control characters', () => {
    for (const ok of ['pages-1.img', 'core-4711.img', 'stats-dump', 'tmpfs-dev-67.tar.gz.img', 'x y']) expect(imageNameProblem(ok)).toBeUndefined()
    for (const bad of ['', '.', '..', '../evil', '/etc/passwd', 'a/b', 'a\0b', 'a\nb', 'a\\b', 'x'.repeat(256)]) expect(imageNameProblem(bad)).toBeDefined()
  })
})

describe('image transfer over an in-memory channel', () => {
  it('moves a directory byte-identically, with modes, empty files and chunk-crossing sizes', async () => {
    const src = await makeImageDir({
      'pages-1.img': randomBytes(3 * MiB + 17), 'core-1.img': randomBytes(1000), 'empty.img': Buffer.alloc(0),
      'mm-1.img': randomBytes(MiB), 'zz-empty': Buffer.alloc(0)
    })
    const dest = join(root, 'dest')
    const { sent, received } = await transfer(src, dest, { chunkBytes: 256 * 1024 })
    expect(sent.status).toBe('fulfilled')
    expect(received.status).toBe('fulfilled')
    await expectSameDir(src, dest)
    const summary = (received as PromiseFulfilledResult<Awaited<ReturnType<typeof receiveImageDir>>>).value
    expect(summary.files).toBe(5)
    expect(summary.bytes).toBe(4 * MiB + 1017)
    expect(summary.images.find(f => f.name === 'empty.img')?.sha256).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  })

  it('reports progress on both ends, ending at the total', async () => {
    const src = await makeImageDir({ 'pages-1.img': randomBytes(8 * MiB) })
    const seen: TransferProgress[] = []
    const got: TransferProgress[] = []
    const { sent } = await transfer(src, join(root, 'dest'), { onProgress: p => seen.push(p) }, { onProgress: p => got.push(p) })
    expect(sent.status).toBe('fulfilled')
    for (const list of [seen, got]) {
      expect(list.length).toBeGreaterThan(0)
      expect(list.at(-1)?.doneBytes).toBe(8 * MiB)
      expect(list.at(-1)?.totalBytes).toBe(8 * MiB)
      expect(list.at(-1)?.etaMs).toBe(0)
    }
  })

  it('detects a flipped byte in transit, keeps nothing and tells the sender', async () => {
    const src = await makeImageDir({ 'a.img': randomBytes(2 * MiB), 'b.img': randomBytes(2 * MiB) })
    const dest = join(root, 'dest')
    const flipAt = 3 * MiB
    const { sent, received } = await transferFlipping(src, dest, flipAt, 0x40)
    const r = reason(received)
    expect(r).toBeInstanceOf(ImageIntegrityError)
    expect(r.file).toBe('b.img')
    expect(r.message).toMatch(/sha256 mismatch/)
    const s = reason(sent)
    expect(s).toBeInstanceOf(ImageIntegrityError)
    expect(s.remote).toBe(true)
    expect(await exists(dest)).toBe(false)
  })

  it('leaves out the files `skip` names (CRIU\'s logs, which a post-copy dump still writes while its images go)', async () => {
    const src = await makeImageDir({ 'pages-1.img': randomBytes(300_000), 'core-1.img': randomBytes(700), 'dump-1-2-3.log': randomBytes(70_000) })
    const dest = join(root, 'dest-skip')
    const { sent } = await transfer(src, dest, { checksum: 'crc32', skip: name => name.endsWith('.log') })
    expect(sent.status).toBe('fulfilled')
    expect((await readdir(dest)).sort()).toEqual(['core-1.img', 'pages-1.img'])
  })

  it('checks with crc32 when the sender asks; the receiver computes sha256 only if asked', async () => {
    const data = { 'pages-1.img': randomBytes(3 * MiB + 5), 'core-1.img': randomBytes(700), 'empty.img': Buffer.alloc(0) }
    const src = await makeImageDir(data)
    for (const sha256 of [true, false]) {
      const dest = join(root, `dest-${String(sha256)}`)
      const { sent, received } = await transfer(src, dest, { checksum: 'crc32', chunkBytes: 256 * 1024 }, { sha256 })
      expect(sent.status).toBe('fulfilled')
      await expectSameDir(src, dest)
      const { images } = (received as PromiseFulfilledResult<Awaited<ReturnType<typeof receiveImageDir>>>).value
      for (const f of images) {
        expect(f.sha256).toBe(sha256 ? createHash('sha256').update(data[f.name as keyof typeof data]).digest('hex') : undefined)
      }
    }
  })

  it('detects a flipped byte in transit with crc32 too', async () => {
    const src = await makeImageDir({ 'a.img': randomBytes(2 * MiB), 'b.img': randomBytes(2 * MiB) })
    const dest = join(root, 'dest')
    const { sent, received } = await transferFlipping(src, dest, MiB, 0x01, { checksum: 'crc32' }, { sha256: false })
    const r = reason(received)
    expect(r).toBeInstanceOf(ImageIntegrityError)
    expect(r.file).toBe('a.img')
    expect(r.message).toMatch(/crc32 mismatch/)
    expect(reason(sent).remote).toBe(true)
    expect(await exists(dest)).toBe(false)
  })

  it('reuses its read buffers over a channel that copies on write, byte-identically', async () => {
    const src = await makeImageDir({ 'pages-1.img': randomBytes(5 * MiB + 3), 'pages-2.img': randomBytes(MiB - 1), 'x.img': randomBytes(10) })
    const dest = join(root, 'dest')
    const copying = (c: ByteChannel): ByteChannel => ({ ...tamper(c, chunk => Uint8Array.from(chunk)), copiesOnWrite: true })
    const { sent, received } = await transfer(src, dest, { chunkBytes: 128 * 1024 }, {}, copying)
    expect(sent.status).toBe('fulfilled')
    expect(received.status).toBe('fulfilled')
    await expectSameDir(src, dest)
  })

  it('sends the frames of small files together, in order, over channels that copy on write or keep what they get', async () => {
    const files: Record<string, Buffer> = { 'pages-1.img': randomBytes(3 * MiB + 5) }
    for (let i = 0; i < 40; i++) files[`core-${i}.img`] = randomBytes(i * 397) // 0-15 KiB: gathered
    files['big.img'] = randomBytes(200 * 1024) // large: its own write, between gathered ones
    const src = await makeImageDir(files)
    for (const copiesOnWrite of [true, false]) {
      const dest = join(root, `dest-${String(copiesOnWrite)}`)
      let writes = 0
      // A channel that keeps the chunks it gets must be given ones no one writes into afterwards.
      const counting = (c: ByteChannel): ByteChannel => ({ ...tamper(c, chunk => { writes++; return copiesOnWrite ? Uint8Array.from(chunk) : chunk }), copiesOnWrite })
      const { sent, received } = await transfer(src, dest, { chunkBytes: 256 * 1024 }, {}, counting)
      expect(sent.status).toBe('fulfilled')
      expect(received.status).toBe('fulfilled')
      await expectSameDir(src, dest)
      // header, 13 page chunks, big.img, trailer, and the 40 small files (~310 KB) in a few 64 KiB
      // writes: 25 in all, against 55 with a write per file
      expect(writes).toBeLessThan(30)
    }
  })

  it('has a portable crc32 equal to zlib\'s', () => {
    const data = randomBytes(100_003)
    const zlibCrc = (zlib as unknown as { crc32?: (d: Uint8Array, v?: number) => number }).crc32
    const expected = zlibCrc?.(data.subarray(50), zlibCrc(data.subarray(0, 50)))
    expect(portableCrc32(data.subarray(50), portableCrc32(data.subarray(0, 50)))).toBe(expected ?? portableCrc32(data))
    expect(portableCrc32(Buffer.from('123456789'))).toBe(0xcbf43926)
  })

  it('leaves a pre-existing destination dir empty after a failure', async () => {
    const src = await makeImageDir({ 'a.img': randomBytes(MiB) })
    const dest = join(root, 'dest')
    await mkdir(dest)
    const { received } = await transfer(src, dest, {}, {}, c => tamper(c, (chunk) => {
      if (chunk.byteLength > 1000) flip(chunk, 500, 1)
      return chunk
    }))
    expect(reason(received)).toBeInstanceOf(ImageIntegrityError)
    expect(await readdir(dest)).toEqual([])
  })

  it('never overwrites an existing file, and does not delete it on failure', async () => {
    const src = await makeImageDir({ 'a.img': randomBytes(1000), 'b.img': randomBytes(1000) })
    const dest = join(root, 'dest')
    await mkdir(dest)
    await writeFile(join(dest, 'b.img'), 'precious')
    const { sent, received } = await transfer(src, dest)
    expect(reason(received).code).toBe('exists')
    expect(reason(sent).code).toBe('exists')
    expect(await readdir(dest)).toEqual(['b.img'])
    expect(await readFile(join(dest, 'b.img'), 'utf8')).toBe('precious')
  })

  it('compresses with zstd on the wire and still arrives byte-identically', async () => {
    const src = await makeImageDir({ 'pages-1.img': Buffer.alloc(4 * MiB, 7), 'core-1.img': randomBytes(300 * 1024), 'e': Buffer.alloc(0) })
    const dest = join(root, 'dest')
    const { sent, received } = await transfer(src, dest, { compress: 'zstd' })
    expect(received.status).toBe('fulfilled')
    const summary = (sent as PromiseFulfilledResult<Awaited<ReturnType<typeof sendImageDir>>>).value
    expect(summary.compression).toBe('zstd')
    expect(summary.wireBytes).toBeLessThan(summary.bytes / 4)
    await expectSameDir(src, dest)
  })

  it('turns corrupt compressed data into an ImageIntegrityError', async () => {
    const src = await makeImageDir({ 'pages-1.img': randomBytes(2 * MiB) })
    const dest = join(root, 'dest')
    const { received } = await transfer(src, dest, { compress: 'zstd' }, {}, c => tamper(c, (chunk, offset) => {
      if (offset > 1000 && chunk.byteLength > 100000) flip(chunk, 50000, 0xff)
      return chunk
    }))
    expect(reason(received)).toBeInstanceOf(ImageIntegrityError)
    expect(await exists(dest)).toBe(false)
  })

  it('refuses a source dir holding a symlink or subdirectory before sending anything', async () => {
    const src = await makeImageDir({ 'a.img': Buffer.from('x') })
    await symlink('/etc/passwd', join(src, 'link.img'))
    const { sent, received } = await transfer(src, join(root, 'dest'))
    expect(reason(sent).code).toBe('not-a-file')
    expect(reason(received).code).toBe('cancelled') // told why, before any header
    expect(reason(received).message).toContain('link.img')
  })
})

const receiveRaw = async (frames: Uint8Array[], recv: Partial<ReceiveOptions> = {}, close = true): ReturnType<typeof receiveFrames> =>
  await receiveFrames(join(root, 'dest'), frames, recv, close)

describe('receiver refusals', () => {
  it.each(['../evil', '/etc/cron.d/evil', 'a/../../b', 'nul\0byte', '..'])('refuses the name %j before writing anything', async (name) => {
    const { err, dest, answer } = await receiveRaw([header([{ name: 'ok.img', size: 3, mode: 0o600 }, { name, size: 3, mode: 0o600 }]), data(Buffer.from('abcdef'))])
    expect(err).toBeInstanceOf(ImageTransferError)
    expect(err?.code).toBe('bad-name')
    expect(err?.file).toBe(name)
    expect(await exists(dest)).toBe(false)
    expect(answer.byteLength).toBeGreaterThan(5) // the sender was told
  })

  it('refuses duplicate names, too many files and too many bytes before writing anything', async () => {
    const f = (name: string, size = 1): ImageFile => ({ name, size, mode: 0o600 })
    expect((await receiveRaw([header([f('a'), f('a')])])).err?.code).toBe('bad-name')
    expect((await receiveRaw([header([f('a'), f('b'), f('c')])], { maxFiles: 2 })).err?.code).toBe('too-many-files')
    const big = await receiveRaw([header([f('a', 600), f('b', 600)])], { maxTotalBytes: 1000 })
    expect(big.err?.code).toBe('too-large')
    expect(await exists(big.dest)).toBe(false)
  })

  it('refuses an image larger than the free disk space', async () => {
    const { err } = await receiveRaw([header([{ name: 'huge', size: 2 ** 52, mode: 0o600 }])], { maxTotalBytes: 2 ** 53 })
    expect(err?.code).toBe('no-space')
  })

  it('refuses a malformed header, an unknown frame type and an oversize frame', async () => {
    expect((await receiveRaw([header([], { v: 99 })])).err?.code).toBe('protocol')
    expect((await receiveRaw([header([{ name: 'a', size: 1, mode: 0o600 }], { totalBytes: 5 })])).err?.code).toBe('protocol')
    expect((await receiveRaw([Buffer.from([77, 0, 0, 0, 0])])).err?.code).toBe('protocol')
    expect((await receiveRaw([Buffer.from([FrameType.header, 0xff, 0, 0, 0])])).err?.code).toBe('protocol')
    expect((await receiveRaw([data(Buffer.from('x'))])).err?.code).toBe('protocol')
  })

  it('refuses more data than announced and a short file, cleaning up', async () => {
    const files = [{ name: 'a', size: 4, mode: 0o600 }]
    const more = await receiveRaw([header(files), data(Buffer.from('abcdef'))])
    expect(more.err).toBeInstanceOf(ImageIntegrityError)
    expect(await exists(more.dest)).toBe(false)
    const short = await receiveRaw([header(files), data(Buffer.from('ab')), encodeTrailer({ digests: ['0'.repeat(64)], wireBytes: 2 })])
    expect(short.err).toBeInstanceOf(ImageIntegrityError)
    expect(short.err?.file).toBe('a')
    expect(await exists(short.dest)).toBe(false)
  })

  it('fails cleanly when the sender goes away mid-way', async () => {
    const files = [{ name: 'a', size: 10, mode: 0o600 }]
    const ended = await receiveRaw([header(files), data(Buffer.from('abc'))])
    expect(ended.err?.code).toBe('channel')
    expect(await exists(ended.dest)).toBe(false)
    const cut = await receiveRaw([header(files), data(Buffer.from('abc')).subarray(0, 6)])
    expect(cut.err?.code).toBe('channel')
  })
})

describe('cancellation', () => {
  it('a sender aborted through its signal makes the receiver fail and clean up', async () => {
    const src = await makeImageDir({ 'a.img': randomBytes(16 * MiB) })
    const dest = join(root, 'dest')
    const ac = new AbortController()
    const { sent, received } = await transfer(src, dest, {
      signal: ac.signal,
      progressIntervalMs: 0,
      onProgress: p => { if (p.doneBytes > 4 * MiB) ac.abort(new Error('operator cancelled')) }
    })
    expect(reason(sent).code).toBe('aborted')
    expect(reason(received).code).toBe('channel')
    expect(await exists(dest)).toBe(false)
  })

  it('a receiver aborted through its signal makes the sender fail', async () => {
    const src = await makeImageDir({ 'a.img': randomBytes(16 * MiB) })
    const ac = new AbortController()
    const { sent, received } = await transfer(src, join(root, 'dest'), {}, {
      signal: ac.signal,
      progressIntervalMs: 0,
      onProgress: p => { if (p.doneBytes > 4 * MiB) ac.abort(new Error('daemon stopping')) }
    })
    expect(reason(received).code).toBe('aborted')
    expect(reason(sent).code).toBe('channel')
  })

  it('a source file that shrinks mid-transfer cancels with the reason, and the receiver reports it', async () => {
    const src = await makeImageDir({ 'a.img': randomBytes(8 * MiB), 'b.img': randomBytes(MiB) })
    const dest = join(root, 'dest')
    let truncated = false
    const { sent, received } = await transfer(src, dest, {
      chunkBytes: 256 * 1024,
      progressIntervalMs: 0,
      onProgress: p => {
        if (!truncated && p.doneBytes > MiB) {
          truncated = true
          void writeFile(join(src, 'a.img'), 'short')
        }
      }
    })
    expect(reason(sent).code).toBe('source-changed')
    const r = reason(received)
    expect(r.code).toBe('cancelled')
    expect(r.message).toMatch(/a\.img changed/)
    expect(await exists(dest)).toBe(false)
  })
})
