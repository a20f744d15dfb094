/** Cgroups: the CgroupManager interface, its v1/v2/fake implementations and the host factory. */
import { existsSync, readFileSync } from 'node:fs'
import { readdir, rmdir } from 'node:fs/promises'
import { CgroupV1Manager, parseV1Mounts } from './v1.js'
import { CgroupV2Manager } from './v2.js'
import type { CgroupLogger, CgroupManager } from './types.js'

export type { CgroupLimits, CgroupLogger, CgroupManager, CgroupOpOptions, CgroupStats, LimitController } from './types.js'
export { CgroupExistsError, CgroupLimitError, CgroupNotFoundError, CgroupTimeoutError, CgroupUnsupportedError } from './errors.js'
export { CgroupV1Manager, parseV1Mounts } from './v1.js'
export { CgroupV2Manager } from './v2.js'
export { FakeCgroupManager } from './fake.js'

export interface CreateCgroupManagerInit {
  /** Where cgroupfs is mounted (default /sys/fs/cgroup): the v2 mount, or the dir of the v1 mounts. */
  readonly root?: string
  /** Dir under each hierarchy holding the jobs' cgroups, e.g. 'ssi'. */
  readonly prefix: string
  /** Force a version instead of detecting it. */
  readonly version?: 1 | 2
  readonly logger?: CgroupLogger
}

/** The manager for this host: v2 if `<root>/cgroup.controllers` exists, else v1. */
export function createCgroupManager (init: CreateCgroupManagerInit): CgroupManager {
  const root = init.root ?? '/sys/fs/cgroup'
  const version = init.version ?? (existsSync(`${root}/cgroup.controllers`) ? 2 : 1)
  if (version === 2) return new CgroupV2Manager({ root, prefix: init.prefix, logger: init.logger })
  const mounts = parseV1Mounts(readFileSync('/proc/self/mountinfo', 'utf8'), root)
  return new CgroupV1Manager({ mounts, prefix: init.prefix, logger: init.logger })
}

export interface RemovePrefixOptions {
  /** Where cgroupfs is mounted (default /sys/fs/cgroup). */
  readonly root?: string
  /** Whether the (empty) child cgroup `name` may go first; default: none may. */
  readonly removable?: (name: string) => Promise<boolean>
}

/**
 * Removes `<prefix>` from every hierarchy if no job cgroup is left in it (rmdir refuses a cgroup
 * with children, so a job that outlives its daemon keeps its parent), after the empty children
 * `removable` names (rmdir refuses one with tasks too). Managers make the prefix dir on first use
 * and never remove it, since jobs outlive daemons: the owner calls this when it stops.
 */
export async function removeEmptyCgroupPrefix (prefix: string, opts: RemovePrefixOptions = {}): Promise<void> {
  if (prefix === '' || prefix.includes('/') || prefix.startsWith('.')) throw new Error(`not a cgroup prefix: ${prefix}`)
  const root = opts.root ?? '/sys/fs/cgroup'
  const parents = existsSync(`${root}/cgroup.controllers`)
    ? [root]
    : [...new Set(parseV1Mounts(readFileSync('/proc/self/mountinfo', 'utf8'), root).values())]
  const verdicts = new Map<string, Promise<boolean>>()
  const removable = async (name: string): Promise<boolean> => {
    if (opts.removable === undefined) return false
    if (!verdicts.has(name)) verdicts.set(name, opts.removable(name).catch(() => false))
    return await (verdicts.get(name) as Promise<boolean>)
  }
  await Promise.all(parents.map(async p => {
    const dir = `${p}/${prefix}`
    for (const child of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (child.isDirectory() && await removable(child.name)) await rmdir(`${dir}/${child.name}`).catch(() => {})
    }
    await rmdir(dir).catch(() => {})
  }))
}
