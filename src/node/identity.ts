import { mkdir, readFile, writeFile, rename } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { generateKey } from '@libp2p/pnet'
import type { PrivateKey } from '@libp2p/interface'

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

/** Reads a cluster pre-shared key in libp2p pnet format ("/key/swarm/psk/1.0.0/ /base16/ <64 hex>"). */
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
  return new TextEncoder().encode(`${lines[0]}\n${lines[1]}\n${(lines[2] ?? '').toLowerCase()}`)
}

/** Writes a new random cluster key (mode 0600). Refuses to overwrite an existing one. */
export async function createClusterKey (path: string): Promise<void> {
  const buf = new Uint8Array(95)
  generateKey(buf)
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  await writeFile(path, buf, { mode: 0o600, flag: 'wx' })
}

export async function writeFileAtomic (path: string, data: Uint8Array | string, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, data, { mode })
  await rename(tmp, path)
}
