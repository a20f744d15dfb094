/**
 * ImageStreamer against the real CRIU: a job dumped to files is restored with `criu restore
 * --stream` while its images "arrive" (copied into the restore dir piece by piece as the streamer
 * serves them), and its memory is the same afterwards; a transfer that breaks half-way fails the
 * restore and leaves nothing running. Needs root and CRIU >= 4.2; never skipped.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { findCriu } from '../../src/migration/criu/index.js'
import { ImageStreamer, ImageStreamerError, decodeRequest, encodeReply } from '../../src/migration/image-streamer.js'
import type { StreamedImages } from '../../src/migration/image-streamer.js'
import { childrenOf, dumpedJob as dumped, killLeftovers, memorySha, run } from '../helpers/criu-job.js'
import type { Leftovers } from '../helpers/criu-job.js'
import { until } from '../helpers/until.js'

const MIB = 24

/** Images copied from `from` into `to` only as the streamer asks how far they are (1 MiB per step). */
function arrivingImages (from: string, to: string, breakAt?: { name: RegExp, bytes: number }): StreamedImages {
  const names = readdirSync(from).filter(n => n.endsWith('.img'))
  const copied = new Map<string, number>()
  return {
    has: async (name) => names.includes(name),
    path: (name) => join(to, name),
    progress: async (name, done) => {
      const size = statSync(join(from, name)).size
      const have = copied.get(name) ?? 0
      if (breakAt !== undefined && breakAt.name.test(name) && have >= breakAt.bytes) throw new Error('the transfer broke')
      const next = Math.min(size, have + 1024 * 1024)
      if (next > have || !existsSync(join(to, name))) appendRange(join(from, name), join(to, name), have, next)
      copied.set(name, next)
      await new Promise(resolve => setTimeout(resolve, 2))
      expect(done).toBeLessThanOrEqual(next)
      return { bytes: next, complete: next === size }
    }
  }
}

function appendRange (src: string, dst: string, from: number, until: number): void {
  const buf = Buffer.alloc(until - from)
  const i = openSync(src, 'r')
  readSync(i, buf, 0, buf.length, from)
  closeSync(i)
  const o = openSync(dst, 'a')
  writeSync(o, buf)
  closeSync(o)
}

