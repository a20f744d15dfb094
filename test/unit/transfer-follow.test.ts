/**
 * Growing sections of the image protocol: files sent while a writer still appends to them (CRIU's
 * pages during a dump), over the in-memory channel pair with a real writer on a real directory.
 */
import { randomBytes } from 'node:crypto'
import { appendFile, mkdir, mkdtemp, open, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ClosedFilesWatch } from '../../src/native/inotify.js'
import { ImageIntegrityError, ImageTransferError, createMemoryChannelPair, receiveImageDir, sendImageDir } from '../../src/migration/transfer.js'
import { FrameType, encodeFrame, encodeSize, encodeTrailer } from '../../src/protocol/images.js'
import { data, header, receiveFrames } from '../helpers/image-frames.js'
import type { SendOptions, TransferProgress } from '../../src/migration/transfer.js'

let root: string
beforeEach(async () => { root = await mkdtemp(join(tmpdir(), 'ssi-follow-unit-')) })
afterEach(async () => { await rm(root, { recursive: true, force: true }) })

const MiB = 1024 * 1024
const isPages = (name: string): boolean => /^pages-\d+\.img$/.test(name)

/** A settable promise standing for "the dump is done". */
function writerDone (): { promise: Promise<void>, resolve: () => void, reject: (err: Error) => void } {
  let resolve!: () => void
  let reject!: (err: Error) => void
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej })
  promise.catch(() => {})
  return { promise, resolve, reject }
}

/** Appends `pieces` to `path` through one open descriptor, pausing between them, then closes it. */
async function appendSlowly (path: string, pieces: Buffer[], pauseMs = 5): Promise<void> {
  const fh = await open(path, 'w', 0o600)
  try {
    for (const p of pieces) {
      await fh.write(p)
      await sleep(pauseMs)
    }
  } finally {
    await fh.close()
  }
}

async function sendFollowing (src: string, dest: string, done: Promise<void>, send: Partial<SendOptions> = {}) {
  const [a, b] = createMemoryChannelPair()
  const sending = sendImageDir(a, src, { checksum: 'crc32', chunkBytes: 256 * 1024, follow: { match: isPages, done, pollMs: 1 }, ...send })
  const receiving = receiveImageDir(b, dest, { maxTotalBytes: 1 << 30 })
  return { sending, receiving }
}

async function sameFiles (a: string, b: string): Promise<void> {
  const names = (await readdir(a)).sort()
  expect((await readdir(b)).sort()).toEqual(names)
  for (const n of names) expect((await readFile(join(b, n))).equals(await readFile(join(a, n)))).toBe(true)
}

describe('sending files while they are written', () => {
  it('sends each page file as it grows, the rest after the writer is done, byte-identically', async () => {
    const src = join(root, 'src')
    await mkdir(src)
    const dest = join(root, 'dest')
    const done = writerDone()
    const seen: TransferProgress[] = []
    const { sending, receiving } = await sendFollowing(src, dest, done.promise, { progressIntervalMs: 0, onProgress: p => seen.push(p) })
    // Like CRIU: a small page file written and closed, then a large one, then the other images.
    await appendSlowly(join(src, 'pages-1.img'), [randomBytes(5000)])
    const big = Array.from({ length: 12 }, () => randomBytes(MiB / 2 + 3))
    await appendSlowly(join(src, 'pages-2.img'), big)
    await sleep(30)
    const beforeDone = seen.at(-1)?.doneBytes ?? 0
    await writeFile(join(src, 'core-1.img'), randomBytes(700))
    await writeFile(join(src, 'pagemap-2.img'), randomBytes(70_000))
    await writeFile(join(src, 'empty.img'), '')
    done.resolve()
    const [sent, got] = await Promise.all([sending, receiving])
    // Both page files went before the writer was done: the first was closed, the second followed.
    expect(beforeDone).toBe(5000 + 12 * (MiB / 2 + 3))
    expect(sent.files).toBe(5)
    expect(got.files).toBe(5)
    expect(got.bytes).toBe(sent.bytes)
    expect(got.images.map(f => f.name)).toEqual(['pages-1.img', 'pages-2.img', 'core-1.img', 'empty.img', 'pagemap-2.img'])
    expect(got.images[1]?.size).toBe(12 * (MiB / 2 + 3))
    await sameFiles(src, dest)
    expect(seen.at(-1)).toMatchObject({ doneBytes: sent.bytes, totalBytes: sent.bytes, files: 5 })
  })

  it('follows a file still open when the writer is done, and one that stays empty', async () => {
    const src = join(root, 'src')
    await mkdir(src)
    const done = writerDone()
    const fh = await open(join(src, 'pages-1.img'), 'w', 0o600)
    const { sending, receiving } = await sendFollowing(src, join(root, 'dest'), done.promise)
    await writeFile(join(src, 'pages-2.img'), '') // created, never written: complete when closed
    await fh.write(randomBytes(3 * MiB))
    await sleep(20)
    await fh.write(randomBytes(100))
    done.resolve() // pages-1.img is still open: its size is final now all the same
    const [sent] = await Promise.all([sending, receiving])
    await fh.close()
    expect(sent.earlyBytes).toBeGreaterThan(0) // followed before the writer was done
    await sameFiles(src, join(root, 'dest'))
  })

  it('gives up with the writer\'s reason when it fails, and the receiver keeps nothing', async () => {
    const src = join(root, 'src')
    await mkdir(src)
    const dest = join(root, 'dest')
    const done = writerDone()
    const { sending, receiving } = await sendFollowing(src, dest, done.promise)
    await appendSlowly(join(src, 'pages-1.img'), [randomBytes(MiB), randomBytes(MiB)])
    done.reject(new Error('criu dump failed: no space'))
    const [sent, got] = await Promise.allSettled([sending, receiving])
    expect((sent as PromiseRejectedResult).reason).toMatchObject({ code: 'cancelled', message: expect.stringMatching(/no space/) })
    expect((got as PromiseRejectedResult).reason).toMatchObject({ code: 'cancelled', remote: true })
    expect(await stat(dest).then(() => true, () => false)).toBe(false)
  })

  it('refuses a followed file that shrank after it was sent (only appending writers can be followed)', async () => {
    const src = join(root, 'src')
    await mkdir(src)
    const done = writerDone()
    const { sending, receiving } = await sendFollowing(src, join(root, 'dest'), done.promise)
    await appendSlowly(join(src, 'pages-1.img'), [randomBytes(MiB)])
    await sleep(30) // sent and complete (closed)
    await truncate(join(src, 'pages-1.img'), 10)
    done.resolve()
    const [sent, got] = await Promise.allSettled([sending, receiving])
    expect((sent as PromiseRejectedResult).reason).toMatchObject({ code: 'source-changed', file: 'pages-1.img' })
    expect((got as PromiseRejectedResult).reason).toBeInstanceOf(ImageTransferError)
  })

  it('with compression, waits for the writer and sends everything as one section', async () => {
    const src = join(root, 'src')
    await mkdir(src)
    const done = writerDone()
    const { sending, receiving } = await sendFollowing(src, join(root, 'dest'), done.promise, { compress: 'zstd' })
    await appendSlowly(join(src, 'pages-1.img'), [Buffer.alloc(MiB, 7), randomBytes(1000)])
    done.resolve()
    const [sent] = await Promise.all([sending, receiving])
    expect(sent.wireBytes).toBeLessThan(sent.bytes)
    expect(sent.earlyBytes).toBe(0)
    await sameFiles(src, join(root, 'dest'))
  })
})

