/**
 * The cluster-wide process namespace: launch anywhere, and find, list, signal, wait for and read
 * any job from any node by its vpid. A vpid's home node (from the number) knows where it runs now;
 * the executing node holds the job itself (LocalJobs). Node-to-node calls go through PeerRpc.
 */
import { leastLoaded, RecentPlacements } from '../placement.js'
import { homeNodeId } from '../vpid.js'
import { JobStateError, NoNodeAvailableError, UnknownNodeError, VpidNotFoundError, isVpidNotFound } from './errors.js'
import { registerJobPeerHandlers } from './peer-handlers.js'
import { locKey, TERMINAL_STATES } from './record.js'
import type { LocalJobs, JobSnapshot, JobStore } from './local.js'
import type { ExitInfo, JobLimits, JobOwner, JobRecord } from './record.js'
import type { PlacementPolicy } from '../placement.js'
import type { ClusterView, PeerRpc } from '../ports.js'
import type { VpidAllocator } from '../vpid.js'
import type { OutputEvent } from '../../protocol/jobs.js'
import type { Recovery } from '../failure/lost.js'

/** A wait that may last as long as the job: the longest timer Node allows (~24 days). */
export const FOREVER_MS = 2 ** 31 - 1
/** How often a follower of a checkpointed (stopped) job asks whether it was restored. */
const RESTORE_POLL_MS = 1000
/** How long a node may take to start a job (job.run's `started`), as a job.start call may (PeerRpc's default). */
const START_TIMEOUT_MS = 30_000
/** A stdin chunk chases a job across at most this many moves before giving up. */
const MAX_STDIN_HOPS = 16

export interface RunRequest {
  readonly argv: readonly string[]
  readonly env: Readonly<Record<string, string>>
  readonly cwd: string
  readonly limits: JobLimits
  readonly stdin: boolean
  /** Force a node instead of asking the placement policy. */
  readonly node?: string
}

/** A job's node and the parameters of its job.start. */
interface Placed {
  readonly node: string
  readonly params: {
    readonly vpid: number, readonly owner: JobOwner, readonly argv: readonly string[], readonly env: Readonly<Record<string, string>>
    readonly cwd: string, readonly limits: JobLimits, readonly stdin: boolean, readonly homeNode: string
  }
}

