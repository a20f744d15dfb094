/**
 * Spawn benchmark: latency of launching `true` on another node end to end (through the CLI and
 * through the control API), next to `unshare --pid --fork true` and `node -e 0` measured in the same
 * run, and the throughput of launching 1,000 short jobs across 3 nodes.
 * Run: npx tsx benchmarks/spawn.ts [--runs N]
 */
import '../src/polyfill.js'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ControlClient } from '../src/api/client.js'
import { summarize } from './lib.js'
import { eventually, makeCluster } from '../test/helpers/cluster.js'
import type { NodeInfo } from '../src/api/schema.js'

process.env.SSI_LOG_LEVEL ??= 'warn'
const runs = Number(process.argv[process.argv.indexOf('--runs') + 1] ?? 200) || 200
const SSI = fileURLToPath(new URL('../bin/ssi.cjs', import.meta.url))

/** Whether the cgroup2 mount has favordynmods (scripts/provision.sh): without, each job start waits for an RCU grace period. */
function cgroupFavorDynmods (): boolean {
  try {
    return readFileSync('/proc/mounts', 'utf8').split('\n').some(l => l.split(' ')[2] === 'cgroup2' && l.split(' ')[3]?.split(',').includes('favordynmods'))
  } catch {
    return false
  }
}

function timeCommand (cmd: string, args: string[], n: number): number[] {
  const samples: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    const r = spawnSync(cmd, args, { stdio: 'ignore' })
    samples.push(performance.now() - t0)
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`)
  }
  return samples
}

const c = await makeCluster({ nodes: 3 })
try {
  await c.start()
  await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 3, 20_000, 'cluster')
  const client = await ControlClient.connect(c.socket('n1'))
  const runParams = { argv: ['true'], env: { PATH: '/usr/bin:/bin' }, cwd: '/tmp', node: 'n2' }
  const api: number[] = []
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    const call = client.stream('run', runParams)
    for await (const _ of call) { /* drain events */ }
    const r = await call.result
    api.push(performance.now() - t0)
    if (r.status !== 0) throw new Error(`job exited ${r.status}`)
  }
  const cli = timeCommand(process.execPath, [SSI, '--socket', c.socket('n1'), 'run', '--node', 'n2', '--', 'true'], runs)
  const unshare = timeCommand('unshare', ['--pid', '--fork', 'true'], runs)
  const nodeStart = timeCommand(process.execPath, ['-e', '0'], runs)

  const total = 1000
  const concurrency = 16
  let next = 0
  const t0 = performance.now()
  const vpids: number[] = []
  await Promise.all(Array.from({ length: concurrency }, async () => {
    const own = await ControlClient.connect(c.socket('n1'))
    while (next < total) {
      next++
      const call = own.stream('run', { argv: ['true'], env: { PATH: '/usr/bin:/bin' }, cwd: '/tmp', detach: true })
      for await (const _ of call) { /* started */ }
      vpids.push((await call.result).vpid)
    }
    own.close()
  }))
  const launchedMs = performance.now() - t0
  const ps = await client.call('ps', {})
  const placed: Record<string, number> = {}
  for (const j of ps.jobs) if (vpids.includes(j.vpid)) placed[j.node] = (placed[j.node] ?? 0) + 1
  client.close()
  const apiS = summarize(api)
  const cliS = summarize(cli)
  const jobsPerSecond = Math.round(total / (launchedMs / 1000))
  console.log(JSON.stringify({
    benchmark: 'spawn',
    runs,
    cgroupFavorDynmods: cgroupFavorDynmods(),
    apiRunOtherNodeTrueMs: apiS,
    cliRunOtherNodeTrueMs: cliS,
    baselines: {
      unsharePidForkTrueMs: summarize(unshare),
      nodeEmptyMs: summarize(nodeStart),
      measuredElsewhereForComparison: { srunTrueP50Ms: 29, sshControlMasterTrueMs: 7, sshNewConnectionMs: 190 }
    },
    throughput: { jobs: total, concurrency, launchedMs: Math.round(launchedMs), jobsPerSecond, placement: placed },
    targets: {
      apiP50Leq20: apiS.p50 <= 20,
      apiP99Leq60: apiS.p99 <= 60,
      cliP50Leq100: cliS.p50 <= 100,
      jobsPerSecondGeq100: jobsPerSecond >= 100
    }
  }, null, 2))
} finally {
  await c.stop()
}
