/**
 * Checkpoint-image transfer between nodes over a ByteChannel (see ./ports.ts): sendImageDir on the
 * source, receiveImageDir on the target. Wire format: src/protocol/images.ts.
 */
export { sendImageDir } from './transfer/send.js'
export type { SendOptions, TransferSummary } from './transfer/send.js'
export { receiveImageDir, DEFAULT_MAX_FILES } from './transfer/receive.js'
export type { ReceiveOptions, ReceiveSummary } from './transfer/receive.js'
export { ImageTransferError, ImageIntegrityError } from './transfer/errors.js'
export type { TransferErrorCode } from './transfer/errors.js'
export type { TransferProgress, ProgressListener, TransferLogger } from './transfer/progress.js'
export { listImageDir } from './transfer/source.js'
export { createZstdFilter, zstdImplementation, ZstdError } from './transfer/zstd.js'
export type { ZstdOptions, ByteFilter } from './transfer/zstd.js'
export { createMemoryChannelPair } from './transfer/memory-channel.js'
export type { MemoryChannelOptions } from './transfer/memory-channel.js'
export { IMAGES_PROTOCOL } from '../protocol/images.js'
export type { Compression } from '../protocol/images.js'
