/**
 * The cluster-wide process namespace: launch anywhere, and find, list, signal, wait for and read
 * any job from any node by its vpid. A vpid's home node (from the number) knows where it runs now;
 * the executing node holds the job itself (LocalJobs). Node-to-node calls go through PeerRpc.
 */
import { leastLoaded, RecentPlacements } from '../placement.js'
import { homeNodeId } from '../vpid.js'
import { NoNodeAvailableError, UnknownNodeError, VpidNotFoundError } from './errors.js'
import { registerJobPeerHandlers } from './peer-handlers.js'
import { locKey } from './record.js'
import type { LocalJobs, JobSnapshot, JobStore } from './local.js'
import type { ExitInfo, JobLimits, JobOwner, JobRecord } from './record.js'
import type { PlacementPolicy } from '../placement.js'
import type { ClusterView, PeerRpc } from '../ports.js'
import type { VpidAllocator } from '../vpid.js'
import type { OutputEvent } from '../../protocol/jobs.js'

/** A wait that may last as long as the job: the longest timer Node allows (~24 days). */
export const FOREVER_MS = 2 ** 31 - 1

export interface RunRequest {
  readonly argv: readonly string[]
  readonly env: Readonly<Record<string, string>>
  readonly cwd: string
  readonly limits: JobLimits
  readonly stdin: boolean
  /** Force a node instead of asking the placement policy. */
  readonly node?: string
}

export interface PsFilter {
  readonly node?: string
  readonly user?: string
  readonly state?: string
}

export interface ClusterJobsInit {
  readonly rpc: PeerRpc
  readonly view: ClusterView
  readonly local: LocalJobs
  readonly store: JobStore
  readonly allocator: VpidAllocator
  readonly policy?: PlacementPolicy
  readonly logger: { warn(obj: object, msg?: string): void }
}

export class ClusterJobs {
  private readonly recent = new RecentPlacements(2000)
  private readonly policy: PlacementPolicy

  constructor (private readonly init: ClusterJobsInit) {
    this.policy = init.policy ?? leastLoaded
    registerJobPeerHandlers(init.rpc, init.local, init.store)
  }

  /** Chooses a node, allocates a vpid, records where it goes and starts it there. */
  async run (req: RunRequest, owner: JobOwner, signal?: AbortSignal): Promise<JobRecord> {
    const node = this.chooseNode(req)
    const vpid = await this.init.allocator.allocate()
    await this.init.store.put(locKey(vpid), { node, state: 'starting' })
    this.recent.add(node)
    const params = { vpid, owner, argv: req.argv, env: req.env, cwd: req.cwd, limits: req.limits, stdin: req.stdin, homeNode: this.init.view.selfName }
    try {
      return await this.init.rpc.call(node, 'job.start', params, { signal }) as JobRecord
    } catch (err) {
      await this.init.store.put(locKey(vpid), { node, state: 'failed' })
      throw err
    }
  }

  private chooseNode (req: RunRequest): string {
    const nodes = this.init.view.nodes()
    if (req.node !== undefined) {
      const n = nodes.find(x => x.name === req.node)
      if (n === undefined) throw new UnknownNodeError(`unknown node "${req.node}" (nodes: ${nodes.map(x => x.name).join(', ')})`)
      if (n.state !== 'alive') throw new NoNodeAvailableError(`node ${req.node} is ${n.state}`)
      return n.name
    }
    const picked = this.policy.pick(nodes, { memoryBytes: req.limits.memoryBytes }, this.recent.counts())
    if (picked === undefined) throw new NoNodeAvailableError('no alive node can take the job (memory limit larger than any node has free?)')
    return picked
  }

  /** The node a vpid runs on now (or ran on last). */
  async locate (vpid: number, signal?: AbortSignal): Promise<string> {
    if (this.init.local.has(vpid) && this.init.local.get(vpid).node === this.init.view.selfName) return this.init.view.selfName
    const homeId = homeNodeId(vpid)
    const home = this.init.view.nodes().find(n => n.id === homeId)
    if (home === undefined) throw new VpidNotFoundError(`no job with vpid ${vpid}: its home node (id ${homeId}) is not in the cluster`)
    const loc = await this.init.rpc.call(home.name, 'loc.get', { vpid }, { signal, timeoutMs: 5000 }) as { node: string }
    return loc.node
  }

  async inspect (vpid: number, signal?: AbortSignal): Promise<JobSnapshot> {
    const node = await this.locate(vpid, signal)
    return await this.init.rpc.call(node, 'job.get', { vpid }, { signal, timeoutMs: 5000 }) as JobSnapshot
  }

  /** Every job on every reachable node, filtered, by vpid. Unreachable nodes are reported, not fatal. */
  async ps (filter: PsFilter, signal?: AbortSignal): Promise<{ jobs: JobSnapshot[], unreachable: string[] }> {
    const nodes = this.init.view.nodes().filter(n => n.state !== 'dead' && (filter.node === undefined || n.name === filter.node))
    const unreachable: string[] = []
    const lists = await Promise.all(nodes.map(async n => {
      try {
        return await this.init.rpc.call(n.name, 'job.list', {}, { signal, timeoutMs: 3000 }) as JobSnapshot[]
      } catch (err) {
        this.init.logger.warn({ node: n.name, err: (err as Error).message }, 'ps: node did not answer')
        unreachable.push(n.name)
        return []
      }
    }))
    const jobs = lists.flat()
      .filter(j => (filter.user === undefined || j.owner.user === filter.user || String(j.owner.uid) === filter.user) &&
        (filter.state === undefined || j.state === filter.state))
      .sort((a, b) => a.vpid - b.vpid)
    return { jobs, unreachable }
  }

