/**
 * What every `ssi` command gets: a printer, the global options, and a connected control-API client.
 * Commands depend on these interfaces only, so tests run them against a stub client and a capturing
 * printer (conventions item 1). Types only: nothing here costs start-up time.
 */
import type { Command } from 'commander'
import type { CallOptions, StreamingCall, StreamOptions } from '../api/client.js'
import type { MethodEvent, MethodInput, MethodName, MethodParams, MethodResult } from '../api/schema.js'

/** Where commands print. Each call is one line (or block) without its trailing newline. */
export interface Printer {
  out(text: string): void
  err(text: string): void
}

/** Raw bytes to the caller's stdout (fd 1) or stderr (fd 2); resolves when more may be written. */
export interface OutputSink {
  write(fd: 1 | 2, data: Uint8Array): Promise<void>
}

/**
 * Subscribes to the signals a foreground command forwards to its job (SIGINT, SIGTERM, SIGHUP,
 * SIGQUIT, and SIGPIPE when stdout's reader went away). While subscribed, these signals do not
 * interrupt the CLI. Returns the unsubscribe function.
 */
export type SignalSource = (handler: (signal: string) => void) => () => void

/** The part of ControlClient that commands use; a test stub implements it. */
export interface ApiClient {
  call<M extends MethodName>(method: M, params: MethodParams<M>, options?: CallOptions): Promise<MethodResult<M>>
  stream<M extends MethodName>(
    method: M, params: MethodParams<M>, options?: StreamOptions<MethodEvent<M>>
  ): StreamingCall<MethodEvent<M>, MethodResult<M>, MethodInput<M>>
  close(): void
}

/** Options of `ssi` itself, valid before or after the verb. */
export interface GlobalOptions {
  /** The local daemon's control socket (`--socket`, env SSI_SOCKET, default /run/ssi/ssi.sock). */
  readonly socket: string
  /** Print machine-readable JSON instead of tables. */
  readonly json: boolean
}

export interface CliContext {
  readonly printer: Printer
  /** Aborted when the user interrupts (SIGINT): pass it to every call. */
  readonly signal: AbortSignal
  globals(): GlobalOptions
  /** The client for `--socket`, connected on first use and closed when the command ends. */
  client(): Promise<ApiClient>
  /** Epoch ms now (injected so "3.2s ago" is testable). */
  now(): number
  /** The process exit code when the command succeeds (e.g. a job's exit status). Default 0. */
  setExitCode(code: number): void
  /** The caller's environment. */
  readonly env: Readonly<Record<string, string | undefined>>
  /** The caller's working directory. */
  cwd(): string
  /** Width of the terminal stdout goes to; undefined when it is not a terminal. */
  readonly columns: number | undefined
  /** Width of the terminal stderr goes to; undefined when it is not a terminal (no live progress then). */
  readonly stderrColumns?: number
  /** Where a job's output goes, as raw bytes. */
  readonly output: OutputSink
  /** The caller's stdin as chunks; read only by commands that forward it (`ssi run -i`). */
  stdin(): AsyncIterable<Uint8Array>
  readonly onSignal: SignalSource
}

/** A verb module (`src/cli/commands/<verb>.ts`): adds its arguments, options and action to `cmd`. */
export interface CommandModule {
  register(cmd: Command, ctx: CliContext): void
}
