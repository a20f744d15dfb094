/** The soak's job operations: run (short, long, with periodic checkpoints), migrate, kill; and each job's waiter. */
import { anyLiveNode, count, liveNodes, opError, sleep, violation, withBusy } from './context.js'
import { jobScript, outputProblem, statusProblem } from './jobs.js'
import { checkOneJob } from './invariants.js'
import type { SoakContext } from './context.js'
import type { JobKind, SoakJob } from './jobs.js'
import type { RunResult } from '../../src/api/schema.js'

/** Starts a job of `kind`; its waiter runs until it ended and checks its status and output. */
export async function runJob (ctx: SoakContext, kind: JobKind, waiters: Set<Promise<void>>, stop: AbortSignal): Promise<void> {
  const lines = kind === 'short' ? ctx.rng.int(3, 20) : ctx.rng.int(120, 300)
  const sleepS = kind === 'short' ? 0.05 : 0.1
  const forced = ctx.rng.chance(0.3) ? ctx.rng.pick(ctx.nodes) : undefined
  const node = forced !== undefined && !ctx.down.has(forced) ? forced : undefined
  ctx.runsInFlight++
  try {
    const r = await ctx.api.run(anyLiveNode(ctx), {
      argv: jobScript(lines, sleepS), env: { PATH: '/usr/bin:/bin' }, cwd: '/tmp', node,
      checkpointEveryMs: kind === 'checkpointed' ? ctx.rng.int(2, 5) * 1000 : undefined
    })
    count(ctx.stats.ops, `run-${kind}`)
    const job: SoakJob = { vpid: r.vpid, kind, lines, signals: new Set(), nodeKilled: false, riskyFault: false, daemonRestarts: 0, migrations: 0 }
    ctx.jobs.set(r.vpid, job)
    const w = followJob(ctx, job, stop).catch((err: unknown) => { violation(ctx, 'waiter', String(err), job.vpid) })
    waiters.add(w)
    void w.finally(() => waiters.delete(w))
  } catch (err) {
    opError(ctx, `run-${kind}`, err)
  } finally {
    ctx.runsInFlight--
  }
}

/** A live job with no operation in flight, preferring long ones (short ones end before a migration). */
function pickJob (ctx: SoakContext): SoakJob | undefined {
  const live = [...ctx.jobs.values()].filter(j => j.ended === undefined && !ctx.busy.has(j.vpid))
  const long = live.filter(j => j.kind !== 'short')
  return long.length > 0 && ctx.rng.chance(0.9) ? ctx.rng.pick(long) : live.length > 0 ? ctx.rng.pick(live) : undefined
}

export async function migrateJob (ctx: SoakContext): Promise<void> {
  const job = pickJob(ctx)
  if (job === undefined) return
  const mode = ctx.rng.chance(0.3) ? 'post-copy' : 'stop-copy'
  const pick = ctx.rng.next()
  await withBusy(ctx, job.vpid, async () => {
    try {
      const info = await ctx.api.call(anyLiveNode(ctx), 'inspect', { vpid: job.vpid })
      if (info.state !== 'running' || ctx.down.has(info.node)) return
      const targets = liveNodes(ctx).filter(n => n !== info.node)
      const target = targets[Math.floor(pick * targets.length)]
      if (target === undefined) return
      const r = await ctx.api.call(anyLiveNode(ctx), 'migrate', { vpid: job.vpid, node: target, mode }, 120_000)
      count(ctx.stats.ops, `migrate-${mode}`)
      job.migrations++
      ctx.log(`migrated ${job.vpid} ${r.from} -> ${r.node} (${mode}, downtime ${r.downtimeMs} ms)`)
      // Right after a confirmed move the job must run on the target only.
      await checkOneJob(ctx, job.vpid, r.node, `after migrating ${r.from} -> ${r.node} (${mode})`)
    } catch (err) {
      opError(ctx, `migrate-${mode}`, err)
    }
  })
}

export async function killJob (ctx: SoakContext): Promise<void> {
  const job = pickJob(ctx)
  if (job === undefined) return
  const signal = ctx.rng.chance(0.5) ? 'SIGTERM' : 'SIGKILL'
  await withBusy(ctx, job.vpid, async () => {
    job.signals.add(signal)
    try {
      const r = await ctx.api.call(anyLiveNode(ctx), 'kill', { vpids: [job.vpid], signal })
      const error = r.results.find(x => x.error !== undefined)?.error
      if (error !== undefined) throw new Error(error)
      count(ctx.stats.ops, `kill-${signal}`)
    } catch (err) {
      opError(ctx, `kill-${signal}`, err)
    }
  })
}

/** `wait` until the job ended, on any live node, surviving daemon restarts; then checks status and output. */
async function followJob (ctx: SoakContext, job: SoakJob, stop: AbortSignal): Promise<void> {
  let lostSeen = 0
  for (;;) {
    if (stop.aborted) { violation(ctx, 'wait', 'no end seen before the soak gave up waiting', job.vpid); return }
    let r: RunResult
    try {
      r = await ctx.api.wait(anyLiveNode(ctx), job.vpid, stop)
    } catch {
      await sleep(300) // the node we asked went down, or the job's node is being restarted
      continue
    }
    // A daemon restart can have the job declared lost before its node re-adopts it: ask again.
    if (r.state === 'lost' && !job.nodeKilled && lostSeen++ < 30) { await sleep(1000); continue }
    job.ended = r
    break
  }
  count(ctx.stats.ops, 'job-ended')
  const r = job.ended
  const sp = statusProblem(job, r)
  if (sp !== undefined) violation(ctx, 'status', `${sp} [${describe(job)}]`, job.vpid)
  await checkOutput(ctx, job, r)
}

function describe (job: SoakJob): string {
  return `${job.kind}, ${job.lines} lines, ${job.migrations} migrations, ${job.daemonRestarts} daemon restarts${job.nodeKilled ? ', node killed' : ''}${job.riskyFault ? ', fault mid-operation' : ''}`
}

async function checkOutput (ctx: SoakContext, job: SoakJob, r: RunResult): Promise<void> {
  let lastErr: unknown
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      const { stdout, stderr } = await ctx.api.logs(anyLiveNode(ctx), job.vpid)
      const problem = outputProblem(job, stdout, stderr, r.state !== 'lost' && r.status === 0)
      if (problem !== undefined) violation(ctx, 'output', `${problem} [${describe(job)}; ended ${r.state} ${r.status}]`, job.vpid)
      count(ctx.stats.ops, 'output-checked')
      return
    } catch (err) {
      lastErr = err
      await sleep(500)
    }
  }
  // A lost job's output may be gone with its node; any other job's output must be readable.
  if (r.state === 'lost') count(ctx.stats.ops, 'output-unreadable-lost')
  else violation(ctx, 'output', `logs unreadable: ${String(lastErr)} [${describe(job)}]`, job.vpid)
}
