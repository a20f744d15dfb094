/**
 * Node-to-node checkpoint methods (carried by `/ssi/rpc/1`; checkpoint dirs travel as image dirs on
 * CHECKPOINT_PROTOCOL, the images transfer of src/protocol/images.ts on its own protocol id so that
 * they never mix with migrations). Every handler validates its params with these before use.
 */
import { z } from 'zod'

export const CHECKPOINT_PROTOCOL = '/ssi/checkpoint-images/1'

const vpid = z.number().int().positive().max(Number.MAX_SAFE_INTEGER)
const node = z.string().min(1).max(64)

/** To the job's node: dump it (as asUid) and deliver the checkpoint dir to node `to`. */
export const ckptDumpSchema = z.object({
  vpid,
  asUid: z.number().int().nonnegative().max(0xffffffff),
  leaveRunning: z.boolean(),
  to: node,
  /** Deadline of dump + delivery on the job's node, ms: past it CRIU is killed and the job runs on. */
  timeoutMs: z.number().int().positive().max(2 ** 31 - 1).optional(),
  /** Where `to` will put the checkpoint, for the job's record (`ssi logs -f` tells the user). */
  dir: z.string().max(4096).optional()
}).strict()

/** What `ckpt.dump` answers once `to` has the checkpoint, verified. */
export const ckptDumpResultSchema = z.object({
  vpid,
  node,
  to: node,
  takenMs: z.number().nonnegative(),
  dumpMs: z.number().nonnegative(),
  transferMs: z.number().nonnegative(),
  bytes: z.number().nonnegative(),
  leftRunning: z.boolean()
})

/** To a node that received a checkpoint of vpid from `from`: keep it as vpid's last periodic one. */
export const ckptKeepSchema = z.object({ vpid, from: node }).strict()

/** To a node that received a checkpoint of vpid from `from`: restore it here. */
export const ckptRestoreArrivedSchema = z.object({ vpid, from: node }).strict()

/** To the node holding vpid's last periodic checkpoint: restore it on `target` (itself or another). */
export const ckptRestoreHeldSchema = z.object({ vpid, target: node, asUid: z.number().int().nonnegative().max(0xffffffff) }).strict()

/** vpid only: `ckpt.held` (which last checkpoint do you hold), `ckpt.drop`, `ckpt.info`. */
export const ckptVpidSchema = z.object({ vpid }).strict()

/** To the node that dumped-and-stopped vpid: it was restored on `node`. */
export const ckptRestoredSchema = z.object({ vpid, node }).strict()

/** What a node holding a last checkpoint says about it. */
export interface HeldCheckpoint {
  readonly vpid: number
  readonly node: string
  readonly takenMs: number
  readonly dumpMs: number
  readonly bytes: number
  readonly ownerUid: number
}

/** Where a restore put the job. */
export interface RestoreSummary {
  readonly vpid: number
  readonly node: string
  readonly restoreMs: number
  /** Epoch ms the restored checkpoint was taken. */
  readonly takenMs: number
  /** The job's home node (keeps its periodic-checkpoint schedule). */
  readonly homeNode?: string
}

export type CkptDumpParams = z.infer<typeof ckptDumpSchema>
export type CkptDumpResult = z.infer<typeof ckptDumpResultSchema>
