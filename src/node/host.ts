import '../polyfill.js'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { patchPnetCipher } from './bulk-transport.js'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import type { Ping } from '@libp2p/ping'

export type HostServices = {
  pubsub: GossipSub
  identify: Identify
  ping: Ping
}

export type NodeHost = Libp2p<HostServices>

export interface HostInit {
  readonly privateKey: PrivateKey
  readonly listen: string
  /** The cluster's pre-shared key: only holders can complete a connection. */
  readonly psk: Uint8Array
  /** ms between connection-monitor pings; a hung peer's connection is aborted after about two. */
  readonly pingIntervalMs: number
  readonly dialTimeoutMs: number
  readonly gossipHeartbeatMs: number
}

/**
 * Creates the node's libp2p host: TCP + pnet (cluster key) + Noise + yamux, with identify, ping and
 * gossipsub. Tuned for a LAN cluster where many nodes may share one IP (see libp2p.md).
 */
export async function createNodeHost (init: HostInit): Promise<NodeHost> {
  // pnet's wasm cipher leaks memory on large messages until connections die: see bulk-transport.ts.
  patchPnetCipher()
  return await createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: [init.listen] },
    transports: [tcp()],
    connectionProtector: preSharedKey({ psk: init.psk, timeout: init.dialTimeoutMs }),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: {
      dialTimeout: init.dialTimeoutMs,
      // Loopback and NATed clusters put every node behind one IP: do not rate-limit it.
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: 256
    },
    connectionMonitor: {
      pingInterval: init.pingIntervalMs,
      pingTimeout: { minTimeout: init.pingIntervalMs / 2, maxTimeout: init.pingIntervalMs }
    },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        emitSelf: false,
        allowPublishToZeroTopicPeers: true,
        floodPublish: true,
        heartbeatInterval: 1000,
        // A LAN cluster is small and fully connected: flood publishing reaches everyone, so lazy
        // gossip (IHAVE/IWANT) would only add traffic and CPU.
        Dlazy: 0,
        gossipFactor: 0,
        fallbackToFloodsub: false,
        scoreParams: { IPColocationFactorWeight: 0 }
      })
    }
  })
}
