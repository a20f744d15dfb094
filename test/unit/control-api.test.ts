import { spawn } from 'node:child_process'
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { ControlClient } from '../../src/api/client.js'
import {
  ApiTimeoutError, CallCancelledError, DaemonNotRunningError, RemoteError, SocketInUseError, toErrorPayload
} from '../../src/api/errors.js'
import { decodeFrameBody, encodeFrame, FrameDecoder } from '../../src/api/framing.js'
import { methods } from '../../src/api/schema.js'
import type { MethodTable, NodeInfo } from '../../src/api/schema.js'
import { ControlServer } from '../../src/node/control-server.js'

class VpidNotFoundError extends Error {
  static override name = 'VpidNotFoundError'
  override name = 'VpidNotFoundError'
  readonly code = 'ENOVPID'
}

const testMethods = {
  ...methods,
  echo: { params: z.object({ text: z.string() }), result: z.object({ text: z.string() }) },
  whoami: { params: z.object({}), result: z.object({ uid: z.number(), gid: z.number(), pid: z.number() }) },
  admin: { params: z.object({}), result: z.object({ ok: z.boolean() }), adminOnly: true },
  sleep: { params: z.object({ ms: z.number().optional() }), result: z.object({}) },
  fail: { params: z.object({}), result: z.object({}) },
  broken: { params: z.object({}), result: z.object({ n: z.number() }) },
  big: { params: z.object({ bytes: z.number() }), result: z.object({ data: z.instanceof(Uint8Array) }) },
  sum: {
    params: z.object({}),
    result: z.object({ total: z.number() }),
    event: z.object({ total: z.number() }),
    input: z.object({ add: z.number() })
  },
  flood: {
    params: z.object({ count: z.number(), bytes: z.number() }),
    result: z.object({ sent: z.number() }),
    event: z.object({ i: z.number(), data: z.instanceof(Uint8Array) })
  },
  unserved: { params: z.object({}), result: z.object({}) }
} satisfies MethodTable
type TestMethods = typeof testMethods

const sampleNode: NodeInfo = {
  name: 'n1', id: 1, peerId: '12D3KooWabcdef', addresses: ['/ip4/127.0.0.1/tcp/7001'], state: 'alive', self: true,
  load: { runQueue: 1, load1: 0.5, load5: 0.25, load15: 0.1, cpus: 2 },
  memory: { freeBytes: 1e9, totalBytes: 4e9 }, jobs: 0, lastSeenMs: Date.now()
}

const logs: Array<{ level: string, obj: object, msg?: string }> = []
const logger = {
  debug (obj: object, msg?: string) { logs.push({ level: 'debug', obj, msg }) },
  info (obj: object, msg?: string) { logs.push({ level: 'info', obj, msg }) },
  warn (obj: object, msg?: string) { logs.push({ level: 'warn', obj, msg }) },
  error (obj: object, msg?: string) { logs.push({ level: 'error', obj, msg }) }
}

let dir: string
let socketPath: string
let server: ControlServer<TestMethods>
const aborted: unknown[] = []
let flooded = 0

