/**
 * Netns clusters for integration tests: every node its own network + UTS namespace on a bridge of
 * its own (through the same launcher `ssi cluster up` uses), and the faults a real cluster meets:
 * partitions (iptables DROP between two nodes, or the node's link down), latency and loss (tc
 * netem), a killed node (SIGKILL of everything in its namespace), a killed daemon, a hung node
 * (SIGSTOP). `heal()` undoes the faults (use it in afterEach), `stop()` removes the cluster and its
 * network (afterAll), and `sweepStaleNetns()` removes what a crashed earlier run left (beforeAll).
 * Test clusters are named `nt<random>`, bridges `ssint<random>`: the sweep only touches those.
 */
import { execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readdir, readFile, rename, stat } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { ChildProcess } from 'node:child_process'
import { ssi } from './cli.js'
import { eventually, makeCluster } from './cluster.js'
import { hostVeth, netnsName, netnsPids, nodeAddress, NETNS_DIR } from '../../src/node/netns/network.js'
import { removeCgroupPrefix } from '../../src/node/netns/cgroups.js'
import type { TestCluster } from './cluster.js'
import type { JobInfo, NodeInfo, PsResult } from '../../src/api/schema.js'

const exec = promisify(execFile)
const TEST_PREFIX = 'nt'
const NETDELAY_SRC = fileURLToPath(new URL('../tools/netdelay.c', import.meta.url))
const NETDELAY_BIN = fileURLToPath(new URL('../../dist/test-tools/netdelay', import.meta.url))

/** Builds test/tools/netdelay.c (gcc, libnetfilter-queue-dev) unless the binary is up to date. */
async function netdelayBinary (): Promise<string> {
  const built = await stat(NETDELAY_BIN).catch(() => undefined)
  if (built !== undefined && built.mtimeMs >= (await stat(NETDELAY_SRC)).mtimeMs) return NETDELAY_BIN
  await mkdir(fileURLToPath(new URL('../../dist/test-tools', import.meta.url)), { recursive: true })
  const tmp = `${NETDELAY_BIN}.${process.pid}`
  try {
    await sh('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-std=gnu11', '-o', tmp, NETDELAY_SRC, '-lnetfilter_queue'])
  } catch (err) {
    throw new Error(`cannot build ${NETDELAY_SRC} (needs gcc and libnetfilter-queue-dev: scripts/provision.sh): ${(err as Error).message}`)
  }
  await rename(tmp, NETDELAY_BIN)
  return NETDELAY_BIN
}

/** Starts netdelay in the namespace and resolves once it listens on its queue. */
async function startNetdelay (nsArgs: string[], delayMs: number, lossPercent: number): Promise<ChildProcess> {
  const child = spawn('nsenter', [...nsArgs, await netdelayBinary(), '0', String(delayMs), String(lossPercent)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once('data', () => { resolve() })
    child.once('exit', code => { reject(new Error(`netdelay exited (${code ?? 'signal'}): ${err}`)) })
  })
  return child
}

export interface NetnsCluster extends TestCluster {
  address(node: string): string
  /** Runs a command inside the node's network namespace; its stdout. */
  exec(node: string, argv: readonly string[]): Promise<string>
  /** Drops all traffic between `a` and `b` (iptables in a's namespace, both directions). */
  partition(a: string, b: string): Promise<void>
  /** Cuts `node` off the bridge (its veth down). */
  isolate(node: string): Promise<void>
  /**
   * Delay (and loss) on every packet the node sends: tc netem where the kernel has it, else
   * (CONFIG_NET_SCH_NETEM unset, as on this machine) an NFQUEUE rule and test/tools/netdelay.c.
   */
  netem(node: string, opts: { delayMs: number, lossPercent?: number }): Promise<void>
  /** SIGKILLs every process of the node: its daemon and its jobs. */
  kill(node: string): Promise<void>
  /** SIGKILLs only the node's daemon: its jobs keep running. */
  killDaemon(node: string): Promise<void>
  /** SIGSTOPs every process of the node; `resume` continues them. */
  hang(node: string): Promise<void>
  resume(node: string): Promise<void>
  /** SIGSTOPs only the node's daemon (its jobs run on); `resume` continues it. */
  hangDaemon(node: string): Promise<void>
  /**
   * Command lines of the processes in the node's network namespace that contain `marker`, leaving
   * out a child whose parent matches too (a shell's fork before it execs carries the same line).
   */
  processesWith(node: string, marker: string): Promise<string[]>
  /** The same processes' states (/proc/<pid>/stat: 'S' sleeping, 'T' stopped, ...). */
  processStates(node: string, marker: string): Promise<string[]>
  /** Undoes every partition, isolation, netem and hang. */
  heal(): Promise<void>
}

async function sh (cmd: string, args: readonly string[]): Promise<string> {
  return (await exec(cmd, args, { timeout: 15_000 })).stdout
}
async function trySh (cmd: string, args: readonly string[]): Promise<void> {
  await sh(cmd, args).catch(() => {})
}

