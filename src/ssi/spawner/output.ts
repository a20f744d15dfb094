/** Reading a job's output files: one chunk at an offset, or tail -f until the job has ended. */
import { closeSync, openSync, readSync } from 'node:fs'
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
 * Reads are synchronous (a local file, at most CHUNK bytes from the page cache): through the thread
 * pool each read waited behind the cgroup removals and store writes of jobs just ended, and the
 * last empty reads stood between a job's end and its caller hearing of it.
 */
export async function * followFile (init: FollowInit): AsyncGenerator<Buffer> {
  const watcher = new DirWatcher(dirname(init.path), init.pollMs, [basename(init.path), 'exit'])
  const buf = Buffer.allocUnsafe(CHUNK)
  let fd: number | undefined
  let offset = init.fromOffset
  const next = (): Buffer => {
    fd ??= openSyncOptional(init.path)
    if (fd === undefined) return EMPTY
    const n = readSync(fd, buf, 0, CHUNK, offset)
    offset += n
    return n === 0 ? EMPTY : Buffer.from(buf.subarray(0, n))
  }
  try {
    for (;;) {
      init.signal?.throwIfAborted()
      const chunk = next()
      if (chunk.length > 0) {
        yield chunk
        continue
      }
      if (await init.finished()) {
        const last = next()
        if (last.length === 0) return
        yield last
        continue
      }
      await watcher.next(init.signal)
    }
  } finally {
    watcher.close()
    if (fd !== undefined) closeSync(fd)
  }
}

const EMPTY = Buffer.alloc(0)

function openSyncOptional (path: string): number | undefined {
  try {
    return openSync(path, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}
