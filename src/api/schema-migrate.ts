/** Control-API schemas of moving jobs: migrate, checkpoint, restore (entry point: schema.ts). */
import { z } from 'zod'
import { nonNegative, vpidParam } from './schema-values.js'

export const migrateParamsSchema = z.object({
  vpid: vpidParam,
  node: z.string().min(1).max(64),
  /** stop-copy (default), post-copy, pre-copy, or auto (the source node chooses; see README). */
  mode: z.enum(['stop-copy', 'post-copy', 'pre-copy', 'auto']).optional()
})
/** Phase times of a stop-and-copy migration, ms; downtime runs from the dump to the job running again. */
export const migrateResultSchema = z.object({
  vpid: z.number().int().positive(),
  from: z.string(),
  node: z.string(),
  checkMs: nonNegative,
  dumpMs: nonNegative,
  transferMs: nonNegative,
  restoreMs: nonNegative,
  downtimeMs: nonNegative,
  bytes: nonNegative,
  /** Of `bytes`, those sent while the dump still ran (stop-copy: CRIU's page files as it wrote them). */
  bytesDuringDump: nonNegative.optional(),
  /** CRIU's time to freeze the tree, and how long it kept it frozen while dumping (within dumpMs). */
  freezeMs: nonNegative.optional(),
  frozenMs: nonNegative.optional(),
  /** The mode used and why (e.g. auto's rule). */
  mode: z.enum(['stop-copy', 'post-copy', 'pre-copy']).optional(),
  modeReason: z.string().optional(),
  /** post-copy: from the job running on the target until its last page arrived, and the page bytes. */
  pullMs: nonNegative.optional(),
  pageBytes: nonNegative.optional(),
  /** From the request to the end of the migration (post-copy: the end of the page pull). */
  totalMs: nonNegative.optional()
})
/** Progress of a migration: the mode chosen (with a warning for post-copy), phases, bytes moved. */
export const migrateEventSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('mode'), mode: z.enum(['stop-copy', 'post-copy', 'pre-copy']), reason: z.string(), warning: z.string().optional() }),
  z.object({ kind: z.literal('phase'), phase: z.string() }),
  z.object({
    kind: z.literal('progress'),
    /** 'transferring' (images) or 'pulling' (post-copy pages, total estimated from the job's RSS). */
    phase: z.string(),
    doneBytes: nonNegative,
    totalBytes: nonNegative,
    bytesPerSecond: nonNegative,
    etaMs: nonNegative.optional()
  })
])

/** Checkpoint a job into a directory of the answering node (default: under its state dir). */
export const checkpointParamsSchema = z.object({
  vpid: vpidParam,
  /** Keep the job running after the dump (default: it stops, state 'checkpointed'). */
  leaveRunning: z.boolean().default(false),
  /** Absolute path of a new or empty directory on the answering node. */
  dir: z.string().min(1).max(4096).optional()
})
export const checkpointResultSchema = z.object({
  vpid: z.number().int().positive(),
  /** Node the job was dumped on. */
  node: z.string(),
  /** The checkpoint directory on the answering node. */
  dir: z.string(),
  takenMs: nonNegative,
  dumpMs: nonNegative,
  transferMs: nonNegative,
  totalMs: nonNegative,
  bytes: nonNegative,
  leftRunning: z.boolean()
})
/** Restore a checkpoint directory of the answering node, there or on `node`. */
export const restoreParamsSchema = z.object({ dir: z.string().min(1).max(4096), node: z.string().min(1).max(64).optional() })
/** Restore a job from its last periodic checkpoint, on the node holding it or on `node`. */
export const restoreLastParamsSchema = z.object({ vpid: vpidParam, node: z.string().min(1).max(64).optional() })
export const restoreResultSchema = z.object({
  vpid: z.number().int().positive(),
  node: z.string(),
  restoreMs: nonNegative,
  /** When the restored checkpoint was taken (epoch ms). */
  takenMs: nonNegative
})

export type MigrateResult = z.infer<typeof migrateResultSchema>
export type MigrateEvent = z.infer<typeof migrateEventSchema>
