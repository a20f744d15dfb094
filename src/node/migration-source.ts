/**
 * The source side of migrations out of this node (src/migration/stop-and-copy.ts's
 * MigrationSource, and MigrationTarget: how the source reaches the target), over LocalJobs and
 * the job runtime; ./migration.ts runs them, ./migration-target.ts is the other end.
 */
import { copyFileSync, statSync } from 'node:fs'
import { access, copyFile, mkdir, rm, unlink } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { readDumpStats } from '../migration/dump-stats.js'
import type { DumpStats } from '../migration/dump-stats.js'
import { findUnmigratable } from '../migration/precheck.js'
import { FAST_CRC32, IMAGES_PROTOCOL, sendImageDir } from '../migration/transfer.js'
import type { TransferProgress } from '../migration/transfer.js'
import { IdleWatchdog } from '../migration/idle-watchdog.js'
import { PAGES_PROTOCOL, pageSocketPair, pagesHeader, teePages } from '../migration/page-stream.js'
import { parseParams } from '../protocol/peer.js'
import { migratePrepareReplySchema } from '../protocol/migrate.js'
import { JobStateError } from '../ssi/jobs/errors.js'
import { STAGED } from './migration-target.js'
import type { DirDiscarder } from './discard.js'
import type { MigrationEvents } from './migration-events.js'
import type { MigrationTestHooks } from './migration-hooks.js'
import type { MigrationSource, MigrationTarget } from '../migration/stop-and-copy.js'
import type { BulkTransport, ByteChannel } from '../migration/ports.js'
import type { MigratePrepareParams } from '../protocol/migrate.js'
import type { LocalJobs } from '../ssi/jobs/local.js'
import type { JobRecord } from '../ssi/jobs/record.js'
import type { DumpedFile, JobRuntime, RuntimeJob } from '../ssi/jobs/runtime.js'
import type { PeerRpc } from '../ssi/ports.js'

/** What the migration service (./migration.ts) and its source side both work with. */
export interface MigrationParts {
  readonly selfName: string
  readonly local: LocalJobs
  readonly runtime: JobRuntime
  readonly rpc: PeerRpc
  readonly bulk: BulkTransport
}

export interface OutgoingInit extends MigrationParts {
  /** Images of migrations out of here: `<dir>/<vpid>` (and `<dir>/<vpid>.pages`, a streamed dump's pages). */
  readonly dir: string
  readonly hooks: MigrationTestHooks
  readonly discarder: DirDiscarder
  /** Stream the pages while dumping when the target can take them (migration.streamPages). */
  readonly streamPages: boolean
  /** Send CRIU's page files while it writes them (migration.sendWhileDumping). */
  readonly sendWhileDumping: boolean
  /** Have the target restore while the images arrive, when it can (migration.streamRestore). */
  readonly streamRestore: boolean
  /** An image send that moves no data (and gets no answer) this long is given up, ms. */
  readonly transferIdleMs: number
  /** Deadline of the target's restore, ms. */
  readonly restoreTimeoutMs: number
}

interface Outgoing {
  readonly job: RuntimeJob
  readonly record: JobRecord
  /** The target takes the pages streamed as they are dumped (it said so when prepared). */
  streamPages?: boolean
  /** Page bytes streamed during the dump. */
  pageBytes?: number
  /** The target restores while the images arrive (it said so when prepared). */
  streamRestore?: boolean
  /** Set while such a restore is asked for: starts its deadline once the images are sent. */
  onSent?: () => void
  /** The images are all sent (and verified by the target). */
  sent?: boolean
  /** The images channel, opened (handshake and all) while the job dumps. */
  imagesChannel?: Promise<ByteChannel>
}

/**
 * A migration's images are checked end to end with crc32 (the channel is authenticated; nobody
 * needs their sha256 unless the target re-checks them, and then it computes one on arrival).
 */
const IMAGE_CHECKSUM = FAST_CRC32 ? 'crc32' : 'sha256'
/**
 * CRIU's own logs in an images dir (its work dir) stay on the source: the target does not read
 * them, and a post-copy dump's CRIU still writes its log while the images go (which failed the
 * send as "changed while being sent").
 */
