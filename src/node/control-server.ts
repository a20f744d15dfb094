/**
 * The daemon's control API on a Unix socket: the `ssi` CLI and scripts talk to the node through it.
 * Any local user may connect (socket mode 0o666 by default); each connection is tagged with the
 * caller's uid/gid/pid from SO_PEERCRED and calls are authorised per method (adminOnly → root only).
 * The protocol work of one connection lives in src/api/server-connection.ts.
 */
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import type { Server, Socket } from 'node:net'
import { dirname } from 'node:path'
import { CallCancelledError, SocketInUseError, TooManyConnectionsError, UnknownMethodError } from '../api/errors.js'
import { MAX_REQUEST_FRAME_BYTES, MAX_RESPONSE_FRAME_BYTES, methods as apiMethods } from '../api/schema.js'
import type { ApiMethods, MethodEvent, MethodInput, MethodName, MethodResult, MethodTable, ParsedParams } from '../api/schema.js'
import { endWithError, ServerConnection } from '../api/server-connection.js'
import type { AnyHandler, ApiLogger, CallContext, Caller, ConnectionCore } from '../api/server-connection.js'
import { peerCredentials } from '../native/peercred.js'

export type { CallContext, Caller } from '../api/server-connection.js'

export interface ControlServerInit<T extends MethodTable = ApiMethods> {
  readonly socketPath: string
  readonly logger: ApiLogger
  /** The method table served; default: the control API's `methods`. Tests pass their own. */
  readonly methods?: T
  /** Largest request frame body (bytes). Default MAX_REQUEST_FRAME_BYTES (1 MiB). */
  readonly maxFrameBytes?: number
  /** Largest reply frame body (bytes); a bigger result is answered with an error. Default 16 MiB. */
  readonly maxResponseFrameBytes?: number
  /** Mode of the socket file. Default 0o666: any local user may connect; calls are authorised by uid. */
  readonly socketMode?: number
  /** Connections open at once; more are answered with TooManyConnectionsError. Default 256. */
  readonly maxConnections?: number
  /** Connections open at once per non-root uid, so one user cannot take every slot. Default 32. */
  readonly maxConnectionsPerUid?: number
  /** Calls in flight per connection; more get TooManyCallsError. Default 64. */
  readonly maxCallsPerConnection?: number
  /** Input messages queued for one call before its connection stops reading. Default 256. */
  readonly maxQueuedInputs?: number
  /** Check handler results and events against the schema. Default: on unless NODE_ENV=production. */
  readonly validateResults?: boolean
}

/** A method implementation: validated params in, result out (events via ctx.emit). */
export type MethodHandler<M extends MethodName<T>, T extends MethodTable = ApiMethods> = (
  params: ParsedParams<M, T>,
  ctx: CallContext<MethodEvent<M, T>, MethodInput<M, T>>
) => Promise<MethodResult<M, T>>

/** How long a live-daemon probe of an existing socket file may take. */
const PROBE_TIMEOUT_MS = 1000

export class ControlServer<T extends MethodTable = ApiMethods> {
  private readonly handlers = new Map<string, AnyHandler>()
  private readonly connections = new Set<ServerConnection>()
  private readonly connectionsByUid = new Map<number, number>()
  private readonly core: ConnectionCore
  private readonly maxConnections: number
  private server: Server | undefined
  private socketInode: number | undefined
  private starting: Promise<void> | undefined
  private stopping: Promise<void> | undefined

  constructor (private readonly init: ControlServerInit<T>) {
    this.maxConnections = init.maxConnections ?? 256
    this.core = {
      methods: init.methods ?? apiMethods,
      handlers: this.handlers,
      logger: init.logger,
      maxFrameBytes: init.maxFrameBytes ?? MAX_REQUEST_FRAME_BYTES,
      maxResponseFrameBytes: init.maxResponseFrameBytes ?? MAX_RESPONSE_FRAME_BYTES,
      maxCallsPerConnection: init.maxCallsPerConnection ?? 64,
      maxQueuedInputs: init.maxQueuedInputs ?? 256,
      validateResults: init.validateResults ?? process.env.NODE_ENV !== 'production'
    }
  }

  get socketPath (): string {
    return this.init.socketPath
  }

  /** Connections open now. */
  get connectionCount (): number {
    return this.connections.size
  }

  /** Serves `method` with `handler` (replacing none: registering a method twice is a bug). */
  handle<M extends MethodName<T>> (method: M, handler: MethodHandler<M, T>): void {
    if (!Object.hasOwn(this.core.methods, method)) throw new UnknownMethodError(`cannot serve '${method}': not in the method table`)
    if (this.handlers.has(method)) throw new Error(`a handler for '${method}' is already registered`)
    this.handlers.set(method, handler as unknown as AnyHandler)
  }

  /**
   * Listens on the socket path. A socket file left by a crashed daemon is replaced; a live daemon on
   * it, or a file that is not a socket, makes start fail with SocketInUseError. Safe to call twice.
   */
  async start (): Promise<void> {
    if (this.stopping !== undefined) await this.stopping
    this.starting ??= this.listen().catch((err: unknown) => {
      this.starting = undefined
      throw err
    })
    await this.starting
  }

