/**
 * The control-API wire schema: the one module that defines what the daemon and its clients say to
 * each other. Every message carries `v` (API_VERSION); message kinds and methods only ever gain values
 * at the end. The daemon validates every received frame with these schemas before use.
 *
 * Runtime zod is for the daemon side (and tests): the CLI imports only the *types* from here (see
 * constants.ts for why), so keep runtime values that the CLI needs in constants.ts.
 *
 * Adding a method: add a schema for its params and result (and `event`/`input` for a streaming
 * method) and one line to `methods`. The client's `call` and the server's `handle` are typed by it.
 */
import { z } from 'zod'

export * from './constants.js'

// ---- envelopes -------------------------------------------------------------------------------

const callId = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
/** Any integer: a wrong version gets its own clear error rather than a schema failure. */
const version = z.number().int()

export const callMessageSchema = z.object({
  v: version,
  id: callId,
  type: z.literal('call'),
  method: z.string().min(1).max(128),
  /** Omitted params count as {}. */
  params: z.unknown().optional()
})

/** Client input for a streaming call in flight: stdin bytes, a signal to forward, ... */
export const inputMessageSchema = z.object({ v: version, id: callId, type: z.literal('input'), data: z.unknown() })

export const cancelMessageSchema = z.object({ v: version, id: callId, type: z.literal('cancel') })

export const clientMessageSchema = z.discriminatedUnion('type', [
  callMessageSchema, inputMessageSchema, cancelMessageSchema
])

export const errorPayloadSchema = z.object({
  name: z.string(),
  message: z.string(),
  code: z.string().optional()
})

export const resultMessageSchema = z.object({ v: version, id: callId, type: z.literal('result'), result: z.unknown().optional() })

export const errorMessageSchema = z.object({ v: version, id: callId, type: z.literal('error'), error: errorPayloadSchema })

/** Zero or more events precede the final result or error of a streaming call. */
export const eventMessageSchema = z.object({ v: version, id: callId, type: z.literal('event'), event: z.unknown() })

export const serverMessageSchema = z.discriminatedUnion('type', [
  resultMessageSchema, errorMessageSchema, eventMessageSchema
])

export type CallMessage = z.infer<typeof callMessageSchema>
export type InputMessage = z.infer<typeof inputMessageSchema>
export type CancelMessage = z.infer<typeof cancelMessageSchema>
export type ClientMessage = z.infer<typeof clientMessageSchema>
export type ResultMessage = z.infer<typeof resultMessageSchema>
export type ErrorMessage = z.infer<typeof errorMessageSchema>
export type EventMessage = z.infer<typeof eventMessageSchema>
export type ServerMessage = z.infer<typeof serverMessageSchema>

// ---- shared value types ----------------------------------------------------------------------

const count = z.number().int().nonnegative()
const nonNegative = z.number().finite().nonnegative()
const nodeId = z.number().int().min(1).max(65_535)

export const memberStateSchema = z.enum(['alive', 'suspect', 'dead'])
/** A node in `nodes`: a member's state, or `unknown` for a configured node not heard from since this daemon started. */
export const nodeStateSchema = z.enum(['alive', 'suspect', 'dead', 'unknown'])

export const nodeLoadSchema = z.object({
  /** Runnable tasks right now (procs_running). */
  runQueue: nonNegative,
  load1: nonNegative,
  load5: nonNegative,
  load15: nonNegative,
  /** 0 for a node in state `unknown` (never heard from). */
  cpus: count
})

export const nodeInfoSchema = z.object({
  name: z.string(),
  id: nodeId,
  peerId: z.string(),
  /** libp2p multiaddrs the node listens on (for `unknown`: its configured listen address). */
  addresses: z.array(z.string()),
  /** `unknown`: configured but never heard from; peerId is '', load, memory and jobs are 0. */
  state: nodeStateSchema,
  /** True for the node that answered. */
  self: z.boolean(),
  load: nodeLoadSchema,
  memory: z.object({ freeBytes: nonNegative, totalBytes: nonNegative }),
  /** Jobs running on the node. */
  jobs: count,
  /** Epoch ms of the last heartbeat received from it; for `self`: now; 0 for `unknown`. */
  lastSeenMs: nonNegative
})

export const statusResultSchema = z.object({
  cluster: z.string(),
  /** ssi version of the answering daemon. */
  version: z.string(),
  node: z.object({ name: z.string(), id: nodeId, peerId: z.string() }),
  uptimeMs: nonNegative,
  members: z.object({ alive: count, suspect: count, dead: count, total: count }),
  /** Jobs running on the answering node. */
  jobs: count
})

