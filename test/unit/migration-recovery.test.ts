/**
 * A restarted source settling a journalled stop-copy migration (recoverMigrations), with fakes: it
 * restores from its images only if neither the target nor a checkpoint restore by the job's home
 * node runs the job elsewhere.
 */
import { describe, expect, it } from 'vitest'
import { recoverMigrations } from '../../src/node/migration-recovery.js'
import type { RecoveryInit } from '../../src/node/migration-recovery.js'
import type { JournalEntry, MigrationJournal, TargetHolds } from '../../src/migration/journal.js'
import type { LocalJobs } from '../../src/ssi/jobs/local.js'
import type { DumpedFile } from '../../src/ssi/jobs/runtime.js'
import type { Recovery } from '../../src/ssi/failure/lost.js'

const quiet = { debug () {}, info () {}, warn () {}, error () {}, child () { return quiet } }
const VPID = 3000008

interface World { holds: TargetHolds, loc: { node: string, recovered?: Recovery }, treeAlive?: boolean }

function setup (world: World): { init: RecoveryInit, log: string[] } {
  const log: string[] = []
  const entry: JournalEntry<DumpedFile[]> = { vpid: VPID, target: 'n1', phase: 'restoring', startedMs: 1000, updatedMs: 1100, imagesDir: '/nonexistent/images', dumped: [] }
  const local = {
    recovered: () => ({ record: {}, runtime: undefined, treeAlive: world.treeAlive ?? false }),
    get: () => ({ vpid: VPID, node: 'n2', homeNode: 'n3' }),
    markMoved: async (_v: number, node: string, detail: string) => { log.push(`moved to ${node}: ${detail}`) },
    resumeAfterMigration: async (_v: number, _rt: unknown, detail: string) => { log.push(`runs here: ${detail}`) },
    loseAfterMigration: async (_v: number, detail: string) => { log.push(`lost: ${detail}`) }
  } as unknown as LocalJobs
  const rpc = {
    call: async (node: string, method: string) => {
      if (method === 'loc.get' && node === 'n3') return world.loc
      if (method === 'migrate.status' && node === 'n1') return { holds: world.holds }
      throw new Error(`unexpected ${method} to ${node}`)
    },
    stream: async () => {},
    handle: () => {}
  }
  const journal = { del: async () => { log.push('journal entry deleted') } } as unknown as MigrationJournal<DumpedFile[]>
  const init: RecoveryInit = {
    entries: [entry], journal, local, runtime: {} as never, rpc, logger: quiet, settleTimeoutMs: 2000, signal: new AbortController().signal,
    cancelTarget: async target => { log.push(`cancelled on ${target}`) },
    restoreHere: async () => { log.push('restored from images'); return { vpid: VPID, jobDir: '/j', hostPid: 1 } }
  }
  return { init, log }
}

describe('a restarted source settling an interrupted stop-copy migration', () => {
  it('restores from its images when the target never ran the job and nothing else restored it', async () => {
    const { init, log } = setup({ holds: 'incoming', loc: { node: 'n2' } })
    await recoverMigrations(init)
    expect(log).toEqual(['cancelled on n1', 'restored from images', expect.stringMatching(/^runs here: .*n1 did not run it \(incoming\): restored here/), 'journal entry deleted'])
  })

  it('does not bring the job back when its home node restored it from a checkpoint meanwhile (it would run twice)', async () => {
    const recovered: Recovery = { fromNode: 'n2', node: 'n4', takenMs: 900, atMs: 5000 }
    const { init, log } = setup({ holds: 'incoming', loc: { node: 'n4', recovered } })
    await recoverMigrations(init)
    expect(log).not.toContain('restored from images')
    expect(log.some(l => /^moved to n4: .*restored it from a checkpoint on n4, where it runs now/.test(l))).toBe(true)
  })

  it('does not resume a tree that survived here either; an older recovery (before the migration) does not count', async () => {
    const { init, log } = setup({ holds: 'incoming', treeAlive: true, loc: { node: 'n1', recovered: { fromNode: 'n2', node: 'n1', takenMs: 1, atMs: 2000 } } })
    await recoverMigrations(init)
    expect(log.some(l => l.startsWith('moved to n1'))).toBe(true)
    const older = setup({ holds: 'incoming', treeAlive: true, loc: { node: 'n2', recovered: { fromNode: 'n4', node: 'n2', takenMs: 1, atMs: 500 } } })
    await recoverMigrations(older.init)
    expect(older.log.some(l => l.startsWith('runs here: '))).toBe(true)
  })
})
