/**
 * The control-API client: what the CLI (and tests, and scripts) use to talk to the local daemon over
 * its Unix socket. It loads no zod and no libp2p — only node:net and the msgpack framing — so the CLI
 * starts fast; it trusts the daemon's results to match the schema types (the daemon validates them).
 *
 * Several calls may be in flight on one connection. A call ends with one result or error; a streaming
 * call first delivers events, and may receive input (stdin, signals) through `send`.
 */
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import { AsyncQueue } from './async-queue.js'
import { API_VERSION, CONNECTION_ERROR_ID, MAX_REQUEST_FRAME_BYTES, MAX_RESPONSE_FRAME_BYTES } from './constants.js'
import {
  ApiProtocolError, ApiTimeoutError, CallCancelledError, ConnectionClosedError, DaemonAccessDeniedError,
  DaemonConnectError, DaemonNotRunningError, RemoteError
} from './errors.js'
import { decodeFrameBody, encodeFrame, FrameDecoder } from './framing.js'
import type { ApiMethods, MethodEvent, MethodInput, MethodName, MethodParams, MethodResult, MethodTable } from './schema.js'

export interface ConnectOptions {
  readonly signal?: AbortSignal
  /** Give up connecting after this many ms. Default 5000. */
  readonly timeoutMs?: number
}

export interface CallOptions {
  /** Aborting cancels the call on the daemon and rejects with the signal's reason. */
  readonly signal?: AbortSignal
  /** Cancel the call and reject with ApiTimeoutError after this many ms. Default: no deadline. */
  readonly timeoutMs?: number
}

export interface StreamOptions<E> extends CallOptions {
  /** Receives each event. Without it, iterate the returned StreamingCall to read them. */
  readonly onEvent?: (event: E) => void
}

/**
 * A streaming call in flight. Iterate it for the events (iteration ends when the call does, and throws
 * its error), await `result` for the final result, `send` input, or `cancel` it.
 */
export interface StreamingCall<E, R, I> extends AsyncIterable<E> {
  readonly id: number
  readonly result: Promise<R>
  /** Sends one `input` message; resolves once the socket accepted it (backpressure). */
  send(input: I): Promise<void>
  cancel(): void
}

interface PendingCall {
  readonly method: string
  readonly resolve: (result: unknown) => void
  readonly reject: (err: unknown) => void
  readonly onEvent: (event: unknown) => void
  readonly cleanup: () => void
}

/** Events queued for an iterating consumer before the socket is paused. */
const EVENT_HIGH_WATER_MARK = 256

export class ControlClient<T extends MethodTable = ApiMethods> {
  private readonly decoder = new FrameDecoder(MAX_RESPONSE_FRAME_BYTES)
  private readonly pending = new Map<number, PendingCall>()
  private readonly pausedBy = new Set<number>()
  private nextId = 1
  private closedError: Error | undefined
  private connectionError: Error | undefined
  private waitingForDrain: Promise<void> | undefined

  private constructor (private readonly socket: Socket, readonly socketPath: string) {
    socket.on('data', chunk => { this.onData(chunk as Buffer) })
    socket.on('error', err => {
      this.connectionError ??= new ConnectionClosedError(`connection to the ssi daemon lost: ${err.message}`, { cause: err })
    })
    socket.on('close', () => { this.onClose() })
  }

  /**
   * Connects to the daemon's control socket.
   * @throws DaemonNotRunningError (no socket, or a stale one), DaemonAccessDeniedError, ApiTimeoutError,
   * DaemonConnectError, or the signal's reason.
   */
  static async connect<T extends MethodTable = ApiMethods> (socketPath: string, options: ConnectOptions = {}): Promise<ControlClient<T>> {
    const socket = await openSocket(socketPath, options)
    return new ControlClient<T>(socket, socketPath)
  }

  /** Calls `method` and resolves with its result (events of a streaming method are ignored). */
  async call<M extends MethodName<T>> (method: M, params: MethodParams<M, T>, options: CallOptions = {}): Promise<MethodResult<M, T>> {
    return await (this.begin(method, params, options, () => {}).result as Promise<MethodResult<M, T>>)
  }

