import { SSI_VERSION } from '../daemon.js'
import type { ControlServer } from '../control-server.js'
import type { ClusterConfig, NodeConfig } from '../config.js'
import type { Daemon } from '../daemon.js'
import type { Member } from '../membership.js'
import type { NodeInfo, StatusResult } from '../../api/schema.js'

export interface ClusterHandlerDeps {
  readonly config: ClusterConfig
  readonly node: NodeConfig
  readonly daemon: Daemon
  /** Stops the daemon process (as SIGTERM does); absent where the daemon is not a process of its own. */
  readonly requestShutdown?: (why: string) => void
}

/** ms between answering `shutdown` and stopping, so that the answer reaches the caller. */
const SHUTDOWN_REPLY_MS = 100

/**
 * Control-API handlers about the cluster itself: `status`, `nodes`, and the cluster-admin
 * `shutdown` (root only: adminOnly in the schema, enforced by the server before this runs).
 */
export function registerClusterHandlers (control: ControlServer, deps: ClusterHandlerDeps): void {
  control.handle('nodes', async () => listNodes(deps))
  control.handle('status', async () => status(deps))
  control.handle('shutdown', async (_p, ctx) => {
    const request = deps.requestShutdown
    if (request === undefined) throw new ShutdownUnsupportedError('this daemon runs inside another program: stop it there')
    setTimeout(() => { request(`ssi shutdown by uid ${ctx.caller.uid} (pid ${ctx.caller.pid})`) }, SHUTDOWN_REPLY_MS)
    return { node: deps.node.name }
  })
}

export class ShutdownUnsupportedError extends Error {
  static override name = 'ShutdownUnsupportedError'
  override name = 'ShutdownUnsupportedError'
}

/** Every member, then every configured node never heard from (`unknown`), so the whole cluster shows. */
function listNodes (deps: ClusterHandlerDeps): NodeInfo[] {
  const members = deps.daemon.membership.list()
  const seen = new Set(members.map(m => m.name))
  const unseen = deps.config.nodes.filter(n => !seen.has(n.name)).sort((a, b) => a.id - b.id).map(unknownNode)
  return [...members.map(toNodeInfo), ...unseen]
}

function unknownNode (n: NodeConfig): NodeInfo {
  return {
    name: n.name,
    id: n.id,
    peerId: '',
    addresses: [n.listen],
    state: 'unknown',
    self: false,
    load: { runQueue: 0, load1: 0, load5: 0, load15: 0, cpus: 0 },
    memory: { freeBytes: 0, totalBytes: 0 },
    jobs: 0,
    lastSeenMs: 0
  }
}

function toNodeInfo (m: Member): NodeInfo {
  return {
    name: m.name,
    id: m.id,
    peerId: m.peerId,
    addresses: [...m.addresses],
    state: m.state,
    self: m.self,
    load: { ...m.load },
    memory: { ...m.memory },
    jobs: m.jobs,
    lastSeenMs: m.lastSeenMs
  }
}

function status (deps: ClusterHandlerDeps): StatusResult {
  const members = deps.daemon.membership.list()
  const count = (s: Member['state']): number => members.filter(m => m.state === s).length
  const self = members[0]
  return {
    cluster: deps.config.name,
    version: SSI_VERSION,
    node: { name: deps.node.name, id: deps.node.id, peerId: deps.daemon.host.peerId.toString() },
    uptimeMs: Date.now() - deps.daemon.startedMs,
    members: { alive: count('alive'), suspect: count('suspect'), dead: count('dead'), total: Math.max(members.length, deps.config.nodes.length) },
    jobs: self?.jobs ?? 0
  }
}
