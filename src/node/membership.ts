/**
 * Membership and failure detection. Every node sends a heartbeat (identity + load) to every
 * connected peer on a long-lived heartbeat link (./heartbeat-links.ts); a peer unheard for
 * `suspectAfterMs` is suspect, for `deadAfterMs` dead. A dropped connection is checked at once by
 * re-dialling: a killed node refuses and is dead within milliseconds, a hung one keeps the TCP port
 * open and is caught by the heartbeat timeout. Dead and not-yet-seen nodes are re-dialled every
 * `redialMs`, so restarted nodes and healed partitions rejoin. Heartbeats also list the addresses
 * of the sender's live peers, so a node that only knows a bootstrap address finds everyone.
 */
import { multiaddr } from '@multiformats/multiaddr'
import { decodeHeartbeat, encodeHeartbeat, MAX_HEARTBEAT_BYTES, MAX_HEARTBEAT_PEERS, PEER_PROTOCOL_VERSION } from '../protocol/peer.js'
import { alignedInterval } from './aligned-timer.js'
import { HeartbeatLinks } from './heartbeat-links.js'
import type { Heartbeat } from '../protocol/peer.js'
import type { AlignedTimer } from './aligned-timer.js'
import type { FailureDetectionConfig, GossipConfig, NodeConfig } from './config.js'
import type { NodeHost } from './host.js'
import type { LoadSample } from './load.js'
import type { Logger } from './logger.js'
import type { PeerId } from '@libp2p/interface'

export type MemberState = 'alive' | 'suspect' | 'dead'

export interface Member {
  readonly name: string
  readonly id: number
  readonly peerId: string
  readonly addresses: readonly string[]
  readonly state: MemberState
  readonly self: boolean
  readonly load: Heartbeat['load']
  readonly memory: Heartbeat['memory']
  readonly jobs: number
  /** Local receive time (epoch ms) of the last heartbeat; for the local node, now. */
  readonly lastSeenMs: number
  readonly bootMs: number
}

/** Dispatched as 'member:state' when a member joins, becomes suspect, dies or comes back. */
export interface MemberStateChange { readonly member: Member, readonly previous: MemberState | undefined }

export interface MembershipInit {
  readonly cluster: string
  readonly self: NodeConfig
  readonly nodes: readonly NodeConfig[]
  readonly bootstrap: readonly string[]
  readonly gossip: GossipConfig
  readonly failure: FailureDetectionConfig
  readonly sampleLoad: () => LoadSample
  readonly jobCount: () => number
  readonly logger: Logger
  readonly now?: () => number
}

/** Most members tracked: far above any real cluster, so a peer making up names cannot grow it without bound. */
export const MAX_MEMBERS = 4096

type MutableMember = { -readonly [K in keyof Member]: Member[K] }
type TrackedMember = MutableMember & { seqSeen: number }

export class Membership extends EventTarget {
  private readonly members = new Map<string, TrackedMember>()
  private readonly timers: AlignedTimer[] = []
  /** The one sweep timer, armed for the earliest moment a member can change state (`sweepDue`). */
  private sweepTimer: NodeJS.Timeout | undefined
  private sweepDue = Infinity
  private readonly links: HeartbeatLinks
  /** Addresses of live members that peers told us about (discovery beyond the config), with when. */
  private readonly learned = new Map<string, number>()
  private readonly bootMs: number
  private readonly now: () => number
  private readonly dialing = new Set<string>()
  /** Who answered at each address we dialled: lets re-dials skip peers we are connected to. */
  private readonly peerAt = new Map<string, string>()
  private readonly warnedKeyMismatch = new Set<string>()
  private seq = 0
  private lastLoad: LoadSample | undefined
  private started = false
  private announceSoon: NodeJS.Timeout | undefined

