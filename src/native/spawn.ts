/**
 * posix_spawn(3) for starting a detached helper (the job shim) without forking the daemon. Node's
 * child_process.spawn forks the whole daemon first (libuv 1.46 uses fork on Linux), copying the page
 * tables of its ~100 MB heap: ~2-12 ms per job start, growing with the daemon's RSS and the machine's
 * load, and the event loop waits for it. glibc's posix_spawn uses clone(CLONE_VM | CLONE_VFORK):
 * ~0.3 ms whatever the RSS. The caller reaps the child (`reapLater`): libuv reaps only its own.
 */
import koffi from 'koffi'
import { NativeError } from './errors.js'

/** <spawn.h> flags (glibc, every Linux architecture). */
const POSIX_SPAWN_SETSIGDEF = 0x04
const POSIX_SPAWN_SETSIGMASK = 0x08
const POSIX_SPAWN_SETSID = 0x80
const O_RDONLY = 0
const O_WRONLY = 1
const O_CLOEXEC = 0o2000000
const WNOHANG = 1
/** Larger than glibc's posix_spawn_file_actions_t (80 bytes), posix_spawnattr_t (336) and sigset_t (128). */
const OPAQUE_BYTES = 512

type Fn<A extends unknown[]> = (...args: A) => number
interface Libc {
  spawn: Fn<[number[], string, Buffer, Buffer, Array<string | null>, Array<string | null>]>
  faInit: Fn<[Buffer]>
  faDestroy: Fn<[Buffer]>
  faOpen: Fn<[Buffer, number, string, number, number]>
  faDup2: Fn<[Buffer, number, number]>
  attrInit: Fn<[Buffer]>
  attrDestroy: Fn<[Buffer]>
  attrFlags: Fn<[Buffer, number]>
  attrSigDefault: Fn<[Buffer, Buffer]>
  attrSigMask: Fn<[Buffer, Buffer]>
  sigFill: Fn<[Buffer]>
  sigEmpty: Fn<[Buffer]>
  pipe2: Fn<[number[], number]>
  waitpid: Fn<[number, number[], number]>
}

let bound: Libc | undefined

function bind (): Libc {
  if (bound !== undefined) return bound
  const libc = koffi.load('libc.so.6')
  const f = <A extends unknown[]>(decl: string): Fn<A> => libc.func(decl) as Fn<A>
  bound = {
    spawn: f('int posix_spawn(_Out_ int *pid, const char *path, void *actions, void *attr, const char **argv, const char **envp)'),
    faInit: f('int posix_spawn_file_actions_init(void *actions)'),
    faDestroy: f('int posix_spawn_file_actions_destroy(void *actions)'),
    faOpen: f('int posix_spawn_file_actions_addopen(void *actions, int fd, const char *path, int oflag, unsigned int mode)'),
    faDup2: f('int posix_spawn_file_actions_adddup2(void *actions, int fd, int newfd)'),
    attrInit: f('int posix_spawnattr_init(void *attr)'),
    attrDestroy: f('int posix_spawnattr_destroy(void *attr)'),
    attrFlags: f('int posix_spawnattr_setflags(void *attr, short flags)'),
    attrSigDefault: f('int posix_spawnattr_setsigdefault(void *attr, const void *set)'),
    attrSigMask: f('int posix_spawnattr_setsigmask(void *attr, const void *set)'),
    sigFill: f('int sigfillset(void *set)'),
    sigEmpty: f('int sigemptyset(void *set)'),
    pipe2: f('int pipe2(_Out_ int *fds, int flags)'),
    waitpid: f('int waitpid(int pid, _Out_ int *status, int options)')
  }
  return bound
}

/** Whether posix_spawn can be used here (glibc found through koffi). */
export function posixSpawnAvailable (): boolean {
  try {
    bind()
    return true
  } catch {
    return false
  }
}

/** A pipe, both ends close-on-exec: [read end, write end]. @throws NativeError */
export function pipeCloexec (): [number, number] {
  const fds = [0, 0]
  if (bind().pipe2(fds, O_CLOEXEC) < 0) throw new NativeError('pipe2', koffi.errno())
  return [fds[0] as number, fds[1] as number]
}

export interface DetachedSpawnOptions {
  /** Becomes the child's fd 1; fd 2 is /dev/null. The child inherits no other fd (the daemon's are close-on-exec). */
  readonly stdoutFd: number
  /** Becomes the child's fd 0 (default /dev/null). */
  readonly stdinFd?: number
  readonly env?: NodeJS.ProcessEnv
}

/** A file action of a spawn: open a file as fd, or dup2 one of ours onto it. */
type FileAction = { open: string, fd: number, flags: number } | { dup: number, fd: number }

/**
 * posix_spawn with every signal at its default disposition and none blocked (like libuv's
 * children), `extraFlags` (e.g. a new session), the file actions in order, and `env`.
 * Returns the pid once the child has exec'd. @throws NativeError (errno of the failed exec)
 */
