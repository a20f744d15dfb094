/**
 * The node daemon's composition root: opens the state store, loads the identity and cluster key,
 * starts the libp2p host, membership and the control API, and wires the handlers. Everything that
 * talks to the outside world is created here and handed to the subsystems that need it.
 */
import { dirname, join } from 'node:path'
import { ControlServer } from './control-server.js'
import { checkPrivate, checkSocketDir, makePrivateDir } from './permissions.js'
import { createNodeHost } from './host.js'
import { clusterPrologue, loadOrCreateIdentity, readClusterKey } from './identity.js'
import { sampleLoad } from './load.js'
import { Membership } from './membership.js'
import { LevelStateStore } from './store.js'
import { registerClusterHandlers } from './handlers/cluster.js'
import { registerJobHandlers } from './handlers/jobs.js'
import { Libp2pPeerRpc } from './peer-rpc.js'
import { Libp2pBulkTransport, ipOfAddr } from './bulk-transport.js'
import { IMAGES_PROTOCOL } from '../protocol/images.js'
import { PAGES_PROTOCOL } from '../migration/page-stream.js'
import { LAZY_PAGES_PROTOCOL } from './migration-post-copy.js'
import { CHECKPOINT_PROTOCOL } from '../protocol/checkpoint.js'
import { MigrationService } from './migration.js'
import { checkpointsDir, startCheckpoints } from './checkpoint/index.js'
import type { Checkpoints } from './checkpoint/index.js'
import { checkpointJobHooks, registerCheckpointHandlers } from './handlers/checkpoint.js'
import { ClusterJobs } from '../ssi/jobs/cluster.js'
import { LocalJobs } from '../ssi/jobs/local.js'
import { createJobRuntime } from '../ssi/jobs/runtime-host.js'
import { removeEndedJobCgroups } from '../ssi/jobs/node-cgroups.js'
import { VpidAllocator } from '../ssi/vpid.js'
import { FailureHandler } from '../ssi/failure/handler.js'
import { Fencer } from '../ssi/failure/fence.js'
import { CheckpointedElsewhere, localFenceTarget } from './fencing.js'
import { hangUpOnDeath } from './dead-peers.js'
import type { ClusterView } from '../ssi/ports.js'
import type { ClusterConfig, NodeConfig } from './config.js'
import type { NodeHost } from './host.js'
import type { Logger } from './logger.js'
import type { StateStore } from './store.js'

export const SSI_VERSION = '0.1.0'

export interface DaemonInit {
  readonly config: ClusterConfig
  readonly node: NodeConfig
  readonly logger: Logger
  /** How `ssi shutdown` stops this daemon's process (main.ts); without it the verb is refused. */
  readonly requestShutdown?: (why: string) => void
}

export interface Daemon {
  readonly host: NodeHost
  readonly membership: Membership
  readonly store: StateStore
  readonly control: ControlServer
  readonly jobs: ClusterJobs
  /** Checkpoints; `checkpoints.operations.restoreFromLast(vpid)` is for the node-failure handler. */
  readonly checkpoints: Checkpoints
  readonly startedMs: number
  stop(): Promise<void>
}

