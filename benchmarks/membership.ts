/**
 * Membership benchmark: N local daemons (separate processes, real libp2p on loopback).
 * Prints JSON: spawn → all-alive for N = 3 and 8, failure detection for kill and for hang next to the
 * configured timeouts, and idle RSS / CPU per daemon.  Run: npx tsx benchmarks/membership.ts
 */
import '../src/polyfill.js'

process.env.SSI_LOG_LEVEL ??= 'info'
import { clusterUp } from '../src/node/cluster-launcher.js'
import { cpuSeconds, rssBytes, sleep } from './lib.js'
import { makeCluster, waitReady } from '../test/helpers/cluster.js'
import type { NodeInfo } from '../src/api/schema.js'
import type { TestCluster } from '../test/helpers/cluster.js'

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

async function convergence (n: number): Promise<Record<string, number>> {
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
    return { nodes: n, spawnToAllAliveMs: Math.round(allAlive - t0), lastStartedToAllAliveMs: Math.round(Math.max(0, allAlive - lastReady)) }
  } finally {
    await c.stop()
  }
}

async function detection (): Promise<Record<string, unknown>> {
  const c = await makeCluster({ nodes: 3 })
  try {
    await c.start()
    await waitUntil(async () => await alive(c, 'n1') === 3, 30_000)
    await sleep(5000)
    const pids = await Promise.all(['n1', 'n2', 'n3'].map(async x => await c.pid(x)))
    const cpu0 = await Promise.all(pids.map(cpuSeconds))
    await sleep(10_000)
    const cpu1 = await Promise.all(pids.map(cpuSeconds))
    const idle = {
      rssMBPerDaemon: Math.round(Math.max(...await Promise.all(pids.map(rssBytes))) / 1e6),
      cpuPercentOfOneCorePerDaemon: Math.round(Math.max(...cpu1.map((v, i) => (v - (cpu0[i] ?? 0)) / 10 * 100)) * 100) / 100
    }
    const state = async (name: string): Promise<string | undefined> => (await c.call<NodeInfo[]>('n1', 'nodes')).find(x => x.name === name)?.state
    const killAt = performance.now()
    process.kill(await c.pid('n3'), 'SIGKILL')
    await waitUntil(async () => await state('n3') === 'dead', 30_000)
    const killDetectedMs = Math.round(performance.now() - killAt)
    const n2 = await c.pid('n2')
    const stopAt = performance.now()
    process.kill(n2, 'SIGSTOP')
    await waitUntil(async () => await state('n2') !== 'alive', 30_000)
    const hangSuspectMs = Math.round(performance.now() - stopAt)
    await waitUntil(async () => await state('n2') === 'dead', 30_000)
    const hangDeadMs = Math.round(performance.now() - stopAt)
    process.kill(n2, 'SIGCONT')
    const f = c.config.failureDetection
    return { killDetectedMs, hangSuspectMs, hangDeadMs, configured: { heartbeatMs: c.config.gossip.heartbeatMs, ...f }, idle }
  } finally {
    await c.stop()
  }
}

const results = { benchmark: 'membership', convergence: [await convergence(3), await convergence(8)], detection: await detection() }
const d = results.detection as { killDetectedMs: number, hangDeadMs: number, idle: { rssMBPerDaemon: number, cpuPercentOfOneCorePerDaemon: number } }
const eight = results.convergence[1] as { lastStartedToAllAliveMs: number }
console.log(JSON.stringify({
  ...results,
  targets: {
    allAlive8LeqMs3000: eight.lastStartedToAllAliveMs <= 3000,
    killDetectedLeqMs1000: d.killDetectedMs <= 1000,
    hangDetectedLeqMs3000: d.hangDeadMs <= 3000,
    idleRssLeq120MB: d.idle.rssMBPerDaemon <= 120,
    idleCpuLeq2Percent: d.idle.cpuPercentOfOneCorePerDaemon <= 2
  }
}, null, 2))
