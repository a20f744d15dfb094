/** `ssi status`: the cluster, this node, its members by state, jobs and uptime. */
import { formatDuration, shortPeerId } from '../format.js'
import { formatKeyValues } from '../table.js'
import type { Command } from 'commander'
import type { StatusResult } from '../../api/schema.js'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.action(async () => {
    const client = await ctx.client()
    const status = await client.call('status', {}, { signal: ctx.signal })
    if (ctx.globals().json) {
      ctx.printer.out(JSON.stringify(status, null, 2))
      return
    }
    for (const line of renderStatus(status)) ctx.printer.out(line)
  })
}

export function renderStatus (status: StatusResult): string[] {
  const { members, node } = status
  return formatKeyValues([
    ['cluster', status.cluster],
    ['node', `${node.name} (id ${node.id}, peer ${shortPeerId(node.peerId)})`],
    ['members', `${members.alive} alive, ${members.suspect} suspect, ${members.dead} dead (${members.total} total)`],
    ['jobs', String(status.jobs)],
    ['uptime', formatDuration(status.uptimeMs)],
    ['version', status.version]
  ])
}
