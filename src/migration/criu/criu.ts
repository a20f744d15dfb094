/**
 * The CRIU driver: one class over `criu swrk` (go-criu, runc's criu_linux.go). Each public method
 * is one request; each request runs its own short-lived criu process.
 *
 * Concurrency: methods may run concurrently (each has its own criu process, log file and fds);
 * CRIU itself serialises nothing, so do not dump and restore the same tree at once.
 * Blocking: nothing blocks the event loop; dump/restore take as long as CRIU does (tens of ms to
 * seconds, see docs/criu.md), bounded by the caller's AbortSignal.
 */
import { closeSync, constants, openSync } from 'node:fs'
import { join } from 'node:path'
import type { Checkpointer } from './checkpointer.js'
import { CriuError } from './errors.js'
import { startLazyPagesDaemon, type LazyPagesDaemon, type LazyPagesOptions } from './lazy-pages.js'
import {
  dumpWireOpts, pageServerWireOpts, restoreWireOpts,
  type DumpOptions, type PageServerOptions, type Plumbing, type RequestOptions, type RestoreOptions
} from './options.js'
import { ReqType, type ReqTypeValue, type WireOpts, type WireResponse } from './rpc.js'
import { callSwrk, expectSuccess, type CriuLogger, type SwrkCall } from './swrk.js'

export interface CriuInit {
  /** Absolute path of a criu >= 4.2 (see findCriu). */
  readonly criuPath: string
  /** Existing directory where CRIU writes one log file per request. */
  readonly workDir: string
  readonly logger?: CriuLogger
  /** Default log verbosity 0..4; default 4 (debug) so that every failure can be diagnosed. */
  readonly logLevel?: number
}

export interface CriuVersion {
  readonly major: number
  readonly minor: number
  readonly sublevel: number
  readonly gitid?: string
  /** "major.minor.sublevel", e.g. "4.2.1". */
  readonly text: string
}

export interface CriuFeatures {
  /** Memory change tracking (soft-dirty): incremental pre-copy is possible. */
  readonly memTrack: boolean
  /** userfaultfd with non-cooperative events: post-copy (lazy pages) is possible. */
  readonly lazyPages: boolean
}

export interface DumpResult {
  readonly logPath: string
}

export interface RestoreResult {
  /** Host pid of the restored root task (a child of this process with rstSibling). */
  readonly pid: number
  readonly logPath: string
}

export interface PageServerResult {
  /** The daemon's pid, when CRIU reports one (4.2.1 answers 0, mapped to undefined). */
  readonly pid: number | undefined
  readonly port: number
  readonly logPath: string
}

interface Prepared {
  readonly type: ReqTypeValue
  readonly operation: string
  readonly opts: (plumbing: Plumbing) => WireOpts
  readonly imagesDir: string
  readonly fds?: readonly number[]
  readonly request: RequestOptions
}

let logSequence = 0

function openDir (path: string): number {
  return openSync(path, constants.O_RDONLY | constants.O_DIRECTORY)
}

export class Criu implements Checkpointer {
  readonly criuPath: string
  readonly workDir: string
  private readonly logger: CriuLogger | undefined
  private readonly logLevel: number

  constructor (init: CriuInit) {
    this.criuPath = init.criuPath
    this.workDir = init.workDir
    this.logger = init.logger
    this.logLevel = init.logLevel ?? 4
  }

  /** CRIU's version (VERSION request). */
  async version (options: RequestOptions = {}): Promise<CriuVersion> {
    const resp = await this.query('version', { type: ReqType.VERSION }, options)
    const v = resp.version
    if (v === undefined) throw new CriuError({ operation: 'version', detail: 'no version in the answer' })
    const sublevel = v.sublevel ?? 0
    return { major: v.major_number, minor: v.minor_number, sublevel, gitid: v.gitid, text: `${v.major_number}.${v.minor_number}.${sublevel}` }
  }

  /** `criu check`: resolves if CRIU can work on this kernel, else throws CriuError with the reason. */
  async check (options: RequestOptions = {}): Promise<void> {
    const logFile = this.nextLogFile('check')
    const workDirFd = openDir(this.workDir)
    try {
      const opts: WireOpts = { images_dir_fd: -1, work_dir_fd: workDirFd, log_file: logFile, log_level: this.logLevel }
      await this.query('check', { type: ReqType.CHECK, opts }, options, join(this.workDir, logFile))
    } finally {
      closeSync(workDirFd)
    }
  }

  /** Which optional kernel features CRIU can use here (FEATURE_CHECK). */
  async checkFeatures (options: RequestOptions = {}): Promise<CriuFeatures> {
    const features = { mem_track: true, lazy_pages: true }
    const resp = await this.query('feature check', { type: ReqType.FEATURE_CHECK, features }, options)
    return { memTrack: resp.features?.mem_track === true, lazyPages: resp.features?.lazy_pages === true }
  }