/** A /24 in ssi's 10.213.0.0/16 that no interface here uses yet. */
async function freeSubnet (): Promise<number> {
  const used = await sh('ip', ['-4', '-o', 'addr'])
  for (;;) {
    const x = 100 + Math.floor(Math.random() * 150)
    if (!used.includes(`10.213.${x}.`)) return x
  }
}

/** What is missing to run netns tests here, or undefined. */
export function netnsUnsupported (): string | undefined {
  if (process.getuid?.() !== 0) return 'netns tests need root'
  for (const tool of ['/usr/sbin/ip', '/usr/sbin/tc', '/usr/bin/nsenter', '/usr/bin/unshare']) {
    if (!existsSync(tool) && !existsSync(tool.replace('/usr/sbin', '/sbin'))) return `netns tests need ${tool} (iproute2, util-linux)`
  }
  return undefined
}

export async function makeNetnsCluster (opts: { nodes: number, extra?: Record<string, unknown> }): Promise<NetnsCluster> {
  const id = Math.random().toString(36).slice(2, 8)
  const x = await freeSubnet()
  const cluster = await makeCluster({
    nodes: opts.nodes,
    name: `${TEST_PREFIX}${id}`,
    listen: i => `/ip4/10.213.${x}.${10 + i}/tcp/7100`,
    extra: { netns: { bridge: `ssi${TEST_PREFIX}${id}`, subnet: `10.213.${x}.0/24` }, ...opts.extra }
  })
  const name = cluster.config.name
  const nodeOf = (n: string): { name: string, id: number, listen: string } => {
    const node = cluster.config.nodes.find(c => c.name === n)
    if (node === undefined) throw new Error(`no node ${n}`)
    return node
  }
  const nsArgs = (n: string): string[] => [`--net=${NETNS_DIR}/${netnsName(name, n)}`, '--']
  const faults = { ipt: new Set<string>(), links: new Set<string>(), netem: new Set<string>(), hung: new Set<string>(), hungDaemons: new Map<string, number>() }
  const delayers = new Map<string, ChildProcess>()
  const signalAll = async (n: string, sig: NodeJS.Signals): Promise<void> => {
    for (const pid of await netnsPids(netnsName(name, n))) {
      try { process.kill(pid, sig) } catch { /* gone */ }
    }
  }
  const processRows = async (n: string, marker: string): Promise<Array<{ args: string, state: string }>> => {
    const rows: Array<{ pid: number, ppid: number, args: string, state: string }> = []
    for (const pid of await netnsPids(netnsName(name, n))) {
      const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').join(' ').trim()
      const raw = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
      const stat = raw.slice(raw.lastIndexOf(')') + 2).split(' ') // after "pid (comm) ": state, ppid, ...
      if (args.includes(marker)) rows.push({ pid, ppid: Number(stat[1]), args, state: stat[0] ?? '?' })
    }
    return rows.filter(r => !rows.some(p => p.pid === r.ppid))
  }
  const address = (n: string): string => nodeAddress({ ...nodeOf(n), stateDir: '', controlSocket: '' })
  const self: NetnsCluster = {
    ...cluster,
    address,
    async exec (n, argv) { return await sh('nsenter', [...nsArgs(n), ...argv]) },
    async partition (a, b) {
      faults.ipt.add(a)
      await sh('nsenter', [...nsArgs(a), 'iptables', '-w', '-I', 'INPUT', '-s', address(b), '-j', 'DROP'])
      await sh('nsenter', [...nsArgs(a), 'iptables', '-w', '-I', 'OUTPUT', '-d', address(b), '-j', 'DROP'])
    },
    async isolate (n) {
      faults.links.add(n)
      await sh('ip', ['link', 'set', hostVeth(name, nodeOf(n).id), 'down'])
    },
    async netem (n, o) {
      faults.netem.add(n)
      const loss = o.lossPercent === undefined ? [] : ['loss', `${o.lossPercent}%`]
      try {
        await sh('nsenter', [...nsArgs(n), 'tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', 'netem', 'delay', `${o.delayMs}ms`, ...loss])
        return
      } catch (err) {
        if (!/qdisc kind is unknown/.test((err as { stderr?: string }).stderr ?? '')) throw err
      }
      faults.ipt.add(n)
      delayers.get(n)?.kill('SIGKILL')
      delayers.set(n, await startNetdelay(nsArgs(n), o.delayMs, o.lossPercent ?? 0))
      await sh('nsenter', [...nsArgs(n), 'iptables', '-w', '-A', 'OUTPUT', '-o', 'eth0', '-j', 'NFQUEUE', '--queue-num', '0', '--queue-bypass'])
    },
    async kill (n) { await signalAll(n, 'SIGKILL') },
    async killDaemon (n) { process.kill(await cluster.pid(n), 'SIGKILL') },
    async hang (n) { faults.hung.add(n); await signalAll(n, 'SIGSTOP') },
    async resume (n) {
      faults.hung.delete(n)
      await signalAll(n, 'SIGCONT')
      faults.hungDaemons.delete(n)
    },
    async hangDaemon (n) {
      const pid = await cluster.pid(n)
      faults.hungDaemons.set(n, pid)
      process.kill(pid, 'SIGSTOP')
    },
    async processesWith (n, marker) { return (await processRows(n, marker)).map(r => r.args) },
    async processStates (n, marker) { return (await processRows(n, marker)).map(r => r.state) },
    async heal () {
      for (const n of faults.hung) await signalAll(n, 'SIGCONT')
      for (const pid of faults.hungDaemons.values()) { try { process.kill(pid, 'SIGCONT') } catch { /* gone */ } }
      for (const n of faults.ipt) {
        await trySh('nsenter', [...nsArgs(n), 'iptables', '-w', '-F', 'INPUT'])
        await trySh('nsenter', [...nsArgs(n), 'iptables', '-w', '-F', 'OUTPUT'])
      }
      for (const n of faults.links) await trySh('ip', ['link', 'set', hostVeth(name, nodeOf(n).id), 'up'])
      for (const n of faults.netem) await trySh('nsenter', [...nsArgs(n), 'tc', 'qdisc', 'del', 'dev', 'eth0', 'root'])
      for (const d of delayers.values()) d.kill('SIGKILL')
      delayers.clear()
      Object.values(faults).forEach(s => { s.clear() })
    },
    async stop () {
      await self.heal()
      await cluster.stop()
    }
  }
  return self
}

