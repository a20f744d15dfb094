/**
 * The daemon's side of stop-and-copy migration (src/migration/stop-and-copy.ts): the source side
 * over LocalJobs and the job runtime, the target side as peer methods plus an images channel.
 * The target accepts one incoming migration per source node at a time (the images channel is
 * matched to the prepared migration by the sending node).
 */
import { parseParams } from '../protocol/peer.js'
import { copyFile, mkdir, rename, rm, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { readDumpStats } from '../migration/dump-stats.js'
import type { DumpStats } from '../migration/dump-stats.js'
import { findUnmigratable } from '../migration/precheck.js'
import { migrate } from '../migration/stop-and-copy.js'
import { IMAGES_PROTOCOL, receiveImageDir, sendImageDir } from '../migration/transfer.js'
import { migratePrepareSchema, migrateRestoreSchema, migrateStartSchema, migrateVpidSchema } from '../protocol/migrate.js'
import { JobStateError } from '../ssi/jobs/errors.js'
import type { MigrationSource, MigrationTarget } from '../migration/stop-and-copy.js'
import type { BulkTransport } from '../migration/ports.js'
import type { MigratePrepareParams, MigrationSummary } from '../protocol/migrate.js'
import type { LocalJobs } from '../ssi/jobs/local.js'
import type { JobRecord } from '../ssi/jobs/record.js'
import type { DumpedFile, JobRuntime, RuntimeJob } from '../ssi/jobs/runtime.js'
import type { PeerRpc } from '../ssi/ports.js'
import type { Logger } from './logger.js'

export interface MigrationServiceInit {
  readonly selfName: string
  readonly local: LocalJobs
  readonly runtime: JobRuntime
  readonly rpc: PeerRpc
  readonly bulk: BulkTransport
  /** Images in flight: `<dir>/out/<vpid>` on sources, `<dir>/in/<vpid>` on targets. */
  readonly dir: string
  readonly logger: Logger
  /** Largest image accepted, bytes (default 64 GiB). */
  readonly maxImageBytes?: number
  /** Deadline of the target's restore, ms (default 120 000). */
  readonly restoreTimeoutMs?: number
  /** A target drops a prepared migration whose source went quiet after this many ms (default 600 000). */
  readonly incomingTtlMs?: number
}

const STAGED = { stdout: 'ssi.stdout', stderr: 'ssi.stderr' } as const

interface Incoming {
  readonly from: string
  readonly prepared: MigratePrepareParams
  readonly dir: string
  readonly expiry: NodeJS.Timeout
  received?: Promise<void>
}

interface Outgoing { readonly job: RuntimeJob, readonly record: JobRecord }

export class MigrationService {
  private readonly incoming = new Map<number, Incoming>()
  private readonly outgoing = new Map<number, Outgoing>()
  private readonly dumpStats = new Map<number, DumpStats>()

  constructor (private readonly init: MigrationServiceInit) {}

  async start (): Promise<void> {
    const { rpc } = this.init
    rpc.handle('migrate.start', async (p, ctx) => {
      const { vpid, target, asUid } = parseParams(migrateStartSchema, p)
      return await this.migrateOut(vpid, target, asUid, ctx.signal)
    })
    rpc.handle('migrate.prepare', async (p, ctx) => { await this.prepareIn(parseParams(migratePrepareSchema, p), ctx.fromNode); return {} })
    rpc.handle('migrate.restore', async (p, ctx) => {
      const { vpid, stdio } = parseParams(migrateRestoreSchema, p)
      await this.restoreIn(vpid, stdio, ctx.fromNode, ctx.signal)
      return {}
    })
    rpc.handle('migrate.cancel', async (p, ctx) => { await this.cancelIn(parseParams(migrateVpidSchema, p).vpid, ctx.fromNode); return {} })
    await this.init.bulk.handle(IMAGES_PROTOCOL, async (channel, fromNode, signal) => {
      const inc = [...this.incoming.values()].find(i => i.from === fromNode && i.received === undefined)
      if (inc === undefined) throw new Error(`no migration from ${fromNode} was prepared`)
      inc.received = receiveImageDir(channel, inc.dir, { maxTotalBytes: this.init.maxImageBytes ?? 64 * 2 ** 30, signal })
        .then(() => {})
      inc.received.catch(() => {})
      await inc.received
    })
  }

  /** Runs the migration of a job of this node to `target`. */
  async migrateOut (vpid: number, target: string, asUid: number, signal?: AbortSignal): Promise<MigrationSummary> {
    if (target === this.init.selfName) throw new JobStateError(`job ${vpid} already runs on ${target}`)
    const log = this.init.logger.child({ vpid, target })
    try {
      const result = await migrate(this.source(), this.target(), { vpid, target, asUid, signal, onPhase: phase => { log.info({ phase }, 'migration') } })
      const stats = this.dumpStats.get(vpid)
      const ms = (us: number | undefined): number | undefined => (us === undefined ? undefined : Math.round(us / 100) / 10)
      return { ...result, from: this.init.selfName, freezeMs: ms(stats?.freezingUs), frozenMs: ms(stats?.frozenUs) }
    } finally {
      this.dumpStats.delete(vpid)
    }
  }

  private source (): MigrationSource<MigratePrepareParams, DumpedFile[]> {
    const { local, runtime } = this.init
    return {
      begin: async (vpid, asUid) => {
        if (this.outgoing.has(vpid)) throw new JobStateError(`job ${vpid} is already migrating`)
        const { record, runtime: job } = await local.beginMigration(vpid, asUid)
        this.outgoing.set(vpid, { job, record })
        const { owner, argv, cwd, hostname, limits, homeNode, createdMs, startedMs } = record
        const payload = { vpid, job: { vpid, owner: { ...owner, groups: [...owner.groups] }, argv: [...argv], cwd, hostname, limits, homeNode, createdMs, startedMs } }
        return { hostPid: job.hostPid, payload }
      },
      check: async hostPid => await findUnmigratable(hostPid),
      imagesDir: async vpid => {
        const dir = join(this.init.dir, 'out', String(vpid))
        await rm(dir, { recursive: true, force: true })
        await mkdir(dir, { recursive: true, mode: 0o700 })
        return dir
      },
      checkpoint: async (vpid, dir, signal) => {
        const stdio = await runtime.checkpoint(this.out(vpid).job, dir, signal)
        const stats = await readDumpStats(dir)
        if (stats !== undefined) this.dumpStats.set(vpid, stats)
        return stdio
      },
      stageOutput: async (vpid, dir) => {
        const paths = runtime.paths(vpid)
        await copyFile(paths.stdout, join(dir, STAGED.stdout))
        await copyFile(paths.stderr, join(dir, STAGED.stderr))
      },
      commit: async (vpid, target, dir) => {
        this.outgoing.delete(vpid)
        await local.markMoved(vpid, target)
        await rm(dir, { recursive: true, force: true })
      },
      resume: async (vpid, error) => {
        this.outgoing.delete(vpid)
        await local.resumeAfterMigration(vpid, undefined, error)
      },
      rollback: async (vpid, dir, stdio, error) => {
        const { job, record } = this.out(vpid)
        await runtime.release(job).catch(() => {})
        for (const f of Object.values(STAGED)) await unlink(join(dir, f)).catch(() => {})
        const restored = await runtime.restore({ vpid, imagesDir: dir, limits: record.limits, stdio })
        this.outgoing.delete(vpid)
        await local.resumeAfterMigration(vpid, restored, error)
        await rm(dir, { recursive: true, force: true })
      },
      lose: async (vpid, error) => {
        this.outgoing.delete(vpid)
        await local.loseAfterMigration(vpid, error)
      }
    }
  }

  private out (vpid: number): Outgoing {
    const o = this.outgoing.get(vpid)
    if (o === undefined) throw new JobStateError(`job ${vpid} is not migrating from here`)
    return o
  }

  private target (): MigrationTarget<MigratePrepareParams, DumpedFile[]> {
    const { rpc, bulk } = this.init
    return {
      prepare: async (target, _vpid, payload, signal) => { await rpc.call(target, 'migrate.prepare', payload, { signal, timeoutMs: 10_000 }) },
      send: async (target, dir, signal) => {
        const channel = await bulk.open(target, IMAGES_PROTOCOL, signal)
        try {
          return { bytes: (await sendImageDir(channel, dir, { signal })).bytes }
        } catch (err) {
          channel.abort(err instanceof Error ? err : new Error(String(err)))
          throw err
        }
      },
      restore: async (target, vpid, stdio, signal) => {
        await rpc.call(target, 'migrate.restore', { vpid, stdio }, { signal, timeoutMs: this.init.restoreTimeoutMs ?? 120_000 })
      },
      cancel: async (target, vpid) => { await rpc.call(target, 'migrate.cancel', { vpid }, { timeoutMs: 10_000 }) }
    }
  }

  // ---- target side ----------------------------------------------------------------------------

  private async prepareIn (p: MigratePrepareParams, from: string): Promise<void> {
    if (this.incoming.has(p.vpid)) throw new JobStateError(`job ${p.vpid} is already migrating to ${this.init.selfName}`)
    if ([...this.incoming.values()].some(i => i.from === from)) throw new JobStateError(`${this.init.selfName} already receives a migration from ${from}`)
    if (!this.init.local.canReceive(p.vpid)) throw new JobStateError(`job ${p.vpid} already runs on ${this.init.selfName}`)
    const dir = join(this.init.dir, 'in', String(p.vpid))
    await rm(dir, { recursive: true, force: true })
    await mkdir(dir, { recursive: true, mode: 0o700 })
    // A source that died mid-migration must not block its later migrations to this node forever.
    const expiry = setTimeout(() => { void this.cancelIn(p.vpid, from) }, this.init.incomingTtlMs ?? 600_000)
    expiry.unref()
    this.incoming.set(p.vpid, { from, prepared: p, dir, expiry })
  }

  private incomingFrom (vpid: number, from: string): Incoming {
    const inc = this.incoming.get(vpid)
    if (inc === undefined || inc.from !== from) throw new JobStateError(`no migration of job ${vpid} from ${from} was prepared`)
    return inc
  }

  private async restoreIn (vpid: number, stdio: DumpedFile[], from: string, signal: AbortSignal): Promise<void> {
    const inc = this.incomingFrom(vpid, from)
    if (inc.received === undefined) throw new JobStateError(`the images of job ${vpid} did not arrive`)
    await inc.received
    signal.throwIfAborted()
    const { runtime, local } = this.init
    const paths = runtime.paths(vpid)
    await rm(paths.jobDir, { recursive: true, force: true }) // left from an earlier stay of this job here
    await mkdir(paths.jobDir, { recursive: true, mode: 0o711 })
    await rename(join(inc.dir, STAGED.stdout), paths.stdout)
    await rename(join(inc.dir, STAGED.stderr), paths.stderr)
    const { prepared } = inc
    // On failure the job dir stays (its shim.log and restore.log say why) until this vpid comes again.
    const job = await runtime.restore({ vpid, imagesDir: inc.dir, limits: prepared.job.limits, stdio }, signal)
    clearTimeout(inc.expiry)
    this.incoming.delete(vpid)
    const record: JobRecord = { ...prepared.job, node: this.init.selfName, state: 'running', stdin: false }
    await local.adoptMigrated(record, job)
    await rm(inc.dir, { recursive: true, force: true })
  }

  private async cancelIn (vpid: number, from: string): Promise<void> {
    const inc = this.incoming.get(vpid)
    if (inc === undefined || inc.from !== from) return
    clearTimeout(inc.expiry)
    this.incoming.delete(vpid)
    await inc.received?.catch(() => {})
    await rm(inc.dir, { recursive: true, force: true })
  }
}
