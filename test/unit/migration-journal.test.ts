import { describe, expect, it } from 'vitest'
import { MigrationJournal, recoveryPlan } from '../../src/migration/journal.js'
import type { JournalEntry, JournalStore } from '../../src/migration/journal.js'

function memoryStore (): JournalStore {
  const m = new Map<string, unknown>()
  return {
    get: async <T>(k: string) => m.get(k) as T | undefined,
    put: async (k, v) => { m.set(k, v) },
    del: async k => { m.delete(k) },
    list: async <T>(prefix: string) => [...m].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => a.localeCompare(b)).map(([key, value]) => ({ key, value: value as T }))
  }
}

const entry = (patch: Partial<JournalEntry>): JournalEntry => ({ vpid: 7, target: 'n2', phase: 'transferring', startedMs: 1, updatedMs: 2, ...patch })

describe('migration journal', () => {
  it('keeps one entry per job, in vpid order, until deleted', async () => {
    const j = new MigrationJournal(memoryStore())
    await j.put(entry({ vpid: 12 }))
    await j.put(entry({ vpid: 3, phase: 'preparing' }))
    await j.put(entry({ vpid: 3, phase: 'dumping' }))
    expect((await j.list()).map(e => [e.vpid, e.phase])).toEqual([[3, 'dumping'], [12, 'transferring']])
    await j.del(3)
    expect((await j.list()).map(e => e.vpid)).toEqual([12])
  })

  it('plans: confirmed -> forget; tree alive -> resume; images known -> settle with the target; else lost', () => {
    expect(recoveryPlan(entry({ phase: 'moved', imagesDir: '/x', dumped: [] }), false)).toBe('forget')
    for (const phase of ['preparing', 'dumping', 'transferring', 'rolling-back'] as const) expect(recoveryPlan(entry({ phase }), true)).toBe('resume')
    expect(recoveryPlan(entry({ phase: 'restoring', imagesDir: '/x', dumped: [] }), false)).toBe('settle')
    expect(recoveryPlan(entry({ phase: 'rolling-back', imagesDir: '/x', dumped: [] }), false)).toBe('settle')
    expect(recoveryPlan(entry({ phase: 'dumping' }), false)).toBe('lost')
  })
})
