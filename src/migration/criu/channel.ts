/**
 * One end of a SOCK_SEQPACKET socket, driven by Node's event loop.
 *
 * Why this shape: `new net.Socket({ fd })` refuses SEQPACKET fds (libuv's uv_guess_handle() says
 * UNKNOWN), and reading with fs.read() or a blocking koffi call would park a libuv thread-pool
 * thread for as long as CRIU works (seconds for a large dump), starving file I/O. Opening the fd
 * as a libuv pipe handle (uv_pipe_open, what Node does for any AF_UNIX stream) keeps it on epoll
 * with no thread at all. On a SEQPACKET socket each read(2) returns exactly one message, and
 * libuv's 64 KiB read buffer is larger than any CRIU RPC message (a few hundred bytes), so one
 * 'data' chunk is one message. Writes are one write(2) each as long as only one is pending, which
 * holds because CRIU's RPC is strictly request/response: `send` waits for its write to complete.
 *
 * The pipe handle constructor is reached through process.binding('pipe_wrap'), which Node keeps
 * for compatibility (DEP0111 is documentation-only unless --pending-deprecation is given).
 */
import { Socket } from 'node:net'
import { NativeError } from '../../native/errors.js'

/** Larger than any message CRIU sends; a chunk this big may have been truncated by the kernel. */
const MAX_MESSAGE = 65536

interface PipeHandle { open (fd: number): number }
interface PipeWrap { Pipe: new (type: number) => PipeHandle, constants: { SOCKET: number } }

function pipeWrap (): PipeWrap {
  const binding = (process as unknown as { binding (name: string): unknown }).binding('pipe_wrap')
  return binding as PipeWrap
}

/** The channel closed or broke before the expected message arrived. */
export class ChannelClosedError extends Error {
  static override name = 'ChannelClosedError'
  override name = 'ChannelClosedError'
}

interface Waiter { resolve: (message: Buffer | undefined) => void, reject: (err: Error) => void }

/** Message-oriented wrapper over a connected SEQPACKET fd. Takes ownership of the fd. */
export class SeqpacketChannel {
  private readonly socket: Socket
  private readonly inbox: Buffer[] = []
  private waiter: Waiter | undefined
  private ended = false
  private failure: Error | undefined

  constructor (fd: number) {
    const { Pipe, constants } = pipeWrap()
    const handle = new Pipe(constants.SOCKET)
    const status = handle.open(fd)
    // libuv returns -errno on failure.
    if (status !== 0) throw new NativeError('uv_pipe_open', -status)
    this.socket = new Socket({ handle, readable: true, writable: true } as unknown as ConstructorParameters<typeof Socket>[0])
    this.socket.on('data', (chunk: Buffer) => { this.onMessage(chunk) })
    this.socket.on('end', () => { this.ended = true; this.settle() })
    this.socket.on('error', (err: Error) => { this.failure = err; this.settle() })
    this.socket.on('close', () => { this.ended = true; this.settle() })
  }

  /** Sends one message; resolves when the kernel has taken it. */
  async send (message: Uint8Array): Promise<void> {
    if (this.failure !== undefined) throw this.failure
    await new Promise<void>((resolve, reject) => {
      this.socket.write(message, (err) => { if (err == null) resolve(); else reject(err) })
    })
  }

  /** The next message, or undefined once the peer has closed its end. One caller at a time. */
  async receive (): Promise<Buffer | undefined> {
    const queued = this.inbox.shift()
    if (queued !== undefined) return queued
    if (this.failure !== undefined) throw this.failure
    if (this.ended) return undefined
    if (this.waiter !== undefined) throw new Error('SeqpacketChannel.receive: concurrent receive')
    return await new Promise<Buffer | undefined>((resolve, reject) => { this.waiter = { resolve, reject } })
  }

  /** Closes our end (idempotent). A pending receive resolves with undefined. */
  close (): void {
    this.socket.destroy()
    this.ended = true
    this.settle()
  }

  private onMessage (chunk: Buffer): void {
    if (chunk.length >= MAX_MESSAGE) {
      this.failure = new ChannelClosedError(`message of ${chunk.length}+ bytes may have been truncated`)
    } else {
      this.inbox.push(chunk)
    }
    this.settle()
  }

  private settle (): void {
    const waiter = this.waiter
    if (waiter === undefined) return
    const queued = this.inbox.shift()
    if (queued !== undefined) {
      this.waiter = undefined
      waiter.resolve(queued)
    } else if (this.failure !== undefined) {
      this.waiter = undefined
      waiter.reject(this.failure)
    } else if (this.ended) {
      this.waiter = undefined
      waiter.resolve(undefined)
    }
  }
}
