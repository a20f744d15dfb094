/**
 * Blocking splice(2) loops on a thread of their own, for the image streamer (./image-streamer.ts):
 * moving a large image into CRIU's pipe takes one splice per pipeful CRIU drained, often a few
 * pages at a time, and a thread-pool round trip through the event loop for each (koffi async)
 * made a 1 GiB restore take 1.6-2.0 s instead of 0.7. A worker loops in the kernel instead.
 *
 * The worker owns nothing: the caller keeps both descriptors open (and their numbers unused by
 * anything else) until `move` settled.
 */
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

/** The worker's code (CommonJS, eval'd: no file to find from src/ or dist/ alike). */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const koffi = require(workerData.koffi)
const splice = koffi.load('libc.so.6').func('long splice(int, void *, int, void *, size_t, unsigned int)')
parentPort.on('message', ({ file, pipe, len }) => {
  let moved = 0
  let last = 1
  while (moved < len) {
    last = splice(file, null, pipe, null, len - moved, 1)
    if (last <= 0) break
    moved += last
  }
  parentPort.postMessage({ moved, ended: last === 0, broken: last < 0 })
})
`

export interface Moved {
  readonly moved: number
  /** The file ended before `len`. */
  readonly ended: boolean
  /** The pipe's reader closed it (or another splice error: the reader sees the pipe end early). */
  readonly broken: boolean
}

export class SpliceWorker {
  private readonly worker: Worker
  private waiting: { resolve: (m: Moved) => void, reject: (err: Error) => void } | undefined
  private failure: Error | undefined

  constructor () {
    const koffi = createRequire(import.meta.url).resolve('koffi')
    this.worker = new Worker(WORKER, { eval: true, workerData: { koffi } })
    this.worker.unref()
    this.worker.on('message', (m: Moved) => { this.settle(w => { w.resolve(m) }) })
    this.worker.on('error', (err) => { this.failure = err; this.settle(w => { w.reject(err) }) })
    this.worker.on('exit', () => {
      this.failure ??= new Error('the splice worker exited')
      this.settle(w => { w.reject(this.failure as Error) })
    })
  }

  /** Moves `len` bytes of `file` (from its position) into the blocking `pipe`; one call at a time. */
  async move (file: number, pipe: number, len: number): Promise<Moved> {
    if (this.failure !== undefined) throw this.failure
    if (this.waiting !== undefined) throw new Error('a splice is already under way on this worker')
    return await new Promise<Moved>((resolve, reject) => {
      this.waiting = { resolve, reject }
      this.worker.postMessage({ file, pipe, len })
    })
  }

  /** Ends the thread once its splice (if any) returned. */
  stop (): void {
    void this.worker.terminate()
  }

  private settle (how: (w: NonNullable<SpliceWorker['waiting']>) => void): void {
    const w = this.waiting
    this.waiting = undefined
    if (w !== undefined) how(w)
  }
}
