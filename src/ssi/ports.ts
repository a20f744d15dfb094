/**
 * What the cluster namespaces (src/ssi) and migration (src/migration) need from the node daemon,
 * declared here so those layers never import src/node. The daemon implements these with libp2p and
 * LevelDB; tests can wire them in one process.
 */

export interface PeerCallOptions {
  readonly signal?: AbortSignal
  /** Deadline for the whole call in ms (default: the transport's). */
  readonly timeoutMs?: number
}

export interface PeerStreamOptions extends PeerCallOptions {
  /** Called for each event the remote handler emits, in order; awaited (backpressure). */
  readonly onEvent: (event: unknown) => void | Promise<void>
}

export interface PeerHandlerContext {
  /** Name of the calling node (the local node for local calls). */
  readonly fromNode: string
  /** Aborted when the caller cancels or disconnects, or the daemon stops. */
  readonly signal: AbortSignal
  /** Sends an event to the caller; resolves when it may send the next one. */
  emit(event: unknown): Promise<void>
}

export type PeerHandler = (params: unknown, ctx: PeerHandlerContext) => Promise<unknown>

/**
 * Request/response (and server-streamed) calls between nodes by node name. Calls to the local node
 * run the handler in-process. Errors thrown by a remote handler arrive as PeerCallError carrying the
 * remote error's name and message. Safe for concurrent use.
 */
export interface PeerRpc {
  call(node: string, method: string, params: unknown, opts?: PeerCallOptions): Promise<unknown>
  stream(node: string, method: string, params: unknown, opts: PeerStreamOptions): Promise<unknown>
  handle(method: string, handler: PeerHandler): void
}

/** A node as the cluster namespaces see it. */
export interface NodeView {
  readonly name: string
  readonly id: number
  readonly state: 'alive' | 'suspect' | 'dead'
  readonly self: boolean
  readonly load: { readonly runQueue: number, readonly load1: number, readonly cpus: number }
  readonly memory: { readonly freeBytes: number, readonly totalBytes: number }
  readonly jobs: number
}

export interface ClusterView {
  readonly selfName: string
  readonly selfId: number
  nodes(): NodeView[]
}

/** Error from a peer call; `remoteName` is the remote error class name (e.g. 'VpidNotFoundError'). */
export class PeerCallError extends Error {
  static override name = 'PeerCallError'
  override name = 'PeerCallError'
  constructor (message: string, readonly remoteName: string, readonly node: string, options?: ErrorOptions) {
    super(message, options)
  }
}

export class NodeUnavailableError extends Error {
  static override name = 'NodeUnavailableError'
  override name = 'NodeUnavailableError'
}
