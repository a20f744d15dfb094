/**
 * A cluster of ssi nodes, each in its own Docker container (own root filesystem, own network stack,
 * own PID namespace) on an internal user-defined network: nodes reach each other and nothing else.
 * The containers start idle; once their addresses are known the cluster config and key are copied
 * into each, and then each runs `ssid` (as the child of tini, pid 1 of the container).
 *
 * Containers get every capability but CAP_SYS_RESOURCE (which this VM does not grant, so
 * `--privileged` fails), no seccomp or AppArmor profile and no masked or read-only /proc paths:
 * CRIU and the jobs' namespaces need them. The host's cgroup tree is bound read-write at
 * /sys/fs/cgroup (host cgroup namespace), so each daemon makes its jobs' cgroups as it would on a
 * host; their names carry the cluster name, and `stop` removes them.
 */
import { rmdir, readdir, readFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { GenericContainer, getContainerRuntimeClient } from 'testcontainers'
import type { StartedTestContainer } from 'testcontainers'
import { createClusterKey } from '../../src/node/identity.js'
import { DAEMON_NODE_FLAGS } from '../../src/node/cluster-launcher.js'
import type { NodeInfo } from '../../src/api/schema.js'
import { APP_DIR } from './image.js'

// No reaper container (it would need an image from a registry); the suite removes what it made.
process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true'
process.env.TESTCONTAINERS_HOST_OVERRIDE ??= 'localhost'

const PORT = 7000
const CONFIG = '/etc/ssi/cluster.yaml'
const START_FLAG = '/etc/ssi/start'
/**
 * The daemons' migration test hook (src/node/migration-hooks.ts): a migration that reaches point P
 * while /tmp/hook-P exists in the container removes it, creates /tmp/hook-P.reached and waits there
 * (50 s), so a test can kill a node at that exact point; other points pass at once.
 */
const HOOK = '/etc/ssi/hook'
const HOOK_SCRIPT = '#!/bin/sh\nif [ -e /tmp/hook-$1 ]; then rm -f /tmp/hook-$1; : > /tmp/hook-$1.reached; sleep 50; fi\nexit 0\n'
const SSID = `exec node ${DAEMON_NODE_FLAGS.join(' ')} ${APP_DIR}/bin/ssid.js --config ${CONFIG} --node "$SSI_NODE" >/var/log/ssid.log 2>&1`
const ENTRY = `while [ ! -e ${START_FLAG} ]; do sleep 0.05; done; ${SSID}`

/** A container for one ssi node, with the host settings CRIU needs that GenericContainer has no method for. */
class NodeContainer extends GenericContainer {
  constructor (image: string, node: string, network: string) {
    super(image)
    this.withName(`${network}-${node}`)
      .withHostname(node)
      .withNetworkMode(network)
      .withEnvironment({ SSI_NODE: node, SSI_LOG_LEVEL: 'debug', UV_USE_IO_URING: '0', SSI_TEST_MIGRATION_HOOK: HOOK })
      .withEntrypoint(['/usr/bin/tini', '-g', '--'])
      .withCommand(['sh', '-c', ENTRY])
      .withAddedCapabilities('ALL')
      .withDroppedCapabilities('SYS_RESOURCE')
      .withSecurityOpt('seccomp=unconfined', 'apparmor=unconfined')
      .withBindMounts([{ source: '/sys/fs/cgroup', target: '/sys/fs/cgroup', mode: 'rw' }])
      .withTmpFs({ '/tmp': 'rw,exec,mode=1777' })
      .withLabels({ 'ssi.test': network })
    this.hostConfig.MaskedPaths = []
    this.hostConfig.ReadonlyPaths = []
    // API 1.41 field that dockerode's types lack: the host's cgroup namespace, so the paths in
    // /proc/<pid>/cgroup are those of the bound host tree.
    Object.assign(this.hostConfig, { CgroupnsMode: 'host' })
  }
}

export interface ContainerCluster {
  readonly name: string
  readonly nodes: readonly string[]
  /** The node's address on the cluster network. */
  ip(node: string): string
  /** Runs the real `ssi` CLI inside the node's container (against its own daemon). */
  ssi(node: string, args: string[]): Promise<{ code: number, stdout: string, stderr: string }>
  /** Runs any command inside the node's container. */
  exec(node: string, argv: string[]): Promise<{ code: number, stdout: string, stderr: string }>
  nodesSeenBy(node: string): Promise<NodeInfo[]>
  /** SIGKILLs the node's container: daemon, shims and jobs die at once, as on a power loss. */
  kill(node: string): Promise<void>
  /** The daemon's log (for failure messages). */
  log(node: string): Promise<string>
  /** The ends of the node's shim logs and daemon warnings, for a failure message. */
  diagnostics(node: string): Promise<string>
  stop(): Promise<void>
}

async function createNetwork (name: string): Promise<() => Promise<void>> {
  const client = await getContainerRuntimeClient()
  // Internal: no gateway out of the network, so nodes can reach only each other.
  const net = await client.network.create({ Name: name, Driver: 'bridge', Internal: true, CheckDuplicate: true, Labels: { 'ssi.test': name } })
  return async () => { await client.network.remove(net) }
}

function configFor (name: string, ips: Map<string, string>): string {
  const nodes = [...ips].map(([node, ip], i) => ({
    name: node,
    id: i + 1,
    listen: `/ip4/${ip}/tcp/${PORT}`,
    stateDir: `/var/lib/ssi/${node}`,
    controlSocket: '/run/ssi/ssi.sock'
  }))
  return stringify({ cluster: { name, keyFile: '/etc/ssi/cluster.key' }, nodes })
}

/** A fresh random cluster key, in the pnet file format the daemons read. */
async function clusterKey (): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'ssi-ckey-'))
  try {
    await createClusterKey(join(dir, 'cluster.key'))
    return await readFile(join(dir, 'cluster.key'))
  } finally { await rm(dir, { recursive: true, force: true }) }
}

