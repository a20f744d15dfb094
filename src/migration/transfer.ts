/**
 * Checkpoint-image transfer between nodes over a ByteChannel (see ./ports.ts): sendImageDir on the
 * source, receiveImageDir on the target. Wire format: src/protocol/images.ts.
 *
 * Choices, measured on the 2-vCPU dev VM (Node 20, SHA-NI, both ends on the same two cores;
 * benchmarks/transfer.ts prints the current figures):
 * - Integrity: one sha256 per file, computed while reading (sender) and while writing (receiver),
 *   compared before the receiver answers ok. With SHA-NI, Node's sha256 runs at ~1.8 GB/s, i.e.
 *   ~0.55 s of one core per GiB per end, a minor share of a transfer that today runs at
 *   ~110-380 MB/s over libp2p (zlib.crc32 is ~2x cheaper but only catches accidents; sha256 also
 *   names the content, so a restore can re-check the images it is handed). A hashing worker
 *   thread becomes worth its copies once the transport itself exceeds ~1 GB/s.
 * - Throughput is bounded by the libp2p stack, not by this protocol: the in-memory channel moves
 *   ~450-750 MB/s with both sha256s and the files on one thread; a raw libp2p stream with
 *   noise+yamux (the daemon's stack since pnet was dropped) ~300-550 MB/s between two processes;
 *   ssi reaches ~45-80 % of it.
 * - zstd is opt-in (`compress: 'zstd'`; the `zstd` binary on Node 20, zlib's on Node 22.15+).
 *   It pays only when the link is slower than zstd -1 and the image compresses: over the pnet
 *   stack a 75 %-compressible image went 1.0-1.45x as fast (runs vary); on incompressible data it
 *   costs 30-50 % of the rate; without pnet it lost 0-25 %. No `auto` mode yet: choose per link
 *   (zstd for WAN or slow links, none on a LAN), or sample the pages file first.
 * - Files are not fsynced: a restore reads them right away, and a node that crashes in between
 *   loses the migration anyway.
 */
export { sendImageDir } from './transfer/send.js'
export type { SendOptions, TransferSummary } from './transfer/send.js'
export { receiveImageDir, DEFAULT_MAX_FILES } from './transfer/receive.js'
export { recheckImages } from './transfer/recheck.js'
export type { ExpectedImage } from './transfer/recheck.js'
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