function makeServer (extra: Partial<ConstructorParameters<typeof ControlServer<TestMethods>>[0]> = {}): ControlServer<TestMethods> {
  const s = new ControlServer<TestMethods>({ socketPath, logger, methods: testMethods, ...extra })
  s.handle('status', async () => ({
    cluster: 'test', version: '0.1.0', node: { name: 'n1', id: 1, peerId: 'p' }, uptimeMs: 5,
    members: { alive: 1, suspect: 0, dead: 0, total: 1 }, jobs: 0
  }))
  s.handle('nodes', async () => [sampleNode])
  s.handle('echo', async p => ({ text: p.text }))
  s.handle('whoami', async (_p, ctx) => ({ ...ctx.caller }))
  s.handle('admin', async () => ({ ok: true }))
  s.handle('sleep', async (p, ctx) => await new Promise((resolve, reject) => {
    const timer = p.ms === undefined ? undefined : setTimeout(() => { resolve({}) }, p.ms)
    ctx.signal.addEventListener('abort', () => { clearTimeout(timer); aborted.push(ctx.signal.reason); reject(ctx.signal.reason) })
  }))
  s.handle('fail', async () => { throw new VpidNotFoundError('no process 2000017 in the cluster') })
  s.handle('broken', async () => ({ n: 'not a number' }) as unknown as { n: number })
  s.handle('big', async p => ({ data: new Uint8Array(p.bytes) }))
  s.handle('sum', async (_p, ctx) => {
    let total = 0
    for await (const input of ctx.inputs) {
      if (input.add < 0) break
      total += input.add
      await ctx.emit({ total })
    }
    return { total }
  })
  s.handle('flood', async (p, ctx) => {
    for (flooded = 0; flooded < p.count; flooded++) await ctx.emit({ i: flooded, data: new Uint8Array(p.bytes) })
    return { sent: flooded }
  })
  return s
}

/** A raw connection that speaks frames directly, to send what a well-behaved client never would. */
async function rawConnection (): Promise<{ socket: Socket, next: () => Promise<unknown>, closed: Promise<void> }> {
  const socket = connect(socketPath)
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  const decoder = new FrameDecoder(16 << 20)
  const queue: unknown[] = []
  let wake: (() => void) | undefined
  socket.on('data', chunk => {
    for (const body of decoder.push(chunk)) queue.push(decodeFrameBody(body))
    wake?.()
  })
  const closed = new Promise<void>(resolve => socket.once('close', () => { resolve() }))
  const next = async (): Promise<unknown> => {
    while (queue.length === 0) await new Promise<void>(resolve => { wake = resolve })
    return queue.shift()
  }
  return { socket, next, closed }
}

const frameOf = (body: Uint8Array): Buffer => {
  const header = Buffer.alloc(4)
  header.writeUInt32BE(body.length, 0)
  return Buffer.concat([header, body])
}

async function expectRemote (promise: Promise<unknown>, remoteName: string, message?: RegExp): Promise<RemoteError> {
  const err = await promise.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(RemoteError)
  expect((err as RemoteError).remoteName).toBe(remoteName)
  if (message !== undefined) expect((err as RemoteError).message).toMatch(message)
  return err as RemoteError
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ssi-control-'))
  await chmod(dir, 0o755) // the uid-65534 child must reach the socket
  socketPath = join(dir, 'ssi.sock')
  logs.length = 0
  aborted.length = 0
  server = makeServer()
  await server.start()
})

afterEach(async () => {
  await server.stop()
  await rm(dir, { recursive: true, force: true })
})

