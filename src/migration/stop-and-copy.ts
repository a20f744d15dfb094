/**
 * Stop-and-copy migration of one job, driven from its source node: check, dump (CRIU freezes the
 * tree, writes the images and kills it), send the images plus the job's output files to the
 * target, have the target restore. Any failure after the dump restores the job here from the same
 * images (rollback), so a job is never lost by a failed migration unless the rollback fails too.
 * Source and target sides are interfaces (phaul's api.go) so both can be wired in one process.
 */
import { PhaseMachine } from './phases.js'
import type { Transitions } from './phases.js'

export type MigrationPhase = 'checking' | 'preparing' | 'dumping' | 'transferring' | 'restoring' | 'moved' | 'rolling-back' | 'rolled-back' | 'lost'

const NEXT: Transitions<MigrationPhase> = {
  checking: ['preparing', 'rolled-back'],
  preparing: ['dumping', 'rolled-back'],
  dumping: ['transferring', 'rolling-back'],
  transferring: ['restoring', 'rolling-back'],
  restoring: ['moved', 'rolling-back'],
  'rolling-back': ['rolled-back', 'lost'],
  moved: [],
  'rolled-back': [],
  lost: []
}

/** Phases whose work must not start unless the listener took them (e.g. journalled them). */
const FORWARD: ReadonlySet<MigrationPhase> = new Set(['preparing', 'dumping', 'transferring', 'restoring'])

export class MigrationError extends Error {
  static override name = 'MigrationError'
  override name = 'MigrationError'
  constructor (message: string, readonly phase: MigrationPhase, readonly rolledBack: boolean, options?: ErrorOptions) {
    super(message, options)
  }
}

/** The job can never migrate as it is (e.g. io_uring, GPU, TCP to other hosts). */
export class NotMigratableError extends Error {
  static override name = 'NotMigratableError'
  override name = 'NotMigratableError'
}

/** This node's side. Calls for one vpid come one at a time, in the order below. */
export interface MigrationSource<P, D> {
  /** Marks the job migrating (refusing one already migrating) and says what the target needs. */
  begin(vpid: number, asUid: number): Promise<{ hostPid: number, payload: P }>
  /** Reasons the job cannot migrate (empty: it can); called after begin, before anything is frozen. */
  check(hostPid: number): Promise<string[]>
  /** Fresh empty dir for this migration's images. */
  imagesDir(vpid: number): Promise<string>
  /** Dumps; resolves with what a restore needs besides the images (e.g. CRIU's names of the output files). */
  checkpoint(vpid: number, imagesDir: string, signal: AbortSignal): Promise<D>
  /** Adds the job's output files (final after the dump) to imagesDir for the target. */
  stageOutput(vpid: number, imagesDir: string): Promise<void>
  /** Success: the job runs on target. */
  commit(vpid: number, target: string, imagesDir: string): Promise<void>
  /** Failure before the dump: the job was never stopped. */
  resume(vpid: number, error: string): Promise<void>
  /** Failure after the dump: restore here from imagesDir. */
  rollback(vpid: number, imagesDir: string, dumped: D, error: string): Promise<void>
  /** The rollback failed too. */
  lose(vpid: number, error: string): Promise<void>
}

/** The other node, as seen from the source. */
export interface MigrationTarget<P, D> {
  /** Target reserves room for vpid; refuses if it cannot take it. */
  prepare(target: string, vpid: number, payload: P, signal: AbortSignal): Promise<void>
  /**
   * Sends imagesDir; resolves with the bytes sent once the target has them all, verified. With
   * `written`, called as the dump starts: it resolves once the dump and stageOutput are done (the
   * dir is complete) and rejects if either failed; until then the send may only read what CRIU
   * already wrote (./transfer/follow.ts) or wait. Without, the dir is complete.
   */
  send(target: string, imagesDir: string, signal: AbortSignal, written?: Promise<void>): Promise<{ bytes: number, earlyBytes?: number }>
  /** Restores; resolves once the job runs there under its vpid. */
  restore(target: string, vpid: number, dumped: D, signal: AbortSignal): Promise<void>
  /**
   * True: the target restores while the images arrive (asked with `restore` as the send starts;
   * it holds the job stopped until they all verified). Otherwise `restore` waits for `send`.
   */
  restoresWhileReceiving?(target: string, vpid: number): boolean
  /** Drops whatever the target holds for vpid (best effort). */
  cancel(target: string, vpid: number): Promise<void>
}

