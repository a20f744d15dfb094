/**
 * The stop-and-copy state machine with both sides faked in one process: the happy path and its
 * phase times, refusal before anything is frozen, rollback from the images after a failure past
 * the dump, and a lost job when even the rollback fails.
 */
import { describe, expect, it } from 'vitest'
import { MigrationError, NotMigratableError, migrate } from '../../src/migration/stop-and-copy.js'
import type { MigrationPhase, MigrationSource, MigrationTarget } from '../../src/migration/stop-and-copy.js'

type Step = 'begin' | 'check' | 'checkpoint' | 'stage' | 'commit' | 'resume' | 'rollback' | 'lose' | 'prepare' | 'send' | 'restore' | 'cancel'

function sides (fail: Partial<Record<Step, string>> = {}, reasons: string[] = []): {
  source: MigrationSource<string, string[]>, target: MigrationTarget<string, string[]>, log: string[]
} {
  const log: string[] = []
  const step = async (name: Step, detail = ''): Promise<void> => {
    log.push(detail === '' ? name : `${name} ${detail}`)
    const err = fail[name]
    if (err !== undefined) throw new Error(err)
  }
  const source: MigrationSource<string, string[]> = {
    begin: async (vpid) => { await step('begin'); return { hostPid: 42, payload: `job ${vpid}` } },
    check: async () => { await step('check'); return reasons },
    imagesDir: async () => '/images',
    checkpoint: async () => { await step('checkpoint'); return ['file[1:2]'] },
    stageOutput: async () => { await step('stage') },
    commit: async (_v, target) => { await step('commit', target) },
    resume: async (_v, error) => { await step('resume', error) },
    rollback: async (_v, _d, dumped, error) => { await step('rollback', `${dumped.join()} ${error}`) },
    lose: async () => { await step('lose') }
  }
  const target: MigrationTarget<string, string[]> = {
    prepare: async (_t, _v, payload) => { await step('prepare', payload) },
    // Starts with the dump (it could follow CRIU's page files); the rest waits for the whole dir.
    send: async (_t, _d, _s, written) => {
      await step('send')
      await written?.catch((err: unknown) => { log.push(`send given up: ${(err as Error).message}`); throw err })
      log.push('sent')
      return { bytes: 1234 }
    },
    restore: async (_t, _v, dumped) => { await step('restore', dumped.join()) },
    cancel: async () => { await step('cancel') }
  }
  return { source, target, log }
}

