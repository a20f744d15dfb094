/**
 * The soak's jobs: shell loops printing numbered lines, so a lost or repeated line shows in `logs`,
 * and what the end of each one must look like given what was done to it.
 */
import type { RunResult } from '../../src/api/schema.js'

export type JobKind = 'short' | 'long' | 'checkpointed'

export interface SoakJob {
  readonly vpid: number
  readonly kind: JobKind
  /** Lines it prints when left alone: 1..lines. */
  readonly lines: number
  readonly signals: Set<'SIGTERM' | 'SIGKILL'>
  /** Its node was killed (power cut) while it may have run there: lost, or restored from a checkpoint. */
  nodeKilled: boolean
  /** A daemon died while the job migrated or started: the README allows the job to be lost then. */
  riskyFault: boolean
  daemonRestarts: number
  migrations: number
  ended?: RunResult
}

export function jobScript (lines: number, sleepS: number): string[] {
  return ['/bin/sh', '-c', `i=0; while [ $i -lt ${lines} ]; do i=$((i+1)); echo $i; sleep ${sleepS}; done`]
}

/** The problem with a job's output, if any: lines must be 1..k in order with none missing or repeated. */
export function outputProblem (job: SoakJob, stdout: string, stderr: string, complete: boolean): string | undefined {
  if (stderr !== '') return `stderr is not empty: ${JSON.stringify(stderr.slice(0, 200))}`
  const got = stdout.split('\n')
  if (got.pop() !== '') return `output does not end with a newline: ...${JSON.stringify(stdout.slice(-40))}`
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== String(i + 1)) return `line ${i + 1} is ${JSON.stringify(got[i])} (lines ${i - 2}..${i + 3}: ${JSON.stringify(got.slice(Math.max(0, i - 3), i + 3))}), ${got.length} lines`
  }
  if (got.length > job.lines) return `${got.length} lines, more than the ${job.lines} it prints`
  if (complete && got.length !== job.lines) return `ended with status 0 after ${got.length} of ${job.lines} lines`
  return undefined
}

/** The problem with how a job ended, if any, given the signals sent and the faults it went through. */
export function statusProblem (job: SoakJob, r: RunResult): string | undefined {
  if (r.state === 'lost') return job.nodeKilled || job.riskyFault ? undefined : `lost (${r.error ?? 'no reason'}) though no node it ran on was killed`
  if (r.state === 'failed' || r.state === 'oom') return `${r.state}: ${r.error ?? ''}`
  if (r.status === 0) return undefined
  if (r.status === 143 && job.signals.has('SIGTERM')) return undefined
  if (r.status === 137 && (job.signals.has('SIGKILL') || job.nodeKilled)) return undefined
  return `status ${r.status} (state ${r.state}) after signals [${[...job.signals].join(',')}]`
}