const isCriuLog = (name: string): boolean => name.endsWith('.log')
/** CRIU's page files, which it appends to while it dumps (one per process with memory). */
const isPagesImage = (name: string): boolean => /^pages-\d+\.img$/.test(name)
/** Where a streamed dump's page stream is recorded next to its images dir (for a rollback). */
export const pageStreamFile = (imagesDir: string): string => `${imagesDir}.pages`

export class OutgoingMigrations {
  private readonly outgoing = new Map<number, Outgoing>()
  private readonly dumpStats = new Map<number, DumpStats>()

  constructor (private readonly init: OutgoingInit) {}

  /** `migrationStartedMs`: when this migration started (its journal's), sent to the target as its name. */
  source (target: string, migrationStartedMs?: number): MigrationSource<MigratePrepareParams, DumpedFile[]> {
    const { local, runtime } = this.init
    return {
      begin: async (vpid, asUid) => {
        if (this.outgoing.has(vpid)) throw new JobStateError(`job ${vpid} is already migrating`)
        const { record, runtime: job } = await local.beginMigration(vpid, asUid)
        this.outgoing.set(vpid, { job, record })
        const { owner, argv, cwd, hostname, limits, homeNode, createdMs, startedMs, stdin, stdinClosed } = record
        const migrated = { vpid, owner: { ...owner, groups: [...owner.groups] }, argv: [...argv], cwd, hostname, limits, homeNode, createdMs, startedMs, stdin, stdinClosed }
        // Streaming needs a local replay of the pages for a rollback.
        const streamPages = runtime.replayPages !== undefined && this.init.streamPages
        // For a target that starts its restore before the images come (it cannot know them sooner).
        const stdio = await runtime.dumpedStdio?.(job).catch(() => undefined)
        const payload: MigratePrepareParams = {
          vpid,
          job: migrated,
          ...(streamPages ? { pages: 'stream' as const } : {}),
          ...(this.init.streamRestore && !streamPages ? { restore: 'stream' as const } : {}),
          ...(stdio === undefined ? {} : { stdio }),
          ...(migrationStartedMs === undefined ? {} : { migrationStartedMs })
        }
        return { hostPid: job.hostPid, payload }
      },
      check: async hostPid => await findUnmigratable(hostPid),
      imagesDir: async vpid => {
        const dir = join(this.init.dir, String(vpid))
        await rm(dir, { recursive: true, force: true })
        await mkdir(dir, { recursive: true, mode: 0o700 })
        return dir
      },
      checkpoint: async (vpid, dir, signal) => {
        const out = this.out(vpid)
        const stdio = out.streamPages === true
          ? await this.checkpointStreaming(out, target, dir, signal)
          : await runtime.checkpoint(out.job, dir, signal)
        const stats = readDumpStats(dir)
        if (stats !== undefined) this.dumpStats.set(vpid, stats)
        return stdio
      },
      stageOutput: async (vpid, dir) => {
        const paths = runtime.paths(vpid)
        await stage(paths.stdout, join(dir, STAGED.stdout))
        await stage(paths.stderr, join(dir, STAGED.stderr))
      },
      commit: async (vpid, to, dir) => {
        this.outgoing.delete(vpid)
        await local.markMoved(vpid, to)
        // Deleting a large image takes a while (~0.3 s per GiB): not before the caller hears.
        await this.init.discarder.discard(dir)
        await this.init.discarder.discard(pageStreamFile(dir))
      },
      resume: async (vpid, error) => {
        this.outgoing.delete(vpid)
        await local.resumeAfterMigration(vpid, undefined, error, target)
      },
      rollback: async (vpid, dir, stdio, error) => {
        const restored = await this.restoreFromImages(vpid, dir, stdio, this.out(vpid).job)
        this.outgoing.delete(vpid)
        await local.resumeAfterMigration(vpid, restored, error, target)
        await rm(dir, { recursive: true, force: true })
        await rm(pageStreamFile(dir), { force: true })
      },
      lose: async (vpid, error) => {
        this.outgoing.delete(vpid)
        await local.loseAfterMigration(vpid, error, target)
        const dir = join(this.init.dir, String(vpid))
        await rm(dir, { recursive: true, force: true })
        await rm(pageStreamFile(dir), { force: true })
      }
    }
  }

