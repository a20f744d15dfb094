/**
 * Fuzzes the image transfer protocol `/ssi/images/1` of a real daemon from a key-holding libp2p
 * node: >= 10,000 malformed or mutated frames (headers with escaping names, huge sizes, wrong
 * shapes, bit flips; data longer or shorter than announced; wrong digests; corrupt zstd; unknown
 * and oversized frames; growing sections with wrong, missing or misplaced sizes). Half the streams go to a migration the fuzzer prepared (so the receiver
 * writes files), half to none. Every stream must end with a refusal (or a reset), never a hang; no
 * file may appear outside the daemon's incoming-images dir and none may stay there; the daemon
 * must stay up with bounded memory.
 */
import { createHash } from 'node:crypto'
import { lstat, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { Unpackr } from 'msgpackr'
import {
  encodeCancel, encodeFrame, encodeHeader, encodeSize, encodeTrailer, FrameType, IMAGES_PROTOCOL, MAX_CONTROL_FRAME, MAX_DATA_FRAME
} from '../../src/protocol/images.js'
import type { ImageFile, ImageHeader } from '../../src/protocol/images.js'
import { RPC_PROTOCOL } from '../../src/node/peer-rpc.js'
import { exchange, fuzzTarget, inParallel, splitLp, varint } from './peer.js'
import type { FuzzPeer } from './peer.js'
import { fuzzSeed, listFiles, mutate, oddValues, pack, Rng, rssBytes } from './mutate.js'

const STREAMS = 1000
const MIN_FRAMES = 10_000
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })
/** Marks every name the fuzzer makes up, so a file that escaped can be found anywhere. */
const MARK = `fuzzmark${process.pid}`

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

interface Plan { readonly frames: Buffer[], readonly vpid: number | undefined }

/** DATA frames of random sizes carrying `bytes`. */
function dataFrames (rng: Rng, bytes: Buffer): Buffer[] {
  const data: Buffer[] = []
  for (let at = 0, step = 1 + rng.int(500); at < bytes.length; at += step, step = 1 + rng.int(500)) data.push(Buffer.from(encodeFrame(FrameType.data, bytes.subarray(at, at + step))))
  return data
}

/**
 * A valid transfer of 1..4 small files, as frames, and the header it used. Half of them send their
 * first file as a growing section (HEADER continued, DATA, SIZE), as a migration sends CRIU's pages.
 */
function validTransfer (rng: Rng, label: string | undefined): { header: ImageHeader, contents: Buffer[], frames: Buffer[] } {
  const contents = Array.from({ length: 1 + rng.int(4) }, () => rng.bytes(rng.int(3000)))
  const files: ImageFile[] = contents.map((c, i) => ({ name: `${MARK}-${i}.img`, size: c.length, mode: 0o600 }))
  const header: ImageHeader = { v: 1, compression: 'none', checksum: 'sha256', files, totalBytes: contents.reduce((a, c) => a + c.length, 0), ...(label === undefined ? {} : { label }) }
  const trailer = (): Buffer => Buffer.from(encodeTrailer({ digests: contents.map(sha), wireBytes: header.totalBytes }))
  if (rng.int(2) === 0) {
    const first = contents[0]!
    const grow: ImageHeader = { ...header, files: [{ ...files[0]!, size: 0, growing: true }], totalBytes: 0, continued: true }
    const rest: ImageHeader = { ...header, files: files.slice(1), totalBytes: header.totalBytes - first.length }
    const frames = [Buffer.from(encodeHeader(grow)), ...dataFrames(rng, first), Buffer.from(encodeSize({ size: first.length })),
      Buffer.from(encodeHeader(rest)), ...dataFrames(rng, Buffer.concat(contents.slice(1))), trailer()]
    return { header, contents, frames }
  }
  return { header, contents, frames: [Buffer.from(encodeHeader(header)), ...dataFrames(rng, Buffer.concat(contents)), trailer()] }
}

