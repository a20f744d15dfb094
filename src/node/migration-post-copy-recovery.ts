/**
 * A restarted source settles a post-copy migration its predecessor journalled. Post-copy leaves no
 * images to restore from (the memory stayed with the lazy dump, which ended with that daemon), so:
 * - before the target was asked to restore (checking … transferring): the job never ran there. If
 *   its tree is still here (a CRIU left from the old daemon still holding it is killed first) it
 *   runs here again and the target drops what it holds; if the tree is gone, the job is lost.
 * - restoring or pulling: the target is asked. Running there: its pull had finished, the job moved
 *   (any tree left here is killed). Otherwise the pages it still needed were here and are gone: the
 *   job is lost, and said so. Only a target that never got to run it ('restoring', nothing there)
 *   lets a tree still here run again.
 * Never a job on two nodes: whatever may run elsewhere is cancelled or killed before one runs here.
 */
import { readFile } from 'node:fs/promises'
import type { JournalEntry } from '../migration/journal.js'
import type { DumpedFile, RuntimeJob } from '../ssi/jobs/runtime.js'
import { askTarget } from './migration-recovery.js'
import type { RecoveryInit } from './migration-recovery.js'

const BEFORE_RESTORE: ReadonlySet<string> = new Set(['checking', 'preparing', 'dumping', 'transferring'])

/** Why a post-copy job is lost when its source restarts during the pull. */
export const POST_COPY_SOURCE_LOST = 'post-copy needs its source until every page has reached the target, ' +
  'and the source restarted before that: the job is lost'

export async function settlePostCopy (init: RecoveryInit, entry: JournalEntry<DumpedFile[]>, job: { runtime?: RuntimeJob, treeAlive: boolean }, why: string): Promise<void> {
  const { local } = init
  const { vpid, target, phase } = entry
  if (phase === 'moved') {
    await local.markMoved(vpid, target, `${why}; ${target} had every page`)
    return
  }
  if (!BEFORE_RESTORE.has(phase)) {
    const holds = await askTarget(init, target, vpid, entry.startedMs)
    if (holds === 'running') {
      await killTree(init, job.runtime)
      await local.markMoved(vpid, target, `${why}; ${target} runs it with every page`)
      return
    }
    await init.cancelTarget(target, vpid).catch(() => {})
    if (phase === 'pulling' || holds === undefined || !job.treeAlive) {
      await killTree(init, job.runtime)
      const said = holds === undefined ? `${target} did not answer for ${init.settleTimeoutMs} ms` : `${target} does not run it`
      await local.loseAfterMigration(vpid, `${why}; ${said}; ${POST_COPY_SOURCE_LOST}`, target)
      return
    }
  } else {
    await init.cancelTarget(target, vpid).catch(() => {})
    if (!job.treeAlive) {
      await local.loseAfterMigration(vpid, `${why}; its tree is gone here (the lazy dump ended with that daemon)`, target)
      return
    }
  }
  await letGo(job.runtime)
  await local.resumeAfterMigration(vpid, job.runtime, `${why}; the job had not run on ${target}: it runs here again`, target)
}

async function killTree (init: RecoveryInit, rt: RuntimeJob | undefined): Promise<void> {
  if (rt === undefined) return
  await init.runtime.signal(rt, 'SIGKILL').catch(() => {})
  await init.runtime.waitExit(rt, AbortSignal.timeout(10_000)).catch(() => {})
  await init.runtime.release(rt).catch(() => {})
}

const status = async (pid: number): Promise<string | undefined> => await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined)

/**
 * A CRIU left by the old daemon may still hold the tree frozen (ptrace): kill it (only if it is
 * criu) and wait for the tree to run freely, as a killed lazy dump lets it.
 */
async function letGo (rt: RuntimeJob | undefined): Promise<void> {
  if (rt === undefined) return
  const tracer = Number(/^TracerPid:\s+(\d+)/m.exec(await status(rt.hostPid) ?? '')?.[1] ?? 0)
  if (tracer === 0) return
  const cmd = await readFile(`/proc/${tracer}/cmdline`, 'utf8').catch(() => '')
  if (!cmd.includes('criu')) return
  try { process.kill(tracer, 'SIGKILL') } catch { return }
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const state = /^State:\s+(\S)/m.exec(await status(rt.hostPid) ?? '')?.[1]
    if (state === undefined || (state !== 't' && state !== 'T')) return
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
