/** Control-API handlers of the cluster process namespace: run, ps, kill, wait, logs, inspect. */
import { ownerFromCredentials } from '../caller.js'
import { exitStatusCode, TERMINAL_STATES } from '../../ssi/jobs/record.js'
import { parseVpid } from '../../ssi/vpid.js'
import { JobPermissionError } from '../../ssi/jobs/errors.js'
import type { ControlServer } from '../control-server.js'
import type { ClusterJobs } from '../../ssi/jobs/cluster.js'
import type { JobRecord } from '../../ssi/jobs/record.js'
import type { JobsConfig } from '../config.js'
import type { JobInfo, ParsedParams, RunEvent, RunInput, RunResult } from '../../api/schema.js'
import type { MigrationSummary } from '../../protocol/migrate.js'
import { migrationEventSchema } from '../../protocol/migrate.js'

/** Optional extensions of run and inspect (periodic checkpoints: src/node/handlers/checkpoint.ts). */
export interface JobHandlerHooks {
  /** After a job started (before any output): e.g. schedule its periodic checkpoints. */
  readonly started?: (job: JobRecord, params: ParsedParams<'run'>) => Promise<void>
  /** Adds fields to `inspect`'s answer. */
  readonly inspect?: (job: JobInfo, signal: AbortSignal) => Promise<JobInfo>
}

export function registerJobHandlers (control: ControlServer, jobs: ClusterJobs, defaults: JobsConfig, hooks: JobHandlerHooks = {}): void {
  control.handle('run', async (p, ctx) => {
    const owner = await ownerFromCredentials(ctx.caller)
    const limits = {
      memoryBytes: p.memoryBytes ?? defaults.memory,
      cpus: p.cpus ?? defaults.cpus,
      pids: p.pids ?? defaults.pids
    }
    const req = { argv: p.argv, env: p.env, cwd: p.cwd, limits, stdin: p.stdin, node: p.node }
    const started = async (job: JobRecord): Promise<void> => {
      await hooks.started?.(job, p)
      await ctx.emit({ kind: 'started', vpid: job.vpid, node: job.node })
    }
    if (p.detach) {
      const job = await jobs.run(req, owner, ctx.signal)
      await started(job)
      return toRunResult(job)
    }
    let vpid = 0
    // Start and output in one peer call (jobs.runAttached); output is passed on after `started`.
    const last = await jobs.runAttached(req, owner, {
      started: async (job) => {
        vpid = job.vpid
        await started(job)
        // Runs until the client stops sending; it never throws, so nothing needs to await it.
        void forwardInputs(jobs, job, ctx.caller.uid, ctx.inputs, async (e) => { await ctx.emit(e) })
      },
      onChunk: async (e) => { await ctx.emit({ kind: 'output', fd: e.fd, data: e.data }) },
      onCheckpointed: async (rec) => { await ctx.emit(checkpointedEvent(rec)) }
    }, ctx.signal)
    // The output's end normally brings the final record along; otherwise (lost, moved) wait for it.
    const final = last !== undefined && isFinal(last) ? last : await jobs.wait(vpid, ctx.signal)
    return toRunResult(final)
  })
  control.handle('ps', async (p, ctx) => await jobs.ps(p, ctx.signal))
  control.handle('inspect', async (p, ctx) => {
    const job = await jobs.inspect(parseVpid(p.vpid), ctx.signal)
    return hooks.inspect === undefined ? job : await hooks.inspect(job, ctx.signal)
  })
  control.handle('wait', async (p, ctx) => toRunResult(await jobs.wait(parseVpid(p.vpid), ctx.signal)))
  control.handle('kill', async (p, ctx) => {
    const results = await Promise.all(p.vpids.map(async v => {
      try {
        return { vpid: v, node: await jobs.kill(parseVpid(v), p.signal as NodeJS.Signals, ctx.caller.uid, ctx.signal) }
      } catch (err) {
        return { vpid: v, error: (err as Error).message }
      }
    }))
    return { results }
  })
  control.handle('migrate', async (p, ctx) => {
    const onEvent = async (e: unknown): Promise<void> => {
      const event = migrationEventSchema.safeParse(e) // progress only: a malformed one is dropped
      if (event.success) await ctx.emit(event.data)
    }
    const r = await jobs.migrate(parseVpid(p.vpid), p.node, ctx.caller.uid, ctx.signal, { mode: p.mode, onEvent }) as MigrationSummary
    return {
      vpid: r.vpid, from: r.from, node: r.target, checkMs: r.checkMs, dumpMs: r.dumpMs, transferMs: r.transferMs, restoreMs: r.restoreMs, downtimeMs: r.downtimeMs, bytes: r.bytes, bytesDuringDump: r.bytesDuringDump, freezeMs: r.freezeMs, frozenMs: r.frozenMs,
      mode: r.mode, modeReason: r.modeReason, pullMs: r.pullMs, pageBytes: r.pageBytes, totalMs: r.totalMs
    }
  })
  control.handle('logs', async (p, ctx) => {
    const vpid = parseVpid(p.vpid)
    // A job's output is private to its owner (and root), like the files it writes; ps/inspect are public, like ps(1).
    if (ctx.caller.uid !== 0) {
      const { owner } = await jobs.inspect(vpid, ctx.signal)
      if (owner.uid !== ctx.caller.uid) throw new JobPermissionError(`permission denied: job ${vpid} belongs to ${owner.user} (uid ${owner.uid}); only its owner or root may read its output`)
    }
    await jobs.output(vpid, p.follow, async (e) => { await ctx.emit({ kind: 'output', fd: e.fd, data: e.data }) }, ctx.signal, undefined, async (rec) => { await ctx.emit(checkpointedEvent(rec)) })
    return {}
  })
}

