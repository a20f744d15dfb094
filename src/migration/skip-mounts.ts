/**
 * Which mounts of a job's mount namespace a dump can leave out (CRIU's skip_mnt). The namespace is
 * an rslave copy of the node's, and every mount is external (`mnt[]`): a mount in the images must
 * exist again at restore. Host mounts the job never uses (Docker's overlays and netns binds, a tmpfs
 * another program mounted under /tmp) come and go; left out, they cannot break a migration.
 *
 * Kept: the root mount, the standard system mounts (/proc, /sys, /dev and friends, cgroups), every
 * mount a process of the job uses (cwd, root, exe, an open fd, a mapped file) and every ancestor of
 * a kept mount. Everything else is left out, which is always whole subtrees.
 */

export interface MountEntry {
  readonly id: number
  readonly parent: number
  /** major:minor as mountinfo writes it. */
  readonly dev: string
  /** Octal escapes undone. */
  readonly mountPoint: string
  readonly fsType: string
}

const unescape = (v: string): string => v.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))

/** Parses /proc/<pid>/mountinfo text. */
export function parseMountinfo (text: string): MountEntry[] {
  return text.split('\n').filter(l => l.trim() !== '').map(l => {
    const f = l.split(' ')
    const sep = f.indexOf('-')
    return { id: Number(f[0]), parent: Number(f[1]), dev: f[2] ?? '', mountPoint: unescape(f[4] ?? ''), fsType: f[sep + 1] ?? '' }
  })
}

const SYSTEM_POINTS = new Set(['/', '/proc', '/sys', '/dev', '/dev/pts', '/dev/shm', '/dev/mqueue', '/sys/fs/cgroup'])
const SYSTEM_TYPES = new Set(['cgroup', 'cgroup2'])

/** Mount points to pass as skip_mnt: the mounts neither used nor needed, as whole subtrees. */
export function mountsToSkip (mountinfo: string, used: ReadonlySet<number>): string[] {
  const mounts = parseMountinfo(mountinfo)
  const byId = new Map(mounts.map(m => [m.id, m]))
  const kept = new Set<number>()
  const keep = (id: number): void => {
    // Up the parent chain; the root's parent is outside the namespace (not in byId).
    for (let m = byId.get(id); m !== undefined && !kept.has(m.id); m = byId.get(m.parent)) kept.add(m.id)
  }
  for (const m of mounts) {
    if (used.has(m.id) || SYSTEM_POINTS.has(m.mountPoint) || SYSTEM_TYPES.has(m.fsType) || !byId.has(m.parent)) keep(m.id)
  }
  // CRIU skips by mount point: a point is left out only if no mount stacked on it is kept.
  const keptPoints = new Set(mounts.filter(m => kept.has(m.id)).map(m => m.mountPoint))
  const skip = new Set(mounts.filter(m => !kept.has(m.id) && !keptPoints.has(m.mountPoint)).map(m => m.mountPoint))
  return [...skip]
}

/** A path a process uses (cwd, root, exe, a mapped file), with its device when known. */
export interface UsedPath {
  readonly path: string
  /** major:minor, when known. */
  readonly dev?: string
}

const under = (path: string, point: string): boolean =>
  point === '/' || path === point || path.startsWith(point.endsWith('/') ? point : `${point}/`)

/**
 * The mounts behind used paths, conservatively: the mount whose point is the longest prefix of
 * the path, plus every mount of the same device (a path resolved through a bind or an overlay
 * may name another mount of it).
 */
export function mountsOfPaths (mounts: readonly MountEntry[], paths: readonly UsedPath[]): Set<number> {
  const ids = new Set<number>()
  for (const p of paths) {
    let best: MountEntry | undefined
    for (const m of mounts) {
      if (under(p.path, m.mountPoint) && (best === undefined || m.mountPoint.length >= best.mountPoint.length)) best = m
    }
    if (best !== undefined) ids.add(best.id)
    if (p.dev !== undefined) for (const m of mounts) if (m.dev === p.dev) ids.add(m.id)
  }
  return ids
}

/** /proc/<pid>/maps lines -> the mapped files (path, device as major:minor in decimal). */
export function mappedFiles (maps: string): UsedPath[] {
  const out: UsedPath[] = []
  for (const line of maps.split('\n')) {
    const m = /^\S+\s+\S+\s+\S+\s+([0-9a-f]+):([0-9a-f]+)\s+\d+\s+(\/.*)$/.exec(line)
    if (m === null) continue
    const path = (m[3] as string).replace(/ \(deleted\)$/, '')
    out.push({ path, dev: `${parseInt(m[1] as string, 16)}:${parseInt(m[2] as string, 16)}` })
  }
  return out
}
