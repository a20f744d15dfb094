/**
 * Cluster membership = the Noise handshake bound to the cluster key (createNodeHost's prologue):
 * real libp2p hosts on 127.0.0.1 in this process. Nodes with the same key and cluster name connect
 * and talk; a node with another key (or another cluster name) fails the handshake quickly in both
 * directions, never gets a connection, and cannot open any protocol stream (peer RPC, images).
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNodeHost } from '../../src/node/host.js'
import { KeyFileError, clusterPrologue, createClusterKey, readClusterKey } from '../../src/node/identity.js'
import type { NodeHost } from '../../src/node/host.js'

const RPC_PROTOCOL = '/ssi/rpc/1'
const hosts: NodeHost[] = []

async function host (prologue: Uint8Array): Promise<NodeHost> {
  const h = await createNodeHost({
    privateKey: await generateKeyPair('Ed25519'), listen: '/ip4/127.0.0.1/tcp/0', prologue, dialTimeoutMs: 5000
  })
  hosts.push(h)
  return h
}

const addrOf = (h: NodeHost): string => h.getMultiaddrs()[0]?.toString() ?? ''
/** The listen address without /p2p/<id>: an outsider that does not know whom it dials. */
const bareAddr = (h: NodeHost): string => addrOf(h).replace(/\/p2p\/.*$/, '')

describe('cluster key (Noise prologue)', () => {
  const key = randomBytes(32)
  let a: NodeHost
  let b: NodeHost
  let outsider: NodeHost
  let otherCluster: NodeHost
  const handled: string[] = []

  beforeAll(async () => {
    a = await host(clusterPrologue(key, 'prod'))
    b = await host(clusterPrologue(key, 'prod'))
    outsider = await host(clusterPrologue(randomBytes(32), 'prod'))
    otherCluster = await host(clusterPrologue(key, 'staging'))
    for (const h of [a, b]) {
      await h.handle(RPC_PROTOCOL, (stream, connection) => {
        handled.push(connection.remotePeer.toString())
        stream.abort(new Error('test handler'))
      })
    }
  }, 30_000)

  afterAll(async () => {
    await Promise.all(hosts.map(async h => { await h.stop() }))
  })

  it('lets nodes with the same key and cluster name connect and open streams', async () => {
    const conn = await a.dial(multiaddr(bareAddr(b)), { signal: AbortSignal.timeout(5000) })
    expect(conn.remotePeer.toString()).toBe(b.peerId.toString())
    const stream = await a.dialProtocol(b.peerId, RPC_PROTOCOL, { signal: AbortSignal.timeout(5000) })
    stream.abort(new Error('done'))
    expect(handled).toContain(a.peerId.toString())
  })

  for (const [what, other] of [['another cluster key', () => outsider], ['another cluster name', () => otherCluster]] as const) {
    it(`refuses a node with ${what} in both directions, fast, without a connection`, async () => {
      const stranger = other()
      for (const [from, to] of [[stranger, a], [a, stranger]] as const) {
        const t0 = performance.now()
        await expect(from.dial(multiaddr(bareAddr(to)), { signal: AbortSignal.timeout(5000) })).rejects.toThrow()
        // The handshake fails at its second message: no timeout involved (generous bound; timing is not the point).
        expect(performance.now() - t0).toBeLessThan(4000)
      }
      // Knowing the PeerId does not help either: no RPC stream, nothing handled.
      await stranger.peerStore.merge(a.peerId, { multiaddrs: [multiaddr(bareAddr(a))] })
      await expect(stranger.dialProtocol(a.peerId, RPC_PROTOCOL, { signal: AbortSignal.timeout(5000) })).rejects.toThrow()
      expect(handled).not.toContain(stranger.peerId.toString())
      await new Promise(resolve => setTimeout(resolve, 100))
      expect(a.getConnections().map(c => c.remotePeer.toString())).not.toContain(stranger.peerId.toString())
      expect(stranger.getConnections()).toHaveLength(0)
    })
  }
})

describe('cluster key file', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'ssi-key-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('keeps the libp2p pre-shared-key format: keygen output and old key files both read', async () => {
    const path = join(dir, 'new.key')
    await createClusterKey(path)
    const text = await readFile(path, 'utf8')
    expect(text).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/)
    expect(text).toHaveLength(95)
    expect(Buffer.from(await readClusterKey(path)).toString('hex')).toBe(text.slice(-64))
    await expect(createClusterKey(path)).rejects.toMatchObject({ code: 'EEXIST' })
    // A key written by @libp2p/pnet's generateKey (what earlier ssi versions used), with a newline.
    const old = join(dir, 'old.key')
    await writeFile(old, `/key/swarm/psk/1.0.0/\n/base16/\n${'ab'.repeat(32)}\n`)
    expect(Buffer.from(await readClusterKey(old)).toString('hex')).toBe('ab'.repeat(32))
    await writeFile(old, '/key/swarm/psk/1.0.0/\n/base16/\nxyz\n')
    await expect(readClusterKey(old)).rejects.toThrow(KeyFileError)
  })

  it('derives a prologue that depends on the key and on the cluster name', () => {
    const k = randomBytes(32)
    const p = Buffer.from(clusterPrologue(k, 'prod'))
    expect(p).toHaveLength(32)
    expect(Buffer.from(clusterPrologue(k, 'prod')).equals(p)).toBe(true)
    expect(Buffer.from(clusterPrologue(k, 'prod2')).equals(p)).toBe(false)
    expect(Buffer.from(clusterPrologue(randomBytes(32), 'prod')).equals(p)).toBe(false)
    expect(() => clusterPrologue(randomBytes(16), 'prod')).toThrow(KeyFileError)
  })
})
