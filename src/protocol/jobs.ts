/**
 * Node-to-node job methods (carried by the `/ssi/rpc/1` protocol): their parameter schemas. Every
 * handler validates its params with these before use. Methods only ever gain optional fields.
 */
import { z } from 'zod'

const vpid = z.number().int().positive().max(Number.MAX_SAFE_INTEGER)
const id = z.number().int().nonnegative().max(0xffffffff)

export const ownerSchema = z.object({
  uid: id, gid: id, groups: z.array(id).max(256), user: z.string().max(64)
}).strict()

export const limitsSchema = z.object({
  memoryBytes: z.number().int().positive().optional(),
  cpus: z.number().positive().max(4096).optional(),
  pids: z.number().int().positive().max(4_194_304).optional()
}).strict()

export const jobStartSchema = z.object({
  vpid,
  owner: ownerSchema,
  argv: z.array(z.string().max(65_536)).min(1).max(4096),
  env: z.record(z.string().max(1024), z.string().max(131_072)),
  cwd: z.string().min(1).max(4096),
  limits: limitsSchema,
  stdin: z.boolean(),
  homeNode: z.string().max(64)
}).strict()

export const vpidParamSchema = z.object({ vpid }).strict()

/** `job.supersede`: the copy of vpid on the called node is stale, the job runs on `node`. */
export const jobSupersedeSchema = z.object({ vpid, node: z.string().min(1).max(64) }).strict()

export const jobSignalSchema = z.object({
  vpid,
  signal: z.string().regex(/^SIG[A-Z0-9]+$/).max(16),
  /** The uid on whose behalf the signal is sent: checked against the job's owner (0 = root). */
  asUid: id
}).strict()

export const jobOutputSchema = z.object({
  vpid,
  follow: z.boolean(),
  /** Byte offsets to start from (default 0: everything retained). */
  stdoutOffset: z.number().int().nonnegative().default(0),
  stderrOffset: z.number().int().nonnegative().default(0)
}).strict()

export const jobStdinSchema = z.object({
  vpid,
  asUid: id,
  data: z.instanceof(Uint8Array).optional(),
  eof: z.boolean().optional()
}).strict()

/** The parts of a job record its home node relies on; the rest passes through as sent. */
export const jobRecordSchema = z.object({
  vpid,
  owner: ownerSchema,
  argv: z.array(z.string().max(65_536)).max(4096),
  node: z.string().max(64),
  homeNode: z.string().max(64),
  state: z.string().max(16),
  createdMs: z.number()
}).passthrough()

export const locationSetSchema = z.object({
  vpid,
  node: z.string().max(64),
  state: z.string().max(16),
  /** The job's full record, kept by the home node so it can report the job lost if its node dies. */
  record: jobRecordSchema.optional()
}).strict()

export type JobStartParams = z.infer<typeof jobStartSchema>
export type JobSignalParams = z.infer<typeof jobSignalSchema>
export type JobOutputParams = z.infer<typeof jobOutputSchema>
export type JobStdinParams = z.infer<typeof jobStdinSchema>
export type LocationSetParams = z.infer<typeof locationSetSchema>

/** Output chunk events of `job.output`. */
export interface OutputEvent { readonly fd: 1 | 2, readonly data: Uint8Array }
