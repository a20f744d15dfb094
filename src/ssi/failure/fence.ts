/**
 * Fencing the minority side of a partition. The majority declares a node dead and the home node of
 * a job that ran there restores it from its periodic checkpoint elsewhere (handler.ts); the node on
 * the other side may still be running that job. So a node that sees fewer than a majority of the
 * configured nodes alive (itself included) freezes (SIGSTOP) each of its jobs that could be restored
 * elsewhere: a job with a checkpoint held on another node whose home node it cannot see (a home node
 * on its own side never restores it: it is not a majority either). The majority waits before it
 * restores (FailureHandlerInit.restoreDelayMs) so that the minority, which notices the partition
 * as soon as its peers turn suspect, has frozen it first. Once a majority is visible again each
 * frozen job's home node is asked where the job runs: elsewhere → the frozen copy is killed; here
 * (not restored: no majority, the restore failed) → it is continued. A hung daemon cannot fence (its
 * jobs run on): the home node kills the stale copy when the node is back (handler.ts reconcile).
 * What is frozen is kept in the state store (`fenced/<vpid>`): a daemon restarted while its jobs
 * are frozen settles them like its predecessor would have, instead of leaving them stopped for good.
 */
import { majorityOf } from './quorum.js'
import { mayBeRunning } from './lost.js'
import type { ClusterView, PeerRpc } from '../ports.js'
import type { FailureLogger } from './handler.js'
import type { JobStore } from '../jobs/local.js'

/** A local running job that could be restored elsewhere: it has a checkpoint on another node. */
export interface FenceJob {
  readonly vpid: number
  readonly homeNode: string
}

/** The node's jobs as fencing needs them; every method may be called for a job that has ended. */
export interface FenceTarget {
  /** Running jobs of this node with a checkpoint held on another node. */
  restorable(): Promise<FenceJob[]>
  /** Stops every process of the job (they keep their state). */
  freeze(vpid: number): Promise<void>
  /** Continues what `freeze` stopped. */
  thaw(vpid: number): Promise<void>
  /** Kills the job's copy here (it runs elsewhere now). */
  kill(vpid: number): Promise<void>
}

export interface FencerInit {
  readonly rpc: PeerRpc
  readonly view: ClusterView
  /** Names of every configured node. */
  readonly nodes: readonly string[]
  readonly jobs: FenceTarget
  readonly logger: FailureLogger
  /** Where the frozen jobs are noted, so that a restarted daemon settles them; none: memory only. */
  readonly store?: JobStore
}

const fencedKey = (vpid: number): string => `fenced/${String(vpid).padStart(15, '0')}`

export class Fencer {
  /** Frozen jobs → their home node. */
  private readonly frozen = new Map<number, string>()
  private loaded: Promise<void> | undefined

  constructor (private readonly init: FencerInit) {}

  /** Jobs an earlier daemon froze: still stopped (their processes outlived it), to be settled. */
  private async load (): Promise<void> {
    for (const { value } of await this.init.store?.list<{ vpid: number, home: string }>('fenced/') ?? []) {
      this.frozen.set(value.vpid, value.home)
      this.init.logger.warn({ vpid: value.vpid, home: value.home }, 'job frozen (fenced) by the previous daemon: settling it')
    }
  }

  /** vpids frozen now. */
  fenced (): number[] { return [...this.frozen.keys()] }

  isFenced (vpid: number): boolean { return this.frozen.has(vpid) }

  /** One round: fence when in a minority, else settle what was fenced. */
  async tick (signal: AbortSignal): Promise<void> {
    this.loaded ??= this.load().catch((err: unknown) => { this.init.logger.warn({ err: String(err) }, 'could not read the fenced jobs') })
    await this.loaded
    const alive = new Set(this.init.view.nodes().filter(n => n.self || n.state === 'alive').map(n => n.name))
    alive.add(this.init.view.selfName)
    const seen = this.init.nodes.filter(n => alive.has(n)).length
    if (seen < majorityOf(this.init.nodes.length)) await this.fence(alive)
    else if (this.frozen.size > 0) await this.unfence(alive, signal)
  }

  private async fence (alive: ReadonlySet<string>): Promise<void> {
    for (const job of await this.init.jobs.restorable()) {
      if (this.frozen.has(job.vpid) || alive.has(job.homeNode)) continue
      await this.init.store?.put(fencedKey(job.vpid), { vpid: job.vpid, home: job.homeNode })
      await this.init.jobs.freeze(job.vpid)
      this.frozen.set(job.vpid, job.homeNode)
      this.init.logger.warn({ vpid: job.vpid, home: job.homeNode, alive: [...alive] }, 'no majority visible: job frozen (fenced) so that it cannot run twice if the majority restores it elsewhere')
    }
  }

  private async unfence (alive: ReadonlySet<string>, signal: AbortSignal): Promise<void> {
    for (const [vpid, home] of this.frozen) {
      const where = await this.askHome(vpid, home, alive, signal)
      if (where === undefined) continue
      if (where === 'elsewhere') await this.init.jobs.kill(vpid)
      else await this.init.jobs.thaw(vpid)
      this.frozen.delete(vpid)
      await this.init.store?.del(fencedKey(vpid))
      this.init.logger.warn({ vpid, home, where }, where === 'elsewhere' ? 'fenced job runs elsewhere now: this copy killed' : 'fenced job not restored elsewhere: continued')
    }
  }

  /** Where the home node says the job runs; undefined to ask again later. */
  private async askHome (vpid: number, home: string, alive: ReadonlySet<string>, signal: AbortSignal): Promise<'here' | 'elsewhere' | undefined> {
    try {
      const loc = await this.init.rpc.call(home, 'loc.get', { vpid }, { timeoutMs: 3000, signal }) as { node: string, state: string }
      return loc.node !== this.init.view.selfName && mayBeRunning({ vpid, ...loc }) ? 'elsewhere' : 'here'
    } catch {
      // A dead home node restores nothing (only the home node restores): continue the job.
      return alive.has(home) ? undefined : 'here'
    }
  }
}
