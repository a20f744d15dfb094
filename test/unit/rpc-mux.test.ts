/**
 * The multiplexed peer-call stream (src/node/rpc-mux.ts) over a real in-memory stream pair: many
 * calls at once on one stream, each call's events in order and flow-controlled, errors and
 * cancellation per call, and a closed stream failing what is still pending.
 */
import { streamPair } from '@libp2p/utils'
import { afterEach, describe, expect, it } from 'vitest'
import { EVENT_WINDOW, RpcChannel, serveMux } from '../../src/node/rpc-mux.js'
import { NodeUnavailableError, PeerCallError } from '../../src/ssi/ports.js'
import type { PeerHandler } from '../../src/ssi/ports.js'

const silent = { debug () {}, info () {}, warn () {}, error () {}, child () { return silent } }
const shutdown = new AbortController()
const cleanups: Array<() => void> = []
afterEach(() => { for (const c of cleanups.splice(0)) c() })

async function pair (handlers: Record<string, PeerHandler>, maxFrame = 1024 * 1024, fromNode: string | (() => string) = 'n1'): Promise<RpcChannel> {
  const [outbound, inbound] = await streamPair({ delay: 0 })
  void serveMux({ stream: inbound, fromNode, handlers: new Map(Object.entries(handlers)), shutdown: shutdown.signal, logger: silent as never, maxFrame })
  const channel = new RpcChannel(outbound, 'n2', maxFrame)
  cleanups.push(() => { channel.close(new Error('test over')) })
  return channel
}

const never = new AbortController().signal
const tick = async (ms = 5): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

describe('rpc-mux', () => {
  it('runs many calls at once on one stream, each with its own result', async () => {
    const ch = await pair({ echo: async (p) => { await tick(Math.random() * 5); return p } })
    const results = await Promise.all(Array.from({ length: 200 }, async (_, i) => await ch.call('echo', { i }, () => {}, new AbortController().signal)))
    expect(results).toEqual(Array.from({ length: 200 }, (_, i) => ({ i })))
  })

  it('delivers a call\'s events in order before its result, holding the callee back while the caller is slow', async () => {
    let sent = 0
    let maxAhead = 0
    const got: number[] = []
    const ch = await pair({
      count: async (_p, ctx) => {
        for (let i = 0; i < 200; i++) { await ctx.emit(i); sent++ }
        return 'done'
      }
    })
    const result = await ch.call('count', {}, async (e) => {
      maxAhead = Math.max(maxAhead, sent - got.length)
      await tick(1)
      got.push(e as number)
    }, never)
    expect(result).toBe('done')
    expect(got).toEqual(Array.from({ length: 200 }, (_, i) => i))
    expect(maxAhead).toBeLessThanOrEqual(EVENT_WINDOW + 1)
  })

  it('reports a handler error, an unknown method and a too-large reply for that call only', async () => {
    const ch = await pair({
      fail: async () => { throw Object.assign(new Error('no such job'), { name: 'VpidNotFoundError' }) },
      big: async () => 'x'.repeat(4096),
      ok: async () => 1
    }, 2048)
    await expect(ch.call('fail', {}, () => {}, never)).rejects.toMatchObject({ name: 'PeerCallError', remoteName: 'VpidNotFoundError', message: 'no such job' })
    await expect(ch.call('nope', {}, () => {}, never)).rejects.toMatchObject({ remoteName: 'UnknownMethodError' })
    await expect(ch.call('big', {}, () => {}, never)).rejects.toMatchObject({ remoteName: 'FrameTooLargeError' })
    expect(await ch.call('ok', {}, () => {}, never)).toBe(1)
    expect(ch.open).toBe(true)
  })

  it('cancels the callee\'s handler when the caller aborts, and keeps the stream for other calls', async () => {
    let handlerSignal: AbortSignal | undefined
    const ch = await pair({
      hang: async (_p, ctx) => { handlerSignal = ctx.signal; await new Promise(resolve => ctx.signal.addEventListener('abort', resolve)); return 'late' },
      ok: async () => 'ok'
    })
    const ac = new AbortController()
    const call = ch.call('hang', {}, () => {}, ac.signal)
    await tick(20)
    ac.abort(new Error('user gave up'))
    await expect(call).rejects.toThrow('user gave up')
    await tick(20)
    expect(handlerSignal?.aborted).toBe(true)
    expect(await ch.call('ok', {}, () => {}, never)).toBe('ok')
  })

  it('fails pending calls when the stream goes away, and refuses new ones', async () => {
    const ch = await pair({ hang: async () => await new Promise(() => {}) })
    const call = ch.call('hang', {}, () => {}, never)
    await tick(10)
    ch.close(new NodeUnavailableError('connection lost'))
    await expect(call).rejects.toBeInstanceOf(NodeUnavailableError)
    expect(ch.open).toBe(false)
    await expect(ch.call('hang', {}, () => {}, never)).rejects.toBeInstanceOf(NodeUnavailableError)
  })

  it('a failing event consumer fails its call', async () => {
    const ch = await pair({ ev: async (_p, ctx) => { for (let i = 0; i < 5; i++) await ctx.emit(i); return 'done' } })
    await expect(ch.call('ev', {}, () => { throw new Error('stdout closed') }, never)).rejects.toThrow('stdout closed')
    expect(PeerCallError).toBeDefined()
  })

  it('names the caller as known at each call, not as known when its stream opened', async () => {
    // A node's first call (its join) opens the stream before the callee knows its name; later
    // calls on that stream must carry the name, as the caller's bulk channels do (else a target
    // prepared a migration "from <PeerId>" and refused its images "from n1").
    const membership = new Map<string, string>()
    const ch = await pair({ who: async (_p, ctx) => ctx.fromNode }, 1024 * 1024, () => membership.get('12D3KooWPeer') ?? '12D3KooWPeer')
    expect(await ch.call('who', {}, () => {}, never)).toBe('12D3KooWPeer')
    membership.set('12D3KooWPeer', 'n1') // the join went through
    expect(await ch.call('who', {}, () => {}, never)).toBe('n1')
  })
})