describe('receiver refusals of growing sections', () => {
  const growing = (name = 'pages-1.img'): Uint8Array => header([{ name, size: 0, mode: 0o600, growing: true }], { continued: true })
  const dest = (): string => join(root, 'dest')

  it('refuses growing files outside a continued header, compressed, or beside other files', async () => {
    const g = { name: 'a', size: 0, mode: 0o600, growing: true as const }
    expect((await receiveFrames(dest(), [header([g])])).err?.code).toBe('protocol')
    expect((await receiveFrames(dest(), [header([g], { continued: true, compression: 'zstd' })])).err?.code).toBe('protocol')
    expect((await receiveFrames(dest(), [header([g, { name: 'b', size: 0, mode: 0o600 }], { continued: true })])).err?.code).toBe('protocol')
  })

  it('refuses frames out of order: data after the size, a trailer inside the section, a size outside one', async () => {
    const afterSize = await receiveFrames(dest(), [growing(), data(Buffer.from('abc')), encodeSize({ size: 3 }), data(Buffer.from('x'))])
    expect(afterSize.err?.code).toBe('protocol')
    expect(await stat(afterSize.dest).then(() => true, () => false)).toBe(false)
    expect((await receiveFrames(dest(), [growing(), data(Buffer.from('abc')), encodeTrailer({ digests: [], wireBytes: 3 })])).err?.code).toBe('protocol')
    expect((await receiveFrames(dest(), [header([{ name: 'a', size: 1, mode: 0o600 }]), encodeSize({ size: 1 })])).err?.code).toBe('protocol')
    expect((await receiveFrames(dest(), [growing(), encodeFrame(FrameType.size, Buffer.from([1, 2, 3]))])).err?.code).toBe('protocol')
  })

  it('refuses a size that does not match the data, a name listed again, and growth past the cap', async () => {
    const wrong = await receiveFrames(dest(), [growing(), data(Buffer.from('abc')), encodeSize({ size: 4 })])
    expect(wrong.err).toBeInstanceOf(ImageIntegrityError)
    expect(await stat(wrong.dest).then(() => true, () => false)).toBe(false)
    const again = await receiveFrames(dest(), [growing(), data(Buffer.from('abc')), encodeSize({ size: 3 }), header([{ name: 'pages-1.img', size: 1, mode: 0o600 }])])
    expect(again.err?.code).toBe('bad-name')
    const big = await receiveFrames(dest(), [growing(), data(randomBytes(3000))], { maxTotalBytes: 2000 })
    expect(big.err?.code).toBe('too-large')
    expect(await stat(big.dest).then(() => true, () => false)).toBe(false)
  })
})

describe('inotify close watch', () => {
  it('tells a file closed after writing from one still open', async () => {
    const dir = join(root, 'w')
    await mkdir(dir)
    const watch = new ClosedFilesWatch(dir)
    try {
      const open1 = await open(join(dir, 'a'), 'w')
      await open1.write('x')
      await writeFile(join(dir, 'b'), 'y')
      expect(watch.hasClosed('b')).toBe(true)
      expect(watch.hasClosed('a')).toBe(false)
      await open1.close()
      expect(watch.hasClosed('a')).toBe(true)
      await appendFile(join(dir, 'c'), 'z')
      expect(watch.hasClosed('c')).toBe(true)
    } finally {
      watch.close()
    }
    expect(() => new ClosedFilesWatch(join(root, 'missing'))).toThrow(/ENOENT/)
  })
})
