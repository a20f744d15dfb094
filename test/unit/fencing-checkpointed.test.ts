/** Which jobs have a checkpoint on another node (they are the ones fencing freezes) survives a daemon restart. */
import { describe, expect, it } from 'vitest'
import { CheckpointedElsewhere } from '../../src/node/fencing.js'
import { MemoryStateStore } from '../../src/node/store.js'

const settle = async (): Promise<void> => await new Promise(resolve => setImmediate(resolve))

describe('CheckpointedElsewhere', () => {
  it('notes dumps left running that reached another node, and a restarted daemon knows them for the jobs still running', async () => {
    const store = new MemoryStateStore()
    const before = new CheckpointedElsewhere(store)
    before.note(1000001, 'n2', 'n1', true)
    before.note(1000002, 'n1', 'n1', true) // kept on this node: nobody else could restore it
    before.note(1000003, 'n2', 'n1', false) // a stopping checkpoint: the job does not run on here
    before.note(1000004, 'n3', 'n1', true)
    await settle()
    expect([1000001, 1000002, 1000003, 1000004].map(v => before.has(v))).toEqual([true, false, false, true])

    const after = new CheckpointedElsewhere(store)
    await after.load(vpid => vpid === 1000001) // 1000004 ended meanwhile
    expect(after.has(1000001)).toBe(true)
    expect(after.has(1000004)).toBe(false)
    expect((await store.list('away/')).map(e => e.value)).toEqual([1000001])
  })
})