  /**
   * Dumps with the pages streamed to the target as CRIU writes them (src/migration/page-stream.ts)
   * and recorded next to `dir` for a rollback. A broken stream fails the dump, which lets the tree
   * run on (CRIU resumes it), so the migration rolls back as for any failed dump.
   */
  private async checkpointStreaming (out: Outgoing, target: string, dir: string, signal: AbortSignal): Promise<DumpedFile[]> {
    const { job } = out
    const stop = new AbortController()
    const both = AbortSignal.any([signal, stop.signal])
    const channel = await this.init.bulk.open(target, PAGES_PROTOCOL, both)
    // CRIU's end of the pair is closed once the dump returns: CRIU's own copy is closed by then,
    // so ours sees the end of the page stream.
    const pair = pageSocketPair()
    await rm(pageStreamFile(dir), { force: true })
    const streamed = (async () => {
      await channel.write(pagesHeader(job.vpid), both)
      return await teePages(pair.ours, channel, pageStreamFile(dir), both, pair.reads)
    })()
    let broke: Error | undefined // the stream failed first (e.g. the target died), so the dump did
    streamed.catch((e: unknown) => {
      if (!stop.signal.aborted) broke = e as Error
      pair.ours.destroy() // CRIU's writes then fail at once, and so does the dump
    })
    try {
      const stdio = await this.init.runtime.checkpoint(job, dir, both, { pageServerSocket: pair.theirs }).finally(pair.closeTheirs)
      out.pageBytes = (await streamed).bytes
      return stdio
    } catch (err) {
      stop.abort(err)
      channel.abort(err instanceof Error ? err : new Error(String(err)))
      await streamed.catch(() => {})
      // A broken stream is the cause of CRIU's failure, and the clearer message.
      if (broke !== undefined && !signal.aborted) throw new Error(`streaming the pages to ${target} failed: ${broke.message}`, { cause: broke })
      throw err
    } finally {
      pair.closeTheirs()
    }
  }

  /** Restores a job dumped here from its images in `dir` (its old tree's cgroup freed first). */
  async restoreFromImages (vpid: number, dir: string, stdio: DumpedFile[], old: RuntimeJob | undefined): Promise<RuntimeJob> {
    const { runtime, local } = this.init
    if (old !== undefined) await runtime.release(old).catch(() => {})
    for (const f of Object.values(STAGED)) await unlink(join(dir, f)).catch(() => {})
    const stream = pageStreamFile(dir)
    if (await access(stream).then(() => true, () => false)) {
      // A streamed dump: its pages are in the recorded stream, not yet in dir.
      if (runtime.replayPages === undefined) throw new JobStateError(`job ${vpid} was dumped with streamed pages, which this runtime cannot replay`)
      await runtime.replayPages(stream, dir)
      await unlink(stream)
    }
    return await runtime.restore({ vpid, imagesDir: dir, limits: local.get(vpid).limits, stdio })
  }

  /** A migration that failed before its images went: the channel opened for them is closed. */
  private dropImagesChannel (vpid: number): void {
    const out = this.outgoing.get(vpid)
    const early = out?.imagesChannel
    if (out === undefined || early === undefined) return
    out.imagesChannel = undefined
    void early.then(c => { c.abort(new Error('the migration ended before its images were sent')) }, () => {})
  }

  /** The job of a migration out of here (throws if there is none). */
  job (vpid: number): RuntimeJob { return this.out(vpid).job }

  has (vpid: number): boolean { return this.outgoing.has(vpid) }

  /** CRIU's own figures of the dump of vpid's migration (once read; then forgotten). */
  takeDumpStats (vpid: number): DumpStats | undefined {
    const stats = this.dumpStats.get(vpid)
    this.dumpStats.delete(vpid)
    return stats
  }

  private out (vpid: number): Outgoing {
    const o = this.outgoing.get(vpid)
    if (o === undefined) throw new JobStateError(`job ${vpid} is not migrating from here`)
    return o
  }

