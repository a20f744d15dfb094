/**
 * The daemon's side of migration: runs stop-and-copy (src/migration/stop-and-copy.ts) and
 * post-copy (src/migration/post-copy.ts) migrations out of this node with the source side in
 * ./migration-source.ts, serves the target side (./migration-target.ts) as peer methods plus an
 * images channel and a streamed-pages channel (src/migration/page-stream.ts), journals each
 * phase and settles what a restarted daemon finds unfinished.
 */
import { parseParams } from '../protocol/peer.js'
import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { MigrationJournal } from '../migration/journal.js'
import { migrate } from '../migration/stop-and-copy.js'
import { migrationTestHooks } from './migration-hooks.js'
import { recoverMigrations } from './migration-recovery.js'
import { IMAGES_PROTOCOL } from '../migration/transfer.js'
import { PAGES_PROTOCOL } from '../migration/page-stream.js'
import { migratePrepareSchema, migrateRestoreSchema, migrateStartSchema, migrateStatusSchema, migrateVpidSchema } from '../protocol/migrate.js'
import { JobStateError } from '../ssi/jobs/errors.js'
import { DirDiscarder } from './discard.js'
import { IncomingMigrations } from './migration-target.js'
import { OutgoingMigrations } from './migration-source.js'
import type { MigrationParts } from './migration-source.js'
import type { JournalStore } from '../migration/journal.js'
import type { MigrationPhase, PhaseDetail } from '../migration/stop-and-copy.js'
import type { MigrationTestHooks } from './migration-hooks.js'
import type { MigratePrepareParams, MigrationSummary } from '../protocol/migrate.js'
import type { DumpedFile } from '../ssi/jobs/runtime.js'
import type { Logger } from './logger.js'
import { chooseMode, DEFAULT_MODE_CONFIG, POST_COPY_WARNING } from '../migration/modes.js'
import type { ChosenMode, MigrationModeConfig, RequestedMode } from '../migration/modes.js'
import { migratePostCopy } from '../migration/post-copy.js'
import type { PostCopyPhase, PostCopySource, PostCopyTarget } from '../migration/post-copy.js'
import { LAZY_PAGES_PROTOCOL, PostCopyPlumbing } from './migration-post-copy.js'
import { MigrationEvents } from './migration-events.js'
import type { EmitEvent } from './migration-events.js'

export interface MigrationServiceInit extends MigrationParts {
  /** Images in flight: `<dir>/out/<vpid>` on sources, `<dir>/in/<vpid>` on targets. */
  readonly dir: string
  readonly logger: Logger
  /** Largest image accepted, bytes (default 64 GiB). */
  readonly maxImageBytes?: number
  /** Deadline of the target's restore, ms (default 120 000). */
  readonly restoreTimeoutMs?: number
  /** A target drops a prepared migration whose source went quiet after this many ms (default 600 000). */
  readonly incomingTtlMs?: number
  /** Where outgoing migrations are journalled (the node's state store). */
  readonly store: JournalStore
  /** How long a restarted source asks an unreachable target about a migration before restoring the job itself, ms (default 60 000). */
  readonly settleTimeoutMs?: number
  /** Fault injection for tests (default: from the environment, off unless asked for). */
  readonly hooks?: MigrationTestHooks
  /** How `--mode auto` chooses (the cluster config's `migration` section). */
  readonly modes?: MigrationModeConfig
  /** Stop-copy: stream the pages while dumping when the target can take them (default false). */
  readonly streamPages?: boolean
  /** Stop-copy: send CRIU's page files as it writes them (default true). */
  readonly sendWhileDumping?: boolean
  /** Have the target restore while the images arrive (migration.streamRestore). */
  readonly streamRestore?: boolean
  /** Targets re-hash received images right before restoring them (default false). */
  readonly recheckBeforeRestore?: boolean
  /** As a target, start CRIU's restore when a stop-copy is prepared (migration.earlyRestore; default true). */
  readonly earlyRestore?: boolean
  /** An image send that moves no data (and gets no answer) this long is given up, ms (default 30 000). */
  readonly transferIdleMs?: number
}

export interface MigrateOutOptions {
  readonly mode?: RequestedMode
  /** Progress for the caller: the mode chosen, phases, bytes moved. */
  readonly onEvent?: EmitEvent
}

/** Outcomes known to the job's record: the journal entry goes. ('moved' stays until the commit is done.) */
const SETTLED: ReadonlySet<MigrationPhase> = new Set(['rolled-back', 'lost'])

export class MigrationService {
  private readonly incoming: IncomingMigrations
  private readonly outgoing: OutgoingMigrations
  readonly journal: MigrationJournal<DumpedFile[]>
  private readonly hooks: MigrationTestHooks
  private journalled = new Set<number>()
  private unfinishedIncoming: number[] = []
  private readonly postCopy: PostCopyPlumbing
  private readonly discarder: DirDiscarder

