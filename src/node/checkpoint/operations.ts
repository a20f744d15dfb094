/**
 * The checkpoint operations users (and the failure handler) call, from any node:
 * - checkpointToDir: the job (wherever it runs) is dumped and its checkpoint lands in a directory
 *   of THIS node (the one the CLI talks to);
 * - restoreFromDir: a checkpoint directory of this node is verified on a private copy and
 *   restored here or on `node`;
 * - restoreFromLast: the newest last-periodic checkpoint held by any live node is restored, on its
 *   holder or on `node` — what the node-failure handler calls for jobs of a dead node.
 * Plus the node-to-node handlers these need (`ckpt.*` on /ssi/rpc/1).
 */
import { chown, copyFile, lstat, mkdir, readdir, rename, rm, rmdir, unlink } from 'node:fs/promises'
import { dirname, isAbsolute, join } from 'node:path'
import { parseParams } from '../../protocol/peer.js'
import { CheckpointInvalidError, CheckpointStateError } from '../../migration/checkpoint/errors.js'
import { copyVerified, MANIFEST_FILE } from '../../migration/checkpoint/manifest.js'
import type { ManifestBody } from '../../migration/checkpoint/manifest.js'
import {
  ckptDumpSchema, ckptKeepSchema, ckptRestoreArrivedSchema, ckptRestoredSchema, ckptRestoreHeldSchema, ckptVpidSchema
} from '../../protocol/checkpoint.js'
import type { CkptDumpResult, HeldCheckpoint, RestoreSummary } from '../../protocol/checkpoint.js'
import { JobPermissionError, NoNodeAvailableError, UnknownNodeError } from '../../ssi/jobs/errors.js'
import type { ClusterJobs } from '../../ssi/jobs/cluster.js'
import type { ClusterView, PeerRpc } from '../../ssi/ports.js'
import { ARRIVAL_WAIT_MS } from './service.js'
import type { CheckpointCore } from './service.js'

/** Who asks (kernel-verified credentials of the control-socket caller; uid 0 = root). */
export interface Caller { readonly uid: number, readonly gid: number }

export interface DiskCheckpointResult extends CkptDumpResult {
  /** The checkpoint directory (on this node). */
  readonly dir: string
  readonly totalMs: number
}

const DUMP_TIMEOUT_MS = 30 * 60_000
const ACTIVE = new Set(['starting', 'running', 'migrating'])

export class CheckpointOperations {
  constructor (private readonly core: CheckpointCore, private readonly jobs: ClusterJobs, private readonly rpc: PeerRpc, private readonly view: ClusterView) {}

  registerPeerHandlers (): void {
    const { rpc, core } = this
    rpc.handle('ckpt.dump', async (p, ctx) => await core.dumpHere(parseParams(ckptDumpSchema, p), ctx.signal))
    rpc.handle('ckpt.keep', async (p, ctx) => { const { vpid, from } = parseParams(ckptKeepSchema, p); await core.keep(vpid, from, ctx.signal); return {} })
    rpc.handle('ckpt.drop', async p => { await core.drop(parseParams(ckptVpidSchema, p).vpid); return {} })
    rpc.handle('ckpt.held', async p => (await core.held(parseParams(ckptVpidSchema, p).vpid)) ?? null)
    rpc.handle('ckpt.restored', async p => { const { vpid, node } = parseParams(ckptRestoredSchema, p); await core.markRestoredElsewhere(vpid, node); return {} })
    rpc.handle('ckpt.restoreArrived', async (p, ctx) => {
      const { vpid, from } = parseParams(ckptRestoreArrivedSchema, p)
      return await core.restoreArrived(vpid, from, ctx.signal)
    })
    rpc.handle('ckpt.restoreHeld', async (p, ctx) => {
      const { vpid, target } = parseParams(ckptRestoreHeldSchema, p)
      return await core.restoreHeld(vpid, target, ctx.signal)
    })
  }

