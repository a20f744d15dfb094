/**
 * Post-copy migration of one job, driven from its source node (phaul's post-copy, CRIU lazy pages):
 * dump all but memory, send those images, restore on the target at once, and let the target pull
 * the memory from the source's page server over the page bridge (./page-bridge.ts). Downtime is
 * the dump of the small images plus the restore; the pull runs while the job already runs there.
 *
 * Nothing lost until the target runs the job: any failure before that stops the page server, which
 * makes CRIU resume the frozen tree here. After it, the job needs both nodes until the pull is
 * complete: if the source dies then, the job is lost (the user is told before it starts).
 */
import type { BridgeStats } from './page-bridge.js'
import { PhaseMachine } from './phases.js'
import type { Transitions } from './phases.js'
import { MigrationError, NotMigratableError } from './stop-and-copy.js'
import type { MigrateRequest, MigrationSource, MigrationTarget } from './stop-and-copy.js'

export type PostCopyPhase = 'checking' | 'preparing' | 'dumping' | 'transferring' | 'restoring' | 'pulling' | 'moved' | 'rolling-back' | 'rolled-back' | 'lost'

const NEXT: Transitions<PostCopyPhase> = {
  checking: ['preparing', 'rolled-back'],
  preparing: ['dumping', 'rolled-back'],
  dumping: ['transferring', 'rolling-back'],
  transferring: ['restoring', 'rolling-back'],
  restoring: ['pulling', 'rolling-back'],
  pulling: ['moved', 'lost'],
  'rolling-back': ['rolled-back', 'lost'],
  moved: [],
  'rolled-back': [],
  lost: []
}

export interface PostCopySource<P, D> extends MigrationSource<P, D> {
  /**
   * Lazy dump: resolves once the images but memory are in imagesDir and the pages are served;
   * `freezingAtMs`, if known, is when the tree was about to be frozen (downtime starts there).
   */
  checkpointLazy(vpid: number, imagesDir: string, signal: AbortSignal): Promise<{ dumped: D, served: Promise<void>, freezingAtMs?: number }>
  /** Failure before the target runs the job: stop serving; resolves true if the job runs here again. */
  abortLazy(vpid: number): Promise<boolean>
  /** The target runs the job: a broken page stream from now on must not let the tree here go on. */
  pullStarted(vpid: number): void
  /** The pull failed: the tree here is stale (the job ran on the target since): kill it. */
  discardLazy(vpid: number): Promise<void>
}

export interface PostCopyTarget<P, D> extends MigrationTarget<P, D> {
  /** Starts carrying the source's page server to the target; `done` settles when the page stream has ended. */
  bridgePages(target: string, vpid: number, signal: AbortSignal, onBytes: (stats: BridgeStats) => void): Promise<{ done: Promise<BridgeStats> }>
  /** Restores with lazy pages; resolves once the job runs there (its memory still arriving). */
  restoreLazy(target: string, vpid: number, dumped: D, signal: AbortSignal): Promise<void>
}

export interface PostCopyResult {
  readonly vpid: number
  readonly target: string
  readonly checkMs: number
  readonly dumpMs: number
  readonly transferMs: number
  readonly restoreMs: number
  /** From the freeze (CRIU's pre-dump step; else the start of the dump) to the job running on the target. */
  readonly downtimeMs: number
  /** From the job running on the target to its last page arriving. */
  readonly pullMs: number
  /** Image bytes sent (without memory). */
  readonly bytes: number
  /** Page-server bytes carried to the target (memory plus CRIU's requests' answers). */
  readonly pageBytes: number
}

export interface PostCopyRequest extends Omit<MigrateRequest, 'onPhase'> {
  /** Awaited; for the phases that start work (FORWARD) a rejection stops the migration there (journal). */
  readonly onPhase?: (phase: PostCopyPhase) => void | Promise<void>
  /** Running total of page bytes pulled by the target. */
  readonly onPageBytes?: (bytes: number) => void
}

/** Phases whose work must not start unless the listener took them (journalled them). */
const FORWARD: ReadonlySet<PostCopyPhase> = new Set(['preparing', 'dumping', 'transferring', 'restoring'])

/** Post-copy's lifecycle (NEXT) on the shared phase machine. */
class Phases extends PhaseMachine<PostCopyPhase, undefined> {
  constructor (onPhase?: (phase: PostCopyPhase) => void | Promise<void>) { super('checking', NEXT, undefined, onPhase, FORWARD) }
}