export interface MigrationResult {
  readonly vpid: number
  readonly target: string
  readonly checkMs: number
  readonly dumpMs: number
  readonly transferMs: number
  readonly restoreMs: number
  /** From the start of the dump to the job running on the target. */
  readonly downtimeMs: number
  readonly bytes: number
  /** Of `bytes`, those sent while the dump still ran (CRIU's page files as it wrote them). */
  readonly bytesDuringDump: number
}

export interface MigrateRequest {
  readonly vpid: number
  readonly target: string
  readonly asUid: number
  readonly signal?: AbortSignal
  /**
   * Phase changes, e.g. for logs, or to journal the migration so that a restarted daemon can finish
   * it: awaited before the phase's work starts. From 'transferring' on, `detail` holds the images
   * dir and what the dump returned (all a local restore needs).
   */
  readonly onPhase?: (phase: MigrationPhase, detail: PhaseDetail<unknown>) => void | Promise<void>
}

export interface PhaseDetail<D> {
  readonly imagesDir?: string
  readonly dumped?: D
}

/** This module's migration lifecycle (NEXT, FORWARD) on the shared phase machine. */
class Phases extends PhaseMachine<MigrationPhase, PhaseDetail<unknown>> {
  constructor (onPhase?: MigrateRequest['onPhase']) { super('checking', NEXT, {}, onPhase, FORWARD) }
}

export async function migrate<P, D> (source: MigrationSource<P, D>, target: MigrationTarget<P, D>, req: MigrateRequest): Promise<MigrationResult> {
  const { vpid } = req
  const signal = req.signal ?? new AbortController().signal
  const { hostPid, payload } = await source.begin(vpid, req.asUid)
  const phases = new Phases(req.onPhase)
  try {
    const reasons = await source.check(hostPid)
    if (reasons.length > 0) throw new NotMigratableError(`job ${vpid} cannot migrate: ${reasons.slice(0, 5).join('; ')}`)
    const checkMs = await phases.to('preparing')
    await target.prepare(req.target, vpid, payload, signal)
    await phases.to('dumping')
    return await afterPrepare(source, target, req, phases, checkMs, signal)
  } catch (err) {
    if (phases.phase === 'checking' || phases.phase === 'preparing') {
      await target.cancel(req.target, vpid).catch(() => {})
      await phases.to('rolled-back')
      await source.resume(vpid, (err as Error).message)
      throw err
    }
    throw err
  }
}

/**
 * Dump, transfer, restore. The send starts with the dump, so that it can overlap CRIU writing the
 * pages; it gets the dir's completion (`written`) and is settled before anything rolls back.
 */
