/**
 * The job's output files as CRIU external files. A restored job holds its stdout/stderr through
 * fds the restoring criu inherited, opened in the node's mount namespace, not the job's: a later
 * dump cannot resolve their mount ("Can't lookup mount"). So every dump names them external,
 * `file[<mnt_id hex>:<inode hex>]`, and every restore hands in new files under those keys.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { orEmpty, processTree } from './precheck.js'

export interface ExternalFile {
  /** CRIU's key: file[mnt_id:inode] in hex. */
  readonly key: string
  /** Which of the given files it is (e.g. 'stdout'). */
  readonly name: string
}

// procfs and the job's own files are read synchronously, as in ./precheck.ts (this runs inside the dump).

function mntId (pid: number, fd: string): number | undefined {
  const info = orEmpty(() => readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'), '')
  const m = /^mnt_id:\s*(\d+)/m.exec(info)
  return m === null ? undefined : Number(m[1])
}

/** Every (mount, inode) under which the tree of `root` holds one of `files` (name -> path) open. */
export async function findExternalFiles (root: number, files: Readonly<Record<string, string>>): Promise<ExternalFile[]> {
  const wanted = new Map<string, string>()
  for (const [name, path] of Object.entries(files)) {
    const s = statSync(path, { bigint: true })
    wanted.set(`${s.dev}:${s.ino}`, name)
  }
  const found = new Map<string, string>()
  for (const pid of await processTree(root)) {
    for (const fd of orEmpty(() => readdirSync(`/proc/${pid}/fd`), [] as string[])) {
      const s = orEmpty(() => statSync(`/proc/${pid}/fd/${fd}`, { bigint: true }), undefined)
      const name = s === undefined ? undefined : wanted.get(`${s.dev}:${s.ino}`)
      const mnt = name === undefined ? undefined : mntId(pid, fd)
      if (s === undefined || name === undefined || mnt === undefined) continue
      found.set(`file[${mnt.toString(16)}:${s.ino.toString(16)}]`, name)
      for (const alt of overlayAliases(pid, mnt, s, files[name] as string)) found.set(`file[${alt.toString(16)}:${s.ino.toString(16)}]`, name)
    }
  }
  return [...found].map(([key, name]) => ({ key, name }))
}

interface Mount { readonly id: number, readonly dev: string, readonly mountPoint: string, readonly fsType: string }

/** /proc/<pid>/mountinfo: id, major:minor, mount point (octal escapes undone), fs type. */
function mounts (pid: number | 'self'): Mount[] {
  const text = orEmpty(() => readFileSync(`/proc/${pid}/mountinfo`, 'utf8'), '')
  const unescape = (v: string): string => v.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
  return text.split('\n').filter(l => l !== '').map(l => {
    const f = l.split(' ')
    const sep = f.indexOf('-')
    return { id: Number(f[0]), dev: f[2] ?? '', mountPoint: unescape(f[4] ?? ''), fsType: f[sep + 1] ?? '' }
  })
}

/**
 * CRIU names a file on overlayfs by another mount than the fd's when the fd's mount is not in the
 * dumped tree's mount namespace (a restored job's output files, opened in the node's namespace):
 * it takes the last overlay mount of the job's namespace under which the same path is the same
 * file (criu/mount.c lookup_overlayfs). Returns those mount ids, so the key CRIU looks up is among
 * ours. Happens when the node's root is an overlay, e.g. in a container.
 */
function overlayAliases (pid: number, mnt: number, s: { dev: bigint, ino: bigint }, path: string): number[] {
  const own = mounts('self').find(m => m.id === mnt)
  if (own?.fsType !== 'overlay') return []
  const jobMounts = mounts(pid)
  if (jobMounts.some(m => m.id === mnt)) return []
  const dev = Number(s.dev)
  const majMin = `${(dev >> 8) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`
  const rel = relative(own.mountPoint, path)
  let last: number | undefined
  for (const m of jobMounts) {
    if (m.fsType !== 'overlay' || m.dev !== majMin) continue
    const t = orEmpty(() => statSync(join(`/proc/${pid}/root`, m.mountPoint, rel), { bigint: true }), undefined)
    if (t !== undefined && t.dev === s.dev && t.ino === s.ino) last = m.id
  }
  return last === undefined ? [] : [last]
}