  /** Starts a streaming call: see StreamingCall. */
  stream<M extends MethodName<T>> (
    method: M, params: MethodParams<M, T>, options: StreamOptions<MethodEvent<M, T>> = {}
  ): StreamingCall<MethodEvent<M, T>, MethodResult<M, T>, MethodInput<M, T>> {
    let iterating = false
    const queue = new AsyncQueue<MethodEvent<M, T>>({
      highWaterMark: EVENT_HIGH_WATER_MARK,
      onDrained: () => { this.resumeFor(id) }
    })
    const onEvent = options.onEvent ?? ((event: unknown) => {
      // Pause reading only while someone iterates: a caller that just awaits `result` must still get it.
      if (!queue.push(event as MethodEvent<M, T>) && iterating) this.pauseFor(id)
    })
    const { id, result } = this.begin(method, params, options, onEvent as (event: unknown) => void)
    result.then(() => { queue.end() }, (err: unknown) => { queue.end(err) })
    result.catch(() => {}) // the caller may only iterate; its rejection is seen there
    return {
      id,
      result: result as Promise<MethodResult<M, T>>,
      send: async (input) => { await this.sendInput(id, input) },
      cancel: () => { this.abortCall(id, new CallCancelledError(`${method} cancelled by the client`)) },
      [Symbol.asyncIterator]: () => {
        iterating = true
        return queue[Symbol.asyncIterator]()
      }
    }
  }

  /** Closes the connection; calls in flight reject with ConnectionClosedError. Safe to call twice. */
  close (): void {
    if (this.closedError !== undefined) return
    this.closedError = new ConnectionClosedError('connection to the ssi daemon closed by the client')
    this.rejectAll(this.closedError)
    this.socket.end(() => { this.socket.destroy() })
  }

  private begin (method: string, params: unknown, options: CallOptions, onEvent: (event: unknown) => void): { id: number, result: Promise<unknown> } {
    const id = this.nextId++
    let resolve!: (value: unknown) => void
    let reject!: (err: unknown) => void
    const result = new Promise<unknown>((res, rej) => { resolve = res; reject = rej })
    const { signal, timeoutMs } = options
    if (this.closedError !== undefined) reject(this.closedError)
    else if (signal?.aborted === true) reject(signal.reason)
    else {
      const onAbort = (): void => { this.abortCall(id, signal?.reason) }
      const timer = timeoutMs === undefined
        ? undefined
        : setTimeout(() => { this.abortCall(id, new ApiTimeoutError(`${method} timed out after ${timeoutMs} ms`)) }, timeoutMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      const cleanup = (): void => { clearTimeout(timer); signal?.removeEventListener('abort', onAbort) }
      this.pending.set(id, { method, resolve, reject, onEvent, cleanup })
      try {
        this.write({ v: API_VERSION, id, type: 'call', method, params })
      } catch (err) {
        this.settle(id)?.reject(err)
      }
    }
    return { id, result }
  }

  private async sendInput (id: number, data: unknown): Promise<void> {
    if (!this.pending.has(id)) throw this.closedError ?? new ConnectionClosedError(`call ${id} is no longer in flight`)
    if (!this.write({ v: API_VERSION, id, type: 'input', data })) await this.drained()
  }

  /** Sends a cancel for a call in flight and rejects it locally at once with `reason`. */
  private abortCall (id: number, reason: unknown): void {
    const call = this.settle(id)
    if (call === undefined) return
    try {
      this.write({ v: API_VERSION, id, type: 'cancel' })
    } catch {
      // The connection is gone: the daemon aborts the call on disconnect anyway.
    }
    call.reject(reason ?? new CallCancelledError(`${call.method} cancelled`))
  }

  /** Removes a call from the table and releases its timer, listener and read pause. */
  private settle (id: number): PendingCall | undefined {
    const call = this.pending.get(id)
    if (call === undefined) return undefined
    this.pending.delete(id)
    call.cleanup()
    this.resumeFor(id)
    return call
  }

  private write (message: unknown): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) {
      throw this.closedError ?? new ConnectionClosedError('connection to the ssi daemon is closed')
    }
    return this.socket.write(encodeFrame(message, MAX_REQUEST_FRAME_BYTES))
  }

  private async drained (): Promise<void> {
    this.waitingForDrain ??= new Promise<void>(resolve => {
      const done = (): void => {
        this.socket.off('drain', done)
        this.socket.off('close', done)
        this.waitingForDrain = undefined
        resolve()
      }
      this.socket.on('drain', done)
      this.socket.on('close', done)
    })
    await this.waitingForDrain
  }

  private pauseFor (id: number): void {
    this.pausedBy.add(id)
    this.socket.pause()
  }

  private resumeFor (id: number): void {
    if (this.pausedBy.delete(id) && this.pausedBy.size === 0) this.socket.resume()
  }

  private onData (chunk: Buffer): void {
    try {
      for (const body of this.decoder.push(chunk)) this.onMessage(decodeFrameBody(body))
    } catch (err) {
      this.connectionError = err instanceof Error ? err : new ApiProtocolError(String(err))
      this.socket.destroy()
    }
  }

  private onMessage (value: unknown): void {
    const message = asServerMessage(value)
    if (message.id === CONNECTION_ERROR_ID) {
      if (message.type === 'error') this.connectionError = remoteError(message.error)
      return
    }
    const call = this.pending.get(message.id)
    if (call === undefined) return // cancelled or timed out here: a late answer
    if (message.type === 'event') this.deliverEvent(message.id, call, message.event)
    else if (message.type === 'result') this.settle(message.id)?.resolve(message.result)
    else if (message.type === 'error') this.settle(message.id)?.reject(remoteError(message.error))
    // Unknown kinds come from a newer daemon (kinds are only appended): ignore them.
  }

  private deliverEvent (id: number, call: PendingCall, event: unknown): void {
    try {
      call.onEvent(event)
    } catch (err) {
      this.abortCall(id, err) // the caller's onEvent threw: the call fails with its error
    }
  }

  private onClose (): void {
    const reason = this.closedError ?? this.connectionError ??
      new ConnectionClosedError('the ssi daemon closed the connection')
    this.closedError ??= reason
    this.rejectAll(reason)
  }

  private rejectAll (reason: Error): void {
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(reason)
  }
}