  constructor (private readonly init: MigrationServiceInit) {
    this.journal = new MigrationJournal(init.store)
    this.hooks = init.hooks ?? migrationTestHooks()
    this.discarder = new DirDiscarder(join(init.dir, 'trash'), init.logger)
    this.postCopy = new PostCopyPlumbing(init.runtime, init.bulk, init.store, init.logger.child({ component: 'post-copy' }))
    this.outgoing = new OutgoingMigrations({
      selfName: init.selfName, local: init.local, runtime: init.runtime, rpc: init.rpc, bulk: init.bulk, dir: join(init.dir, 'out'),
      hooks: this.hooks, discarder: this.discarder, streamPages: init.streamPages ?? false, sendWhileDumping: init.sendWhileDumping ?? true, streamRestore: (init.streamRestore ?? false) && init.recheckBeforeRestore !== true, transferIdleMs: init.transferIdleMs ?? 30_000,
      restoreTimeoutMs: init.restoreTimeoutMs ?? 120_000
    })
    this.incoming = new IncomingMigrations({
      selfName: init.selfName, local: init.local, runtime: init.runtime, dir: join(init.dir, 'in'), logger: init.logger,
      hooks: this.hooks, postCopy: this.postCopy, maxImageBytes: init.maxImageBytes ?? 64 * 2 ** 30, incomingTtlMs: init.incomingTtlMs ?? 600_000,
      recheckBeforeRestore: init.recheckBeforeRestore ?? false, earlyRestore: init.earlyRestore ?? true, discard: async path => { await this.discarder.discard(path) }
    })
  }

  /**
   * A daemon killed while restoring an incoming job may have left it running under its shim, never
   * confirmed to the source, which then restored it there: this copy must go.
   */
  private async dropUnconfirmedRestores (): Promise<void> {
    const { local, runtime, logger } = this.init
    for (const vpid of this.unfinishedIncoming.splice(0)) {
      if (local.has(vpid) && local.get(vpid).state !== 'moved') continue
      const found = await runtime.adopt(vpid).catch(() => undefined)
      if (found === undefined) {
        // A restore started early (migration.earlyRestore) that never got its images leaves the job's dir and cgroup.
        await runtime.removeStored(vpid).catch((err: unknown) => { logger.warn({ vpid, err: String(err) }, 'could not remove what an unfinished restore left') })
        continue
      }
      logger.warn({ vpid }, 'killing a restored copy whose migration never completed')
      if (found.exit === undefined) {
        await runtime.signal(found.job, 'SIGKILL').catch(() => {})
        await runtime.waitExit(found.job, AbortSignal.timeout(10_000)).catch(() => {})
      }
      await runtime.release(found.job).catch(() => {})
    }
  }

  /**
   * Post-copy jobs whose pages were still arriving when the previous daemon stopped: their page
   * stream ran through it and is gone, so what they have not pulled yet can never arrive. They must
   * not run on with missing memory: each is killed and recorded lost, saying why.
   */
  private async loseBrokenPulls (): Promise<void> {
    const { local, runtime, selfName } = this.init
    for (const mark of await this.postCopy.unfinishedPulls()) {
      const why = `the daemon on ${selfName} restarted during the post-copy page pull from ${mark.from}: ` +
        'the pages not pulled yet cannot reach the job any more, so it is lost'
      const found = local.has(mark.vpid) && local.get(mark.vpid).state === 'running' ? await runtime.adopt(mark.vpid).catch(() => undefined) : undefined
      if (found !== undefined) await this.incoming.loseHere(mark.vpid, found.job, why)
      else if (local.has(mark.vpid)) await local.lose(mark.vpid, why) // it died meanwhile (on missing memory)
      await this.postCopy.endPull(mark.vpid)
    }
  }

  /** Whether vpid has a journalled migration this daemon must settle (known after `start`). */
  isJournalled (vpid: number): boolean { return this.journalled.has(vpid) }

