/**
 * Checkpoint to disk, restore, and periodic checkpoints on one node, wired for the daemon.
 *
 * For the node-failure handler: `checkpoints.operations.restoreFromLast(vpid, { node? })` restores
 * job vpid from the newest last-periodic checkpoint held by any live node (on that holder unless
 * `node` says where), refusing only if a live node reports the job running. The home node's record
 * of it is `checkpoints.periodic.record(vpid)` (PeriodicRecord: `last.node` holds it, `last.takenMs`
 * is when it was taken), also answered to peers as `ckpt.info`.
 */
import { join } from 'node:path'
import { manifestKey } from '../../migration/checkpoint/manifest.js'
import { parseParams } from '../../protocol/peer.js'
import { ckptVpidSchema } from '../../protocol/checkpoint.js'
import { CheckpointCore } from './service.js'
import type { CheckpointCoreInit } from './service.js'
import { CheckpointOperations } from './operations.js'
import { PeriodicCheckpoints } from './periodic.js'
import type { ClusterJobs } from '../../ssi/jobs/cluster.js'
import type { JobStore } from '../../ssi/jobs/local.js'
import type { ClusterView } from '../../ssi/ports.js'

export interface CheckpointsInit extends Omit<CheckpointCoreInit, 'key'> {
  /** The cluster's pre-shared key (its bytes): manifests are signed with a key derived from it. */
  readonly clusterKey: Uint8Array
  readonly jobs: ClusterJobs
  readonly view: ClusterView
  readonly store: JobStore
  /** Held checkpoints of ended jobs are dropped this long after the end, ms (PeriodicInit.dropHeldAfterEndMs). */
  readonly dropHeldAfterEndMs?: number
}

export interface Checkpoints {
  readonly operations: CheckpointOperations
  readonly periodic: PeriodicCheckpoints
  /** Stops the schedules and deletes unclaimed arrivals (checkpoints/work). */
  stop(): Promise<void>
}

export async function startCheckpoints (init: CheckpointsInit): Promise<Checkpoints> {
  const core = new CheckpointCore({ ...init, key: manifestKey(init.clusterKey) })
  await core.start()
  const operations = new CheckpointOperations(core, init.jobs, init.rpc, init.view)
  operations.registerPeerHandlers()
  const periodic = new PeriodicCheckpoints({ selfName: init.selfName, store: init.store, rpc: init.rpc, view: init.view, jobs: init.jobs, logger: init.logger.child({ component: 'periodic-checkpoints' }), dropHeldAfterEndMs: init.dropHeldAfterEndMs })
  init.rpc.handle('ckpt.info', async p => (await periodic.record(parseParams(ckptVpidSchema, p).vpid)) ?? null)
  init.rpc.handle('ckpt.resume', async p => { await periodic.resume(parseParams(ckptVpidSchema, p).vpid); return {} })
  await periodic.start()
  return { operations, periodic, stop: async () => { periodic.stop(); await core.stop() } }
}

export const checkpointsDir = (stateDir: string): string => join(stateDir, 'checkpoints')
