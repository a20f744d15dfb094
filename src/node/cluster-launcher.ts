/**
 * `ssi cluster up/down`: runs every node of a local cluster config as a separate daemon process on
 * this machine (each with its own state dir, log file and control socket), and stops them again.
 */
import { spawn } from 'node:child_process'
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs'
import { mkdir, readFile, rm, symlink, lstat, unlink } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULT_SOCKET_PATH } from '../api/constants.js'
import { createClusterKey, writeFileAtomic } from './identity.js'
import { netnsCommand, setupNetwork, teardownNetwork } from './netns/network.js'
import { removeEndedJobCgroups } from '../ssi/jobs/node-cgroups.js'
import type { ClusterConfig, NodeConfig } from './config.js'

/**
 * A small young generation keeps an idle daemon near 85-100 MB RSS instead of ~110-130 MB (bulk
 * reads reuse their buffers so that it costs them nothing: src/migration/socket-reads.ts).
 * SSI_DAEMON_FLAGS replaces these flags, e.g. for an A/B benchmark of them.
 */
export const DAEMON_NODE_FLAGS = (process.env.SSI_DAEMON_FLAGS ?? '--max-semi-space-size=2').split(' ').filter(Boolean)
const SSID = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/ssid.js')

export class LaunchError extends Error {
  static override name = 'LaunchError'
  override name = 'LaunchError'
}

export interface LaunchedNode {
  readonly name: string
  readonly pid: number
  readonly socket: string
  readonly log: string
  /** false when a daemon of this node was already running and was left alone. */
  readonly started: boolean
}

export interface LaunchOptions {
  /** Extra environment for the daemons (e.g. SSI_LOG_LEVEL). */
  readonly env?: Record<string, string>
  /** Only these nodes (default all). */
  readonly only?: readonly string[]
  /** ms to wait for each control socket to appear. */
  readonly readyTimeoutMs?: number
  readonly waitReady: (socket: string, signal: AbortSignal) => Promise<void>
  /** Point /run/ssi/ssi.sock at the first node's socket (default true; tests turn it off). */
  readonly linkDefaultSocket?: boolean
}

const pidFile = (n: NodeConfig): string => join(n.stateDir, 'daemon.pid')
const logFile = (n: NodeConfig): string => join(n.stateDir, 'daemon.log')

export async function clusterUp (config: ClusterConfig, opts: LaunchOptions): Promise<LaunchedNode[]> {
  if (!existsSync(config.keyFile)) await createClusterKey(config.keyFile)
  const nodes = config.nodes.filter(n => opts.only == null || opts.only.includes(n.name))
  if (config.netns !== undefined) await prepareNetns(config, nodes)
  const launched = await Promise.all(nodes.map(async n => await launchNode(config, n, opts)))
  if (opts.linkDefaultSocket !== false) await linkDefaultSocket(nodes[0]?.controlSocket)
  return launched
}

/**
 * A netns cluster with no daemon running is set up from scratch, removing what a crashed run left;
 * otherwise only the namespaces of nodes not running are (re)made.
 */
async function prepareNetns (config: ClusterConfig, nodes: readonly NodeConfig[]): Promise<void> {
  const running = await Promise.all(config.nodes.map(async n => await runningPid(n) !== undefined))
  if (!running.includes(true)) await teardownNetwork(config)
  const down = nodes.filter(n => !running[config.nodes.indexOf(n)])
  await setupNetwork(config, down)
}

