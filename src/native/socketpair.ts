/**
 * socketpair(2): Node has no API for it, and CRIU's service mode (`criu swrk <fd>`) needs a
 * SOCK_SEQPACKET pair whose message boundaries carry one protobuf message each.
 */
import koffi from 'koffi'
import { NativeError } from './errors.js'

export const AF_UNIX = 1
export const SOCK_STREAM = 1
export const SOCK_SEQPACKET = 5
/** Close-on-exec: without it every child we spawn would inherit (and keep open) our end. */
export const SOCK_CLOEXEC = 0o2000000

/** Socket types this wrapper creates. */
export type SocketPairType = 'seqpacket' | 'stream'

type SocketPairFn = (domain: number, type: number, protocol: number, sv: Int32Array) => number

let socketpairFn: SocketPairFn | undefined

// Bound on first use so importing this module costs nothing until it is needed.
function bind (): SocketPairFn {
  if (socketpairFn === undefined) {
    const libc = koffi.load('libc.so.6')
    socketpairFn = libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)') as SocketPairFn
  }
  return socketpairFn
}

/**
 * A connected pair of AF_UNIX sockets, both close-on-exec. The caller owns both descriptors and
 * must close them (fs.closeSync) or hand them to something that will.
 * Non-blocking: returns at once. @throws NativeError (EMFILE, ENFILE, ...)
 */
export function socketPair (type: SocketPairType = 'seqpacket'): [number, number] {
  const sv = new Int32Array(2)
  const sockType = (type === 'seqpacket' ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC
  if (bind()(AF_UNIX, sockType, 0, sv) !== 0) {
    throw new NativeError('socketpair', koffi.errno(), type)
  }
  return [sv[0] as number, sv[1] as number]
}
