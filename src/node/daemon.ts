/**
 * The node daemon's composition root: opens the state store, loads the identity and cluster key,
 * starts the libp2p host, membership and the control API, and wires the handlers. Everything that
 * talks to the outside world is created here and handed to the subsystems that need it.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { ControlServer } from './control-server.js'
import { createNodeHost } from './host.js'
import { loadOrCreateIdentity, readClusterKey } from './identity.js'
import { sampleLoad } from './load.js'
import { Membership } from './membership.js'
import { LevelStateStore } from './store.js'
import { registerClusterHandlers } from './handlers/cluster.js'
import type { ClusterConfig, NodeConfig } from './config.js'
import type { NodeHost } from './host.js'
import type { Logger } from './logger.js'
import type { StateStore } from './store.js'

export const SSI_VERSION = '0.1.0'

export interface DaemonInit {
  readonly config: ClusterConfig
  readonly node: NodeConfig
  readonly logger: Logger
}

export interface Daemon {
  readonly host: NodeHost
  readonly membership: Membership
  readonly store: StateStore
  readonly control: ControlServer
  readonly startedMs: number
  stop(): Promise<void>
}

/** Starts one node. On failure, whatever was started is stopped again before the error propagates. */
export async function startDaemon (init: DaemonInit): Promise<Daemon> {
  const { config, node, logger } = init
  const cleanups: Array<() => Promise<void>> = []
  const stopAll = async (): Promise<void> => {
    for (const fn of cleanups.splice(0).reverse()) {
      await fn().catch(err => { logger.warn({ err }, 'error during shutdown') })
    }
  }
  try {
    await mkdir(node.stateDir, { recursive: true, mode: 0o700 })
    const store = await LevelStateStore.open(join(node.stateDir, 'db'))
    cleanups.push(async () => { await store.close() })
    const host = await createNodeHost({
      privateKey: await loadOrCreateIdentity(join(node.stateDir, 'identity.key')),
      listen: node.listen,
      psk: await readClusterKey(config.keyFile),
      pingIntervalMs: 5000,
      dialTimeoutMs: config.failureDetection.dialTimeoutMs,
      gossipHeartbeatMs: config.gossip.heartbeatMs
    })
    cleanups.push(async () => { await host.stop() })
    const membership = new Membership(host, {
      cluster: config.name,
      self: node,
      nodes: config.nodes,
      bootstrap: config.bootstrap,
      gossip: config.gossip,
      failure: config.failureDetection,
      sampleLoad,
      jobCount: () => 0,
      logger: logger.child({ component: 'membership' })
    })
    membership.start()
    cleanups.push(async () => { membership.stop() })
    const control = new ControlServer({ socketPath: node.controlSocket, logger: logger.child({ component: 'control' }) })
    const daemon: Daemon = { host, membership, store, control, startedMs: Date.now(), stop: stopAll }
    registerClusterHandlers(control, { config, node, daemon })
    await control.start()
    cleanups.push(async () => { await control.stop() })
    logger.info({ peerId: host.peerId.toString(), listen: host.getMultiaddrs().map(String), socket: node.controlSocket }, 'node started')
    return daemon
  } catch (err) {
    await stopAll()
    throw err
  }
}
