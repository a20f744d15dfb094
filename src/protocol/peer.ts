/**
 * The node-to-node wire schema: every message one node sends another, versioned. Kinds only ever gain
 * values at the end; every received frame is size-checked and validated here before anyone uses it.
 */
import { Packr } from 'msgpackr'
import { z } from 'zod'

export const PEER_PROTOCOL_VERSION = 1

/** Largest heartbeat we accept; a real one is ~300 bytes plus ~30-80 per listed peer address. */
export const MAX_HEARTBEAT_BYTES = 16 * 1024
/** Most peer addresses one heartbeat lists (discovery for nodes that know only a bootstrap node). */
export const MAX_HEARTBEAT_PEERS = 32

export class PeerMessageError extends Error {
  static override name = 'PeerMessageError'
  override name = 'PeerMessageError'
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true })

const finite = z.number().finite().nonnegative()

export const heartbeatSchema = z.object({
  v: z.literal(PEER_PROTOCOL_VERSION),
  kind: z.literal('heartbeat'),
  cluster: z.string().max(64),
  name: z.string().max(64),
  id: z.number().int().min(1).max(65_535),
  /** Monotonic per daemon start; lets receivers drop reordered heartbeats. */
  seq: z.number().int().nonnegative(),
  /** Daemon start time (epoch ms): a new value means the node restarted. */
  bootMs: finite,
  sentMs: finite,
  addresses: z.array(z.string().max(256)).max(16),
  load: z.object({
    runQueue: finite, load1: finite, load5: finite, load15: finite, cpus: z.number().int().positive()
  }).strict(),
  memory: z.object({ freeBytes: finite, totalBytes: finite }).strict(),
  jobs: z.number().int().nonnegative(),
  /** Listen addresses of the sender's live peers (added after v1's first release; optional). */
  peers: z.array(z.string().max(256)).max(MAX_HEARTBEAT_PEERS).optional()
}).strict()

export type Heartbeat = z.infer<typeof heartbeatSchema>

export function encodeHeartbeat (hb: Heartbeat): Uint8Array {
  return packr.pack(hb)
}

/** Decodes and validates a heartbeat; throws PeerMessageError saying what was wrong. */
export function decodeHeartbeat (data: Uint8Array): Heartbeat {
  return decodeWith(heartbeatSchema, data, MAX_HEARTBEAT_BYTES, 'heartbeat')
}

/** Size-limits, msgpack-decodes and validates one frame against a schema. */
export function decodeWith<T> (schema: z.ZodType<T>, data: Uint8Array, maxBytes: number, what: string | (() => string)): T {
  // `what` may be a function: a label naming the peer costs a lookup, paid only when a frame is refused.
  const label = (): string => typeof what === 'string' ? what : what()
  if (data.byteLength > maxBytes) {
    throw new PeerMessageError(`${label()} of ${data.byteLength} bytes exceeds the ${maxBytes}-byte limit`)
  }
  let raw: unknown
  try {
    raw = packr.unpack(data)
  } catch (err) {
    throw new PeerMessageError(`${label()} is not valid msgpack: ${(err as Error).message}`, { cause: err })
  }
  const parsed = schema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new PeerMessageError(`invalid ${label()}: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? ''}`)
  }
  return parsed.data
}

export function encodeMessage (msg: unknown): Uint8Array {
  return packr.pack(msg)
}

/** Validates the params of a peer method; throws an InvalidParamsError naming the field. */
export function parseParams<T extends z.ZodType> (schema: T, params: unknown): z.output<T> {
  const r = schema.safeParse(params)
  if (!r.success) {
    const issue = r.error.issues[0]
    throw Object.assign(new Error(`invalid parameters: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? ''}`), { name: 'InvalidParamsError' })
  }
  return r.data
}
