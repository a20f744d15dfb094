/**
 * One request to CRIU in service-worker mode: `criu swrk 3` with one end of a SEQPACKET
 * socketpair as its fd 3 (what go-criu and runc do). A fresh criu process serves each request:
 * CRIU only keeps a swrk connection open across requests for the cheap query types, and a
 * process per dump/restore leaks nothing into the next one.
 */
import { spawn } from 'node:child_process'
import { closeSync } from 'node:fs'
import { Socket } from 'node:net'
import { constants } from 'node:os'
import type { Readable } from 'node:stream'
import { pipeCloexec, posixSpawnAvailable, spawnChild, waitChild } from '../../native/spawn.js'
import { socketPair } from '../../native/socketpair.js'
import { SeqpacketChannel } from './channel.js'
import { CriuError, significantMessage, summarizeLog } from './errors.js'
import { decodeResponse, encodeRequest, ReqType } from './rpc.js'
import type { WireRequest, WireResponse } from './rpc.js'

/** The pino-compatible subset of a logger this driver writes to. */
export interface CriuLogger {
  debug (obj: object, msg?: string): void
  info (obj: object, msg?: string): void
  warn (obj: object, msg?: string): void
  error (obj: object, msg?: string): void
}

/**
 * Called for each CRIU notification ("pre-dump", "post-dump", "pre-restore", "post-restore",
 * "setup-namespaces", "pre-resume", "post-resume", "network-lock", "status-ready", ...); CRIU
 * waits until it returns. `pid` is the root task's host pid where CRIU sends it (post-restore,
 * setup-namespaces). Throwing makes CRIU abort the operation.
 */
export type NotifyHook = (script: string, pid: number | undefined) => void | Promise<void>

/** Extra descriptors are given to criu as fds 4, 5, ... in the order passed. */
export const FIRST_EXTRA_FD = 4
/** How long criu may take to exit after its last answer before it is killed. */
const EXIT_GRACE_MS = 10_000
const STDERR_TAIL_BYTES = 4096

export interface SwrkCall {
  readonly criuPath: string
  /** For messages: 'dump', 'restore', ... */
  readonly operation: string
  readonly request: WireRequest
  /** Our descriptors that criu itself must hold (inherit_fd sources), as its fds 4, 5, ... */
  readonly fds?: readonly number[]
  readonly onNotify?: NotifyHook
  readonly signal?: AbortSignal
  readonly logger?: CriuLogger
  /** The log file this request asked CRIU to write, named in errors. */
  readonly logPath?: string
}

interface Worker {
  readonly kill: () => void
  readonly channel: SeqpacketChannel
  readonly exited: Promise<string>
  readonly stderr: () => string
}

function startWorker (criuPath: string, fds: readonly number[]): Worker {
  const [ours, theirs] = socketPair('seqpacket')
  let started: Omit<Worker, 'channel' | 'stderr'> & { output: Readable[] }
  try {
    // Both return after exec succeeded (or failed), so closing `theirs` next is safe.
    started = spawnWorker(criuPath, theirs, fds) ?? forkWorker(criuPath, theirs, fds)
  } catch (err) {
    closeSync(ours)
    throw err
  } finally {
    closeSync(theirs)
  }
  let output = ''
  const keep = (chunk: Buffer): void => { output = (output + chunk.toString('utf8')).slice(-STDERR_TAIL_BYTES) }
  for (const stream of started.output) stream.on('data', keep).on('error', () => {})
  return { kill: started.kill, exited: started.exited, channel: new SeqpacketChannel(ours), stderr: () => output }
}

function describeExit (code: number | null, sig: string | number | null): string {
  const name = typeof sig === 'number' ? Object.entries(constants.signals).find(([, n]) => n === sig)?.[0] ?? sig : sig
  return name !== null ? `criu killed by ${name}` : `criu exited with ${code}`
}

/**
 * Through posix_spawn: child_process.spawn forks the whole daemon first, 4-7 ms of every dump
 * inside a migration's downtime here (more under load). Undefined where it cannot (spawnChild),
 * or where the exec fails.
 */
function spawnWorker (criuPath: string, socket: number, fds: readonly number[]): Omit<Worker, 'channel' | 'stderr'> & { output: Readable[] } | undefined {
  if (!posixSpawnAvailable()) return undefined
  const [r, w] = pipeCloexec()
  let pid: number | undefined
  try {
    pid = spawnChild(criuPath, [criuPath, 'swrk', '3'], { fds: [socket, ...fds], outputFd: w })
  } catch {
    pid = undefined // e.g. ENOENT: child_process reports it as the call's failure, as always
  } finally {
    closeSync(w)
  }
  if (pid === undefined) {
    closeSync(r)
    return undefined
  }
  const child = pid
  const exited = waitChild(child).then(e => describeExit(e.code, e.signal))
  let gone = false
  void exited.then(() => { gone = true })
  // Not reaped before `exited` settles, so the pid cannot have been reused meanwhile.
  const kill = (): void => { if (!gone) try { process.kill(child, 'SIGKILL') } catch { /* exited */ } }
  return { kill, exited, output: [new Socket({ fd: r, readable: true, writable: false })] }
}

