/** Removes a node's cgroups (every job cgroup under its prefix, in every hierarchy), killing what is left in them. */
import { existsSync } from 'node:fs'
import { readdir, rmdir } from 'node:fs/promises'
import { join } from 'node:path'
import { createCgroupManager } from '../../ssi/cgroups/index.js'

const ROOT = '/sys/fs/cgroup'

/** Directories that may hold `<prefix>`: the v2 root, or each v1 hierarchy. */
async function hierarchies (): Promise<string[]> {
  if (existsSync(join(ROOT, 'cgroup.controllers'))) return [ROOT]
  const entries = await readdir(ROOT, { withFileTypes: true }).catch(() => [])
  return entries.filter(e => e.isDirectory()).map(e => join(ROOT, e.name))
}

export async function removeCgroupPrefix (prefix: string): Promise<void> {
  const dirs = (await hierarchies()).map(h => join(h, prefix)).filter(d => existsSync(d))
  if (dirs.length === 0) return
  const names = new Set<string>()
  for (const d of dirs) {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) names.add(e.name)
  }
  const manager = createCgroupManager({ prefix })
  for (const name of names) await manager.destroy(name, { timeoutMs: 5000 }).catch(() => {})
  for (const d of dirs) await rmdir(d).catch(() => {})
}