  target (events?: MigrationEvents): MigrationTarget<MigratePrepareParams, DumpedFile[]> {
    const { rpc, bulk } = this.init
    return {
      prepare: async (target, vpid, payload, signal) => {
        const reply = parseParams(migratePrepareReplySchema, await rpc.call(target, 'migrate.prepare', payload, { signal, timeoutMs: 10_000 }) ?? {})
        const out = this.outgoing.get(vpid)
        if (out === undefined) return
        out.streamPages = payload.pages === 'stream' && reply.pages === 'stream'
        out.streamRestore = payload.restore === 'stream' && reply.restore === 'stream'
        // Opened now, used once the dump is done: its handshake is not inside the downtime.
        out.imagesChannel = bulk.open(target, IMAGES_PROTOCOL, signal)
        out.imagesChannel.catch(() => {}) // a failure is seen by `send`
      },
      send: async (target, dir, signal, written) => {
        const out = this.outgoing.get(Number(basename(dir)))
        const channel = this.init.hooks.wrapImages(await (out?.imagesChannel ?? bulk.open(target, IMAGES_PROTOCOL, signal)))
        // Streamed pages are not in files; without following, the send waits for the whole dir. A
        // restore reading the images as they come needs all but the pages first: no following.
        const following = this.init.sendWhileDumping && out?.streamPages !== true && out?.streamRestore !== true
        const follow = written !== undefined && following ? { match: isPagesImage, done: written } : undefined
        let idle: IdleWatchdog | undefined
        try {
          if (follow === undefined) await written
          // A target declared dead has its channels aborted (dead-peers.ts); one alive but not taking data, this.
          const watchdog = new IdleWatchdog(this.init.transferIdleMs, ms => new Error(`${target} took no data and sent no answer for ${ms} ms (migration.transferIdleMs)`))
          idle = watchdog
          // Waiting for CRIU's first page file is not idling, but no progress to show either.
          const onProgress = (p: TransferProgress): void => { watchdog.touch(); if (p.doneBytes > 0 || p.totalBytes > 0) events?.transfer(p) }
          const sent = await sendImageDir(channel, dir, { signal: AbortSignal.any([signal, watchdog.signal]), label: basename(dir), checksum: IMAGE_CHECKSUM, onProgress, skip: isCriuLog, follow })
          if (out !== undefined) out.sent = true
          out?.onSent?.()
          return { bytes: (out?.pageBytes ?? 0) + sent.bytes, earlyBytes: (out?.pageBytes ?? 0) + (sent.earlyBytes ?? 0) }
        } catch (err) {
          channel.abort(err instanceof Error ? err : new Error(String(err)))
          throw new Error(`sending the images to ${target} failed: ${(err as Error).message}`, { cause: err })
        } finally {
          idle?.stop()
        }
      },
      restore: async (target, vpid, stdio, signal) => {
        const out = this.outgoing.get(vpid)
        if (out?.streamRestore !== true) {
          await rpc.call(target, 'migrate.restore', { vpid, stdio }, { signal, timeoutMs: this.init.restoreTimeoutMs })
          return
        }
        // Asked for as the images go: its deadline runs from the end of the send, which has its
        // own (transferIdleMs); a failed send cancels the target, which ends this call.
        const deadline = new AbortController()
        let timer: NodeJS.Timeout | undefined
        out.onSent = () => {
          timer = setTimeout(() => { deadline.abort(new Error(`${target} did not restore job ${vpid} within ${this.init.restoreTimeoutMs} ms of getting its images`)) }, this.init.restoreTimeoutMs)
        }
        if (out.sent === true) out.onSent()
        try {
          await rpc.call(target, 'migrate.restore', { vpid, stdio }, { signal: AbortSignal.any([signal, deadline.signal]), timeoutMs: 24 * 3600_000 })
        } finally {
          clearTimeout(timer)
          out.onSent = undefined
        }
      },
      restoresWhileReceiving: (_target, vpid) => this.outgoing.get(vpid)?.streamRestore === true,
      cancel: async (target, vpid) => {
        this.dropImagesChannel(vpid)
        await rpc.call(target, 'migrate.cancel', { vpid }, { timeoutMs: 10_000 })
      }
    }
  }
}

/** Output up to this size is copied synchronously (the page send keeps the thread pool busy meanwhile). */
const SMALL_OUTPUT_BYTES = 4 * 1024 * 1024

/** Copies a job's output file into its images dir, inside the downtime: most are small. */
async function stage (from: string, to: string): Promise<void> {
  if (statSync(from).size <= SMALL_OUTPUT_BYTES) copyFileSync(from, to)
  else await copyFile(from, to)
}
