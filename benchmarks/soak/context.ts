/** State shared by the soak's operations, faults and invariant checks. */
import type { TestCluster } from '../../test/helpers/cluster.js'
import type { NodeApi } from './api.js'
import type { SoakJob } from './jobs.js'
import type { Rng } from './rng.js'

export interface Violation { readonly atMs: number, readonly kind: string, readonly vpid?: number, readonly detail: string }

export interface SoakStats {
  readonly ops: Record<string, number>
  /** Operations the cluster refused or failed (a migration rolled back, a kill after the end): allowed, counted. */
  readonly opErrors: Record<string, number>
  readonly errorSamples: string[]
  readonly faults: Record<string, number>
  readonly violations: Violation[]
  placementChecks: number
}

export interface SoakContext {
  readonly c: TestCluster
  readonly api: NodeApi
  readonly rng: Rng
  readonly nodes: readonly string[]
  readonly startMs: number
  readonly jobs: Map<number, SoakJob>
  /** Nodes whose daemon is not running now. */
  readonly down: Set<string>
  /** vpid → operations in flight on it (migrate, kill). */
  readonly busy: Map<number, number>
  /** Runs in flight: their vpid is not known yet. */
  runsInFlight: number
  readonly stats: SoakStats
  readonly log: (msg: string) => void
}

export function newStats (): SoakStats {
  return { ops: {}, opErrors: {}, errorSamples: [], faults: {}, violations: [], placementChecks: 0 }
}

export function count (table: Record<string, number>, key: string): void { table[key] = (table[key] ?? 0) + 1 }

export function violation (ctx: SoakContext, kind: string, detail: string, vpid?: number): void {
  const v = { atMs: Date.now() - ctx.startMs, kind, vpid, detail }
  ctx.stats.violations.push(v)
  ctx.log(`VIOLATION ${kind}${vpid === undefined ? '' : ` ${vpid}`}: ${detail}`)
}

export function opError (ctx: SoakContext, op: string, err: unknown): void {
  count(ctx.stats.opErrors, op)
  const msg = `${op}: ${err instanceof Error ? err.message : String(err)}`.slice(0, 300)
  if (ctx.stats.errorSamples.length < 40) ctx.stats.errorSamples.push(msg)
  ctx.log(`op error ${msg}`)
}

export function liveNodes (ctx: SoakContext): string[] { return ctx.nodes.filter(n => !ctx.down.has(n)) }

/** A live node to talk to; not from the seeded Rng, whose sequence should depend on the operations only. */
export function anyLiveNode (ctx: SoakContext): string {
  const live = liveNodes(ctx)
  return live[Math.floor(Math.random() * live.length)] ?? ctx.nodes[0] ?? 'n1'
}

/** Marks `vpid` busy while `fn` runs, so placement checks do not judge it mid-operation. */
export async function withBusy<T> (ctx: SoakContext, vpid: number, fn: () => Promise<T>): Promise<T> {
  ctx.busy.set(vpid, (ctx.busy.get(vpid) ?? 0) + 1)
  try { return await fn() } finally {
    const n = (ctx.busy.get(vpid) ?? 1) - 1
    if (n === 0) ctx.busy.delete(vpid); else ctx.busy.set(vpid, n)
  }
}

export const sleep = async (ms: number): Promise<void> => { await new Promise(r => setTimeout(r, ms)) }
