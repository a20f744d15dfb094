/**
 * spawnDetached (posix_spawn): the child's fd 1 is the given pipe, it leads its own session, and it
 * is reaped. spawnChild: the given fds become its 3, 4, ..., its output goes to one fd, and
 * waitChild tells its exit code or signal.
 */
import { closeSync, readFileSync } from 'node:fs'
import { Socket } from 'node:net'
import { expect, it } from 'vitest'
import { pipeCloexec, posixSpawnAvailable, reapLater, spawnChild, spawnDetached, waitChild } from '../../src/native/spawn.js'
import { NativeError } from '../../src/native/errors.js'

async function readAll (fd: number): Promise<string> {
  const s = new Socket({ fd, readable: true, writable: false })
  const chunks: Buffer[] = []
  for await (const c of s) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/** The process's state letter, or undefined once it is gone (reaped). */
function procState (pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
  } catch { return undefined }
}

it.runIf(posixSpawnAvailable())('writes to the given fd, in a session of its own, with only the given environment, and is reaped', async () => {
  const [r, w] = pipeCloexec()
  // Session id (field 6 of /proc/self/stat) equals the pid of a session leader.
  const script = 'set -- $(cut -d" " -f6 /proc/$$/stat); echo "$$ $1 $SSI_TEST_VAR"; exec 1>&-; sleep 0.05'
  const pid = spawnDetached('/bin/sh', ['sh', '-c', script], { stdoutFd: w, env: { SSI_TEST_VAR: 'x y', PATH: '/usr/bin:/bin' } })
  closeSync(w)
  const [shPid, sid, ...value] = (await readAll(r)).trim().split(' ')
  expect(Number(shPid)).toBe(pid)
  expect(Number(sid)).toBe(pid)
  expect(value.join(' ')).toBe('x y')
  reapLater(pid)
  for (let i = 0; i < 100 && procState(pid) !== undefined; i++) await new Promise(resolve => setTimeout(resolve, 20))
  expect(procState(pid)).toBeUndefined()
})

it.runIf(posixSpawnAvailable())('throws a NativeError naming errno when the program cannot be run', () => {
  const [r, w] = pipeCloexec()
  try {
    expect(() => spawnDetached('/nonexistent/ssi-shim', ['ssi-shim'], { stdoutFd: w })).toThrow(NativeError)
    expect(() => spawnDetached('/nonexistent/ssi-shim', ['ssi-shim'], { stdoutFd: w })).toThrow(/ENOENT/)
  } finally {
    closeSync(r)
    closeSync(w)
  }
})

it.runIf(posixSpawnAvailable())('spawnChild passes fds as 3, 4, ..., writes fds 1 and 2 to one pipe, stays in our session; waitChild reports the exit', async () => {
  const [r, w] = pipeCloexec()
  const [a, aw] = pipeCloexec()
  const [b, bw] = pipeCloexec()
  const script = 'echo one >&3; echo two >&4; echo out; echo err >&2; set -- $(cut -d" " -f6 /proc/$$/stat); echo "sid $1"; exit 7'
  const pid = spawnChild('/bin/sh', ['sh', '-c', script], { fds: [aw, bw], outputFd: w })
  for (const fd of [w, aw, bw]) closeSync(fd)
  expect(pid).toBeGreaterThan(0)
  const [output, one, two] = await Promise.all([readAll(r), readAll(a), readAll(b)])
  expect(one).toBe('one\n')
  expect(two).toBe('two\n')
  const lines = output.trim().split('\n')
  expect(lines.slice(0, 2)).toEqual(['out', 'err'])
  expect(lines[2]).not.toBe(`sid ${pid ?? 0}`) // not a session leader: ours
  expect(await waitChild(pid ?? -1)).toEqual({ code: 7, signal: null })
  expect(procState(pid ?? -1)).toBeUndefined()
})

it.runIf(posixSpawnAvailable())('waitChild reports a signal; spawnChild declines a source fd among the target numbers', async () => {
  const [r, w] = pipeCloexec()
  const pid = spawnChild('/bin/sh', ['sh', '-c', 'kill -9 $$'], { fds: [], outputFd: w })
  closeSync(w)
  closeSync(r)
  expect(await waitChild(pid ?? -1)).toEqual({ code: null, signal: 9 })
  expect(spawnChild('/bin/true', ['true'], { fds: [3], outputFd: 100 })).toBeUndefined()
})