/** Starts one node. On failure, whatever was started is stopped again before the error propagates. */
export async function startDaemon (init: DaemonInit): Promise<Daemon> {
  const { config, node, logger } = init
  const cleanups: Array<() => Promise<void>> = []
  const stopAll = async (): Promise<void> => {
    for (const fn of cleanups.splice(0).reverse()) {
      await fn().catch(err => { logger.warn({ err }, 'error during shutdown') })
    }
  }
  try {
    const loose = await makePrivateDir(node.stateDir)
    if (loose !== undefined) logger.warn({ stateDir: node.stateDir, mode: loose.toString(8) }, 'state dir was accessible to other users: made it 0700')
    await checkPrivate(config.keyFile, 'cluster key', 'file')
    await checkPrivate(join(node.stateDir, 'identity.key'), 'node identity key', 'file')
    await checkSocketDir(dirname(node.controlSocket))
    const store = await LevelStateStore.open(join(node.stateDir, 'db'))
    cleanups.push(async () => { await store.close() })
    const psk = await readClusterKey(config.keyFile)
    const host = await createNodeHost({
      privateKey: await loadOrCreateIdentity(join(node.stateDir, 'identity.key')),
      listen: node.listen,
      prologue: clusterPrologue(psk, config.name),
      dialTimeoutMs: config.failureDetection.dialTimeoutMs
    })
    cleanups.push(async () => { await host.stop() })
    const shutdown = new AbortController()
    cleanups.push(async () => { shutdown.abort(new Error('daemon stopping')) })
    // Membership and the job service refer to each other (job counts, home updates): late-bound.
    const late: { local?: LocalJobs, jobs?: ClusterJobs, fencer?: Fencer } = {}
    const membership = new Membership(host, {
      cluster: config.name,
      self: node,
      nodes: config.nodes,
      bootstrap: config.bootstrap,
      gossip: config.gossip,
      failure: config.failureDetection,
      sampleLoad,
      jobCount: () => late.local?.runningCount() ?? 0,
      logger: logger.child({ component: 'membership' })
    })
    const rpc = new Libp2pPeerRpc({
      host,
      selfName: node.name,
      peerOf: name => { const m = membership.get(name); return m !== undefined && m.state !== 'dead' ? m.peerId : undefined },
      nodeOf: peerId => membership.nameOf(peerId),
      logger: logger.child({ component: 'rpc' }),
      shutdown: shutdown.signal
    })
    const view: ClusterView = { selfName: node.name, selfId: node.id, nodes: () => membership.list() }
    const runtime = await createJobRuntime({ cluster: config.name, node: node.name, jobsRoot: join(node.stateDir, 'jobs'), logger: logger.child({ component: 'runtime' }), allowIoUring: config.jobs.ioUring === 'allow' })
    // Last in the shutdown: the cgroups of jobs that ended go, and the node's cgroup dir if no job outlives the daemon.
    cleanups.push(async () => { await removeEndedJobCgroups(config.name, node) })
    const localJobs = new LocalJobs({
      node: node.name,
      store,
      runtime,
      logger: logger.child({ component: 'jobs' }),
      onChange: job => { void late.jobs?.reportToHome(job) },
      isFenced: vpid => late.fencer?.isFenced(vpid) === true,
      retainFinishedMs: config.jobs.retainFinishedMs
    })
    late.local = localJobs
    cleanups.push(async () => { localJobs.stop() })
    const jobs = new ClusterJobs({
      rpc, view, local: localJobs, store,
      allocator: new VpidAllocator(store, node.id, vpid => localJobs.has(vpid)),
      logger: logger.child({ component: 'jobs' })
    })
    late.jobs = jobs
    const bulk = new Libp2pBulkTransport({
      host,
      peerOf: name => { const m = membership.get(name); return m !== undefined && m.state !== 'dead' ? m.peerId : undefined },
      nodeOf: peerId => membership.nameOf(peerId),
      shutdown: shutdown.signal,
      logger: logger.child({ component: 'bulk' }),
      // Image dirs and page streams travel over direct AES-GCM connections on the listen IP
      // (fallback: libp2p). Post-copy's page bridge needs the direct path's END record: CRIU's page
      // server takes an EOF as "the target has every page", and a yamux stream of a target killed
      // mid-pull could end cleanly, reporting a broken pull as complete.
      direct: { protocols: [IMAGES_PROTOCOL, CHECKPOINT_PROTOCOL, PAGES_PROTOCOL, LAZY_PAGES_PROTOCOL], bindHost: ipOfAddr(node.listen) }
    })
    const migration = new MigrationService({
      selfName: node.name, local: localJobs, runtime, rpc, bulk, dir: join(node.stateDir, 'migrations'), logger: logger.child({ component: 'migration' }), store,
      modes: config.migration, streamPages: config.migration.streamPages, sendWhileDumping: config.migration.sendWhileDumping, streamRestore: config.migration.streamRestore, recheckBeforeRestore: config.migration.recheckBeforeRestore, earlyRestore: config.migration.earlyRestore,
      transferIdleMs: config.migration.transferIdleMs
    })
    await migration.start()
    cleanups.push(async () => { await migration.stop() })
    const checkpointedElsewhere = new CheckpointedElsewhere(store)
    const checkpoints = await startCheckpoints({
      onDumpDelivered: (vpid, to, leftRunning) => { checkpointedElsewhere.note(vpid, to, node.name, leftRunning) },
      selfName: node.name, cluster: config.name, ssiVersion: SSI_VERSION, clusterKey: psk, local: localJobs, runtime, rpc, bulk, view, store, jobs,
      dir: checkpointsDir(node.stateDir), logger: logger.child({ component: 'checkpoint' }),
      dropHeldAfterEndMs: config.jobs.retainFinishedMs + config.jobs.heldCheckpointAfterReapMs
    })
    cleanups.push(async () => { await checkpoints.stop() })
    await localJobs.recover(vpid => migration.isJournalled(vpid))
    await checkpointedElsewhere.load(vpid => localJobs.running().some(j => j.record.vpid === vpid))
    await rpc.start()
    await membership.start()
    cleanups.push(async () => { await membership.stop() })
    void migration.recover(shutdown.signal) // settles migrations a killed daemon left half-done
    // Jobs of a node the majority declares dead are lost (or restored); see src/ssi/failure.
    const nodeNames = config.nodes.map(n => n.name)
    const failureLogger = logger.child({ component: 'failure' })
    const failure = new FailureHandler({
      rpc, view, store, nodes: nodeNames, logger: failureLogger,
      startupGraceMs: 4 * config.failureDetection.deadAfterMs,
      // The minority freezes restorable jobs once its peers turn suspect (src/ssi/failure/fence.ts);
      // restoring them only this long after the majority's verdict lets it do so first.
      restoreDelayMs: config.failureDetection.suspectAfterMs + 1000,
      fencer: late.fencer = new Fencer({ rpc, view, nodes: nodeNames, jobs: localFenceTarget(localJobs, checkpointedElsewhere), logger: failureLogger, store }),
      // A lost job launched with --checkpoint-every is restored once, by its home (this node), from
      // its newest checkpoint on a live node; jobs without periodic checkpoints stay lost.
      restore: async (record, signal) => {
        if (await checkpoints.periodic.record(record.vpid) === undefined) return undefined
        const r = await checkpoints.operations.restoreFromLast(record.vpid, { signal })
        return { node: r.node, takenMs: r.takenMs }
      }
    })
    failure.start()
    cleanups.push(async () => { failure.stop() })
    const stopHangUps = hangUpOnDeath(membership, host, logger.child({ component: 'membership' }), bulk, config.failureDetection.deadAfterMs)
    cleanups.push(async () => { stopHangUps() })
    const gc = setInterval(() => { void localJobs.collectGarbage() }, 60_000)
    cleanups.push(async () => { clearInterval(gc) })
    const control = new ControlServer({ socketPath: node.controlSocket, logger: logger.child({ component: 'control' }) })
    const daemon: Daemon = { host, membership, store, control, jobs, checkpoints, startedMs: Date.now(), stop: stopAll }
    registerClusterHandlers(control, { config, node, daemon, requestShutdown: init.requestShutdown })
    registerJobHandlers(control, jobs, config.jobs, checkpointJobHooks(checkpoints.periodic, rpc))
    registerCheckpointHandlers(control, checkpoints.operations)
    await control.start()
    cleanups.push(async () => { await control.stop() })
    logger.info({ peerId: host.peerId.toString(), listen: host.getMultiaddrs().map(String), socket: node.controlSocket }, 'node started')
    return daemon
  } catch (err) {
    await stopAll()
    throw err
  }
}