describe('control API: calls', () => {
  it('round-trips calls, including the real status and nodes schemas', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    try {
      expect(await client.call('echo', { text: 'hello' })).toEqual({ text: 'hello' })
      expect(await client.call('nodes', {})).toEqual([sampleNode])
      expect((await client.call('status', {})).members.alive).toBe(1)
    } finally {
      client.close()
    }
  })

  it('serves many concurrent calls on one connection, answering each by id', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    const texts = Array.from({ length: 40 }, (_, i) => `t${i}`)
    const results = await Promise.all(texts.map(async text => await client.call('echo', { text })))
    expect(results.map(r => r.text)).toEqual(texts)
    client.close()
  })

  it('sees the caller as root with its pid', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    expect(await client.call('whoami', {})).toEqual({ uid: 0, gid: 0, pid: process.pid })
    expect(await client.call('admin', {})).toEqual({ ok: true })
    client.close()
  })

  it('sees another uid as that uid and denies it adminOnly methods', async () => {
    const script = join(dir, 'child.mjs')
    await writeFile(script, childScript(socketPath, 1))
    const { code, out, errOut, pid } = await runAsNobody(script)
    expect(errOut).toBe('')
    expect(code).toBe(0)
    const replies = out.trim().split('\n').map(line => JSON.parse(line) as Record<string, unknown>)
    const whoami = replies.find(r => r.id === 1)
    const admin = replies.find(r => r.id === 2)
    expect(whoami).toMatchObject({ type: 'result', result: { uid: 65534, gid: 65534, pid } })
    expect(admin).toMatchObject({ type: 'error', error: { name: 'PermissionDeniedError' } })
  })

  it('limits the connections of one non-root user', async () => {
    await server.stop()
    server = makeServer({ maxConnectionsPerUid: 1 })
    await server.start()
    const script = join(dir, 'two.mjs')
    await writeFile(script, childScript(socketPath, 2))
    const { code, out, errOut } = await runAsNobody(script)
    expect(errOut).toBe('')
    expect(code).toBe(0)
    const replies = out.trim().split('\n').map(line => JSON.parse(line) as Record<string, unknown>)
    expect(replies).toContainEqual(expect.objectContaining({ type: 'result', result: expect.objectContaining({ uid: 65534 }) }))
    expect(replies).toContainEqual(expect.objectContaining({ id: 0, error: expect.objectContaining({ name: 'TooManyConnectionsError' }) }))
    // root is not limited per user
    const a = await ControlClient.connect<TestMethods>(socketPath)
    const b = await ControlClient.connect<TestMethods>(socketPath)
    expect(await b.call('echo', { text: 'root' })).toEqual({ text: 'root' })
    a.close()
    b.close()
  })

  it('rejects unknown methods, methods without a handler, and invalid params, by name', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    const call = client.call.bind(client) as (m: string, p: unknown) => Promise<unknown>
    await expectRemote(call('nope', {}), 'UnknownMethodError', /unknown method 'nope'/)
    await expectRemote(call('unserved', {}), 'UnknownMethodError', /not served/)
    await expectRemote(call('toString', {}), 'UnknownMethodError')
    await expectRemote(call('echo', { text: 5 }), 'InvalidParamsError', /params\.text/)
    expect(await client.call('echo', { text: 'still fine' })).toEqual({ text: 'still fine' })
    client.close()
  })

  it('turns handler errors into { name, message, code } and schema-breaking results into InvalidResultError', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    const err = await expectRemote(client.call('fail', {}), 'VpidNotFoundError', /no process 2000017/)
    expect(err.remoteCode).toBe('ENOVPID')
    await expectRemote(client.call('broken', {}), 'InvalidResultError', /n: /)
    expect(logs.some(l => l.level === 'error' && l.msg === 'handler broke the schema')).toBe(true)
    client.close()
  })

  it('answers a result above the reply frame limit with an error instead', async () => {
    await server.stop()
    server = makeServer({ maxResponseFrameBytes: 1000 })
    await server.start()
    const client = await ControlClient.connect<TestMethods>(socketPath)
    expect((await client.call('big', { bytes: 100 })).data).toHaveLength(100)
    await expectRemote(client.call('big', { bytes: 5000 }), 'FrameTooLargeError', /exceeds the limit of 1000/)
    client.close()
  })
})

describe('toErrorPayload', () => {
  it('names an error by its class, also when the class sets only a static name', () => {
    class OnlyStaticError extends Error { static override name = 'OnlyStaticError' }
    expect(toErrorPayload(new OnlyStaticError('x'))).toEqual({ name: 'OnlyStaticError', message: 'x' })
    expect(toErrorPayload(new VpidNotFoundError('gone'))).toEqual({ name: 'VpidNotFoundError', message: 'gone', code: 'ENOVPID' })
    expect(toErrorPayload(Object.assign(new Error('no such file'), { code: 'ENOENT' }))).toEqual({ name: 'Error', message: 'no such file', code: 'ENOENT' })
    expect(toErrorPayload('plain string')).toEqual({ name: 'Error', message: 'plain string' })
    expect(toErrorPayload(new Error('m'.repeat(10_000))).message.length).toBeLessThan(600)
  })
})

