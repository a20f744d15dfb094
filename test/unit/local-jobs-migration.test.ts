/** LocalJobs around a migration, with a fake runtime: the dump's SIGKILL is not the job's exit; restarts mid-migration. */
import { describe, expect, it } from 'vitest'
import { MemoryStateStore } from '../../src/node/store.js'
import { LocalJobs } from '../../src/ssi/jobs/local.js'
import { jobKey } from '../../src/ssi/jobs/record.js'
import type { ExitInfo, JobRecord } from '../../src/ssi/jobs/record.js'
import type { JobRuntime, RuntimeJob } from '../../src/ssi/jobs/runtime.js'

const owner = { uid: 1000, gid: 1000, groups: [], user: 'ada' }
const quiet = { info () {}, warn () {} }

/** A runtime whose jobs end when the test says so (a tree that ended stays ended for later watchers). */
function fakeRuntime (adopted?: { exit?: ExitInfo }): { runtime: JobRuntime, end: (vpid: number, exit: ExitInfo) => void, released: number[] } {
  const enders = new Map<number, (e: ExitInfo) => void>()
  const exits = new Map<number, ExitInfo>()
  const released: number[] = []
  const job = (vpid: number): RuntimeJob => ({ vpid, jobDir: `/jobs/${vpid}`, hostPid: 100 + vpid })
  const runtime = {
    start: async (spec: { vpid: number }) => job(spec.vpid),
    adopt: async (vpid: number) => (adopted === undefined ? undefined : { job: job(vpid), exit: adopted.exit }),
    waitExit: async (j: RuntimeJob) => exits.get(j.vpid) ?? await new Promise<ExitInfo>(resolve => enders.set(j.vpid, resolve)),
    release: async (j: RuntimeJob) => { released.push(j.vpid) },
    usage: async () => undefined
  } as unknown as JobRuntime
  return { runtime, end: (vpid, exit) => { exits.set(vpid, exit); enders.get(vpid)?.(exit) }, released }
}

function localJobs (runtime: JobRuntime, store = new MemoryStateStore(), changes: JobRecord[] = []): LocalJobs {
  return new LocalJobs({ node: 'n1', store, runtime, logger: quiet, onChange: j => { changes.push(j) }, retainFinishedMs: 60_000 })
}

const start = { vpid: 1000001, owner, argv: ['sleep', '9'], env: {}, cwd: '/', limits: {}, stdin: false, homeNode: 'n1' }
const tick = async (): Promise<void> => await new Promise(resolve => setTimeout(resolve, 10))

describe('LocalJobs and migration', () => {
  it('ignores the end of the tree while migrating; a moved job ends here as moved, pointing at its new node', async () => {
    const { runtime, end, released } = fakeRuntime()
    const local = localJobs(runtime)
    await local.start(start)
    await local.beginMigration(1000001, 1000)
    await expect(local.beginMigration(1000001, 1000)).rejects.toThrow(/already migrating/)
    end(1000001, { signal: 9, oomKilled: false })
    await tick()
    expect(local.get(1000001).state).toBe('migrating')
    const waiting = local.wait(1000001)
    await local.markMoved(1000001, 'n2')
    expect(await waiting).toMatchObject({ state: 'moved', node: 'n2' })
    expect(released).toEqual([1000001])
    expect(await local.list()).toEqual([])
    expect(local.canReceive(1000001)).toBe(true)
  })

  it('a stale copy superseded by a restore elsewhere ends here as moved there: killed, its waiters told where the job runs', async () => {
    const { runtime, end, released } = fakeRuntime()
    const local = localJobs(runtime)
    await local.start(start)
    const waiting = local.wait(1000001)
    expect(await local.supersede(1000001, 'n3')).toBe(true)
    expect(released).toEqual([1000001])
    end(1000001, { signal: 9, oomKilled: false }) // the kill that the release did: not the job's end
    await tick()
    expect(await waiting).toMatchObject({ state: 'moved', node: 'n3', migration: { to: 'n3', detail: expect.stringMatching(/stale copy: .*restored from a checkpoint on n3/) } })
    expect(await local.supersede(1000001, 'n3')).toBe(false)
  })

  it('lets only the owner or root migrate', async () => {
    const local = localJobs(fakeRuntime().runtime)
    await local.start(start)
    await expect(local.beginMigration(1000001, 1001)).rejects.toThrow(/permission denied/)
    expect(local.canReceive(1000001)).toBe(false)
  })

  it('after a failed migration the job runs and its exit counts again', async () => {
    const { runtime, end } = fakeRuntime()
    const local = localJobs(runtime)
    await local.start(start)
    await local.beginMigration(1000001, 0)
    await local.resumeAfterMigration(1000001, { vpid: 1000001, jobDir: '/jobs/1000001', hostPid: 555 }, 'link down')
    expect(local.get(1000001)).toMatchObject({ state: 'running', hostPid: 555 })
    end(1000001, { code: 2, oomKilled: false })
    expect(await local.wait(1000001)).toMatchObject({ state: 'exited', exit: { code: 2 } })
  })

  it('a job that ended by itself while a dump failed (never dumped, runs on) ends, instead of staying running', async () => {
    const { runtime, end, released } = fakeRuntime()
    const local = localJobs(runtime)
    await local.start(start)
    await local.beginMigration(1000001, 0)
    end(1000001, { code: 0, oomKilled: false }) // its last line printed while CRIU was seizing it
    await tick()
    expect(local.get(1000001).state).toBe('migrating')
    await local.resumeAfterMigration(1000001, undefined, 'criu dump failed: Unable to detach from 101: No such process')
    expect(await local.wait(1000001)).toMatchObject({ state: 'exited', exit: { code: 0 } })
    expect(released).toEqual([1000001])
  })

  it('a job lost in a migration has its cgroup released', async () => {
    const { runtime, released } = fakeRuntime()
    const local = localJobs(runtime)
    await local.start(start)
    await local.beginMigration(1000001, 0)
    await local.loseAfterMigration(1000001, 'restoring failed; the frozen job did not resume', 'n2')
    expect(local.get(1000001)).toMatchObject({ state: 'lost', migration: { outcome: 'lost', to: 'n2' } })
    expect(released).toEqual([1000001])
  })

  it('after a restart mid-migration: running again if the tree is there, lost (home not told) if it is gone', async () => {
    const record = { ...start, hostname: 'vp1', node: 'n1', state: 'migrating', createdMs: 1, hostPid: 7 }
    const store = new MemoryStateStore()
    await store.put(jobKey(1000001), record)
    const alive = localJobs(fakeRuntime({}).runtime, store)
    await alive.recover()
    expect(alive.get(1000001).state).toBe('running')

    const store2 = new MemoryStateStore()
    await store2.put(jobKey(1000001), record)
    const changes: JobRecord[] = []
    const gone = localJobs(fakeRuntime({ exit: { signal: 9, oomKilled: false } }).runtime, store2, changes)
    await gone.recover()
    expect(gone.get(1000001)).toMatchObject({ state: 'lost', error: expect.stringMatching(/while the job was migrating/) })
    expect(changes).toEqual([])
  })
})
