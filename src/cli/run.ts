/**
 * The `ssi` command line, minus the process: parses argv, loads the one verb module it needs, runs it,
 * and turns any failure into one `ssi: <message>` line and an exit code. main.ts wires it to the real
 * process; tests call runCli with a stub client and a capturing printer.
 *
 * A plain `ssi run` (fast-run.ts) is run without loading commander at all, which is why commander
 * is imported on demand here.
 */
import { DEFAULT_SOCKET_PATH } from '../api/constants.js'
import { DaemonAccessDeniedError, DaemonConnectError, DaemonNotRunningError } from '../api/errors.js'
import { UsageError } from './errors.js'
import { parseFastRun } from './fast-run.js'
import { streamOutput } from './io.js'
import { verbs } from './verbs.js'
import type { ApiClient, CliContext, GlobalOptions, OutputSink, Printer, SignalSource } from './context.js'
import type { Command } from 'commander'
import type * as CommanderModule from 'commander'

export const EXIT_OK = 0
/** The command failed (the daemon returned an error, the job failed to start, ...). */
export const EXIT_FAILURE = 1
/** Bad arguments. */
export const EXIT_USAGE = 2
/** No daemon to talk to (not running, or not allowed to connect). */
export const EXIT_NO_DAEMON = 3
/** Interrupted by SIGINT. */
export const EXIT_INTERRUPTED = 130
/**
 * ssi itself failed (bad arguments, unknown node, no daemon, the job could not be started) in a verb
 * whose exit status is otherwise the job's (`run`, `wait`): docker/podman's convention, so a script
 * can tell "the job exited 1" from "ssi failed". 126/127 (cannot invoke / not found) come from the
 * job's init, as from a shell.
 */
export const EXIT_SSI_ERROR = 125

/** Verbs that exit with the job's status, so that their own failures must not look like one. */
const JOB_STATUS_VERBS = new Set(['run', 'wait'])

export interface CliDeps {
  readonly printer: Printer
  readonly env: Readonly<Record<string, string | undefined>>
  /** Connects to the daemon's control socket (the real one is ControlClient.connect). */
  readonly connect: (socketPath: string, signal: AbortSignal) => Promise<ApiClient>
  /** Aborted on SIGINT. */
  readonly signal?: AbortSignal
  readonly now?: () => number
  /** Raw job output. Default: process.stdout and process.stderr, with backpressure. */
  readonly output?: OutputSink
  /** The caller's stdin. Default: process.stdin (only touched by `ssi run -i`). */
  readonly stdin?: () => AsyncIterable<Uint8Array>
  /** Signals to forward to a foreground job. Default: none arrive. */
  readonly onSignal?: SignalSource
  /** Default: process.cwd(). */
  readonly cwd?: () => string
  /** Terminal width of stdout, if it is a terminal. */
  readonly columns?: number
  /** Terminal width of stderr, if it is a terminal (live progress lines go there). */
  readonly stderrColumns?: number
}

/** Runs `ssi <argv>` and resolves with the exit code. Never throws, never exits the process. */
export async function runCli (argv: readonly string[], deps: CliDeps): Promise<number> {
  let exitCode = EXIT_OK
  let client: Promise<ApiClient> | undefined
  let commander: Pick<typeof CommanderModule, 'Command' | 'CommanderError'> | undefined
  const signal = deps.signal ?? new AbortController().signal
  const fast = parseFastRun(argv)
  let globals = (): GlobalOptions => ({ socket: fast?.socket ?? defaultSocket(deps), json: fast?.json === true })
  const ctx: CliContext = {
    printer: deps.printer,
    signal,
    globals: () => globals(),
    client: async () => await (client ??= deps.connect(socketPath(globals().socket), signal)),
    now: deps.now ?? Date.now,
    setExitCode: (code) => { exitCode = code },
    env: deps.env,
    cwd: deps.cwd ?? (() => process.cwd()),
    columns: deps.columns,
    stderrColumns: deps.stderrColumns,
    output: deps.output ?? streamOutput(process.stdout, process.stderr),
    stdin: deps.stdin ?? (() => process.stdin),
    onSignal: deps.onSignal ?? (() => () => {})
  }
  try {
    if (fast !== undefined) {
      const { runJob } = await import('./commands/run.js')
      await runJob(fast.command, fast.options, ctx)
      return exitCode
    }
    commander = await import('./commander.js')
    const program = createProgram(commander.Command, deps)
    const verbCommand = await addVerbs(program, findVerb(argv), ctx)
    globals = () => globalsOf(program, verbCommand)
    await program.parseAsync([...argv], { from: 'user' })
    return exitCode
  } catch (err) {
    const code = reportError(err, deps, signal, commander?.CommanderError)
    const verb = fast !== undefined ? 'run' : findVerb(argv)
    return verb !== undefined && JOB_STATUS_VERBS.has(verb) && code !== EXIT_INTERRUPTED ? EXIT_SSI_ERROR : code
  } finally {
    if (client !== undefined) (await client.catch(() => undefined))?.close()
  }
}