describe('control API: bad frames', () => {
  it('answers an oversized length prefix with an error and closes; other connections keep working', async () => {
    const other = await ControlClient.connect<TestMethods>(socketPath)
    const raw = await rawConnection()
    const header = Buffer.alloc(4)
    header.writeUInt32BE(2 * 1024 * 1024, 0)
    raw.socket.write(Buffer.concat([header, Buffer.alloc(1000)]))
    expect(await raw.next()).toMatchObject({ v: 1, id: 0, type: 'error', error: { name: 'FrameTooLargeError', code: 'FRAME_TOO_LARGE' } })
    await raw.closed
    expect(await other.call('echo', { text: 'alive' })).toEqual({ text: 'alive' })
    const fresh = await ControlClient.connect<TestMethods>(socketPath)
    expect(await fresh.call('echo', { text: 'new' })).toEqual({ text: 'new' })
    other.close()
    fresh.close()
  })

  it('answers malformed msgpack and schema-invalid messages and keeps serving the same connection', async () => {
    const raw = await rawConnection()
    raw.socket.write(frameOf(Buffer.from([0x85]))) // a map of 5 entries with none present
    expect(await raw.next()).toMatchObject({ id: 0, type: 'error', error: { name: 'MalformedFrameError', message: expect.stringMatching(/not valid msgpack/) } })
    raw.socket.write(encodeFrame({ v: 1, id: 5, type: 'call', params: {} }))
    expect(await raw.next()).toMatchObject({ id: 5, type: 'error', error: { name: 'InvalidMessageError', message: expect.stringMatching(/method/) } })
    raw.socket.write(encodeFrame({ v: 1, id: 6, type: 'launch' }))
    expect(await raw.next()).toMatchObject({ id: 6, type: 'error', error: { name: 'InvalidMessageError' } })
    raw.socket.write(encodeFrame([1, 2, 3]))
    expect(await raw.next()).toMatchObject({ id: 0, type: 'error', error: { name: 'InvalidMessageError' } })
    raw.socket.write(encodeFrame({ v: 2, id: 7, type: 'call', method: 'echo', params: { text: 'x' } }))
    expect(await raw.next()).toMatchObject({ id: 7, type: 'error', error: { name: 'UnsupportedVersionError' } })
    raw.socket.write(encodeFrame({ v: 1, id: 8, type: 'call', method: 'echo', params: { text: 'ok' } }))
    expect(await raw.next()).toEqual({ v: 1, id: 8, type: 'result', result: { text: 'ok' } })
    raw.socket.write(encodeFrame({ v: 1, id: 9, type: 'call', method: 'status' })) // params omitted: {}
    expect(await raw.next()).toMatchObject({ v: 1, id: 9, type: 'result', result: { cluster: 'test' } })
    raw.socket.destroy()
  })

  it('refuses a call id already in flight, and the reserved id 0', async () => {
    const raw = await rawConnection()
    raw.socket.write(encodeFrame({ v: 1, id: 3, type: 'call', method: 'sleep', params: {} }))
    raw.socket.write(encodeFrame({ v: 1, id: 3, type: 'call', method: 'echo', params: { text: 'x' } }))
    expect(await raw.next()).toMatchObject({ id: 3, type: 'error', error: { name: 'DuplicateCallIdError' } })
    raw.socket.write(encodeFrame({ v: 1, id: 0, type: 'call', method: 'echo', params: { text: 'x' } }))
    expect(await raw.next()).toMatchObject({ id: 0, type: 'error', error: { name: 'InvalidMessageError' } })
    raw.socket.write(encodeFrame({ v: 1, id: 3, type: 'cancel' }))
    expect(await raw.next()).toMatchObject({ id: 3, type: 'error', error: { name: 'CallCancelledError' } })
    raw.socket.destroy()
  })
})

