/**
 * The target end of the post-copy page bridge, fetching ahead. CRIU's lazy-pages daemon asks the
 * source's page server for pages one request at a time in the background (64 KiB growing to 4 MiB,
 * the next only once the last was answered), so over a link with a few ms of round trip the pull is
 * bound by latency, not bandwidth. This proxy sits between the daemon and the channel to the source
 * and keeps several large requests of its own outstanding (the lazy ranges come from the pagemap
 * images), answers the daemon from what has arrived, and passes on what it has not fetched.
 *
 * Page-server protocol (CRIU criu/page-xfer.c, 4.x, measured on the wire): a request or answer header
 * is 32 bytes { u32 cmd, u32 pad, u64 nr_pages, u64 vaddr, u64 dst_id }, little-endian. The daemon
 * sends PS_IOV_GET (7); the server answers each in order with PS_IOV_ADD_F|PE_PRESENT<<16 and
 * nr_pages pages, possibly fewer than asked (one page-pipe buffer at most); the daemon takes a
 * shorter answer and asks again for the rest. Anything but PS_IOV_GET from the daemon switches the
 * proxy to a plain pipe once every outstanding answer has arrived.
 */
import type { Socket } from 'node:net'
import { PAGE_SIZE, RangeSet } from './criu/pagemap.js'
import type { LazyRange } from './criu/pagemap.js'
import type { ByteChannel } from './ports.js'
import { ByteReader, writeSocket } from './byte-io.js'
import { PageBridgeError } from './page-bridge.js'
import type { BridgeStats } from './page-bridge.js'

export const PS_HEADER_BYTES = 32
export const PS_IOV_GET = 7
const PS_IOV_ADD_F = 6
const PE_PRESENT = 1 << 2

export interface PsIov { readonly cmd: number, readonly nrPages: number, readonly vaddr: number, readonly dstId: number }

export function decodePsIov (b: Buffer): PsIov {
  return { cmd: b.readUInt32LE(0), nrPages: Number(b.readBigUInt64LE(8)), vaddr: Number(b.readBigUInt64LE(16)), dstId: Number(b.readBigUInt64LE(24)) }
}

export function encodePsIov (h: PsIov): Buffer {
  const b = Buffer.alloc(PS_HEADER_BYTES)
  b.writeUInt32LE(h.cmd, 0)
  b.writeBigUInt64LE(BigInt(h.nrPages), 8)
  b.writeBigUInt64LE(BigInt(h.vaddr), 16)
  b.writeBigUInt64LE(BigInt(h.dstId), 24)
  return b
}

export interface PrefetchOptions {
  /** The dump's lazy ranges (readLazyRanges of the target's images dir). */
  readonly ranges: readonly LazyRange[]
  /** Pages per request of ours; CRIU's page pipes hold at most 4 MiB per answer. */
  readonly chunkPages?: number
  /** Bytes requested but not yet taken by the daemon, at most: bounds memory and a fault's wait. */
  readonly windowBytes?: number
  /**
   * Fetching ahead starts when this resolves (the restore has finished: until then the daemon only
   * serves the restorer's faults, which must not wait behind fetched pages), else at the daemon's
   * first request.
   */
  readonly begin?: Promise<void>
  readonly onBytes?: (stats: BridgeStats) => void
}

interface Chunk { start: number, end: number, data: Buffer }
interface Fetch { readonly pid: number, readonly start: number, readonly end: number, readonly arrived: Promise<void>, readonly settle: () => void }
type Upstream = { readonly kind: 'fetch', readonly fetch: Fetch } | { readonly kind: 'forward', readonly answer: (parts: Buffer[]) => void }

/** One page-server connection's worth of proxy state; run() drives it. */
class PageProxy {
  private readonly todo = new Map<number, RangeSet>()
  private readonly cache = new Map<number, Chunk[]>()
  private readonly fetching: Fetch[] = []
  private readonly upstream: Upstream[] = []
  private held = 0
  private cursor = { pid: -1, addr: 0 }
  private wake: () => void = () => {}
  /** Whether fetching ahead has begun (PrefetchOptions.begin). */
  private started = false
  private daemonEnded = false
  private passthrough = false
  private writes = Promise.resolve()
  private answers = Promise.resolve()
  readonly stats = { sent: 0, received: 0 }
  private readonly chunkBytes: number
  private readonly windowBytes: number

  constructor (private readonly daemon: Socket, private readonly channel: ByteChannel, private readonly signal: AbortSignal, private readonly opts: PrefetchOptions) {
    for (const r of opts.ranges) {
      let set = this.todo.get(r.pid)
      if (set === undefined) this.todo.set(r.pid, set = new RangeSet())
      set.add(r.start, r.end)
    }
    this.chunkBytes = (opts.chunkPages ?? 1024) * PAGE_SIZE
    this.windowBytes = opts.windowBytes ?? 16 * 2 ** 20
  }