/** What a follower is told when the job stops for a checkpoint (the record's note, else its node now). */
function checkpointedEvent (rec: JobRecord): { kind: 'checkpointed', vpid: number, node: string, dir?: string, atMs: number } {
  const to = rec.checkpointedTo
  return { kind: 'checkpointed', vpid: rec.vpid, node: to?.node ?? rec.node, ...(to?.dir === undefined ? {} : { dir: to.dir }), atMs: to?.atMs ?? Date.now() }
}

/**
 * How long a failed stdin write waits for the job to end, ms: the job's own end (its init gone,
 * the FIFO with it) explains the failure, and the client is told only about one it does not.
 */
const STDIN_ERROR_GRACE_MS = 1000

async function endsWithin (jobs: ClusterJobs, vpid: number, ms: number): Promise<boolean> {
  try {
    await jobs.wait(vpid, AbortSignal.timeout(ms))
    return true
  } catch {
    return false
  }
}

/**
 * Relays the attached client's stdin and signals (Ctrl-C) to the job until the client stops sending.
 * A failed stdin write ends stdin forwarding and, unless the job ended meanwhile, is told to the
 * client (e.g. the job's node is unreachable); inputs are still read, so signals keep reaching the
 * job (unread inputs would pause the whole connection).
 */
async function forwardInputs (jobs: ClusterJobs, job: JobRecord, uid: number, inputs: AsyncIterable<unknown>, emit: (e: RunEvent) => Promise<void>): Promise<void> {
  let node: string | undefined = job.node // follows the job when it migrates (jobs.stdin answers where the bytes went); undefined: stdin closed
  try {
    for await (const raw of inputs) {
      const input = raw as RunInput
      if (input.signal !== undefined) await jobs.kill(job.vpid, input.signal as NodeJS.Signals, uid).catch(() => {})
      if (node === undefined || (input.stdin === undefined && input.eof !== true)) continue
      try {
        node = await jobs.stdin(job.vpid, uid, input.stdin, input.eof === true, node)
      } catch (err) {
        node = undefined
        if (!await endsWithin(jobs, job.vpid, STDIN_ERROR_GRACE_MS)) await emit({ kind: 'stdin-closed', message: (err as Error).message.slice(0, 1000) }).catch(() => {})
      }
    }
  } catch { /* the client left: nothing more to forward */ }
}

/** Ended for good (not merely moved to another node). */
function isFinal (job: JobRecord): boolean {
  return TERMINAL_STATES.has(job.state) && job.state !== 'moved'
}

function toRunResult (job: JobRecord): RunResult {
  return {
    vpid: job.vpid,
    node: job.node,
    state: job.state,
    exit: job.exit,
    status: job.exit === undefined ? (job.state === 'failed' || job.state === 'lost' ? 255 : 0) : exitStatusCode(job.exit),
    error: job.error,
    limits: job.limits
  }
}
