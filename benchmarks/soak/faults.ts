/**
 * Faults: a daemon SIGKILLed and restarted (its jobs keep running under their shims and must be
 * re-adopted), and a whole node killed (daemon, shims, CRIU, jobs) and brought back later.
 */
import { eventually } from '../../test/helpers/cluster.js'
import { anyLiveNode, count, liveNodes, opError } from './context.js'
import { killNode } from './host.js'
import type { SoakContext } from './context.js'
import type { NodeInfo } from '../../src/api/schema.js'

/** Marks the jobs a fault on `node` touches: those placed there, and any with an operation in flight. */
async function markVictims (ctx: SoakContext, node: string, nodeKill: boolean): Promise<void> {
  const ps = await ctx.api.call(anyLiveNode(ctx), 'ps', {}).catch(() => undefined)
  const placed = new Map((ps?.jobs ?? []).map(j => [j.vpid, j.node]))
  for (const job of ctx.jobs.values()) {
    if (job.ended !== undefined) continue
    const on = placed.get(job.vpid)
    // Unlisted (the view was incomplete) or on the node: treat it as hit.
    if (on === undefined || on === node) {
      if (nodeKill) job.nodeKilled = true
      else job.daemonRestarts++
    }
    if (ctx.busy.has(job.vpid) || on === undefined) job.riskyFault = true
    if (nodeKill && ctx.runsInFlight > 0) job.riskyFault = true
  }
}

async function waitAllAlive (ctx: SoakContext): Promise<void> {
  await eventually(async () => {
    for (const n of ctx.nodes) {
      const view = await ctx.c.call<NodeInfo[]>(n, 'nodes')
      if (view.filter(x => x.state === 'alive').length !== ctx.nodes.length) return false
    }
    return true
  }, 60_000, 'every node alive again')
}

/** SIGKILL one daemon, leave it down for `downMs`, start it again and wait until everyone sees it. */
export async function restartDaemon (ctx: SoakContext, node: string, downMs: number): Promise<void> {
  const pid = await ctx.c.pid(node)
  await markVictims(ctx, node, false)
  ctx.down.add(node)
  process.kill(pid, 'SIGKILL')
  ctx.log(`fault: daemon of ${node} (pid ${pid}) SIGKILLed, down for ${downMs} ms`)
  await bringBack(ctx, node, downMs, 'daemon-restart')
}

/** Kills the whole node (power cut) and starts its daemon again after `downMs`. */
export async function killWholeNode (ctx: SoakContext, node: string, downMs: number): Promise<void> {
  const n = ctx.c.config.nodes.find(x => x.name === node)
  if (n === undefined) throw new Error(`no node ${node}`)
  const pid = await ctx.c.pid(node)
  await markVictims(ctx, node, true)
  ctx.down.add(node)
  const killed = await killNode(ctx.c.config.name, node, n.stateDir, pid)
  ctx.log(`fault: node ${node} killed (${killed} processes), down for ${downMs} ms`)
  await bringBack(ctx, node, downMs, 'node-kill')
}

async function bringBack (ctx: SoakContext, node: string, downMs: number, kind: string): Promise<void> {
  count(ctx.stats.faults, kind)
  await new Promise(r => setTimeout(r, downMs))
  try {
    await ctx.c.start([node])
    ctx.down.delete(node)
    await waitAllAlive(ctx)
    ctx.log(`fault: ${node} back; alive: ${liveNodes(ctx).join(',')}`)
  } catch (err) {
    ctx.down.delete(node)
    opError(ctx, `${kind}-recovery`, err)
  }
}
