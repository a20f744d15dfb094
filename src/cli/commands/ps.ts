/** `ssi ps`: the jobs of the whole cluster, from every node that answers. */
import { formatAgo, formatBytes, formatCommand, truncate } from '../format.js'
import { formatTable } from '../table.js'
import type { Command } from 'commander'
import type { JobInfo } from '../../api/schema.js'
import type { CliContext } from '../context.js'

interface PsOptions {
  readonly node?: string
  readonly user?: string
  readonly state?: string
}

/** COMMAND width when stdout is not a terminal. */
const DEFAULT_COMMAND_WIDTH = 60
/** COMMAND never gets narrower than this, even on a narrow terminal. */
const MIN_COMMAND_WIDTH = 20

export function register (cmd: Command, ctx: CliContext): void {
  cmd.option('--node <name>', 'only jobs running on this node')
    .option('--user <user>', 'only jobs of this user (name or uid)')
    .option('--state <state>', 'only jobs in this state (starting, running, migrating, exited, killed, oom, failed, lost)')
    .action(async (opts: PsOptions) => {
      const client = await ctx.client()
      const params = {
        ...(opts.node === undefined ? {} : { node: opts.node }),
        ...(opts.user === undefined ? {} : { user: opts.user }),
        ...(opts.state === undefined ? {} : { state: opts.state as JobInfo['state'] })
      }
      const result = await client.call('ps', params, { signal: ctx.signal })
      if (result.unreachable.length > 0) {
        ctx.printer.err(`ssi: warning: no answer from ${result.unreachable.join(', ')}: their jobs are missing below`)
      }
      if (ctx.globals().json) {
        ctx.printer.out(JSON.stringify(result, null, 2))
        return
      }
      for (const line of renderPs(result.jobs, ctx.now(), ctx.columns)) ctx.printer.out(line)
    })
}

const HEADER = ['VPID', 'USER', 'STATE', 'NODE', 'HOME', 'CPU%', 'RSS', 'START']

/**
 * Table lines, one per job in the given order. COMMAND is the last column, cut to fit `columns`
 * (the terminal width) or to 60 characters when there is no terminal.
 */
export function renderPs (jobs: readonly JobInfo[], nowMs: number, columns: number | undefined): string[] {
  const rows = jobs.map(job => {
    const live = job.state === 'running' || job.state === 'migrating'
    return [
      String(job.vpid),
      job.owner.user,
      stateText(job),
      job.node,
      job.homeNode,
      live ? job.cpuPercent.toFixed(1) : '-',
      live ? formatBytes(job.rssBytes) : '-',
      job.startedMs === undefined ? '-' : formatAgo(job.startedMs, nowMs)
    ]
  })
  const lines = formatTable(HEADER, rows, { rightAlign: [0, 5, 6] })
  const width = Math.max(...lines.map(line => line.length))
  const commandWidth = columns === undefined ? DEFAULT_COMMAND_WIDTH : Math.max(MIN_COMMAND_WIDTH, columns - width - 3)
  const commands = ['COMMAND', ...jobs.map(job => truncate(formatCommand(job.argv), commandWidth))]
  return lines.map((line, i) => `${line.padEnd(width)}  ${commands[i] ?? ''}`.trimEnd())
}

/** The state, with the exit code or signal for ended jobs: "exited(1)", "killed(9)". */
function stateText (job: JobInfo): string {
  if (job.fenced === true) return 'fenced'
  if (job.state === 'exited' && job.exit?.code !== undefined) return `exited(${job.exit.code})`
  if (job.state === 'killed' && job.exit?.signal !== undefined) return `killed(${job.exit.signal})`
  return job.state
}
