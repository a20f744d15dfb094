/**
 * Change notification for a job dir: inotify (fs.watch) wakes waiters at once, a poll timer covers
 * what inotify cannot see (a dir on a network fs, a watch limit reached, a process that died). The
 * poll interval doubles from pollMs up to 8 × pollMs while nothing happens, so thousands of idle
 * waiters stay cheap. Events are latched: a change between two `next()` calls is never lost.
 */
import { watch } from 'node:fs'
import type { FSWatcher } from 'node:fs'

export class DirWatcher {
  private dirty = false
  private wake: (() => void) | undefined
  private delay: number
  private readonly watcher: FSWatcher | undefined

  /** Watches `dir`; with `names`, only changes of those entries count. */
  constructor (dir: string, private readonly pollMs: number, names?: readonly string[]) {
    this.delay = pollMs
    const wanted = names === undefined ? undefined : new Set(names)
    try {
      this.watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (wanted === undefined || name === null || wanted.has(String(name))) this.poke()
      })
      this.watcher.on('error', () => { this.poke() })
    } catch {
      this.watcher = undefined
    }
  }

  private poke (): void {
    this.dirty = true
    this.delay = this.pollMs
    this.wake?.()
  }

  /** Resolves at the next change (at once if one happened since the last call) or after the poll delay. */
  async next (signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    if (!this.dirty) {
      await new Promise<void>((resolve, reject) => {
        const cleanup = (): void => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          this.wake = undefined
        }
        const done = (): void => { cleanup(); resolve() }
        const onAbort = (): void => { cleanup(); reject(signal?.reason) }
        const timer = setTimeout(() => {
          this.delay = Math.min(this.delay * 2, this.pollMs * 8)
          done()
        }, this.delay)
        this.wake = done
        signal?.addEventListener('abort', onAbort, { once: true })
      })
    }
    this.dirty = false
  }

  close (): void {
    this.watcher?.close()
    this.wake?.()
  }
}
