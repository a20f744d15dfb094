/**
 * The target side of stop-and-copy (and of post-copy's non-page part): prepared migrations, the
 * images channel, the streamed-pages channel (src/migration/page-stream.ts), the restore. A target
 * accepts one incoming migration per vpid; images and pages channels are matched to the prepared
 * migration by their sending node and the vpid they name.
 */
import { mkdir, readdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { bridge } from '../migration/page-bridge.js'
import { ArrivingImages } from '../migration/transfer/arrivals.js'
import type { TransferObserver } from '../migration/transfer/arrivals.js'
import { readPagesHeader, PageStreamError } from '../migration/page-stream.js'
import type { PageServerProcess } from '../migration/page-stream.js'
import { receiveImageDir, recheckImages } from '../migration/transfer.js'
import type { ExpectedImage, ReceiveSummary } from '../migration/transfer.js'
import { EarlyRestore } from './migration-early-restore.js'
import type { StagedOutput } from './migration-early-restore.js'
import { restoreArriving } from './migration-restore-arriving.js'
import { killStaleCriu } from './stale-criu.js'
import { JobStateError } from '../ssi/jobs/errors.js'
import type { TargetHolds } from '../migration/journal.js'
import type { ByteChannel } from '../migration/ports.js'
import type { MigratePrepareParams } from '../protocol/migrate.js'
import type { LocalJobs } from '../ssi/jobs/local.js'
import type { JobRecord } from '../ssi/jobs/record.js'
import type { DumpedFile, JobRuntime, RuntimeJob } from '../ssi/jobs/runtime.js'
import type { Logger } from './logger.js'
import type { MigrationTestHooks } from './migration-hooks.js'
import type { PostCopyPlumbing } from './migration-post-copy.js'

/** The job's output files, staged by the source into the images dir under these names. */
export const STAGED = { stdout: 'ssi.stdout', stderr: 'ssi.stderr' } as const

export interface IncomingInit {
  readonly selfName: string
  readonly local: LocalJobs
  readonly runtime: JobRuntime
  /** Images in flight here: `<dir>/<vpid>`. */
  readonly dir: string
  readonly logger: Logger
  readonly hooks: MigrationTestHooks
  readonly postCopy: PostCopyPlumbing
  readonly maxImageBytes: number
  readonly incomingTtlMs: number
  /** Re-hash the images before restoring them (config migration.recheckBeforeRestore). */
  readonly recheckBeforeRestore: boolean
  /** Start CRIU's restore when a stop-copy migration is prepared (config migration.earlyRestore; default true). */
  readonly earlyRestore?: boolean
  /** Removes a restored job's images dir off the critical path (./discard.ts). */
  readonly discard: (path: string) => Promise<void>
}

interface Incoming {
  readonly from: string
  readonly prepared: MigratePrepareParams
  readonly dir: string
  readonly expiry: NodeJS.Timeout
  /** Streamed pages: the page server writing them into `dir` (set once it runs). */
  pageServer?: PageServerProcess
  pagesBridged?: boolean
  received?: Promise<ReceiveSummary>
  restoring?: boolean
  /**
   * Its prepare has answered: only then may images arrive (a source sends them after that answer),
   * so an unlabelled or stray images stream never takes, and on failure ends, one still preparing.
   */
  ready?: boolean
  /** Aborts the images and pages channels of this migration (cancel). */
  readonly stop: AbortController
  /** The restore reads the images as they arrive (prepared with `restore: 'stream'`). */
  arrivals?: ArrivingImages
  /** CRIU's restore, started at the prepare, waiting for the images (./migration-early-restore.ts). */
  early?: EarlyRestore
}

export class IncomingMigrations {
  private readonly incoming = new Map<number, Incoming>()
  private closed = false

  constructor (private readonly init: IncomingInit) {}

  /** vpids whose images an earlier daemon was receiving or restoring (their dirs are removed). */
  async forgetEarlier (): Promise<number[]> {
    // `<vpid>` (received images) and `<vpid>.restore` (the dir of a restore started early)
    const names = await readdir(this.init.dir).catch(() => [] as string[])
    const vpids = [...new Set(names.map(n => Number(n.split('.')[0])).filter(Number.isSafeInteger))]
    // Its lazy-pages daemons and page servers would wait for their source forever.
    const stale = await killStaleCriu(this.init.dir)
    if (stale.length > 0) this.init.logger.info({ pids: stale }, 'killed CRIU processes a killed daemon left receiving migrations')
    await rm(this.init.dir, { recursive: true, force: true })
    return vpids
  }

  /**
   * Reserves room for p.vpid; with `pages: 'stream'` (and a runtime that can), starts a page server.
   * Registered before anything is created, so that a cancel arriving meanwhile (the source's call
   * timed out on a slow start of the page server) finds it and nothing is left behind.
   */
  async prepare (p: MigratePrepareParams, from: string): Promise<{ pages?: 'stream' }> {
    if (this.closed) throw new JobStateError(`${this.init.selfName} is stopping`)
    if (this.incoming.has(p.vpid)) throw new JobStateError(`job ${p.vpid} is already migrating to ${this.init.selfName}`)
    if (!this.init.local.canReceive(p.vpid)) throw new JobStateError(`job ${p.vpid} already runs on ${this.init.selfName}`)
    const dir = join(this.init.dir, String(p.vpid))
    // A source that died mid-migration must not block its later migrations to this node forever.
    const expiry = setTimeout(() => { void this.cancel(p.vpid, from) }, this.init.incomingTtlMs)
    expiry.unref()
    const inc: Incoming = { from, prepared: p, dir, expiry, stop: new AbortController() }
    this.incoming.set(p.vpid, inc)
    try {
      await rm(dir, { recursive: true, force: true })
      await mkdir(dir, { recursive: true, mode: 0o700 })
      if (p.mode === 'post-copy') await this.init.postCopy.prepareIn(p.vpid, from)
      const streamed = p.pages === 'stream' && p.mode !== 'post-copy' && this.init.runtime.receivePages !== undefined
      // No page server here (e.g. CRIU missing or broken): the pages come as files instead.
      inc.pageServer = streamed ? await this.init.runtime.receivePages?.(dir).catch(() => undefined) : undefined
      if (this.canRestoreArriving(p)) inc.arrivals = new ArrivingImages(dir)
      else await this.startEarly(inc)
      inc.stop.signal.throwIfAborted() // cancelled meanwhile
      inc.ready = true
    } catch (err) {
      await this.cancel(p.vpid, from)
      await this.dropCancelled(inc) // cancelled meanwhile: what it had not created yet then
      throw err
    }
    return { ...(inc.pageServer === undefined ? {} : { pages: 'stream' as const }), ...(inc.arrivals === undefined ? {} : { restore: 'stream' as const }) }
  }

  /** Restoring while the images arrive needs a runtime that can, and no re-check of them first. */
  private canRestoreArriving (p: MigratePrepareParams): boolean {
    return p.restore === 'stream' && p.mode !== 'post-copy' && p.pages !== 'stream' &&
      this.init.runtime.restoresStreaming === true && !this.init.recheckBeforeRestore
  }

  /**
   * Starts CRIU's restore now, for a stop-copy whose source named the stdio files (a runtime that
   * cannot, a post-copy, or a failure to start: the restore starts once the images are in instead).
   */
  private async startEarly (inc: Incoming): Promise<void> {
    const p = inc.prepared
    if (this.init.earlyRestore === false || p.stdio === undefined || p.mode === 'post-copy' || this.init.runtime.restoresEarly !== true) return
    try {
      inc.early = await EarlyRestore.start(this.init.runtime, { vpid: p.vpid, restoreDir: earlyDir(inc), limits: p.job.limits, stdio: p.stdio })
    } catch (err) {
      this.init.logger.warn({ vpid: p.vpid, err: (err as Error).message }, 'could not start the restore early: it starts once the images are in')
    }
  }

  /** What a prepare cancelled half-way created after the cancel ran. */
  private async dropCancelled (inc: Incoming): Promise<void> {
    this.init.postCopy.cancelIn(inc.prepared.vpid)
    inc.pageServer?.stop()
    await inc.pageServer?.done.catch(() => {})
    await inc.early?.abandon()
    if (this.incoming.get(inc.prepared.vpid) === undefined) {
      await rm(inc.dir, { recursive: true, force: true })
      await rm(earlyDir(inc), { recursive: true, force: true })
    }
  }

  /** The daemon stops: migrations prepared here and not restoring are cancelled (their dirs go now). */
  async close (): Promise<void> {
    this.closed = true
    for (const [vpid, inc] of [...this.incoming]) if (inc.restoring !== true) await this.cancel(vpid, inc.from)
  }

  /**
   * An images channel: received into the dir of the prepared migration it names. A receive that
   * breaks (source gone, channel aborted, bad data) ends that migration here at once: the source
   * cannot resend, so it rolls back, and its cancel may never come (it may have found this node hung).
   */
  async receiveImages (channel: ByteChannel, fromNode: string, signal: AbortSignal): Promise<void> {
    const stop = new AbortController()
    let matched: Incoming | undefined
    // The migration is known only from the first header: until then there is nothing to tell.
    const arrivals: TransferObserver = {
      listed: (names, last) => { matched?.arrivals?.listed(names, last) },
      wrote: (name, bytes) => { matched?.arrivals?.wrote(name, bytes) },
      completed: (name, size) => { matched?.arrivals?.completed(name, size) },
      verified: () => { matched?.arrivals?.verified() },
      failed: (err) => { matched?.arrivals?.failed(err) }
    }
    const received: Promise<ReceiveSummary> = receiveImageDir(channel, label => {
      const inc = this.awaitingImages(fromNode, label)
      inc.received = received
      matched = inc
      inc.stop.signal.addEventListener('abort', () => { stop.abort(inc.stop.signal.reason) }, { once: true })
      return inc.dir
    }, { maxTotalBytes: this.init.maxImageBytes, signal: AbortSignal.any([signal, stop.signal]), sha256: this.init.recheckBeforeRestore, arrivals })
    received.catch(() => {})
    try {
      await received
    } catch (err) {
      if (matched !== undefined) await this.dropBroken(matched, 'receiving the images', err)
      throw err
    }
  }

  /** A streamed-pages channel: bridged to the prepared migration's page server until it is done. */
  async receivePages (channel: ByteChannel, fromNode: string, signal: AbortSignal): Promise<void> {
    const { vpid, rest } = await readPagesHeader(channel, signal)
    const inc = this.incoming.get(vpid)
    if (inc?.from !== fromNode || inc.pageServer === undefined || inc.pagesBridged === true) {
      throw new PageStreamError(`no migration of job ${vpid} from ${fromNode} awaits streamed pages on ${this.init.selfName}`)
    }
    inc.pagesBridged = true
    try {
      await bridge(inc.pageServer.socket, rest, AbortSignal.any([signal, inc.stop.signal]))
      await inc.pageServer.done
    } catch (err) {
      await this.dropBroken(inc, 'receiving the streamed pages', err)
      throw err
    }
  }

  /** Cancels the migration `inc` (if it is still prepared here) after its channel broke. */
  private async dropBroken (inc: Incoming, what: string, err: unknown): Promise<void> {
    const vpid = inc.prepared.vpid
    if (this.incoming.get(vpid) !== inc || inc.restoring === true) return
    this.init.logger.warn({ vpid, from: inc.from, err: (err as Error).message }, `${what} failed: the migration is dropped here`)
    await this.cancel(vpid, inc.from)
  }

  /** The prepared migration from `from` that images labelled `label` (a vpid) are for. */
  private awaitingImages (from: string, label: string | undefined): Incoming {
    const waiting = [...this.incoming.values()].filter(i => i.from === from && i.ready === true && i.received === undefined)
    const inc = label === undefined ? (waiting.length === 1 ? waiting[0] : undefined) : waiting.find(i => String(i.prepared.vpid) === label)
    if (inc === undefined) throw new JobStateError(`no migration of job ${label ?? '?'} from ${from} awaits images on ${this.init.selfName}`)
    return inc
  }

  /**
   * What this node holds of vpid, for a source settling an interrupted migration (the one it
   * started at `migrationStartedMs`, if it says).
   */
  holds (vpid: number, from: string, migrationStartedMs?: number): TargetHolds {
    const inc = this.incoming.get(vpid)
    const { local } = this.init
    // Running here by another way (its home node restored it from a checkpoint while the source was
    // down): the source must not bring back its own copy.
    const here = local.has(vpid) ? local.get(vpid) : undefined
    const runsHere = here?.node === this.init.selfName && (here.state === 'running' || here.state === 'checkpointed')
    if (inc !== undefined && inc.from === from && !(inc.restoring !== true && runsHere)) return inc.restoring === true ? 'restoring' : 'incoming'
    if (this.init.postCopy.isPulling(vpid)) return 'pulling'
    // That migration brought it here, and it ran: it moved, whatever it did since (moved on to a
    // third node while the source was down, or ended). Not if it was lost here.
    const arrived = here?.arrival !== undefined && here.arrival.from === from && here.arrival.migrationStartedMs === migrationStartedMs
    if (arrived && here?.state !== 'lost') return 'running'
    // Ended there after it moved still counts as "it moved": it must not run again here. Lost here
    // (a post-copy pull that broke) means nothing of it runs anywhere.
    if (!local.has(vpid)) return 'absent'
    const state = local.get(vpid).state
    return state !== 'moved' && state !== 'lost' ? 'running' : 'absent'
  }

  private incomingFrom (vpid: number, from: string): Incoming {
    const inc = this.incoming.get(vpid)
    if (inc === undefined || inc.from !== from) throw new JobStateError(`no migration of job ${vpid} from ${from} was prepared`)
    return inc
  }

  /** Everything arrived: pages (if streamed; the source's dump ended, so its page server is done) and images. */
  private async arrived (vpid: number, inc: Incoming, from: string, signal: AbortSignal): Promise<void> {
    if (inc.received === undefined) throw new JobStateError(`the images of job ${vpid} did not arrive`)
    await this.init.hooks.run('target-received', vpid, from)
    // The transfer verified every file while writing it; optionally also catch on-disk corruption
    // since then (costs a read + sha256 of the images inside the downtime; the source rolls back).
    const { images } = await inc.received
    if (this.init.recheckBeforeRestore) await recheckImages(inc.dir, withSha256(images), signal)
    if (inc.pageServer !== undefined) {
      if (inc.pagesBridged !== true) throw new JobStateError(`the pages of job ${vpid} did not arrive`)
      await Promise.race([inc.pageServer.done, new Promise<never>((_resolve, reject) => {
        signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
      })])
    }
    signal.throwIfAborted()
  }

  async restore (vpid: number, stdio: DumpedFile[], from: string, signal: AbortSignal): Promise<void> {
    const inc = this.incomingFrom(vpid, from)
    const job = inc.arrivals === undefined
      ? await this.restoreReceived(vpid, inc, stdio, from, signal)
      : await this.restoreArriving(vpid, inc, inc.arrivals, stdio, signal)
    await this.adoptRestored(vpid, inc, job, from)
  }

  /** The job's dir with the output so far: the staged output files moved into place. */
  private async placeOutput (vpid: number, inc: Incoming): Promise<void> {
    const paths = this.init.runtime.paths(vpid)
    await rm(paths.jobDir, { recursive: true, force: true }) // left from an earlier stay of this job here
    await mkdir(paths.jobDir, { recursive: true, mode: 0o711 })
    await rename(join(inc.dir, STAGED.stdout), paths.stdout)
    await rename(join(inc.dir, STAGED.stderr), paths.stderr)
  }

  /** Restores from images that all arrived (through the restore started at the prepare, if it can go on). */
  private async restoreReceived (vpid: number, inc: Incoming, stdio: DumpedFile[], from: string, signal: AbortSignal): Promise<RuntimeJob> {
    await this.arrived(vpid, inc, from, signal).catch(async (err: unknown) => {
      await inc.early?.abandon()
      throw err
    })
    const early = await this.keepEarly(vpid, inc, stdio)
    if (early !== undefined) {
      inc.restoring = true
      return await early.release(inc.dir, this.stagedOutput(vpid, inc), signal).catch((err: unknown) => {
        inc.restoring = false
        throw err
      })
    }
    const { runtime, postCopy } = this.init
    await this.placeOutput(vpid, inc)
    const { prepared } = inc
    inc.restoring = true
    const lazyPages = prepared.mode === 'post-copy'
    // On failure the job dir stays (its shim.log and restore.log say why) until this vpid comes again.
    return await (async () => {
      if (lazyPages) await postCopy.startDaemon(vpid, inc.dir)
      // Held: should this daemon die before recording the job, the source rolls back, and the shim kills this copy.
      return await runtime.restore({ vpid, imagesDir: inc.dir, limits: prepared.job.limits, stdio, lazyPages, hold: true }, signal)
    })().catch((err: unknown) => {
      inc.restoring = false
      throw err
    })
  }

  /** The restore started at the prepare, if it can go on with the dump's stdio and the output; else it is abandoned. */
  private async keepEarly (vpid: number, inc: Incoming, stdio: DumpedFile[]): Promise<EarlyRestore | undefined> {
    const early = inc.early
    if (early === undefined) return undefined
    const why = early.unusable(stdio, this.stagedOutput(vpid, inc))
    if (why === undefined) return early
    this.init.logger.info({ vpid, why }, 'the restore started early cannot go on: restoring anew')
    inc.early = undefined
    await early.abandon()
    return undefined
  }

  /** The output files the source staged with the images, and where they go. */
  private stagedOutput (vpid: number, inc: Incoming): StagedOutput[] {
    const paths = this.init.runtime.paths(vpid)
    return [{ staged: join(inc.dir, STAGED.stdout), path: paths.stdout }, { staged: join(inc.dir, STAGED.stderr), path: paths.stderr }]
  }

  /** Restores while the images arrive (./migration-restore-arriving.ts). */
  private async restoreArriving (vpid: number, inc: Incoming, arrivals: ArrivingImages, stdio: DumpedFile[], signal: AbortSignal): Promise<RuntimeJob> {
    inc.restoring = true
    const gated = async (): Promise<void> => { await this.init.hooks.run('target-restore-gated', vpid, inc.from) }
    return await restoreArriving(this.init.runtime, {
      vpid, dir: inc.dir, limits: inc.prepared.job.limits, stdio, arrivals, stop: inc.stop.signal, staged: Object.values(STAGED), placeOutput: async () => { await this.placeOutput(vpid, inc) }, gated
    }, signal).catch((err: unknown) => {
      inc.restoring = false
      throw err
    })
  }

  /** The job runs here now: recorded, confirmed to its shim, its images dropped. */
  private async adoptRestored (vpid: number, inc: Incoming, job: RuntimeJob, from: string): Promise<void> {
    const { runtime, local, postCopy } = this.init
    const { prepared } = inc
    const lazyPages = prepared.mode === 'post-copy'
    await this.init.hooks.run('target-restored', vpid, from)
    clearTimeout(inc.expiry)
    this.incoming.delete(vpid)
    const migration = { from, to: this.init.selfName, outcome: 'moved' as const, atMs: Date.now() }
    const arrival = prepared.migrationStartedMs === undefined ? {} : { arrival: { from, migrationStartedMs: prepared.migrationStartedMs } }
    const record: JobRecord = { ...prepared.job, node: this.init.selfName, state: 'running', stdin: prepared.job.stdin === true, migration, ...arrival }
    // Before adopting: a daemon that restarts before the last page arrived must find it unfinished.
    if (lazyPages) await postCopy.beginPull(vpid, from)
    await local.adoptMigrated(record, job)
    if (!runtime.confirmRestored(job)) this.init.logger.warn({ vpid }, 'the restored job\'s shim was gone before it was confirmed')
    if (prepared.job.stdinClosed === true) await runtime.closeStdin(job).catch(() => {}) // the restored shim opened its keep-alive end again
    // Renamed away now, deleted in the background: not inside the job's downtime.
    const cleanup = async (): Promise<void> => {
      await this.init.discard(inc.dir)
      if (inc.early !== undefined) await this.init.discard(earlyDir(inc))
    }
    // Post-copy: the lazy-pages daemon reads the images dir until the last page arrived.
    if (lazyPages) {
      postCopy.watchPull(vpid, job, cleanup, async why => { await this.loseHere(vpid, job, why) })
      // Not awaited: a test killing this daemon here must not fail the restore call it answers.
      void this.init.hooks.run('target-pulling', vpid, from).catch(() => {})
    } else {
      await cleanup()
    }
  }

  /** A job here that cannot go on (its memory is incomplete): recorded lost, then killed. */
  async loseHere (vpid: number, job: RuntimeJob, why: string): Promise<void> {
    const { local, runtime, logger } = this.init
    logger.error({ vpid, err: why }, 'job lost')
    await local.lose(vpid, why)
    await runtime.signal(job, 'SIGKILL').catch(() => {})
    await runtime.waitExit(job, AbortSignal.timeout(10_000)).catch(() => {})
    await runtime.release(job).catch(() => {})
  }

  async cancel (vpid: number, from: string): Promise<void> {
    const inc = this.incoming.get(vpid)
    if (inc === undefined || inc.from !== from) return
    clearTimeout(inc.expiry)
    this.incoming.delete(vpid)
    inc.stop.abort(new JobStateError(`the migration of job ${vpid} to ${this.init.selfName} was cancelled`))
    this.init.postCopy.cancelIn(vpid)
    inc.pageServer?.stop()
    await inc.received?.catch(() => {})
    await inc.pageServer?.done.catch(() => {})
    await inc.early?.abandon()
    await rm(inc.dir, { recursive: true, force: true })
    await rm(earlyDir(inc), { recursive: true, force: true })
  }
}

/** Where the restore started at the prepare finds its images once they are in: beside the received ones. */
function earlyDir (inc: Incoming): string {
  return `${inc.dir}.restore`
}

/** The received images' sha256 digests (asked for with ReceiveOptions.sha256 when re-checking). */
function withSha256 (images: ReceiveSummary['images']): ExpectedImage[] {
  return images.map(({ name, size, sha256 }) => {
    if (sha256 === undefined) throw new Error(`no sha256 of ${name} was computed on arrival: cannot re-check it`)
    return { name, size, sha256 }
  })
}
