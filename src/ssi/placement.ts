/**
 * Placement policies: pure functions over a cluster view, so the simulator can run them unchanged.
 */
import type { NodeView } from './ports.js'

export interface PlacementRequest {
  /** Memory the job may use (its limit), if known: nodes with less available are skipped. */
  readonly memoryBytes?: number
}

export interface PlacementPolicy {
  readonly name: string
  /** Picks a node name, or undefined when no alive node fits. `recent` counts placements not yet visible in gossiped load. */
  pick(nodes: readonly NodeView[], request: PlacementRequest, recent: ReadonlyMap<string, number>): string | undefined
}

/** Load per CPU, counting runnable tasks, running jobs and jobs just placed there. */
export function loadScore (n: NodeView, recent: number): number {
  return (Math.max(n.load.runQueue, n.jobs) + recent) / Math.max(1, n.load.cpus)
}

export const leastLoaded: PlacementPolicy = {
  name: 'least-loaded',
  pick (nodes, request, recent) {
    const fits = nodes.filter(n => n.state === 'alive' && (request.memoryBytes === undefined || n.memory.freeBytes >= request.memoryBytes))
    let best: NodeView | undefined
    let bestScore = Infinity
    for (const n of fits) {
      // Prefer the local node on ties: no network hop for the launch.
      const score = loadScore(n, recent.get(n.name) ?? 0) - (n.self ? 1e-9 : 0)
      if (score < bestScore) { best = n; bestScore = score }
    }
    return best?.name
  }
}

/** Counts placements per node for `windowMs`, until gossiped load catches up with them. */
export class RecentPlacements {
  private readonly events: Array<{ node: string, at: number }> = []
  constructor (private readonly windowMs: number, private readonly now: () => number = Date.now) {}

  add (node: string): void { this.events.push({ node, at: this.now() }) }

  counts (): Map<string, number> {
    const cutoff = this.now() - this.windowMs
    while (this.events.length > 0 && (this.events[0]?.at ?? 0) < cutoff) this.events.shift()
    const m = new Map<string, number>()
    for (const e of this.events) m.set(e.node, (m.get(e.node) ?? 0) + 1)
    return m
  }
}
