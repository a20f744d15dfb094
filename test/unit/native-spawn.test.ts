/** spawnDetached (posix_spawn): the child's fd 1 is the given pipe, it leads its own session, and it is reaped. */
import { closeSync, readFileSync } from 'node:fs'
import { Socket } from 'node:net'
import { expect, it } from 'vitest'
import { pipeCloexec, posixSpawnAvailable, reapLater, spawnDetached } from '../../src/native/spawn.js'
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