  constructor (private readonly host: NodeHost, private readonly init: MembershipInit) {
    super()
    this.now = init.now ?? Date.now
    this.bootMs = this.now()
    this.links = new HeartbeatLinks({
      host,
      protocol: `/ssi/${init.cluster}/heartbeat/${PEER_PROTOCOL_VERSION}`,
      // The link only bounds memory; decodeHeartbeat enforces MAX_HEARTBEAT_BYTES, so an oversized
      // heartbeat is dropped with a logged reason like any invalid one, and the link stays up.
      maxFrameBytes: 1024 * 1024,
      openTimeoutMs: init.failure.dialTimeoutMs,
      onFrame: this.onFrame,
      onLinked: this.onLinked,
      logger: init.logger
    })
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await this.links.start()
    this.host.addEventListener('peer:disconnect', this.onDisconnect)
    // Heartbeats and re-dials on wall-clock multiples: peers' heartbeats then arrive together and an
    // idle daemon wakes about once a period (./aligned-timer.ts). Sweeps run when a deadline is due.
    this.timers.push(alignedInterval(this.init.gossip.heartbeatMs, () => { this.beat() }, this.now))
    this.timers.push(alignedInterval(this.init.failure.redialMs, () => { this.redialAll() }, this.now))
    this.beat()
    this.redialAll()
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.timers.splice(0).forEach(t => { t.stop() })
    clearTimeout(this.sweepTimer)
    this.sweepTimer = undefined
    clearTimeout(this.announceSoon)
    this.host.removeEventListener('peer:disconnect', this.onDisconnect)
    await this.links.stop()
  }

  /** Every known member, the local node first. */
  list (): Member[] {
    return [this.selfMember(), ...[...this.members.values()].sort((a, b) => a.id - b.id)]
  }

  /** The name of the member with this PeerId (self included), without building member records: asked for every peer call. */
  nameOf (peerId: string): string | undefined {
    if (peerId === this.host.peerId.toString()) return this.init.self.name
    let found: TrackedMember | undefined // the lowest id, as list().find() gave
    for (const m of this.members.values()) if (m.peerId === peerId && (found === undefined || m.id < found.id)) found = m
    return found?.name
  }

  get (name: string): Member | undefined {
    return name === this.init.self.name ? this.selfMember() : this.members.get(name)
  }

  private selfMember (): Member {
    const load = this.lastLoad
    return {
      name: this.init.self.name,
      id: this.init.self.id,
      peerId: this.host.peerId.toString(),
      addresses: this.host.getMultiaddrs().map(String),
      state: 'alive',
      self: true,
      load: { runQueue: load?.runQueue ?? 0, load1: load?.load1 ?? 0, load5: load?.load5 ?? 0, load15: load?.load15 ?? 0, cpus: load?.cpus ?? 1 },
      memory: { freeBytes: load?.freeBytes ?? 0, totalBytes: load?.totalBytes ?? 0 },
      jobs: this.init.jobCount(),
      lastSeenMs: this.now(),
      bootMs: this.bootMs
    }
  }

  private beat (): void {
    try {
      // Load averages move slowly: sample at most once a second, announce at every heartbeat.
      if (this.lastLoad === undefined || this.seq % Math.max(1, Math.round(1000 / this.init.gossip.heartbeatMs)) === 0) this.lastLoad = this.init.sampleLoad()
      const self = this.selfMember()
      const hb: Heartbeat = {
        v: PEER_PROTOCOL_VERSION,
        kind: 'heartbeat',
        cluster: this.init.cluster,
        name: self.name,
        id: self.id,
        seq: this.seq++,
        bootMs: this.bootMs,
        sentMs: this.now(),
        addresses: self.addresses.slice(0, 16),
        load: self.load,
        memory: self.memory,
        jobs: self.jobs,
        peers: this.livePeerAddresses()
      }
      let frame = encodeHeartbeat(hb)
      // Never send what receivers would drop: without the peer list it always fits.
      if (frame.byteLength > MAX_HEARTBEAT_BYTES) frame = encodeHeartbeat({ ...hb, peers: [] })
      this.links.broadcast(frame)
    } catch (err) {
      this.init.logger.debug({ err }, 'heartbeat send failed')
    }
  }

  /** Where our live peers listen, for nodes that know only some of them. */
  private livePeerAddresses (): string[] {
    const out: string[] = []
    for (const m of this.members.values()) {
      const addr = this.addressOf(m)
      if (m.state === 'alive' && addr !== undefined) out.push(addr)
      if (out.length === MAX_HEARTBEAT_PEERS) break
    }
    return out
  }

  /** A new link to a peer: announce ourselves now rather than at the next heartbeat. */
  private readonly onLinked = (): void => {
    if (this.announceSoon !== undefined || !this.started) return
    this.announceSoon = setTimeout(() => { this.announceSoon = undefined; this.beat() }, 20)
  }

