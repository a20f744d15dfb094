/** Reading a job's output files: one chunk at an offset, or tail -f until the job has ended. */
import { open } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import { DirWatcher } from './watch.js'

const CHUNK = 64 * 1024

async function openOptional (path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/** Up to maxBytes from `offset`; empty at the end of the file or if it does not exist (yet). */
export async function readChunk (path: string, offset: number, maxBytes: number): Promise<Buffer> {
  const fh = await openOptional(path)
  if (fh === undefined) return Buffer.alloc(0)
  try {
    const buf = Buffer.allocUnsafe(maxBytes)
    const { bytesRead } = await fh.read(buf, 0, maxBytes, offset)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}

export interface FollowInit {
  readonly path: string
  readonly fromOffset: number
  readonly pollMs: number
  /** True once nothing will write to the file any more (the job has ended or is lost). */
  readonly finished: () => Promise<boolean>
  readonly signal?: AbortSignal
}

/**
 * Yields the file's content from `fromOffset` as it grows. Ends when `finished()` is true and a
 * read after that returned nothing: everything written before the job ended has been yielded.
 */
export async function * followFile (init: FollowInit): AsyncGenerator<Buffer> {
  const watcher = new DirWatcher(dirname(init.path), init.pollMs, [basename(init.path), 'exit'])
  let fh: FileHandle | undefined
  let offset = init.fromOffset
  try {
    for (;;) {
      init.signal?.throwIfAborted()
      fh ??= await openOptional(init.path)
      const chunk = fh === undefined ? Buffer.alloc(0) : await readAt(fh, offset)
      if (chunk.length > 0) {
        offset += chunk.length
        yield chunk
        continue
      }
      if (await init.finished()) {
        fh ??= await openOptional(init.path)
        const last = fh === undefined ? Buffer.alloc(0) : await readAt(fh, offset)
        if (last.length === 0) return
        offset += last.length
        yield last
        continue
      }
      await watcher.next(init.signal)
    }
  } finally {
    watcher.close()
    // Not awaited: the follower is done, and its last message (the job's end) need not wait for a
    // thread-pool round trip queued behind the cgroup removal of the job that just ended.
    fh?.close().catch(() => {})
  }
}

async function readAt (fh: FileHandle, offset: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(CHUNK)
  const { bytesRead } = await fh.read(buf, 0, CHUNK, offset)
  return Buffer.from(buf.subarray(0, bytesRead))
}