function forkWorker (criuPath: string, socket: number, fds: readonly number[]): Omit<Worker, 'channel' | 'stderr'> & { output: Readable[] } {
  const child = spawn(criuPath, ['swrk', '3'], { stdio: ['ignore', 'pipe', 'pipe', socket, ...fds] })
  const exited = new Promise<string>((resolve) => {
    child.once('error', (err) => { resolve(`cannot run ${criuPath}: ${err.message}`) })
    child.once('exit', (code, sig) => { resolve(describeExit(code, sig)) })
  })
  return { kill: () => { child.kill('SIGKILL') }, exited, output: [child.stdout, child.stderr].filter((s): s is Readable => s !== null) }
}

async function answerNotify (worker: Worker, call: SwrkCall, resp: WireResponse): Promise<Error | undefined> {
  const script = resp.notify?.script ?? ''
  call.logger?.debug({ operation: call.operation, script, pid: resp.notify?.pid }, 'criu notify')
  let failure: Error | undefined
  try {
    await call.onNotify?.(script, resp.notify?.pid)
  } catch (err) {
    failure = err instanceof Error ? err : new Error(String(err))
  }
  await worker.channel.send(encodeRequest({ type: ReqType.NOTIFY, notify_success: failure === undefined }))
  return failure
}

interface Conversation {
  /** CRIU's final answer; absent if it hung up first. */
  readonly resp?: WireResponse
  /** The first error a notify hook threw (CRIU was told, and fails the request). */
  readonly hookError?: Error
  /** The socket failed (criu died mid-write, or sent something undecodable). */
  readonly broken?: Error
}

/** Reads until the final (non-NOTIFY) response. */
async function converse (worker: Worker, call: SwrkCall): Promise<Conversation> {
  await worker.channel.send(encodeRequest(call.request))
  let hookError: Error | undefined
  for (;;) {
    const bytes = await worker.channel.receive()
    if (bytes === undefined) return { hookError }
    const resp = decodeResponse(bytes)
    if (resp.type !== ReqType.NOTIFY) return { resp, hookError }
    hookError = (await answerNotify(worker, call, resp)) ?? hookError
  }
}

async function reap (worker: Worker): Promise<string> {
  const timer = setTimeout(() => { worker.kill() }, EXIT_GRACE_MS)
  try {
    return await worker.exited
  } finally {
    clearTimeout(timer)
  }
}

function failure (call: SwrkCall, extra: { detail?: string, exit?: string, stderr?: string, resp?: WireResponse }, cause?: Error): CriuError {
  return new CriuError({
    operation: call.operation,
    detail: extra.detail,
    criuMessage: significantMessage(extra.resp?.cr_errmsg, call.logPath),
    criuErrno: extra.resp?.cr_errno,
    exit: extra.exit,
    stderr: extra.stderr,
    logPath: call.logPath,
    logTail: call.logPath === undefined ? undefined : summarizeLog(call.logPath)
  }, cause === undefined ? undefined : { cause })
}

/** Turns the outcome of a conversation into CRIU's final response, or the error it stands for. */
async function finalResponse (worker: Worker, call: SwrkCall, outcome: Conversation): Promise<WireResponse> {
  const { resp, hookError, broken } = outcome
  call.signal?.throwIfAborted() // killing criu breaks the socket: report the abort, not that
  if (broken !== undefined) {
    throw failure(call, { detail: `connection to criu broke: ${broken.message}`, exit: await reap(worker), stderr: worker.stderr() }, broken)
  }
  if (hookError !== undefined) {
    throw failure(call, { detail: `notify hook failed: ${hookError.message}`, resp }, hookError)
  }
  if (resp === undefined) {
    throw failure(call, { detail: 'criu closed the connection without answering', exit: await reap(worker), stderr: worker.stderr() })
  }
  if (resp.type !== call.request.type && resp.type !== ReqType.EMPTY) {
    throw failure(call, { detail: `answer of type ${resp.type} to a request of type ${call.request.type}`, resp })
  }
  return resp
}

/**
 * Runs one request and returns CRIU's final response, whatever its `success`.
 * @throws CriuError when criu cannot be run or dies without answering, or a notify hook failed;
 *         the signal's reason when aborted (criu is then killed with SIGKILL: tasks it had seized
 *         are detached by the kernel and keep running).
 */
export async function callSwrk (call: SwrkCall): Promise<WireResponse> {
  call.signal?.throwIfAborted()
  const worker = startWorker(call.criuPath, call.fds ?? [])
  const onAbort = (): void => { worker.kill() }
  call.signal?.addEventListener('abort', onAbort, { once: true })
  let answered = false
  try {
    const outcome = await converse(worker, call).catch((err: unknown): Conversation => ({ broken: err instanceof Error ? err : new Error(String(err)) }))
    const resp = await finalResponse(worker, call, outcome)
    answered = resp.success
    return resp
  } finally {
    call.signal?.removeEventListener('abort', onAbort)
    worker.channel.close()
    // A successful answer is CRIU's last act (images written and closed, a dumped tree killed):
    // its exit (1-10 ms of a migration's downtime here) is not waited for. A failure's is, so
    // that nothing of it is left running when the caller rolls back.
    if (answered) void reap(worker)
    else await reap(worker)
  }
}

/** Throws the CriuError a failed response stands for; returns the response otherwise. */
export function expectSuccess (call: SwrkCall, resp: WireResponse): WireResponse {
  if (!resp.success) throw failure(call, { resp })
  return resp
}
