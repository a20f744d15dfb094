/**
 * The network of a netns cluster on one machine: a Linux bridge, and per node a network namespace
 * with a veth whose host end is on the bridge. Every object is named by prefix so that `cluster
 * down`, and the next `cluster up` after a crash, can find and remove them:
 *   netns  `ssi-<cluster>-<node>`     host veth `ssv<tag><id>`     bridge: `netns.bridge`
 *   iptables rules with comment `ssi-<cluster>` (FORWARD, and DOCKER-USER when Docker is there)
 * The namespaces get no default route: nodes reach each other and the host, nothing else.
 */
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { IPTABLES, ipt, run, tryRun } from './exec.js'
import { removeCgroupPrefix } from './cgroups.js'
import type { ClusterConfig, NetnsConfig, NodeConfig } from '../config.js'

export { NetnsError } from './exec.js'

export const NETNS_DIR = '/run/netns'

export const netnsName = (cluster: string, node: string): string => `ssi-${cluster}-${node}`
const tag = (cluster: string): string => createHash('sha256').update(cluster).digest('hex').slice(0, 6)
/** Host end of a node's veth (≤ 15 chars: the kernel's limit for link names). */
export const hostVeth = (cluster: string, id: number): string => `ssv${tag(cluster)}${id.toString(16)}`
const peerVeth = (cluster: string, id: number): string => `ssp${tag(cluster)}${id.toString(16)}`
const ruleComment = (cluster: string): string => `ssi-${cluster}`
/** The node's IPv4 address, from its listen multiaddr. */
export const nodeAddress = (node: NodeConfig): string => /^\/ip4\/([^/]+)\//.exec(node.listen)?.[1] ?? ''

/** Runs `argv` inside the node's network namespace (no mount namespace games, unlike `ip netns exec`). */
export async function inNetns (cluster: string, node: string, argv: readonly string[]): Promise<string> {
  return await run('nsenter', [`--net=${NETNS_DIR}/${netnsName(cluster, node)}`, '--', ...argv])
}

/**
 * The command line that starts `argv` as node `node` in its own netns and UTS namespace, hostname
 * set, and in a mount namespace of its own whose mounts are all private: mounts the host shares
 * (`/run/netns` itself, Docker's) would otherwise reach the jobs as slaves of a peer group outside
 * them, which CRIU refuses to dump ("unreachable sharing").
 */
export function netnsCommand (cluster: string, node: NodeConfig, argv: readonly string[]): string[] {
  return ['nsenter', `--net=${NETNS_DIR}/${netnsName(cluster, node.name)}`, '--', 'unshare', '--uts', '--mount', '--propagation', 'private', '--',
    '/bin/sh', '-c', 'hostname "$0" && exec "$@"', node.name, ...argv]
}

/** Creates the bridge, the forward rules and the namespaces of the nodes given (idempotent per node). */
export async function setupNetwork (config: ClusterConfig, nodes: readonly NodeConfig[]): Promise<void> {
  const net = requireNetns(config)
  await setupBridge(config.name, net)
  for (const node of nodes) await setupNode(config.name, net, node)
}

async function setupBridge (cluster: string, net: NetnsConfig): Promise<void> {
  if (!existsSync(`/sys/class/net/${net.bridge}`)) await run('ip', ['link', 'add', net.bridge, 'type', 'bridge'])
  await run('ip', ['addr', 'replace', `${net.gateway}/24`, 'dev', net.bridge])
  await run('ip', ['link', 'set', net.bridge, 'up'])
  await allowForward(cluster, net.bridge)
}

/**
 * With br_netfilter loaded, bridged frames go through iptables FORWARD, whose policy Docker sets to
 * DROP: accept traffic between ports of our bridge, before Docker's rules see it.
 */
async function allowForward (cluster: string, bridge: string): Promise<void> {
  const rule = ['-i', bridge, '-o', bridge, '-m', 'comment', '--comment', ruleComment(cluster), '-j', 'ACCEPT']
  for (const bin of IPTABLES) {
    if (!await ipt(bin, ['-S', 'FORWARD'])) continue // not installed: it filters nothing
    for (const chain of ['FORWARD', 'DOCKER-USER']) {
      if (chain === 'DOCKER-USER' && !await ipt(bin, ['-S', chain])) continue
      if (!await ipt(bin, ['-C', chain, ...rule])) await ipt(bin, ['-I', chain, '1', ...rule], true)
    }
  }
}

