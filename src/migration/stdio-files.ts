/**
 * The job's output files as CRIU external files. A restored job holds its stdout/stderr through
 * fds the restoring criu inherited, opened in the node's mount namespace, not the job's: a later
 * dump cannot resolve their mount ("Can't lookup mount"). So every dump names them external,
 * `file[<mnt_id hex>:<inode hex>]`, and every restore hands in new files under those keys.
 */
import { readdir, readFile, stat } from 'node:fs/promises'
import { processTree } from './precheck.js'

export interface ExternalFile {
  /** CRIU's key: file[mnt_id:inode] in hex. */
  readonly key: string
  /** Which of the given files it is (e.g. 'stdout'). */
  readonly name: string
}

async function mntId (pid: number, fd: string): Promise<number | undefined> {
  const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '')
  const m = /^mnt_id:\s*(\d+)/m.exec(info)
  return m === null ? undefined : Number(m[1])
}

/** Every (mount, inode) under which the tree of `root` holds one of `files` (name -> path) open. */
export async function findExternalFiles (root: number, files: Readonly<Record<string, string>>): Promise<ExternalFile[]> {
  const wanted = new Map<string, string>()
  for (const [name, path] of Object.entries(files)) {
    const s = await stat(path, { bigint: true })
    wanted.set(`${s.dev}:${s.ino}`, name)
  }
  const found = new Map<string, string>()
  for (const pid of await processTree(root)) {
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const s = await stat(`/proc/${pid}/fd/${fd}`, { bigint: true }).catch(() => undefined)
      const name = s === undefined ? undefined : wanted.get(`${s.dev}:${s.ino}`)
      const mnt = name === undefined ? undefined : await mntId(pid, fd)
      if (s === undefined || name === undefined || mnt === undefined) continue
      found.set(`file[${mnt.toString(16)}:${s.ino.toString(16)}]`, name)
    }
  }
  return [...found].map(([key, name]) => ({ key, name }))
}
