/**
 * A libp2p node in the test process that holds the cluster key, made by the daemon's own host
 * factory, so the fuzz tests speak to a real daemon from inside the trust boundary: whatever a
 * (buggy or compromised) cluster member can send, they send.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { afterAll, beforeAll } from 'vitest'
import { createNodeHost } from '../../src/node/host.js'
import { clusterPrologue, readClusterKey } from '../../src/node/identity.js'
import { makeCluster } from '../helpers/cluster.js'
import type { NodeHost } from '../../src/node/host.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { Stream } from '@libp2p/interface'

export interface FuzzPeer {
  readonly host: NodeHost
  /** PeerId of the daemon of `node`. */
  readonly target: string
  stop(): Promise<void>
}

/** Starts a key-holding libp2p node and connects it to the daemon of `node`. */
export async function fuzzPeer (cluster: TestCluster, node = 'n1'): Promise<FuzzPeer> {
  const config = cluster.config.nodes.find(n => n.name === node)
  if (config === undefined) throw new Error(`no node ${node}`)
  const host = await createNodeHost({
    privateKey: await generateKeyPair('Ed25519'),
    listen: '/ip4/127.0.0.1/tcp/0',
    prologue: clusterPrologue(await readClusterKey(cluster.config.keyFile), cluster.config.name),
    dialTimeoutMs: 5000
  })
  const conn = await host.dial(multiaddr(config.listen), { signal: AbortSignal.timeout(10_000) })
  return { host, target: conn.remotePeer.toString(), stop: async () => { await host.stop() } }
}

export interface FuzzTarget {
  readonly cluster: TestCluster
  /** Connected to the daemon of n1. */
  readonly peer: FuzzPeer
}

/**
 * Registers the file's beforeAll/afterAll: a cluster of `nodes` daemons and a fuzz peer connected
 * to n1, both stopped after the file. Read the fields inside a test (they exist once beforeAll ran).
 */
export function fuzzTarget (nodes = 1): FuzzTarget {
  let cluster: TestCluster | undefined
  let peer: FuzzPeer | undefined
  beforeAll(async () => {
    cluster = await makeCluster({ nodes })
    await cluster.start()
    peer = await fuzzPeer(cluster)
  })
  afterAll(async () => {
    await peer?.stop()
    await cluster?.stop()
  })
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('fuzzTarget: read inside a test, after beforeAll')
    return value
  }
  return {
    get cluster () { return started(cluster) },
    get peer () { return started(peer) }
  }
}

export interface Exchange {
  /** Every byte the daemon sent back before the stream ended. */
  readonly reply: Buffer
  /** How the stream ended: 'end' (closed cleanly), 'reset' (aborted or reset), 'timeout' (a hang). */
  readonly ending: 'end' | 'reset' | 'timeout'
}

/**
 * Opens `protocol` to the daemon, writes `bytes` (raw: framing is the caller's), closes the write
 * side, and collects the reply until the daemon ends the stream or `timeoutMs` passes.
 */
export async function exchange (peer: FuzzPeer, protocol: string, bytes: Uint8Array, timeoutMs: number, closeWrite = true): Promise<Exchange> {
  const stream: Stream = await peer.host.dialProtocol(peerIdFromString(peer.target), protocol, { signal: AbortSignal.timeout(10_000) })
  stream.maxReadBufferLength = 64 * 1024 * 1024
  const chunks: Buffer[] = []
  const ended = new Promise<'end' | 'reset'>(resolve => {
    stream.addEventListener('message', evt => {
      const data = evt.data
      if (data instanceof Uint8Array) chunks.push(Buffer.from(data))
      else for (const b of data) chunks.push(Buffer.from(b))
    })
    stream.addEventListener('close', evt => { resolve(evt.error === undefined ? 'end' : 'reset') })
  })
  try {
    if (bytes.byteLength > 0 && !stream.send(bytes)) await new Promise(resolve => { stream.addEventListener('drain', resolve, { once: true }) })
    if (closeWrite) await stream.close({ signal: AbortSignal.timeout(timeoutMs) }).catch(() => {})
  } catch {
    // The daemon may reset the stream while we write: that is an answer too.
  }
  let timer: NodeJS.Timeout | undefined
  const ending = await Promise.race([ended, new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, timeoutMs) })])
  clearTimeout(timer)
  if (ending === 'timeout') stream.abort(new Error('fuzz: no answer'))
  return { reply: Buffer.concat(chunks), ending }
}

/** Runs `task(i)` for i in [0, n) with at most `parallel` at once. */
export async function inParallel (n: number, parallel: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < n) await task(next++)
  }
  await Promise.all(Array.from({ length: parallel }, worker))
}

/** An unsigned varint, as libp2p length prefixes use. */
export function varint (n: number): Buffer {
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return Buffer.from(out)
}

/** Splits length-prefixed frames; throws on anything malformed. */
export function splitLp (data: Buffer): Buffer[] {
  const frames: Buffer[] = []
  let at = 0
  while (at < data.length) {
    let len = 0
    let shift = 0
    for (;;) {
      const b = data[at++]
      if (b === undefined) throw new Error('reply ends inside a length prefix')
      len += (b & 0x7f) * 2 ** shift
      shift += 7
      if ((b & 0x80) === 0) break
    }
    if (at + len > data.length) throw new Error('reply ends inside a frame')
    frames.push(data.subarray(at, at + len))
    at += len
  }
  return frames
}
