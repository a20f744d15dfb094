/**
 * Live-migration modes and how `--mode auto` picks one.
 *
 * - stop-copy: freeze, dump everything, copy, restore. Downtime grows with the job's memory.
 * - post-copy: dump all but memory, restore on the target at once, and let the target pull the
 *   pages from the source (CRIU lazy pages over userfaultfd). Downtime stays ~0.1-0.3 s whatever
 *   the size, but until every page has arrived the job needs BOTH nodes: if the source dies during
 *   the page pull, the job is lost.
 * - pre-copy: copy memory while the job runs, then only what changed (needs the kernel's soft-dirty
 *   memory tracking). Refused when the kernel lacks it, and in this version of ssi in any case.
 *
 * Auto rule (MigrationModeConfig): stop-copy below `postCopyAboveBytes` of resident memory; above
 * it post-copy when this host can do lazy pages, else stop-copy.
 */

export const MIGRATION_MODES = ['stop-copy', 'post-copy', 'pre-copy'] as const
export type MigrationMode = typeof MIGRATION_MODES[number]
export type RequestedMode = MigrationMode | 'auto'

/** What the auto rule needs; a documented field of the cluster config's `migration` section. */
export interface MigrationModeConfig {
  /** Jobs with more resident memory than this many bytes migrate post-copy under `--mode auto`. */
  readonly postCopyAboveBytes: number
}

export const DEFAULT_MODE_CONFIG: MigrationModeConfig = { postCopyAboveBytes: 256 * 2 ** 20 }

/** Smallest fs.pipe-max-size with which CRIU's lazy dump works here (docs/criu.md). */
export const LAZY_PIPE_MAX_SIZE = 4 * 2 ** 20

/** What this host's kernel and CRIU can do for migration. */
export interface MigrationCapabilities {
  /** Soft-dirty memory tracking (CRIU `--track-mem`): pre-copy possible. */
  readonly memTrack: boolean
  /** userfaultfd lazy pages, and a large enough fs.pipe-max-size: post-copy possible. */
  readonly lazyPages: boolean
  /** Why lazyPages is false, for the user. */
  readonly lazyPagesWhy?: string
}

/** The requested mode cannot work on this host, with the reason. */
export class ModeUnsupportedError extends Error {
  static override name = 'ModeUnsupportedError'
  override name = 'ModeUnsupportedError'
  constructor (message: string, readonly mode: MigrationMode) { super(message) }
}

export interface ChosenMode {
  readonly mode: MigrationMode
  /** One line saying why, e.g. "auto: 1.0 GiB resident > 256 MiB: post-copy". */
  readonly reason: string
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`

/** Why pre-copy is refused on a host with these capabilities. */
export function preCopyRefusal (caps: MigrationCapabilities): string {
  if (!caps.memTrack) {
    return 'pre-copy needs memory change tracking, which this kernel lacks (CONFIG_MEM_SOFT_DIRTY is not set: ' +
      'CRIU refuses --track-mem); use --mode post-copy for low downtime, or stop-copy'
  }
  return 'pre-copy is not implemented in this version of ssi (the kernel could track memory changes); ' +
    'use --mode post-copy for low downtime, or stop-copy'
}

/**
 * The mode to use for a job of `rssBytes` resident memory. Explicit modes are checked against the
 * host's capabilities (ModeUnsupportedError with the reason); `auto` follows the rule above.
 */
export function chooseMode (requested: RequestedMode, rssBytes: number, caps: MigrationCapabilities, config: MigrationModeConfig = DEFAULT_MODE_CONFIG): ChosenMode {
  switch (requested) {
    case 'stop-copy':
      return { mode: 'stop-copy', reason: 'requested' }
    case 'pre-copy':
      throw new ModeUnsupportedError(preCopyRefusal(caps), 'pre-copy')
    case 'post-copy':
      if (!caps.lazyPages) throw new ModeUnsupportedError(`post-copy is not possible on this host: ${caps.lazyPagesWhy ?? 'no lazy-pages support'}`, 'post-copy')
      return { mode: 'post-copy', reason: 'requested' }
    case 'auto': {
      const limit = config.postCopyAboveBytes
      if (rssBytes <= limit) return { mode: 'stop-copy', reason: `auto: ${mib(rssBytes)} resident <= ${mib(limit)}` }
      if (caps.lazyPages) return { mode: 'post-copy', reason: `auto: ${mib(rssBytes)} resident > ${mib(limit)}` }
      return { mode: 'stop-copy', reason: `auto: ${mib(rssBytes)} resident > ${mib(limit)}, but post-copy is not possible here (${caps.lazyPagesWhy ?? 'no lazy pages'})` }
    }
  }
}

/** The warning a user must see before a post-copy migration starts. */
export const POST_COPY_WARNING = 'post-copy: the job resumes on the target at once and pulls its memory from the source; ' +
  'if the source node dies before the page pull is complete, the job is lost'
