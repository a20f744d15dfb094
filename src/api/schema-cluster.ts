/** Control-API schemas of the cluster and its nodes: status, nodes, shutdown (entry point: schema.ts). */
import { z } from 'zod'
import { count, nodeId, nonNegative } from './schema-values.js'

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

/** `shutdown`: the node whose daemon is stopping. */
export const shutdownResultSchema = z.object({ node: z.string().max(64) })