  /** Checkpoints the tree rooted at `options.pid` into `options.imagesDir`. */
  async dump (options: DumpOptions): Promise<DumpResult> {
    const fds = options.pageServerSocket === undefined ? undefined : [options.pageServerSocket]
    const { logPath } = await this.run({ type: ReqType.DUMP, operation: 'dump', opts: (p) => dumpWireOpts(options, p), imagesDir: options.imagesDir, fds, request: options })
    return { logPath }
  }

  /** Pre-dump (memory only, tree keeps running); needs memory tracking (see checkFeatures). */
  async preDump (options: DumpOptions): Promise<DumpResult> {
    const { logPath } = await this.run({ type: ReqType.SINGLE_PRE_DUMP, operation: 'pre-dump', opts: (p) => dumpWireOpts(options, p), imagesDir: options.imagesDir, request: options })
    return { logPath }
  }

  /** Restores the tree in `options.imagesDir`; returns its root's host pid. */
  async restore (options: RestoreOptions): Promise<RestoreResult> {
    const fds = options.inheritFd?.map((entry) => entry.fd)
    const { resp, logPath } = await this.run({ type: ReqType.RESTORE, operation: 'restore', opts: (p) => restoreWireOpts(options, p), imagesDir: options.imagesDir, fds, request: options })
    const pid = resp.restore?.pid
    if (pid === undefined || pid <= 0) throw new CriuError({ operation: 'restore', detail: 'no pid in the answer', logPath })
    return { pid, logPath }
  }

  /**
   * Starts a page server daemon (PAGE_SERVER) that receives the pages of one dump into imagesDir.
   * It serves exactly one client and then exits; one that never gets a client lingers (connecting
   * and closing once makes it exit).
   */
  async pageServer (options: PageServerOptions): Promise<PageServerResult> {
    const { resp, logPath } = await this.run({ type: ReqType.PAGE_SERVER, operation: 'page-server', opts: (p) => pageServerWireOpts(options, p), imagesDir: options.imagesDir, request: options })
    const { pid, port } = resp.ps ?? {}
    if (port === undefined) throw new CriuError({ operation: 'page-server', detail: 'no port in the answer', logPath })
    return { pid: pid === undefined || pid <= 0 ? undefined : pid, port, logPath }
  }

  /**
   * Post-copy target: starts `criu lazy-pages` against the source's page server; resolves when it
   * is ready, after which `restore({ lazyPages: true })` may run (same Criu instance: the daemon's
   * socket is in workDir, so run one lazy restore at a time per workDir).
   */
  async startLazyPages (options: LazyPagesOptions): Promise<LazyPagesDaemon> {
    const logPath = join(this.workDir, this.nextLogFile('lazy-pages'))
    return await startLazyPagesDaemon(options, { criuPath: this.criuPath, workDir: this.workDir, logPath, logLevel: this.logLevel, logger: this.logger })
  }

  /** A request without images: VERSION, CHECK, FEATURE_CHECK. */
  private async query (operation: string, request: SwrkCall['request'], options: RequestOptions, logPath?: string): Promise<WireResponse> {
    const call: SwrkCall = { criuPath: this.criuPath, operation, request, signal: options.signal, onNotify: options.onNotify, logger: this.logger, logPath }
    return expectSuccess(call, await callSwrk(call))
  }

  /** A request on an images dir: opens the dirs CRIU reads through /proc/<our pid>/fd/N. */
  private async run (prepared: Prepared): Promise<{ resp: WireResponse, logPath: string }> {
    const logFile = this.nextLogFile(prepared.operation)
    const logPath = join(this.workDir, logFile)
    const imagesDirFd = openDir(prepared.imagesDir)
    let workDirFd: number | undefined
    try {
      workDirFd = openDir(this.workDir)
      const opts = prepared.opts({ imagesDirFd, workDirFd, logFile, logLevel: this.logLevel })
      const call: SwrkCall = {
        criuPath: this.criuPath, operation: prepared.operation, request: { type: prepared.type, opts }, fds: prepared.fds,
        onNotify: prepared.request.onNotify, signal: prepared.request.signal, logger: this.logger, logPath
      }
      this.logger?.debug({ operation: prepared.operation, imagesDir: prepared.imagesDir, logPath }, 'criu request')
      return { resp: expectSuccess(call, await callSwrk(call)), logPath }
    } finally {
      closeSync(imagesDirFd)
      if (workDirFd !== undefined) closeSync(workDirFd)
    }
  }

  private nextLogFile (operation: string): string {
    logSequence += 1
    return `${operation.replace(/[^a-z0-9]+/gi, '-')}-${process.pid}-${Date.now()}-${logSequence}.log`
  }
}
