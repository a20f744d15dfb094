/**
 * The manifest of a checkpoint directory (`ssi-checkpoint.json`): which job it is (vpid, owner, the
 * spec needed to take it over), when and how it was taken, and the size and sha256 of every other
 * file in the directory, signed with an HMAC keyed by the cluster key.
 *
 * Why signed: restoring runs CRIU as root, and CRIU restores whatever credentials the images
 * hold, so a directory a user could edit must never be restored unless this cluster's daemons wrote
 * it. The HMAC (key derived from the cluster's pre-shared key, which only daemons read) makes a
 * foreign or edited manifest fail, and the sha256s in it make any edited, missing or extra image
 * file fail. Verification happens on a private copy (see copyVerified), never on the user's files.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { copyFile, lstat, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { limitsSchema, ownerSchema } from '../../protocol/jobs.js'
import { CheckpointInvalidError } from './errors.js'

export const MANIFEST_FILE = 'ssi-checkpoint.json'
export const MANIFEST_FORMAT = 'ssi-checkpoint/1'
/** The job's output up to the dump, restored as its output files. */
export const STAGED_OUTPUT = { stdout: 'ssi.stdout', stderr: 'ssi.stderr' } as const
/** A manifest larger than this is refused unread. */
const MAX_MANIFEST_BYTES = 1024 * 1024

const fileEntry = z.object({
  name: z.string().min(1).max(255).regex(/^[^/\0]+$/).refine(n => n !== '.' && n !== '..' && n !== MANIFEST_FILE),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/)
}).strict()

export const manifestBodySchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  ssiVersion: z.string().max(32),
  cluster: z.string().max(64),
  vpid: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  owner: ownerSchema,
  job: z.object({
    argv: z.array(z.string().max(65_536)).min(1).max(4096),
    cwd: z.string().min(1).max(4096),
    hostname: z.string().max(64),
    limits: limitsSchema,
    homeNode: z.string().max(64),
    createdMs: z.number().nonnegative(),
    startedMs: z.number().nonnegative().optional()
  }).strict(),
  /** CRIU's names of the job's output files in the images, to redirect on restore. */
  stdio: z.array(z.object({ key: z.string().max(64).regex(/^file\[[0-9a-f]+:[0-9a-f]+\]$/), stream: z.enum(['stdout', 'stderr', 'stdin']) }).strict()).max(64),
  /** Node that dumped the job. */
  node: z.string().max(64),
  /** Epoch ms at the end of the dump. */
  takenMs: z.number().nonnegative(),
  /** How long the dump took (the job was frozen for about that long), ms. */
  dumpMs: z.number().nonnegative(),
  leftRunning: z.boolean(),
  files: z.array(fileEntry).max(10_000)
}).strict()

const manifestFileSchema = z.object({ body: manifestBodySchema, mac: z.string().regex(/^[0-9a-f]{64}$/) }).strict()

export type ManifestBody = z.infer<typeof manifestBodySchema>
export type ManifestFile = z.infer<typeof fileEntry>

/** The manifest signing key for a cluster key (the PSK file's bytes). */
export function manifestKey (clusterKey: Uint8Array): Buffer {
  return createHmac('sha256', clusterKey).update('ssi checkpoint manifest v1').digest()
}

function mac (key: Uint8Array, body: ManifestBody): string {
  return createHmac('sha256', key).update(JSON.stringify(body)).digest('hex')
}

export async function sha256File (path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024, signal })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** Regular files of dir (no manifest), sorted; anything else in it is an error. */
async function listFiles (dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter(n => n !== MANIFEST_FILE).sort()
  for (const n of names) {
    const s = await lstat(join(dir, n))
    if (!s.isFile()) throw new CheckpointInvalidError(`checkpoint ${dir}: ${n} is not a regular file`)
  }
  return names
}

