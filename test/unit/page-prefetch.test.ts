import type { Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { loopbackPair } from '../helpers/loopback.js'
import { ByteReader, writeSocket } from '../../src/migration/byte-io.js'
import { PAGE_SIZE, RangeSet, parsePagemap } from '../../src/migration/criu/pagemap.js'
import type { LazyRange } from '../../src/migration/criu/pagemap.js'
import { PS_HEADER_BYTES, PS_IOV_GET, decodePsIov, encodePsIov, prefetchBridge } from '../../src/migration/page-prefetch.js'
import { createMemoryChannelPair } from '../../src/migration/transfer/memory-channel.js'
import type { ByteChannel } from '../../src/migration/ports.js'

const PS_CLOSE = 1023
const MiB = 2 ** 20

/** Page content: its address in the first 8 bytes, its pid in the next 4. */
function page (pid: number, addr: number): Buffer {
  const b = Buffer.alloc(PAGE_SIZE, addr / PAGE_SIZE & 0xff)
  b.writeBigUInt64LE(BigInt(addr), 0)
  b.writeUInt32LE(pid, 8)
  return b
}

/** A fake CRIU page server: answers in order, at most `bufPages` per answer (a page-pipe buffer). */
async function fakePageServer (ch: ByteChannel, ranges: LazyRange[], bufPages: number, asked: Map<string, number>, sizes: number[]): Promise<void> {
  const reader = new ByteReader(ch.read()[Symbol.asyncIterator]())
  for (;;) {
    const head = await reader.read(PS_HEADER_BYTES)
    if (head === undefined) break
    const req = decodePsIov(head)
    if (req.cmd === PS_CLOSE) { await ch.write(Buffer.from([0, 0, 0, 0])); continue }
    expect(req.cmd).toBe(PS_IOV_GET)
    sizes.push(req.nrPages)
    const r = ranges.find(x => x.pid === req.dstId && x.start <= req.vaddr && req.vaddr < x.end)
    if (r === undefined) throw new Error(`request outside the lazy ranges: ${req.dstId}:${req.vaddr.toString(16)}`)
    const bufEnd = r.start + (Math.floor((req.vaddr - r.start) / (bufPages * PAGE_SIZE)) + 1) * bufPages * PAGE_SIZE
    const end = Math.min(req.vaddr + req.nrPages * PAGE_SIZE, r.end, bufEnd)
    const parts: Buffer[] = [encodePsIov({ cmd: 6 | (4 << 16), nrPages: (end - req.vaddr) / PAGE_SIZE, vaddr: req.vaddr, dstId: req.dstId })]
    for (let a = req.vaddr; a < end; a += PAGE_SIZE) {
      const key = `${req.dstId}:${a}`
      asked.set(key, (asked.get(key) ?? 0) + 1)
      parts.push(page(req.dstId, a))
    }
    await ch.write(Buffer.concat(parts))
  }
  await ch.closeWrite()
}

/** A fake lazy-pages daemon: background requests growing like CRIU's, plus faults; checks every answer. */
async function fakeDaemon (sock: Socket, ranges: LazyRange[], faults: Array<{ pid: number, addr: number }>, close: boolean): Promise<number> {
  const todo = new Map<number, RangeSet>()
  for (const r of ranges) { const s = todo.get(r.pid) ?? new RangeSet(); s.add(r.start, r.end); todo.set(r.pid, s) }
  const reader = new ByteReader((sock as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]())
  let xfer = 64 * 1024
  let got = 0
  const ask = async (pid: number, vaddr: number, nrPages: number): Promise<void> => {
    await writeSocket(sock, encodePsIov({ cmd: PS_IOV_GET, nrPages, vaddr, dstId: pid }))
  }
  const answer = async (pid: number, vaddr: number, nrPages: number): Promise<void> => {
    const h = decodePsIov(await reader.read(PS_HEADER_BYTES) as Buffer)
    expect([h.dstId, h.vaddr]).toEqual([pid, vaddr])
    expect(h.nrPages).toBeGreaterThan(0)
    expect(h.nrPages).toBeLessThanOrEqual(nrPages)
    const data = await reader.read(h.nrPages * PAGE_SIZE) as Buffer
    for (let i = 0; i < h.nrPages; i++) expect(data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE).equals(page(pid, vaddr + i * PAGE_SIZE))).toBe(true)
    todo.get(pid)?.remove(vaddr, vaddr + h.nrPages * PAGE_SIZE)
    got += h.nrPages
  }
  for (const [pid, set] of todo) {
    for (let r = set.firstFrom(0, xfer); r !== undefined; r = set.firstFrom(0, xfer)) {
      const f = faults.shift()
      const fault = f !== undefined && todo.get(f.pid)?.firstFrom(f.addr, PAGE_SIZE)?.start === f.addr ? f : undefined
      // A fault and a background request outstanding together, as CRIU does.
      if (fault !== undefined) await ask(fault.pid, fault.addr, 1)
      await ask(pid, r.start, (r.end - r.start) / PAGE_SIZE)
      if (fault !== undefined) await answer(fault.pid, fault.addr, 1)
      await answer(pid, r.start, (r.end - r.start) / PAGE_SIZE)
      xfer = Math.min(xfer + 64 * 1024, 4 * MiB)
    }
  }
  if (close) {
    await writeSocket(sock, encodePsIov({ cmd: PS_CLOSE, nrPages: 0, vaddr: 0, dstId: 0 }))
    expect(await reader.read(4)).toEqual(Buffer.from([0, 0, 0, 0]))
  }
  sock.end()
  return got
}

