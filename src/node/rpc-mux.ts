/**
 * Peer calls multiplexed over one long-lived stream per peer (`/ssi/rpc-mux/1`): opening a yamux
 * stream costs ~1.3 ms (more on a busy node), a frame on an open one ~0.2 ms round trip.
 *
 * Frames are length-prefixed msgpack, each carrying its call's id:
 *   caller → callee: {t:'call', id, v, method, params} | {t:'cancel', id} | {t:'ack', id, n}
 *   callee → caller: {t:'event', id, event} | {t:'result', id, result} | {t:'error', id, name, message}
 * Flow control: the callee sends at most EVENT_WINDOW events of one call that the caller has not
 * acknowledged ('ack' with how many it has handled), so a slow consumer of one call's events holds
 * back that call only, and never more than EVENT_WINDOW frames of it are buffered.
 * Every frame is size-limited and validated before use; a peer that sends garbage loses the stream.
 */
import { lpStream } from '@libp2p/utils'
import { z } from 'zod'
import { decodeWith, encodeMessage, PEER_PROTOCOL_VERSION } from '../protocol/peer.js'
import { NodeUnavailableError, PeerCallError } from '../ssi/ports.js'
import type { PeerHandler, PeerStreamOptions } from '../ssi/ports.js'
import type { Logger } from './logger.js'
import type { Stream } from '@libp2p/interface'

export const RPC_MUX_PROTOCOL = '/ssi/rpc-mux/1'
/** Unacknowledged events one call may have in flight. */
export const EVENT_WINDOW = 16
/** Calls one caller may have running on a callee at once. */
export const MAX_CALLS_PER_STREAM = 4096

const id = z.number().int().positive().max(Number.MAX_SAFE_INTEGER)
const callerFrameSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('call'), id, v: z.literal(PEER_PROTOCOL_VERSION), method: z.string().max(64), params: z.unknown() }).strict(),
  z.object({ t: z.literal('cancel'), id }).strict(),
  z.object({ t: z.literal('ack'), id, n: z.number().int().positive().max(EVENT_WINDOW) }).strict()
])
const calleeFrameSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('event'), id, event: z.unknown() }),
  z.object({ t: z.literal('result'), id, result: z.unknown() }),
  z.object({ t: z.literal('error'), id, name: z.string().max(128), message: z.string().max(8192) })
])
type CalleeFrame = z.infer<typeof calleeFrameSchema>

/** A call in flight on the caller's side: its events are handled in order, then its end. */
class PendingCall {
  readonly done: Promise<unknown>
  private resolve!: (v: unknown) => void
  private reject!: (e: unknown) => void
  private readonly queue: CalleeFrame[] = []
  private draining = false
  private handled = 0
  private settled = false

  constructor (private readonly onEvent: PeerStreamOptions['onEvent'], private readonly ack: (n: number) => void, private readonly node: string) {
    this.done = new Promise((resolve, reject) => { this.resolve = resolve; this.reject = reject })
    this.done.catch(() => {})
  }

  push (frame: CalleeFrame): void {
    this.queue.push(frame)
    if (!this.draining) void this.drain()
  }

  fail (err: unknown): void {
    if (this.settled) return
    this.settled = true
    this.reject(err)
  }

  private async drain (): Promise<void> {
    this.draining = true
    try {
      for (let f = this.queue.shift(); f !== undefined && !this.settled; f = this.queue.shift()) {
        if (f.t === 'event') {
          await this.onEvent(f.event)
          if (++this.handled >= EVENT_WINDOW / 2) { this.ack(this.handled); this.handled = 0 }
        } else if (f.t === 'result') {
          this.settled = true
          this.resolve(f.result)
        } else {
          this.fail(new PeerCallError(f.message, f.name, this.node))
        }
      }
    } catch (err) {
      this.fail(err)
    } finally {
      this.draining = false
    }
  }
}

/** The caller's end: one stream to one peer, any number of concurrent calls. */
export class RpcChannel {
  private readonly pending = new Map<number, PendingCall>()
  private readonly lp
  private nextId = 1
  private closedWith: Error | undefined

  constructor (private readonly stream: Stream, private readonly node: string, private readonly maxFrame: number) {
    this.lp = lpStream(stream, { maxDataLength: maxFrame, maxBufferSize: 2 * maxFrame + 65_536 })
    stream.addEventListener('close', () => { this.close(new NodeUnavailableError(`the connection to node ${node} closed`)) })
    void this.readLoop()
  }

  get open (): boolean { return this.closedWith === undefined && this.stream.status === 'open' }

  async call (method: string, params: unknown, onEvent: PeerStreamOptions['onEvent'], signal: AbortSignal): Promise<unknown> {
    if (this.closedWith !== undefined) throw this.closedWith
    signal.throwIfAborted()
    const id = this.nextId++
    const call = new PendingCall(onEvent, n => { this.send({ t: 'ack', id, n }) }, this.node)
    this.pending.set(id, call)
    const onAbort = (): void => {
      this.send({ t: 'cancel', id })
      call.fail(signal.reason instanceof Error ? signal.reason : new Error('call aborted'))
    }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      this.send({ t: 'call', id, v: PEER_PROTOCOL_VERSION, method, params })
      return await call.done
    } finally {
      signal.removeEventListener('abort', onAbort)
      this.pending.delete(id)
    }
  }

  /** Queues a frame; the stream buffers it (writes are whole frames, in call order). */
  private send (frame: unknown): void {
    if (this.closedWith !== undefined) return
    this.lp.write(encodeMessage(frame), { signal: AbortSignal.timeout(30_000) }).catch((err: Error) => {
      this.close(new NodeUnavailableError(`cannot send to node ${this.node}: ${err.message}`, { cause: err }))
    })
  }

  private async readLoop (): Promise<void> {
    try {
      for (;;) {
        const frame = await this.lp.read()
        const f = decodeWith(calleeFrameSchema, frame.subarray(), this.maxFrame, `rpc frame from ${this.node}`)
        this.pending.get(f.id)?.push(f)
      }
    } catch (err) {
      this.close(new NodeUnavailableError(`node ${this.node} closed the rpc stream: ${(err as Error).message}`, { cause: err }))
    }
  }

  close (err: Error): void {
    if (this.closedWith !== undefined) return
    this.closedWith = err
    for (const call of this.pending.values()) call.fail(err)
    this.pending.clear()
    if (this.stream.status === 'open') this.stream.abort(err)
  }
}

