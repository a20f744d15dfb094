import { createServer } from 'node:net'
import type { Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { chooseMode, DEFAULT_MODE_CONFIG, ModeUnsupportedError } from '../../src/migration/modes.js'
import { bridge, connectLoopback, listenLoopbackOnce, PageBridgeError } from '../../src/migration/page-bridge.js'
import { createMemoryChannelPair } from '../../src/migration/transfer.js'
import { parseClusterConfig } from '../../src/node/config.js'

const MiB = 2 ** 20
const full = { memTrack: false, lazyPages: true }
const noLazy = { memTrack: false, lazyPages: false, lazyPagesWhy: 'fs.pipe-max-size is 1048576' }

describe('chooseMode', () => {
  it('auto: stop-copy up to postCopyAboveBytes, post-copy above when lazy pages work, else stop-copy', () => {
    const config = { postCopyAboveBytes: 100 * MiB }
    expect(chooseMode('auto', 100 * MiB, full, config)).toEqual({ mode: 'stop-copy', reason: 'auto: 100 MiB resident <= 100 MiB' })
    expect(chooseMode('auto', 101 * MiB, full, config)).toEqual({ mode: 'post-copy', reason: 'auto: 101 MiB resident > 100 MiB' })
    expect(chooseMode('auto', 101 * MiB, noLazy, config)).toMatchObject({ mode: 'stop-copy', reason: expect.stringContaining('post-copy is not possible here (fs.pipe-max-size is 1048576)') })
    expect(DEFAULT_MODE_CONFIG.postCopyAboveBytes).toBe(256 * MiB)
  })

  it('explicit modes: stop-copy always; post-copy only with lazy pages; pre-copy refused with the reason', () => {
    expect(chooseMode('stop-copy', 0, noLazy).mode).toBe('stop-copy')
    expect(chooseMode('post-copy', 0, full).mode).toBe('post-copy')
    expect(() => chooseMode('post-copy', 0, noLazy)).toThrow(/post-copy is not possible on this host: fs.pipe-max-size/)
    const refusal = (caps: typeof full): unknown => { try { chooseMode('pre-copy', 0, caps) } catch (err) { return err } }
    const here = refusal(full)
    expect(here).toBeInstanceOf(ModeUnsupportedError)
    expect((here as Error).message).toMatch(/this kernel lacks \(CONFIG_MEM_SOFT_DIRTY is not set/)
    expect((refusal({ memTrack: true, lazyPages: true }) as Error).message).toMatch(/not implemented in this version of ssi/)
  })

  it('the threshold is the config field migration.postCopyAboveBytes (default 256 MiB)', () => {
    const base = { cluster: { name: 'c', keyFile: 'k' }, nodes: [{ name: 'n1', id: 1, listen: '/ip4/127.0.0.1/tcp/7101' }] }
    expect(parseClusterConfig(base, '/x/c.yaml').migration.postCopyAboveBytes).toBe(256 * MiB)
    expect(parseClusterConfig({ ...base, migration: { postCopyAboveBytes: '1GiB' } }, '/x/c.yaml').migration.postCopyAboveBytes).toBe(1024 * MiB)
    expect(() => parseClusterConfig({ ...base, migration: { postCopyAbove: 1 } }, '/x/c.yaml')).toThrow(/migration/)
  })
})

describe('page bridge', () => {
  it('carries a request/response conversation between two loopback sockets over a channel, both ways, with half-closes', async () => {
    // "criu page server" on the source side: answers each 4-byte request with 64 KiB, then ends.
    const server = createServer({ allowHalfOpen: true }, (s) => {
      s.on('data', (req: Buffer) => { for (let i = 0; i < req.length / 4; i++) s.write(Buffer.alloc(64 * 1024, req[i * 4])) })
      s.on('end', () => { s.end() })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as { port: number }).port
    const signal = new AbortController().signal
    const [a, b] = createMemoryChannelPair()
    const source = await connectLoopback(port, signal)
    const target = await listenLoopbackOnce(signal, process.getuid?.() ?? 0)
    const sourceSide = bridge(source, a, signal)
    const client = await connectLoopback(target.port, signal)
    const targetSide = bridge(await target.accepted, b, signal)
    const received: Buffer[] = []
    client.on('data', (d: Buffer) => { received.push(d) })
    const ended = new Promise<void>((resolve) => client.once('end', resolve))
    client.write(Buffer.from([7, 0, 0, 0, 9, 0, 0, 0]))
    while (Buffer.concat(received).length < 128 * 1024) await new Promise(resolve => setTimeout(resolve, 5))
    client.end()
    await ended
    const all = Buffer.concat(received)
    expect(all.length).toBe(128 * 1024)
    expect(all[0]).toBe(7)
    expect(all[all.length - 1]).toBe(9)
    expect(await sourceSide).toEqual({ sent: 128 * 1024, received: 8 })
    expect(await targetSide).toEqual({ sent: 8, received: 128 * 1024 })
    server.close()
  })

  it('a dropped channel tears both sockets down with PageBridgeError', async () => {
    const signal = new AbortController().signal
    const [a, b] = createMemoryChannelPair()
    const listener = await listenLoopbackOnce(signal, process.getuid?.() ?? 0)
    const peer = await connectLoopback(listener.port, signal)
    const closed = new Promise<void>((resolve) => peer.once('end', () => { resolve() })) // half-open: 'end', not 'close'
    const bridged = bridge(await listener.accepted, a, signal)
    b.abort(new Error('node died'))
    await expect(bridged).rejects.toBeInstanceOf(PageBridgeError)
    await closed
  })

  it('the listener accepts only its uid and only one connection', async () => {
    const signal = new AbortController().signal
    const listener = await listenLoopbackOnce(signal, 4242) // nobody here runs as 4242
    const s: Socket = await connectLoopback(listener.port, signal)
    const refused = await new Promise<boolean>((resolve) => { s.once('end', () => { resolve(true) }); setTimeout(() => { resolve(false) }, 3000) })
    expect(refused).toBe(true)
    listener.close()
  })
})
