/**
 * `ssi cluster up <config>` / `ssi cluster down <config>`: run every node of a local cluster config as
 * a separate daemon process on this machine, or stop them. Loads the launcher (and config parsing)
 * only when used.
 */
import { formatTable } from '../table.js'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.command('up')
    .description('start every node of a local cluster config as separate daemons')
    .argument('<config>', 'cluster config file (e.g. cluster-configs/local-3.yaml)')
    .option('--node <names...>', 'only these nodes')
    .action(async (configPath: string, opts: { node?: string[] }) => { await up(ctx, configPath, opts.node) })
  cmd.command('down')
    .description('stop the daemons of a local cluster config')
    .argument('<config>', 'cluster config file')
    .action(async (configPath: string) => { await down(ctx, configPath) })
}

async function up (ctx: CliContext, configPath: string, only: string[] | undefined): Promise<void> {
  const [{ loadClusterConfig, findNode }, { clusterUp }] = await Promise.all([import('../../node/config.js'), import('../../node/cluster-launcher.js')])
  const config = await loadClusterConfig(configPath)
  for (const name of only ?? []) findNode(config, name)
  const launched = await clusterUp(config, { only, waitReady })
  if (ctx.globals().json) {
    ctx.printer.out(JSON.stringify(launched, null, 2))
    return
  }
  const rows = launched.map(n => [n.name, String(n.pid), n.started ? 'started' : 'already running', n.socket, n.log])
  for (const line of formatTable(['NODE', 'PID', 'STATUS', 'SOCKET', 'LOG'], rows)) ctx.printer.out(line)
}

async function down (ctx: CliContext, configPath: string): Promise<void> {
  const [{ loadClusterConfig }, { clusterDown }] = await Promise.all([import('../../node/config.js'), import('../../node/cluster-launcher.js')])
  const stopped = await clusterDown(await loadClusterConfig(configPath))
  if (ctx.globals().json) {
    ctx.printer.out(JSON.stringify(stopped, null, 2))
    return
  }
  const rows = stopped.map(n => [n.name, n.pid === undefined ? '-' : String(n.pid), n.pid === undefined ? 'not running' : n.killed ? 'killed (did not stop in time)' : 'stopped'])
  for (const line of formatTable(['NODE', 'PID', 'STATUS'], rows)) ctx.printer.out(line)
}

/** Resolves once the daemon at `socket` answers `status`. */
async function waitReady (socket: string, signal: AbortSignal): Promise<void> {
  const { ControlClient } = await import('../../api/client.js')
  let last: unknown
  while (!signal.aborted) {
    try {
      const client = await ControlClient.connect(socket, { timeoutMs: 1000 })
      try {
        await client.call('status', {}, { timeoutMs: 1000 })
        return
      } finally { client.close() }
    } catch (err) {
      last = err
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }
  throw new Error(`no answer on ${socket}${last instanceof Error ? `: ${last.message}` : ''}`)
}