async function launchNode (config: ClusterConfig, node: NodeConfig, opts: LaunchOptions): Promise<LaunchedNode> {
  await mkdir(node.stateDir, { recursive: true, mode: 0o700 })
  const running = await runningPid(node)
  if (running != null) return { name: node.name, pid: running, socket: node.controlSocket, log: logFile(node), started: false }
  const out = openSync(logFile(node), 'a')
  const argv = [process.execPath, ...DAEMON_NODE_FLAGS, SSID, '--config', config.path, '--node', node.name]
  const cmd = config.netns === undefined ? argv : netnsCommand(config.name, node, argv)
  const child = spawn(cmd[0] ?? process.execPath, cmd.slice(1), {
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, ...opts.env }
  })
  closeSync(out)
  child.unref()
  const pid = child.pid
  if (pid === undefined) throw new LaunchError(`could not start the daemon of ${node.name}`)
  await writeFileAtomic(pidFile(node), `${pid}\n`)
  const exited = new Promise<never>((_resolve, reject) => {
    child.once('exit', code => { reject(new LaunchError(`daemon of ${node.name} exited with code ${code ?? 'signal'} during start-up; see ${logFile(node)}:\n${lastLines(logFile(node))}`)) })
  })
  const signal = AbortSignal.timeout(opts.readyTimeoutMs ?? 30_000)
  try {
    await Promise.race([opts.waitReady(node.controlSocket, signal), exited])
  } catch (err) {
    if (err instanceof LaunchError) throw err
    throw new LaunchError(`daemon of ${node.name} did not become ready: ${(err as Error).message}; see ${logFile(node)}`, { cause: err })
  } finally {
    child.removeAllListeners('exit')
  }
  return { name: node.name, pid, socket: node.controlSocket, log: logFile(node), started: true }
}

function lastLines (path: string): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-5).join('\n')
  } catch { return '' }
}

/** The pid in the node's pid file, if that process is still alive and is an ssi daemon. */
export async function runningPid (node: NodeConfig): Promise<number | undefined> {
  let pid: number
  try {
    pid = Number((await readFile(pidFile(node), 'utf8')).trim())
  } catch { return undefined }
  if (!Number.isInteger(pid) || pid <= 0) return undefined
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8')
    return cmdline.includes('ssid') && cmdline.includes(node.name) ? pid : undefined
  } catch { return undefined }
}

/** Points /run/ssi/ssi.sock at the first node's socket unless something else owns that path. */
async function linkDefaultSocket (socket: string | undefined): Promise<void> {
  if (socket === undefined || socket === DEFAULT_SOCKET_PATH) return
  await mkdir(dirname(DEFAULT_SOCKET_PATH), { recursive: true })
  try {
    const st = await lstat(DEFAULT_SOCKET_PATH)
    if (!st.isSymbolicLink()) return
    await unlink(DEFAULT_SOCKET_PATH)
  } catch { /* absent */ }
  await symlink(socket, DEFAULT_SOCKET_PATH)
}

export interface StoppedNode { readonly name: string, readonly pid?: number, readonly killed: boolean }

/**
 * Stops the daemons of a local cluster: SIGTERM, then SIGKILL after `graceMs`. A netns cluster's
 * network goes too, with every process left in its namespaces and the nodes' cgroups.
 */
export async function clusterDown (config: ClusterConfig, graceMs = 5000): Promise<StoppedNode[]> {
  const stopped = await stopDaemons(config, graceMs)
  if (config.netns !== undefined) await teardownNetwork(config)
  // What a daemon killed after the grace period, or one whose jobs ended as it stopped, left behind.
  else await Promise.all(config.nodes.map(async n => { await removeEndedJobCgroups(config.name, n) }))
  return stopped
}

async function stopDaemons (config: ClusterConfig, graceMs: number): Promise<StoppedNode[]> {
  return await Promise.all(config.nodes.map(async n => {
    const pid = await runningPid(n)
    if (pid === undefined) return { name: n.name, killed: false }
    process.kill(pid, 'SIGTERM')
    const killed = !(await waitGone(pid, graceMs))
    if (killed) process.kill(pid, 'SIGKILL')
    await rm(pidFile(n), { force: true })
    return { name: n.name, pid, killed }
  }))
}

async function waitGone (pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    try { process.kill(pid, 0) } catch { return true }
    await new Promise(r => setTimeout(r, 50))
  }
  return false
}
