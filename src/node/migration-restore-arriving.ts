/**
 * A migration's restore while the images arrive: CRIU reads them through an image streamer as they
 * are written. Once it restored the tree, and before any of it runs, CRIU waits at a gate (a FIFO
 * its post-restore action script reads) that opens only once every file verified; anything failing
 * (the transfer too) closes it, and CRIU kills the tree, which never ran here.
 */
import { closeSync, openSync, writeSync } from 'node:fs'
import { unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { ImageStreamer } from '../migration/image-streamer.js'
import { makeFifo } from '../native/fd-passing.js'
import type { ArrivingImages } from '../migration/transfer/arrivals.js'
import type { JobLimits } from '../ssi/jobs/record.js'
import type { DumpedFile, JobRuntime, RuntimeJob } from '../ssi/jobs/runtime.js'

export interface ArrivingRestore {
  readonly vpid: number
  /** Where the images arrive. */
  readonly dir: string
  readonly limits: JobLimits
  readonly stdio: readonly DumpedFile[]
  readonly arrivals: ArrivingImages
  /** The migration's end here (cancelled, or its transfer broke). */
  readonly stop: AbortSignal
  /** Names of the output files the source staged with the images (they arrive first). */
  readonly staged: readonly string[]
  /** Puts them into the job's dir. */
  readonly placeOutput: () => Promise<void>
  /** Runs once every file verified, before the gate opens (a test hook). */
  readonly gated: () => Promise<void>
}

/** Resolves once the restored tree runs, as RuntimeJob.restore; `signal` aborts as that call's. */
export async function restoreArriving (runtime: JobRuntime, r: ArrivingRestore, signal: AbortSignal): Promise<RuntimeJob> {
  const { vpid, arrivals } = r
  const both = AbortSignal.any([signal, r.stop])
  let streamer: ImageStreamer | undefined
  let gateFd: number | undefined
  const gate = join(runtime.paths(vpid).jobDir, 'restore-gate')
  try {
    // First on the wire (./transfer/source.ts sends the pages last), and needed before CRIU starts.
    for (const name of r.staged) await arrivals.complete(name, both)
    await r.placeOutput()
    makeFifo(gate, 0o600)
    gateFd = openSync(gate, 'r+') // read-write: never blocks; CRIU's reader sees EOF once it closes
    streamer = new ImageStreamer(r.dir, arrivals, both)
    const restoring = runtime.restore({ vpid, imagesDir: r.dir, limits: r.limits, stdio: r.stdio, hold: true, stream: true, gate }, both)
    restoring.catch(() => {})
    try {
      await arrivals.whenVerified(both)
      await r.gated()
    } catch (err) {
      writeSync(gateFd, 'stop\n')
      streamer.close() // CRIU may still be reading: its pipes end, and it fails there instead
      await restoring.catch(() => {}) // CRIU kills the tree it restored, or failed before
      throw err
    }
    writeSync(gateFd, 'go\n')
    const job = await restoring
    await streamer.done
    return job
  } catch (err) {
    streamer?.close()
    throw err
  } finally {
    if (gateFd !== undefined) {
      closeSync(gateFd)
      await unlink(gate).catch(() => {})
    }
  }
}