/** [the dialing end, the accepted end] of a loopback TCP connection. */
async function socketPair (): Promise<[Socket, Socket]> {
  const [accepted, dialer] = await loopbackPair()
  return [dialer, accepted]
}

async function run (ranges: LazyRange[], faults: Array<{ pid: number, addr: number }>, close = false, windowBytes?: number): Promise<{ got: number, asked: Map<string, number>, sizes: number[] }> {
  const [daemonEnd, proxyEnd] = await socketPair()
  const [proxyCh, serverCh] = createMemoryChannelPair()
  const asked = new Map<string, number>()
  const sizes: number[] = []
  const [got] = await Promise.all([
    fakeDaemon(daemonEnd, ranges, faults, close),
    prefetchBridge(proxyEnd, proxyCh, new AbortController().signal, { ranges, windowBytes }),
    fakePageServer(serverCh, ranges, 400, asked, sizes)
  ])
  return { got, asked, sizes }
}

const RANGES: LazyRange[] = [
  { pid: 1, start: 0x10000, end: 0x10000 + 3 * PAGE_SIZE },
  { pid: 1, start: 0x7f0000000000, end: 0x7f0000000000 + 5 * MiB },
  { pid: 2, start: 0x400000, end: 0x400000 + 40 * MiB + 3 * PAGE_SIZE },
  { pid: 2, start: 0x7f1000000000, end: 0x7f1000000000 + 7 * PAGE_SIZE }
]
const totalPages = RANGES.reduce((n, r) => n + (r.end - r.start) / PAGE_SIZE, 0)

describe('page prefetch proxy', () => {
  it('answers every background request with the right pages, fetching each page once', async () => {
    const { got, asked, sizes } = await run(RANGES, [])
    expect(got).toBe(totalPages)
    // Fetched ahead in 4 MiB requests from the start, not in the daemon's 64 KiB growing steps.
    expect(sizes.slice(0, 4)).toContain(1024)
    expect(asked.size).toBe(totalPages)
    expect(Math.max(...asked.values())).toBe(1)
  })

  it('serves faults anywhere among background requests, and passes PS_CLOSE and its answer through', async () => {
    const faults = [0, 1, 2, 3, 5, 8, 13, 21, 34].map(i => ({ pid: 2, addr: 0x400000 + (10 * MiB) + i * 97 * PAGE_SIZE }))
    faults.push({ pid: 1, addr: 0x7f0000000000 + 4 * MiB }, { pid: 2, addr: 0x7f1000000000 + 6 * PAGE_SIZE })
    const { got, asked } = await run(RANGES, faults, true, 8 * MiB)
    expect(got).toBe(totalPages)
    expect(Math.max(...asked.values())).toBe(1)
  })
})

describe('pagemap', () => {
  it('reads lazy entries (u64 page counts in field 5, u32 in field 2) and skips the rest', () => {
    const entry = (fields: Array<[number, number]>): Buffer => {
      const bytes: number[] = []
      for (const [f, v] of fields) {
        bytes.push(f << 3)
        let x = BigInt(v)
        do { let b = Number(x & 0x7fn); x >>= 7n; if (x > 0n) b |= 0x80; bytes.push(b) } while (x > 0n)
      }
      const len = Buffer.alloc(4); len.writeUInt32LE(bytes.length)
      return Buffer.concat([len, Buffer.from(bytes)])
    }
    const magic = Buffer.alloc(8); magic.writeUInt32LE(0x54564319, 0); magic.writeUInt32LE(0x56084025, 4)
    const img = Buffer.concat([magic, entry([[1, 2]]), entry([[1, 0x41f000], [2, 0], [4, 4], [5, 1]]),
      entry([[1, 0x7f0000000000], [2, 0], [4, 6], [5, 262144]]), entry([[1, 0x9000], [2, 3], [4, 2]])])
    expect(parsePagemap(img, 2)).toEqual([
      { pid: 2, start: 0x7f0000000000, end: 0x7f0000000000 + 262144 * PAGE_SIZE },
      { pid: 2, start: 0x9000, end: 0x9000 + 3 * PAGE_SIZE }
    ])
    expect(() => parsePagemap(Buffer.alloc(8), 1)).toThrow(/magic/)
  })
})