/** A header whose names, sizes or fields are hostile. */
function hostileHeader (rng: Rng, label: string | undefined): Buffer {
  const odd = (): unknown => rng.pick(oddValues(rng))
  const name = rng.pick([`../${MARK}`, `../../${MARK}`, `/tmp/${MARK}`, `a/${MARK}`, '.', '..', '', `${MARK}\u0000x`, `${MARK}\n`, `${MARK}\\..\\x`, 'x'.repeat(300), `${MARK}-dup`])
  const files = [{ name, size: rng.pick([0, 1, 2 ** 40, Number.MAX_SAFE_INTEGER]), mode: rng.pick([0o600, 0o4755, 0o7777]) }]
  if (name === `${MARK}-dup`) files.push({ ...files[0]! })
  const header = { v: 1, compression: rng.pick(['none', 'zstd']), checksum: 'sha256', files, totalBytes: files.reduce((a, f) => a + f.size, 0), label }
  switch (rng.int(6)) {
    case 0: return Buffer.from(encodeFrame(FrameType.header, pack(header)))
    case 1: return Buffer.from(encodeFrame(FrameType.header, pack({ ...header, totalBytes: odd() })))
    case 2: return Buffer.from(encodeFrame(FrameType.header, pack({ ...header, files: Array.from({ length: 20_000 }, (_, i) => ({ name: `${MARK}${i}`, size: 0, mode: 0 })), totalBytes: 0 })))
    case 3: return Buffer.from(encodeFrame(FrameType.header, pack({ ...header, [rng.pick(['v', 'compression', 'checksum', 'files', 'label', 'extra'])]: odd() })))
    case 4: return Buffer.from(encodeFrame(FrameType.header, pack(odd())))
    default: return Buffer.from(encodeFrame(FrameType.header, pack({ ...header, label: rng.pick([`../../${MARK}`, '/', 'x'.repeat(300), odd()]) })))
  }
}

/** The frames of one fuzzed stream. */
function plan (rng: Rng, vpid: number | undefined): Plan {
  const label = vpid === undefined ? rng.pick([undefined, '1', '987654321']) : String(vpid)
  const t = validTransfer(rng, label)
  const frames = [...t.frames]
  const n = frames.length
  switch (rng.int(14)) {
    case 0: frames[0] = hostileHeader(rng, label); break
    case 1: frames[0] = mutate(rng, frames[0]!); break
    case 2: frames[rng.int(n)] = mutate(rng, frames[rng.int(n)]!); break // a bit flip anywhere
    case 3: frames[n - 1] = Buffer.from(encodeTrailer({ digests: t.contents.map(() => sha(Buffer.from('x'))), wireBytes: 0 })); break
    case 4: frames.splice(1 + rng.int(n - 1), 0, Buffer.from(encodeFrame(FrameType.data, rng.bytes(1 + rng.int(500))))); break // too much data
    case 5: frames.splice(1, n - 2); break // no data at all
    case 6: frames.splice(1 + rng.int(n - 1), 0, Buffer.from(encodeCancel({ name: 'Fuzz', code: 'fuzz', message: 'x'.repeat(rng.int(9000)) }))); break
    case 7: frames.splice(1 + rng.int(n - 1), 0, Buffer.from([rng.pick([0, 7, 255]), ...rng.bytes(4)])); break // unknown type
    case 12: frames.splice(1 + rng.int(n - 1), 0, Buffer.from(encodeSize({ size: rng.pick([0, 1, 2 ** 40, rng.int(5000)]) }))); break // a size anywhere
    case 13: { // a growing file without its size (a transfer without a growing section stays valid)
      const at = frames.findIndex(f => f[0] === FrameType.size)
      if (at >= 0) frames.splice(at, 1)
      break
    }
    case 8: { // oversized frame length
      const big = Buffer.alloc(5)
      big[0] = rng.pick([FrameType.header, FrameType.data, FrameType.trailer, FrameType.cancel])
      big.writeUInt32BE(Math.max(MAX_CONTROL_FRAME, MAX_DATA_FRAME) + 1 + rng.int(2 ** 30), 1)
      frames.splice(rng.int(n), 0, big)
      break
    }
    case 9: return { frames: [Buffer.from(encodeHeader({ ...t.header, compression: 'zstd' })), Buffer.from(encodeFrame(FrameType.data, rng.bytes(1 + rng.int(4000)))), frames[n - 1]!], vpid }
    case 10: frames.length = rng.int(n); break // cut short (the last one maybe in the middle)
    default: frames.splice(1 + rng.int(n - 1), 0, Buffer.from(encodeHeader(t.header))) // a second header
  }
  return { frames, vpid }
}

/** The RESULT frame's payload in a reply, if there is one. */
function resultOf (reply: Buffer): { ok?: boolean, failure?: { code?: string } } | undefined {
  if (reply.length < 5 || reply[0] !== FrameType.result) return undefined
  return unpackr.unpack(reply.subarray(5, 5 + reply.readUInt32BE(1))) as { ok?: boolean }
}

