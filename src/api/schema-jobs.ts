/** Control-API schemas of the cluster process namespace: run, ps, kill, wait, logs, inspect (entry point: schema.ts). */
import { z } from 'zod'
import { bytes, count, nonNegative, vpidParam } from './schema-values.js'

export const jobStateSchema = z.enum(['starting', 'running', 'migrating', 'exited', 'killed', 'oom', 'failed', 'lost', 'moved', 'checkpointed'])

export const exitInfoSchema = z.object({
  /** Exit code when the job exited by itself. */
  code: z.number().int().optional(),
  /** Signal number when a signal ended it. */
  signal: z.number().int().optional(),
  /** The kernel killed it for exceeding its memory limit. */
  oomKilled: z.boolean()
})

export const jobLimitsSchema = z.object({
  memoryBytes: z.number().int().positive().optional(),
  cpus: z.number().positive().optional(),
  pids: z.number().int().positive().optional()
})

export const jobInfoSchema = z.object({
  vpid: z.number().int().positive(),
  owner: z.object({ uid: count, gid: count, groups: z.array(count).readonly(), user: z.string() }),
  argv: z.array(z.string()).readonly(),
  cwd: z.string(),
  hostname: z.string(),
  limits: jobLimitsSchema,
  /** Node it runs on now. */
  node: z.string(),
  /** Node that launched it (allocated its vpid). */
  homeNode: z.string(),
  state: jobStateSchema,
  createdMs: nonNegative,
  startedMs: nonNegative.optional(),
  endedMs: nonNegative.optional(),
  exit: exitInfoSchema.optional(),
  error: z.string().optional(),
  hostPid: z.number().int().optional(),
  jobDir: z.string().optional(),
  stdin: z.boolean(),
  /** CPU use since the previous sample, in % of one core. */
  cpuPercent: nonNegative,
  rssBytes: nonNegative,
  /** Frozen by fencing: its node sees no majority, so its processes stay stopped until that ends (`ps` shows `fenced`). */
  fenced: z.boolean().optional(),
  /** How its last migration ended. */
  migration: z.object({
    from: z.string(),
    to: z.string(),
    outcome: z.enum(['moved', 'rolled-back', 'lost']),
    atMs: nonNegative,
    detail: z.string().optional()
  }).optional(),
  /** Periodic checkpoints (run --checkpoint-every): period, and the last good one (holder node, epoch ms taken). */
  checkpoint: z.object({
    everyMs: nonNegative,
    node: z.string().optional(),
    takenMs: nonNegative.optional(),
    dumpMs: nonNegative.optional(),
    bytes: nonNegative.optional(),
    error: z.string().optional()
  }).optional(),
  /** The job was lost with its node and restored from its last periodic checkpoint: it was rolled back to `takenMs`. */
  recovered: z.object({
    fromNode: z.string(),
    node: z.string(),
    takenMs: nonNegative,
    atMs: nonNegative
  }).optional()
})

export const runParamsSchema = z.object({
  argv: z.array(z.string().max(65_536)).min(1, 'no command given').max(4096),
  env: z.record(z.string(), z.string()),
  cwd: z.string().min(1),
  /** Force this node instead of the placement policy's choice. */
  node: z.string().max(64).optional(),
  memoryBytes: z.number().int().min(4 * 1024 * 1024, 'memory limit must be at least 4 MiB').optional(),
  cpus: z.number().min(0.01, 'cpus must be at least 0.01').max(4096).optional(),
  pids: z.number().int().min(1, 'pids must be at least 1').max(4_194_304).optional(),
  /** Forward the client's stdin (input messages). */
  stdin: z.boolean().default(false),
  /** Return as soon as the job has started. */
  detach: z.boolean().default(false),
  /** Checkpoint the job this often (ms), keeping the last good checkpoint on another node. */
  checkpointEveryMs: z.number().int().min(1000, 'checkpoint period must be at least 1s').max(2 ** 31 - 1).optional()
})

export const runResultSchema = z.object({
  vpid: z.number().int().positive(),
  node: z.string(),
  state: jobStateSchema,
  exit: exitInfoSchema.optional(),
  /** Shell-style status: exit code, or 128 + signal. */
  status: z.number().int(),
  error: z.string().optional(),
  limits: jobLimitsSchema
})

export const outputEventSchema = z.object({ kind: z.literal('output'), fd: z.union([z.literal(1), z.literal(2)]), data: bytes })
/** A followed job was stopped by `ssi checkpoint`: where the checkpoint went; following goes on until it is restored and ends. */
export const checkpointedEventSchema = z.object({ kind: z.literal('checkpointed'), vpid: z.number().int().positive(), node: z.string(), dir: z.string().optional(), atMs: nonNegative })
export const runEventSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('started'), vpid: z.number().int().positive(), node: z.string() }),
  outputEventSchema,
  checkpointedEventSchema,
  /** Writing the forwarded stdin failed while the job runs on (e.g. its node is unreachable): later stdin is dropped. */
  z.object({ kind: z.literal('stdin-closed'), message: z.string().max(1000) })
])
export const logsEventSchema = z.discriminatedUnion('kind', [outputEventSchema, checkpointedEventSchema])
/** Input of an attached `run`: stdin bytes, end of stdin, or a signal to forward (e.g. Ctrl-C). */
export const runInputSchema = z.object({
  stdin: bytes.optional(),
  eof: z.boolean().optional(),
  signal: z.string().regex(/^SIG[A-Z0-9]+$/).optional()
})

export const psParamsSchema = z.object({
  node: z.string().optional(),
  user: z.string().optional(),
  state: jobStateSchema.optional()
})
export const psResultSchema = z.object({ jobs: z.array(jobInfoSchema), unreachable: z.array(z.string()) })

export const killParamsSchema = z.object({
  vpids: z.array(vpidParam).min(1).max(1024),
  signal: z.string().regex(/^SIG[A-Z0-9]+$/, 'signal must be a name like SIGTERM').default('SIGTERM')
})
export const killResultSchema = z.object({
  results: z.array(z.object({ vpid: vpidParam, node: z.string().optional(), error: z.string().optional() }))
})

export const vpidParamsSchema = z.object({ vpid: vpidParam })
export const logsParamsSchema = z.object({ vpid: vpidParam, follow: z.boolean().default(false) })

export type JobState = z.infer<typeof jobStateSchema>
export type ExitInfo = z.infer<typeof exitInfoSchema>
export type JobInfo = z.infer<typeof jobInfoSchema>
export type RunParams = z.infer<typeof runParamsSchema>
export type RunResult = z.infer<typeof runResultSchema>
export type RunEvent = z.infer<typeof runEventSchema>
export type RunInput = z.infer<typeof runInputSchema>
export type PsResult = z.infer<typeof psResultSchema>
export type KillResult = z.infer<typeof killResultSchema>
