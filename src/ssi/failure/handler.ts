/**
 * Node-failure handling for jobs. Every `intervalMs` this node compares its membership view with
 * the configured nodes: a node it sees dead is asked about among the peers it sees alive
 * (`failure.suspects`), and once a majority of the configured cluster agrees (quorum.ts) its jobs
 * are declared lost by their home nodes (lost.ts), each home node for the jobs it launched, and a
 * job with a checkpoint is restored elsewhere through the `restore` hook. A node that comes back
 * (a hung node, a healed partition, a restarted daemon that re-adopted its jobs) is reconciled: its
 * jobs that still run become running again, and a copy that was restored elsewhere meanwhile is
 * killed, so no job runs twice.
 */
import { z } from 'zod'
import { parseParams } from '../../protocol/peer.js'
import { locKey, TERMINAL_STATES } from '../jobs/record.js'
import { confirmedDead, tallyVotes } from './quorum.js'
import { lostKey, lostRecord, mayBeRunning, recoveredKey } from './lost.js'
import type { JobStore } from '../jobs/local.js'
import type { JobRecord } from '../jobs/record.js'
import type { LocationRecord, Recovery } from './lost.js'
import type { ClusterView, NodeView, PeerRpc } from '../ports.js'
import type { Fencer } from './fence.js'

export const SUSPECTS_METHOD = 'failure.suspects'
const suspectsReplySchema = z.object({ dead: z.array(z.string().max(64)).max(4096) }).strict()

export interface FailureLogger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
}

/**
 * Restores a lost job from its last checkpoint on a live node; resolves with where it runs and when
 * the checkpoint was taken, or undefined if the job has no checkpoint.
 */
export type RestoreHook = (record: JobRecord, signal: AbortSignal) => Promise<{ node: string, takenMs: number } | undefined>

export interface FailureHandlerInit {
  readonly rpc: PeerRpc
  readonly view: ClusterView
  readonly store: JobStore
  /** Names of every configured node: the majority is of these. */
  readonly nodes: readonly string[]
  readonly logger: FailureLogger
  /** ms between checks. Default 500. */
  readonly intervalMs?: number
  /** ms after start before a configured node never heard from counts as dead. Default 10 000. */
  readonly startupGraceMs?: number
  readonly restore?: RestoreHook
  /**
   * ms between declaring a node dead and restoring its jobs elsewhere: the minority side freezes
   * (fences) those jobs when it sees its peers suspect (fence.ts); this is its head start. Default 0.
   */
  readonly restoreDelayMs?: number
  /** Fences this node's restorable jobs while it sees no majority (fence.ts); ticked with the checks. */
  readonly fencer?: Fencer
  readonly now?: () => number
}

export class FailureHandler {
  private readonly confirmed = new Set<string>()
  private notAlive = new Set<string>()
  private timer: NodeJS.Timeout | undefined
  private ticking = false
  private readonly startedMs: number
  private readonly now: () => number
  private readonly abort = new AbortController()

  constructor (private readonly init: FailureHandlerInit) {
    this.now = init.now ?? Date.now
    this.startedMs = this.now()
    init.rpc.handle(SUSPECTS_METHOD, async () => ({ dead: this.locallyDead(init.view.nodes()) }))
  }

  start (): void {
    if (this.timer !== undefined) return
    this.timer = setInterval(() => { void this.tick() }, this.init.intervalMs ?? 500)
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.abort.abort(new Error('failure handler stopping'))
  }

  /** Nodes a majority has declared dead (as seen from here). */
  deadNodes (): string[] { return [...this.confirmed] }

  /** Configured nodes this node's own view has dead (or never heard from, after the start-up grace). */
  locallyDead (nodes: readonly NodeView[]): string[] {
    const graceOver = this.now() - this.startedMs >= (this.init.startupGraceMs ?? 10_000)
    return this.init.nodes.filter(name => {
      if (name === this.init.view.selfName) return false
      const n = nodes.find(x => x.name === name)
      return n === undefined ? graceOver : n.state === 'dead'
    })
  }

  /** One round: notice rejoins, then ask the live peers about the nodes seen dead here. */
  async tick (): Promise<void> {
    if (this.ticking) return
    this.ticking = true
    try {
      await this.init.fencer?.tick(this.abort.signal)
      const nodes = this.init.view.nodes()
      this.noticeRejoins(nodes)
      const pending = this.locallyDead(nodes).filter(n => !this.confirmed.has(n))
      if (pending.length === 0) return
      const peers = nodes.filter(n => !n.self && n.state === 'alive').map(n => n.name)
      const views = await Promise.all(peers.map(async p => await this.peerView(p)))
      const votes = tallyVotes(pending, views.filter((v): v is string[] => v !== undefined))
      for (const dead of confirmedDead(votes, this.init.nodes.length)) {
        this.confirmed.add(dead)
        await this.declareDead(dead, votes.get(dead) ?? 0)
      }
    } catch (err) {
      this.init.logger.warn({ err: (err as Error).message }, 'failure check failed')
    } finally {
      this.ticking = false
    }
  }

  private async peerView (peer: string): Promise<string[] | undefined> {
    try {
      const reply = await this.init.rpc.call(peer, SUSPECTS_METHOD, {}, { timeoutMs: 1500, signal: this.abort.signal })
      return parseParams(suspectsReplySchema, reply).dead
    } catch { return undefined }
  }

