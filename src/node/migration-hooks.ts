/**
 * Fault injection for migration tests, off unless the daemon's environment asks for it:
 * - SSI_TEST_MIGRATION_HOOK=<executable>: run as `<hook> source-<phase> <vpid> <target>` before
 *   each phase of an outgoing migration, as `<hook> target-received <vpid> <source>` on a target
 *   once the images arrived, before they are re-checked and restored, and as `<hook> target-restored
 *   <vpid> <source>` on a target once the job runs there but before it is adopted and confirmed
 *   (restoring while the images arrive, also `<hook> target-restore-gated <vpid> <source>` once the
 *   images verified, before CRIU is let go on: the job may be restored and waiting, not running);
 *   awaited, a non-zero exit fails that step. Post-copy targets also run `<hook> target-pulling
 *   <vpid> <source>` once the job was adopted and its pages are arriving (not awaited). Tests use
 *   it to kill a daemon at an exact point (the hook's parent is the daemon).
 * - SSI_TEST_FAULTS=corrupt-images: the source flips one byte of image data on the wire (after
 *   hashing it), as a faulty link or NIC would; SSI_TEST_FAULTS=stall-images: the image send stops
 *   moving after the header and one DATA frame, as with a target that answers but takes no data.
 */
import { execFile } from 'node:child_process'
import type { ByteChannel } from '../migration/ports.js'

export interface MigrationTestHooks {
  /** Runs the hook (if any) for `point`; rejects if it fails. */
  run(point: string, vpid: number, target: string): Promise<void>
  /** The channel to send images on: `channel`, or a corrupting wrapper of it. */
  wrapImages(channel: ByteChannel): ByteChannel
}

export function migrationTestHooks (env: NodeJS.ProcessEnv = process.env): MigrationTestHooks {
  const hook = env.SSI_TEST_MIGRATION_HOOK
  const corrupt = (env.SSI_TEST_FAULTS ?? '').split(',').includes('corrupt-images')
  const stall = (env.SSI_TEST_FAULTS ?? '').split(',').includes('stall-images')
  return {
    run: async (point, vpid, target) => {
      if (hook === undefined || hook === '') return
      await new Promise<void>((resolve, reject) => {
        execFile(hook, [point, String(vpid), target], { timeout: 60_000 }, err => { if (err === null) resolve(); else reject(new Error(`test hook ${point} failed: ${err.message}`)) })
      })
    },
    wrapImages: channel => stall ? stalling(channel) : corrupt ? corrupting(channel) : channel
  }
}

/**
 * From its third write on (after the header and one DATA frame), every write waits until its
 * signal aborts: what a source sees of a target that stopped taking data but still answers.
 */
function stalling (channel: ByteChannel): ByteChannel {
  let writes = 0
  return {
    write: async (chunk, signal) => {
      if (++writes > 2) {
        await new Promise<never>((_resolve, reject) => {
          if (signal?.aborted === true) reject(signal.reason)
          signal?.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
        })
      }
      await channel.write(chunk, signal)
    },
    closeWrite: async signal => { await channel.closeWrite(signal) },
    read: (signal, opts) => channel.read(signal, opts),
    abort: err => { channel.abort(err) }
  }
}

/** Flips the last byte of the first large write (DATA payload, not a frame header). */
function corrupting (channel: ByteChannel): ByteChannel {
  let done = false
  return {
    write: async (chunk, signal) => {
      if (!done && chunk.byteLength >= 4096) {
        done = true
        const copy = Uint8Array.from(chunk)
        copy[copy.byteLength - 1] = (copy[copy.byteLength - 1] ?? 0) ^ 0xff
        chunk = copy
      }
      await channel.write(chunk, signal)
    },
    closeWrite: async signal => { await channel.closeWrite(signal) },
    read: (signal, opts) => channel.read(signal, opts),
    abort: err => { channel.abort(err) }
  }
}
