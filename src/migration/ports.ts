/**
 * What migration needs from the node daemon, declared here so src/migration never imports src/node.
 * The daemon implements BulkTransport with libp2p (src/node/bulk-transport.ts); tests use the
 * in-memory pair in ./transfer/memory-channel.ts, and one compliance suite runs against both.
 */

/**
 * A duplex, ordered, reliable byte pipe to one other node, for bulk data (checkpoint images).
 * Bytes arrive in order and intact, or the channel fails: it never skips or reorders data. It does
 * not keep the writer's chunk boundaries.
 *
 * Concurrency: one writer and one reader at a time. `write` calls must be awaited one after the
 * other; `read` is called once and consumed by one loop. Reading and writing may run concurrently
 * (the two directions are independent), and `abort` may be called at any time from anywhere.
 */
export interface ByteChannel {
  /**
   * Sends `chunk`; resolves when the channel can take more. The channel buffers at most a bounded
   * amount (about one chunk plus the transport's window), so a slow reader makes this wait: that is
   * the backpressure. Ownership of `chunk` passes to the channel: do not modify it afterwards.
   * Rejects with ChannelClosedError once the channel was aborted (either end) or closed for
   * writing, and with the signal's reason when `signal` aborts (the channel is then unusable).
   */
  write(chunk: Uint8Array, signal?: AbortSignal): Promise<void>
  /**
   * Ends this direction: resolves once everything written was handed to the transport. The remote's
   * `read` then ends after the last byte. Reading from the remote continues to work.
   */
  closeWrite(signal?: AbortSignal): Promise<void>
  /**
   * The bytes the remote writes, as chunks of any size, in order. Call once. Pulling is the
   * backpressure: while the loop does not pull, the channel buffers a bounded amount and then stops
   * the remote's writes. Ends when the remote has closed its write side and every byte was
   * delivered; throws ChannelClosedError if either end aborts or the connection drops, and the
   * signal's reason when `signal` aborts. Leaving the loop early does not close the channel.
   * With `reuse`, a chunk may be a view of a buffer the channel fills again once the loop asks for
   * the next chunk (or leaves): copy what must outlive that. Channels without buffers to reuse
   * ignore it.
   */
  read(signal?: AbortSignal, opts?: ReadOptions): AsyncIterable<Uint8Array>
  /**
   * Tears the channel down at once in both directions, discarding unsent and unread data. Pending
   * and later operations here reject with ChannelClosedError; the remote's do too (its `read` does
   * not end cleanly, so it can tell an abort from a finished transfer). Idempotent.
   */
  abort(err: Error): void
  /**
   * True when `write` no longer needs `chunk` once its promise settled (it copied or encrypted the
   * bytes): the caller may then refill the buffer, e.g. reuse its file-read buffers instead of
   * allocating fresh ones. Absent or false: `chunk` belongs to the channel, as said above.
   */
  readonly copiesOnWrite?: boolean
}

export interface ReadOptions {
  /** The loop is done with each chunk when it asks for the next one (see ByteChannel.read). */
  readonly reuse?: boolean
}

/**
 * Handles one incoming channel. When the returned promise resolves, the transport closes the write
 * side (if the handler did not) and releases the channel once the remote is done; when it rejects,
 * the transport aborts the channel. `signal` aborts when the daemon stops.
 */
export type BulkHandler = (channel: ByteChannel, fromNode: string, signal: AbortSignal) => Promise<void>

/**
 * Opens bulk byte channels between nodes by node name, one per transfer. Safe for concurrent use:
 * any number of channels may be open at once, to the same node or different ones.
 */
export interface BulkTransport {
  /**
   * Opens a channel to `node` speaking `protocol` (e.g. '/ssi/images/1'). Rejects with
   * NodeUnavailableError (src/ssi/ports.ts) if the node is unknown, unreachable, or does not handle
   * the protocol, and with the signal's reason if `signal` aborts first. `signal` bounds only the
   * opening; pass signals to the channel's operations for the transfer itself.
   */
  open(node: string, protocol: string, signal: AbortSignal): Promise<ByteChannel>
  /** Registers the handler for incoming channels on `protocol`, replacing any earlier one. */
  handle(protocol: string, handler: BulkHandler): Promise<void>
  /** Removes the handler; channels already open are not affected. */
  unhandle(protocol: string): Promise<void>
}

/** The channel was aborted (locally or by the remote), reset, or its connection dropped. */
export class ChannelClosedError extends Error {
  static override name = 'ChannelClosedError'
  override name = 'ChannelClosedError'
}
