/**
 * The daemon side of one control-API connection: frames in, validated messages, handler calls, frames
 * out. Transport-agnostic apart from the net.Socket it reads and writes; the ControlServer
 * (src/node/control-server.ts) owns the socket file, accepting, limits on connections and peer
 * credentials. Daemon-only: it loads zod, so the CLI never imports it.
 */
import type { Socket } from 'node:net'
import { AsyncQueue } from './async-queue.js'
import {
  CallCancelledError, DuplicateCallIdError, InvalidMessageError, InvalidParamsError, InvalidResultError,
  PermissionDeniedError, TooManyCallsError, UnknownMethodError, UnsupportedVersionError, toErrorPayload
} from './errors.js'
import { decodeFrameBody, encodeFrame, FrameDecoder } from './framing.js'
import { API_VERSION, clientMessageSchema, CONNECTION_ERROR_ID, describeIssues } from './schema.js'
import type { CallMessage, InputMessage, MethodSpec, MethodTable } from './schema.js'
import type { z } from 'zod'

/** Who is calling: from SO_PEERCRED, fixed for the connection. */
export interface Caller {
  readonly pid: number
  readonly uid: number
  readonly gid: number
}

/** What a handler gets besides its params. */
export interface CallContext<E = unknown, I = unknown> {
  readonly caller: Caller
  /** Aborts when the client cancels the call, disconnects, or the daemon stops. */
  readonly signal: AbortSignal
  /** Sends one event of a streaming call; waits while the socket is congested. Throws once the call is over. */
  emit(event: E): Promise<void>
  /** The client's `input` messages for this call (validated); ends when the call does. */
  readonly inputs: AsyncIterable<I>
}

export type AnyHandler = (params: unknown, ctx: CallContext<never, unknown>) => Promise<unknown>

/** A pino-compatible logging subset. */
export interface ApiLogger {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

/** What every connection of one server shares. */
export interface ConnectionCore {
  readonly methods: MethodTable
  readonly handlers: ReadonlyMap<string, AnyHandler>
  readonly logger: ApiLogger
  readonly maxFrameBytes: number
  readonly maxResponseFrameBytes: number
  readonly maxCallsPerConnection: number
  /** Inputs queued for one call before the connection stops reading. */
  readonly maxQueuedInputs: number
  /** Validate results and events against the schema (cheap; default on outside production). */
  readonly validateResults: boolean
}

interface ActiveCall {
  readonly id: number
  readonly method: string
  readonly spec: MethodSpec
  readonly controller: AbortController
  readonly inputs: AsyncQueue<unknown>
  finished: boolean
  done?: Promise<void>
}

/** Pause reason (never a call id) while the client does not read our replies. */
const OUTPUT_CONGESTED = -1

/** How long a refused or failed connection may linger (reading and discarding) before it is destroyed. */
const LINGER_MS = 2000

/**
 * Sends a connection-level error and half-closes, but keeps reading (and discarding) until the client
 * closes or LINGER_MS passes. Destroying at once would make the client's in-flight writes fail with
 * EPIPE/ECONNRESET, and Node then drops the error frame unread.
 */
export function endWithError (socket: Socket, err: unknown): void {
  socket.end(encodeFrame({ v: API_VERSION, id: CONNECTION_ERROR_ID, type: 'error', error: toErrorPayload(err) }))
  socket.resume()
  const timer = setTimeout(() => { socket.destroy() }, LINGER_MS)
  timer.unref()
  socket.once('close', () => { clearTimeout(timer) })
}

export class ServerConnection {
  private readonly decoder: FrameDecoder
  private readonly calls = new Map<number, ActiveCall>()
  private readonly pausedBy = new Set<number>()
  /** Replies waiting for the socket to drain. */
  private waitingSends = 0
  private closing = false
  private drainWait: Promise<void> | undefined

  constructor (private readonly socket: Socket, readonly caller: Caller, private readonly core: ConnectionCore, onClosed: () => void) {
    this.decoder = new FrameDecoder(core.maxFrameBytes)
    socket.on('data', chunk => { this.onData(chunk as Buffer) })
    socket.on('drain', () => { this.resumeIfDrained() })
    socket.on('error', err => { core.logger.debug({ err: err.message, pid: caller.pid }, 'control connection error') })
    socket.on('close', () => {
      this.abortAll(new CallCancelledError('the client disconnected'))
      onClosed()
    })
  }

  /** Calls in flight. */
  get callCount (): number {
    return this.calls.size
  }