/**
 * The beforeAll of a netns suite: fails saying what is missing where netns tests cannot run, sweeps
 * what a crashed run left, makes a cluster of `nodes` (its dir open to the jobs' users), runs
 * `beforeStart`, starts every node and waits until each sees all alive. A cluster that fails to
 * start is stopped again.
 */
export async function startNetnsCluster (nodes: number, beforeStart?: () => Promise<void>): Promise<NetnsCluster> {
  const missing = netnsUnsupported()
  if (missing !== undefined) throw new Error(missing)
  await sweepStaleNetns()
  const c = await makeNetnsCluster({ nodes })
  try {
    await chmod(c.dir, 0o755)
    await beforeStart?.()
    await c.start()
    await netnsClient(() => c).allAlive()
  } catch (err) {
    await c.stop().catch(() => {})
    throw err
  }
  return c
}

export interface NetnsClient {
  /** `ssi <args>` against `node`'s control socket. */
  cli(node: string, args: string[], timeoutMs?: number): ReturnType<typeof ssi>
  /** `ssi ps --json` as seen from `node`. */
  ps(node: string): Promise<JobInfo[]>
  /** Waits (40 s at most) until every node sees every node alive. */
  allAlive(): Promise<void>
}

/** The CLI calls netns tests make, on `cluster()` (read at each call: suites make it in beforeAll). */
export function netnsClient (cluster: () => NetnsCluster): NetnsClient {
  const cli = async (node: string, args: string[], timeoutMs = 60_000): ReturnType<typeof ssi> => await ssi(cluster().socket(node), args, { timeoutMs })
  return {
    cli,
    ps: async node => (JSON.parse((await cli(node, ['ps', '--json'])).stdout) as PsResult).jobs,
    async allAlive () {
      const c = cluster()
      const nodes = c.config.nodes.map(n => n.name)
      await eventually(async () => {
        for (const f of nodes) if ((await c.call<NodeInfo[]>(f, 'nodes')).filter(n => n.state === 'alive').length !== nodes.length) return false
        return true
      }, 40_000, 'every node alive')
    }
  }
}

/**
 * Removes test-cluster leftovers of a crashed run: `ssi-nt*` namespaces with no process in them
 * (a live test's namespaces always hold its daemons), their bridges, rules and cgroups.
 */
export async function sweepStaleNetns (): Promise<string[]> {
  const removed: string[] = []
  const all = existsSync(NETNS_DIR) ? await readdir(NETNS_DIR) : []
  for (const ns of all.filter(n => n.startsWith(`ssi-${TEST_PREFIX}`))) {
    if ((await netnsPids(ns)).length > 0) continue
    await trySh('ip', ['netns', 'del', ns])
    await removeCgroupPrefix(ns)
    removed.push(ns)
  }
  const links = existsSync('/sys/class/net') ? await readdir('/sys/class/net') : []
  for (const br of links.filter(l => l.startsWith(`ssi${TEST_PREFIX}`))) {
    const ports = existsSync(`/sys/class/net/${br}/brif`) ? await readdir(`/sys/class/net/${br}/brif`) : []
    if (ports.length > 0) continue
    await trySh('ip', ['link', 'del', br])
    removed.push(br)
    for (const bin of ['iptables', 'iptables-legacy']) {
      const rules = await sh(bin, ['-w', '-S']).catch(() => '')
      for (const line of rules.split('\n').filter(l => l.startsWith('-A ') && l.includes(` ${br} `))) {
        await trySh(bin, ['-w', '-D', ...line.slice(3).split(' ')])
      }
    }
  }
  return removed
}