function posixSpawn (path: string, argv: readonly string[], env: NodeJS.ProcessEnv, extraFlags: number, files: readonly FileAction[]): number {
  const c = bind()
  const actions = Buffer.alloc(OPAQUE_BYTES)
  const attr = Buffer.alloc(OPAQUE_BYTES)
  const all = Buffer.alloc(OPAQUE_BYTES)
  const none = Buffer.alloc(OPAQUE_BYTES)
  c.faInit(actions)
  c.attrInit(attr)
  try {
    c.sigFill(all)
    c.sigEmpty(none)
    c.attrSigDefault(attr, all)
    c.attrSigMask(attr, none)
    c.attrFlags(attr, extraFlags | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
    for (const f of files) {
      if ('open' in f) c.faOpen(actions, f.fd, f.open, f.flags, 0)
      else c.faDup2(actions, f.dup, f.fd)
    }
    const vars = Object.entries(env).flatMap(([k, v]) => v === undefined ? [] : [`${k}=${v}`])
    const pid = [0]
    const err = c.spawn(pid, path, actions, attr, [...argv, null], [...vars, null])
    if (err !== 0) throw new NativeError('posix_spawn', err, path)
    return pid[0] as number
  } finally {
    c.faDestroy(actions)
    c.attrDestroy(attr)
  }
}

/**
 * Starts `path` with `argv` in a new session (like spawn's `detached`), every signal at its default
 * disposition and none blocked (like libuv's children). Returns its pid once it has exec'd.
 * @throws NativeError (errno of the failed exec, e.g. ENOENT, EACCES)
 */
export function spawnDetached (path: string, argv: readonly string[], opts: DetachedSpawnOptions): number {
  return posixSpawn(path, argv, opts.env ?? process.env, POSIX_SPAWN_SETSID, [
    opts.stdinFd === undefined ? { open: '/dev/null', fd: 0, flags: O_RDONLY } : { dup: opts.stdinFd, fd: 0 },
    { dup: opts.stdoutFd, fd: 1 },
    { open: '/dev/null', fd: 2, flags: O_WRONLY }
  ])
}

export interface ChildSpawnOptions {
  /** Become the child's fds 3, 4, ... in order (each must be >= 3 + fds.length: see below). */
  readonly fds: readonly number[]
  /** Becomes the child's fds 1 and 2; fd 0 is /dev/null. */
  readonly outputFd: number
}

/**
 * Starts `path` as a child in the daemon's own session (as child_process.spawn without `detached`),
 * signals reset as in spawnDetached, with `fds` as its fds 3, 4, ... Returns its pid once it has
 * exec'd; the caller waits for it (`waitChild`). Returns undefined where posix_spawn cannot do it
 * (no glibc through koffi, or a source fd among the target numbers, which an earlier dup2 of the
 * same spawn would overwrite): use child_process there.
 * @throws NativeError (errno of the failed exec)
 */
export function spawnChild (path: string, argv: readonly string[], opts: ChildSpawnOptions): number | undefined {
  const last = 3 + opts.fds.length
  if (!posixSpawnAvailable() || [opts.outputFd, ...opts.fds].some(fd => fd < last)) return undefined
  return posixSpawn(path, argv, process.env, 0, [
    { open: '/dev/null', fd: 0, flags: O_RDONLY },
    { dup: opts.outputFd, fd: 1 },
    { dup: opts.outputFd, fd: 2 },
    ...opts.fds.map((fd, i) => ({ dup: fd, fd: 3 + i }))
  ])
}

/** How a child from spawnChild ended: its exit code, or the signal that killed it. */
export interface ChildExit {
  readonly code: number | null
  readonly signal: number | null
}

/**
 * Resolves once the child `pid` (from spawnChild) has exited, and reaps it. Polls, first every 2
 * ms, backing off to every `maxPollMs`: a CRIU serving a post-copy's pages runs for seconds.
 */
export async function waitChild (pid: number, maxPollMs = 50): Promise<ChildExit> {
  for (let pollMs = 2; ; pollMs = Math.min(pollMs * 2, maxPollMs)) {
    const status = [0]
    const r = bind().waitpid(pid, status, WNOHANG)
    if (r === pid) {
      const s = status[0] as number
      // <sys/wait.h>: WIFEXITED is (s & 0x7f) == 0, WEXITSTATUS (s >> 8) & 0xff, WTERMSIG s & 0x7f.
      return (s & 0x7f) === 0 ? { code: (s >> 8) & 0xff, signal: null } : { code: null, signal: s & 0x7f }
    }
    if (r < 0) return { code: null, signal: null } // not ours (ECHILD): someone else reaped it
    await new Promise(resolve => setTimeout(resolve, pollMs))
  }
}

/** Reaps `pid` (a child from spawnDetached) once it has exited, in the background. */
export function reapLater (pid: number): void {
  void waitChild(pid)
}