  /**
   * Checkpoints job vpid into `dir` on this node (default `<stateDir>/checkpoints/disk/<vpid>-<time>`).
   * `dir` must not exist or be empty; a non-root caller must own its parent (or the parent is a
   * sticky world-writable dir like /tmp), and gets the directory. Only the owner or root may.
   */
  async checkpointToDir (vpid: number, caller: Caller, leaveRunning: boolean, dir: string | undefined, signal: AbortSignal): Promise<DiskCheckpointResult> {
    const start = Date.now()
    const node = await this.jobs.locate(vpid, signal)
    const dest = dir ?? join(this.core.init.dir, 'disk', `${vpid}-${new Date().toISOString().replace(/[:.]/g, '-')}`)
    if (dir === undefined) await mkdir(dirname(dest), { recursive: true, mode: 0o700 }) // the default's parent: made on first use
    const created = await prepareDest(dest, caller)
    let r: CkptDumpResult
    try {
      r = await this.rpc.call(node, 'ckpt.dump', { vpid, asUid: caller.uid, leaveRunning, to: this.core.selfName, dir: dest }, { signal, timeoutMs: DUMP_TIMEOUT_MS }) as CkptDumpResult
    } catch (err) {
      if (created) await rmdir(dest).catch(() => {})
      throw err
    }
    const arrived = await this.core.arrivals.take(node, vpid, ARRIVAL_WAIT_MS, signal)
    try {
      await moveFiles(arrived, dest, caller)
    } catch (err) {
      throw new CheckpointStateError(`job ${vpid} was checkpointed but moving it into ${dest} failed (${(err as Error).message}); the images are in ${arrived}`, { cause: err })
    }
    await rm(arrived, { recursive: true, force: true })
    return { ...r, dir: dest, totalMs: Date.now() - start }
  }

  /** Verifies the checkpoint in `dir` (of this node) and restores it here or on `node`. */
  async restoreFromDir (dir: string, caller: Caller, node: string | undefined, signal: AbortSignal): Promise<RestoreSummary> {
    if (!isAbsolute(dir)) throw new CheckpointInvalidError(`checkpoint dir must be an absolute path: ${dir}`)
    const staging = this.core.workPath()
    await mkdir(staging, { mode: 0o700 })
    try {
      const body = await copyVerified(dir, staging, this.core.init.key, signal)
      if (caller.uid !== 0 && caller.uid !== body.owner.uid) {
        throw new JobPermissionError(`permission denied: the checkpoint of job ${body.vpid} belongs to ${body.owner.user} (uid ${body.owner.uid}); only its owner or root may restore it`)
      }
      return await this.restoreVerified(staging, body, node ?? this.core.selfName, signal)
    } finally {
      await rm(staging, { recursive: true, force: true })
    }
  }

  private async restoreVerified (dir: string, body: ManifestBody, target: string, signal: AbortSignal): Promise<RestoreSummary> {
    this.checkTarget(target)
    const last = await this.refuseIfActive(body.vpid, signal)
    let r: RestoreSummary
    if (target === this.core.selfName) {
      r = await this.core.restoreHere(dir, body, signal)
    } else {
      await this.core.push(dir, target, signal)
      r = await this.rpc.call(target, 'ckpt.restoreArrived', { vpid: body.vpid, from: this.core.selfName }, { signal, timeoutMs: 10 * 60_000 }) as RestoreSummary
    }
    await this.tellPrevious(last, r)
    return r
  }

  /**
   * The node the job was last on (if it answered) forgets or forwards it: it runs on r.node now.
   * Its home node resumes its periodic checkpoints if it had any (they stop when a job ends).
   */
  private async tellPrevious (last: { node: string } | undefined, r: RestoreSummary): Promise<void> {
    if (r.homeNode !== undefined) await this.rpc.call(r.homeNode, 'ckpt.resume', { vpid: r.vpid }, { timeoutMs: 5000 }).catch(() => {})
    if (last === undefined || last.node === r.node) return
    await this.rpc.call(last.node, 'ckpt.restored', { vpid: r.vpid, node: r.node }, { timeoutMs: 5000 }).catch(() => {})
  }