/** Hashes every file of dir and writes the signed manifest; returns the body written. */
export async function writeManifest (dir: string, key: Uint8Array, body: Omit<ManifestBody, 'files' | 'format'>, signal?: AbortSignal): Promise<ManifestBody> {
  const files: ManifestFile[] = []
  for (const name of await listFiles(dir)) {
    const { size } = await lstat(join(dir, name))
    files.push({ name, size, sha256: await sha256File(join(dir, name), signal) })
  }
  const full: ManifestBody = { format: MANIFEST_FORMAT, ...body, files }
  await writeFile(join(dir, MANIFEST_FILE), JSON.stringify({ body: full, mac: mac(key, full) }, null, 1), { mode: 0o600 })
  return full
}

/** Reads and authenticates the manifest of dir (files are not checked: see verifyFiles). */
export async function readManifest (dir: string, key: Uint8Array): Promise<ManifestBody> {
  const path = join(dir, MANIFEST_FILE)
  const st = await lstat(path).catch(() => undefined)
  if (st === undefined) throw new CheckpointInvalidError(`${dir} is not an ssi checkpoint: ${MANIFEST_FILE} is missing`)
  if (!st.isFile() || st.size > MAX_MANIFEST_BYTES) throw new CheckpointInvalidError(`checkpoint ${dir}: ${MANIFEST_FILE} is not a regular file of at most 1 MiB`)
  let raw: unknown
  try {
    raw = JSON.parse(await readFile(path, 'utf8'))
  } catch (err) {
    throw new CheckpointInvalidError(`checkpoint ${dir}: ${MANIFEST_FILE} is corrupt (${(err as Error).message})`)
  }
  const parsed = manifestFileSchema.safeParse(raw)
  if (!parsed.success) throw new CheckpointInvalidError(`checkpoint ${dir}: ${MANIFEST_FILE} is corrupt or of another format (${parsed.error.issues[0]?.message ?? 'invalid'})`)
  const expected = Buffer.from(mac(key, parsed.data.body), 'hex')
  if (!timingSafeEqual(expected, Buffer.from(parsed.data.mac, 'hex'))) {
    throw new CheckpointInvalidError(`checkpoint ${dir}: its manifest's signature does not match: it was made by another cluster, or altered`)
  }
  return parsed.data.body
}

/** Checks that dir holds exactly the manifest's files, each with its size and sha256. */
export async function verifyFiles (dir: string, body: ManifestBody, signal?: AbortSignal): Promise<void> {
  const present = await listFiles(dir)
  const listed = new Set(body.files.map(f => f.name))
  const extra = present.filter(n => !listed.has(n))
  if (extra.length > 0) throw new CheckpointInvalidError(`checkpoint ${dir}: files not in its manifest: ${extra.slice(0, 5).join(', ')}`)
  for (const f of body.files) {
    const st = await lstat(join(dir, f.name)).catch(() => undefined)
    if (st === undefined) throw new CheckpointInvalidError(`checkpoint ${dir}: ${f.name} is missing`)
    if (st.size !== f.size) throw new CheckpointInvalidError(`checkpoint ${dir}: ${f.name} is corrupt (${st.size} bytes, the manifest says ${f.size})`)
    if (await sha256File(join(dir, f.name), signal) !== f.sha256) throw new CheckpointInvalidError(`checkpoint ${dir}: ${f.name} is corrupt (sha256 mismatch)`)
  }
}

/**
 * Copies a checkpoint dir someone else may write (e.g. a user's) into `dest` (a fresh private dir)
 * and verifies the copy, so what is restored is what was verified. Returns the manifest.
 */
export async function copyVerified (src: string, dest: string, key: Uint8Array, signal?: AbortSignal): Promise<ManifestBody> {
  const body = await readManifest(src, key)
  for (const f of body.files) {
    const st = await lstat(join(src, f.name)).catch(() => undefined)
    if (st === undefined) throw new CheckpointInvalidError(`checkpoint ${src}: ${f.name} is missing`)
    if (!st.isFile()) throw new CheckpointInvalidError(`checkpoint ${src}: ${f.name} is not a regular file`)
    await copyFile(join(src, f.name), join(dest, f.name))
    signal?.throwIfAborted()
  }
  await copyFile(join(src, MANIFEST_FILE), join(dest, MANIFEST_FILE))
  // The copy may have raced an edit of the original: authenticate the copied manifest itself.
  const copied = await readManifest(dest, key)
  await verifyFiles(dest, copied, signal)
  return copied
}
