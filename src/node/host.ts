import '../polyfill.js'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { useLazyYamuxWindowUpdates } from './yamux-window.js'
import type { Identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import type { Ping } from '@libp2p/ping'

export type HostServices = {
  identify: Identify
  ping: Ping
}

export type NodeHost = Libp2p<HostServices>

export interface HostInit {
  readonly privateKey: PrivateKey
  readonly listen: string
  /**
   * The cluster's Noise prologue (`clusterPrologue` in ./identity.ts, derived from the cluster key):
   * a peer with another one fails the Noise handshake, so only key holders complete a connection.
   */
  readonly prologue: Uint8Array
  readonly dialTimeoutMs: number
}

/**
 * Creates the node's libp2p host: TCP + Noise (bound to the cluster key through its prologue) +
 * yamux, with identify and ping (membership runs its own heartbeat links: ./heartbeat-links.ts).
 * Tuned for a LAN cluster where many nodes may share one IP
 * (see libp2p.md). There is no pnet connection protector: its wasm xsalsa20 capped bulk transfers at
 * ~150 MB/s, while the prologue costs nothing per byte (see README, Security).
 */
export async function createNodeHost (init: HostInit): Promise<NodeHost> {
  useLazyYamuxWindowUpdates()
  return await createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: [init.listen] },
    transports: [tcp()],
    connectionEncrypters: [noise({ prologueBytes: init.prologue })],
    streamMuxers: [yamux()],
    connectionManager: {
      dialTimeout: init.dialTimeoutMs,
      // Loopback and NATed clusters put every node behind one IP: do not rate-limit it.
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: 256
    },
    // No connection monitor: its pings queue behind bulk data, so under load a busy connection
    // (an image transfer) missed its ping deadline and was aborted, killing the transfer. Hung
    // peers are found by membership's heartbeat silence instead; killed ones by the TCP reset.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping()
    }
  })
}
