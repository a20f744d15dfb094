/**
 * What CRIU's image streamer protocol (`criu restore --stream`, ../migration/image-streamer.ts)
 * needs and Node lacks: a Unix socket whose peer passes descriptors (SCM_RIGHTS; libuv's reads drop
 * them), splice(2) from a file into a pipe (no copy through user space) and the pipe's size.
 *
 * The sockets here are non-blocking; `waitReadable` blocks (poll(2)) on the thread pool, never on
 * the event loop, for at most `POLL_SLICE_MS` at a time, so an abort is seen that soon. Splices
 * that must wait for a pipe's reader run on a worker (../migration/splice-worker.ts).
 */
import koffi from 'koffi'
import { closeSync } from 'node:fs'
import { NativeError } from './errors.js'
import { AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM } from './socketpair.js'

const SOCK_NONBLOCK = 0o4000
const SOL_SOCKET = 1
const SCM_RIGHTS = 1
const MSG_DONTWAIT = 0x40
const MSG_CMSG_CLOEXEC = 0x40000000
const F_SETPIPE_SZ = 1031
const F_GETPIPE_SZ = 1032
const SPLICE_F_NONBLOCK = 2
const SPLICE_F_MOVE = 1
const POLLIN = 0x1
const EAGAIN = 11
const EINTR = 4
/** sun_path's size in struct sockaddr_un. */
const SUN_PATH_BYTES = 108
const POLL_SLICE_MS = 100

interface Iovec { base: Buffer, len: number }
interface Msghdr { name: null, namelen: number, iov: Iovec[], iovlen: number, control: Buffer, controllen: number, flags: number }
type Fn<A extends unknown[]> = (...args: A) => number
interface AsyncFn<A extends unknown[]> { async: (...args: [...A, (err: unknown, res: number) => void]) => void }

interface Libc {
  socket: Fn<[number, number, number]>
  bind: Fn<[number, Buffer, number]>
  listen: Fn<[number, number]>
  accept4: Fn<[number, null, null, number]>
  recv: Fn<[number, Buffer, number, number]>
  send: Fn<[number, Buffer, number, number]>
  recvmsg: Fn<[number, Msghdr, number]>
  fcntl: Fn<[number, number, number]>
  splice: Fn<[number, null, number, null, number, number]>
  poll: AsyncFn<[Buffer, number, number]>
  mkfifo: Fn<[string, number]>
}

let bound: Libc | undefined

function bind (): Libc {
  if (bound !== undefined) return bound
  const libc = koffi.load('libc.so.6')
  koffi.struct('ssi_iovec', { base: 'void *', len: 'size_t' })
  koffi.struct('ssi_msghdr', { name: 'void *', namelen: 'uint32', iov: 'ssi_iovec *', iovlen: 'size_t', control: 'void *', controllen: 'size_t', flags: 'int' })
  bound = {
    socket: libc.func('int socket(int, int, int)') as Libc['socket'],
    bind: libc.func('int bind(int, const void *, uint32_t)') as Libc['bind'],
    listen: libc.func('int listen(int, int)') as Libc['listen'],
    accept4: libc.func('int accept4(int, void *, void *, int)') as Libc['accept4'],
    recv: libc.func('long recv(int, _Out_ void *, size_t, int)') as Libc['recv'],
    send: libc.func('long send(int, const void *, size_t, int)') as Libc['send'],
    recvmsg: libc.func('long recvmsg(int, _Inout_ ssi_msghdr *, int)') as Libc['recvmsg'],
    fcntl: libc.func('int fcntl(int, int, int)') as Libc['fcntl'],
    splice: libc.func('long splice(int, void *, int, void *, size_t, unsigned int)') as Libc['splice'],
    poll: libc.func('int poll(_Inout_ void *, unsigned long, int)') as unknown as Libc['poll'],
    mkfifo: libc.func('int mkfifo(const char *, uint32_t)') as Libc['mkfifo']
  }
  return bound
}

/** A listening Unix stream socket at `path` (non-blocking, close-on-exec). @throws NativeError */
export function listenUnix (path: string): number {
  const bytes = Buffer.from(path)
  if (bytes.length >= SUN_PATH_BYTES) throw new NativeError('bind', 36 /* ENAMETOOLONG */, path)
  const libc = bind()
  const fd = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
  if (fd < 0) throw new NativeError('socket', koffi.errno())
  const addr = Buffer.alloc(2 + SUN_PATH_BYTES)
  addr.writeUInt16LE(AF_UNIX, 0)
  bytes.copy(addr, 2)
  if (libc.bind(fd, addr, 2 + bytes.length + 1) !== 0 || libc.listen(fd, 1) !== 0) {
    const errno = koffi.errno()
    closeFd(fd)
    throw new NativeError('bind', errno, path)
  }
  return fd
}

