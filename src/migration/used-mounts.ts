/** Reads what a job's processes use from /proc and turns it into CRIU's skip_mnt list (see skip-mounts.ts). */
import { readdir, readFile, readlink, stat } from 'node:fs/promises'
import { processTree } from './precheck.js'
import { mappedFiles, mountsOfPaths, mountsToSkip, parseMountinfo } from './skip-mounts.js'
import type { UsedPath } from './skip-mounts.js'

const majMin = (dev: number): string => `${(dev >> 8) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`

async function linkPath (pid: number, what: string): Promise<UsedPath | undefined> {
  const path = await readlink(`/proc/${pid}/${what}`).catch(() => undefined)
  if (path === undefined || !path.startsWith('/')) return undefined
  const s = await stat(`/proc/${pid}/${what}`).catch(() => undefined)
  return { path: path.replace(/ \(deleted\)$/, ''), dev: s === undefined ? undefined : majMin(s.dev) }
}

async function fdMounts (pid: number, into: Set<number>): Promise<void> {
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
    const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '')
    const m = /^mnt_id:\s*(\d+)/m.exec(info)
    if (m !== null) into.add(Number(m[1]))
  }
}

/**
 * Mount points of the job's mount namespace that no process of the tree rooted at host pid
 * `root` uses: safe to leave out of its images. Empty when /proc cannot be read.
 */
export async function unusedMounts (root: number): Promise<string[]> {
  const info = await readFile(`/proc/${root}/mountinfo`, 'utf8').catch(() => '')
  if (info === '') return []
  const mounts = parseMountinfo(info)
  const used = new Set<number>()
  const paths: UsedPath[] = []
  for (const pid of await processTree(root)) {
    await fdMounts(pid, used)
    for (const what of ['cwd', 'root', 'exe']) {
      const p = await linkPath(pid, what)
      if (p !== undefined) paths.push(p)
    }
    paths.push(...mappedFiles(await readFile(`/proc/${pid}/maps`, 'utf8').catch(() => '')))
  }
  for (const id of mountsOfPaths(mounts, paths)) used.add(id)
  return mountsToSkip(info, used)
}
