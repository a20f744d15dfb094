/** LocalJobs after a daemon restart: ended jobs come back without a runtime handle, their output and files do not go astray. */
import { describe, expect, it } from 'vitest'
import { MemoryStateStore } from '../../src/node/store.js'
import { LocalJobs } from '../../src/ssi/jobs/local.js'
import { jobKey } from '../../src/ssi/jobs/record.js'
import type { JobRecord } from '../../src/ssi/jobs/record.js'
import type { JobRuntime } from '../../src/ssi/jobs/runtime.js'

const owner = { uid: 1000, gid: 1000, groups: [], user: 'ada' }
const quiet = { info () {}, warn () {} }

function record (vpid: number, state: JobRecord['state'], endedMs?: number): JobRecord {
  return { vpid, owner, argv: ['true'], cwd: '/', hostname: `vp${vpid}`, limits: {}, node: 'n1', homeNode: 'n1', state, createdMs: 1, endedMs, stdin: false }
}

/** A runtime that holds stored output per vpid and records what it was asked to remove. */
function storedRuntime (files: Map<number, string>): { runtime: JobRuntime, removed: number[] } {
  const removed: number[] = []
  const runtime = {
    adopt: async () => { throw new Error('an ended job is not adopted') },
    storedOutput: async function * (vpid: number, fd: 1 | 2, offset: number) {
      const text = fd === 1 ? files.get(vpid) ?? '' : ''
      if (offset < text.length) yield Buffer.from(text.slice(offset))
    },
    removeStored: async (vpid: number) => { removed.push(vpid); files.delete(vpid) }
  } as unknown as JobRuntime
  return { runtime, removed }
}

async function collect (it: AsyncIterable<Uint8Array>): Promise<string> {
  let s = ''
  for await (const chunk of it) s += Buffer.from(chunk).toString()
  return s
}

describe('LocalJobs after a restart, for jobs that had ended or stopped', () => {
  it('serves the output of ended and checkpointed jobs from their files, and removes the files of expired ones', async () => {
    const store = new MemoryStateStore()
    const now = Date.now()
    await store.put(jobKey(1000001), record(1000001, 'exited', now - 10))
    await store.put(jobKey(1000002), record(1000002, 'checkpointed'))
    await store.put(jobKey(1000003), record(1000003, 'exited', now - 120_000))
    const files = new Map([[1000001, '1\n2\n3\n'], [1000002, 'a\nb\n'], [1000003, 'old\n']])
    const { runtime, removed } = storedRuntime(files)
    const local = new LocalJobs({ node: 'n1', store, runtime, logger: quiet, onChange: () => {}, retainFinishedMs: 60_000 })
    await local.recover()
    expect(await collect(local.output(1000001, 1, 0, false))).toBe('1\n2\n3\n')
    expect(await collect(local.output(1000001, 1, 2, true))).toBe('2\n3\n')
    expect(await collect(local.output(1000002, 1, 0, false))).toBe('a\nb\n')
    expect(await local.collectGarbage(now)).toBe(1)
    expect(removed).toEqual([1000003])
    expect(await store.get(jobKey(1000003))).toBeUndefined()
    expect(local.has(1000001)).toBe(true)
  })
})
