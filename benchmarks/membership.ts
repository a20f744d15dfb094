/**
 * Membership benchmark: N local daemons (separate processes, real libp2p on loopback).
 * Prints JSON: spawn → all-alive for N = 3 and 8; idle CPU % of one core and RSS of every daemon
 * for N = 3 and 8 (from /proc/<pid>/stat over IDLE_S seconds after convergence); failure detection
 * for kill and for hang, and rejoin after a daemon restart, next to the configured periods.
 * Baseline in the same run: the CPU an idle `node -e 'setInterval(()=>{},1000)'` uses over the same
 * window (what any Node process costs), so the daemon's own share can be told from machine noise.
 * Run: npx tsx benchmarks/membership.ts   (SSI_BENCH_IDLE_S=20 by default)
 */
import '../src/polyfill.js'

process.env.SSI_LOG_LEVEL ??= 'info'
import { spawn } from 'node:child_process'
import { clusterUp } from '../src/node/cluster-launcher.js'
import { cpuSeconds, rssBytes, sleep } from './lib.js'
import { makeCluster, waitReady } from '../test/helpers/cluster.js'
import type { NodeInfo } from '../src/api/schema.js'
import type { TestCluster } from '../test/helpers/cluster.js'

const IDLE_S = Number(process.env.SSI_BENCH_IDLE_S ?? 20)

const alive = async (c: TestCluster, node: string): Promise<number> =>
  (await c.call<NodeInfo[]>(node, 'nodes')).filter(n => n.state === 'alive').length

async function waitUntil (check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const t0 = performance.now()
  while (performance.now() - t0 < timeoutMs) {
    if (await check().catch(() => false)) return performance.now() - t0
    await sleep(10)
  }
  throw new Error('timed out')
}

const round2 = (x: number): number => Math.round(x * 100) / 100

/** CPU % of one core and RSS of each pid over IDLE_S seconds. */
async function idleUsage (pids: number[]): Promise<{ cpuPercent: number[], rssMB: number[] }> {
  const cpu0 = await Promise.all(pids.map(cpuSeconds))
  const t0 = performance.now()
  await sleep(IDLE_S * 1000)
  const cpu1 = await Promise.all(pids.map(cpuSeconds))
  const s = (performance.now() - t0) / 1000
  return {
    cpuPercent: cpu1.map((v, i) => round2((v - (cpu0[i] ?? 0)) / s * 100)),
    rssMB: (await Promise.all(pids.map(rssBytes))).map(b => Math.round(b / 1e6))
  }
}

/** The baseline: a Node process that only runs a 1 s timer, measured like a daemon. */
async function idleNodeBaseline (): Promise<{ cpuPercent: number, rssMB: number }> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
  try {
    await sleep(1000)
    const u = await idleUsage([child.pid ?? 0])
    return { cpuPercent: u.cpuPercent[0] ?? NaN, rssMB: u.rssMB[0] ?? NaN }
  } finally {
    child.kill()
  }
}

async function convergenceAndIdle (n: number): Promise<Record<string, unknown>> {
  const c = await makeCluster({ nodes: n })
  try {
    const t0 = performance.now()
    let lastReady = 0
    await clusterUp(c.config, {
      waitReady: async (socket, signal) => { await waitReady(socket, signal); lastReady = Math.max(lastReady, performance.now()) },
      linkDefaultSocket: false
    })
    const names = c.config.nodes.map(x => x.name)
    await waitUntil(async () => (await Promise.all(names.map(async x => await alive(c, x)))).every(a => a === n), 60_000)
    const allAlive = performance.now()
    await sleep(2000) // let start-up work (identify, first dials) settle
    const idle = await idleUsage(await Promise.all(names.map(async x => await c.pid(x))))
    return {
      nodes: n,
      spawnToAllAliveMs: Math.round(allAlive - t0),
      lastStartedToAllAliveMs: Math.round(Math.max(0, allAlive - lastReady)),
      idle: { seconds: IDLE_S, ...idle, maxCpuPercent: Math.max(...idle.cpuPercent), maxRssMB: Math.max(...idle.rssMB) }
    }
  } finally {
    await c.stop()
  }
}

async function detection (): Promise<Record<string, unknown>> {
  const c = await makeCluster({ nodes: 3 })
  try {
    await c.start()
    await waitUntil(async () => await alive(c, 'n1') === 3, 30_000)
    const state = async (from: string, name: string): Promise<string | undefined> => (await c.call<NodeInfo[]>(from, 'nodes')).find(x => x.name === name)?.state
    const killAt = performance.now()
    process.kill(await c.pid('n3'), 'SIGKILL')
    await waitUntil(async () => await state('n1', 'n3') === 'dead', 30_000)
    const killDetectedMs = Math.round(performance.now() - killAt)
    // Rejoin: from the restarted daemon answering on its socket to every node seeing all alive.
    await c.start(['n3'])
    const restartedAt = performance.now()
    await waitUntil(async () => (await Promise.all(['n1', 'n2', 'n3'].map(async x => await alive(c, x)))).every(a => a === 3), 30_000)
    const rejoinAfterRestartMs = Math.round(performance.now() - restartedAt)
    const n2 = await c.pid('n2')
    const stopAt = performance.now()
    process.kill(n2, 'SIGSTOP')
    await waitUntil(async () => await state('n1', 'n2') !== 'alive', 30_000)
    const hangSuspectMs = Math.round(performance.now() - stopAt)
    await waitUntil(async () => await state('n1', 'n2') === 'dead', 30_000)
    const hangDeadMs = Math.round(performance.now() - stopAt)
    process.kill(n2, 'SIGCONT')
    const contAt = performance.now()
    await waitUntil(async () => await state('n1', 'n2') === 'alive', 30_000)
    const aliveAfterSigcontMs = Math.round(performance.now() - contAt)
    return { killDetectedMs, rejoinAfterRestartMs, hangSuspectMs, hangDeadMs, aliveAfterSigcontMs }
  } finally {
    await c.stop()
  }
}

const probe = await makeCluster({ nodes: 1 })
const configured = { heartbeatMs: probe.config.gossip.heartbeatMs, ...probe.config.failureDetection }
await probe.stop()
const baseline = await idleNodeBaseline()
const convergence = [await convergenceAndIdle(3), await convergenceAndIdle(8)] as Array<{ lastStartedToAllAliveMs: number, idle: { maxCpuPercent: number, maxRssMB: number } }>
const d = await detection() as { killDetectedMs: number, hangDeadMs: number, rejoinAfterRestartMs: number }
const [three, eight] = convergence
console.log(JSON.stringify({
  benchmark: 'membership',
  configured,
  baselineIdleNodeProcess: baseline,
  convergence,
  detection: d,
  targets: {
    allAlive8LeqMs3000: (eight?.lastStartedToAllAliveMs ?? Infinity) <= 3000,
    killDetectedLeqMs1000: d.killDetectedMs <= 1000,
    hangDetectedLeqMs3000: d.hangDeadMs <= 3000,
    idleRssLeq120MB: Math.max(three?.idle.maxRssMB ?? Infinity, eight?.idle.maxRssMB ?? Infinity) <= 120,
    idleCpuLeq2Percent: Math.max(three?.idle.maxCpuPercent ?? Infinity, eight?.idle.maxCpuPercent ?? Infinity) <= 2
  }
}, null, 2))
