/**
 * Checkpoint to disk and restore from it, on every node (issue 4). One checkpoint is a directory:
 * CRIU's images, the job's output up to the dump, and a signed manifest (manifest.ts). The pieces:
 * - dumpHere (job's node): freeze + dump (the job is 'migrating' meanwhile, so nothing else dumps
 *   or migrates it), copy its output while frozen, sign, deliver the dir to a node (itself or one
 *   reached over the bulk transport on CHECKPOINT_PROTOCOL). Without leaveRunning the job then
 *   shows 'checkpointed'; if anything fails after the dump it is restored here (rollback).
 * - arrivals: dirs received from other nodes, verified against their manifest on arrival.
 * - restoreHere: brings a verified checkpoint back as a running job with its vpid on this node.
 * - held checkpoints: the last periodic checkpoint of a vpid (`<dir>/held/<vpid>`), kept on a
 *   node other than the job's, replaced by each newer one (see periodic.ts).
 * The user-facing operations (to/from a user's directory, restore from the last held one) are in
 * operations.ts.
 */
import { randomBytes } from 'node:crypto'
import { copyFile, mkdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { CheckpointInvalidError, CheckpointStateError } from '../../migration/checkpoint/errors.js'
import { readManifest, STAGED_OUTPUT, writeManifest } from '../../migration/checkpoint/manifest.js'
import type { ManifestBody } from '../../migration/checkpoint/manifest.js'
import { receiveImageDir, recheckImages, sendImageDir } from '../../migration/transfer.js'
import type { BulkTransport } from '../../migration/ports.js'
import { CHECKPOINT_PROTOCOL } from '../../protocol/checkpoint.js'
import type { CkptDumpParams, CkptDumpResult, HeldCheckpoint, RestoreSummary } from '../../protocol/checkpoint.js'
import { JobStateError } from '../../ssi/jobs/errors.js'
import type { LocalJobs } from '../../ssi/jobs/local.js'
import type { JobRecord } from '../../ssi/jobs/record.js'
import type { DumpedFile, JobRuntime, RuntimeJob } from '../../ssi/jobs/runtime.js'
import type { PeerRpc } from '../../ssi/ports.js'
import { Arrivals } from './arrivals.js'
import type { Logger } from '../logger.js'

export interface CheckpointCoreInit {
  readonly selfName: string
  readonly cluster: string
  readonly ssiVersion: string
  /** Manifest signing key (manifestKey of the cluster key). */
  readonly key: Uint8Array
  readonly local: LocalJobs
  readonly runtime: JobRuntime
  readonly rpc: PeerRpc
  readonly bulk: BulkTransport
  /** This node's checkpoint area: `work/` (in flight), `held/` (last periodic), `disk/` (default --to). */
  readonly dir: string
  readonly logger: Logger
  /** Largest checkpoint accepted from another node, bytes (default 64 GiB). */
  readonly maxBytes?: number
  /** Told of each dump of a job here that reached node `to` (fencing: src/node/fencing.ts). */
  readonly onDumpDelivered?: (vpid: number, to: string, leftRunning: boolean) => void
}

/** Waits for a dir that the control call says was sent (the transfer may finish just after). */
export const ARRIVAL_WAIT_MS = 60_000

export class CheckpointCore {
  readonly arrivals = new Arrivals()

  constructor (readonly init: CheckpointCoreInit) {}

  get selfName (): string { return this.init.selfName }

  async start (): Promise<void> {
    await mkdir(join(this.init.dir, 'held'), { recursive: true, mode: 0o700 })
    await rm(join(this.init.dir, 'work'), { recursive: true, force: true }) // left by a crash
    await mkdir(join(this.init.dir, 'work'), { recursive: true, mode: 0o700 })
    await this.init.bulk.handle(CHECKPOINT_PROTOCOL, async (channel, from, signal) => {
      const dir = this.workPath()
      let body: ManifestBody
      try {
        const summary = await receiveImageDir(channel, dir, { maxTotalBytes: this.init.maxBytes ?? 64 * 2 ** 30, signal })
        body = await readManifest(dir, this.init.key)
        checkReceived(body, summary.images)
      } catch (err) {
        await rm(dir, { recursive: true, force: true })
        throw err
      }
      this.arrivals.put(from, body.vpid, { dir })
    })
  }

  /** Deletes the checkpoint dirs that arrived here and were never claimed (see Arrivals.close). */
  async stop (): Promise<void> {
    await this.arrivals.close()
  }

  /** A fresh path under work/ (not created). */
  workPath (): string { return join(this.init.dir, 'work', randomBytes(8).toString('hex')) }

  heldDir (vpid: number): string { return join(this.init.dir, 'held', String(vpid)) }

  // ---- the job's node -------------------------------------------------------------------------

  /** Dumps a job of this node and delivers its checkpoint dir to `p.to`. */
  async dumpHere (p: CkptDumpParams, callerSignal: AbortSignal): Promise<CkptDumpResult> {
    const { local, runtime } = this.init
    const signal = p.timeoutMs === undefined ? callerSignal : AbortSignal.any([callerSignal, AbortSignal.timeout(p.timeoutMs)])
    const { record, runtime: job } = await local.beginMigration(p.vpid, p.asUid, 'checkpoint')
    const work = this.workPath()
    await mkdir(work, { mode: 0o700 })
    const start = Date.now()
    let stdio: DumpedFile[]
    try {
      stdio = await runtime.checkpoint(job, work, signal, { leaveRunning: p.leaveRunning, onFrozen: async () => { await this.stageOutput(p.vpid, work) } })
    } catch (err) {
      await local.endCheckpoint(p.vpid, false) // CRIU resumed the tree (or it had ended)
      await rm(work, { recursive: true, force: true })
      throw new CheckpointStateError(`dump of job ${p.vpid} failed: ${(err as Error).message}`, { cause: err })
    }
    const dumpMs = Date.now() - start
    try {
      const body = await this.sign(work, record, stdio, dumpMs, p.leaveRunning, signal)
      const sent = Date.now()
      await this.deliver(work, p.to, p.vpid, signal)
      this.init.onDumpDelivered?.(p.vpid, p.to, p.leaveRunning)
      await local.endCheckpoint(p.vpid, !p.leaveRunning, { node: p.to, ...(p.dir === undefined ? {} : { dir: p.dir }), atMs: body.takenMs })
      const bytes = body.files.reduce((n, f) => n + f.size, 0)
      return { vpid: p.vpid, node: this.selfName, to: p.to, takenMs: body.takenMs, dumpMs, transferMs: Date.now() - sent, bytes, leftRunning: p.leaveRunning }
    } catch (err) {
      if (p.leaveRunning) await local.endCheckpoint(p.vpid, false)
      else await this.rollback(record, job, work, stdio, (err as Error).message)
      await rm(work, { recursive: true, force: true })
      throw err
    }
  }

  /** The job's output files, copied while the tree is frozen: exactly what it wrote before the dump. */
  private async stageOutput (vpid: number, dir: string): Promise<void> {
    const paths = this.init.runtime.paths(vpid)
    await copyFile(paths.stdout, join(dir, STAGED_OUTPUT.stdout))
    await copyFile(paths.stderr, join(dir, STAGED_OUTPUT.stderr))
  }

  private async sign (dir: string, record: JobRecord, stdio: DumpedFile[], dumpMs: number, leftRunning: boolean, signal: AbortSignal): Promise<ManifestBody> {
    const { owner, argv, cwd, hostname, limits, homeNode, createdMs, startedMs } = record
    const job = { argv: [...argv], cwd, hostname, limits, homeNode, createdMs, ...(startedMs === undefined ? {} : { startedMs }) }
    return await writeManifest(dir, this.init.key, {
      ssiVersion: this.init.ssiVersion,
      cluster: this.init.cluster,
      vpid: record.vpid,
      owner: { ...owner, groups: [...owner.groups] },
      job,
      stdio: stdio.map(f => ({ key: f.key, stream: f.stream })),
      node: this.selfName,
      takenMs: Date.now(),
      dumpMs,
      leftRunning
    }, signal)
  }

  /** Hands dir to `to`: here directly (ownership passes), elsewhere over the bulk transport. */
  private async deliver (dir: string, to: string, vpid: number, signal: AbortSignal): Promise<void> {
    if (to === this.selfName) {
      this.arrivals.put(to, vpid, { dir })
      return
    }
    await this.push(dir, to, signal)
    await rm(dir, { recursive: true, force: true })
  }

  /** Sends a checkpoint dir to another node; it lands in that node's arrivals, verified. */
  async push (dir: string, to: string, signal: AbortSignal): Promise<void> {
    const channel = await this.init.bulk.open(to, CHECKPOINT_PROTOCOL, signal)
    try {
      await sendImageDir(channel, dir, { signal })
    } catch (err) {
      channel.abort(err instanceof Error ? err : new Error(String(err)))
      throw err
    }
  }

  /** After a good dump that stopped the job, delivering failed: the job runs here again. */
  private async rollback (record: JobRecord, job: RuntimeJob, dir: string, stdio: DumpedFile[], why: string): Promise<void> {
    const { local, runtime } = this.init
    try {
      await runtime.release(job).catch(() => {})
      const restored = await runtime.restore({ vpid: record.vpid, imagesDir: dir, limits: record.limits, stdio })
      await local.resumeAfterMigration(record.vpid, restored, `checkpoint failed: ${why}`)
    } catch (err) {
      await local.loseAfterMigration(record.vpid, `checkpoint failed: ${why}; restoring it failed too: ${(err as Error).message}`)
    }
  }

  // ---- the restoring node ---------------------------------------------------------------------

  /** Restores a verified checkpoint dir here (the dir is left as it was). */
  async restoreHere (dir: string, body: ManifestBody, signal: AbortSignal): Promise<RestoreSummary> {
    const { local, runtime } = this.init
    const { vpid } = body
    const sameEntry = local.has(vpid) && local.get(vpid).state === 'checkpointed'
    if (!sameEntry && !local.canReceive(vpid)) throw new JobStateError(`job ${vpid} already runs on ${this.selfName}`)
    // Verified on arrival (or when copied in); re-checked here so that the disk between then and
    // `criu restore` cannot hand CRIU corrupt images: the job then stays as it was.
    await recheckImages(dir, body.files, signal)
    const paths = runtime.paths(vpid)
    await rm(paths.jobDir, { recursive: true, force: true })
    await mkdir(paths.jobDir, { recursive: true, mode: 0o711 })
    await copyFile(join(dir, STAGED_OUTPUT.stdout), paths.stdout)
    await copyFile(join(dir, STAGED_OUTPUT.stderr), paths.stderr)
    const start = Date.now()
    const job = await runtime.restore({ vpid, imagesDir: dir, limits: body.job.limits, stdio: body.stdio }, signal)
    const restoreMs = Date.now() - start
    if (sameEntry) await local.resumeFromCheckpoint(vpid, job)
    else await local.adoptMigrated({ vpid, owner: body.owner, ...body.job, node: this.selfName, state: 'running', stdin: false }, job)
    this.init.logger.info({ vpid, takenMs: body.takenMs, restoreMs }, 'job restored from a checkpoint')
    return { vpid, node: this.selfName, restoreMs, takenMs: body.takenMs, homeNode: body.job.homeNode }
  }

  /**
   * The node where vpid was last (checkpointed, or ended) hears that it runs on `node` now: a
   * checkpointed job moved there; the record of an ended one goes (ps lists each vpid once).
   */
  async markRestoredElsewhere (vpid: number, node: string): Promise<void> {
    const { local } = this.init
    if (!local.has(vpid) || node === this.selfName) return
    if (local.get(vpid).state === 'checkpointed') await local.markMoved(vpid, node)
    else await local.forget(vpid)
  }

  /** Restores what `from` just pushed here, then deletes it. */
  async restoreArrived (vpid: number, from: string, signal: AbortSignal): Promise<RestoreSummary> {
    const dir = await this.arrivals.take(from, vpid, ARRIVAL_WAIT_MS, signal)
    try {
      return await this.restoreHere(dir, await readManifest(dir, this.init.key), signal)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }

  // ---- held (last periodic) checkpoints ---------------------------------------------------------

  /** Keeps what `from` sent for vpid as its last checkpoint, replacing the previous one. */
  async keep (vpid: number, from: string, signal: AbortSignal): Promise<void> {
    const dir = await this.arrivals.take(from, vpid, ARRIVAL_WAIT_MS, signal)
    const held = this.heldDir(vpid)
    const old = `${held}.old`
    await rm(old, { recursive: true, force: true })
    await rename(held, old).catch(() => {})
    await rename(dir, held)
    await rm(old, { recursive: true, force: true })
  }

  async drop (vpid: number): Promise<void> {
    await rm(this.heldDir(vpid), { recursive: true, force: true })
  }

  /** The last checkpoint of vpid this node holds, if any (authenticated). */
  async held (vpid: number): Promise<HeldCheckpoint | undefined> {
    const body = await readManifest(this.heldDir(vpid), this.init.key).catch(err => {
      if (err instanceof CheckpointInvalidError && /missing/.test(err.message)) return undefined
      throw err
    })
    if (body === undefined) return undefined
    return { vpid, node: this.selfName, takenMs: body.takenMs, dumpMs: body.dumpMs, bytes: body.files.reduce((n, f) => n + f.size, 0), ownerUid: body.owner.uid }
  }

  /** Restores the held checkpoint of vpid on `target` (here, or pushed there first). */
  async restoreHeld (vpid: number, target: string, signal: AbortSignal): Promise<RestoreSummary> {
    const dir = this.heldDir(vpid)
    const body = await readManifest(dir, this.init.key)
    if (target === this.selfName) return await this.restoreHere(dir, body, signal)
    await this.push(dir, target, signal)
    return await this.init.rpc.call(target, 'ckpt.restoreArrived', { vpid, from: this.selfName }, { signal, timeoutMs: 10 * 60_000 }) as RestoreSummary
  }
}

/** The transfer's own sha256s (of what was written here) must be the manifest's. */
function checkReceived (body: ManifestBody, images: ReadonlyArray<{ name: string, size: number, sha256?: string }>): void {
  const got = new Map(images.map(i => [i.name, i]))
  for (const f of body.files) {
    const g = got.get(f.name)
    if (g === undefined || g.size !== f.size || g.sha256 !== f.sha256) throw new CheckpointInvalidError(`received checkpoint of job ${body.vpid}: ${f.name} does not match its manifest`)
    got.delete(f.name)
  }
  got.delete('ssi-checkpoint.json')
  if (got.size > 0) throw new CheckpointInvalidError(`received checkpoint of job ${body.vpid}: files not in its manifest: ${[...got.keys()].join(', ')}`)
}
