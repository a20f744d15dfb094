/** The soak's main loop: operations at random for the set time, then a drain and the final checks. */
import { eventually } from '../../test/helpers/cluster.js'
import { anyLiveNode, count, sleep, violation } from './context.js'
import { restartDaemon, killWholeNode } from './faults.js'
import { hostProcesses, jobPlacement } from './host.js'
import { checkPlacement } from './invariants.js'
import { killJob, migrateJob, runJob } from './ops.js'
import type { SoakContext } from './context.js'
import type { NodeInfo } from '../../src/api/schema.js'

/** Operations in flight at most at once (2 cores: more would mostly measure the machine). */
const MAX_IN_FLIGHT = 4
/** Long jobs alive at most at once. */
const MAX_LONG = 8

type Op = 'short' | 'long' | 'checkpointed' | 'migrate' | 'kill' | 'daemon-restart' | 'node-kill'

export async function drive (ctx: SoakContext, durationMs: number): Promise<void> {
  await eventually(async () => {
    for (const n of ctx.nodes) if ((await ctx.c.call<NodeInfo[]>(n, 'nodes')).filter(x => x.state === 'alive').length !== ctx.nodes.length) return false
    return true
  }, 60_000, 'every node alive')
  ctx.log('cluster up')
  const waiters = new Set<Promise<void>>()
  const giveUp = new AbortController()
  const inflight = new Set<Promise<void>>()
  let fault: Promise<void> | undefined
  const track = (p: Promise<void>): void => { inflight.add(p); void p.finally(() => inflight.delete(p)) }
  const checker = checkLoop(ctx)
  const end = Date.now() + durationMs
  while (Date.now() < end) {
    await sleep(ctx.rng.int(150, 600))
    if (inflight.size >= MAX_IN_FLIGHT) continue
    const op = chooseOp(ctx, fault !== undefined, 1 - (end - Date.now()) / durationMs)
    if (op === undefined) continue
    if (op === 'daemon-restart' || op === 'node-kill') {
      fault = runFault(ctx, op).finally(() => { fault = undefined })
      track(fault)
    } else {
      track(runOp(ctx, op, waiters, giveUp.signal))
    }
  }
  ctx.log(`time is up: draining ${inflight.size} operations`)
  await Promise.allSettled([...inflight])
  checker.stop()
  await checker.done
  await checkPlacement(ctx)
  await endEveryJob(ctx, waiters, giveUp)
}

function chooseOp (ctx: SoakContext, faultRunning: boolean, progress: number): Op | undefined {
  const faults = ctx.stats.faults
  // Make sure each fault happens at least once per run, whatever the seed.
  if (!faultRunning && progress > 0.25 && faults['daemon-restart'] === undefined) return 'daemon-restart'
  if (!faultRunning && progress > 0.5 && faults['node-kill'] === undefined) return 'node-kill'
  const long = [...ctx.jobs.values()].filter(j => j.ended === undefined && j.kind !== 'short').length
  const op = ctx.rng.weighted<Op>({
    short: 20,
    long: long < MAX_LONG ? 10 : 0,
    checkpointed: long < MAX_LONG ? 4 : 0,
    migrate: 25,
    kill: 7,
    'daemon-restart': 4,
    'node-kill': 1.5
  })
  return faultRunning && (op === 'daemon-restart' || op === 'node-kill') ? undefined : op
}

async function runOp (ctx: SoakContext, op: Op, waiters: Set<Promise<void>>, stop: AbortSignal): Promise<void> {
  if (op === 'short' || op === 'long' || op === 'checkpointed') await runJob(ctx, op, waiters, stop)
  else if (op === 'migrate') await migrateJob(ctx)
  else if (op === 'kill') await killJob(ctx)
}

async function runFault (ctx: SoakContext, op: 'daemon-restart' | 'node-kill'): Promise<void> {
  const node = ctx.rng.pick(ctx.nodes)
  const downMs = op === 'daemon-restart' ? ctx.rng.int(200, 4000) : ctx.rng.int(4000, 8000)
  if (op === 'daemon-restart') await restartDaemon(ctx, node, downMs)
  else await killWholeNode(ctx, node, downMs)
}

/** Placement checks every ~2 s while the soak runs. */
function checkLoop (ctx: SoakContext): { stop: () => void, done: Promise<void> } {
  let stopped = false
  const done = (async () => {
    while (!stopped) {
      await checkPlacement(ctx).catch((err: unknown) => { ctx.log(`placement check failed: ${String(err)}`) })
      await sleep(2000)
    }
  })()
  return { stop: () => { stopped = true }, done }
}

/**
 * SIGKILLs every job still running, waits for every waiter (status and output checked there), and
 * then expects no job process left in any of the cluster's cgroups.
 */
async function endEveryJob (ctx: SoakContext, waiters: Set<Promise<void>>, giveUp: AbortController): Promise<void> {
  const live = [...ctx.jobs.values()].filter(j => j.ended === undefined)
  ctx.log(`ending ${live.length} jobs still running`)
  for (const j of live) j.signals.add('SIGKILL')
  if (live.length > 0) {
    await ctx.api.call(anyLiveNode(ctx), 'kill', { vpids: live.map(j => j.vpid), signal: 'SIGKILL' }).catch((err: unknown) => { ctx.log(`final kill: ${String(err)}`) })
  }
  const timer = setTimeout(() => { giveUp.abort(new Error('the soak gave up waiting')) }, 90_000)
  while (waiters.size > 0) await Promise.allSettled([...waiters])
  clearTimeout(timer)
  count(ctx.stats.ops, 'final-kill')
  const left = await eventually(async () => {
    const m = jobPlacement(await hostProcesses(), ctx.c.config.name)
    return m.size === 0 ? 'none' : undefined
  }, 10_000, 'no job processes left').catch(() => undefined)
  if (left === undefined) {
    const m = jobPlacement(await hostProcesses(), ctx.c.config.name)
    for (const [vpid, nodes] of m) violation(ctx, 'process-after-end', `job processes on ${[...nodes.keys()].join(', ')} after every job ended`, vpid)
  }
}