describe('ImageStreamer (real criu restore --stream)', () => {
  let criuPath: string
  let root: string
  const left: Leftovers = { jobs: [], pids: [] }
  const pids = left.pids

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('needs root (CRIU)')
    criuPath = (await findCriu()).path
    root = mkdtempSync(join(tmpdir(), 'ssi-streamer-test-'))
  })
  afterEach(() => { killLeftovers(left) })
  afterAll(() => { rmSync(root, { recursive: true, force: true }) })

  const dumpedJob = async (dir: string): Promise<{ sha: string, ready: string }> => await dumped(criuPath, dir, MIB, left)

  const restoreArgs = (dir: string): string[] => ['restore', '--stream', '-d', '-D', join(dir, 'b'), '-o', join(dir, 'restore.log'), '--pidfile', join(dir, 'restored.pid')]

  it('restores a job whose images arrive while CRIU reads them, with the same memory', async () => {
    const dir = join(root, 'ok')
    const { sha, ready } = await dumpedJob(dir)
    mkdirSync(join(dir, 'b'))
    const streamer = new ImageStreamer(join(dir, 'b'), arrivingImages(join(dir, 'a'), join(dir, 'b')), AbortSignal.timeout(60_000))
    const restored = await run(criuPath, restoreArgs(dir))
    const summary = await streamer.done
    expect(restored.code, readFileSync(join(dir, 'restore.log'), 'utf8').slice(-2000)).toBe(0)
    const tini = Number(readFileSync(join(dir, 'restored.pid'), 'utf8'))
    pids.push(tini)
    expect(await memorySha(childrenOf(tini)[0] ?? -1, ready)).toBe(sha)
    expect(summary.requested).toContain('inventory.img')
    const pages = readdirSync(join(dir, 'a')).filter(n => n.startsWith('pages-')).reduce((sum, n) => sum + statSync(join(dir, 'a', n)).size, 0)
    expect(pages).toBeGreaterThan(MIB * 1024 * 1024)
    expect(summary.bytes).toBeGreaterThan(pages) // every page, plus the other images
  }, 90_000)

  it('fails the restore, leaving nothing running, when the transfer breaks half-way through the pages', async () => {
    const dir = join(root, 'broken')
    await dumpedJob(dir)
    mkdirSync(join(dir, 'b'))
    const images = arrivingImages(join(dir, 'a'), join(dir, 'b'), { name: /^pages-/, bytes: 8 * 1024 * 1024 })
    const streamer = new ImageStreamer(join(dir, 'b'), images, AbortSignal.timeout(60_000))
    const restored = await run(criuPath, restoreArgs(dir))
    await expect(streamer.done).rejects.toThrow('the transfer broke')
    expect(restored.code).not.toBe(0)
    expect(existsSync(join(dir, 'restored.pid'))).toBe(false)
  }, 90_000)

  it('serves a directory of complete images too', async () => {
    const dir = join(root, 'complete')
    const { sha, ready } = await dumpedJob(dir)
    mkdirSync(join(dir, 'b'))
    const names = readdirSync(join(dir, 'a')).filter(n => n.endsWith('.img'))
    for (const n of names) copyFileSync(join(dir, 'a', n), join(dir, 'b', n))
    const complete: StreamedImages = {
      has: async name => names.includes(name),
      progress: async name => ({ bytes: statSync(join(dir, 'b', name)).size, complete: true }),
      path: name => join(dir, 'b', name)
    }
    const streamer = new ImageStreamer(join(dir, 'b'), complete, AbortSignal.timeout(60_000))
    expect((await run(criuPath, restoreArgs(dir))).code).toBe(0)
    await streamer.done
    const tini = Number(readFileSync(join(dir, 'restored.pid'), 'utf8'))
    pids.push(tini)
    expect(await memorySha(childrenOf(tini)[0] ?? -1, ready)).toBe(sha)
  }, 90_000)

  it('checks what CRIU asks for', () => {
    const request = (name: string): Buffer => Buffer.concat([Buffer.from([0x0a, Buffer.byteLength(name)]), Buffer.from(name)])
    expect(decodeRequest(request('pages-1.img'))).toBe('pages-1.img')
    for (const bad of ['../x.img', 'a/b.img', '..', '']) expect(() => decodeRequest(request(bad))).toThrow(ImageStreamerError)
    expect(() => decodeRequest(Buffer.from([0x12, 1, 0x41]))).toThrow('unexpected field tag')
    expect(() => decodeRequest(Buffer.concat([request('a.img'), Buffer.from([0])]))).toThrow('holds a name')
    expect(encodeReply(true)).toEqual(Buffer.from([2, 0, 0, 0, 8, 1]))
    expect(encodeReply(false)).toEqual(Buffer.from([2, 0, 0, 0, 8, 0]))
  })

  it('stops at once when closed: the restore it serves fails', async () => {
    const dir = join(root, 'closed')
    mkdirSync(join(dir, 'b'), { recursive: true })
    const never: StreamedImages = { has: async () => await new Promise(() => {}), progress: async () => await new Promise(() => {}), path: n => join(dir, 'b', n) }
    const streamer = new ImageStreamer(join(dir, 'b'), never, AbortSignal.timeout(60_000))
    const restored = run(criuPath, restoreArgs(dir))
    await until('CRIU asks', () => existsSync(join(dir, 'restore.log')) && readFileSync(join(dir, 'restore.log'), 'utf8').length > 0 ? true : undefined)
    streamer.close()
    await expect(streamer.done).rejects.toThrow()
    expect((await restored).code).not.toBe(0)
  }, 60_000)
})
