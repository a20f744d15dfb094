/**
 * A node's job cgroups: `ssi-<cluster>-<node>/<vpid>` under each hierarchy (one dir per node, so
 * several nodes on one host keep apart), and what is left of them once the node stops.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { removeEmptyCgroupPrefix } from '../cgroups/index.js'

/** The dir under each cgroup hierarchy that holds one node's job cgroups. */
export const jobCgroupPrefix = (cluster: string, node: string): string => `ssi-${cluster}-${node}`

/**
 * Removes the node's job cgroups that are empty and whose job has ended (its shim wrote the exit
 * record, which carries the OOM count, or its dir is gone), then the node's dir if nothing is left
 * in it. A job that ended just before its daemon stopped still had its cgroup, and no daemon would
 * remove it. A running job keeps its cgroup (rmdir refuses one with tasks), and so does one whose
 * start is under way (no exit record yet), with the node's dir.
 */
export async function removeEndedJobCgroups (cluster: string, node: { readonly name: string, readonly stateDir: string }, root?: string): Promise<void> {
  const jobsRoot = join(node.stateDir, 'jobs')
  const ended = async (id: string): Promise<boolean> => !existsSync(join(jobsRoot, id)) || existsSync(join(jobsRoot, id, 'exit'))
  await removeEmptyCgroupPrefix(jobCgroupPrefix(cluster, node.name), { root, removable: ended })
}