interface ServerMessageShape {
  readonly id: number
  readonly type: string
  readonly result?: unknown
  readonly event?: unknown
  readonly error?: unknown
}

/** A cheap structural check of a server message (the client does not load zod). */
function asServerMessage (value: unknown): ServerMessageShape {
  if (typeof value !== 'object' || value === null) throw new ApiProtocolError('the daemon sent a message that is not a map')
  const { v, id, type } = value as Record<string, unknown>
  if (v !== API_VERSION) {
    throw new ApiProtocolError(`the daemon speaks control-API version ${String(v)}, this client speaks ${API_VERSION}`)
  }
  if (typeof id !== 'number' || typeof type !== 'string') throw new ApiProtocolError('the daemon sent a message without id or type')
  return value as ServerMessageShape
}

function remoteError (error: unknown): RemoteError {
  const { name, message, code } = (typeof error === 'object' && error !== null ? error : {}) as Record<string, unknown>
  return new RemoteError(
    typeof name === 'string' ? name : 'Error',
    typeof message === 'string' ? message : 'the daemon reported an error without a message',
    typeof code === 'string' ? code : undefined
  )
}

async function openSocket (socketPath: string, { signal, timeoutMs = 5000 }: ConnectOptions): Promise<Socket> {
  signal?.throwIfAborted()
  return await new Promise<Socket>((resolve, reject) => {
    const socket = connect(socketPath)
    const finish = (err?: unknown): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      socket.off('error', onError)
      socket.off('connect', onConnect)
      if (err === undefined) { resolve(socket); return }
      socket.destroy()
      reject(err)
    }
    const onConnect = (): void => { finish() }
    const onError = (err: NodeJS.ErrnoException): void => { finish(connectError(socketPath, err)) }
    const onAbort = (): void => { finish(signal?.reason) }
    const timer = setTimeout(() => {
      finish(new ApiTimeoutError(`timed out after ${timeoutMs} ms connecting to the ssi daemon at ${socketPath}`))
    }, timeoutMs)
    socket.once('connect', onConnect)
    socket.once('error', onError)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

function connectError (socketPath: string, err: NodeJS.ErrnoException): Error {
  switch (err.code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new DaemonNotRunningError(socketPath, undefined, { cause: err })
    case 'ECONNREFUSED':
      return new DaemonNotRunningError(socketPath, 'nothing listens on the socket: a stale file of a stopped daemon?', { cause: err })
    case 'EACCES':
    case 'EPERM':
      return new DaemonAccessDeniedError(socketPath, { cause: err })
    default:
      return new DaemonConnectError(`cannot connect to the ssi daemon at ${socketPath}: ${err.message}`, { cause: err })
  }
}
