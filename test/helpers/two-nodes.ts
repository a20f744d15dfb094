/** A 2-node cluster for migration tests, with per-daemon environments, and its teardown. */
import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ssi } from './cli.js'
import { eventually, makeCluster } from './cluster.js'
import type { TestCluster } from './cluster.js'
import type { JobInfo, NodeInfo, PsResult } from '../../src/api/schema.js'

export interface TwoNodesOptions {
  /** Config on top of the test defaults (e.g. `{ migration: { ... } }`). */
  readonly extra?: Record<string, unknown>
  /** Environment of n1's daemon only (e.g. SSI_TEST_FAULTS). */
  readonly n1env?: Record<string, string>
  /** Environment of n2's daemon only, given the cluster's dir. */
  readonly n2env?: (dir: string) => Record<string, string>
}

/** Starts n1 then n2 and waits until n1 sees both alive. Needs root (CRIU). */
export async function twoNodes (opts: TwoNodesOptions = {}): Promise<TestCluster> {
  if (process.getuid?.() !== 0) throw new Error('migration tests need root (CRIU)')
  const c = await makeCluster({ nodes: 2, ...(opts.extra === undefined ? {} : { extra: opts.extra }) })
  const startWith = async (node: string, vars: Record<string, string>): Promise<void> => {
    const saved = Object.fromEntries(Object.keys(vars).map(k => [k, process.env[k]]))
    Object.assign(process.env, vars)
    try { await c.start([node]) } finally {
      for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v }
    }
  }
  await startWith('n1', opts.n1env ?? {})
  await startWith('n2', opts.n2env?.(c.dir) ?? {})
  await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 30_000, '2 alive')
  return c
}

/** Restarts a killed node (so its jobs can be ended), kills and reaps `leftover` jobs, stops the cluster. */
export async function tearDown (c: TestCluster, leftover: number[]): Promise<void> {
  for (const node of ['n1', 'n2']) if (!existsSync(c.socket(node))) await c.start([node]).catch(() => {})
  if (leftover.length > 0) await ssi(c.socket('n1'), ['kill', '-KILL', ...leftover.map(String)]).catch(() => {})
  for (const v of leftover.splice(0)) await ssi(c.socket('n1'), ['wait', String(v)], { timeoutMs: 10_000 }).catch(() => {})
  await c.stop()
}

/** `ssi ps` on `node`'s view of job vpid. */
export async function psJob (c: TestCluster, node: string, vpid: number): Promise<JobInfo | undefined> {
  return (JSON.parse((await ssi(c.socket(node), ['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid)
}

/** Where job vpid's cgroups on `node` are or would be, one dir per cgroup (v1) mount, the pids controller's first. */
export async function jobCgroupDirs (c: TestCluster, node: string, vpid: number): Promise<string[]> {
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter(l => l.includes(' cgroup '))
  mounts.sort((a, b) => Number(b.includes('pids')) - Number(a.includes('pids')))
  return mounts.map(l => join(l.split(' ')[4] ?? '', `ssi-${c.config.name}-${node}`, String(vpid)))
}

/** Pids of the CRIU processes whose command line names `path` (e.g. a restore's images dir). */
export async function criuUsing (path: string): Promise<number[]> {
  const pids: number[] = []
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue
    const argv = (await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')).split('\0')
    if (argv.some(a => /(^|\/)criu$/.test(a)) && argv.includes(path)) pids.push(Number(name))
  }
  return pids
}
