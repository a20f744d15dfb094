/** Helpers shared by the cgroup managers: validation, cgroupfs file access, polling. */
import { readFile, rmdir, writeFile } from 'node:fs/promises'
import { CgroupLimitError, CgroupNotFoundError, CgroupTimeoutError } from './errors.js'
import type { CgroupLimits, CgroupOpOptions } from './types.js'

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

export const DEFAULT_TIMEOUT_MS = 10_000
/** CFS period used for CPU limits: 100 ms, the kernel's default. */
export const CPU_PERIOD_US = 100_000

export function checkName (name: string): void {
  if (!NAME.test(name)) throw new CgroupLimitError(`invalid cgroup name ${JSON.stringify(name)}`)
}

export function checkLimits (limits: CgroupLimits): void {
  const { memoryBytes, cpus, pids } = limits
  if (memoryBytes !== undefined && !(Number.isSafeInteger(memoryBytes) && memoryBytes > 0)) {
    throw new CgroupLimitError(`memoryBytes must be a positive integer, got ${memoryBytes}`)
  }
  if (cpus !== undefined && !(Number.isFinite(cpus) && cpus >= 0.01 && cpus <= 4096)) {
    throw new CgroupLimitError(`cpus must be between 0.01 and 4096, got ${cpus}`)
  }
  if (pids !== undefined && !(Number.isSafeInteger(pids) && pids > 0)) {
    throw new CgroupLimitError(`pids must be a positive integer, got ${pids}`)
  }
}

export function cpuQuotaUs (cpus: number): number {
  return Math.max(1000, Math.round(cpus * CPU_PERIOD_US))
}

export function isErrno (err: unknown, ...codes: string[]): boolean {
  return err instanceof Error && codes.includes((err as NodeJS.ErrnoException).code ?? '')
}

export async function readText (path: string): Promise<string> {
  return (await readFile(path, 'utf8')).trim()
}

/** Reads a file, or undefined if it does not exist. */
export async function readOptional (path: string): Promise<string | undefined> {
  try {
    return await readText(path)
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined
    throw err
  }
}

/** Writes a cgroupfs control file; a missing cgroup becomes CgroupNotFoundError. */
export async function writeControl (path: string, value: string, cgroup: string): Promise<void> {
  try {
    await writeFile(path, value)
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new CgroupNotFoundError(`cgroup ${cgroup} does not exist`, { cause: err })
    throw err
  }
}

/** "key value" lines (memory.events, cpu.stat, memory.oom_control) as a map. */
export function parseKeyed (text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/)
    if (key !== undefined && value !== undefined) out.set(key, Number(value))
  }
  return out
}

export function parsePids (text: string): number[] {
  return text.split('\n').filter((l) => l.trim() !== '').map(Number)
}

export function killAll (pids: readonly number[]): void {
  for (const pid of pids) {
    try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
  }
}

/** Polls `done` (2 ms, backing off to 20 ms) until true; throws on abort or after the timeout. */
export async function waitUntil (done: () => Promise<boolean>, what: string, opts: CgroupOpOptions = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS)
  let delay = 2
  while (!(await done())) {
    opts.signal?.throwIfAborted()
    if (Date.now() > deadline) throw new CgroupTimeoutError(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, delay))
    delay = Math.min(20, delay * 2)
  }
}

/** rmdir that tolerates a missing dir and retries EBUSY (tasks still exiting) until the deadline. */
export async function removeDir (dir: string, opts: CgroupOpOptions = {}): Promise<void> {
  await waitUntil(async () => {
    try {
      await rmdir(dir)
      return true
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return true
      if (isErrno(err, 'EBUSY')) return false
      throw err
    }
  }, `rmdir ${dir}`, opts)
}
