/**
 * Re-checks received images against the digests the transfer computed while writing them, right
 * before they are restored. The transfer's own check only proves what reached the disk; a disk or
 * filesystem fault (or a stray writer) between arrival and `criu restore` would otherwise restore a
 * corrupt job. Costs one read + sha256 of the images (~0.55 s of a core per GiB with SHA-NI).
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { lstat } from 'node:fs/promises'
import { join } from 'node:path'
import { ImageIntegrityError } from './errors.js'

export interface ExpectedImage {
  readonly name: string
  readonly size: number
  /** sha256 of the content, hex. */
  readonly sha256: string
}

async function sha256Of (path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024, signal })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/**
 * Throws ImageIntegrityError naming the first file of `images` in `dir` that is missing, not a
 * regular file, resized or altered. Files of `skip` are not checked (already moved elsewhere).
 */
export async function recheckImages (dir: string, images: readonly ExpectedImage[], signal?: AbortSignal, skip: ReadonlySet<string> = new Set()): Promise<void> {
  for (const image of images) {
    if (skip.has(image.name)) continue
    const path = join(dir, image.name)
    const st = await lstat(path).catch(() => undefined)
    const where = `images in ${dir} changed on disk after they arrived`
    if (st === undefined || !st.isFile()) throw new ImageIntegrityError(`${where}: ${image.name} is missing`, { file: image.name })
    if (st.size !== image.size) throw new ImageIntegrityError(`${where}: ${image.name} has ${st.size} bytes, ${image.size} arrived`, { file: image.name })
    if (await sha256Of(path, signal) !== image.sha256) throw new ImageIntegrityError(`${where}: ${image.name} is corrupt (sha256 mismatch)`, { file: image.name })
  }
}
