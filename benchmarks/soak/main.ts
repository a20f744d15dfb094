/**
 * Churn soak: a local cluster of real daemons on loopback; for a set time, operations chosen at
 * random from a seed (run short and long jobs, some with periodic checkpoints; migrate stop-copy or
 * post-copy; kill with SIGTERM/SIGKILL; SIGKILL a daemon and restart it; kill a whole node and bring
 * it back), with invariants checked throughout and at the end, then a leak scan after teardown.
 * Prints one JSON object; exits 1 if there were violations or leaks.
 * Run: npx tsx benchmarks/soak/main.ts [--seed N] [--duration 60s] [--nodes 4]
 */
import '../../src/polyfill.js'
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseDurationMs } from '../../src/util/units.js'
import { makeCluster } from '../../test/helpers/cluster.js'
import { NodeApi } from './api.js'
import { newStats } from './context.js'
import { Rng } from './rng.js'
import { drive } from './drive.js'
import { findLeaks, keptDumpLogs, retainedCheckpoints } from './leaks.js'
import type { SoakContext } from './context.js'

process.env.SSI_LOG_LEVEL ??= 'info'

function arg (name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? undefined : process.argv[i + 1]
}

const seed = Number(arg('seed') ?? Math.floor(Math.random() * 2 ** 31))
const durationMs = parseDurationMs(arg('duration') ?? '60s')
const nodeCount = Number(arg('nodes') ?? 4)
if (!Number.isSafeInteger(seed) || !(nodeCount >= 2)) throw new Error('usage: soak [--seed N] [--duration 60s] [--nodes 4]')

const log = (msg: string): void => { process.stderr.write(`[soak +${((Date.now() - startMs) / 1000).toFixed(1)}s] ${msg}\n`) }
const startMs = Date.now()
const dir = await mkdtemp(join(tmpdir(), 'ssi-soak-'))
const c = await makeCluster({ nodes: nodeCount, dir, name: `soak${Math.random().toString(36).slice(2, 8)}` })
const ctx: SoakContext = {
  c, api: new NodeApi(n => c.socket(n)), rng: new Rng(seed), nodes: c.config.nodes.map(n => n.name), startMs,
  jobs: new Map(), down: new Set(), busy: new Map(), runsInFlight: 0, stats: newStats(), log
}
log(`seed ${seed}, ${durationMs} ms, ${nodeCount} nodes, cluster ${c.config.name} in ${dir}`)
const loadBefore = loadavg()
let leaks: Awaited<ReturnType<typeof findLeaks>> = []
let retained: string[] = []
let dumpLogs: string[] = []
try {
  await c.start()
  await drive(ctx, durationMs)
} finally {
  await c.stop()
  await new Promise(r => setTimeout(r, 1000))
  leaks = await findLeaks(c.config.name, dir, c.config.nodes.map(n => n.stateDir))
  retained = await retainedCheckpoints(c.config.nodes.map(n => n.stateDir))
  dumpLogs = await keptDumpLogs(c.config.nodes.map(n => n.stateDir))
  // A failed run keeps its daemons' logs (daemon.log per node dir) for whoever looks into it.
  const failed = ctx.stats.violations.length > 0 || leaks.length > 0
  if (process.env.SSI_KEEP_TEST_DIRS === undefined && !failed) await rm(dir, { recursive: true, force: true })
}
const jobs = [...ctx.jobs.values()]
const endings: Record<string, number> = {}
for (const j of jobs) { const k = j.ended === undefined ? 'no-end' : `${j.ended.state}:${j.ended.status}`; endings[k] = (endings[k] ?? 0) + 1 }
const report = {
  benchmark: 'soak',
  seed,
  dir,
  durationMs,
  elapsedMs: Date.now() - startMs,
  nodes: nodeCount,
  operations: ctx.stats.ops,
  operationErrors: { counts: ctx.stats.opErrors, samples: ctx.stats.errorSamples },
  faultsInjected: ctx.stats.faults,
  jobs: { started: jobs.length, migrated: jobs.filter(j => j.migrations > 0).length, endings },
  placementChecks: ctx.stats.placementChecks,
  invariantViolations: { count: ctx.stats.violations.length, details: ctx.stats.violations },
  leakedResources: { count: leaks.length, details: leaks },
  // Kept on purpose, not leaks: held periodic checkpoints of ended jobs (restore --last), failed-dump logs.
  retained: { checkpointsOfEndedJobs: retained.length, failedDumpLogs: dumpLogs.length },
  load: { before: loadBefore.map(x => Math.round(x * 100) / 100), after: loadavg().map(x => Math.round(x * 100) / 100) }
}
console.log(JSON.stringify(report, null, 2))
process.exit(ctx.stats.violations.length > 0 || leaks.length > 0 ? 1 : 0)