async function rpc (peer: FuzzPeer, method: string, params: unknown): Promise<{ t: string, message?: string }> {
  const body = pack({ v: 1, method, params })
  const { reply } = await exchange(peer, RPC_PROTOCOL, Buffer.concat([varint(body.length), body]), 15_000)
  const frames = splitLp(reply)
  return unpackr.unpack(frames[frames.length - 1]!) as { t: string, message?: string }
}

const job = (vpid: number): unknown => ({
  vpid, owner: { uid: 65534, gid: 65534, groups: [], user: 'nobody' }, argv: ['true'], cwd: '/', hostname: 'h', limits: {}, homeNode: 'n9', createdMs: 1
})

const seed = fuzzSeed()
const target = fuzzTarget()

describe(`image transfer fuzz (FUZZ_SEED=${seed})`, () => {
  it(`refuses >= ${MIN_FRAMES} malformed image frames, writes nothing outside its dir, stays up`, async () => {
    const { cluster, peer } = target
    const rng = new Rng(seed)
    const pid = await cluster.pid('n1')
    const incomingDir = join(cluster.config.nodes[0]!.stateDir, 'migrations', 'in')
    const filesBefore = await listFiles(cluster.dir)
    const rssBefore = await rssBytes(pid)
    const plans = Array.from({ length: STREAMS }, (_, i) => plan(rng, i % 2 === 0 ? 3_000_000 + i : undefined))
    const frames = plans.reduce((a, p) => a + p.frames.length, 0)
    const counts = { refused: 0, accepted: 0, reset: 0 }
    const problems: string[] = []
    await inParallel(STREAMS, 8, async i => {
      const { frames: f, vpid } = plans[i]!
      if (vpid !== undefined) {
        const prepared = await rpc(peer, 'migrate.prepare', { vpid, job: job(vpid) })
        if (prepared.t !== 'result') { problems.push(`prepare ${vpid}: ${prepared.message ?? ''}`); return }
      }
      const what = `stream ${i} (${f.map(x => x.subarray(0, 12).toString('hex')).join(' ')})`
      const { reply, ending } = await exchange(peer, IMAGES_PROTOCOL, Buffer.concat(f), 20_000)
      const result = resultOf(reply)
      if (ending === 'timeout') problems.push(`${what}: no answer (hang)`)
      else if (result?.ok === true) counts.accepted++
      else if (result?.ok === false) counts.refused++
      else if (ending === 'reset') counts.reset++
      else problems.push(`${what}: ended without a result: ${reply.subarray(0, 64).toString('hex')}`)
      if (vpid !== undefined) {
        const cancelled = await rpc(peer, 'migrate.cancel', { vpid })
        if (cancelled.t !== 'result') problems.push(`cancel ${vpid}: ${cancelled.message ?? ''}`)
      }
    })
    console.log(JSON.stringify({ seed, streams: STREAMS, frames, ...counts, problems: problems.length }))
    expect(problems.slice(0, 10)).toEqual([])
    expect(frames).toBeGreaterThanOrEqual(MIN_FRAMES)
    expect(counts.refused).toBeGreaterThan(STREAMS * 0.5)

    // Nothing escaped: no marked file anywhere the names could point, none left behind.
    for (const dir of ['/tmp', '/', cluster.dir, join(cluster.dir, 'n1'), join(cluster.dir, 'n1', 'migrations')]) {
      expect((await readdir(dir)).filter(n => n.includes(MARK)), dir).toEqual([])
    }
    const left = await readdir(incomingDir).catch(() => [] as string[])
    for (const d of left) expect(await readdir(join(incomingDir, d)), `left in ${d}`).toEqual([])
    const created = [...(await listFiles(cluster.dir)).keys()].filter(p => !filesBefore.has(p) && !p.includes('/db/'))
    expect(created).toEqual([])
    const mode = (await lstat(incomingDir).catch(() => undefined))?.mode
    if (mode !== undefined) expect(mode & 0o077).toBe(0)

    const status = await cluster.call<{ node: { name: string } }>('n1', 'status')
    expect(status.node.name).toBe('n1')
    expect(await cluster.pid('n1')).toBe(pid)
    const rssAfter = await rssBytes(pid)
    console.log(JSON.stringify({ rssBeforeMiB: rssBefore / 2 ** 20, rssAfterMiB: rssAfter / 2 ** 20 }))
    expect(rssAfter).toBeLessThan(rssBefore + 250 * 2 ** 20)
  }, 240_000)
})
