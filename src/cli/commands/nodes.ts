/** `ssi nodes`: the cluster's nodes as this node sees them (membership, load, memory, jobs). */
import { formatAgo, formatBytes, formatLoad, shortAddresses, shortPeerId } from '../format.js'
import { formatTable } from '../table.js'
import type { Command } from 'commander'
import type { NodeInfo } from '../../api/schema.js'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.action(async () => {
    const client = await ctx.client()
    const nodes = await client.call('nodes', {}, { signal: ctx.signal })
    if (ctx.globals().json) {
      ctx.printer.out(JSON.stringify(nodes, null, 2))
      return
    }
    for (const line of renderNodes(nodes, ctx.now())) ctx.printer.out(line)
  })
}

const HEADER = ['NAME', 'ID', 'PEER', 'ADDRESS', 'STATE', 'LOAD', 'RUNQ', 'MEM FREE/TOTAL', 'JOBS', 'LAST SEEN']

/**
 * Table lines, nodes by id. RUNQ is runnable tasks / cpus; LAST SEEN says "self" for this node and
 * "never" for a configured node not heard from since the daemon started (state unknown).
 */
export function renderNodes (nodes: readonly NodeInfo[], nowMs: number): string[] {
  const rows = [...nodes].sort((a, b) => a.id - b.id).map(node => node.state === 'unknown' ? unknownRow(node) : [
    node.name,
    String(node.id),
    shortPeerId(node.peerId),
    shortAddresses(node.addresses),
    node.state,
    formatLoad(node.load),
    `${node.load.runQueue}/${node.load.cpus}`,
    `${formatBytes(node.memory.freeBytes)}/${formatBytes(node.memory.totalBytes)}`,
    String(node.jobs),
    node.self ? 'self' : formatAgo(node.lastSeenMs, nowMs)
  ])
  return formatTable(HEADER, rows, { rightAlign: [1, 8] })
}

function unknownRow (node: NodeInfo): string[] {
  return [node.name, String(node.id), '-', shortAddresses(node.addresses), node.state, '-', '-', '-', '-', 'never']
}
