/**
 * Node-to-node migration methods (carried by `/ssi/rpc/1`; images travel on `/ssi/images/1`):
 * their parameter schemas. Every handler validates its params with these before use.
 */
import { z } from 'zod'
import { limitsSchema, ownerSchema } from './jobs.js'

const vpid = z.number().int().positive().max(Number.MAX_SAFE_INTEGER)
/** How to migrate (src/migration/modes.ts); 'auto' lets the source choose. */
export const migrationModeSchema = z.enum(['stop-copy', 'post-copy', 'pre-copy', 'auto'])

/** Source → source (via the caller's node): start migrating vpid to `target`. */
export const migrateStartSchema = z.object({
  vpid,
  target: z.string().min(1).max(64),
  asUid: z.number().int().nonnegative().max(0xffffffff),
  mode: migrationModeSchema.optional()
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
  startedMs: z.number().nonnegative().optional(),
  /** It reads stdin forwarded by `ssi run -i` (its FIFO is in the images); closed: EOF was already forwarded. */
  stdin: z.boolean().optional(),
  stdinClosed: z.boolean().optional()
})

/** The job's stdio files as CRIU names them in a dump (`file[mnt:ino]`), redirected on restore. */
const dumpedStdioSchema = z.array(z.object({ key: z.string().max(64).regex(/^file\[[0-9a-f]+:[0-9a-f]+\]$/), stream: z.enum(['stdout', 'stderr', 'stdin']) })).max(64)

/** Source → target: reserve room for vpid; images follow on `/ssi/images/1` from the same node. */
export const migratePrepareSchema = z.object({
  vpid,
  job: migratedJobSchema,
  /** post-copy: the target also gets a page channel on /ssi/lazy-pages/2 and restores lazily. */
  mode: z.enum(['stop-copy', 'post-copy']).optional(),
  /**
   * stop-copy: the source can stream the pages as it dumps them (on /ssi/stop-copy-pages/1); a
   * target that can take them answers `{ pages: 'stream' }`, else `{}` and they come as images.
   */
  pages: z.enum(['stream']).optional(),
  /**
   * stop-copy: the source would have the target restore while the images arrive (`criu restore
   * --stream`, the restore RPC sent alongside the images); a target that can answers `{ restore:
   * 'stream' }`, else the restore waits for the images as before.
   */
  restore: z.enum(['stream']).optional(),
  /**
   * stop-copy: the stdio files the dump will name (as the restore call does), so that the target
   * can start CRIU's restore at once and have it wait for the images (src/migration/inventory-hold.ts).
   */
  stdio: dumpedStdioSchema.optional(),
  /**
   * When the source started this migration (its journal's startedMs): names the migration, so a
   * restarted source asking `migrate.status` learns whether this one reached the target, even after
   * the job moved on from there.
   */
  migrationStartedMs: z.number().int().nonnegative().optional()
}).strict()

/** The target's answer to migrate.prepare. */
export const migratePrepareReplySchema = z.object({ pages: z.enum(['stream']).optional(), restore: z.enum(['stream']).optional() })

export const migrateVpidSchema = z.object({ vpid }).strict()

/** A restarted source asks what the target holds of its migration of vpid (started at migrationStartedMs). */
export const migrateStatusSchema = z.object({ vpid, migrationStartedMs: z.number().int().nonnegative().optional() }).strict()

/** Source → target: the images arrived; restore, redirecting the output files CRIU names so. */
export const migrateRestoreSchema = z.object({
  vpid,
  stdio: dumpedStdioSchema
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
  /** Of `bytes`, those sent while the dump still ran (stop-copy: CRIU's page files as it wrote them). */
  bytesDuringDump: z.number().nonnegative().optional(),
  /** CRIU's own times within the dump (its stats-dump): freezing the tree, and the tree frozen. */
  freezeMs: z.number().nonnegative().optional(),
  frozenMs: z.number().nonnegative().optional(),
  /** The mode used, and for post-copy the page pull after the job ran on the target. */
  mode: z.enum(['stop-copy', 'post-copy', 'pre-copy']).optional(),
  modeReason: z.string().optional(),
  pullMs: z.number().nonnegative().optional(),
  pageBytes: z.number().nonnegative().optional(),
  /** From the request to the end (post-copy: the last page arrived), ms. */
  totalMs: z.number().nonnegative().optional()
})

/** Events of migrate.start, streamed to the caller: the mode chosen, phase changes, bytes moved. */
export const migrationEventSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('mode'), mode: z.enum(['stop-copy', 'post-copy', 'pre-copy']), reason: z.string().max(512), warning: z.string().max(512).optional() }),
  z.object({ kind: z.literal('phase'), phase: z.string().max(32) }),
  z.object({
    kind: z.literal('progress'),
    /** 'transferring' (images) or 'pulling' (post-copy pages). */
    phase: z.string().max(32),
    doneBytes: z.number().nonnegative(),
    /** Expected total; for the page pull an estimate (the job's resident memory). */
    totalBytes: z.number().nonnegative(),
    bytesPerSecond: z.number().nonnegative(),
    etaMs: z.number().nonnegative().optional()
  })
])

export type MigratePrepareParams = z.infer<typeof migratePrepareSchema>
export type MigratedJob = z.infer<typeof migratedJobSchema>
export type MigrationSummary = z.infer<typeof migrationResultSchema>
export type MigrationEvent = z.infer<typeof migrationEventSchema>
