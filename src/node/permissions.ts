/**
 * Start-up checks of the daemon's secrets and private state: the cluster key and the node identity
 * (whoever reads them can join the cluster or impersonate the node) and the state dir (job records,
 * checkpoint images with the jobs' memory). Too-open modes stop the daemon with a clear error rather
 * than run with secrets that other local users may already have read.
 */
import { chmod, lstat, mkdir } from 'node:fs/promises'

export class InsecurePermissionsError extends Error {
  static override name = 'InsecurePermissionsError'
  override name = 'InsecurePermissionsError'
}

/**
 * Throws InsecurePermissionsError if `path` grants group or others any access, is a symlink, or
 * belongs to another user than the daemon's. A missing path is fine (it will be created private).
 */
export async function checkPrivate (path: string, what: string, kind: 'file' | 'dir'): Promise<void> {
  let st
  try {
    st = await lstat(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  const fix = kind === 'file' ? `chmod 600 ${path}` : `chmod 700 ${path}`
  if (st.isSymbolicLink()) throw new InsecurePermissionsError(`${what} ${path} is a symbolic link: point the config at the real ${kind}`)
  if (kind === 'file' ? !st.isFile() : !st.isDirectory()) throw new InsecurePermissionsError(`${what} ${path} is not a ${kind === 'file' ? 'regular file' : 'directory'}`)
  const uid = process.getuid?.()
  if (uid !== undefined && st.uid !== uid) throw new InsecurePermissionsError(`${what} ${path} belongs to uid ${st.uid}, not to the daemon's uid ${uid}`)
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0')
    throw new InsecurePermissionsError(`${what} ${path} is accessible to other users (mode ${mode}); run \`${fix}\``)
  }
}

/**
 * Creates the state dir 0700, or tightens an existing one to 0700 (it holds job records and
 * checkpoint images: the jobs' memory). Returns the mode it had if it had to change it.
 */
export async function makePrivateDir (path: string): Promise<number | undefined> {
  await mkdir(path, { recursive: true, mode: 0o700 })
  const st = await lstat(path)
  if (!st.isDirectory()) throw new InsecurePermissionsError(`state dir ${path} is not a directory`)
  if ((st.mode & 0o077) === 0) return undefined
  await chmod(path, 0o700)
  return st.mode & 0o777
}

/**
 * Refuses a control-socket dir that other users may write to (without the sticky bit): they could
 * replace the socket with their own and receive what users send to "the daemon".
 */
export async function checkSocketDir (dir: string): Promise<void> {
  let st
  try {
    st = await lstat(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
    throw new InsecurePermissionsError(`control socket dir ${dir} is writable by other users (mode ${(st.mode & 0o7777).toString(8)}): run \`chmod 755 ${dir}\``)
  }
}
