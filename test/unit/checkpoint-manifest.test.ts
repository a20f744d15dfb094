/** The checkpoint manifest: signed, every file hashed; a copy is verified before any restore. */
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { copyVerified, MANIFEST_FILE, manifestKey, readManifest, verifyFiles, writeManifest } from '../../src/migration/checkpoint/manifest.js'

const key = manifestKey(new TextEncoder().encode('cluster key A'))
const body = {
  ssiVersion: '0.1.0', cluster: 'c', vpid: 1000001, owner: { uid: 0, gid: 0, groups: [0], user: 'root' },
  job: { argv: ['sh'], cwd: '/', hostname: 'vp1000001', limits: {}, homeNode: 'n1', createdMs: 1 },
  stdio: [{ key: 'file[1a:2b]', stream: 'stdout' as const }], node: 'n1', takenMs: 2, dumpMs: 3, leftRunning: false
}

describe('checkpoint manifest', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ssi-manifest-'))
    await writeFile(join(dir, 'pages-1.img'), Buffer.alloc(100_000, 7))
    await writeFile(join(dir, 'ssi.stdout'), 'hello\n')
  })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('round-trips and verifies a checkpoint it wrote, also through a private copy', async () => {
    const written = await writeManifest(dir, key, body)
    expect(written.files.map(f => f.name)).toEqual(['pages-1.img', 'ssi.stdout'])
    expect(await readManifest(dir, key)).toEqual(written)
    await verifyFiles(dir, written)
    const copy = await mkdtemp(join(tmpdir(), 'ssi-manifest-copy-'))
    try {
      expect(await copyVerified(dir, copy, key)).toEqual(written)
    } finally {
      await rm(copy, { recursive: true, force: true })
    }
  })

  it('refuses another key, an edited manifest, a changed, missing or extra file, a symlink', async () => {
    await writeManifest(dir, key, body)
    await expect(readManifest(dir, manifestKey(new TextEncoder().encode('cluster key B')))).rejects.toThrow(/made by another cluster, or altered/)
    const m = join(dir, MANIFEST_FILE)
    const original = await readFile(m, 'utf8')
    await writeFile(m, original.replace('"uid": 0', '"uid": 1000'))
    await expect(readManifest(dir, key)).rejects.toThrow(/signature does not match/)
    await writeFile(m, original)
    const b = await readManifest(dir, key)
    await writeFile(join(dir, 'ssi.stdout'), 'hellO\n')
    await expect(verifyFiles(dir, b)).rejects.toThrow(/ssi\.stdout is corrupt \(sha256 mismatch\)/)
    await writeFile(join(dir, 'ssi.stdout'), 'hello\n')
    await writeFile(join(dir, 'extra.img'), 'x')
    await expect(verifyFiles(dir, b)).rejects.toThrow(/files not in its manifest: extra\.img/)
    await rm(join(dir, 'extra.img'))
    await rm(join(dir, 'pages-1.img'))
    await symlink('/etc/passwd', join(dir, 'pages-1.img'))
    await expect(verifyFiles(dir, b)).rejects.toThrow(/pages-1\.img is not a regular file/)
    await rm(join(dir, MANIFEST_FILE))
    await expect(readManifest(dir, key)).rejects.toThrow(/not an ssi checkpoint: ssi-checkpoint\.json is missing/)
  })
})