  /**
   * Restores vpid from the newest last-periodic checkpoint any live node holds, on its holder or on
   * `opts.node`. Refused while the job runs on a node that answers. `opts.asUid` (default 0: the
   * system, e.g. the failure handler) must be the job's owner or root.
   * @throws CheckpointStateError (no live node holds one), JobStateError (it runs), JobPermissionError
   */
  async restoreFromLast (vpid: number, opts: { readonly node?: string, readonly asUid?: number, readonly signal?: AbortSignal } = {}): Promise<RestoreSummary> {
    const signal = opts.signal ?? new AbortController().signal
    const held = await this.findHeld(vpid, signal)
    if (held === undefined) throw new CheckpointStateError(`no live node holds a checkpoint of job ${vpid}`)
    const asUid = opts.asUid ?? 0
    if (asUid !== 0 && asUid !== held.ownerUid) throw new JobPermissionError(`permission denied: job ${vpid} belongs to uid ${held.ownerUid}; only its owner or root may restore it`)
    const target = opts.node ?? held.node
    this.checkTarget(target)
    const last = await this.refuseIfActive(vpid, signal)
    const r = await this.rpc.call(held.node, 'ckpt.restoreHeld', { vpid, target, asUid }, { signal, timeoutMs: 10 * 60_000 }) as RestoreSummary
    await this.tellPrevious(last, r)
    return r
  }

  /** The newest last checkpoint of vpid on any live node. */
  async findHeld (vpid: number, signal?: AbortSignal): Promise<HeldCheckpoint | undefined> {
    const nodes = this.view.nodes().filter(n => n.state === 'alive')
    const found = await Promise.all(nodes.map(async n =>
      await this.rpc.call(n.name, 'ckpt.held', { vpid }, { signal, timeoutMs: 5000 }).catch(() => null) as HeldCheckpoint | null))
    return found.filter((h): h is HeldCheckpoint => h !== null).sort((a, b) => b.takenMs - a.takenMs)[0]
  }

  private checkTarget (target: string): void {
    const n = this.view.nodes().find(x => x.name === target)
    if (n === undefined) throw new UnknownNodeError(`unknown node "${target}"`)
    if (n.state !== 'alive') throw new NoNodeAvailableError(`node ${target} is ${n.state}`)
  }

  /** Refuses to restore a job that runs (as far as a live node says): it would run twice. Returns where it was. */
  private async refuseIfActive (vpid: number, signal: AbortSignal): Promise<{ node: string } | undefined> {
    const info = await this.jobs.inspect(vpid, signal).catch(() => undefined)
    if (info !== undefined && ACTIVE.has(info.state)) {
      throw new CheckpointStateError(`job ${vpid} is ${info.state} on ${info.node}: restoring it would run it twice (kill it first)`)
    }
    return info
  }
}

/** Creates (or accepts an empty) checkpoint dir for `caller`; true if it was created. */
async function prepareDest (dest: string, caller: Caller): Promise<boolean> {
  if (!isAbsolute(dest)) throw new CheckpointStateError(`checkpoint dir must be an absolute path: ${dest}`)
  const st = await lstat(dest).catch(() => undefined)
  if (st !== undefined) {
    if (!st.isDirectory()) throw new CheckpointStateError(`${dest} exists and is not a directory`)
    if ((await readdir(dest)).length > 0) throw new CheckpointStateError(`${dest} is not empty`)
    if (caller.uid !== 0 && st.uid !== caller.uid) throw new JobPermissionError(`permission denied: ${dest} is not yours`)
    return false
  }
  const parent = dirname(dest)
  const ps = await lstat(parent).catch(() => undefined)
  if (ps === undefined || !ps.isDirectory()) throw new CheckpointStateError(`${parent} does not exist or is not a directory`)
  // 0o1002: sticky and world-writable (e.g. /tmp), where anyone may create their own entries.
  if (caller.uid !== 0 && ps.uid !== caller.uid && (ps.mode & 0o1002) !== 0o1002) throw new JobPermissionError(`permission denied: you may not create ${dest}`)
  await mkdir(dest, { mode: 0o700 })
  if (caller.uid !== 0) await chown(dest, caller.uid, caller.gid)
  return true
}

/** Moves every file of src into dest (copying across filesystems), owned by a non-root caller. */
async function moveFiles (src: string, dest: string, caller: Caller): Promise<void> {
  const names = await readdir(src)
  // The manifest last: a dir with a manifest is complete.
  names.sort((a, b) => Number(a === MANIFEST_FILE) - Number(b === MANIFEST_FILE))
  for (const name of names) {
    const to = join(dest, name)
    await rename(join(src, name), to).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EXDEV') throw err
      await copyFile(join(src, name), to)
      await unlink(join(src, name))
    })
    if (caller.uid !== 0) await chown(to, caller.uid, caller.gid)
  }
}
