/** CRIU driver: checkpoint and restore process trees through `criu swrk`. */
export { Criu } from './criu.js'
export { createCheckpointer } from './checkpointer.js'
export type { Checkpointer, CreateCheckpointerInit } from './checkpointer.js'
export type { CriuInit, CriuVersion, CriuFeatures, DumpResult, RestoreResult, PageServerResult } from './criu.js'
export { findCriu, versionAtLeast, CRIU_PATH_FILE, MIN_CRIU_VERSION } from './find.js'
export type { FindCriuOptions, FoundCriu } from './find.js'
export { CriuError, CriuNotFoundError, CriuVersionError } from './errors.js'
export type { CriuFailure } from './errors.js'
export type {
  RequestOptions, ImageOptions, DumpOptions, RestoreOptions, PageServerOptions, PageServerAddress, InheritFd, CgroupRoot
} from './options.js'
export type { CriuLogger, NotifyHook } from './swrk.js'
export { CriuProtocolError } from './rpc.js'
export type { LazyPagesOptions, LazyPagesDaemon } from './lazy-pages.js'