  async run (): Promise<void> {
    this.opts.begin?.then(() => { this.started = true; this.pump() }, () => {})
    await Promise.all([this.fromDaemon(), this.fromSource()])
    await this.answers
  }

  /** Reads the daemon's requests; each gets its answer, in order. */
  private async fromDaemon (): Promise<void> {
    const reader = new ByteReader((this.daemon as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]())
    for (;;) {
      const head = await reader.read(PS_HEADER_BYTES)
      if (head === undefined) break
      this.stats.sent += head.length
      const req = decodePsIov(head)
      if (req.cmd !== PS_IOV_GET) { await this.becomePipe(head, reader); return }
      const answer = this.serve(req)
      answer.catch(() => {})
      this.answers = this.answers.then(async () => { for (const part of await answer) await writeSocket(this.daemon, part) })
    }
    this.daemonEnded = true
    this.wake()
    await this.answers
  }

  /** The daemon spoke something else: once every outstanding answer is in, pipe bytes both ways. */
  private async becomePipe (head: Buffer, reader: ByteReader): Promise<void> {
    this.passthrough = true
    this.wake()
    await this.answers
    await this.send(head)
    for await (const chunk of reader.rest()) { this.stats.sent += chunk.byteLength; await this.send(Buffer.from(chunk)) }
    await this.writes
    await this.channel.closeWrite(this.signal)
  }

  /** Reads the page server's answers in order and hands each to whoever asked. */
  private async fromSource (): Promise<void> {
    const reader = new ByteReader(this.channel.read(this.signal)[Symbol.asyncIterator]())
    for (;;) {
      while (this.upstream.length === 0) {
        if (this.passthrough) return await this.pipeToDaemon(reader)
        if (this.daemonEnded) return await this.finish(reader)
        await new Promise<void>(resolve => { this.wake = resolve })
      }
      const head = await reader.read(PS_HEADER_BYTES)
      if (head === undefined) throw new PageBridgeError(`the page server hung up with ${this.upstream.length} requests unanswered`)
      const h = decodePsIov(head)
      if ((h.cmd & 0xffff) !== PS_IOV_ADD_F) throw new PageBridgeError(`unexpected page-server answer ${h.cmd.toString(16)}`)
      const data = h.nrPages === 0 ? Buffer.alloc(0) : await reader.read(h.nrPages * PAGE_SIZE)
      if (data === undefined) throw new PageBridgeError('the page server hung up inside an answer')
      this.stats.received += head.length + data.length
      this.opts.onBytes?.({ ...this.stats })
      this.arrived(h, head, data)
    }
  }

  private arrived (h: PsIov, head: Buffer, data: Buffer): void {
    const up = this.upstream.shift()
    if (up?.kind === 'forward') { up.answer([head, data]); return }
    if (up === undefined) throw new PageBridgeError('an answer nobody asked for')
    const f = up.fetch
    if (h.vaddr !== f.start || h.dstId !== f.pid) throw new PageBridgeError(`answer for ${h.dstId}:${h.vaddr.toString(16)}, expected ${f.pid}:${f.start.toString(16)}`)
    const end = f.start + data.length
    if (end > f.start) this.chunks(f.pid).push({ start: f.start, end, data })
    if (end < f.end) { this.todoOf(f.pid).add(end, f.end); this.held -= f.end - end }
    this.fetching.splice(this.fetching.indexOf(f), 1)
    f.settle()
    this.pump()
  }

  /** The answer to one daemon request: from what arrived, after what is on its way, or forwarded. */
  private async serve (req: PsIov): Promise<Buffer[]> {
    this.cursor = { pid: req.dstId, addr: req.vaddr + req.nrPages * PAGE_SIZE }
    if (this.opts.begin === undefined) this.started = true
    for (;;) {
      const hit = this.take(req)
      if (hit !== undefined) { this.pump(); return hit }
      const coming = this.fetching.find(f => f.pid === req.dstId && f.start <= req.vaddr && req.vaddr < f.end)
      if (coming === undefined) break
      await coming.arrived
    }
    const ask = { ...req, nrPages: this.clip(req) }
    this.todoOf(req.dstId).remove(ask.vaddr, ask.vaddr + ask.nrPages * PAGE_SIZE)
    return await new Promise<Buffer[]>((resolve) => {
      this.upstream.push({ kind: 'forward', answer: resolve })
      this.wake()
      void this.send(encodePsIov(ask)).catch(() => {})
      this.pump()
    })
  }

