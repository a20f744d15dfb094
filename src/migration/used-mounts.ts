/**
 * Reads what a job's processes use from /proc and turns it into CRIU's skip_mnt list (see
 * skip-mounts.ts). Synchronously, as precheck.ts reads /proc: through the thread pool, one hop per
 * fd and link cost ~9 ms of every dump of a small job. A tree with many fds yields now and then.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { orEmpty, processTree } from './precheck.js'
import { mappedFiles, mountsOfPaths, mountsToSkip, parseMountinfo } from './skip-mounts.js'
import type { UsedPath } from './skip-mounts.js'

const majMin = (dev: number): string => `${(dev >> 8) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`

function linkPath (pid: number, what: string): UsedPath | undefined {
  const path = orEmpty(() => readlinkSync(`/proc/${pid}/${what}`), '')
  if (!path.startsWith('/')) return undefined
  const s = orEmpty(() => statSync(`/proc/${pid}/${what}`), undefined)
  return { path: path.replace(/ \(deleted\)$/, ''), dev: s === undefined ? undefined : majMin(s.dev) }
}

/** Fds read between two turns of the event loop. */
const YIELD_EVERY = 256

async function fdMounts (pid: number, into: Set<number>): Promise<void> {
  let n = 0
  for (const fd of orEmpty(() => readdirSync(`/proc/${pid}/fd`), [] as string[])) {
    const info = orEmpty(() => readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'), '')
    const m = /^mnt_id:\s*(\d+)/m.exec(info)
    if (m !== null) into.add(Number(m[1]))
    if (++n % YIELD_EVERY === 0) await nextTurn()
  }
}

/**
 * Mount points of the job's mount namespace that no process of the tree rooted at host pid
 * `root` uses: safe to leave out of its images. Empty when /proc cannot be read.
 */
export async function unusedMounts (root: number): Promise<string[]> {
  const info = orEmpty(() => readFileSync(`/proc/${root}/mountinfo`, 'utf8'), '')
  if (info === '') return []
  const mounts = parseMountinfo(info)
  const used = new Set<number>()
  const paths: UsedPath[] = []
  for (const pid of await processTree(root)) {
    await fdMounts(pid, used)
    for (const what of ['cwd', 'root', 'exe']) {
      const p = linkPath(pid, what)
      if (p !== undefined) paths.push(p)
    }
    paths.push(...mappedFiles(orEmpty(() => readFileSync(`/proc/${pid}/maps`, 'utf8'), '')))
  }
  for (const id of mountsOfPaths(mounts, paths)) used.add(id)
  return mountsToSkip(info, used)
}
