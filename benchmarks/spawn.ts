/**
 * Spawn benchmark: latency of launching `true` on another node end to end (through the CLI and
 * through the control API), next to `unshare --pid --fork true` and `node -e 0` measured in the same
 * run, and the throughput of launching 1,000 short jobs across 3 nodes.
 *
 * The CLI is run as users run it, through bin/ssi (the launcher package.json "bin" names), and also
 * as `node bin/ssi.cjs`. Node's own start-up is measured twice: with the caller's environment and
 * without NODE_EXTRA_CA_CERTS, which Node 20 loads before any JavaScript runs and bin/ssi leaves out
 * (~40 ms where it is set). The CLI and node samples are interleaved, so load that comes and goes
 * hits both alike; `cliOverNodeMs` is the CLI's p50 minus Node's in the same conditions.
 * Run: npx tsx benchmarks/spawn.ts [--runs N]
 */
import '../src/polyfill.js'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { ControlClient } from '../src/api/client.js'
import { summarize } from './lib.js'
import { eventually, makeCluster } from '../test/helpers/cluster.js'
import type { NodeInfo } from '../src/api/schema.js'

process.env.SSI_LOG_LEVEL ??= 'warn'
const runs = Number(process.argv[process.argv.indexOf('--runs') + 1] ?? 200) || 200
const SSI = fileURLToPath(new URL('../bin/ssi', import.meta.url))
const SSI_CJS = fileURLToPath(new URL('../bin/ssi.cjs', import.meta.url))

/** Whether the cgroup2 mount has favordynmods (scripts/provision.sh): without, each job start waits for an RCU grace period. */
function cgroupFavorDynmods (): boolean {
  try {
    return readFileSync('/proc/mounts', 'utf8').split('\n').some(l => l.split(' ')[2] === 'cgroup2' && l.split(' ')[3]?.split(',').includes('favordynmods'))
  } catch {
    return false
  }
}

interface Timed { readonly cmd: string, readonly args: string[], readonly env?: NodeJS.ProcessEnv }

/** CPU ms (user + system) of this process's waited-for children so far (cutime + cstime, in 10 ms ticks). */
function childrenCpuMs (): number {
  const stat = readFileSync('/proc/self/stat', 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[13]) + Number(fields[14])) * 10 // USER_HZ = 100
}

/**
 * Wall time of each command, n times, the commands taking turns; and the mean CPU time of each
 * (user + system, the command's whole process tree), which load on the machine hardly changes.
 */
function timeCommands (commands: Record<string, Timed>, n: number): { wall: Record<string, number[]>, cpuMs: Record<string, number> } {
  const wall: Record<string, number[]> = {}
  const cpu: Record<string, number> = {}
  for (const name of Object.keys(commands)) { wall[name] = []; cpu[name] = 0 }
  for (let i = 0; i < n; i++) {
    for (const [name, { cmd, args, env }] of Object.entries(commands)) {
      const c0 = childrenCpuMs()
      const t0 = performance.now()
      const r = spawnSync(cmd, args, { stdio: 'ignore', env })
      wall[name]?.push(performance.now() - t0)
      cpu[name] = (cpu[name] ?? 0) + childrenCpuMs() - c0
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`)
    }
  }
  const cpuMs = Object.fromEntries(Object.entries(cpu).map(([name, total]) => [name, Math.round(total / n * 10) / 10]))
  return { wall, cpuMs }
}

const withoutExtraCerts = (): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  delete env.NODE_EXTRA_CA_CERTS
  return env
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
  const loadBefore = loadavg()
  const cliArgs = ['--socket', c.socket('n1'), 'run', '--node', 'n2', '--', 'true']
  const t = timeCommands({
    cli: { cmd: SSI, args: cliArgs },
    nodeEmpty: { cmd: process.execPath, args: ['-e', '0'] },
    nodeEmptyNoExtraCerts: { cmd: process.execPath, args: ['-e', '0'], env: withoutExtraCerts() },
    nodeCliCjs: { cmd: process.execPath, args: [SSI_CJS, ...cliArgs] },
    unshare: { cmd: 'unshare', args: ['--pid', '--fork', 'true'] }
  }, runs)
  const cli = t.wall.cli ?? []
  const loadAfter = loadavg()

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
  const nodeS = summarize(t.wall.nodeEmpty ?? [])
  const nodeCleanS = summarize(t.wall.nodeEmptyNoExtraCerts ?? [])
  const round = (x: number): number => Math.round(x * 10) / 10
  const jobsPerSecond = Math.round(total / (launchedMs / 1000))
  console.log(JSON.stringify({
    benchmark: 'spawn',
    runs,
    cgroupFavorDynmods: cgroupFavorDynmods(),
    apiRunOtherNodeTrueMs: apiS,
    cliRunOtherNodeTrueMs: cliS,
    cliOverNodeMs: {
      p50OverNodeEmpty: round(cliS.p50 - nodeS.p50),
      p50OverNodeEmptyNoExtraCerts: round(cliS.p50 - nodeCleanS.p50),
      extraCaCertsSet: process.env.NODE_EXTRA_CA_CERTS !== undefined
    },
    cliPlainNodeSsiCjsMs: summarize(t.wall.nodeCliCjs ?? []),
    // Mean CPU ms per run (±0.1: 10 ms ticks over all runs): what the CLI costs whatever the load.
    cpuMsPerRun: t.cpuMs,
    baselines: {
      unsharePidForkTrueMs: summarize(t.wall.unshare ?? []),
      nodeEmptyMs: nodeS,
      nodeEmptyNoExtraCaCertsMs: nodeCleanS,
      measuredElsewhereForComparison: { srunTrueP50Ms: 29, sshControlMasterTrueMs: 7, sshNewConnectionMs: 190 }
    },
    loadAverage1m: { before: round(loadBefore[0] ?? NaN), after: round(loadAfter[0] ?? NaN) },
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
