/** migratePostCopy with fakes: once the target runs the job, the caller going away does not lose it. */
import { expect, it } from 'vitest'
import { migratePostCopy } from '../../src/migration/post-copy.js'
import type { PostCopySource, PostCopyTarget } from '../../src/migration/post-copy.js'

/** A page stream that ends after `ms`, or fails at once if its signal aborts. */
const pages = (ms: number, signal: AbortSignal): Promise<{ sent: number }> => new Promise((resolve, reject) => {
  const t = setTimeout(() => { resolve({ sent: 4096 }) }, ms)
  signal.addEventListener('abort', () => { clearTimeout(t); reject(new Error('bridge aborted')) }, { once: true })
})

function fakes (): { source: PostCopySource<unknown, unknown>, target: PostCopyTarget<unknown, unknown>, outcome: string[] } {
  const outcome: string[] = []
  const source = {
    begin: async () => ({ hostPid: 1, payload: {} }),
    check: async () => [],
    imagesDir: async () => '/nonexistent',
    checkpointLazy: async (_v: number, _d: string, signal: AbortSignal) => {
      const served = pages(300, signal).then(() => {})
      served.catch(() => {}) // awaited by the pull only; a rollback drops it
      return { dumped: [], served }
    },
    stageOutput: async () => {},
    abortLazy: async () => true,
    pullStarted: () => {},
    discardLazy: async () => { outcome.push('discarded') },
    commit: async () => { outcome.push('moved') },
    resume: async () => { outcome.push('resumed') },
    lose: async () => { outcome.push('lost') }
  } as unknown as PostCopySource<unknown, unknown>
  const target = {
    prepare: async () => {},
    send: async () => ({ bytes: 1 }),
    cancel: async () => {},
    bridgePages: async (_t: string, _v: number, signal: AbortSignal) => ({ done: pages(300, signal) }),
    restoreLazy: async () => {}
  } as unknown as PostCopyTarget<unknown, unknown>
  return { source, target, outcome }
}

it('the caller aborting during the page pull does not abort the pull: the job moves', async () => {
  const { source, target, outcome } = fakes()
  const caller = new AbortController()
  const r = await migratePostCopy(source, target, {
    vpid: 1000001, target: 'n2', asUid: 0, signal: caller.signal,
    onPhase: p => { if (p === 'pulling') caller.abort(new Error('the caller went away')) }
  })
  expect(r.pageBytes).toBe(4096)
  expect(outcome).toEqual(['moved'])
})

it('the caller aborting before the job runs on the target still rolls it back', async () => {
  const { source, target, outcome } = fakes()
  const caller = new AbortController()
  target.restoreLazy = async (_t, _v, _d, signal) => { caller.abort(new Error('the caller went away')); signal.throwIfAborted() }
  await expect(migratePostCopy(source, target, { vpid: 1000001, target: 'n2', asUid: 0, signal: caller.signal })).rejects.toThrow(/it runs here again/)
  expect(outcome).toEqual(['resumed'])
})
