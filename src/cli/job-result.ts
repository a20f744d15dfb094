/** How `ssi run` and `ssi wait` report the end of a job: its status as the exit code, and one line when it did not end by itself. */
import { formatLimitBytes } from './format.js'
import type { RunResult } from '../api/schema.js'
import type { CliContext } from './context.js'

/** Exit status of a job killed by SIGKILL, which is what the kernel's OOM killer sends. */
const OOM_STATUS = 128 + 9
/** Exit status of `ssi run`/`ssi wait` for a job lost with its node: distinct from any status a job can end with by itself or a signal. */
export const LOST_STATUS = 254
/** Exit status of `ssi run`/`ssi wait` for a job ssi could not start (run.ts EXIT_SSI_ERROR; not imported: run.ts imports verbs lazily). */
export const FAILED_STATUS = 125

/** Prints why the job ended, if that is news (OOM, could not run, lost), and makes its status the exit code. */
export function reportJobEnd (ctx: CliContext, result: RunResult): void {
  const message = jobEndMessage(result)
  if (message !== undefined) ctx.printer.err(`ssi: ${message}`)
  ctx.setExitCode(exitCodeOf(result))
}

/** The one line about a job's end that its own output does not tell, or undefined. */
export function jobEndMessage (result: RunResult): string | undefined {
  if (isOom(result)) {
    const limit = result.limits.memoryBytes
    return `job ${result.vpid} was killed: out of memory${limit === undefined ? '' : ` (limit ${formatLimitBytes(limit)})`}`
  }
  if (result.error === undefined) return undefined
  if (result.state === 'failed') return `job ${result.vpid} failed: ${result.error}`
  if (result.state === 'lost') return `job ${result.vpid} was lost: ${result.error}`
  return undefined
}

/** The line a follower (`logs -f`, attached `run`) prints when the job stops for a checkpoint; it then follows on. */
export function checkpointedMessage (e: { readonly vpid: number, readonly node: string, readonly dir?: string }): string {
  const where = e.dir === undefined ? `on ${e.node}` : `into ${e.dir} on ${e.node}`
  const how = e.dir === undefined ? 'ssi restore' : `ssi restore ${e.dir}`
  return `job ${e.vpid} was checkpointed (stopped) ${where}; still following: its output continues here once it is restored (${how})`
}

/** The shell-style status as a process exit code (0-255). */
export function exitCodeOf (result: RunResult): number {
  if (result.state === 'lost') return LOST_STATUS
  if (result.state === 'failed') return FAILED_STATUS
  if (isOom(result) && result.status === 0) return OOM_STATUS
  return Number.isInteger(result.status) && result.status >= 0 && result.status <= 255 ? result.status : 255
}

function isOom (result: RunResult): boolean {
  return result.exit?.oomKilled === true || result.state === 'oom'
}
