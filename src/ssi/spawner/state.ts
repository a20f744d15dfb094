/** The shim's state files (pid, exit) and process identity checks through /proc. */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ExitStatus, JobHandle } from './types.js'

export interface PidRecord {
  readonly pid: number
  readonly start: number
  readonly shim: number
  readonly shimStart: number
}

export type ExitRecord =
  | { readonly kind: 'exit', readonly status: ExitStatus, readonly oomKills: number | undefined }
  /** The shim could not start the job. */
  | { readonly kind: 'error', readonly error: string }

/** Highest signal number; tini exits with 128 + N when its child dies of signal N. */
const MAX_SIGNAL = 64

function parseRecords (text: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=')
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1))
  }
  return out
}

/**
 * A state file's text (a few dozen bytes the shim wrote atomically), undefined if it does not exist.
 * Read synchronously: the exit file is read at every wake-up of a job's watchers, and
 * fs.promises.readFile costs four thread-pool round trips, which wait behind the cgroup removals
 * of jobs just ended.
 */
async function readOptional (path: string): Promise<string | undefined> {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

export async function readPidRecord (jobDir: string): Promise<PidRecord | undefined> {
  const text = await readOptional(join(jobDir, 'pid'))
  if (text === undefined) return undefined
  const r = parseRecords(text)
  const num = (k: string): number => Number(r.get(k) ?? NaN)
  const rec = { pid: num('pid'), start: num('start'), shim: num('shim'), shimStart: num('shimstart') }
  return Object.values(rec).every(Number.isSafeInteger) ? rec : undefined
}

export function decodeExit (r: ReadonlyMap<string, string>): ExitStatus {
  const finishedMs = Number(r.get('time') ?? Date.now())
  const oomKilled = Number(r.get('oom_kill') ?? 0) > 0
  const signal = r.get('signal')
  if (signal !== undefined) return { signal: Number(signal), oomKilled, coreDumped: r.get('core') === '1', finishedMs }
  const code = Number(r.get('code') ?? 255)
  if (code > 128 && code <= 128 + MAX_SIGNAL) return { signal: code - 128, oomKilled, finishedMs }
  return { code, oomKilled, finishedMs }
}

export async function readExitRecord (jobDir: string): Promise<ExitRecord | undefined> {
  const text = await readOptional(join(jobDir, 'exit'))
  if (text === undefined) return undefined
  const r = parseRecords(text)
  const error = r.get('error')
  if (error !== undefined) return { kind: 'error', error }
  const oom = r.get('oom_kill')
  return { kind: 'exit', status: decodeExit(r), oomKills: oom === undefined || Number(oom) < 0 ? undefined : Number(oom) }
}

function statFields (pid: number): string[] | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // The command name (field 2) may hold spaces and ')': fields 3.. follow the last ')'.
  return text.slice(text.lastIndexOf(')') + 2).split(' ')
}

/** Start time of `pid` (clock ticks since boot, /proc/<pid>/stat field 22), undefined if gone. */
export function procStartTime (pid: number): number | undefined {
  const start = Number(statFields(pid)?.[22 - 3])
  return Number.isSafeInteger(start) ? start : undefined
}

/** True if `pid` is still the process that started at `start` and has not exited (a zombie has). */
export function isSameProcess (pid: number, start: number): boolean {
  const fields = statFields(pid)
  const state = fields?.[0]
  return state !== undefined && state !== 'Z' && state !== 'X' && Number(fields?.[22 - 3]) === start
}

export function handleFor (id: string, jobDir: string, rec: PidRecord, stdin: boolean): JobHandle {
  return {
    id,
    jobDir,
    hostPid: rec.pid,
    hostPidStart: rec.start,
    shimPid: rec.shim,
    shimPidStart: rec.shimStart,
    stdoutPath: join(jobDir, 'stdout'),
    stderrPath: join(jobDir, 'stderr'),
    stdinPath: stdin ? join(jobDir, 'stdin') : undefined
  }
}

/**
 * Waits until the shim recorded in `jobDir/pid` has ended, SIGKILLing it after `timeoutMs`.
 * A restore into the dir of a tree CRIU has just killed must not start before that tree's shim has
 * recorded the death: under load it can take a while, and its late `exit` file would end the
 * restored job (seen by the soak as a job killed with 137 right after a rolled-back migration).
 * Resolves with whether the shim had to be killed.
 */
export async function awaitOldShim (jobDir: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const rec = await readPidRecord(jobDir).catch(() => undefined)
  if (rec === undefined) return false
  const deadline = Date.now() + timeoutMs
  while (isSameProcess(rec.shim, rec.shimStart)) {
    signal?.throwIfAborted()
    if (Date.now() >= deadline) {
      try { process.kill(rec.shim, 'SIGKILL') } catch { /* gone meanwhile */ }
      while (isSameProcess(rec.shim, rec.shimStart)) await new Promise(resolve => setTimeout(resolve, 10))
      return true
    }
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  return false
}
