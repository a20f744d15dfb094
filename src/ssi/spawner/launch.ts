/** Starting the shim and reading its one-line handshake; finding tini and the shim binary. */
import { spawn } from 'node:child_process'
import type { ChildProcessByStdio } from 'node:child_process'
import { accessSync, closeSync, constants } from 'node:fs'
import { Socket } from 'node:net'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pipeCloexec, posixSpawnAvailable, reapLater, spawnDetached } from '../../native/spawn.js'
import { JobStartError, RuntimeBinaryError } from './errors.js'
import type { Readable } from 'node:stream'
import type { PidRecord } from './state.js'

/** dist/ssi-shim of this checkout: src/ssi/spawner and dist/ssi/spawner are both 3 levels down. */
export const DEFAULT_SHIM_PATH = fileURLToPath(new URL('../../../dist/ssi-shim', import.meta.url))

function executable (path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** tini: the given path, else /usr/bin/tini, /opt/ssi/bin/tini, then $PATH. */
export function findTini (explicit?: string): string {
  if (explicit !== undefined) {
    if (!executable(explicit)) throw new RuntimeBinaryError(`tini not found or not executable at ${explicit}`)
    return explicit
  }
  const dirs = ['/usr/bin', '/opt/ssi/bin', ...(process.env.PATH ?? '').split(delimiter).filter((d) => d.startsWith('/'))]
  for (const dir of dirs) if (executable(join(dir, 'tini'))) return join(dir, 'tini')
  throw new RuntimeBinaryError('tini not found in /usr/bin, /opt/ssi/bin or PATH: install it (apt-get install tini, or scripts/provision.sh)')
}

export function checkShim (path: string): string {
  if (!executable(path)) throw new RuntimeBinaryError(`ssi-shim not found at ${path}: build it with scripts/build-shim.sh (npm run build)`)
  return path
}

function parseHandshake (line: string): PidRecord {
  const [word, ...rest] = line.trim().split(' ')
  if (word === 'ok' && rest.length === 4) {
    const [pid, start, shim, shimStart] = rest.map(Number) as [number, number, number, number]
    if ([pid, start, shim, shimStart].every(Number.isSafeInteger)) return { pid, start, shim, shimStart }
  }
  if (word === 'error') throw new JobStartError(`job did not start: ${rest.join(' ')}`)
  throw new JobStartError(`job did not start: unexpected answer from ssi-shim: ${JSON.stringify(line.slice(0, 200))}`)
}

/**
 * Runs `ssi-shim <mode> <jobDir>` in its own session with no stdio but the handshake pipe (and
 * `stdinFd`, if given, as its fd 0), and resolves with the started job's pids once the shim
 * reported. The shim forks away at once, so the daemon never is the job's (or the shim's) parent.
 */
export function runShim (shimPath: string, mode: 'run' | 'restore', jobDir: string, timeoutMs: number, signal?: AbortSignal, stdinFd?: number): Promise<PidRecord> {
  signal?.throwIfAborted()
  return new Promise<PidRecord>((resolve, reject) => {
    const chunks: Buffer[] = []
    let out: Readable | undefined
    const finish = (err: unknown, rec?: PidRecord): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      out?.destroy()
      if (rec !== undefined) resolve(rec)
      else reject(err)
    }
    const onAbort = (): void => { finish(signal?.reason) }
    const timer = setTimeout(() => { finish(new JobStartError(`ssi-shim gave no answer within ${timeoutMs} ms`)) }, timeoutMs)
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      out = startShim(shimPath, [mode, jobDir], stdinFd)
    } catch (err) {
      finish(new RuntimeBinaryError(`cannot run ${shimPath}: ${(err as Error).message}`, { cause: err }))
      return
    }
    out.on('error', (err) => { finish(new RuntimeBinaryError(`cannot run ${shimPath}: ${err.message}`, { cause: err })) })
    out.on('data', (c: Buffer) => { chunks.push(c) })
    out.on('end', () => {
      try {
        finish(undefined, parseHandshake(Buffer.concat(chunks).toString('utf8')))
      } catch (err) {
        finish(err)
      }
    })
  })
}

/**
 * Starts the shim detached and returns its stdout (the handshake). Through posix_spawn where glibc
 * is found (src/native/spawn.ts: child_process.spawn would fork the whole daemon first, ~2-12 ms of
 * a job start); else through child_process.
 */
function startShim (shimPath: string, args: readonly string[], stdinFd?: number): Readable {
  if (!posixSpawnAvailable()) {
    const child = spawn(shimPath, args, { detached: true, stdio: [stdinFd ?? 'ignore', 'pipe', 'ignore'] }) as ChildProcessByStdio<null, Readable, null>
    child.on('error', (err) => { child.stdout.destroy(err) }) // e.g. ENOENT: reported by the reader
    child.unref()
    return child.stdout
  }
  const [r, w] = pipeCloexec()
  try {
    reapLater(spawnDetached(shimPath, [shimPath, ...args], { stdoutFd: w, stdinFd }))
  } catch (err) {
    closeSync(r)
    throw err
  } finally {
    closeSync(w)
  }
  return new Socket({ fd: r, readable: true, writable: false })
}