async function removeForwardRules (cluster: string): Promise<void> {
  const marker = `--comment ${ruleComment(cluster)} `
  for (const bin of IPTABLES) {
    const listing = await tryRun(bin, ['-w', '-S'])
    for (const line of (listing ?? '').split('\n')) {
      if (!line.startsWith('-A ') || !`${line} `.includes(marker)) continue
      await ipt(bin, ['-D', ...line.slice(3).split(' ')])
    }
  }
}

async function setupNode (cluster: string, net: NetnsConfig, node: NodeConfig): Promise<void> {
  const ns = netnsName(cluster, node.name)
  const host = hostVeth(cluster, node.id)
  const peer = peerVeth(cluster, node.id)
  // A node whose daemon died keeps its namespace, and the jobs running in it, across a restart.
  if (await isSetUp(cluster, node)) return
  await deleteNode(cluster, node)
  await run('ip', ['netns', 'add', ns])
  await run('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', peer])
  await run('ip', ['link', 'set', peer, 'netns', ns])
  await run('ip', ['link', 'set', host, 'master', net.bridge, 'up'])
  await inNetns(cluster, node.name, ['ip', 'link', 'set', peer, 'name', 'eth0'])
  await inNetns(cluster, node.name, ['ip', 'addr', 'add', `${nodeAddress(node)}/24`, 'dev', 'eth0'])
  await inNetns(cluster, node.name, ['ip', 'link', 'set', 'eth0', 'up'])
  await inNetns(cluster, node.name, ['ip', 'link', 'set', 'lo', 'up'])
}

async function isSetUp (cluster: string, node: NodeConfig): Promise<boolean> {
  if (!existsSync(`${NETNS_DIR}/${netnsName(cluster, node.name)}`) || !existsSync(`/sys/class/net/${hostVeth(cluster, node.id)}`)) return false
  const addr = await inNetns(cluster, node.name, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']).catch(() => '')
  return addr.includes(` ${nodeAddress(node)}/24 `)
}

/** Kills whatever still runs in the node's namespace and removes the namespace, its veth and cgroups. */
async function deleteNode (cluster: string, node: NodeConfig): Promise<void> {
  const ns = netnsName(cluster, node.name)
  if (existsSync(`${NETNS_DIR}/${ns}`)) {
    await killNetnsProcesses(ns)
    await tryRun('ip', ['netns', 'del', ns])
  }
  await tryRun('ip', ['link', 'del', hostVeth(cluster, node.id)])
  await removeCgroupPrefix(`ssi-${cluster}-${node.name}`)
}

/** Host pids of the processes in a namespace. */
export async function netnsPids (ns: string): Promise<number[]> {
  const out = await tryRun('ip', ['netns', 'pids', ns])
  return (out ?? '').split('\n').map(Number).filter(p => Number.isInteger(p) && p > 0)
}

async function killNetnsProcesses (ns: string): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const pids = await netnsPids(ns)
    if (pids.length === 0) return
    for (const pid of pids) {
      try { process.kill(pid, 'SIGCONT'); process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/**
 * Removes everything of this cluster's network: processes left in its namespaces, the namespaces
 * (also of nodes no longer in the config: by prefix), veths, the bridge, the iptables rules, and the
 * nodes' cgroups.
 */
export async function teardownNetwork (config: ClusterConfig): Promise<void> {
  const net = requireNetns(config)
  for (const node of config.nodes) await deleteNode(config.name, node)
  const prefix = `ssi-${config.name}-`
  const stale = existsSync(NETNS_DIR) ? (await readdir(NETNS_DIR)).filter(n => n.startsWith(prefix)) : []
  for (const ns of stale) {
    await killNetnsProcesses(ns)
    await tryRun('ip', ['netns', 'del', ns])
  }
  const links = existsSync('/sys/class/net') ? await readdir('/sys/class/net') : []
  for (const link of links.filter(l => l.startsWith(`ssv${tag(config.name)}`))) await tryRun('ip', ['link', 'del', link])
  if (existsSync(`/sys/class/net/${net.bridge}`)) await tryRun('ip', ['link', 'del', net.bridge])
  await removeForwardRules(config.name)
}

function requireNetns (config: ClusterConfig): NetnsConfig {
  if (config.netns === undefined) throw new Error(`${config.path} has no netns section`)
  return config.netns
}