/** Removes the (empty, the containers being gone) job cgroups this cluster's daemons made on the host. */
async function removeCgroups (cluster: string): Promise<void> {
  const prune = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) await prune(join(dir, e.name))
    await rmdir(dir).catch(() => {})
  }
  for (const h of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
    for (const e of await readdir(join('/sys/fs/cgroup', h)).catch(() => [] as string[])) {
      if (e.startsWith(`ssi-${cluster}-`)) await prune(join('/sys/fs/cgroup', h, e))
    }
  }
}

/**
 * Removes what an earlier run that was killed before its clean-up left: containers and networks
 * labelled `ssi.test`, and their clusters' cgroups. Suites run one at a time, so none is in use.
 */
export async function removeStaleClusters (): Promise<void> {
  const client = await getContainerRuntimeClient()
  const docker = client.container.dockerode
  const filters = JSON.stringify({ label: ['ssi.test'] })
  const names = new Set<string>()
  for (const info of await docker.listContainers({ all: true, filters })) {
    names.add(info.Labels['ssi.test'] ?? '')
    await docker.getContainer(info.Id).remove({ force: true }).catch(() => {})
  }
  for (const net of await docker.listNetworks({ filters })) {
    names.add(net.Labels?.['ssi.test'] ?? '')
    await docker.getNetwork(net.Id).remove().catch(() => {})
  }
  for (const n of names) if (n !== '') await removeCgroups(n)
}

export async function startContainerCluster (image: string, count: number): Promise<ContainerCluster> {
  await removeStaleClusters()
  const name = `c${Math.random().toString(36).slice(2, 10)}`
  const nodes = Array.from({ length: count }, (_, i) => `n${i + 1}`)
  const removeNetwork = await createNetwork(name)
  const started = new Map<string, StartedTestContainer>()
  const stop = async (): Promise<void> => {
    // SSI_KEEP_CONTAINERS=1 leaves stopped containers behind to read their logs (`docker cp`).
    const remove = process.env.SSI_KEEP_CONTAINERS === undefined
    for (const c of started.values()) await c.stop({ timeout: 0, remove }).catch(() => {})
    await removeNetwork().catch(() => {})
    await removeCgroups(name)
  }
  try {
    const all = await Promise.all(nodes.map(async n => [n, await new NodeContainer(image, n, name).start()] as const))
    for (const [n, c] of all) started.set(n, c)
    const ips = new Map(nodes.map(n => [n, container(n).getIpAddress(name)]))
    const config = configFor(name, ips)
    const key = await clusterKey()
    for (const c of started.values()) {
      await c.copyContentToContainer([
        { content: key, target: '/etc/ssi/cluster.key', mode: 0o600 },
        { content: config, target: CONFIG, mode: 0o644 },
        { content: HOOK_SCRIPT, target: HOOK, mode: 0o755 },
        { content: '', target: START_FLAG }
      ])
    }
  } catch (err) {
    await stop()
    throw err
  }

  function container (node: string): StartedTestContainer {
    const c = started.get(node)
    if (c === undefined) throw new Error(`no container for node ${node}`)
    return c
  }
  const exec = async (node: string, argv: string[]): Promise<{ code: number, stdout: string, stderr: string }> => {
    const r = await container(node).exec(argv, { workingDir: '/tmp' })
    return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr }
  }
  const ssi = async (node: string, args: string[]): ReturnType<typeof exec> => await exec(node, ['node', `${APP_DIR}/bin/ssi.cjs`, ...args])
  return {
    name,
    nodes,
    ip: node => container(node).getIpAddress(name),
    exec,
    ssi,
    async nodesSeenBy (node) {
      const r = await ssi(node, ['nodes', '--json'])
      if (r.code !== 0) throw new Error(`ssi nodes on ${node}: ${r.stderr}`)
      return JSON.parse(r.stdout) as NodeInfo[]
    },
    async kill (node) {
      const client = await getContainerRuntimeClient()
      await client.container.getById(container(node).getId()).kill({ signal: 'SIGKILL' })
    },
    async log (node) { return (await exec(node, ['cat', '/var/log/ssid.log'])).stdout },
    async diagnostics (node) {
      const script = 'for f in /var/lib/ssi/*/jobs/*/shim.log; do [ -e "$f" ] && { echo "== $f"; tail -n 15 "$f"; }; done; ' +
        'for f in /var/lib/ssi/*/jobs/*/restore.log; do [ -e "$f" ] && { echo "== $f"; grep -E "Error|Warn" "$f" | tail -n 15; }; done; ' +
        'echo "== ssid warnings"; grep -E \'"level":(40|50|60)\' /var/log/ssid.log | tail -n 10'
      return (await exec(node, ['sh', '-c', script])).stdout
    },
    stop
  }
}
