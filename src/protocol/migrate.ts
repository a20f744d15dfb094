/**
 * Node-to-node migration methods (carried by `/ssi/rpc/1`; images travel on `/ssi/images/1`):
 * their parameter schemas. Every handler validates its params with these before use.
 */
import { z } from 'zod'
import { limitsSchema, ownerSchema } from './jobs.js'

const vpid = z.number().int().positive().max(Number.MAX_SAFE_INTEGER)

/** Source → source (via the caller's node): start migrating vpid to `target`. */
export const migrateStartSchema = z.object({
  vpid,
  target: z.string().min(1).max(64),
  asUid: z.number().int().nonnegative().max(0xffffffff)
}).strict()

/** The part of the job's record the target needs to take it over. */
export const migratedJobSchema = z.object({
  vpid,
  owner: ownerSchema,
  argv: z.array(z.string().max(65_536)).min(1).max(4096),
  cwd: z.string().min(1).max(4096),
  hostname: z.string().max(64),
  limits: limitsSchema,
  homeNode: z.string().max(64),
  createdMs: z.number().nonnegative(),
  startedMs: z.number().nonnegative().optional()
})

/** Source → target: reserve room for vpid; images follow on `/ssi/images/1` from the same node. */
export const migratePrepareSchema = z.object({
  vpid,
  job: migratedJobSchema
}).strict()

export const migrateVpidSchema = z.object({ vpid }).strict()

/** Source → target: the images arrived; restore, redirecting the output files CRIU names so. */
export const migrateRestoreSchema = z.object({
  vpid,
  stdio: z.array(z.object({ key: z.string().max(64).regex(/^file\[[0-9a-f]+:[0-9a-f]+\]$/), stream: z.enum(['stdout', 'stderr']) })).max(64)
}).strict()

export const migrationResultSchema = z.object({
  vpid,
  from: z.string(),
  target: z.string(),
  checkMs: z.number().nonnegative(),
  dumpMs: z.number().nonnegative(),
  transferMs: z.number().nonnegative(),
  restoreMs: z.number().nonnegative(),
  downtimeMs: z.number().nonnegative(),
  bytes: z.number().nonnegative(),
  /** CRIU's own times within the dump (its stats-dump): freezing the tree, and the tree frozen. */
  freezeMs: z.number().nonnegative().optional(),
  frozenMs: z.number().nonnegative().optional()
})

export type MigratePrepareParams = z.infer<typeof migratePrepareSchema>
export type MigratedJob = z.infer<typeof migratedJobSchema>
export type MigrationSummary = z.infer<typeof migrationResultSchema>