  /**
   * Settles the migrations an earlier daemon left unfinished (after `LocalJobs.recover` and once
   * peers can be called); resolves when all are settled. Never rejects.
   */
  async recover (signal: AbortSignal): Promise<void> {
    await this.loseBrokenPulls()
    await this.dropUnconfirmedRestores()
    await recoverMigrations({
      entries: await this.journal.list(), journal: this.journal, local: this.init.local, runtime: this.init.runtime,
      rpc: this.init.rpc, logger: this.init.logger, settleTimeoutMs: this.init.settleTimeoutMs ?? 60_000, signal,
      cancelTarget: async (target, vpid) => { await this.outgoing.target().cancel(target, vpid) },
      restoreHere: async (vpid, dir, stdio, job) => await this.outgoing.restoreFromImages(vpid, dir, stdio, job)
    })
    // A migration settled as lost mid-dump has no imagesDir in its journal entry: drop its partial images too.
    const open = new Set((await this.journal.list()).map(e => e.vpid))
    for (const name of await readdir(join(this.init.dir, 'out')).catch(() => [] as string[])) {
      const vpid = Number(name.split('.')[0]) // `<vpid>` and `<vpid>.pages`
      if (!open.has(vpid) && !this.outgoing.has(vpid)) await rm(join(this.init.dir, 'out', name), { recursive: true, force: true })
    }
  }

  async start (): Promise<void> {
    const { rpc } = this.init
    // Nothing incoming survives a restart (the source rolls back); outgoing images stay if journalled.
    this.unfinishedIncoming = await this.incoming.forgetEarlier()
    await this.discarder.purge()
    const entries = await this.journal.list()
    this.journalled = new Set(entries.map(e => e.vpid))
    for (const name of await readdir(join(this.init.dir, 'out')).catch(() => [] as string[])) {
      // `<vpid>` (images) and `<vpid>.pages` (a streamed dump's pages) go with their journal entry.
      if (!this.journalled.has(Number(name.split('.')[0]))) await rm(join(this.init.dir, 'out', name), { recursive: true, force: true })
    }
    rpc.handle('migrate.status', async (p, ctx) => {
      const { vpid, migrationStartedMs } = parseParams(migrateStatusSchema, p)
      return { holds: this.incoming.holds(vpid, ctx.fromNode, migrationStartedMs) }
    })
    rpc.handle('migrate.start', async (p, ctx) => {
      const { vpid, target, asUid, mode } = parseParams(migrateStartSchema, p)
      return await this.migrateOut(vpid, target, asUid, ctx.signal, { mode, onEvent: async (e) => { await ctx.emit(e) } })
    })
    rpc.handle('migrate.prepare', async (p, ctx) => await this.incoming.prepare(parseParams(migratePrepareSchema, p), ctx.fromNode))
    rpc.handle('migrate.restore', async (p, ctx) => {
      const { vpid, stdio } = parseParams(migrateRestoreSchema, p)
      await this.incoming.restore(vpid, stdio, ctx.fromNode, ctx.signal)
      return {}
    })
    rpc.handle('migrate.cancel', async (p, ctx) => { await this.incoming.cancel(parseParams(migrateVpidSchema, p).vpid, ctx.fromNode); return {} })
    await this.init.bulk.handle(IMAGES_PROTOCOL, async (channel, fromNode, signal) => { await this.incoming.receiveImages(channel, fromNode, signal) })
    await this.init.bulk.handle(PAGES_PROTOCOL, async (channel, fromNode, signal) => { await this.incoming.receivePages(channel, fromNode, signal) })
    await this.init.bulk.handle(LAZY_PAGES_PROTOCOL, async (channel, fromNode, signal) => { await this.postCopy.handleChannel(channel, fromNode, signal) })
  }

  /**
   * The daemon stops: migrations prepared here that are not restoring are cancelled, so their
   * partial images do not outlive the daemon (a source rolls back, or settles with `migrate.status`).
   */
  async stop (): Promise<void> {
    await this.incoming.close()
    await this.discarder.flush()
  }

  /** Runs the migration of a job of this node to `target`, in the mode asked for (default stop-copy). */
  async migrateOut (vpid: number, target: string, asUid: number, signal?: AbortSignal, opts: MigrateOutOptions = {}): Promise<MigrationSummary> {
    if (target === this.init.selfName) throw new JobStateError(`job ${vpid} already runs on ${target}`)
    const startedMs = Date.now()
    const events = new MigrationEvents(opts.onEvent)
    try {
      const chosen = await this.chooseMode(vpid, opts.mode ?? 'stop-copy', signal)
      this.init.logger.info({ vpid, target, mode: chosen.mode, reason: chosen.reason }, 'migration mode')
      events.send({ kind: 'mode', mode: chosen.mode, reason: chosen.reason, warning: chosen.mode === 'post-copy' ? POST_COPY_WARNING : undefined })
      const summary = chosen.mode === 'post-copy'
        ? await this.postCopyOut(vpid, target, asUid, signal, events)
        : await this.stopCopyOut(vpid, target, asUid, signal, events, startedMs)
      return { ...summary, mode: chosen.mode, modeReason: chosen.reason, totalMs: Date.now() - startedMs }
    } finally {
      await events.flush()
    }
  }

