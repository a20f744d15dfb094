/**
 * The caller's terminal as raw byte streams: what `ssi run` and `ssi logs` write a job's output to.
 * Bytes go through unchanged (no line buffering, no added text), in the order given, and a writer
 * waits for a full stream to drain, so a job printing faster than the terminal reads is slowed down
 * through the daemon instead of buffered in memory.
 */
import type { Writable } from 'node:stream'
import type { OutputSink } from './context.js'

/** An OutputSink over two writable streams (the real one: process.stdout and process.stderr). */
export function streamOutput (stdout: Writable, stderr: Writable): OutputSink {
  return {
    async write (fd, data) {
      const stream = fd === 2 ? stderr : stdout
      // A closed stream (`ssi run yes | head -1`) takes nothing more; writing would never drain.
      if (stream.destroyed || stream.writableEnded) return
      if (!stream.write(data)) await drained(stream)
    }
  }
}

async function drained (stream: Writable): Promise<void> {
  await new Promise<void>(resolve => {
    const done = (): void => {
      stream.off('drain', done)
      stream.off('close', done)
      stream.off('error', done)
      resolve()
    }
    stream.on('drain', done)
    stream.on('close', done)
    stream.on('error', done)
  })
}