/** The socket to connect to; an empty one (`--socket ''`) is a usage error, not a TCP port. */
function socketPath (path: string): string {
  if (path === '') throw new UsageError(`the control socket path is empty (--socket or SSI_SOCKET): give the daemon's socket, e.g. ${DEFAULT_SOCKET_PATH}`)
  return path
}

function defaultSocket (deps: CliDeps): string {
  return deps.env.SSI_SOCKET ?? DEFAULT_SOCKET_PATH
}

function createProgram (CommandClass: typeof CommanderModule.Command, deps: CliDeps): Command {
  const trimmed = (write: (text: string) => void) => (text: string): void => { write(text.replace(/\n+$/, '')) }
  return new CommandClass('ssi')
    .description('Run and watch processes on an ssi cluster as if it were one machine.')
    .option('--socket <path>', 'control socket of the local ssi daemon (env SSI_SOCKET)', defaultSocket(deps))
    .option('--json', 'print machine-readable JSON')
    // Options after a verb belong to the verb: `ssi run -- cmd --json` passes --json to cmd. Every
    // verb repeats --socket and --json (addGlobalOptions) so `ssi nodes --json` works too.
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({
      writeOut: trimmed(text => { deps.printer.out(text) }),
      writeErr: trimmed(text => { deps.printer.err(text) }),
      outputError: () => {} // reportError prints the one line
    })
}

/** The global options, given before the verb (program) or after it (the verb's copy wins). */
function globalsOf (program: Command, verb: Command | undefined): GlobalOptions {
  const top = program.opts<{ socket: string, json?: boolean }>()
  const local = verb?.opts<{ socket?: string, json?: boolean }>() ?? {}
  return { socket: local.socket ?? top.socket, json: local.json === true || top.json === true }
}

function addGlobalOptions (cmd: Command): Command {
  return cmd.option('--socket <path>', 'control socket of the local ssi daemon (env SSI_SOCKET)')
    .option('--json', 'print machine-readable JSON')
}

/**
 * Registers every verb: the one being run (`verb`) from its module, the others as name + summary only,
 * which is all `ssi --help` and "unknown command" suggestions need. Returns the verb's command.
 */
async function addVerbs (program: Command, verb: string | undefined, ctx: CliContext): Promise<Command | undefined> {
  let found: Command | undefined
  for (const entry of verbs) {
    const cmd = program.command(entry.name).description(entry.summary)
    if (entry.name !== verb) continue
    found = addGlobalOptions(cmd)
    const module = await entry.load()
    module.register(cmd, ctx)
  }
  return found
}

/** Options of `ssi` itself that take a value: their value is not the verb. */
const GLOBAL_OPTIONS_WITH_VALUE = new Set(['--socket'])

/** The verb in argv: the first word that is neither an option nor an option's value (`help x` → x). */
export function findVerb (argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '--') return undefined
    if (GLOBAL_OPTIONS_WITH_VALUE.has(arg)) i++
    else if (!arg.startsWith('-') && arg !== 'help') return arg
  }
  return undefined
}

/** `commanderError`: commander's error class, if it was loaded (no commander, no CommanderError). */
function reportError (err: unknown, deps: CliDeps, signal: AbortSignal, commanderError?: typeof CommanderModule.CommanderError): number {
  if (commanderError !== undefined && err instanceof commanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
      return err.exitCode
    }
    deps.printer.err(`ssi: ${oneLine(err.message.replace(/^error: /, ''))}`)
    return EXIT_USAGE
  }
  if (err instanceof UsageError) {
    deps.printer.err(`ssi: ${oneLine(err.message)}`)
    return EXIT_USAGE
  }
  if (signal.aborted) {
    deps.printer.err('ssi: interrupted')
    return EXIT_INTERRUPTED
  }
  deps.printer.err(`ssi: ${oneLine(err instanceof Error ? err.message : String(err))}`)
  if (deps.env.SSI_DEBUG !== undefined && err instanceof Error && err.stack !== undefined) deps.printer.err(err.stack)
  const noDaemon = err instanceof DaemonNotRunningError || err instanceof DaemonAccessDeniedError || err instanceof DaemonConnectError
  return noDaemon ? EXIT_NO_DAEMON : EXIT_FAILURE
}

function oneLine (message: string): string {
  const text = message.split('\n').map(line => line.trim()).filter(line => line !== '').join('; ')
  return text === '' ? 'failed (no message)' : text
}