  async kill (vpid: number, signalName: NodeJS.Signals, asUid: number, signal?: AbortSignal): Promise<string> {
    const node = await this.locate(vpid, signal)
    await this.init.rpc.call(node, 'job.signal', { vpid, signal: signalName, asUid }, { signal, timeoutMs: 5000 })
    return node
  }

  /** Resolves with the job's final record when it has ended (following it if it moves). */
  async wait (vpid: number, signal?: AbortSignal): Promise<JobRecord & { exit?: ExitInfo }> {
    let node = await this.locate(vpid, signal)
    for (;;) {
      const rec = await this.init.rpc.call(node, 'job.wait', { vpid }, { signal, timeoutMs: FOREVER_MS }) as JobRecord
      if (rec.node === node && rec.state !== 'moved') return rec
      // It moved: its record there says where to (fresher than the home node may be yet).
      node = rec.state === 'moved' ? rec.node : await this.locate(vpid, signal)
    }
  }

  /**
   * Streams the job's output (stdout and stderr, each in order); with `follow`, until it ends.
   * Resolves with the job's record as its node knew it when the output ended: with `follow`, its
   * final record (unless it was lost meanwhile), so an attached caller needs no `wait` after it.
   * `knownNode`: where the job runs, when the caller knows (saves asking its home node).
   */
  async output (vpid: number, follow: boolean, onChunk: (e: OutputEvent) => Promise<void> | void, signal?: AbortSignal, knownNode?: string): Promise<JobRecord | undefined> {
    // A migrated job's output files start with a copy of what it wrote before: offsets carry over.
    const offsets = { 1: 0, 2: 0 }
    let node = knownNode ?? await this.locate(vpid, signal)
    for (;;) {
      const done = await this.init.rpc.stream(node, 'job.output', { vpid, follow, stdoutOffset: offsets[1], stderrOffset: offsets[2] }, {
        signal,
        timeoutMs: follow ? FOREVER_MS : 60_000,
        onEvent: async (raw) => {
          const e = raw as OutputEvent
          offsets[e.fd] += e.data.byteLength
          await onChunk(e)
        }
      })
      // Older nodes answer without the record: ask for it.
      const rec: JobRecord | undefined = (done as { record?: JobRecord } | undefined)?.record ??
        await this.init.rpc.call(node, 'job.get', { vpid }, { signal, timeoutMs: 5000 }).catch(() => undefined) as JobRecord | undefined
      if (rec === undefined || (rec.state !== 'moved' && rec.state !== 'migrating')) return rec
      node = rec.state === 'moved' ? rec.node : await this.waitMoved(node, vpid, signal)
    }
  }

  /** Where a job that is migrating from `node` ends up (its node again if the migration failed). */
  private async waitMoved (node: string, vpid: number, signal?: AbortSignal): Promise<string> {
    for (;;) {
      const rec = await this.init.rpc.call(node, 'job.get', { vpid }, { signal, timeoutMs: 5000 }) as JobRecord
      if (rec.state !== 'migrating') return rec.state === 'moved' ? rec.node : node
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }

  /** Migrates the job (stop-and-copy) to `target`, as `asUid`; the source node runs it. */
  async migrate (vpid: number, target: string, asUid: number, signal?: AbortSignal): Promise<unknown> {
    const t = this.init.view.nodes().find(n => n.name === target)
    if (t === undefined) throw new UnknownNodeError(`unknown node "${target}"`)
    if (t.state !== 'alive') throw new NoNodeAvailableError(`node ${target} is ${t.state}`)
    const node = await this.locate(vpid, signal)
    return await this.init.rpc.call(node, 'migrate.start', { vpid, target, asUid }, { signal, timeoutMs: 10 * 60_000 })
  }

  async stdin (vpid: number, asUid: number, data: Uint8Array | undefined, eof: boolean, node?: string): Promise<void> {
    await this.init.rpc.call(node ?? await this.locate(vpid), 'job.stdin', { vpid, asUid, data, eof }, { timeoutMs: 30_000 })
  }

  /** Keeps the home node's location record current when a local job changes state. */
  async reportToHome (job: JobRecord): Promise<void> {
    if (job.state === 'moved') return // the node it moved to reports it
    const loc = { vpid: job.vpid, node: job.node, state: job.state }
    try {
      if (job.homeNode === this.init.view.selfName) await this.init.store.put(locKey(job.vpid), loc)
      else await this.init.rpc.call(job.homeNode, 'loc.set', loc, { timeoutMs: 5000 })
    } catch (err) {
      this.init.logger.warn({ vpid: job.vpid, home: job.homeNode, err: (err as Error).message }, 'could not update the home node')
    }
  }
}
