/**
 * inotify(7) on one directory for "closed after writing" (IN_CLOSE_WRITE): Node's fs.watch reports
 * only 'change' and 'rename', so it cannot tell a file still being written from a finished one.
 * The descriptor is non-blocking and polled (`closedSince`): callers already poll the directory.
 */
import koffi from 'koffi'
import { close, closeSync, readSync } from 'node:fs'
import { NativeError } from './errors.js'

const IN_CLOSE_WRITE = 0x8
const IN_Q_OVERFLOW = 0x4000
const IN_NONBLOCK = 0o4000
const IN_CLOEXEC = 0o2000000
/** struct inotify_event without its name: wd, mask, cookie, len. */
const EVENT_HEAD_BYTES = 16

type InotifyInit = (flags: number) => number
type InotifyAddWatch = (fd: number, path: string, mask: number) => number

let bound: { init: InotifyInit, add: InotifyAddWatch } | undefined

function bind (): { init: InotifyInit, add: InotifyAddWatch } {
  if (bound !== undefined) return bound
  const libc = koffi.load('libc.so.6')
  bound = {
    init: libc.func('int inotify_init1(int flags)') as InotifyInit,
    add: libc.func('int inotify_add_watch(int fd, const char *pathname, uint32_t mask)') as InotifyAddWatch
  }
  return bound
}

/** Names of the files of one directory that a writer closed since the watch began. */
export class ClosedFilesWatch {
  private readonly closed = new Set<string>()
  private readonly buf = Buffer.allocUnsafe(64 * 1024)
  private fd: number | undefined
  /** The kernel dropped events (queue overflow): nothing can be told from the watch any more. */
  overflowed = false

  /** @throws NativeError (ENOSPC: too many watches, ENOENT: no such dir, ...) */
  constructor (dir: string) {
    const { init, add } = bind()
    const fd = init(IN_NONBLOCK | IN_CLOEXEC)
    if (fd < 0) throw new NativeError('inotify_init1', koffi.errno())
    if (add(fd, dir, IN_CLOSE_WRITE) < 0) {
      const errno = koffi.errno()
      closeSync(fd)
      throw new NativeError('inotify_add_watch', errno, dir)
    }
    this.fd = fd
  }

  /** Whether a writer closed `name` since the watch began (reads the events queued so far). */
  hasClosed (name: string): boolean {
    this.drain()
    return this.closed.has(name)
  }

  /**
   * Closes on the thread pool: the kernel waits out an SRCU grace period before it frees the
   * watch's marks (fsnotify_destroy_group), which blocked the event loop 13-22 ms here, at the
   * end of every migration's page send and inside its downtime.
   */
  close (): void {
    if (this.fd !== undefined) close(this.fd, () => {})
    this.fd = undefined
  }

  private drain (): void {
    if (this.fd === undefined) return
    for (;;) {
      let n: number
      try {
        n = readSync(this.fd, this.buf, 0, this.buf.byteLength, null)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return
        throw err
      }
      if (n <= 0) return
      this.parse(n)
    }
  }

  private parse (n: number): void {
    for (let at = 0; at + EVENT_HEAD_BYTES <= n;) {
      const mask = this.buf.readUInt32LE(at + 4)
      const len = this.buf.readUInt32LE(at + 12)
      if ((mask & IN_Q_OVERFLOW) !== 0) this.overflowed = true
      if ((mask & IN_CLOSE_WRITE) !== 0 && len > 0) {
        const raw = this.buf.subarray(at + EVENT_HEAD_BYTES, at + EVENT_HEAD_BYTES + len)
        const end = raw.indexOf(0)
        this.closed.add(raw.subarray(0, end < 0 ? len : end).toString('utf8'))
      }
      at += EVENT_HEAD_BYTES + len
    }
  }
}
