/** Value schemas the control-API areas share (src/api/schema.ts); not part of the API itself. */
import { z } from 'zod'

export const count = z.number().int().nonnegative()
export const nonNegative = z.number().finite().nonnegative()
export const nodeId = z.number().int().min(1).max(65_535)

/** Raw bytes (msgpack bin): stdin and output chunks. */
export const bytes = z.custom<Uint8Array>(v => v instanceof Uint8Array, 'must be bytes')

/** A vpid as the user typed it (the daemon parses it). */
export const vpidParam = z.union([z.number().int().positive(), z.string().max(20)])