  /** A node alive again after being dead or unheard of: un-confirm it and reconcile its jobs. */
  private noticeRejoins (nodes: readonly NodeView[]): void {
    const notAlive = new Set(this.init.nodes.filter(name => nodes.find(n => n.name === name)?.state !== 'alive'))
    for (const name of this.notAlive) {
      if (notAlive.has(name)) continue
      this.confirmed.delete(name)
      void this.reconcile(name)
    }
    this.notAlive = notAlive
  }

  /** Marks every job launched here that ran on `node` lost; restores those with a checkpoint. */
  private async declareDead (node: string, votes: number): Promise<void> {
    const reason = `node ${node} died (declared dead by ${votes} of ${this.init.nodes.length} nodes)`
    this.init.logger.warn({ node, votes, of: this.init.nodes.length }, 'majority declared a node dead')
    const lost: JobRecord[] = []
    for (const { value: loc } of await this.init.store.list<LocationRecord>('loc/')) {
      if (loc.node !== node || !mayBeRunning(loc)) continue
      const record = lostRecord(loc, this.init.view.selfName, reason, this.now())
      await this.init.store.put(lostKey(loc.vpid), record)
      await this.init.store.put(locKey(loc.vpid), { ...loc, state: 'lost', record })
      this.init.logger.warn({ vpid: loc.vpid, node }, 'job lost with its node')
      lost.push(record)
    }
    if (this.init.restore === undefined || lost.length === 0) return
    // Not awaited: the checks go on meanwhile, so a node back within the delay is noticed.
    void this.restoreAll(node, lost)
  }

  /** After the fencing head start, restores the lost jobs of `node` unless it is back by then. */
  private async restoreAll (node: string, lost: readonly JobRecord[]): Promise<void> {
    const delay = this.init.restoreDelayMs ?? 0
    if (delay > 0) await new Promise(resolve => setTimeout(resolve, delay).unref())
    for (const record of lost) {
      if (!this.confirmed.has(node) || this.abort.signal.aborted) return // back: reconcile takes the jobs back
      await this.restoreOnce(record)
    }
    // Back during a restore: its copy was not listed as stale when it rejoined; kill it now.
    if (!this.confirmed.has(node)) await this.reconcile(node)
  }

  /** Restores a lost job from its checkpoint, once: the home node is the only one that tries. */
  private async restoreOnce (record: JobRecord): Promise<void> {
    try {
      const r = await this.init.restore?.(record, this.abort.signal)
      if (r === undefined) return
      const recovery: Recovery = { fromNode: record.node, node: r.node, takenMs: r.takenMs, atMs: this.now() }
      await this.init.store.put(recoveredKey(record.vpid), recovery)
      this.init.logger.info({ vpid: record.vpid, ...recovery }, 'lost job restored from its checkpoint')
    } catch (err) {
      this.init.logger.warn({ vpid: record.vpid, err: (err as Error).message }, 'could not restore a lost job from its checkpoint')
    }
  }

  /** Whether `node` says it runs vpid now (an unreachable node or an unknown job: no). */
  private async runsOn (node: string, vpid: number): Promise<boolean> {
    const rec = await this.init.rpc.call(node, 'job.get', { vpid }, { timeoutMs: 5000, signal: this.abort.signal }).catch(() => undefined) as JobRecord | undefined
    return rec !== undefined && rec.node === node && !TERMINAL_STATES.has(rec.state)
  }

  /**
   * Ends the stale copy of vpid on `node`: recorded there as moved to `runsOn` (its waiters follow
   * the job there), or, from a node that lacks that method, merely killed.
   */
  private async supersede (node: string, vpid: number, runsOn: string): Promise<void> {
    const opts = { timeoutMs: 5000, signal: this.abort.signal }
    await this.init.rpc.call(node, 'job.supersede', { vpid, node: runsOn }, opts).catch(async () => {
      await this.init.rpc.call(node, 'job.signal', { vpid, signal: 'SIGKILL', asUid: 0 }, opts).catch(() => {})
    })
  }

  /**
   * `node` is back: for each of its jobs launched here, take back a lost record (the job survived)
   * or, if the job runs elsewhere now (restored from a checkpoint), kill this stale copy.
   */
  async reconcile (node: string): Promise<void> {
    let jobs: JobRecord[]
    try {
      jobs = await this.init.rpc.call(node, 'job.list', {}, { timeoutMs: 5000, signal: this.abort.signal }) as JobRecord[]
    } catch (err) {
      this.init.logger.warn({ node, err: (err as Error).message }, 'could not reconcile a rejoined node')
      return
    }
    for (const job of jobs) {
      if (job.homeNode !== this.init.view.selfName || job.node !== node) continue
      const loc = await this.init.store.get<LocationRecord>(locKey(job.vpid))
      if (loc !== undefined && loc.node !== node && mayBeRunning(loc) && !TERMINAL_STATES.has(job.state)) {
        if (await this.runsOn(loc.node, job.vpid)) {
          this.init.logger.warn({ vpid: job.vpid, stale: node, runs: loc.node }, 'killing a stale copy of a job that runs elsewhere now')
          await this.supersede(node, job.vpid, loc.node)
          continue
        }
        // Not there: the job migrated while this node could not be told (it was down), so this is
        // its only copy and the location here is what was stale.
        this.init.logger.info({ vpid: job.vpid, was: loc.node, node }, 'a job moved while its home node was away: location updated')
      } else if (loc !== undefined && loc.node !== node) continue
      await this.init.store.put(locKey(job.vpid), { vpid: job.vpid, node, state: job.state, record: job })
      await this.init.store.del(lostKey(job.vpid))
      if (loc?.state === 'lost') this.init.logger.info({ vpid: job.vpid, node, state: job.state }, 'lost job is back with its node')
    }
  }
}