/** A connection waiting on `listening`, non-blocking; undefined if none yet. @throws NativeError */
export function acceptNow (listening: number): number | undefined {
  const fd = bind().accept4(listening, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC)
  if (fd >= 0) return fd
  const errno = koffi.errno()
  if (errno === EAGAIN || errno === EINTR) return undefined
  throw new NativeError('accept4', errno)
}

/** Bytes read into buf (0: the peer closed), or undefined if none are waiting. @throws NativeError */
export function recvNow (fd: number, buf: Buffer): number | undefined {
  const n = bind().recv(fd, buf, buf.length, MSG_DONTWAIT)
  if (n >= 0) return n
  const errno = koffi.errno()
  if (errno === EAGAIN || errno === EINTR) return undefined
  throw new NativeError('recv', errno)
}

/** Sends all of `bytes` (small messages: a Unix socket's buffer takes them at once). @throws NativeError */
export function sendAll (fd: number, bytes: Buffer): void {
  const n = bind().send(fd, bytes, bytes.length, MSG_DONTWAIT)
  if (n !== bytes.length) throw new NativeError('send', n < 0 ? koffi.errno() : EAGAIN, `${n} of ${bytes.length} bytes`)
}

/**
 * The descriptor passed with the next message (one byte of data plus SCM_RIGHTS), close-on-exec;
 * undefined if no message is waiting. @throws NativeError (EPROTO: a message without a descriptor)
 */
export function recvFdNow (fd: number): number | undefined {
  const data = Buffer.alloc(1)
  const control = Buffer.alloc(64)
  const msg: Msghdr = { name: null, namelen: 0, iov: [{ base: data, len: 1 }], iovlen: 1, control, controllen: control.length, flags: 0 }
  const n = bind().recvmsg(fd, msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)
  if (n < 0) {
    const errno = koffi.errno()
    if (errno === EAGAIN || errno === EINTR) return undefined
    throw new NativeError('recvmsg', errno)
  }
  // struct cmsghdr: cmsg_len (size_t), cmsg_level (int), cmsg_type (int), then the fds.
  const passed = msg.controllen >= 20 && control.readInt32LE(8) === SOL_SOCKET && control.readInt32LE(12) === SCM_RIGHTS
  if (!passed) throw new NativeError('recvmsg', 71 /* EPROTO */, n === 0 ? 'the peer closed' : 'no descriptor came with the message')
  return control.readInt32LE(16)
}

/**
 * Moves up to `len` bytes from `fileFd` (at its position) into `pipeFd` without copying through
 * user space and without waiting: the bytes moved (0: end of file), or undefined if the pipe is full.
 * @throws NativeError (EPIPE: the pipe's reader closed it)
 */
export function spliceNow (fileFd: number, pipeFd: number, len: number): number | undefined {
  const n = bind().splice(fileFd, null, pipeFd, null, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
  if (n >= 0) return n
  const errno = koffi.errno()
  if (errno === EAGAIN || errno === EINTR) return undefined
  throw new NativeError('splice', errno)
}

/** A pipe's capacity in bytes. */
export function pipeSize (fd: number): number {
  return Math.max(0, bind().fcntl(fd, F_GETPIPE_SZ, 0))
}

/** Grows a pipe's buffer to `bytes` (capped by /proc/sys/fs/pipe-max-size); false if refused. */
export function setPipeSize (fd: number, bytes: number): boolean {
  return bind().fcntl(fd, F_SETPIPE_SZ, bytes) >= 0
}

/**
 * Resolves once `fd` can be read, or its peer hung up; rejects on abort, also when the poll ended
 * because of it. Callers use fd synchronously right after, so a descriptor closed by whoever
 * aborted is never used.
 */
export async function waitReadable (fd: number, signal: AbortSignal): Promise<void> {
  const pollfd = Buffer.alloc(8)
  pollfd.writeInt32LE(fd, 0)
  pollfd.writeInt16LE(POLLIN, 4)
  for (;;) {
    signal.throwIfAborted()
    const ready = await new Promise<number>((resolve, reject) => {
      bind().poll.async(pollfd, 1, POLL_SLICE_MS, (err, res) => { if (err !== null && err !== undefined) reject(err as Error); else resolve(res) })
    })
    // Checked again: whoever aborted may have closed fd, and its number may be reused at once.
    signal.throwIfAborted()
    if (ready > 0) return
    // poll(2) fails only on bad arguments or EINTR (then try again); errno stayed on the pool thread.
    if (ready < 0) await new Promise(resolve => setTimeout(resolve, 1))
  }
}

/** mkfifo(3): Node has no API for it. @throws NativeError (EEXIST, ENOENT, ...) */
export function makeFifo (path: string, mode: number): void {
  if (bind().mkfifo(path, mode) !== 0) throw new NativeError('mkfifo', koffi.errno(), path)
}

export function closeFd (fd: number): void {
  try { closeSync(fd) } catch { /* already closed */ }
}