  /** Pages of req to forward: up to the next page already here or on its way (never fetched twice). */
  private clip (req: PsIov): number {
    let end = req.vaddr + req.nrPages * PAGE_SIZE
    for (const s of [...this.chunks(req.dstId), ...this.fetching.filter(f => f.pid === req.dstId)]) {
      if (s.start > req.vaddr && s.start < end) end = s.start
    }
    return (end - req.vaddr) / PAGE_SIZE
  }

  /** Takes the arrived pages from req.vaddr on (up to req.nrPages), if any. */
  private take (req: PsIov): Buffer[] | undefined {
    const chunks = this.chunks(req.dstId)
    const i = chunks.findIndex(c => c.start <= req.vaddr && req.vaddr < c.end)
    const c = chunks[i]
    if (c === undefined) return undefined
    const len = Math.min(req.nrPages * PAGE_SIZE, c.end - req.vaddr)
    const data = c.data.subarray(req.vaddr - c.start, req.vaddr - c.start + len)
    const rest: Chunk[] = []
    if (req.vaddr > c.start) rest.push({ start: c.start, end: req.vaddr, data: c.data.subarray(0, req.vaddr - c.start) })
    if (req.vaddr + len < c.end) rest.push({ start: req.vaddr + len, end: c.end, data: c.data.subarray(req.vaddr - c.start + len) })
    chunks.splice(i, 1, ...rest)
    this.held -= len
    const head = encodePsIov({ cmd: PS_IOV_ADD_F | (PE_PRESENT << 16), nrPages: len / PAGE_SIZE, vaddr: req.vaddr, dstId: req.dstId })
    return [head, data]
  }

  /** Requests more while the window allows, following the daemon's last request. */
  private pump (): void {
    while (this.started && !this.daemonEnded && !this.passthrough && this.held < this.windowBytes) {
      const next = this.nextRange()
      if (next === undefined) return
      let settle = (): void => {}
      const arrived = new Promise<void>(resolve => { settle = resolve })
      const fetch: Fetch = { ...next, arrived, settle }
      this.fetching.push(fetch)
      this.upstream.push({ kind: 'fetch', fetch })
      this.held += next.end - next.start
      this.wake()
      void this.send(encodePsIov({ cmd: PS_IOV_GET, nrPages: (next.end - next.start) / PAGE_SIZE, vaddr: next.start, dstId: next.pid })).catch(() => {})
    }
  }

  private nextRange (): { pid: number, start: number, end: number } | undefined {
    const order = [this.cursor.pid, ...[...this.todo.keys()].filter(p => p !== this.cursor.pid)]
    for (const pid of order) {
      const set = this.todo.get(pid)
      const from = pid === this.cursor.pid ? this.cursor.addr : 0
      const r = set?.firstFrom(from, this.chunkBytes) ?? set?.firstFrom(0, this.chunkBytes)
      if (set !== undefined && r !== undefined) {
        set.remove(r.start, r.end)
        return { pid, ...r }
      }
    }
    return undefined
  }

  /** Upstream writes, strictly in the order they were asked for. */
  private async send (buf: Buffer): Promise<void> {
    this.writes = this.writes.then(async () => { await this.channel.write(buf, this.signal) })
    await this.writes
  }

  private async pipeToDaemon (reader: ByteReader): Promise<void> {
    for await (const chunk of reader.rest()) { this.stats.received += chunk.byteLength; await writeSocket(this.daemon, Buffer.from(chunk)) }
    this.daemon.end()
  }

  /** The daemon has every page and hung up: end the page server's connection (CRIU's "done"). */
  private async finish (reader: ByteReader): Promise<void> {
    await this.writes
    await this.channel.closeWrite(this.signal)
    for await (const _ of reader.rest()) { /* nothing is expected after the last answer */ }
    this.daemon.end()
  }

  private chunks (pid: number): Chunk[] {
    let c = this.cache.get(pid)
    if (c === undefined) this.cache.set(pid, c = [])
    return c
  }

  private todoOf (pid: number): RangeSet {
    let s = this.todo.get(pid)
    if (s === undefined) this.todo.set(pid, s = new RangeSet())
    return s
  }
}

/**
 * Bridges the lazy-pages daemon's connection (`daemon`) to the source's page server (`channel`),
 * fetching ahead as described above. Resolves when both ends are done; any error tears both down.
 */
export async function prefetchBridge (daemon: Socket, channel: ByteChannel, signal: AbortSignal, opts: PrefetchOptions): Promise<BridgeStats> {
  const proxy = new PageProxy(daemon, channel, signal, opts)
  const onAbort = (): void => { daemon.destroy() }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    await proxy.run()
    return proxy.stats
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err))
    channel.abort(e)
    daemon.destroy()
    throw new PageBridgeError(`page transfer broke after ${proxy.stats.sent + proxy.stats.received} bytes: ${e.message}`, { cause: err })
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
