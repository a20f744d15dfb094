/**
 * Real local clusters for integration tests: a temp config with free loopback ports and temp state
 * dirs, daemons as separate processes (through the same launcher `ssi cluster up` uses).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { ControlClient } from '../../src/api/client.js'
import { loadClusterConfig } from '../../src/node/config.js'
import { clusterDown, clusterUp, runningPid } from '../../src/node/cluster-launcher.js'
import type { ClusterConfig } from '../../src/node/config.js'

export interface TestCluster {
  readonly dir: string
  readonly config: ClusterConfig
  socket(node: string): string
  call<T = unknown>(node: string, method: string, params?: unknown): Promise<T>
  pid(node: string): Promise<number>
  start(only?: string[]): Promise<void>
  stop(): Promise<void>
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      srv.close(() => { resolve(typeof addr === 'object' && addr != null ? addr.port : 0) })
    })
  })
}

export interface ClusterOptions {
  readonly nodes: number
  readonly name?: string
  readonly keyFile?: string
  readonly extra?: Record<string, unknown>
  /** Use this dir instead of a fresh temp dir (e.g. to share a cluster key). */
  readonly dir?: string
  /** Listen address of node i (1-based); default a free loopback port. */
  readonly listen?: (i: number) => string
}

/** Waits until a control socket answers `status`. */
export async function waitReady (socket: string, signal: AbortSignal): Promise<void> {
  for (;;) {
    signal.throwIfAborted()
    try {
      const c = await ControlClient.connect(socket, { timeoutMs: 1000 })
      try { await c.call('status', {}); return } finally { c.close() }
    } catch {
      await new Promise(r => setTimeout(r, 50))
    }
  }
}

export async function makeCluster (opts: ClusterOptions): Promise<TestCluster> {
  const dir = opts.dir ?? await mkdtemp(join(tmpdir(), 'ssi-test-'))
  const nodes = []
  for (let i = 1; i <= opts.nodes; i++) {
    nodes.push({ name: `n${i}`, id: i, listen: opts.listen?.(i) ?? `/ip4/127.0.0.1/tcp/${await freePort()}`, stateDir: join(dir, `n${i}`), controlSocket: join(dir, `n${i}.sock`) })
  }
  const raw = { cluster: { name: opts.name ?? `t${Math.random().toString(36).slice(2, 10)}`, keyFile: opts.keyFile ?? join(dir, 'cluster.key') }, nodes, ...opts.extra }
  const path = join(dir, 'cluster.yaml')
  await writeFile(path, stringify(raw))
  const config = await loadClusterConfig(path)
  const socket = (node: string): string => join(dir, `${node}.sock`)
  return {
    dir,
    config,
    socket,
    async call<T>(node: string, method: string, params: unknown = {}): Promise<T> {
      const c = await ControlClient.connect(socket(node), { timeoutMs: 5000 })
      try { return await (c.call as (m: string, p: unknown) => Promise<unknown>)(method, params) as T } finally { c.close() }
    },
    async pid (node) {
      const n = config.nodes.find(x => x.name === node)
      const pid = n === undefined ? undefined : await runningPid(n)
      if (pid === undefined) throw new Error(`node ${node} is not running`)
      return pid
    },
    async start (only) {
      await clusterUp(config, { only, waitReady, linkDefaultSocket: false, env: { SSI_LOG_LEVEL: process.env.SSI_LOG_LEVEL ?? 'debug' } })
    },
    async stop () {
      for (const n of config.nodes) {
        const pid = await runningPid(n)
        if (pid !== undefined) try { process.kill(pid, 'SIGCONT') } catch { /* already gone */ }
      }
      await clusterDown(config, 3000)
      if (opts.dir === undefined && process.env.SSI_KEEP_TEST_DIRS === undefined) await rm(dir, { recursive: true, force: true })
    }
  }
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes; returns the value and elapsed ms. */
export async function eventually<T> (check: () => Promise<T | undefined | false>, timeoutMs: number, what: string): Promise<{ value: T, ms: number }> {
  const start = performance.now()
  let last: unknown
  while (performance.now() - start < timeoutMs) {
    try {
      const v = await check()
      if (v !== undefined && v !== false) return { value: v, ms: performance.now() - start }
    } catch (err) { last = err }
    await new Promise(r => setTimeout(r, 25))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last !== undefined ? `: ${String(last)}` : ''}`)
}
