/** Hand-made image-transfer frames, to test what a hostile or broken sender can make a receiver do. */
import { createMemoryChannelPair, receiveImageDir } from '../../src/migration/transfer.js'
import { FrameType, IMAGES_WIRE_VERSION, encodeFrame, encodeHeader } from '../../src/protocol/images.js'
import type { ImageTransferError, ReceiveOptions } from '../../src/migration/transfer.js'
import type { ImageFile } from '../../src/protocol/images.js'

/** Feeds `frames` to a receiver writing into `dest`; returns its error (if any) and what it answered. */
export async function receiveFrames (dest: string, frames: Uint8Array[], recv: Partial<ReceiveOptions> = {}, close = true): Promise<{ err: ImageTransferError | undefined, dest: string, answer: Buffer }> {
  const [a, b] = createMemoryChannelPair()
  const answer: Uint8Array[] = []
  const reader = (async () => { for await (const c of a.read()) answer.push(c) })().catch(() => {})
  const writer = (async () => {
    for (const f of frames) await a.write(f)
    if (close) await a.closeWrite()
  })().catch(() => {})
  const result = await receiveImageDir(b, dest, { maxTotalBytes: 1 << 30, ...recv }).then(() => undefined, (e: unknown) => e as ImageTransferError)
  a.abort(new Error('test done'))
  await Promise.all([reader, writer])
  return { err: result, dest, answer: Buffer.concat(answer) }
}

export const header = (files: ImageFile[], extra: object = {}): Uint8Array =>
  encodeHeader({ v: IMAGES_WIRE_VERSION, compression: 'none', checksum: 'sha256', files, totalBytes: files.reduce((s, f) => s + f.size, 0), ...extra })
export const data = (bytes: Uint8Array): Uint8Array => encodeFrame(FrameType.data, bytes)
