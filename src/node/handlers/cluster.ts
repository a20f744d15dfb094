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
}

/** Control-API handlers about the cluster itself: `status` and `nodes`. */
export function registerClusterHandlers (control: ControlServer, deps: ClusterHandlerDeps): void {
  control.handle('nodes', async () => deps.daemon.membership.list().map(toNodeInfo))
  control.handle('status', async () => status(deps))
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
