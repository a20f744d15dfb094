/** `ssi inspect VPID`: everything the cluster knows about one job. */
import { parseVpidArg } from '../errors.js'
import { formatAgo, formatBytes, formatCommand, formatLimitBytes } from '../format.js'
import { signalName } from '../signals.js'
import { formatKeyValues } from '../table.js'
import type { Command } from 'commander'
import type { JobInfo } from '../../api/schema.js'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.argument('<vpid>', 'the job')
    .action(async (vpidText: string) => {
      const vpid = parseVpidArg(vpidText)
      const client = await ctx.client()
      const job = await client.call('inspect', { vpid }, { signal: ctx.signal })
      if (ctx.globals().json) {
        ctx.printer.out(JSON.stringify(job, null, 2))
        return
      }
      for (const line of renderJob(job, ctx.now())) ctx.printer.out(line)
    })
}

/** `key  value` lines; fields the job does not have (yet) are left out. */
export function renderJob (job: JobInfo, nowMs: number): string[] {
  const { owner } = job
  const pairs: Array<[string, string | undefined]> = [
    ['vpid', String(job.vpid)],
    ['state', job.state],
    ['command', formatCommand(job.argv)],
    ['user', `${owner.user} (uid ${owner.uid}, gid ${owner.gid})`],
    ['node', job.node === job.homeNode ? job.node : `${job.node} (home ${job.homeNode})`],
    ['cwd', job.cwd],
    ['hostname', job.hostname],
    ['limits', formatLimits(job.limits)],
    ['created', formatTime(job.createdMs, nowMs)],
    ['started', job.startedMs === undefined ? undefined : formatTime(job.startedMs, nowMs)],
    ['ended', job.endedMs === undefined ? undefined : formatTime(job.endedMs, nowMs)],
    ['exit', job.exit === undefined ? undefined : formatExit(job.exit)],
    ['error', job.error],
    ['cpu', `${job.cpuPercent.toFixed(1)}%`],
    ['rss', formatBytes(job.rssBytes)],
    ['stdin', job.stdin ? 'forwarded' : 'none'],
    ['host pid', job.hostPid === undefined ? undefined : String(job.hostPid)],
    ['job dir', job.jobDir],
    ['migration', job.migration === undefined ? undefined : formatMigration(job.migration, nowMs)],
    ['checkpoint', job.checkpoint === undefined ? undefined : formatCheckpoint(job.checkpoint, nowMs)],
    ['recovered', job.recovered === undefined ? undefined : formatRecovery(job.recovered, nowMs)]
  ]
  return formatKeyValues(pairs.filter((pair): pair is [string, string] => pair[1] !== undefined))
}

/** "n1 -> n2 moved 3s ago" plus why, e.g. "n1 -> n2 rolled-back 1m ago: transferring failed: ...". */
function formatMigration (m: NonNullable<JobInfo['migration']>, nowMs: number): string {
  return `${m.from} -> ${m.to} ${m.outcome} ${formatTime(m.atMs, nowMs)}${m.detail === undefined ? '' : `: ${m.detail}`}`
}

/** "every 60s; last on n2 at 2024-...Z (5s ago)". */
function formatCheckpoint (c: NonNullable<JobInfo['checkpoint']>, nowMs: number): string {
  const last = c.node === undefined || c.takenMs === undefined ? 'none yet' : `last on ${c.node} at ${formatTime(c.takenMs, nowMs)}`
  return `every ${c.everyMs / 1000}s; ${last}${c.error === undefined ? '' : `; last attempt failed: ${c.error}`}`
}

/** "lost with n3, restored on n1 <ago>: rolled back to <T> (its last checkpoint)". */
function formatRecovery (r: NonNullable<JobInfo['recovered']>, nowMs: number): string {
  return `lost with ${r.fromNode}, restored on ${r.node} ${formatTime(r.atMs, nowMs)}: rolled back to ${formatTime(r.takenMs, nowMs)} (its last checkpoint)`
}

function formatLimits (limits: JobInfo['limits']): string {
  const parts = [
    limits.memoryBytes === undefined ? undefined : `memory ${formatLimitBytes(limits.memoryBytes)}`,
    limits.cpus === undefined ? undefined : `cpus ${limits.cpus}`,
    limits.pids === undefined ? undefined : `pids ${limits.pids}`
  ].filter(part => part !== undefined)
  return parts.length === 0 ? 'none' : parts.join(', ')
}

/** "code 0", "signal 9 (SIGKILL)", "signal 9 (SIGKILL), out of memory". */
function formatExit (exit: NonNullable<JobInfo['exit']>): string {
  const how = exit.signal !== undefined
    ? `signal ${exit.signal}${withName(signalName(exit.signal))}`
    : `code ${exit.code ?? '?'}`
  return exit.oomKilled ? `${how}, out of memory` : how
}

function withName (name: string | undefined): string {
  return name === undefined ? '' : ` (${name})`
}

/** UTC time and age: "2024-05-01T10:00:00.000Z (3m05s ago)". */
function formatTime (ms: number, nowMs: number): string {
  return `${new Date(ms).toISOString()} (${formatAgo(ms, nowMs)})`
}
