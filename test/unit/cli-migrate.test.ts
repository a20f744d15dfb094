import { describe, expect, it } from 'vitest'
import { RemoteError } from '../../src/api/errors.js'
import { describeMigrateProgress, ProgressLine } from '../../src/cli/progress.js'
import { harness } from './cli-harness.js'
import type { StubStream } from './cli-harness.js'

const result = { vpid: 1000001, from: 'n1', node: 'n2', checkMs: 1, dumpMs: 52, transferMs: 30, restoreMs: 61, downtimeMs: 150, bytes: 3 * 1024 * 1024 }
const MiB = 2 ** 20

/** Answers the migrate stream with `events`, then `answer`. */
function answering (answer: unknown, events: unknown[] = []): (s: StubStream) => void {
  return (s) => {
    setImmediate(() => {
      for (const e of events) s.emit(e)
      if (answer instanceof Error) s.fail(answer)
      else s.finish(answer)
    })
  }
}

describe('ssi migrate', () => {
  it('calls migrate (mode auto by default) and prints the phase times', async () => {
    const h = harness()
    h.onStream = answering({ ...result, mode: 'stop-copy' }, [{ kind: 'mode', mode: 'stop-copy', reason: 'auto: 3 MiB resident <= 256 MiB' }, { kind: 'phase', phase: 'dumping' }])
    expect(await h.run(['migrate', '1000001', 'n2'])).toBe(0)
    expect(h.calls).toEqual([{ method: 'migrate', params: { vpid: 1000001, node: 'n2', mode: 'auto' } }])
    expect(h.out).toEqual(['1000001 moved n1 -> n2: dump 52 ms, transfer 30 ms (3.0 MiB), restore 61 ms, downtime 150 ms'])
    expect(h.err).toEqual([]) // stop-copy is quiet; no live line when stderr is not a terminal
    expect(h.stderr()).toBe('')
  })

  it('says how much of the image went while CRIU still dumped', async () => {
    const h = harness()
    h.onStream = answering({ ...result, mode: 'stop-copy', bytes: 64 * 2 ** 20, bytesDuringDump: 48 * 2 ** 20 })
    expect(await h.run(['migrate', '1000001', 'n2'])).toBe(0)
    expect(h.out).toEqual(['1000001 moved n1 -> n2: dump 52 ms, transfer 30 ms (64.0 MiB, 48.0 of it during the dump), restore 61 ms, downtime 150 ms'])
  })

  it('--json prints every phase time', async () => {
    const h = harness()
    h.onStream = answering(result)
    expect(await h.run(['migrate', '--json', '1000001', 'n2'])).toBe(0)
    expect(JSON.parse(h.out.join('\n'))).toEqual(result)
  })

  it('post-copy: the warning comes before anything else, then the pull, then its completion', async () => {
    const h = harness()
    const pc = { ...result, mode: 'post-copy', pullMs: 900, pageBytes: 1024 * MiB, totalMs: 1300 }
    h.onStream = answering(pc, [
      { kind: 'mode', mode: 'post-copy', reason: 'auto: 1024 MiB resident > 256 MiB', warning: 'post-copy: if the source node dies before the page pull is complete, the job is lost' },
      { kind: 'phase', phase: 'dumping' },
      { kind: 'phase', phase: 'pulling' },
      { kind: 'progress', phase: 'pulling', doneBytes: 512 * MiB, totalBytes: 1024 * MiB, bytesPerSecond: 512 * MiB, etaMs: 1000 },
      { kind: 'phase', phase: 'moved' }
    ])
    expect(await h.run(['migrate', '--mode', 'auto', '1000001', 'n2'])).toBe(0)
    expect(h.err).toEqual([
      'mode post-copy (auto: 1024 MiB resident > 256 MiB)',
      'warning: post-copy: if the source node dies before the page pull is complete, the job is lost',
      'the job runs on n2; pulling its memory from the source (keep the source node up)',
      'page pull complete: the job no longer needs the source node'
    ])
    expect(h.out).toEqual(['1000001 moved n1 -> n2 (post-copy): dump 52 ms, transfer 30 ms (3.0 MiB), restore 61 ms, downtime 150 ms, page pull 900 ms (1024.0 MiB), total 1300 ms'])
  })

  it('draws a live progress line on a terminal stderr and erases it at the end', async () => {
    const h = harness()
    h.onStream = answering(result, [
      { kind: 'phase', phase: 'dumping' },
      { kind: 'progress', phase: 'transferring', doneBytes: 256 * MiB, totalBytes: 1024 * MiB, bytesPerSecond: 128 * MiB, etaMs: 6000 }
    ])
    expect(await h.run(['migrate', '--mode', 'stop-copy', '1000001', 'n2'], { stderrColumns: 80 })).toBe(0)
    expect(h.calls[0]?.params).toMatchObject({ mode: 'stop-copy' })
    const raw = h.stderr()
    expect(raw).toContain('\rdumping')
    expect(raw).toContain('\rtransferring  256.0/1024.0 MiB  128.0 MiB/s  ETA 6.0s')
    expect(raw.endsWith('\r')).toBe(true) // erased before the summary
  })

  it('refuses an unknown mode before calling the daemon', async () => {
    const h = harness()
    expect(await h.run(['migrate', '--mode', 'fast', '1000001', 'n2'])).toBe(2)
    expect(h.calls).toEqual([])
    expect(h.err.join('\n')).toMatch(/--mode must be one of auto, stop-copy, post-copy, pre-copy/)
  })

  it('says why a migration was refused and exits non-zero', async () => {
    const h = harness()
    h.onStream = answering(new RemoteError('ModeUnsupportedError', 'pre-copy needs memory change tracking, which this kernel lacks'))
    expect(await h.run(['migrate', '--mode', 'pre-copy', '1000001', 'n2'])).not.toBe(0)
    expect(h.err.join('\n')).toMatch(/pre-copy needs memory change tracking/)
  })
})

describe('progress line', () => {
  it('describes transfer and pull progress', () => {
    expect(describeMigrateProgress({ kind: 'progress', phase: 'pulling', doneBytes: MiB, totalBytes: 4 * MiB, bytesPerSecond: MiB })).toBe('pulling pages  1.0/4.0 MiB  1.0 MiB/s')
    expect(describeMigrateProgress({ kind: 'progress', phase: 'transferring', doneBytes: 0, totalBytes: MiB, bytesPerSecond: 0, etaMs: 61_000 })).toBe('transferring  0.0/1.0 MiB  0.0 MiB/s  ETA 61s')
  })

  it('redraws in place, pads over a longer previous line, and clears', () => {
    const written: string[] = []
    const line = new ProgressLine(t => { written.push(t) }, 20)
    line.update('a long line of text that is cut')
    line.update('short')
    line.clear()
    line.clear()
    expect(written).toEqual(['\ra long line of text', '\rshort              ', `\r${' '.repeat(5)}\r`])
  })
})