  private async chooseMode (vpid: number, requested: RequestedMode, signal?: AbortSignal): Promise<ChosenMode> {
    if (requested === 'stop-copy') return { mode: 'stop-copy', reason: 'requested' }
    const caps = this.init.runtime.capabilities === undefined
      ? { memTrack: false, lazyPages: false, lazyPagesWhy: 'this node runs jobs without CRIU' }
      : await this.init.runtime.capabilities(signal)
    const rss = requested === 'auto' ? (await this.init.local.snapshot(vpid)).rssBytes : 0
    return chooseMode(requested, rss, caps, this.init.modes ?? DEFAULT_MODE_CONFIG)
  }

  private async stopCopyOut (vpid: number, target: string, asUid: number, signal: AbortSignal | undefined, events: MigrationEvents, startedMs: number): Promise<MigrationSummary> {
    const log = this.init.logger.child({ vpid, target })
    const onPhase = async (phase: MigrationPhase, detail: PhaseDetail<unknown>): Promise<void> => {
      log.info({ phase }, 'migration')
      events.phase(phase)
      if (SETTLED.has(phase)) { await this.journal.del(vpid); return }
      await this.hooks.run(`source-${phase}`, vpid, target)
      const { imagesDir, dumped } = detail as PhaseDetail<DumpedFile[]>
      await this.journal.put({ vpid, target, phase, startedMs, updatedMs: Date.now(), imagesDir, dumped })
    }
    try {
      const result = await migrate(this.outgoing.source(target, startedMs), this.outgoing.target(events), { vpid, target, asUid, signal, onPhase })
      await this.journal.del(vpid)
      const stats = this.outgoing.takeDumpStats(vpid)
      const ms = (us: number | undefined): number | undefined => (us === undefined ? undefined : Math.round(us / 100) / 10)
      return { ...result, from: this.init.selfName, freezeMs: ms(stats?.freezingUs), frozenMs: ms(stats?.frozenUs) }
    } finally {
      this.outgoing.takeDumpStats(vpid)
    }
  }

  /**
   * Journalled like stop-copy (phase by phase, before each phase's work) so that a restarted source
   * settles it (migration-post-copy-recovery.ts); the target marks its pull (PostCopyPlumbing.beginPull).
   */
  private async postCopyOut (vpid: number, target: string, asUid: number, signal: AbortSignal | undefined, events: MigrationEvents): Promise<MigrationSummary> {
    const log = this.init.logger.child({ vpid, target })
    const rss = (await this.init.local.snapshot(vpid)).rssBytes
    const startedMs = Date.now()
    const onPhase = async (phase: PostCopyPhase): Promise<void> => {
      log.info({ phase }, 'post-copy migration')
      events.phase(phase)
      if (phase === 'rolled-back' || phase === 'lost') { await this.journal.del(vpid); return }
      // Journalled before the test hook: a daemon killed at `source-<phase>` left <phase> behind.
      await this.journal.put({ vpid, target, phase, mode: 'post-copy', startedMs, updatedMs: Date.now(), imagesDir: join(this.init.dir, 'out', String(vpid)) })
      await this.hooks.run(`source-${phase}`, vpid, target)
    }
    const result = await migratePostCopy(this.postCopySource(target, startedMs), this.postCopyTarget(events), {
      vpid, target, asUid, signal, onPhase, onPageBytes: (bytes) => { events.pull(bytes, rss) }
    })
    await this.journal.del(vpid)
    events.pull(result.pageBytes, rss, true)
    return { ...result, from: this.init.selfName }
  }

  private postCopySource (target: string, startedMs: number): PostCopySource<MigratePrepareParams, DumpedFile[]> {
    const stopCopy = this.outgoing.source(target, startedMs)
    return {
      ...stopCopy,
      begin: async (vpid, asUid) => {
        const r = await stopCopy.begin(vpid, asUid)
        const { pages: _stopCopyOnly, ...payload } = r.payload
        return { ...r, payload: { ...payload, mode: 'post-copy' as const } }
      },
      checkpointLazy: async (vpid, dir, signal) => await this.postCopy.checkpointLazy(this.outgoing.job(vpid), dir, signal),
      abortLazy: async (vpid) => await this.postCopy.abortLazy(vpid),
      pullStarted: (vpid) => { this.postCopy.pullStarted(vpid) },
      discardLazy: async (vpid) => { await this.postCopy.discardTree(this.outgoing.job(vpid)) }
    }
  }

  private postCopyTarget (events: MigrationEvents): PostCopyTarget<MigratePrepareParams, DumpedFile[]> {
    const stopCopy = this.outgoing.target(events)
    return {
      ...stopCopy,
      bridgePages: async (target, vpid, signal, onBytes) => await this.postCopy.bridgePages(target, vpid, signal, onBytes),
      restoreLazy: stopCopy.restore
    }
  }
}
