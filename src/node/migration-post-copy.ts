/**
 * The daemon's plumbing of post-copy migration (src/migration/post-copy.ts): on the source, the
 * lazy dump and the page bridge from CRIU's loopback page server onto a libp2p channel; on the
 * target, the loopback listener the lazy-pages daemon connects to, the lazy-pages daemon, and the
 * lazy restore. Page traffic between nodes only ever travels on the authenticated bulk transport.
 */
import type { Socket } from 'node:net'
import { readFile } from 'node:fs/promises'
import { bridge, connectLoopback, freeLoopbackPort, listenLoopbackOnce } from '../migration/page-bridge.js'
import { prefetchBridge } from '../migration/page-prefetch.js'
import { withExplicitEnd } from '../migration/explicit-end.js'
import { readLazyRanges } from '../migration/criu/pagemap.js'
import { readVpidHeader, vpidHeader } from '../migration/vpid-header.js'
import type { LazyRange } from '../migration/criu/pagemap.js'
import type { BridgeStats, LoopbackListener } from '../migration/page-bridge.js'
import type { BulkTransport, ByteChannel } from '../migration/ports.js'
import type { JournalStore } from '../migration/journal.js'
import type { LazyPagesDaemon } from '../migration/criu/index.js'
import type { DumpedFile, JobRuntime, RuntimeJob } from '../ssi/jobs/runtime.js'
import type { Logger } from './logger.js'

/**
 * Carries one post-copy migration's page-server connection (source opens it, target serves). The
 * source first writes the vpid (8 bytes, big-endian), then CRIU's bytes follow both ways, framed
 * with an explicit end (src/migration/explicit-end.ts): CRIU's page server on the source takes an
 * EOF as a complete pull, and on the libp2p fallback a killed target's stream may end cleanly.
 */
export const LAZY_PAGES_PROTOCOL = '/ssi/lazy-pages/2'

interface Outgoing {
  readonly abort: AbortController
  readonly socket: Socket
  readonly hostPid: number
  readonly served: Promise<void>
  /** The target runs the job: a broken page stream now ends the dump by EOF, which kills the tree. */
  pulling?: boolean
}

/** A target's mark of a pull in progress (state store), so a restarted daemon knows it broke. */
export interface PullMark { readonly vpid: number, readonly from: string, readonly startedMs: number }
const PULL_PREFIX = 'post-copy-pull/'
const pullKey = (vpid: number): string => `${PULL_PREFIX}${String(vpid).padStart(15, '0')}`

interface Incoming {
  readonly from: string
  readonly stop: AbortController
  readonly listener: LoopbackListener
  daemon?: LazyPagesDaemon
  starting?: Promise<void>
  /** Resolved once the job runs (restore done): the page bridge then starts fetching ahead. */
  readonly restored: { promise: Promise<void>, resolve: () => void }
  imagesDir?: string
}

/** How long a killed lazy dump may take to let the job's tree run again here. */
const ABORT_RESUME_WAIT_MS = 30_000

export class PostCopyError extends Error {
  static override name = 'PostCopyError'
  override name = 'PostCopyError'
}

function unsupported (what: string): never {
  throw new PostCopyError(`this node's job runtime cannot ${what} (no CRIU lazy pages)`)
}

/** Whether pid is alive and not stopped by a tracer (CRIU's freeze). */
async function runsFreely (pid: number): Promise<boolean | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined)
  if (status === undefined) return undefined
  const state = /^State:\s+(\S)/m.exec(status)?.[1]
  return state !== 't' && state !== 'T' && state !== 'Z' && state !== 'X'
}

export class PostCopyPlumbing {
  private readonly out = new Map<number, Outgoing>()
  private readonly inc = new Map<number, Incoming>()
  /**
   * Host pid of each job dumped lazily here, kept after its dump ended: a target that fails tears
   * down the page bridge, which kills the dump (and drops `out`) before the rollback asks whether
   * the tree runs again. One number per job migrated from here; replaced on its next lazy dump.
   */
  private readonly lazyPids = new Map<number, number>()

  /** Jobs running here whose pages are still arriving. */
  private readonly pulling = new Set<number>()

  constructor (private readonly runtime: JobRuntime, private readonly bulk: BulkTransport, private readonly store: JournalStore, private readonly logger: Logger) {}

  // ---- source ---------------------------------------------------------------------------------

