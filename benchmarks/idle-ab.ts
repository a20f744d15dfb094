/**
 * A/B idle CPU: two (or more) N-node clusters of different builds run side by side, so machine noise
 * hits both alike; prints per-daemon CPU % over WINDOW_S from /proc/<pid>/stat.
 * Run: npx tsx benchmarks/idle-ab.ts name=/path/to/bin/ssid.js[@extra-json] ...
 */
import '../src/polyfill.js'
import { spawn } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { ControlClient } from '../src/api/client.js'
import { createClusterKey } from '../src/node/identity.js'
import { DAEMON_NODE_FLAGS } from '../src/node/cluster-launcher.js'
import { cpuSeconds, parseVariants, sleep } from './lib.js'
import type { Variant } from './lib.js'
import { makeCluster, waitReady } from '../test/helpers/cluster.js'
import type { NodeInfo } from '../src/api/schema.js'

const N = Number(process.env.N ?? 8)
const WINDOW_S = Number(process.env.WINDOW_S ?? 60)
const EXTRA_FLAGS = (process.env.EXTRA_FLAGS ?? '').split(' ').filter(Boolean)

const variants: Variant[] = parseVariants(process.argv.slice(2))

const pids: number[] = []
const dirs: string[] = []
async function up (v: Variant): Promise<{ v: Variant, pids: number[], sockets: string[], readyToAllAliveMs: number }> {
  const c = await makeCluster({ nodes: N, extra: v.extra })
  dirs.push(c.dir)
  await createClusterKey(c.config.keyFile)
  const mine: number[] = []
  for (const n of c.config.nodes) {
    await mkdir(n.stateDir, { recursive: true })
    const out = openSync(join(n.stateDir, 'daemon.log'), 'a')
    const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, ...EXTRA_FLAGS, v.ssid, '--config', c.config.path, '--node', n.name], { stdio: ['ignore', out, out], env: { ...process.env, SSI_LOG_LEVEL: 'info' }, cwd: n.stateDir })
    closeSync(out)
    pids.push(child.pid ?? 0); mine.push(child.pid ?? 0)
  }
  const sockets = c.config.nodes.map(n => n.controlSocket)
  await Promise.all(sockets.map(async s => { await waitReady(s, AbortSignal.timeout(240_000)) }))
  const allAlive = async (): Promise<boolean> => (await Promise.all(sockets.map(async s => {
    const cl = await ControlClient.connect(s, { timeoutMs: 5000 })
    try { return (await (cl.call as (m: string, p: unknown) => Promise<NodeInfo[]>)('nodes', {})).filter(x => x.state === 'alive').length } finally { cl.close() }
  }))).every(a => a === N)
  const ready = performance.now()
  while (!await allAlive()) await sleep(100)
  return { v, pids: mine, sockets, readyToAllAliveMs: Math.round(performance.now() - ready) }
}

try {
  const clusters = await Promise.all(variants.map(up))
  await sleep(3000)
  const cpu0 = await Promise.all(clusters.map(async c => await Promise.all(c.pids.map(cpuSeconds))))
  const t0 = performance.now()
  await sleep(WINDOW_S * 1000)
  const cpu1 = await Promise.all(clusters.map(async c => await Promise.all(c.pids.map(cpuSeconds))))
  const s = (performance.now() - t0) / 1000
  clusters.forEach((c, i) => {
    const pct = (cpu1[i] ?? []).map((x, j) => Math.round((x - (cpu0[i]?.[j] ?? 0)) / s * 10000) / 100)
    const mean = pct.reduce((a, b) => a + b, 0) / pct.length
    console.log(JSON.stringify({ variant: c.v.name, readyToAllAliveMs: c.readyToAllAliveMs, window: Math.round(s), mean: Math.round(mean * 100) / 100, max: Math.max(...pct), pct }))
  })
} finally {
  for (const p of pids) try { process.kill(p, 'SIGTERM') } catch { /* gone */ }
  await sleep(3000)
  for (const p of pids) try { process.kill(p, 'SIGKILL') } catch { /* gone */ }
  for (const d of dirs) if (process.env.KEEP === undefined) await rm(d, { recursive: true, force: true }); else console.log(d)
}