describe('control API: streaming, cancellation, limits', () => {
  it('streams events and takes input messages', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    const call = client.stream('sum', {})
    const seen: number[] = []
    for (const add of [1, 2, 3]) {
      await call.send({ add })
    }
    await call.send({ add: -1 })
    for await (const event of call) seen.push(event.total)
    expect(seen).toEqual([1, 3, 6])
    expect(await call.result).toEqual({ total: 6 })
    client.close()
  })

  it('delivers events to onEvent when given', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    const seen: number[] = []
    const call = client.stream('flood', { count: 5, bytes: 1 }, { onEvent: e => { seen.push(e.i) } })
    expect(await call.result).toEqual({ sent: 5 })
    expect(seen).toEqual([0, 1, 2, 3, 4])
    client.close()
  })

  it('applies backpressure: a client that stops reading stalls the handler in emit()', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    const count = 2000
    const call = client.stream('flood', { count, bytes: 64 * 1024 })
    const iterator = call[Symbol.asyncIterator]()
    await iterator.next()
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(flooded).toBeGreaterThan(10)
    expect(flooded).toBeLessThan(600) // ~256 queued by the client + socket buffers, not all 2000
    let received = 1
    while (!(await iterator.next()).done) received++
    expect(received).toBe(count)
    expect(await call.result).toEqual({ sent: count })
    client.close()
  })

  it('cancel (by signal) aborts ctx.signal on the daemon and rejects locally with the reason', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    const controller = new AbortController()
    const pending = client.call('sleep', {}, { signal: controller.signal })
    await new Promise(resolve => setTimeout(resolve, 50))
    controller.abort(new Error('user pressed ^C'))
    await expect(pending).rejects.toThrow('user pressed ^C')
    await waitFor(() => aborted.length === 1)
    expect(aborted[0]).toBeInstanceOf(CallCancelledError)
    expect(await client.call('echo', { text: 'after cancel' })).toEqual({ text: 'after cancel' })
    client.close()
  })

  it('a call timeout cancels the call on the daemon', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    await expect(client.call('sleep', {}, { timeoutMs: 50 })).rejects.toBeInstanceOf(ApiTimeoutError)
    await waitFor(() => aborted.length === 1)
    client.close()
  })

  it('a disconnect aborts the calls of that connection', async () => {
    const client = await ControlClient.connect<TestMethods>(socketPath)
    const pending = client.call('sleep', {})
    await new Promise(resolve => setTimeout(resolve, 50))
    client.close()
    await expect(pending).rejects.toThrow(/closed by the client/)
    await waitFor(() => aborted.length === 1)
    expect((aborted[0] as Error).message).toMatch(/disconnected/)
  })

  it('limits calls per connection and connections per server', async () => {
    await server.stop()
    server = makeServer({ maxCallsPerConnection: 2, maxConnections: 2 })
    await server.start()
    const a = await ControlClient.connect<TestMethods>(socketPath)
    const sleeps = [a.call('sleep', { ms: 200 }), a.call('sleep', { ms: 200 })]
    await expectRemote(a.call('echo', { text: 'x' }), 'TooManyCallsError', /limit 2/)
    await Promise.all(sleeps)
    expect(await a.call('echo', { text: 'x' })).toEqual({ text: 'x' })
    const b = await ControlClient.connect<TestMethods>(socketPath)
    await b.call('echo', { text: 'b' })
    const c = await ControlClient.connect<TestMethods>(socketPath)
    await expectRemote(c.call('echo', { text: 'c' }), 'TooManyConnectionsError', /at most 2/)
    a.close()
    await waitFor(() => server.connectionCount === 1)
    const d = await ControlClient.connect<TestMethods>(socketPath)
    expect(await d.call('echo', { text: 'd' })).toEqual({ text: 'd' })
    b.close()
    d.close()
  })
})

