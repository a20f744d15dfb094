/**
 * Writers to jobs' stdin FIFOs. The FIFO is opened write-only and non-blocking (so a job that
 * has gone makes open fail with ENXIO instead of hanging) and driven by a net.Socket, which gives
 * back-pressure: a write resolves once the kernel took the data, i.e. when the job reads.
 * The shim holds its own write end, so the job never sees EOF merely because this writer closed
 * (or the daemon restarted); `close` ends this writer and the caller then tells the shim.
 */
import { constants, openSync } from 'node:fs'
import { Socket } from 'node:net'
import { StdinClosedError } from './errors.js'

export class StdinWriters {
  private readonly sockets = new Map<string, Socket>()

  private socketFor (path: string): Socket {
    const open = this.sockets.get(path)
    if (open !== undefined && !open.destroyed) return open
    let fd: number
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      const why = code === 'ENXIO' ? 'the job no longer reads its stdin' : code === 'ENOENT' ? 'the job has no stdin FIFO' : code
      throw new StdinClosedError(`cannot open ${path}: ${why}`, { cause: err })
    }
    const socket = new Socket({ fd, readable: false, writable: true })
    socket.on('error', () => { this.sockets.delete(path) })
    socket.on('close', () => { if (this.sockets.get(path) === socket) this.sockets.delete(path) })
    this.sockets.set(path, socket)
    return socket
  }

  async write (path: string, data: Uint8Array | string, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    const socket = this.socketFor(path)
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { reject(signal?.reason) }
      signal?.addEventListener('abort', onAbort, { once: true })
      socket.write(data, (err) => {
        signal?.removeEventListener('abort', onAbort)
        if (err === undefined || err === null) resolve()
        else reject(new StdinClosedError(`writing to ${path}: ${err.message}`, { cause: err }))
      })
    })
  }

  /** Flushes and closes this process's writer (no-op if none is open). */
  async close (path: string): Promise<void> {
    const socket = this.sockets.get(path)
    this.sockets.delete(path)
    if (socket === undefined || socket.destroyed) return
    await new Promise<void>((resolve) => {
      socket.once('close', () => { resolve() })
      socket.end()
    })
  }

  /** Drops the writer without flushing (the job is being released). */
  destroy (path: string): void {
    this.sockets.get(path)?.destroy()
    this.sockets.delete(path)
  }
}
