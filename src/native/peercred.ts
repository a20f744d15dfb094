/**
 * SO_PEERCRED: who is on the other end of a connected Unix socket. The kernel records the peer's pid,
 * uid and gid at connect() time (in this process's namespaces), so the answer cannot be forged by the
 * client. The control API authorises calls by this uid.
 */
import koffi from 'koffi'
import type { Socket } from 'node:net'
import { NativeError } from './errors.js'

/** Credentials of a Unix-socket peer. */
export interface PeerCredentials {
  readonly pid: number
  readonly uid: number
  readonly gid: number
}

const SOL_SOCKET = 1
const SO_PEERCRED = 17

type GetSockOpt = (fd: number, level: number, name: number, out: Record<string, number>, len: number[]) => number

let getsockopt: GetSockOpt | undefined
let ucredSize = 0

// Bound on first use so importing this module costs nothing until a connection arrives.
function bind (): GetSockOpt {
  if (getsockopt !== undefined) return getsockopt
  const libc = koffi.load('libc.so.6')
  const ucred = koffi.struct('ssi_ucred', { pid: 'int32', uid: 'uint32', gid: 'uint32' })
  ucredSize = koffi.sizeof(ucred)
  getsockopt = libc.func('int getsockopt(int, int, int, _Out_ ssi_ucred *, _Inout_ uint32_t *)') as GetSockOpt
  return getsockopt
}

/** Credentials of the peer of the socket open on `fd`. @throws NativeError (EBADF, ENOTSOCK, ...) */
export function peerCredentialsOfFd (fd: number): PeerCredentials {
  const call = bind()
  const out: Record<string, number> = {}
  const len = [ucredSize]
  if (call(fd, SOL_SOCKET, SO_PEERCRED, out, len) !== 0) {
    throw new NativeError('getsockopt', koffi.errno(), 'SO_PEERCRED')
  }
  const { pid, uid, gid } = out
  if (len[0] !== ucredSize || pid === undefined || uid === undefined || gid === undefined) {
    throw new PeerCredentialsError(`getsockopt(SO_PEERCRED) returned ${len[0]} bytes, expected ${ucredSize}`)
  }
  return { pid, uid, gid }
}

/** The descriptor behind a net.Socket (Unix socket or pipe), or undefined if Node does not expose it. */
export function socketFd (socket: Socket): number | undefined {
  // Node keeps the libuv handle on `_handle`; its `fd` getter is the descriptor on Unix (-1 if closed).
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined
}

/**
 * Credentials of the process that connected `socket` (an accepted Unix-socket connection).
 * @throws PeerCredentialsError when the descriptor cannot be found, NativeError when the call fails.
 * Callers must fail closed: a connection whose caller is unknown is rejected.
 */
export function peerCredentials (socket: Socket): PeerCredentials {
  const fd = socketFd(socket)
  if (fd === undefined) throw new PeerCredentialsError('cannot determine the file descriptor of the socket')
  return peerCredentialsOfFd(fd)
}

export class PeerCredentialsError extends Error {
  static override name = 'PeerCredentialsError'
  override name = 'PeerCredentialsError'
}
