/**
 * The target side of post-copy: `criu lazy-pages`, a daemon that fetches pages from the source's
 * page server and feeds them to the restored tree through userfaultfd. CRIU has no RPC request
 * for it, so this one runs as a command, with `--status-fd` telling when it is ready.
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { CriuError, significantMessage, summarizeLog } from './errors.js'
import type { PageServerAddress } from './options.js'
import type { CriuLogger } from './swrk.js'

export interface LazyPagesOptions {
  /** The images dir the restore will use (CRIU reads the page map from it). */
  readonly imagesDir: string
  /** The source's page server (dump with lazyPages). */
  readonly pageServer: PageServerAddress
  readonly logLevel?: number
  /** Aborting kills the daemon. */
  readonly signal?: AbortSignal
}

/** A running lazy-pages daemon. */
export interface LazyPagesDaemon {
  readonly pid: number
  readonly logPath: string
  /** Resolves when the daemon has served every page and exited 0; rejects with CriuError otherwise. */
  readonly done: Promise<void>
  /** Kills the daemon (SIGKILL): the restored tree then faults on missing pages. */
  stop (): void
}

export interface LazyPagesContext {
  readonly criuPath: string
  /** Where the daemon's socket goes: restore must use the same work dir. */
  readonly workDir: string
  readonly logPath: string
  readonly logLevel: number
  readonly logger?: CriuLogger
}

const STATUS_FD = 3
const READY_TIMEOUT_MS = 30_000

function daemonArgs (o: LazyPagesOptions, ctx: LazyPagesContext): string[] {
  return [
    'lazy-pages', '--page-server', '--address', o.pageServer.address, '--port', String(o.pageServer.port),
    '-D', o.imagesDir, '-W', ctx.workDir, '-o', ctx.logPath, `-v${o.logLevel ?? ctx.logLevel}`,
    '--status-fd', String(STATUS_FD)
  ]
}

function failure (ctx: LazyPagesContext, detail: string, exit?: string): CriuError {
  return new CriuError({
    operation: 'lazy-pages', detail, exit, logPath: ctx.logPath,
    criuMessage: significantMessage(undefined, ctx.logPath), logTail: summarizeLog(ctx.logPath)
  })
}

function exitOf (child: ChildProcess, ctx: LazyPagesContext): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    child.once('error', (err) => { reject(failure(ctx, `cannot run ${ctx.criuPath}: ${err.message}`)) })
    child.once('exit', (code, sig) => {
      if (code === 0) resolve()
      else reject(failure(ctx, 'lazy-pages daemon failed', sig !== null ? `killed by ${sig}` : `exited with ${code}`))
    })
  })
}

/** Resolves once CRIU wrote its ready byte (and closed the status fd). */
function readyOf (child: ChildProcess, done: Promise<void>, ctx: LazyPagesContext): Promise<void> {
  const status = child.stdio[STATUS_FD] as NodeJS.ReadableStream | null
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(failure(ctx, `not ready after ${READY_TIMEOUT_MS} ms`)) }, READY_TIMEOUT_MS)
    status?.once('data', () => { clearTimeout(timer); resolve() })
    done.then(() => { clearTimeout(timer); reject(failure(ctx, 'lazy-pages daemon exited before it was ready')) },
      (err: unknown) => { clearTimeout(timer); reject(err) })
  })
}

/** Starts the daemon; resolves when it is ready for the restore. */
export async function startLazyPagesDaemon (o: LazyPagesOptions, ctx: LazyPagesContext): Promise<LazyPagesDaemon> {
  o.signal?.throwIfAborted()
  const child = spawn(ctx.criuPath, daemonArgs(o, ctx), { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] })
  const done = exitOf(child, ctx)
  done.catch(() => {}) // observed by the caller through `done`; never an unhandled rejection
  const stop = (): void => { child.kill('SIGKILL') }
  o.signal?.addEventListener('abort', stop, { once: true })
  done.finally(() => { o.signal?.removeEventListener('abort', stop) }).catch(() => {})
  try {
    await readyOf(child, done, ctx)
  } catch (err) {
    stop()
    throw err
  }
  ctx.logger?.debug({ pid: child.pid, logPath: ctx.logPath }, 'criu lazy-pages ready')
  return { pid: child.pid ?? -1, logPath: ctx.logPath, done, stop }
}