  /** Closes every connection (in-flight calls are cancelled) and removes the socket file. Safe to call twice. */
  async stop (): Promise<void> {
    if (this.starting === undefined) return
    this.stopping ??= this.shutdown().finally(() => { this.stopping = undefined })
    await this.stopping
  }

  private async listen (): Promise<void> {
    const path = this.init.socketPath
    await this.clearSocketPath(path)
    const server = createServer(socket => { this.accept(socket) })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(path, () => {
        server.off('error', reject)
        resolve()
      })
    })
    server.on('error', err => { this.init.logger.error({ err: err.message }, 'control socket error') })
    this.server = server
    // The socket is created with the umask's mode first; authorisation is per call, so the gap is harmless.
    await chmod(path, this.init.socketMode ?? 0o666)
    this.socketInode = (await lstat(path)).ino
    this.init.logger.info({ socket: path }, 'control API listening')
  }

  private async shutdown (): Promise<void> {
    await this.starting?.catch(() => {})
    this.starting = undefined
    const server = this.server
    this.server = undefined
    if (server === undefined) return
    const closed = new Promise<void>(resolve => { server.close(() => { resolve() }) })
    const reason = new CallCancelledError('the ssi daemon is stopping')
    await Promise.all([...this.connections].map(async conn => { await conn.close(reason) }))
    await closed
    await this.removeSocketFile()
  }

  /** Removes the socket file if it is still the one this server created. */
  private async removeSocketFile (): Promise<void> {
    const path = this.init.socketPath
    try {
      if ((await lstat(path)).ino === this.socketInode) await unlink(path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    this.socketInode = undefined
  }

  /** Makes `path` free to listen on: creates its directory, removes a stale socket, refuses a live one. */
  private async clearSocketPath (path: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true, mode: 0o755 })
    let isSocket: boolean
    try {
      isSocket = (await lstat(path)).isSocket()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    if (!isSocket) throw new SocketInUseError(`${path} exists and is not a socket: refusing to replace it`)
    if (await isLiveSocket(path)) throw new SocketInUseError(`another ssi daemon is listening on ${path}`)
    await unlink(path).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
    this.init.logger.info({ socket: path }, 'removed a stale control socket')
  }

  private accept (socket: Socket): void {
    socket.on('error', () => {}) // errors of refused sockets; accepted ones get the connection's handler
    const caller = this.admit(socket)
    if (caller === undefined) return
    const { uid } = caller
    this.connectionsByUid.set(uid, (this.connectionsByUid.get(uid) ?? 0) + 1)
    const connection = new ServerConnection(socket, caller, this.core, () => {
      this.connections.delete(connection)
      const left = (this.connectionsByUid.get(uid) ?? 1) - 1
      if (left > 0) this.connectionsByUid.set(uid, left)
      else this.connectionsByUid.delete(uid)
    })
    this.connections.add(connection)
  }

  /** The caller of a new connection if it may stay open; otherwise refuses or drops it. */
  private admit (socket: Socket): Caller | undefined {
    if (this.server === undefined) {
      socket.destroy()
      return undefined
    }
    if (this.connections.size >= this.maxConnections) {
      this.init.logger.warn({ limit: this.maxConnections }, 'control connection refused: too many connections')
      endWithError(socket, new TooManyConnectionsError(`the ssi daemon serves at most ${this.maxConnections} connections`))
      return undefined
    }
    let caller: Caller
    try {
      caller = peerCredentials(socket)
    } catch (err) {
      // Fail closed: without the caller's uid no call can be authorised.
      this.init.logger.warn({ err: (err as Error).message }, 'control connection refused: cannot determine the caller')
      socket.destroy()
      return undefined
    }
    const perUid = this.init.maxConnectionsPerUid ?? 32
    if (caller.uid !== 0 && (this.connectionsByUid.get(caller.uid) ?? 0) >= perUid) {
      this.init.logger.warn({ uid: caller.uid, limit: perUid }, 'control connection refused: too many connections of one user')
      endWithError(socket, new TooManyConnectionsError(`the ssi daemon serves at most ${perUid} connections per user`))
      return undefined
    }
    return caller
  }

}

/** True if something accepts connections on the Unix socket at `path` (or we cannot tell). */
async function isLiveSocket (path: string): Promise<boolean> {
  return await new Promise<boolean>(resolve => {
    const probe = connect(path)
    const finish = (live: boolean): void => {
      clearTimeout(timer)
      probe.destroy()
      resolve(live)
    }
    // A daemon too busy to accept within the timeout is still a daemon: do not steal its socket.
    const timer = setTimeout(() => { finish(true) }, PROBE_TIMEOUT_MS)
    probe.once('connect', () => { finish(true) })
    probe.once('error', (err: NodeJS.ErrnoException) => {
      finish(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT')
    })
  })
}