  /** Lazy dump of `job`; connects to its page server at once so nothing else can take it. */
  async checkpointLazy (job: RuntimeJob, imagesDir: string, signal: AbortSignal): Promise<{ dumped: DumpedFile[], served: Promise<void>, freezingAtMs?: number }> {
    if (this.runtime.checkpointLazy === undefined) unsupported('dump lazily')
    const abort = new AbortController()
    const both = AbortSignal.any([signal, abort.signal])
    const port = await freeLoopbackPort()
    const lazy = await this.runtime.checkpointLazy(job, imagesDir, port, both)
    let socket: Socket
    try {
      socket = await connectLoopback(port, both)
    } catch (err) {
      abort.abort(err)
      await lazy.served.catch(() => {})
      throw err
    }
    this.out.set(job.vpid, { abort, socket, hostPid: job.hostPid, served: lazy.served })
    this.lazyPids.set(job.vpid, job.hostPid)
    const served = lazy.served.finally(() => { this.out.delete(job.vpid) })
    served.catch(() => {})
    return { dumped: lazy.stdio, served, freezingAtMs: lazy.freezingAtMs }
  }

  /** Bridges the page-server connection of vpid to `target` over the bulk transport. */
  async bridgePages (target: string, vpid: number, signal: AbortSignal, onBytes: (s: BridgeStats) => void): Promise<{ done: Promise<BridgeStats> }> {
    const o = this.out.get(vpid)
    if (o === undefined) throw new PostCopyError(`job ${vpid} has no lazy dump here`)
    const channel = await this.bulk.open(target, LAZY_PAGES_PROTOCOL, signal)
    await channel.write(vpidHeader(vpid), signal)
    // Before the target runs the job, a broken stream must let the tree here go on (kill CRIU
    // first); once it runs there, the tree here is stale and CRIU's EOF handling kills it.
    const beforeTeardown = async (): Promise<void> => { if (o.pulling !== true) await this.killDump(o) }
    const done = bridge(o.socket, withExplicitEnd(channel), AbortSignal.any([signal, o.abort.signal]), { onBytes, beforeTeardown })
    done.catch(() => {})
    return { done }
  }

  /**
   * Kills CRIU before its page-server connection closes: CRIU takes an EOF there for a finished
   * transfer and kills the tree, while a killed CRIU lets the tree go on.
   */
  private async killDump (o: Outgoing): Promise<void> {
    o.abort.abort(new PostCopyError('post-copy migration aborted'))
    await Promise.race([o.served.catch(() => {}), new Promise(resolve => setTimeout(resolve, 5000))])
  }