describe('control API: socket lifecycle and client errors', () => {
  it('says clearly that no daemon is running, for a missing or a stale socket', async () => {
    const missing = join(dir, 'missing.sock')
    const err = await ControlClient.connect(missing).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(DaemonNotRunningError)
    expect((err as Error).message).toContain(`no ssi daemon at ${missing}`)
    expect((err as Error).message).toContain('ssi cluster up')
    const stale = join(dir, 'stale.sock')
    await makeStaleSocket(stale)
    await expect(ControlClient.connect(stale)).rejects.toThrow(/stale/)
  })

  it('replaces a stale socket file but refuses a live daemon or a non-socket file', async () => {
    await expect(makeServer().start()).rejects.toBeInstanceOf(SocketInUseError)
    await server.stop()
    await makeStaleSocket(socketPath)
    server = makeServer()
    await server.start()
    const client = await ControlClient.connect<TestMethods>(socketPath)
    expect(await client.call('echo', { text: 'replaced' })).toEqual({ text: 'replaced' })
    client.close()
    const file = join(dir, 'regular')
    await writeFile(file, 'keep me')
    await expect(new ControlServer({ socketPath: file, logger }).start()).rejects.toThrow(/not a socket/)
  })

  it('start and stop are idempotent; stop cancels calls in flight and removes the socket', async () => {
    await server.start()
    expect((await stat(socketPath)).mode & 0o777).toBe(0o666)
    const client = await ControlClient.connect<TestMethods>(socketPath)
    const pending = client.call('sleep', {})
    await new Promise(resolve => setTimeout(resolve, 50))
    const outcome = expectRemote(pending, 'CallCancelledError', /daemon is stopping/)
    await Promise.all([server.stop(), server.stop()])
    await outcome
    await expect(stat(socketPath)).rejects.toThrow(/ENOENT/)
    await server.stop()
    await server.start()
    const again = await ControlClient.connect<TestMethods>(socketPath)
    expect(await again.call('echo', { text: 'restarted' })).toEqual({ text: 'restarted' })
    again.close()
  })
})

async function waitFor (predicate: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** A socket file nobody listens on, as a crashed daemon leaves it (libuv unlinks on a clean close). */
async function makeStaleSocket (path: string): Promise<void> {
  const code = `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`
  const child = spawn(process.execPath, ['-e', code], { stdio: 'ignore' })
  await new Promise(resolve => child.on('close', resolve))
  expect((await stat(path)).isSocket()).toBe(true)
}

async function runAsNobody (script: string): Promise<{ code: number | null, out: string, errOut: string, pid: number | undefined }> {
  const child = spawn(process.execPath, [script], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let errOut = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { errOut += d.toString() })
  const code = await new Promise<number | null>(resolve => child.on('close', resolve))
  return { code, out, errOut, pid: child.pid }
}

/**
 * A plain-JS client (its own framing) to run as another user: opens `connections` connections one
 * after the other (keeping them open), calls whoami and admin on each, prints every reply as a JSON line.
 */
function childScript (path: string, connections: number): string {
  return `
import { createRequire } from 'node:module'
import { connect } from 'node:net'
const { Packr } = createRequire(${JSON.stringify(join(process.cwd(), 'package.json'))})('msgpackr')
const packr = new Packr({ useRecords: false, mapsAsObjects: true })
const frame = v => { const b = packr.pack(v); const h = Buffer.alloc(4); h.writeUInt32BE(b.length); return Buffer.concat([h, b]) }
const sockets = []
for (let i = 0; i < ${connections}; i++) {
  const socket = connect(${JSON.stringify(path)})
  sockets.push(socket)
  await new Promise(resolve => {
    let buf = Buffer.alloc(0)
    let got = 0
    socket.on('data', d => {
      buf = Buffer.concat([buf, d])
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const n = buf.readUInt32BE(0)
        const reply = packr.unpack(buf.subarray(4, 4 + n))
        console.log(JSON.stringify(reply))
        buf = buf.subarray(4 + n)
        if (++got === 2 || reply.id === 0) resolve()
      }
    })
    socket.on('close', resolve)
    socket.on('error', () => {}) // a refused connection may be closed before our writes land
    socket.write(frame({ v: 1, id: 1, type: 'call', method: 'whoami', params: {} }))
    socket.write(frame({ v: 1, id: 2, type: 'call', method: 'admin', params: {} }))
  })
}
for (const socket of sockets) socket.end()
`
}
