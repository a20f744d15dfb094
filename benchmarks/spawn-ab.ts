/**
 * A/B API spawn latency: one 3-node cluster per build, side by side, the builds taking turns for each
 * `run --node n2 -- true` through n1's control API, so load that comes and goes hits all alike.
 * Prints p50/p99 per build, the CPU its three daemons used per run (user + system ms, which load
 * hardly changes; idle heartbeats included) and the load average.
 * THROUGHPUT=N: also launches N short detached jobs per build (16 at a time, in rounds of 100 the
 * builds take turns at) and prints jobs/s.
 * Run: [RUNS=400] [THROUGHPUT=1000] [EXTRA_FLAGS=--cpu-prof] npx tsx benchmarks/spawn-ab.ts name=/path/to/bin/ssid.js[@extra-json] ...
 */
import '../src/polyfill.js'
import { spawn } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { ControlClient } from '../src/api/client.js'
import { createClusterKey } from '../src/node/identity.js'
import { DAEMON_NODE_FLAGS } from '../src/node/cluster-launcher.js'
import { cpuSeconds, parseVariants, sleep, summarize } from './lib.js'
import type { Variant } from './lib.js'
import { makeCluster, waitReady } from '../test/helpers/cluster.js'
import type { NodeInfo } from '../src/api/schema.js'

const RUNS = Number(process.env.RUNS ?? 400)
/** Extra node flags for the daemons, e.g. --cpu-prof. */
const EXTRA_FLAGS = (process.env.EXTRA_FLAGS ?? '').split(' ').filter(Boolean)

const variants: Variant[] = parseVariants(process.argv.slice(2))

const pids: number[] = []
const dirs: string[] = []
async function up (v: Variant): Promise<{ v: Variant, client: ControlClient, pids: number[] }> {
  const c = await makeCluster({ nodes: 3, extra: v.extra })
  dirs.push(c.dir)
  await createClusterKey(c.config.keyFile)
  const mine: number[] = []
  for (const n of c.config.nodes) {
    await mkdir(n.stateDir, { recursive: true, mode: 0o700 })
    const out = openSync(join(n.stateDir, 'daemon.log'), 'a')
    const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, ...EXTRA_FLAGS, v.ssid, '--config', c.config.path, '--node', n.name], { stdio: ['ignore', out, out], env: { ...process.env, SSI_LOG_LEVEL: process.env.SSI_LOG_LEVEL ?? 'warn' }, cwd: n.stateDir })
    closeSync(out)
    pids.push(child.pid ?? 0)
    mine.push(child.pid ?? 0)
  }
  const sockets = c.config.nodes.map(n => n.controlSocket)
  await Promise.all(sockets.map(async s => { await waitReady(s, AbortSignal.timeout(120_000)) }))
  const client = await ControlClient.connect(c.socket('n1'))
  while ((await (client.call as (m: string, p: unknown) => Promise<NodeInfo[]>)('nodes', {})).filter(x => x.state === 'alive').length < 3) await sleep(100)
  return { v, client, pids: mine }
}

async function runOnce (client: ControlClient): Promise<number> {
  const t0 = performance.now()
  const call = client.stream('run', { argv: ['true'], env: { PATH: '/usr/bin:/bin' }, cwd: '/tmp', node: 'n2' })
  for await (const _ of call) { /* drain events */ }
  const r = await call.result
  if (r.status !== 0) throw new Error(`job exited ${r.status}`)
  return performance.now() - t0
}

/** Launches `n` detached `true` jobs through n1, 16 at a time; resolves with the ms it took. */
async function launchDetached (client: ControlClient, n: number): Promise<number> {
  let next = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < n) {
      next++
      const call = client.stream('run', { argv: ['true'], env: { PATH: '/usr/bin:/bin' }, cwd: '/tmp', detach: true })
      for await (const _ of call) { /* started */ }
      await call.result
    }
  }))
  return performance.now() - t0
}

async function throughput (clusters: Array<{ v: Variant, client: ControlClient }>, total: number): Promise<void> {
  const ms = clusters.map(() => 0)
  for (let done = 0; done < total; done += 100) {
    for (const [j, c] of clusters.entries()) ms[j] = (ms[j] ?? 0) + await launchDetached(c.client, Math.min(100, total - done))
  }
  clusters.forEach((c, j) => { console.log(JSON.stringify({ variant: c.v.name, jobs: total, jobsPerSecond: Math.round(total / ((ms[j] ?? 1) / 1000)), load1m: Math.round((loadavg()[0] ?? NaN) * 100) / 100 })) })
}

try {
  const clusters = await Promise.all(variants.map(up))
  for (const c of clusters) for (let i = 0; i < 20; i++) await runOnce(c.client) // warm up
  const samples = clusters.map(() => [] as number[])
  const load0 = loadavg()[0] ?? NaN
  const cpu = async (c: { pids: number[] }): Promise<number> => (await Promise.all(c.pids.map(cpuSeconds))).reduce((a, b) => a + b, 0)
  const cpu0 = await Promise.all(clusters.map(cpu))
  for (let i = 0; i < RUNS; i++) {
    // Alternate which build goes first, so neither always follows the other.
    const order = i % 2 === 0 ? clusters.map((_, j) => j) : clusters.map((_, j) => clusters.length - 1 - j)
    for (const j of order) samples[j]?.push(await runOnce(clusters[j]?.client as ControlClient))
  }
  const load1 = loadavg()[0] ?? NaN
  const cpu1 = await Promise.all(clusters.map(cpu))
  if (process.env.THROUGHPUT !== undefined) await throughput(clusters, Number(process.env.THROUGHPUT))
  clusters.forEach((c, j) => {
    const daemonCpuMsPerRun = Math.round(((cpu1[j] ?? 0) - (cpu0[j] ?? 0)) / RUNS * 1e4) / 10
    console.log(JSON.stringify({ variant: c.v.name, ...summarize(samples[j] ?? []), daemonCpuMsPerRun, load1m: [Math.round(load0 * 100) / 100, Math.round(load1 * 100) / 100] }))
    c.client.close()
  })
} finally {
  for (const p of pids) try { process.kill(p, 'SIGTERM') } catch { /* gone */ }
  await sleep(3000)
  for (const p of pids) try { process.kill(p, 'SIGKILL') } catch { /* gone */ }
  for (const d of dirs) if (process.env.KEEP === undefined) await rm(d, { recursive: true, force: true }); else console.log(d)
}