/** What an attached run (`runAttached`) tells its caller, in this order. */
export interface AttachedRunHooks {
  /** The job runs (its node's record); no output is passed on before this resolves. */
  readonly started: (job: JobRecord) => Promise<void>
  readonly onChunk: (e: OutputEvent) => Promise<void> | void
  readonly onCheckpointed?: (rec: JobRecord) => Promise<void> | void
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
    return await this.startPlaced(await this.place(req, owner), signal)
  }

  /**
   * `run` and then `output` (follow) of the job, in one peer call where its node has `job.run`:
   * `started` is awaited before any output is passed on. Resolves as `output` does.
   */
  async runAttached (req: RunRequest, owner: JobOwner, hooks: AttachedRunHooks, signal?: AbortSignal): Promise<JobRecord | undefined> {
    const placed = await this.place(req, owner)
    const offsets = { 1: 0, 2: 0 }
    let job: JobRecord | undefined
    const onEvent = async (raw: unknown): Promise<void> => {
      const started = (raw as { started?: JobRecord }).started
      if (job === undefined && started !== undefined) {
        job = started
        await this.keepStartedRecord(started)
        await hooks.started(started)
        return
      }
      const e = raw as OutputEvent
      offsets[e.fd] += e.data.byteLength
      await hooks.onChunk(e)
    }
    const done = await this.streamRun(placed, onEvent, () => job !== undefined, signal)
    if (job === undefined) { // an older node: job.start, then job.output
      job = await this.startPlaced(placed, signal)
      await hooks.started(job)
    }
    return await this.followOutput(job.vpid, job.node, offsets, true, hooks.onChunk, signal, hooks.onCheckpointed, done)
  }

  /**
   * The job.run call: its answer, or undefined if the node does not know the method. A failed start
   * is recorded; the start has START_TIMEOUT_MS, what follows only the caller's signal.
   */
  private async streamRun ({ node, params }: Placed, onEvent: (e: unknown) => Promise<void>, started: () => boolean, signal?: AbortSignal): Promise<unknown> {
    const deadline = AbortSignal.timeout(START_TIMEOUT_MS)
    const either = signal === undefined ? deadline : AbortSignal.any([signal, deadline])
    const call = new AbortController()
    const onAbort = (): void => { if (!started() || signal?.aborted === true) call.abort(either.reason) }
    either.addEventListener('abort', onAbort, { once: true })
    try {
      const done = await this.init.rpc.stream(node, 'job.run', params, { signal: call.signal, timeoutMs: FOREVER_MS, onEvent })
      if (!started()) throw new JobStateError(`node ${node} ended job.run of ${params.vpid} without starting it`)
      return done
    } catch (err) {
      if (started()) throw err
      if ((err as { remoteName?: string }).remoteName === 'UnknownMethodError') return undefined
      await this.init.store.put(locKey(params.vpid), { vpid: params.vpid, node, state: 'failed' })
      throw err
    } finally {
      either.removeEventListener('abort', onAbort)
    }
  }

  /** Where the job goes and its vpid, recorded as starting there, and the parameters of job.start. */
  private async place (req: RunRequest, owner: JobOwner): Promise<Placed> {
    const node = this.chooseNode(req)
    const vpid = await this.init.allocator.allocate()
    await this.init.store.put(locKey(vpid), { vpid, node, state: 'starting' })
    this.recent.add(node)
    return { node, params: { vpid, owner, argv: req.argv, env: req.env, cwd: req.cwd, limits: req.limits, stdin: req.stdin, homeNode: this.init.view.selfName } }
  }

  private async startPlaced ({ node, params }: Placed, signal?: AbortSignal): Promise<JobRecord> {
    try {
      const job = await this.init.rpc.call(node, 'job.start', params, { signal }) as JobRecord
      await this.keepStartedRecord(job)
      return job
    } catch (err) {
      await this.init.store.put(locKey(params.vpid), { vpid: params.vpid, node, state: 'failed' })
      throw err
    }
  }

  /**
   * The home keeps the started job's record (a local write, no peer call), so that if its node dies
   * the job can be listed lost with its command and owner. Unless an update already came in.
   */
  private async keepStartedRecord (job: JobRecord): Promise<void> {
    const loc = await this.init.store.get<{ state: string }>(locKey(job.vpid))
    if (loc?.state === 'starting') await this.init.store.put(locKey(job.vpid), { vpid: job.vpid, node: job.node, state: job.state, record: job })
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
    return (await this.resolve(vpid, signal)).node
  }

  /**
   * Where a vpid is, from its home node's location record; `lost` is its lost record if its node
   * died. When the home node is dead or does not answer, every live node is asked instead.
   */
  private async resolve (vpid: number, signal?: AbortSignal): Promise<{ node: string, lost?: JobRecord, recovered?: Recovery }> {
    // A job running here is here; a local record of an ended or lost run may be stale (restored elsewhere).
    if (this.init.local.has(vpid) && this.init.local.get(vpid).node === this.init.view.selfName && !TERMINAL_STATES.has(this.init.local.get(vpid).state)) return { node: this.init.view.selfName }
    const homeId = homeNodeId(vpid)
    const home = this.init.view.nodes().find(n => n.id === homeId)
    if (home !== undefined && home.state !== 'dead') {
      try {
        const loc = await this.init.rpc.call(home.name, 'loc.get', { vpid }, { signal, timeoutMs: 5000 }) as { node: string, state?: string, lost?: JobRecord, recovered?: Recovery }
        const where = { node: loc.node, ...(loc.recovered === undefined ? {} : { recovered: loc.recovered }) }
        if (loc.state !== 'lost' || loc.lost === undefined) return where
        return await this.isBack(vpid, loc.node, signal) ? where : { ...where, lost: loc.lost }
      } catch (err) {
        if (isVpidNotFound(err) || signal?.aborted === true) throw err
      }
    }
    return { node: await this.findOnLiveNodes(vpid, home?.name ?? `id ${homeId}`, signal) }
  }

  /** Whether a job its home has as lost runs on its node again (the home may not have reconciled yet). */
  private async isBack (vpid: number, node: string, signal?: AbortSignal): Promise<boolean> {
    if (this.init.view.nodes().find(n => n.name === node)?.state !== 'alive') return false
    const rec = await this.init.rpc.call(node, 'job.get', { vpid }, { signal, timeoutMs: 3000 }).catch(() => undefined) as JobRecord | undefined
    return rec !== undefined && !TERMINAL_STATES.has(rec.state)
  }

  /** Asks every live node for the job: the one running it (or, else, one that ran it last) wins. */
  private async findOnLiveNodes (vpid: number, home: string, signal?: AbortSignal): Promise<string> {
    const nodes = this.init.view.nodes().filter(n => n.state !== 'dead')
    const found = await Promise.all(nodes.map(async n => {
      try { return await this.init.rpc.call(n.name, 'job.get', { vpid }, { signal, timeoutMs: 3000 }) as JobRecord } catch { return undefined }
    }))
    const records = found.filter((r): r is JobRecord => r !== undefined && r.state !== 'moved')
    const best = records.find(r => !TERMINAL_STATES.has(r.state)) ?? records[0]
    if (best === undefined) throw new VpidNotFoundError(`no job with vpid ${vpid}: its home node ${home} does not answer and no live node has it`)
    return best.node
  }

  async inspect (vpid: number, signal?: AbortSignal): Promise<JobSnapshot & { recovered?: Recovery }> {
    const loc = await this.resolve(vpid, signal)
    if (loc.lost !== undefined) return { ...loc.lost, cpuPercent: 0, rssBytes: 0 }
    const job = await this.init.rpc.call(loc.node, 'job.get', { vpid }, { signal, timeoutMs: 5000 }) as JobSnapshot
    return loc.recovered === undefined ? job : { ...job, recovered: loc.recovered }
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
    const jobs = dedupeByVpid(lists.flat())
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

  /**
   * Resolves with the job's final record when it has ended (following it if it moves). If its node
   * stops answering, waits until the node is back or the majority declares the job lost.
   */
  async wait (vpid: number, signal?: AbortSignal): Promise<JobRecord & { exit?: ExitInfo }> {
    let moved: string | undefined
    for (;;) {
      const loc = moved === undefined ? await this.resolve(vpid, signal) : { node: moved }
      // Lost is the home's belief; a node back alive (a restart longer than failure detection) knows better.
      if (loc.lost !== undefined && this.init.view.nodes().find(n => n.name === loc.node)?.state !== 'alive') return loc.lost
      let rec: JobRecord
      try {
        rec = await this.init.rpc.call(loc.node, 'job.wait', { vpid }, { signal, timeoutMs: FOREVER_MS }) as JobRecord
      } catch (err) {
        if (loc.lost !== undefined && signal?.aborted !== true) return loc.lost
        if (signal?.aborted === true || isVpidNotFound(err)) throw err
        moved = undefined
        await new Promise(resolve => setTimeout(resolve, 500))
        continue
      }
      if (rec.node === loc.node && rec.state !== 'moved') return rec
      // It moved: its record there says where to (fresher than the home node may be yet).
      moved = rec.state === 'moved' ? rec.node : undefined
    }
  }

  /**
   * Streams the job's output (stdout and stderr, each in order); with `follow`, until it ends.
   * Resolves with the job's record as its node knew it when the output ended: with `follow`, its
   * final record (unless it was lost meanwhile), so an attached caller needs no `wait` after it.
   * `knownNode`: where the job runs, when the caller knows (saves asking its home node).
   * A follower of a job stopped by a checkpoint hears of it (`onCheckpointed`) and follows on: the
   * job is not over, and its output continues (same offsets) once `ssi restore` brings it back.
   */
  async output (vpid: number, follow: boolean, onChunk: (e: OutputEvent) => Promise<void> | void, signal?: AbortSignal, knownNode?: string, onCheckpointed?: (rec: JobRecord) => Promise<void> | void): Promise<JobRecord | undefined> {
    // A migrated job's output files start with a copy of what it wrote before: offsets carry over.
    const node = knownNode ?? await this.locate(vpid, signal)
    return await this.followOutput(vpid, node, { 1: 0, 2: 0 }, follow, onChunk, signal, onCheckpointed)
  }

  /** `output` from `offsets` on `node`; `firstDone`: the answer of a first leg already streamed (job.run). */
  private async followOutput (vpid: number, from: string, offsets: Record<1 | 2, number>, follow: boolean, onChunk: (e: OutputEvent) => Promise<void> | void, signal?: AbortSignal, onCheckpointed?: (rec: JobRecord) => Promise<void> | void, firstDone?: unknown): Promise<JobRecord | undefined> {
    let node = from
    let pending = firstDone
    for (;;) {
      const done = pending ?? await this.init.rpc.stream(node, 'job.output', { vpid, follow, stdoutOffset: offsets[1], stderrOffset: offsets[2] }, {
        signal,
        timeoutMs: follow ? FOREVER_MS : 60_000,
        onEvent: async (raw) => {
          const e = raw as OutputEvent
          offsets[e.fd] += e.data.byteLength
          await onChunk(e)
        }
      })
      pending = undefined
      // Older nodes answer without the record: ask for it.
      const rec: JobRecord | undefined = (done as { record?: JobRecord } | undefined)?.record ??
        await this.init.rpc.call(node, 'job.get', { vpid }, { signal, timeoutMs: 5000 }).catch(() => undefined) as JobRecord | undefined
      if (rec?.state === 'checkpointed' && follow) {
        await onCheckpointed?.(rec)
        node = await this.waitRestored(node, vpid, signal)
        continue
      }
      if (rec === undefined || (rec.state !== 'moved' && rec.state !== 'migrating')) return rec
      node = rec.state === 'moved' ? rec.node : await this.waitMoved(node, vpid, signal)
    }
  }

  /** Where a job checkpointed (stopped) on `node` runs again once restored: there, or where it moved. */
  private async waitRestored (node: string, vpid: number, signal?: AbortSignal): Promise<string> {
    for (;;) {
      await new Promise(resolve => setTimeout(resolve, RESTORE_POLL_MS))
      signal?.throwIfAborted()
      const rec = await this.init.rpc.call(node, 'job.get', { vpid }, { signal, timeoutMs: 5000 }).catch((err: unknown) => {
        if (signal?.aborted === true || isVpidNotFound(err)) throw err
        return undefined // its node restarting: ask again
      }) as JobRecord | undefined
      if (rec === undefined || rec.state === 'checkpointed') continue
      return rec.state === 'moved' ? rec.node : node
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

  /**
   * Migrates the job to `target`, as `asUid`; the source node runs it. `mode` (default stop-copy)
   * and the source's progress events (`onEvent`) pass through.
   */
  async migrate (vpid: number, target: string, asUid: number, signal?: AbortSignal, opts: { mode?: string, onEvent?: (e: unknown) => Promise<void> | void } = {}): Promise<unknown> {
    const t = this.init.view.nodes().find(n => n.name === target)
    if (t === undefined) throw new UnknownNodeError(`unknown node "${target}"`)
    if (t.state !== 'alive') throw new NoNodeAvailableError(`node ${target} is ${t.state}`)
    const node = await this.locate(vpid, signal)
    const params = opts.mode === undefined ? { vpid, target, asUid } : { vpid, target, asUid, mode: opts.mode }
    return await this.init.rpc.stream(node, 'migrate.start', params, { signal, timeoutMs: 10 * 60_000, onEvent: opts.onEvent ?? (() => {}) })
  }

  /**
   * Writes to the job's stdin on `node` (default: where it runs); if it moved meanwhile, the bytes
   * that node did not take go on to the next one. Resolves with the node that took the last byte,
   * so the caller sends its next chunk there directly. No deadline: a job may leave its input
   * unread for as long as it likes (back-pressure), or be migrating; a dead node fails the call.
   */
  async stdin (vpid: number, asUid: number, data: Uint8Array | undefined, eof: boolean, node?: string): Promise<string> {
    let at = node ?? await this.locate(vpid)
    let rest = data ?? new Uint8Array(0)
    for (let hops = 0; ; hops++) {
      const r = await this.init.rpc.call(at, 'job.stdin', { vpid, asUid, data: rest, eof }, { timeoutMs: FOREVER_MS }) as { written?: number, movedTo?: string } | undefined
      if (r?.movedTo === undefined) return at
      if (hops >= MAX_STDIN_HOPS) throw new JobStateError(`job ${vpid} keeps moving: its stdin could not be delivered`)
      rest = rest.subarray(r.written ?? 0)
      at = r.movedTo
    }
  }

  /** Keeps the home node's location record current when a local job changes state. */
  async reportToHome (job: JobRecord): Promise<void> {
    if (job.state === 'moved') return // the node it moved to reports it
    const loc = { vpid: job.vpid, node: job.node, state: job.state, record: job }
    try {
      if (job.homeNode === this.init.view.selfName) await this.init.store.put(locKey(job.vpid), loc)
      else await this.init.rpc.call(job.homeNode, 'loc.set', loc, { timeoutMs: 5000 })
    } catch (err) {
      this.init.logger.warn({ vpid: job.vpid, home: job.homeNode, err: (err as Error).message }, 'could not update the home node')
    }
  }
}

/** One row per vpid: a job listed by several nodes (a lost record and the node that has it back) shows its live copy. */
function dedupeByVpid (jobs: JobSnapshot[]): JobSnapshot[] {
  const rank = (j: JobSnapshot): number => j.state === 'lost' ? 0 : TERMINAL_STATES.has(j.state) ? 1 : 2
  const best = new Map<number, JobSnapshot>()
  for (const j of jobs) {
    const seen = best.get(j.vpid)
    if (seen === undefined || rank(j) > rank(seen)) best.set(j.vpid, j)
  }
  return [...best.values()]
}