async function afterPrepare<P, D> (source: MigrationSource<P, D>, target: MigrationTarget<P, D>, req: MigrateRequest, phases: Phases, checkMs: number, signal: AbortSignal): Promise<MigrationResult> {
  const { vpid } = req
  const imagesDir = await source.imagesDir(vpid)
  const downStart = Date.now()
  const written = new Completion()
  const sending = target.send(req.target, imagesDir, signal, written.promise)
  sending.catch(() => {}) // awaited below, or settled before any rollback
  const giveUpSend = async (err: unknown): Promise<void> => {
    written.fail(err)
    await sending.catch(() => {})
  }
  let dumped: D
  try {
    dumped = await source.checkpoint(vpid, imagesDir, signal)
  } catch (err) {
    // A failed dump leaves the tree running (CRIU resumes it), or it ended on its own meanwhile.
    await giveUpSend(err)
    await target.cancel(req.target, vpid).catch(() => {})
    await phases.to('rolling-back')
    await phases.to('rolled-back')
    await source.resume(vpid, (err as Error).message)
    throw new MigrationError(`dump of job ${vpid} failed: ${(err as Error).message}`, 'dumping', true, { cause: err })
  }
  try {
    await source.stageOutput(vpid, imagesDir)
    const dumpMs = await phases.to('transferring', { imagesDir, dumped })
    written.done()
    const { bytes, earlyBytes, transferMs } = target.restoresWhileReceiving?.(req.target, vpid) === true
      ? await sendRestoring(target, req, dumped, sending, phases, signal)
      : await sendThenRestore(target, req, dumped, sending, phases, signal)
    const downtimeMs = Date.now() - downStart
    // The job runs on the target from here: nothing may roll it back any more.
    const restoreMs = await phases.to('moved')
    await source.commit(vpid, req.target, imagesDir)
    return { vpid, target: req.target, checkMs, dumpMs, transferMs, restoreMs, downtimeMs, bytes, bytesDuringDump: earlyBytes ?? 0 }
  } catch (err) {
    if (phases.phase === 'moved') throw err
    const failedIn = phases.phase
    await giveUpSend(err)
    await target.cancel(req.target, vpid).catch(() => {})
    await phases.to('rolling-back')
    const why = `${failedIn} failed: ${(err as Error).message}`
    try {
      await source.rollback(vpid, imagesDir, dumped, why)
      await phases.to('rolled-back')
    } catch (rbErr) {
      if (phases.phase === 'rolling-back') await phases.to('lost')
      await source.lose(vpid, `${why}; rollback failed too: ${(rbErr as Error).message}`).catch(() => {})
      throw new MigrationError(`migration of job ${vpid} ${why}; restoring it here failed too: ${(rbErr as Error).message}`, failedIn, false, { cause: err })
    }
    throw new MigrationError(`migration of job ${vpid} ${why}; it runs here again`, failedIn, true, { cause: err })
  }
}

type Sent = Awaited<ReturnType<MigrationTarget<unknown, unknown>['send']>> & { transferMs: number }

async function sendThenRestore<P, D> (target: MigrationTarget<P, D>, req: MigrateRequest, dumped: D, sending: Promise<{ bytes: number, earlyBytes?: number }>, phases: Phases, signal: AbortSignal): Promise<Sent> {
  const sent = await sending
  const transferMs = await phases.to('restoring')
  await target.restore(req.target, req.vpid, dumped, signal)
  return { ...sent, transferMs }
}

/**
 * The target restores as the images arrive. Should the send fail, the restore is settled before
 * anything rolls back: a target that verified everything may have let the job run after all.
 */
async function sendRestoring<P, D> (target: MigrationTarget<P, D>, req: MigrateRequest, dumped: D, sending: Promise<{ bytes: number, earlyBytes?: number }>, phases: Phases, signal: AbortSignal): Promise<Sent> {
  const restoring = target.restore(req.target, req.vpid, dumped, signal)
  restoring.catch(() => {})
  let sent: { bytes: number, earlyBytes?: number }
  try {
    sent = await sending
  } catch (err) {
    // Cancelled, a target still restoring fails at once; one done already has the job running.
    await target.cancel(req.target, req.vpid).catch(() => {})
    const ran = await restoring.then(() => true, () => false)
    if (!ran) throw err
    sent = { bytes: 0 } // its answer was lost, but the target has it all and runs it
  }
  const transferMs = await phases.to('restoring')
  await restoring
  return { ...sent, transferMs }
}

/** A promise settled from outside, once: the images dir is complete, or will never be. */
class Completion {
  readonly promise: Promise<void>
  private settle: ((err?: unknown) => void) | undefined

  constructor () {
    this.promise = new Promise<void>((resolve, reject) => {
      this.settle = (err?: unknown) => { if (err === undefined) resolve(); else reject(err) }
    })
    this.promise.catch(() => {}) // the sender may not be listening any more
  }

  done (): void { this.settle?.(); this.settle = undefined }
  fail (err: unknown): void { this.settle?.(err ?? new Error('failed')); this.settle = undefined }
}
