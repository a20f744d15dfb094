/**
 * A job attached to this terminal (`ssi run` without -d): its output streamed here as raw bytes,
 * stdin forwarded with -i, and the signals the CLI receives forwarded to the job instead of ending
 * the CLI, which keeps streaming until the job ends. A second Ctrl-C within DETACH_WINDOW_MS is
 * forwarded too and then detaches.
 */
import { checkpointedMessage } from './job-result.js'
import type { StreamingCall } from '../api/client.js'
import type { MethodParams, RunEvent, RunInput, RunResult } from '../api/schema.js'
import type { ApiClient, CliContext } from './context.js'

/** A second Ctrl-C this soon after the first detaches from the job. */
export const DETACH_WINDOW_MS = 1000

/** Largest stdin piece per input message (the daemon accepts request frames up to 1 MiB). */
const STDIN_PIECE_BYTES = 256 * 1024

type RunCall = StreamingCall<RunEvent, RunResult, RunInput>

/**
 * Runs the job attached and resolves with its result once it has ended and all of its output has
 * been written; resolves undefined when the user detached (the exit code is then set to 130).
 */
export async function runInForeground (ctx: CliContext, client: ApiClient, params: MethodParams<'run'>): Promise<RunResult | undefined> {
  const call = client.stream('run', params, { signal: ctx.signal })
  const job = new ForegroundJob(ctx, call)
  // Subscribed in the same tick as the call starts: no signal falls between the two.
  const unsubscribe = ctx.onSignal(signal => { job.onSignal(signal) })
  try {
    if (params.stdin === true) void job.forwardStdin(ctx.stdin())
    for await (const event of call) await job.onEvent(event)
    return await call.result
  } catch (err) {
    if (!job.detached) throw err
    ctx.printer.err(job.vpid === undefined
      ? 'ssi: interrupted before the job started'
      : `ssi: detached from job ${job.vpid}; it may still be running (ssi ps, ssi logs -f ${job.vpid}, ssi kill ${job.vpid})`)
    ctx.setExitCode(130)
    return undefined
  } finally {
    unsubscribe()
    job.stopStdin()
  }
}

class ForegroundJob {
  vpid: number | undefined
  detached = false
  private lastInterruptMs: number | undefined
  private stdin: AsyncIterator<Uint8Array> | undefined
  private stdinStopped = false

  constructor (private readonly ctx: CliContext, private readonly call: RunCall) {}

  async onEvent (event: RunEvent): Promise<void> {
    if (event.kind === 'started') this.vpid = event.vpid
    else if (event.kind === 'output') await this.ctx.output.write(event.fd, event.data)
    else if (event.kind === 'checkpointed') this.ctx.printer.err(`ssi: ${checkpointedMessage(event)}`)
    else if (event.kind === 'stdin-closed') {
      this.ctx.printer.err(`ssi: stopped forwarding stdin: ${event.message}`)
      this.stopStdin()
    }
    // Other kinds come from a newer daemon (kinds are only appended): nothing to show.
  }

  onSignal (signal: string): void {
    if (this.detached) return
    this.send({ signal })
    if (signal !== 'SIGINT') return
    const now = this.ctx.now()
    if (this.lastInterruptMs !== undefined && now - this.lastInterruptMs < DETACH_WINDOW_MS) {
      this.detached = true
      this.call.cancel()
    }
    this.lastInterruptMs = now
  }

  /**
   * Sends stdin in pieces, each once the socket took the previous one, then end of file. A read
   * error is said and ends stdin (the job gets end of file); a failed send means the call ended or
   * its connection broke, which the call's own result or error reports.
   */
  async forwardStdin (source: AsyncIterable<Uint8Array>): Promise<void> {
    const stdin = this.stdin = source[Symbol.asyncIterator]()
    for (;;) {
      let next: IteratorResult<Uint8Array>
      try {
        next = await stdin.next()
      } catch (err) {
        if (!this.stdinStopped) this.ctx.printer.err(`ssi: cannot read stdin (${(err as Error).message}): the job gets end of file`)
        break
      }
      if (next.done === true || this.stdinStopped) break
      try {
        for (let at = 0; at < next.value.length; at += STDIN_PIECE_BYTES) {
          await this.call.send({ stdin: next.value.subarray(at, at + STDIN_PIECE_BYTES) })
        }
      } catch {
        return
      }
    }
    if (!this.stdinStopped) this.send({ eof: true })
  }

  /** The job ended, or the daemon can no longer write its stdin: stop reading stdin (a terminal would otherwise keep the CLI waiting). */
  stopStdin (): void {
    this.stdinStopped = true
    void this.stdin?.return?.()?.catch(() => {})
  }

  private send (input: RunInput): void {
    // The call may have ended meanwhile; its result or error says what matters.
    this.call.send(input).catch(() => {})
  }
}
