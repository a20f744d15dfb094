import { createHmac, randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile, rename } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'

/** The key file's first two lines: the libp2p pre-shared-key format, kept so old key files work. */
const KEY_FILE_PREFIX = '/key/swarm/psk/1.0.0/\n/base16/\n'
/** Bytes of secret in a cluster key (64 hex digits in the file). */
export const CLUSTER_KEY_BYTES = 32
/** Domain separation for the Noise prologue: a new version means a new, incompatible derivation. */
const PROLOGUE_LABEL = 'ssi/noise-prologue/v1'

export class KeyFileError extends Error {
  static override name = 'KeyFileError'
  override name = 'KeyFileError'
}

/**
 * Loads the node's Ed25519 identity from `path`, creating it (mode 0600) on first start, so the
 * node keeps its PeerId across restarts.
 */
export async function loadOrCreateIdentity (path: string): Promise<PrivateKey> {
  try {
    return privateKeyFromProtobuf(await readFile(path))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new KeyFileError(`identity key ${path} is unreadable or corrupt: ${(err as Error).message}`, { cause: err })
    }
  }
  const key = await generateKeyPair('Ed25519')
  await writeFileAtomic(path, privateKeyToProtobuf(key), 0o600)
  return key
}

/**
 * Reads a cluster key file ("/key/swarm/psk/1.0.0/", "/base16/", 64 hex digits: the libp2p pnet
 * format, as `ssi keygen` writes it) and returns its 32 secret bytes.
 */
export async function readClusterKey (path: string): Promise<Uint8Array> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new KeyFileError(`cannot read cluster key ${path}: ${(err as Error).message} (create one with \`ssi keygen ${path}\`)`, { cause: err })
  }
  const lines = text.trim().split(/\r?\n/)
  if (lines.length !== 3 || lines[0] !== '/key/swarm/psk/1.0.0/' || lines[1] !== '/base16/' || !/^[0-9a-f]{64}$/i.test(lines[2] ?? '')) {
    throw new KeyFileError(`cluster key ${path} is malformed: expected the 3-line libp2p pre-shared key format written by \`ssi keygen\``)
  }
  return Uint8Array.from(Buffer.from(lines[2] ?? '', 'hex'))
}

/**
 * The Noise handshake prologue of a cluster: HMAC-SHA256(cluster key, label + cluster name). Both
 * ends of a Noise handshake hash the prologue into every handshake message's authentication, so
 * only nodes that hold the same key (and cluster name) complete a connection; others fail at the
 * first authenticated handshake message, before any libp2p protocol runs.
 */
export function clusterPrologue (clusterKey: Uint8Array, cluster: string): Uint8Array {
  if (clusterKey.byteLength !== CLUSTER_KEY_BYTES) throw new KeyFileError(`a cluster key has ${CLUSTER_KEY_BYTES} bytes, not ${clusterKey.byteLength}`)
  return Uint8Array.from(createHmac('sha256', clusterKey).update(`${PROLOGUE_LABEL}\0${cluster}`).digest())
}

/** Encodes a cluster key in the key-file format (95 bytes, no trailing newline). */
export function formatClusterKey (clusterKey: Uint8Array): string {
  return KEY_FILE_PREFIX + Buffer.from(clusterKey).toString('hex')
}

/** Writes a new random cluster key (mode 0600). Refuses to overwrite an existing one. */
export async function createClusterKey (path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  await writeFile(path, formatClusterKey(randomBytes(CLUSTER_KEY_BYTES)), { mode: 0o600, flag: 'wx' })
}

export async function writeFileAtomic (path: string, data: Uint8Array | string, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, data, { mode })
  await rename(tmp, path)
}