describe('stop-and-copy migration', () => {
  it('runs check, prepare, dump (with the send started), transfer, restore, commit in order and reports phase times', async () => {
    const { source, target, log } = sides()
    const phases: MigrationPhase[] = []
    const r = await migrate(source, target, { vpid: 7, target: 'n2', asUid: 0, onPhase: p => { phases.push(p) } })
    expect(log).toEqual(['begin', 'check', 'prepare job 7', 'send', 'checkpoint', 'stage', 'sent', 'restore file[1:2]', 'commit n2'])
    expect(phases).toEqual(['preparing', 'dumping', 'transferring', 'restoring', 'moved'])
    expect(r).toMatchObject({ vpid: 7, target: 'n2', bytes: 1234 })
    for (const k of ['checkMs', 'dumpMs', 'transferMs', 'restoreMs', 'downtimeMs'] as const) expect(r[k]).toBeGreaterThanOrEqual(0)
  })

  it('refuses before freezing a job that cannot migrate, and resumes it', async () => {
    const { source, target, log } = sides({}, ['pid 3 fd 4: io_uring instance'])
    await expect(migrate(source, target, { vpid: 7, target: 'n2', asUid: 0 })).rejects.toThrow(NotMigratableError)
    expect(log).toEqual(['begin', 'check', 'cancel', 'resume job 7 cannot migrate: pid 3 fd 4: io_uring instance'])
  })

  it('passes a refusal of begin (not the owner, already migrating) through untouched', async () => {
    const { source, target, log } = sides({ begin: 'job 7 is already migrating' })
    await expect(migrate(source, target, { vpid: 7, target: 'n2', asUid: 0 })).rejects.toThrow('already migrating')
    expect(log).toEqual(['begin'])
  })

  it('resumes the job when the target refuses or the dump fails', async () => {
    const refused = sides({ prepare: 'no room' })
    await expect(migrate(refused.source, refused.target, { vpid: 7, target: 'n2', asUid: 0 })).rejects.toThrow('no room')
    expect(refused.log.slice(-2)).toEqual(['cancel', 'resume no room'])
    const dump = sides({ checkpoint: 'criu says no' })
    const err = await migrate(dump.source, dump.target, { vpid: 7, target: 'n2', asUid: 0 }).then(() => { throw new Error('resolved') }, (e: unknown) => e as MigrationError)
    expect(err).toBeInstanceOf(MigrationError)
    expect(err).toMatchObject({ phase: 'dumping', rolledBack: true })
    expect(dump.log.slice(-3)).toEqual(['send given up: criu says no', 'cancel', 'resume criu says no'])
  })

  for (const step of ['send', 'restore'] as const) {
    it(`rolls back from the images when ${step} fails`, async () => {
      const { source, target, log } = sides({ [step]: 'link down' })
      const err = await migrate(source, target, { vpid: 7, target: 'n2', asUid: 0 }).then(() => { throw new Error('resolved') }, (e: unknown) => e as MigrationError)
      expect(err).toMatchObject({ rolledBack: true, phase: step === 'send' ? 'transferring' : 'restoring' })
      expect(err.message).toMatch(/link down; it runs here again/)
      expect(log.slice(-2)).toEqual(['cancel', `rollback file[1:2] ${step === 'send' ? 'transferring' : 'restoring'} failed: link down`])
      expect(log).not.toContain('commit n2')
    })
  }

  it('reports the job lost when the rollback fails too', async () => {
    const { source, target, log } = sides({ restore: 'criu restore failed', rollback: 'no space' })
    const err = await migrate(source, target, { vpid: 7, target: 'n2', asUid: 0 }).then(() => { throw new Error('resolved') }, (e: unknown) => e as MigrationError)
    expect(err).toMatchObject({ rolledBack: false })
    expect(err.message).toMatch(/restoring it here failed too: no space/)
    expect(log.at(-1)).toBe('lose')
  })

  it('awaits the phase listener before each step (a journal), with the images and dump result from transferring on', async () => {
    const { source, target, log } = sides()
    const seen: string[] = []
    await migrate(source, target, {
      vpid: 7, target: 'n2', asUid: 0,
      onPhase: async (p, d) => { await new Promise(resolve => setTimeout(resolve, 5)); log.push(`journal ${p}`); seen.push(`${p} ${d.imagesDir ?? '-'} ${JSON.stringify(d.dumped ?? null)}`) }
    })
    expect(log).toEqual(['begin', 'check', 'journal preparing', 'prepare job 7', 'journal dumping', 'send', 'checkpoint', 'stage', 'journal transferring', 'sent', 'journal restoring', 'restore file[1:2]', 'journal moved', 'commit n2'])
    expect(seen.slice(2)).toEqual(['transferring /images ["file[1:2]"]', 'restoring /images ["file[1:2]"]', 'moved /images ["file[1:2]"]'])
  })

  it('does not finish a step the listener could not record: a failed journal write before the transfer rolls back', async () => {
    const { source, target, log } = sides()
    const onPhase = async (p: MigrationPhase): Promise<void> => { if (p === 'transferring') throw new Error('disk full') }
    await expect(migrate(source, target, { vpid: 7, target: 'n2', asUid: 0, onPhase })).rejects.toThrow(/disk full; it runs here again/)
    expect(log).toContain('send given up: disk full') // the dir was never declared complete
    expect(log).not.toContain('sent')
    expect(log).toContain('rollback file[1:2] transferring failed: disk full')
  })

  it('never rolls back once the target runs the job, even if the commit fails', async () => {
    const { source, target, log } = sides({ commit: 'store closed' })
    await expect(migrate(source, target, { vpid: 7, target: 'n2', asUid: 0 })).rejects.toThrow('store closed')
    expect(log).toEqual(['begin', 'check', 'prepare job 7', 'send', 'checkpoint', 'stage', 'sent', 'restore file[1:2]', 'commit n2'])
  })

  describe('with a target restoring while the images arrive', () => {
    /** The restore asked for as the send goes; `sendFails` / `restoreFails` make either one fail. */
    function streaming (opts: { sendFails?: boolean, restoreFails?: boolean }): ReturnType<typeof sides> {
      const s = sides()
      let release: (() => void) | undefined
      const restored = new Promise<void>(resolve => { release = resolve })
      s.target.restoresWhileReceiving = () => true
      s.target.send = async (_t, _d, _s, written) => {
        await written
        s.log.push('sending')
        await new Promise(resolve => setImmediate(resolve)) // the restore is under way meanwhile
        if (opts.sendFails === true) throw new Error('the link broke')
        s.log.push('sent')
        release?.()
        return { bytes: 99 }
      }
      s.target.restore = async () => {
        s.log.push('restore asked')
        if (opts.restoreFails === true) throw new Error('criu: EOF in pages-1.img')
        await restored
        s.log.push('restored')
      }
      return s
    }

    it('asks for the restore as the send starts, and moves once both are done', async () => {
      const { source, target, log } = streaming({})
      const r = await migrate(source, target, { vpid: 7, target: 'n2', asUid: 0 })
      expect(log).toEqual(['begin', 'check', 'prepare job 7', 'checkpoint', 'stage', 'restore asked', 'sending', 'sent', 'restored', 'commit n2'])
      expect(r.bytes).toBe(99)
    })

    it('a failed send cancels the target, settles its restore, then rolls back', async () => {
      const { source, target, log } = streaming({ sendFails: true, restoreFails: true })
      await expect(migrate(source, target, { vpid: 7, target: 'n2', asUid: 0 })).rejects.toThrow('transferring failed: the link broke; it runs here again')
      expect(log.slice(-3)).toEqual(['cancel', 'cancel', 'rollback file[1:2] transferring failed: the link broke'])
    })

    it('a send whose answer was lost, with the target running the job, counts as moved', async () => {
      const s = streaming({ sendFails: true })
      s.target.restore = async () => { s.log.push('restored') } // the target verified all and let it run
      const r = await migrate(s.source, s.target, { vpid: 7, target: 'n2', asUid: 0 })
      expect(r.target).toBe('n2')
      expect(s.log.slice(-2)).toEqual(['cancel', 'commit n2'])
    })
  })
})