export type MemberState = z.infer<typeof memberStateSchema>
export type NodeState = z.infer<typeof nodeStateSchema>
export type NodeLoad = z.infer<typeof nodeLoadSchema>
export type NodeInfo = z.infer<typeof nodeInfoSchema>
export type StatusResult = z.infer<typeof statusResultSchema>

// ---- jobs (cluster process namespace) --------------------------------------------------------

/** Raw bytes (msgpack bin): stdin and output chunks. */
const bytes = z.custom<Uint8Array>(v => v instanceof Uint8Array, 'must be bytes')

const vpidParam = z.union([z.number().int().positive(), z.string().max(20)])

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

export type JobState = z.infer<typeof jobStateSchema>
export type ExitInfo = z.infer<typeof exitInfoSchema>
export type JobInfo = z.infer<typeof jobInfoSchema>
export type RunParams = z.infer<typeof runParamsSchema>
export type RunResult = z.infer<typeof runResultSchema>
export type RunEvent = z.infer<typeof runEventSchema>
export type RunInput = z.infer<typeof runInputSchema>
export type PsResult = z.infer<typeof psResultSchema>
export type KillResult = z.infer<typeof killResultSchema>
export type MigrateResult = z.infer<typeof migrateResultSchema>
export type MigrateEvent = z.infer<typeof migrateEventSchema>

/** `shutdown`: the node whose daemon is stopping. */
export const shutdownResultSchema = z.object({ node: z.string().max(64) })

// ---- methods ---------------------------------------------------------------------------------

/** What the protocol knows about one method. */
export interface MethodSpec {
  readonly params: z.ZodType
  /** Result schemas must not transform: the daemon may skip validating results in production. */
  readonly result: z.ZodType
  /** Streaming methods: the events sent before the final result. */
  readonly event?: z.ZodType
  /** Methods that read client `input` messages (stdin, signals). Input to other methods is dropped. */
  readonly input?: z.ZodType
  /** Only uid 0 may call it; others get PermissionDeniedError. */
  readonly adminOnly?: boolean
}

export type MethodTable = Readonly<Record<string, MethodSpec>>

const noParams = z.object({})

/** Every control-API method. Append new methods; never change the meaning of an existing one. */
export const methods = {
  status: { params: noParams, result: statusResultSchema },
  nodes: { params: noParams, result: z.array(nodeInfoSchema) },
  run: { params: runParamsSchema, result: runResultSchema, event: runEventSchema, input: runInputSchema },
  ps: { params: psParamsSchema, result: psResultSchema },
  kill: { params: killParamsSchema, result: killResultSchema },
  wait: { params: vpidParamsSchema, result: runResultSchema },
  logs: { params: logsParamsSchema, result: z.object({}), event: logsEventSchema },
  inspect: { params: vpidParamsSchema, result: jobInfoSchema },
  migrate: { params: migrateParamsSchema, result: migrateResultSchema, event: migrateEventSchema },
  checkpoint: { params: checkpointParamsSchema, result: checkpointResultSchema },
  restore: { params: restoreParamsSchema, result: restoreResultSchema },
  restoreLast: { params: restoreLastParamsSchema, result: restoreResultSchema },
  /** Cluster admin: stops the daemon answering (its jobs run on under their shims). */
  shutdown: { params: noParams, result: shutdownResultSchema, adminOnly: true }
} as const satisfies MethodTable

export type ApiMethods = typeof methods

export type MethodName<T extends MethodTable = ApiMethods> = keyof T & string

/** What a client passes (defaults may be omitted). */
export type MethodParams<M extends MethodName<T>, T extends MethodTable = ApiMethods> = z.input<T[M]['params']>

/** What a handler receives after validation. */
export type ParsedParams<M extends MethodName<T>, T extends MethodTable = ApiMethods> = z.output<T[M]['params']>

export type MethodResult<M extends MethodName<T>, T extends MethodTable = ApiMethods> = z.output<T[M]['result']>

export type MethodEvent<M extends MethodName<T>, T extends MethodTable = ApiMethods> =
  T[M] extends { readonly event: infer E extends z.ZodType } ? z.output<E> : never

export type MethodInput<M extends MethodName<T>, T extends MethodTable = ApiMethods> =
  T[M] extends { readonly input: infer I extends z.ZodType } ? z.output<I> : never

/** One line per issue, e.g. `params.pid: expected number, received string`. */
export function describeIssues (error: z.ZodError, prefix = ''): string {
  return error.issues.slice(0, 5).map(issue => {
    const path = [prefix, ...issue.path.map(String)].filter(p => p !== '').join('.')
    return path === '' ? issue.message : `${path}: ${issue.message}`
  }).join('; ')
}
