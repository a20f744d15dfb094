/**
 * Checkpoint-image transfer between nodes over a ByteChannel (see ./ports.ts): sendImageDir on the
 * source, receiveImageDir on the target. Wire format: src/protocol/images.ts.
 *
 * Choices, measured on the 2-vCPU dev VM (Node 20, SHA-NI, both ends on the same two cores;
 * benchmarks/transfer.ts prints the current figures):
 * - Integrity: one sha256 per file, computed while reading (sender) and while writing (receiver),
 *   compared before the receiver answers ok. With SHA-NI, Node's sha256 runs at ~1.8 GB/s, i.e.
 *   ~0.55 s of one core per GiB per end (zlib.crc32 is ~3x cheaper but only catches accidents;
 *   sha256 also names the content, so a restore can re-check the images it is handed, and the
 *   checkpoint service compares the receiver's digests with the manifest). A hashing worker thread
 *   would not help here: both ends share the same 2 cores, so CPU per byte is the budget.
 * - The transport is the main cost. A noise+yamux stream costs ~2.5-4x the CPU per byte of TCP with
 *   one AES-256-GCM call per record (profiles: per-64-KiB ChaCha20-Poly1305 cipher objects and
 *   Buffer.concat copies in noise, yamux frames, Uint8ArrayLists and the GC they cause). So the
 *   daemon moves image dirs over a direct TCP connection of AES-256-GCM records negotiated over the
 *   libp2p stream (src/node/direct/, README Security), falling back to the stream itself.
 * - What remains per GiB, both ends together: sha256 x2, AES-GCM x2 (Node allocates every output
 *   buffer, ~2.5x what `openssl speed` does), two TCP copies, the file read and write, GC. That is
 *   ~2.5-3 s of CPU per GiB: on 2 cores shared by both ends, ~0.7-0.9 GB/s at best. Reaching
 *   1 GB/s would need dropping one of the sha256s or Node's per-call allocations.
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
export { FAST_CRC32 } from './transfer/checksum.js'
export { createZstdFilter, zstdImplementation, ZstdError } from './transfer/zstd.js'
export type { ZstdOptions, ByteFilter } from './transfer/zstd.js'
export { createMemoryChannelPair } from './transfer/memory-channel.js'
export type { MemoryChannelOptions } from './transfer/memory-channel.js'
export { IMAGES_PROTOCOL } from '../protocol/images.js'
export type { Compression } from '../protocol/images.js'