  private readonly onFrame = (frame: Uint8Array, from: PeerId): void => {
    let hb: Heartbeat
    try {
      hb = decodeHeartbeat(frame)
    } catch (err) {
      this.init.logger.warn({ err, from: from.toString() }, 'dropped invalid heartbeat')
      return
    }
    if (!this.accept(hb, from)) return
    const now = this.now()
    for (const addr of hb.peers ?? []) {
      if (this.learned.size < 4 * MAX_HEARTBEAT_PEERS || this.learned.has(addr)) this.learned.set(addr, now)
    }
  }

  /** Takes a valid heartbeat into the member table; false if it was refused. */
  private accept (hb: Heartbeat, from: PeerId): boolean {
    if (hb.cluster !== this.init.cluster || hb.name === this.init.self.name) {
      this.init.logger.warn({ from: from.toString(), name: hb.name, cluster: hb.cluster }, 'heartbeat from a foreign or duplicate node name ignored')
      return false
    }
    const known = this.members.get(hb.name)
    const peerId = from.toString()
    const refusal = this.idProblem(hb, peerId, known === undefined)
    if (refusal !== undefined) {
      this.init.logger.warn({ from: peerId, name: hb.name, id: hb.id }, `heartbeat ignored: ${refusal}`)
      return false
    }
    if (known != null && known.peerId !== peerId && known.state !== 'dead') {
      this.init.logger.warn({ name: hb.name, known: known.peerId, claimed: peerId }, 'two peers claim one node name; keeping the live one')
      return false
    }
    if (known != null && known.peerId === peerId && known.bootMs === hb.bootMs && hb.seq <= known.seqSeen) return true
    const previous = known?.state
    const member: TrackedMember = {
      name: hb.name,
      id: hb.id,
      peerId,
      addresses: hb.addresses,
      state: 'alive',
      self: false,
      load: hb.load,
      memory: hb.memory,
      jobs: hb.jobs,
      lastSeenMs: this.now(),
      bootMs: hb.bootMs,
      seqSeen: hb.seq
    }
    this.members.set(hb.name, member)
    if (previous !== 'alive') this.emitState(member, previous)
    if (member.lastSeenMs + this.init.failure.suspectAfterMs < this.sweepDue) this.armSweep()
    return true
  }

  /**
   * Why a heartbeat's name/id may not be taken, if so: node ids prefix vpids (a job's home node is
   * found by it), so one id must never name two live nodes, nor one peer two; the table stays bounded.
   */
  private idProblem (hb: Heartbeat, peerId: string, isNew: boolean): string | undefined {
    const configured = this.init.nodes.find(n => n.name === hb.name)
    if (configured !== undefined && configured.id !== hb.id) return `the config gives ${hb.name} id ${configured.id}`
    if (hb.id === this.init.self.id) return `id ${hb.id} is this node's`
    for (const m of this.members.values()) {
      if (m.name === hb.name || m.state === 'dead') continue
      if (m.id === hb.id) return `id ${hb.id} belongs to ${m.name}`
      // One peer is one node: a second name would die on its own and hang up the peer's connection.
      if (m.peerId === peerId) return `its peer already is ${m.name}`
    }
    if (isNew && this.members.size >= MAX_MEMBERS) return `the member table is full (${MAX_MEMBERS})`
    return undefined
  }

  private sweep (): void {
    const now = this.now()
    const { suspectAfterMs, deadAfterMs } = this.init.failure
    for (const m of this.members.values()) {
      const silent = now - m.lastSeenMs
      const next: MemberState = silent >= deadAfterMs ? 'dead' : silent >= suspectAfterMs ? 'suspect' : m.state
      if (m.state === 'dead' || next === m.state) continue
      this.setState(m, next)
    }
    this.armSweep()
  }

