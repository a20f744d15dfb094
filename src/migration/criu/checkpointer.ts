/**
 * The side-effect interface the migration code depends on (conventions item 3): checkpoint and
 * restore of process trees. `Criu` is the real implementation; tests of migration logic may use a
 * fake that implements this interface.
 *
 * Blocking and concurrency: every method is asynchronous and never blocks the event loop; each
 * call is independent (its own criu process), cancellable through its options' `signal`.
 */
import type { CriuFeatures, CriuVersion, DumpResult, PageServerResult, RestoreResult } from './criu.js'
import { Criu } from './criu.js'
import { findCriu, type FindCriuOptions } from './find.js'
import type { LazyPagesDaemon, LazyPagesOptions } from './lazy-pages.js'
import type { DumpOptions, PageServerOptions, RequestOptions, RestoreOptions } from './options.js'
import type { CriuLogger } from './swrk.js'

export interface Checkpointer {
  version (options?: RequestOptions): Promise<CriuVersion>
  /** Resolves if checkpointing works on this host; throws CriuError with the reason otherwise. */
  check (options?: RequestOptions): Promise<void>
  checkFeatures (options?: RequestOptions): Promise<CriuFeatures>
  dump (options: DumpOptions): Promise<DumpResult>
  preDump (options: DumpOptions): Promise<DumpResult>
  restore (options: RestoreOptions): Promise<RestoreResult>
  pageServer (options: PageServerOptions): Promise<PageServerResult>
  startLazyPages (options: LazyPagesOptions): Promise<LazyPagesDaemon>
}

export interface CreateCheckpointerInit extends FindCriuOptions {
  /** Existing directory for CRIU's per-request log files. */
  readonly workDir: string
  readonly logger?: CriuLogger
}

/**
 * Finds criu (see findCriu), checks its version, and returns the driver.
 * @throws CriuNotFoundError | CriuVersionError with what to do about it.
 */
export async function createCheckpointer (init: CreateCheckpointerInit): Promise<Checkpointer> {
  const found = await findCriu(init)
  init.logger?.info({ criu: found.path, version: found.version.text, source: found.source }, 'using criu')
  return new Criu({ criuPath: found.path, workDir: init.workDir, logger: init.logger })
}
