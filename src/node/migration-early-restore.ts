/**
 * A target's restore started as soon as the migration is prepared: CRIU starts (exec, kernel
 * probes) while the source dumps and sends, then waits for its inventory (src/migration/
 * inventory-hold.ts), which it gets once every image arrived and verified. From there on it is the
 * restore a complete images dir gets, only without CRIU's start inside the downtime.
 *
 * CRIU's command line names the job's stdio files (`--inherit-fd`) and the shell before it opens
 * the job's output files, so both are set before the output arrives: the prepare carries the stdio
 * names, and the output staged by the source is appended to the files CRIU holds (a rename would
 * leave CRIU with the old, empty ones). A restore that cannot go on so (the dump named other files,
 * much output to copy, CRIU failed meanwhile) is abandoned and the caller restores as before.
 */
import { appendFileSync, createReadStream, createWriteStream, readFileSync, statSync, unlinkSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { InventoryHold } from '../migration/inventory-hold.js'
import type { JobLimits } from '../ssi/jobs/record.js'
import type { DumpedFile, JobRuntime, RuntimeJob } from '../ssi/jobs/runtime.js'

/** Above this much output to append, renaming it into place (the usual restore) is cheaper than CRIU's start. */
const MAX_APPENDED_OUTPUT_BYTES = 32 * 1024 * 1024
/** Output up to this size is appended in one synchronous read and write (no thread-pool hops). */
const SMALL_OUTPUT_BYTES = 1024 * 1024
/** How long an abandoned CRIU gets to fail on its own before its restore call is aborted. */
const ABANDON_WAIT_MS = 10_000

export interface EarlyRestoreSpec {
  readonly vpid: number
  /** Created here (must not exist): CRIU's images dir, which the received images move into. */
  readonly restoreDir: string
  readonly limits: JobLimits
  readonly stdio: readonly DumpedFile[]
}

/** A file of output the source staged with the images, and the job's file it belongs at the end of. */
export interface StagedOutput {
  readonly staged: string
  readonly path: string
}

export class EarlyRestore {
  private readonly stop = new AbortController()
  private readonly restoring: Promise<RuntimeJob>
  private failure: unknown
  private released = false

  private constructor (private readonly spec: EarlyRestoreSpec, private readonly hold: InventoryHold, private readonly runtime: JobRuntime) {
    this.restoring = runtime.restore({ vpid: spec.vpid, imagesDir: spec.restoreDir, limits: spec.limits, stdio: spec.stdio, hold: true, waitsForImages: true }, this.stop.signal)
    this.restoring.catch((err: unknown) => { this.failure = err ?? new Error('the early restore failed') })
  }

  /** Empties the job's dir, creates its output files (empty, for now) and starts CRIU. */
  static async start (runtime: JobRuntime, spec: EarlyRestoreSpec): Promise<EarlyRestore> {
    const { jobDir, stdout, stderr } = runtime.paths(spec.vpid)
    await rm(jobDir, { recursive: true, force: true }) // left from an earlier stay of this job here
    await mkdir(jobDir, { recursive: true, mode: 0o711 })
    // The shim's mode for them: CRIU refuses a file whose mode differs from the dumped one's.
    for (const path of [stdout, stderr]) await writeFile(path, '', { mode: 0o600 })
    await rm(spec.restoreDir, { recursive: true, force: true })
    return new EarlyRestore(spec, new InventoryHold(spec.restoreDir), runtime)
  }

  /** Why the restore cannot go on with the dump's `stdio` and this output, or undefined if it can. */
  unusable (stdio: readonly DumpedFile[], output: readonly StagedOutput[]): string | undefined {
    if (this.failure !== undefined) return `CRIU failed before the images came: ${(this.failure as Error).message}`
    if (!sameStdio(this.spec.stdio, stdio)) return 'the dump named other stdio files than the prepare'
    let bytes = 0
    try {
      for (const o of output) bytes += statSync(o.staged).size
    } catch (err) {
      return `the staged output is not there: ${(err as Error).message}`
    }
    if (bytes > MAX_APPENDED_OUTPUT_BYTES) return `${bytes} bytes of output to copy`
    return undefined
  }

  /**
   * Appends the staged output to the job's files, moves the images in and lets CRIU go on;
   * resolves once the tree runs, as RuntimeJob.restore. `signal` aborts it as it would that call.
   */
  async release (receivedDir: string, output: readonly StagedOutput[], signal: AbortSignal): Promise<RuntimeJob> {
    this.released = true
    const onAbort = (): void => { this.stop.abort(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      try {
        for (const o of output) await appendFile(o.staged, o.path)
        this.hold.release(receivedDir)
      } catch (err) {
        this.hold.abandon() // CRIU fails at once instead of waiting (a no-op if the release got that far)
        await this.restoring.catch(() => {})
        throw err
      }
      return await this.restoring
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  /**
   * Ends a restore not released: CRIU fails on an empty inventory, and its restore call with it;
   * the job's dir and cgroup it made go too (the job does not run here). No-op once released.
   */
  async abandon (): Promise<void> {
    if (this.released) return
    this.released = true
    this.hold.abandon()
    const settled = await Promise.race([this.restoring.then(() => true, () => true), sleep(ABANDON_WAIT_MS, false, { ref: false })])
    if (!settled) this.stop.abort(new Error('the early restore was abandoned and CRIU did not end'))
    await this.restoring.catch(() => {})
    await rm(this.spec.restoreDir, { recursive: true, force: true })
    await this.runtime.removeStored(this.spec.vpid).catch(() => {})
  }
}

function sameStdio (a: readonly DumpedFile[], b: readonly DumpedFile[]): boolean {
  const key = (files: readonly DumpedFile[]): string => files.map(f => `${f.stream}=${f.key}`).sort().join(',')
  return key(a) === key(b)
}

/** Appends `from` to `to` (opened for appending, as the job's own fds are) and removes `from`. */
async function appendFile (from: string, to: string): Promise<void> {
  if (statSync(from).size <= SMALL_OUTPUT_BYTES) appendFileSync(to, readFileSync(from))
  else await pipeline(createReadStream(from), createWriteStream(to, { flags: 'a' }))
  unlinkSync(from)
}
