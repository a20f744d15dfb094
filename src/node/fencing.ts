/**
 * This node's side of fencing (src/ssi/failure/fence.ts): which of its jobs could be restored
 * elsewhere — a checkpoint of the job, left running, was sent to another node (periodic checkpoints
 * do that) — and stopping, continuing or killing a job's whole tree: every process in its PID
 * namespace, found through /proc, signalled from the host (its init cannot ignore SIGSTOP/SIGCONT
 * sent from an ancestor namespace). Which jobs have a checkpoint elsewhere is also noted in the state
 * store (`away/<vpid>`), so a restarted daemon still fences them.
 */
import { readdir, readlink } from 'node:fs/promises'
import type { JobStore, LocalJobs } from '../ssi/jobs/local.js'
import type { FenceJob, FenceTarget } from '../ssi/failure/fence.js'

/** Jobs of this node with a checkpoint held on another node. */
export class CheckpointedElsewhere {
  private readonly vpids = new Set<number>()

  constructor (private readonly store?: JobStore) {}

  /** What an earlier daemon noted, for the jobs still running here (`runsHere`); the rest is dropped. */
  async load (runsHere: (vpid: number) => boolean): Promise<void> {
    for (const { key, value } of await this.store?.list<number>('away/') ?? []) {
      if (runsHere(value)) this.vpids.add(value)
      else await this.store?.del(key)
    }
  }

  /** A dump of vpid that left it running reached `holder`. */
  note (vpid: number, holder: string, self: string, leftRunning: boolean): void {
    if (!leftRunning || holder === self || this.vpids.has(vpid)) return
    this.vpids.add(vpid)
    void this.store?.put(`away/${String(vpid).padStart(15, '0')}`, vpid).catch(() => {}) // best effort: the next dump notes it again
  }

  has (vpid: number): boolean { return this.vpids.has(vpid) }
}

/** Host pids of every process in the PID namespace whose init is `initPid` (empty once it has gone). */
export async function namespacePids (initPid: number): Promise<number[]> {
  const ns = await readlink(`/proc/${initPid}/ns/pid`).catch(() => undefined)
  // Never the daemon's own namespace: only a job's init has a namespace of its own.
  if (ns === undefined || ns === await readlink('/proc/self/ns/pid')) return []
  const pids = (await readdir('/proc')).filter(d => /^\d+$/.test(d)).map(Number)
  const inNs = await Promise.all(pids.map(async p => await readlink(`/proc/${p}/ns/pid`).catch(() => '') === ns))
  return pids.filter((_, i) => inNs[i])
}

/** Sends sig to the whole tree; repeated (SIGSTOP) so that a child forked meanwhile is stopped too. */
async function signalTree (initPid: number, sig: NodeJS.Signals): Promise<void> {
  const done = new Set<number>()
  for (let round = 0; round < (sig === 'SIGSTOP' ? 3 : 1); round++) {
    for (const pid of await namespacePids(initPid)) {
      if (done.has(pid)) continue
      done.add(pid)
      try { process.kill(pid, sig) } catch { /* gone */ }
    }
  }
}

export function localFenceTarget (local: LocalJobs, marked: CheckpointedElsewhere): FenceTarget {
  // Looked up each time (a frozen job stays 'running'), so an ended job's reused pid is never signalled.
  const initOf = (vpid: number): number | undefined => local.running().find(j => j.record.vpid === vpid)?.hostPid
  return {
    restorable: async (): Promise<FenceJob[]> =>
      local.running().filter(j => marked.has(j.record.vpid)).map(j => ({ vpid: j.record.vpid, homeNode: j.record.homeNode })),
    freeze: async vpid => { const pid = initOf(vpid); if (pid !== undefined) await signalTree(pid, 'SIGSTOP') },
    thaw: async vpid => { const pid = initOf(vpid); if (pid !== undefined) await signalTree(pid, 'SIGCONT') },
    // SIGKILL ends even a stopped init, and its namespace's other processes with it.
    kill: async vpid => { const pid = initOf(vpid); if (pid !== undefined) try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
  }
}