  /**
   * Arms the sweep for the earliest moment a member can turn suspect or dead. Heartbeats keep
   * pushing that moment back, so an idle daemon sweeps about once a period instead of polling,
   * and a silent peer is caught at its deadline exactly (a polling sweep added up to its interval).
   */
  private armSweep (): void {
    clearTimeout(this.sweepTimer)
    this.sweepTimer = undefined
    this.sweepDue = Infinity
    if (!this.started) return
    const { suspectAfterMs, deadAfterMs } = this.init.failure
    for (const m of this.members.values()) {
      if (m.state !== 'dead') this.sweepDue = Math.min(this.sweepDue, m.lastSeenMs + (m.state === 'alive' ? suspectAfterMs : deadAfterMs))
    }
    if (this.sweepDue === Infinity) return
    this.sweepTimer = setTimeout(() => { this.sweep() }, Math.max(0, this.sweepDue - this.now()) + 1)
  }

  private setState (m: MutableMember, state: MemberState): void {
    const previous = m.state
    if (previous === state) return
    m.state = state
    this.init.logger.info({ node: m.name, from: previous, to: state }, 'member state changed')
    this.emitState(m, previous)
  }

  private emitState (m: MutableMember, previous: MemberState | undefined): void {
    this.dispatchEvent(new CustomEvent<MemberStateChange>('member:state', { detail: { member: { ...m }, previous } }))
  }

  /** A dropped connection: dial back once at once; a refusal means the process is gone. */
  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const m = [...this.members.values()].find(x => x.peerId === evt.detail.toString())
    if (m == null || m.state === 'dead') return
    this.setState(m, 'suspect')
    const addr = this.addressOf(m)
    if (addr == null) return
    void this.dial(addr).then(ok => {
      if (!ok && m.state !== 'alive') this.setState(m, 'dead')
    })
  }

  private isOwnAddress (addr: string): boolean {
    return addr === this.init.self.listen || this.host.getMultiaddrs().some(a => { const own = a.toString(); return own === addr || own.startsWith(`${addr}/`) })
  }

  private addressOf (m: Member): string | undefined {
    return this.init.nodes.find(n => n.name === m.name)?.listen ?? m.addresses[0]
  }

  /** Dials every configured, bootstrap and recently learned address that has no live connection. */
  private redialAll (): void {
    const targets = new Set<string>(this.init.bootstrap)
    const now = this.now()
    for (const [addr, at] of this.learned) {
      // Forget what no peer repeated for a while (a node that left), so it is not dialled forever.
      if (now - at > 10 * this.init.failure.redialMs + this.init.failure.deadAfterMs) this.learned.delete(addr)
      else if (!this.isOwnAddress(addr)) targets.add(addr)
    }
    for (const node of this.init.nodes) {
      if (node.name !== this.init.self.name) targets.add(node.listen)
    }
    for (const m of this.members.values()) {
      const addr = this.addressOf(m)
      if (addr !== undefined) targets.add(addr)
    }
    const connected = new Set(this.host.getConnections().map(c => c.remotePeer.toString()))
    for (const m of this.members.values()) {
      // A member that is connected but silent is hung or partitioned: a new dial would not help.
      const addr = this.addressOf(m)
      if (addr !== undefined && connected.has(m.peerId)) targets.delete(addr)
    }
    for (const addr of targets) {
      const peer = this.peerAt.get(addr)
      if (peer === undefined || !connected.has(peer)) void this.dial(addr)
    }
  }

  private async dial (addr: string): Promise<boolean> {
    if (this.dialing.has(addr) || !this.started) return false
    this.dialing.add(addr)
    try {
      const conn = await this.host.dial(multiaddr(addr), { signal: AbortSignal.timeout(this.init.failure.dialTimeoutMs) })
      this.peerAt.set(addr, conn.remotePeer.toString())
      return true
    } catch (err) {
      this.logDialFailure(addr, err as Error)
      return false
    } finally {
      this.dialing.delete(addr)
    }
  }

  /**
   * A failed Noise handshake means the peer is there but holds another cluster key (or cluster
   * name): worth one warning per address; anything else (refused, timed out) is routine.
   */
  private logDialFailure (addr: string, err: Error): void {
    if (err.name === 'EncryptionFailedError' && !this.warnedKeyMismatch.has(addr)) {
      this.warnedKeyMismatch.add(addr)
      this.init.logger.warn({ addr, err: err.message }, 'dial failed: cluster key mismatch (the Noise handshake failed)')
      return
    }
    this.init.logger.debug({ addr, err: err.message }, 'dial failed (cluster key mismatch or unreachable)')
  }
}
