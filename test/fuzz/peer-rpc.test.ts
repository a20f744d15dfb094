/**
 * Fuzzes `/ssi/rpc/1` of a real daemon from a key-holding libp2p node: >= 10,000 requests with
 * random bytes, broken or oversized length prefixes, valid msgpack of the wrong shape, and mutated
 * valid requests. Every stream must end (no hang) with one well-formed reply, and the daemon must
 * stay up, answer `status`, keep its memory bounded and write no files outside its state dir.
 */
import { describe, expect, it } from 'vitest'
import { Unpackr } from 'msgpackr'
import { MAX_RPC_FRAME, RPC_PROTOCOL } from '../../src/node/peer-rpc.js'
import { exchange, fuzzTarget, inParallel, splitLp, varint } from './peer.js'
import { fuzzSeed, listFiles, mutate, oddValues, pack, rawMsgpack, Rng, rssBytes } from './mutate.js'

const REQUESTS = 10_000
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

const lp = (body: Buffer): Buffer => Buffer.concat([varint(body.length), body])

/** Valid requests to mutate: none that could start a job, even mutated (no job.start). */
function validRequests (): Buffer[] {
  const req = (method: string, params: unknown): Buffer => pack({ v: 1, method, params })
  const vpid = 987654321
  return [
    req('job.list', {}), req('job.get', { vpid }), req('job.signal', { vpid, signal: 'SIGTERM', asUid: 1000 }),
    req('job.wait', { vpid }), req('job.stdin', { vpid, asUid: 1000, data: Buffer.from('x'), eof: true }),
    req('job.output', { vpid, follow: false, stdoutOffset: 0, stderrOffset: 0 }), req('loc.get', { vpid }),
    req('migrate.status', { vpid }), req('migrate.start', { vpid, target: 'n9', asUid: 0 }), req('migrate.cancel', { vpid }),
    req('migrate.restore', { vpid, stdio: [{ key: 'file[1:2]', stream: 'stdout' }] })
  ]
}

function wrongShape (rng: Rng): Buffer {
  const odd = (): unknown => rng.pick(oddValues(rng))
  const method = rng.pick(['job.list', 'job.get', 'job.signal', 'job.wait', 'job.stdin', 'job.output', 'loc.get', 'migrate.status', 'migrate.start', 'migrate.prepare', 'migrate.restore', 'migrate.cancel', 'job.start', odd()])
  switch (rng.int(4)) {
    case 0: return pack(odd())
    case 1: return pack({ v: rng.pick([1, 0, 2, odd()]), method, params: odd() })
    // job.start and migrate.prepare only with params that cannot validate (no argv / no job).
    case 2: return pack({ v: 1, method, params: { vpid: odd(), signal: odd(), asUid: odd(), follow: odd(), stdoutOffset: odd(), target: odd(), stdio: odd(), data: odd() } })
    default: return pack({ v: 1, method, params: odd(), extra: odd() })
  }
}

/** One request's bytes on the wire, prefix included. */
function nextRequest (rng: Rng, valid: Buffer[]): Buffer {
  const r = rng.int(20)
  if (r < 8) return lp(mutate(rng, rng.pick(valid)))
  if (r < 12) return lp(wrongShape(rng))
  if (r < 15) return lp(rawMsgpack(rng))
  if (r < 16) return rng.bytes(rng.int(200)) // no framing at all
  if (r < 17) return Buffer.concat([varint(MAX_RPC_FRAME + 1 + rng.int(2 ** 30)), rng.bytes(rng.int(100))]) // oversized
  if (r < 18) return Buffer.concat([varint(100 + rng.int(10_000)), rng.bytes(rng.int(100))]) // cut short
  if (r < 19) return Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]) // varint overflow
  return Buffer.alloc(0) // nothing at all
}

const seed = fuzzSeed()
const target = fuzzTarget()

describe(`peer RPC fuzz (FUZZ_SEED=${seed})`, () => {
  it(`answers ${REQUESTS} malformed requests on ${RPC_PROTOCOL} and stays up with bounded memory`, async () => {
    const { cluster, peer } = target
    const rng = new Rng(seed)
    const valid = validRequests()
    const pid = await cluster.pid('n1')
    const filesBefore = await listFiles(cluster.dir)
    const rssBefore = await rssBytes(pid)
    const requests = Array.from({ length: REQUESTS }, () => nextRequest(rng, valid))
    const counts = { error: 0, result: 0, reset: 0 }
    const problems: string[] = []
    await inParallel(REQUESTS, 32, async i => {
      const request = requests[i]!
      const what = `request ${i} (${request.subarray(0, 40).toString('hex')})`
      const { reply, ending } = await exchange(peer, RPC_PROTOCOL, request, 15_000)
      if (ending === 'timeout') { problems.push(`${what}: no answer (hang)`); return }
      let frames: Buffer[]
      try { frames = splitLp(reply) } catch (err) { problems.push(`${what}: ${(err as Error).message}`); return }
      const last = frames.length > 0 ? unpackr.unpack(frames[frames.length - 1]!) as { t?: string, name?: string } : undefined
      if (last?.t === 'error') counts.error++
      else if (last?.t === 'result') counts.result++
      else if (ending === 'reset' && frames.length === 0) counts.reset++
      else problems.push(`${what}: ended (${ending}) without a final reply: ${JSON.stringify(last)}`)
    })
    console.log(JSON.stringify({ seed, requests: REQUESTS, ...counts, problems: problems.length }))
    expect(problems.slice(0, 10)).toEqual([])
    expect(counts.error).toBeGreaterThan(REQUESTS * 0.8)

    const status = await cluster.call<{ node: { name: string } }>('n1', 'status')
    expect(status.node.name).toBe('n1')
    expect(await cluster.pid('n1')).toBe(pid)
    const rssAfter = await rssBytes(pid)
    console.log(JSON.stringify({ rssBeforeMiB: rssBefore / 2 ** 20, rssAfterMiB: rssAfter / 2 ** 20 }))
    expect(rssAfter).toBeLessThan(rssBefore + 200 * 2 ** 20)
    // Only the daemon's own state (its database and log) may have changed.
    const created = [...(await listFiles(cluster.dir)).keys()].filter(p => !filesBefore.has(p) && !p.includes('/db/'))
    expect(created).toEqual([])
  }, 240_000)
})