export async function migratePostCopy<P, D> (source: PostCopySource<P, D>, target: PostCopyTarget<P, D>, req: PostCopyRequest): Promise<PostCopyResult> {
  const { vpid } = req
  const signal = req.signal ?? new AbortController().signal
  const { hostPid, payload } = await source.begin(vpid, req.asUid)
  const phases = new Phases(req.onPhase)
  let checkMs = 0
  try {
    const reasons = await source.check(hostPid)
    if (reasons.length > 0) throw new NotMigratableError(`job ${vpid} cannot migrate: ${reasons.slice(0, 5).join('; ')}`)
    checkMs = await phases.to('preparing')
    await target.prepare(req.target, vpid, payload, signal)
    await phases.to('dumping')
  } catch (err) {
    await target.cancel(req.target, vpid).catch(() => {})
    if (phases.phase === 'dumping') await phases.to('rolling-back')
    await phases.to('rolled-back')
    await source.resume(vpid, (err as Error).message)
    throw err
  }
  // Once the target runs the job, aborting (the caller's connection closed, e.g. its node died) would
  // only lose it: the page server and bridge then live on until the pull ends (found by the soak).
  const untilRunning = new AbortController()
  const onAbort = (): void => { if (phases.phase !== 'pulling') untilRunning.abort(signal.reason) }
  if (signal.aborted) untilRunning.abort(signal.reason)
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await dumpAndMove(source, target, req, phases, checkMs, untilRunning.signal)
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

async function dumpAndMove<P, D> (source: PostCopySource<P, D>, target: PostCopyTarget<P, D>, req: PostCopyRequest, phases: Phases, checkMs: number, signal: AbortSignal): Promise<PostCopyResult> {
  const { vpid } = req
  const imagesDir = await source.imagesDir(vpid)
  const downStart = Date.now()
  let lazy: { dumped: D, served: Promise<void>, freezingAtMs?: number }
  try {
    lazy = await source.checkpointLazy(vpid, imagesDir, signal)
  } catch (err) {
    await target.cancel(req.target, vpid).catch(() => {})
    await phases.to('rolling-back')
    await phases.to('rolled-back')
    await source.resume(vpid, (err as Error).message)
    throw new MigrationError(`lazy dump of job ${vpid} failed: ${(err as Error).message}`, 'dumping', true, { cause: err })
  }
  let bridged: { done: Promise<BridgeStats> } | undefined
  let times: { dumpMs: number, transferMs: number, restoreMs: number, bytes: number }
  try {
    await source.stageOutput(vpid, imagesDir)
    const dumpMs = await phases.to('transferring')
    const { bytes } = await target.send(req.target, imagesDir, signal)
    bridged = await target.bridgePages(req.target, vpid, signal, s => { req.onPageBytes?.(s.sent) })
    bridged.done.catch(() => {})
    const transferMs = await phases.to('restoring')
    await target.restoreLazy(req.target, vpid, lazy.dumped, signal)
    times = { dumpMs, transferMs, restoreMs: 0, bytes }
  } catch (err) {
    throw await rollBack(source, target, req, phases, err)
  }
  // The job ran until CRIU froze it: the work before (finding files, starting CRIU) is not downtime.
  const downtimeMs = Date.now() - Math.max(downStart, lazy.freezingAtMs ?? downStart)
  source.pullStarted(vpid)
  times.restoreMs = await phases.to('pulling')
  return await pull(source, req, phases, { ...times, checkMs, downtimeMs }, lazy.served, bridged.done, imagesDir)
}

/** The target runs the job; waits for its last page, then frees the job here. */
async function pull<P, D> (source: PostCopySource<P, D>, req: PostCopyRequest, phases: Phases, t: Omit<PostCopyResult, 'vpid' | 'target' | 'pullMs' | 'pageBytes'>, served: Promise<void>, bridged: Promise<BridgeStats>, imagesDir: string): Promise<PostCopyResult> {
  const { vpid } = req
  try {
    const [stats] = await Promise.all([bridged, served])
    const pullMs = await phases.to('moved')
    await source.commit(vpid, req.target, imagesDir)
    return { vpid, target: req.target, ...t, pullMs, pageBytes: stats.sent }
  } catch (err) {
    await source.discardLazy(vpid).catch(() => {})
    await phases.to('lost')
    const why = `the page pull failed after the job started on ${req.target}: ${(err as Error).message}`
    await source.lose(vpid, why).catch(() => {})
    throw new MigrationError(`post-copy migration of job ${vpid}: ${why}; the job is lost`, 'transferring', false, { cause: err })
  }
}

async function rollBack<P, D> (source: PostCopySource<P, D>, target: PostCopyTarget<P, D>, req: PostCopyRequest, phases: Phases, err: unknown): Promise<MigrationError> {
  const { vpid } = req
  const failedIn = phases.phase === 'transferring' ? 'transferring' : 'restoring'
  await target.cancel(req.target, vpid).catch(() => {})
  await phases.to('rolling-back')
  const why = `${failedIn} failed: ${(err as Error).message}`
  const back = await source.abortLazy(vpid).catch(() => false)
  if (back) {
    await phases.to('rolled-back')
    await source.resume(vpid, why)
    return new MigrationError(`post-copy migration of job ${vpid} ${why}; it runs here again`, failedIn, true, { cause: err })
  }
  await phases.to('lost')
  await source.lose(vpid, `${why}; the frozen job did not resume`).catch(() => {})
  return new MigrationError(`post-copy migration of job ${vpid} ${why}; the frozen job did not resume here: it is lost`, failedIn, false, { cause: err })
}