  /** Kills the lazy dump; resolves true once the job's tree runs again here (CRIU let it go). */
  async abortLazy (vpid: number): Promise<boolean> {
    const o = this.out.get(vpid)
    const hostPid = o?.hostPid ?? this.lazyPids.get(vpid)
    this.lazyPids.delete(vpid)
    if (hostPid === undefined) return false
    if (o !== undefined) {
      await this.killDump(o)
      o.socket.destroy()
    }
    // The tracer's exit lets the tree go; allow a loaded node time for it (50 ms polls for 3 s were tight).
    const deadline = Date.now() + ABORT_RESUME_WAIT_MS
    while (Date.now() < deadline) {
      const free = await runsFreely(hostPid)
      if (free === undefined) return false
      if (free) return true
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    return false
  }

  /** The target runs the job (see Outgoing.pulling). */
  pullStarted (vpid: number): void {
    const o = this.out.get(vpid)
    if (o !== undefined) o.pulling = true
  }

  /** The pull failed after the target ran the job: the tree here must never run again. */
  async discardTree (job: RuntimeJob): Promise<void> {
    this.lazyPids.delete(job.vpid)
    await this.runtime.signal(job, 'SIGKILL').catch(() => {})
    await this.runtime.release(job).catch(() => {})
  }

  // ---- target ---------------------------------------------------------------------------------

  /** Marks a pull as begun (before the restored job is adopted); removed once every page arrived. */
  async beginPull (vpid: number, from: string): Promise<void> {
    const mark: PullMark = { vpid, from, startedMs: Date.now() }
    await this.store.put(pullKey(vpid), mark)
    this.pulling.add(vpid)
  }

  async endPull (vpid: number): Promise<void> {
    this.pulling.delete(vpid)
    await this.store.del(pullKey(vpid))
  }

  /** Pulls an earlier daemon began and did not see end. */
  async unfinishedPulls (): Promise<PullMark[]> {
    return (await this.store.list<PullMark>(PULL_PREFIX)).map(e => e.value).filter(m => !this.pulling.has(m.vpid))
  }

  isPulling (vpid: number): boolean { return this.pulling.has(vpid) }

  /** Reserves the loopback port the lazy-pages daemon will pull from. */
  async prepareIn (vpid: number, from: string): Promise<void> {
    const stop = new AbortController()
    const listener = await listenLoopbackOnce(stop.signal)
    let resolve = (): void => {}
    const promise = new Promise<void>(r => { resolve = r })
    this.inc.set(vpid, { from, stop, listener, restored: { promise, resolve } })
  }

  /** An incoming page channel: waits for the lazy-pages daemon's connection and bridges the two. */
  async handleChannel (channel: ByteChannel, fromNode: string, signal: AbortSignal): Promise<void> {
    const { vpid, rest: raw } = await readVpidHeader(channel, signal, () => new PostCopyError('page channel ended before its header'))
    const rest = withExplicitEnd(raw)
    const entry = this.inc.get(vpid)
    if (entry === undefined || entry.from !== fromNode) throw new PostCopyError(`no post-copy migration of job ${vpid} from ${fromNode} was prepared`)
    const socket = await Promise.race([
      entry.listener.accepted,
      new Promise<never>((_resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true }) })
    ])
    const ranges = await this.lazyRanges(vpid, entry.imagesDir)
    if (ranges === undefined) await bridge(socket, rest, signal)
    else await prefetchBridge(socket, rest, signal, { ranges, begin: entry.restored.promise })
  }

  /** What the lazy-pages daemon will pull, to fetch it ahead; undefined: pull as the daemon asks. */
  private async lazyRanges (vpid: number, imagesDir: string | undefined): Promise<LazyRange[] | undefined> {
    if (imagesDir === undefined) return undefined
    try {
      return await readLazyRanges(imagesDir)
    } catch (err) {
      this.logger.warn({ vpid, err: (err as Error).message }, 'post-copy: cannot read the pagemap; pages come only as CRIU asks (slower)')
      return undefined
    }
  }

  /**
   * Starts the lazy-pages daemon for imagesDir, once: called as soon as the images are in, so that
   * it is ready when the restore comes (its start-up is then out of the downtime), and by the restore.
   */
  async startDaemon (vpid: number, imagesDir: string): Promise<void> {
    const entry = this.inc.get(vpid)
    if (entry === undefined) throw new PostCopyError(`no post-copy migration of job ${vpid} was prepared`)
    const start = this.runtime.startLazyPages?.bind(this.runtime)
    if (start === undefined) unsupported('run criu lazy-pages')
    entry.starting ??= (async () => {
      entry.imagesDir = imagesDir
      // No request signal: the daemon must outlive the restore call, until the last page arrived.
      const daemon = await start(imagesDir, entry.listener.port)
      if (this.inc.get(vpid) !== entry) { daemon.stop(); throw new PostCopyError(`the migration of job ${vpid} was cancelled`) }
      entry.daemon = daemon
    })()
    await entry.starting
  }

  /**
   * The job runs: when its last page arrived, the pull's mark goes and `onDone` cleans up. If the
   * pull fails the job cannot go on (its memory is missing): `onLost` records why and kills it.
   */
  watchPull (vpid: number, job: RuntimeJob, onDone: () => Promise<void>, onLost: (why: string) => Promise<void>): void {
    const entry = this.inc.get(vpid)
    this.inc.delete(vpid)
    entry?.listener.close()
    entry?.restored.resolve()
    if (entry?.daemon === undefined) return
    const log = this.logger.child({ vpid })
    entry.daemon.done.then(async () => {
      log.info({}, 'post-copy: every page arrived')
      await this.endPull(vpid)
    }, async (err: unknown) => {
      // The first line only: CRIU's errors carry a log tail, which stays in the daemon's log.
      log.warn({ err: (err as Error).message }, 'post-copy page pull failed')
      const cause = ((err as Error).message.split('\n')[0] ?? '').slice(0, 300)
      await onLost(`the post-copy page pull from ${entry.from} broke (${cause}): the pages still there cannot reach ` +
        'the job any more, so it is lost (post-copy needs its source until every page has arrived)')
      await this.endPull(vpid)
    }).catch((err: unknown) => { log.warn({ err: (err as Error).message }, 'post-copy: could not record the end of the pull') })
      .finally(() => { void onDone().catch(() => {}) })
  }

  /** Drops what was prepared for vpid (listener, daemon). */
  cancelIn (vpid: number): void {
    const entry = this.inc.get(vpid)
    if (entry === undefined) return
    this.inc.delete(vpid)
    entry.stop.abort(new PostCopyError('migration cancelled'))
    entry.listener.close()
    entry.daemon?.stop()
  }

  has (vpid: number): boolean { return this.inc.has(vpid) }
}
