/**
 * What a cluster left behind after every job ended and every daemon stopped: processes (daemons,
 * shims, tini, CRIU, job processes), cgroup dirs under every v1 hierarchy and the v2 mount, mounts
 * and nsfs bind mounts naming its dir, migration image dirs, and LevelDB locks still held.
 */
import { existsSync } from 'node:fs'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { clusterProcesses, hostProcesses } from './host.js'

export interface Leak { readonly kind: 'process' | 'cgroup' | 'mount' | 'namespace' | 'image-dir' | 'lock'; readonly detail: string }

const CGROUP_ROOT = '/sys/fs/cgroup'

/** Every cgroup hierarchy: the v2 root, or each v1 mount and the hybrid v2 mount (`unified`). */
async function hierarchies (): Promise<string[]> {
  if (existsSync(join(CGROUP_ROOT, 'cgroup.controllers'))) return [CGROUP_ROOT]
  const entries = await readdir(CGROUP_ROOT, { withFileTypes: true }).catch(() => [])
  return entries.filter(e => e.isDirectory()).map(e => join(CGROUP_ROOT, e.name))
}

async function cgroupLeaks (cluster: string): Promise<Leak[]> {
  const out: Leak[] = []
  for (const h of await hierarchies()) {
    for (const e of await readdir(h, { withFileTypes: true }).catch(() => [])) {
      if (!e.isDirectory() || !e.name.startsWith(`ssi-${cluster}-`)) continue
      const children = (await readdir(join(h, e.name), { withFileTypes: true })).filter(c => c.isDirectory()).map(c => c.name)
      out.push({ kind: 'cgroup', detail: `${join(h, e.name)}${children.length > 0 ? ` (job cgroups: ${children.join(', ')})` : ' (empty)'}` })
    }
  }
  return out
}

async function mountLeaks (dir: string): Promise<Leak[]> {
  const out: Leak[] = []
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    if (!line.includes(dir)) continue
    out.push({ kind: line.includes(' - nsfs ') ? 'namespace' : 'mount', detail: line })
  }
  return out
}

/**
 * Image and staging dirs: migrations in or out and checkpoint work dirs belong to operations in
 * flight, so none should be left once every job ended and every daemon stopped. One exception: a
 * dump that failed leaves its CRIU log (and nothing else) in `migrations/out/<vpid>`, on purpose:
 * the migration's error names that log. It goes with the next migration of the job or daemon start.
 */
async function imageDirLeaks (stateDirs: readonly string[]): Promise<Leak[]> {
  const out: Leak[] = []
  for (const s of stateDirs) {
    // `migrations/trash`: image dirs of done migrations, deleted in the background (a stopping daemon waits for that).
    for (const sub of ['migrations/in', 'migrations/out', 'migrations/trash', 'checkpoints/work']) {
      for (const e of await readdir(join(s, sub)).catch(() => [] as string[])) {
        if (!(await onlyCriuLogs(join(s, sub, e)))) out.push({ kind: 'image-dir', detail: join(s, sub, e) })
      }
    }
  }
  return out
}

export async function onlyCriuLogs (dir: string): Promise<boolean> {
  const files = await readdir(dir).catch(() => undefined)
  return files !== undefined && files.length > 0 && files.every(f => f.endsWith('.log'))
}

/** Dirs holding only the CRIU log of a failed dump (see imageDirLeaks): reported, not counted. */
export async function keptDumpLogs (stateDirs: readonly string[]): Promise<string[]> {
  const out: string[] = []
  for (const s of stateDirs) {
    for (const e of await readdir(join(s, 'migrations', 'out')).catch(() => [] as string[])) {
      if (await onlyCriuLogs(join(s, 'migrations', 'out', e))) out.push(join(s, 'migrations', 'out', e))
    }
  }
  return out
}

/**
 * Periodic checkpoints held for jobs that have ended: kept on purpose (`ssi restore --last` works
 * after the job ended) until jobs.retainFinishedMs + jobs.heldCheckpointAfterReapMs after its end,
 * longer than a soak run. Reported, not counted as leaks.
 */
export async function retainedCheckpoints (stateDirs: readonly string[]): Promise<string[]> {
  const out: string[] = []
  for (const s of stateDirs) for (const e of await readdir(join(s, 'checkpoints', 'held')).catch(() => [] as string[])) out.push(join(s, 'checkpoints', 'held', e))
  return out
}

/** A LevelDB LOCK file whose inode is still in /proc/locks: some process still holds the store. */
async function lockLeaks (stateDirs: readonly string[]): Promise<Leak[]> {
  const locks = await readFile('/proc/locks', 'utf8')
  const out: Leak[] = []
  for (const s of stateDirs) {
    const file = join(s, 'db', 'LOCK')
    const ino = await stat(file).then(st => st.ino, () => undefined)
    if (ino !== undefined && new RegExp(`:${ino} `).test(locks)) out.push({ kind: 'lock', detail: `${file} is still locked` })
  }
  return out
}

export async function findLeaks (cluster: string, dir: string, stateDirs: readonly string[]): Promise<Leak[]> {
  const procs = clusterProcesses(await hostProcesses(), cluster, dir)
  const nsHolders: Leak[] = []
  for (const p of procs) {
    const ns = await readdir(`/proc/${p.pid}/ns`).catch(() => [] as string[])
    nsHolders.push({ kind: 'namespace', detail: `pid ${p.pid} (${p.comm}) still holds its namespaces (${ns.join(', ')})` })
  }
  return [
    ...procs.map(p => ({ kind: 'process' as const, detail: `${p.pid} ${p.comm}: ${p.cmdline.slice(0, 200)} [cgroup ${p.cgroup.split('\n').find(l => l.includes('ssi-')) ?? '-'}]` })),
    ...nsHolders,
    ...await cgroupLeaks(cluster),
    ...await mountLeaks(dir),
    ...await imageDirLeaks(stateDirs),
    ...await lockLeaks(stateDirs)
  ]
}
