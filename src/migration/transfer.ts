/**
 * Checkpoint-image transfer between nodes over a ByteChannel (see ./ports.ts): sendImageDir on the
 * source, receiveImageDir on the target. Wire format: src/protocol/images.ts.
 *
 * Choices, measured on the 2-vCPU dev VM (Node 20, SHA-NI, both ends on the same two cores;
 * benchmarks/transfer.ts prints the current figures):
 * - Integrity: one checksum per file, computed while reading (sender) and while writing
 *   (receiver), compared before the receiver answers ok. The sender picks it (the header's
 *   `checksum`): sha256 (default; ~0.55 s of one core per GiB per end with SHA-NI, more under load)
 *   or crc32 (./transfer/checksum.ts; ~8x cheaper). Migrations use crc32: the channel is
 *   authenticated (AES-GCM records, or Noise), so the end-to-end check only has to catch accidents
 *   between the file read and the file write. Where the content must be named — a checkpoint's
 *   signed manifest, a re-check right before restore — the receiver also computes a sha256 as the
 *   files arrive (ReceiveOptions.sha256). A hashing worker thread would not help here: both ends
 *   share the same 2 cores, so CPU per byte is the budget.
 * - The transport is the main cost. A noise+yamux stream costs ~2.5-4x the CPU per byte of TCP with
 *   one AES-256-GCM call per record (profiles: per-64-KiB ChaCha20-Poly1305 cipher objects and
 *   Buffer.concat copies in noise, yamux frames, Uint8ArrayLists and the GC they cause). So the
 *   daemon moves image dirs over a direct TCP connection of AES-256-GCM records negotiated over the
 *   libp2p stream (src/node/direct/, README Security), falling back to the stream itself.
 * - Allocation is the other cost: every fresh Buffer of image data is external memory, and V8
 *   scavenges for "external memory pressure" every few MiB of it. So on the direct path the sender
 *   reuses its read buffers (the channel seals before `write` returns: `copiesOnWrite`), records are
 *   sealed into pooled buffers and opened through Node's own OpenSSL (src/native/aes-gcm.ts), decrypted straight
 *   from the socket's read buffer into each record's own (src/node/direct/records.ts copyIn).
 * - What remains per GiB, per end (profiles at load ~12, a quiet machine takes about half): AES-GCM
 *   ~0.45 s, crc32 ~0.2 s, the socket copy ~0.4 s, the file read or write ~0.3-0.4 s, GC ~0.1-0.2 s:
 *   ~1.2 CPU-s sending and ~1.7 receiving (from ~2.1 and ~2.5 with sha256 and node:crypto). Since
 *   then (bench:transfer, load ~2): ~0.95 each, with 1 MiB socket reads and the receiver writing
 *   large pieces straight from the record buffer (./transfer/sink.ts writeDirect).
 * - A migration sends CRIU's page files while CRIU still writes them (./transfer/follow.ts).
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