export interface MuxServeInit {
  readonly stream: Stream
  /**
   * The caller's node name, asked at each call: the stream lives as long as the connection, and a
   * stream opened before this node learned the caller's name (e.g. by the caller's join) would
   * otherwise name it by its PeerId for good, unlike the caller's bulk channels opened later.
   */
  readonly fromNode: string | (() => string)
  readonly handlers: ReadonlyMap<string, PeerHandler>
  readonly shutdown: AbortSignal
  readonly logger: Logger
  readonly maxFrame: number
}

interface ServedCall { readonly abort: AbortController, credits: number, wake?: () => void }

/** The callee's end of one caller's stream: runs its calls concurrently until the stream ends. */
export async function serveMux (init: MuxServeInit): Promise<void> {
  const { stream, maxFrame } = init
  const fromNode = (): string => typeof init.fromNode === 'string' ? init.fromNode : init.fromNode()
  const lp = lpStream(stream, { maxDataLength: maxFrame, maxBufferSize: 2 * maxFrame + 65_536 })
  const calls = new Map<number, ServedCall>()
  const gone = new AbortController()
  stream.addEventListener('close', () => { gone.abort(new Error('caller went away')) })
  const send = async (frame: Uint8Array, signal: AbortSignal): Promise<void> => { await lp.write(frame, { signal }) }
  try {
    for (;;) {
      const f = decodeWith(callerFrameSchema, (await lp.read()).subarray(), maxFrame, () => `rpc frame from ${fromNode()}`)
      const call = calls.get(f.id)
      if (f.t === 'cancel') call?.abort.abort(new Error('cancelled by the caller'))
      else if (f.t === 'ack') {
        if (call !== undefined) { call.credits += f.n; call.wake?.() }
      } else if (call === undefined) {
        const served: ServedCall = { abort: new AbortController(), credits: EVENT_WINDOW }
        calls.set(f.id, served)
        void runCall(init, fromNode(), f, served, send, AbortSignal.any([served.abort.signal, gone.signal, init.shutdown]), calls.size)
          .finally(() => { calls.delete(f.id) })
      }
    }
  } catch (err) {
    if (!gone.signal.aborted) init.logger.debug({ err: (err as Error).message, fromNode: fromNode() }, 'rpc stream ended')
    for (const c of calls.values()) c.abort.abort(new Error('caller went away'))
    if (stream.status === 'open') stream.abort(err as Error)
  }
}

type Send = (frame: Uint8Array, signal: AbortSignal) => Promise<void>

async function runCall (init: MuxServeInit, fromNode: string, req: { id: number, method: string, params: unknown }, served: ServedCall, send: Send, signal: AbortSignal, inFlight: number): Promise<void> {
  const { id } = req
  const emit = async (event: unknown): Promise<void> => {
    while (served.credits <= 0) await waitForCredit(served, signal)
    signal.throwIfAborted()
    served.credits--
    await send(frameOf({ t: 'event', id, event }, init.maxFrame), signal)
  }
  let reply: Uint8Array
  try {
    if (inFlight > MAX_CALLS_PER_STREAM) throw named(`more than ${MAX_CALLS_PER_STREAM} calls at once`, 'TooManyCallsError')
    const handler = init.handlers.get(req.method)
    if (handler === undefined) throw named(`unknown peer method ${req.method}`, 'UnknownMethodError')
    reply = frameOf({ t: 'result', id, result: await handler(req.params, { fromNode, signal, emit }) }, init.maxFrame)
  } catch (err) {
    const e = err as Error
    init.logger.debug({ err: e.message, fromNode }, 'peer call failed')
    reply = encodeMessage({ t: 'error', id, name: e.name ?? 'Error', message: String(e.message).slice(0, 8000) })
  }
  // A cancelled call's caller has stopped listening; a gone one cannot hear.
  if (signal.aborted) return
  await send(reply, AbortSignal.any([init.shutdown, AbortSignal.timeout(30_000)])).catch(() => {})
}

async function waitForCredit (served: ServedCall, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted()
  await new Promise<void>(resolve => {
    const done = (): void => { signal.removeEventListener('abort', done); served.wake = undefined; resolve() }
    served.wake = done
    signal.addEventListener('abort', done, { once: true })
  })
}

const named = (message: string, name: string): Error => Object.assign(new Error(message), { name })

/** One encoded frame; one the caller would refuse fails this call only, not the stream. */
function frameOf (frame: unknown, maxFrame: number): Uint8Array {
  const bytes = encodeMessage(frame)
  if (bytes.byteLength > maxFrame) throw named(`reply of ${bytes.byteLength} bytes exceeds the ${maxFrame}-byte frame limit`, 'FrameTooLargeError')
  return bytes
}