  /**
   * Cancels every call with `reason`, lets their error replies go out (up to `graceMs`), then closes.
   */
  async close (reason: Error, graceMs = 1000): Promise<void> {
    const running = [...this.calls.values()].map(async call => await call.done)
    this.abortAll(reason)
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled(running),
      new Promise(resolve => { timer = setTimeout(resolve, graceMs) })
    ])
    clearTimeout(timer)
    this.socket.destroy()
  }

  private onData (chunk: Buffer): void {
    if (this.closing) return
    let bodies: Buffer[]
    try {
      bodies = this.decoder.push(chunk)
    } catch (err) {
      this.fail(err)
      return
    }
    for (const body of bodies) this.onFrame(body)
    // A client that sends faster than it reads the replies: stop reading until they drain, so what
    // the daemon holds for it stays bounded (the replies to one chunk) instead of growing forever.
    if (this.socket.writableNeedDrain && !this.closing) this.pauseFor(OUTPUT_CONGESTED)
  }

  /** An unrecoverable framing error: say why, then close (we cannot find the next frame boundary). */
  private fail (err: unknown): void {
    this.closing = true
    this.core.logger.warn({ err: (err as Error).message, pid: this.caller.pid, uid: this.caller.uid }, 'closing control connection')
    this.abortAll(new CallCancelledError('the connection is being closed after a protocol error'))
    endWithError(this.socket, err)
  }

  private onFrame (body: Buffer): void {
    let value: unknown
    try {
      value = decodeFrameBody(body)
    } catch (err) {
      this.sendError(CONNECTION_ERROR_ID, err)
      return
    }
    const parsed = clientMessageSchema.safeParse(value)
    if (!parsed.success) {
      this.sendError(this.replyIdOf(value), new InvalidMessageError(`invalid message: ${describeIssues(parsed.error)}`))
      return
    }
    const message = parsed.data
    if (message.v !== API_VERSION) {
      const err = new UnsupportedVersionError(`control-API version ${message.v} is not supported: this daemon speaks version ${API_VERSION}`)
      this.sendError(this.replyIdOf(message), err)
      return
    }
    if (message.type === 'call') this.startCall(message)
    else if (message.type === 'input') this.onInput(message)
    else this.calls.get(message.id)?.controller.abort(new CallCancelledError('cancelled by the client'))
  }

  /** The id to answer a bad message on: its own, unless that would end a different call in flight. */
  private replyIdOf (value: unknown): number {
    const id = (value as { id?: unknown } | null)?.id
    const usable = typeof id === 'number' && Number.isSafeInteger(id) && id > 0 && !this.calls.has(id)
    return usable ? id : CONNECTION_ERROR_ID
  }

  private startCall (message: CallMessage): void {
    const refusal = this.admit(message)
    if (refusal !== undefined) {
      this.sendError(message.id, refusal)
      return
    }
    const spec = this.core.methods[message.method] as MethodSpec
    const handler = this.core.handlers.get(message.method) as AnyHandler
    // A client may omit params (msgpack has no "absent"): treat that as {}.
    const params = spec.params.safeParse(message.params ?? {})
    if (!params.success) {
      this.sendError(message.id, new InvalidParamsError(`invalid params for ${message.method}: ${describeIssues(params.error, 'params')}`))
      return
    }
    const call: ActiveCall = {
      id: message.id,
      method: message.method,
      spec,
      controller: new AbortController(),
      inputs: new AsyncQueue({ highWaterMark: this.core.maxQueuedInputs, onDrained: () => { this.resumeFor(message.id) } }),
      finished: false
    }
    this.calls.set(call.id, call)
    call.done = this.runCall(call, handler, params.data)
  }

  /** Why a call may not start, or undefined if it may. */
  private admit (message: CallMessage): Error | undefined {
    const { id, method } = message
    if (id === CONNECTION_ERROR_ID) return new InvalidMessageError(`call id ${CONNECTION_ERROR_ID} is reserved`)
    if (this.calls.has(id)) return new DuplicateCallIdError(`call id ${id} is already in flight on this connection`)
    if (this.calls.size >= this.core.maxCallsPerConnection) {
      return new TooManyCallsError(`too many calls in flight on this connection (limit ${this.core.maxCallsPerConnection})`)
    }
    const spec = Object.hasOwn(this.core.methods, method) ? this.core.methods[method] : undefined
    if (spec === undefined) return new UnknownMethodError(`unknown method '${method}'`)
    if (!this.core.handlers.has(method)) return new UnknownMethodError(`method '${method}' is not served by this daemon`)
    if (spec.adminOnly === true && this.caller.uid !== 0) {
      return new PermissionDeniedError(`${method} may only be called by root (caller uid ${this.caller.uid})`)
    }
    return undefined
  }

  private async runCall (call: ActiveCall, handler: AnyHandler, params: unknown): Promise<void> {
    const { signal } = call.controller
    const ctx: CallContext<never, unknown> = {
      caller: this.caller,
      signal,
      emit: async (event: unknown) => { await this.emit(call, event) },
      inputs: call.inputs
    }
    try {
      const result = await handler(params, ctx)
      call.finished = true
      await this.send({ v: API_VERSION, id: call.id, type: 'result', result: this.checked(call.spec.result, result, `result of ${call.method}`) })
    } catch (err) {
      call.finished = true
      const reported = signal.aborted ? signal.reason as unknown : err
      if (err instanceof InvalidResultError) this.core.logger.error({ method: call.method, err: err.message }, 'handler broke the schema')
      else this.core.logger.debug({ method: call.method, err: (err as Error)?.message }, 'call failed')
      await this.send({ v: API_VERSION, id: call.id, type: 'error', error: toErrorPayload(reported) }).catch(() => {})
    } finally {
      this.calls.delete(call.id)
      call.inputs.end()
      this.resumeFor(call.id)
    }
  }

  private async emit (call: ActiveCall, event: unknown): Promise<void> {
    call.controller.signal.throwIfAborted()
    if (call.finished) throw new InvalidResultError(`${call.method}: emit() after the call finished`)
    if (call.spec.event === undefined) throw new InvalidResultError(`${call.method} is not a streaming method (no event schema)`)
    const checked = this.checked(call.spec.event, event, `event of ${call.method}`)
    await this.send({ v: API_VERSION, id: call.id, type: 'event', event: checked }, call.controller.signal)
  }

  private checked (schema: z.ZodType, value: unknown, what: string): unknown {
    if (!this.core.validateResults) return value
    const parsed = schema.safeParse(value)
    if (!parsed.success) throw new InvalidResultError(`${what} does not match the API schema: ${describeIssues(parsed.error)}`)
    return value
  }

  private onInput (message: InputMessage): void {
    const call = this.calls.get(message.id)
    if (call === undefined) return // the call already finished: a late input
    const schema = call.spec.input
    if (schema === undefined) {
      this.core.logger.debug({ method: call.method }, 'dropped input to a method that takes none')
      return
    }
    const parsed = schema.safeParse(message.data)
    if (!parsed.success) {
      this.sendError(CONNECTION_ERROR_ID, new InvalidMessageError(`invalid input for ${call.method}: ${describeIssues(parsed.error, 'data')}`))
      return
    }
    if (!call.inputs.push(parsed.data)) this.pauseFor(call.id)
  }

  /** Writes one message, first waiting while the socket is congested (or until `signal` aborts). */
  private async send (message: unknown, signal?: AbortSignal): Promise<void> {
    const frame = encodeFrame(message, this.core.maxResponseFrameBytes)
    if (this.socket.writableNeedDrain) {
      this.waitingSends++
      try {
        while (this.socket.writableNeedDrain && !this.socket.destroyed) await this.drained(signal)
      } finally {
        this.waitingSends--
      }
    }
    if (this.socket.destroyed || this.socket.writableEnded) return
    this.socket.write(frame)
    this.resumeIfDrained()
  }

  /** Reads again once every queued reply went out (see onData). */
  private resumeIfDrained (): void {
    if (this.waitingSends === 0 && !this.socket.writableNeedDrain) this.resumeFor(OUTPUT_CONGESTED)
  }

  private sendError (id: number, err: unknown): void {
    this.send({ v: API_VERSION, id, type: 'error', error: toErrorPayload(err) }).catch(() => {})
  }

  private async drained (signal?: AbortSignal): Promise<void> {
    this.drainWait ??= new Promise<void>(resolve => {
      const done = (): void => {
        this.socket.off('drain', done)
        this.socket.off('close', done)
        this.drainWait = undefined
        resolve()
      }
      this.socket.on('drain', done)
      this.socket.on('close', done)
    })
    if (signal === undefined) { await this.drainWait; return }
    signal.throwIfAborted()
    let onAbort: (() => void) | undefined
    try {
      await Promise.race([this.drainWait, new Promise<never>((_resolve, reject) => {
        onAbort = () => { reject(signal.reason) }
        signal.addEventListener('abort', onAbort, { once: true })
      })])
    } finally {
      if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
    }
  }

  private pauseFor (id: number): void {
    this.pausedBy.add(id)
    this.socket.pause()
  }

  private resumeFor (id: number): void {
    if (this.pausedBy.delete(id) && this.pausedBy.size === 0 && !this.closing) this.socket.resume()
  }

  private abortAll (reason: Error): void {
    for (const call of this.calls.values()) {
      call.controller.abort(reason)
      call.inputs.end()
    }
  }
}
