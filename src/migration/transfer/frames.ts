/** Frames over a ByteChannel: the parser from the schema module driven by the channel's reads. */
import { ImageFrameParser } from '../../protocol/images.js'
import { PeerMessageError } from '../../protocol/peer.js'
import { ChannelClosedError } from '../ports.js'
import { ImageTransferError } from './errors.js'
import type { ParsedFrame } from '../../protocol/images.js'
import type { ByteChannel, ReadOptions } from '../ports.js'

/**
 * Yields the frames the remote sends (DATA payloads piece by piece, without copying: with
 * `reuse`, a DATA piece is valid only until the loop asks for the next frame). Ends when the
 * remote closes its write side at a frame boundary; a close inside a frame, a reset, or a
 * malformed frame becomes an ImageTransferError ('channel' or 'protocol').
 */
export async function * readFrames (channel: ByteChannel, signal?: AbortSignal, opts?: ReadOptions): AsyncGenerator<ParsedFrame> {
  const parser = new ImageFrameParser()
  try {
    for await (const chunk of channel.read(signal, opts)) {
      yield * parser.push(chunk)
    }
  } catch (err) {
    throw frameError(err)
  }
  if (!parser.atBoundary) throw new ImageTransferError('the channel ended in the middle of a frame', { code: 'channel' })
}

function frameError (err: unknown): unknown {
  if (err instanceof ChannelClosedError) return new ImageTransferError(`image channel closed: ${err.message}`, { code: 'channel', cause: err })
  if (err instanceof PeerMessageError) return new ImageTransferError(`bad image frame: ${err.message}`, { code: 'protocol', cause: err })
  return err
}
