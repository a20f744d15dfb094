/**
 * pidfd_open / pidfd_send_signal (glibc >= 2.36, Linux >= 5.3): signal a process through a
 * descriptor, so that a pid recycled after the check cannot receive the signal by mistake.
 */
import koffi from 'koffi'
import { closeSync } from 'node:fs'
import { NativeError } from './errors.js'

type PidfdOpen = (pid: number, flags: number) => number
type PidfdSendSignal = (pidfd: number, sig: number, info: null, flags: number) => number

let bound: { open: PidfdOpen, send: PidfdSendSignal } | undefined

function bind (): { open: PidfdOpen, send: PidfdSendSignal } {
  if (bound !== undefined) return bound
  const libc = koffi.load('libc.so.6')
  bound = {
    open: libc.func('int pidfd_open(int pid, unsigned int flags)') as PidfdOpen,
    send: libc.func('int pidfd_send_signal(int pidfd, int sig, void *info, unsigned int flags)') as PidfdSendSignal
  }
  return bound
}

/** A pidfd for `pid` (close it with `closePidfd`). @throws NativeError (ESRCH if no such process) */
export function pidfdOpen (pid: number): number {
  const fd = bind().open(pid, 0)
  if (fd < 0) throw new NativeError('pidfd_open', koffi.errno(), `pid ${pid}`)
  return fd
}

/** Sends `sig` (0 only checks) to the process of `pidfd`. @throws NativeError (ESRCH once it has exited) */
export function pidfdSendSignal (pidfd: number, sig: number): void {
  if (bind().send(pidfd, sig, null, 0) < 0) throw new NativeError('pidfd_send_signal', koffi.errno(), `signal ${sig}`)
}

export function closePidfd (pidfd: number): void {
  closeSync(pidfd)
}
