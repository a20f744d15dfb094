/**
 * The control-API wire schema: the one module that defines what the daemon and its clients say to
 * each other. Every message carries `v` (API_VERSION); message kinds and methods only ever gain values
 * at the end. The daemon validates every received frame with these schemas before use.
 *
 * Runtime zod is for the daemon side (and tests): the CLI imports only the *types* from here (see
 * constants.ts for why), so keep runtime values that the CLI needs in constants.ts.
 *
 * The schemas of each area live in schema-cluster.ts, schema-jobs.ts and schema-migrate.ts; this
 * module is the one the daemon and clients import: envelopes, the method table, all re-exported.
 *
 * Adding a method: add a schema for its params and result (and `event`/`input` for a streaming
 * method) in its area's module and one line to `methods`. The client's `call` and the server's
 * `handle` are typed by it.
 */
import { z } from 'zod'
import { nodeInfoSchema, shutdownResultSchema, statusResultSchema } from './schema-cluster.js'
import {
  jobInfoSchema, killParamsSchema, killResultSchema, logsEventSchema, logsParamsSchema, psParamsSchema, psResultSchema,
  runEventSchema, runInputSchema, runParamsSchema, runResultSchema, vpidParamsSchema
} from './schema-jobs.js'
import {
  checkpointParamsSchema, checkpointResultSchema, migrateEventSchema, migrateParamsSchema, migrateResultSchema,
  restoreLastParamsSchema, restoreParamsSchema, restoreResultSchema
} from './schema-migrate.js'

export * from './constants.js'
export * from './schema-cluster.js'
export * from './schema-jobs.js'
export * from './schema-migrate.js'

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
