/**
 * `ssi run [options] [--] CMD ARGS…`: run a command on the cluster as if it ran here — this shell's
 * environment and working directory, its output live on this terminal, Ctrl-C reaching it, and its
 * exit status as ssi's.
 */
import { parseBytes, parseDurationMs } from '../../util/units.js'
import { UsageError } from '../errors.js'
import { runInForeground } from '../foreground.js'
import { reportJobEnd } from '../job-result.js'
import type { Command } from 'commander'
import type { MethodParams } from '../../api/schema.js'
import type { CliContext } from '../context.js'

export type RunParams = MethodParams<'run'>

export interface RunOptions {
  readonly node?: string
  readonly memory?: string
  readonly cpus?: string
  readonly pids?: string
  readonly interactive?: boolean
  readonly detach?: boolean
  readonly env?: readonly string[]
  readonly cleanEnv?: boolean
  readonly checkpointEvery?: string
}

// The limits the daemon accepts (runParamsSchema; mirrored because the CLI does not load zod).
const MIN_MEMORY_BYTES = 4 * 1024 * 1024
const MIN_CPUS = 0.01
const MAX_CPUS = 4096
const MAX_PIDS = 4_194_304

const HELP = `
The job gets this shell's environment and working directory. --env adds to or overrides that
environment; with --clean-env the job gets only PATH and the --env variables.
Options after the command belong to it: \`ssi run -- grep --json x\` passes --json to grep.

Its stdout and stderr arrive here as it writes them, and ssi run exits with its status (128+N when
signal N ended it). A job the kernel killed for exceeding --memory gets one line on stderr and exits
137. Ctrl-C, SIGTERM, SIGHUP and SIGQUIT are forwarded to the job; a second Ctrl-C within 1 s is
forwarded too and then detaches (exit 130): the job may still be running (ssi ps, ssi kill VPID).

Exit status: the job's (126: the command cannot be run, 127: not found, as from a shell); 125 when
ssi itself fails (bad arguments, unknown node, no daemon, the job could not be started); 254 when the
job was lost with its node; 130 when a second Ctrl-C detached.`

export function register (cmd: Command, ctx: CliContext): void {
  cmd.usage('[options] [--] <command> [args...]')
    .argument('<command...>', 'the command to run and its arguments')
    .option('--node <name>', 'run it on this node instead of the one placement picks')
    .option('-m, --memory <size>', 'memory limit, e.g. 512M or 1GiB (K/M/G binary, KB/MB/GB decimal)')
    .option('--cpus <n>', 'CPU limit in cores, e.g. 0.5 or 2')
    .option('--pids <n>', 'limit on the processes and threads of the job')
    .option('-i, --interactive', 'forward stdin to the job (until end of file)')
    .option('-d, --detach', 'print the vpid and return as soon as the job has started')
    .option('-e, --env <name=value>', 'set a variable for the job (repeatable); a bare NAME copies it from here', collect)
    .option('--clean-env', 'do not pass this shell\'s environment (PATH excepted)')
    .option('--checkpoint-every <duration>', 'checkpoint the job this often (e.g. 60s, 5m), keeping the last good one on another node')
    .passThroughOptions()
    .addHelpText('after', HELP)
    .action(async (argv: string[], opts: RunOptions) => { await runJob(argv, opts, ctx) })
}

/** What `ssi run` does once its argv is parsed (by commander, or by cli/fast-run.ts). */
export async function runJob (argv: readonly string[], opts: RunOptions, ctx: CliContext): Promise<void> {
  const params = buildRunParams(argv, opts, ctx)
  const client = await ctx.client()
  if (params.detach === true) {
    const result = await client.call('run', params, { signal: ctx.signal })
    ctx.printer.out(ctx.globals().json ? JSON.stringify(result, null, 2) : String(result.vpid))
    if (result.state === 'failed') reportJobEnd(ctx, result)
    return
  }
  const result = await runInForeground(ctx, client, params)
  if (result === undefined) return // detached by a second Ctrl-C
  if (ctx.globals().json) ctx.printer.out(JSON.stringify(result, null, 2))
  reportJobEnd(ctx, result)
}

function collect (value: string, previous: readonly string[] | undefined): string[] {
  return [...(previous ?? []), value]
}

/** The `run` params for argv and options. Throws UsageError for bad limits or --env entries. */
export function buildRunParams (argv: readonly string[], opts: RunOptions, ctx: Pick<CliContext, 'env' | 'cwd'>): RunParams {
  if (opts.node?.trim() === '') throw new UsageError('--node: empty node name')
  return {
    argv: [...argv],
    env: jobEnvironment(opts, ctx.env),
    cwd: ctx.cwd(),
    stdin: opts.interactive === true,
    detach: opts.detach === true,
    ...(opts.node === undefined ? {} : { node: opts.node }),
    ...(opts.memory === undefined ? {} : { memoryBytes: parseMemory(opts.memory) }),
    ...(opts.cpus === undefined ? {} : { cpus: parseCpus(opts.cpus) }),
    ...(opts.pids === undefined ? {} : { pids: parsePids(opts.pids) }),
    ...(opts.checkpointEvery === undefined ? {} : { checkpointEveryMs: parseCheckpointEvery(opts.checkpointEvery) })
  }
}

/** The caller's environment (or only PATH with --clean-env), then the --env entries in order. */
export function jobEnvironment (opts: Pick<RunOptions, 'env' | 'cleanEnv'>, callerEnv: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const env: Record<string, string> = {}
  const inherit = (name: string): void => {
    const value = callerEnv[name]
    if (value !== undefined) env[name] = value
  }
  if (opts.cleanEnv === true) inherit('PATH')
  else for (const name of Object.keys(callerEnv)) inherit(name)
  for (const entry of opts.env ?? []) {
    const eq = entry.indexOf('=')
    const name = eq === -1 ? entry : entry.slice(0, eq)
    if (name === '' || name.includes('\0')) throw new UsageError(`--env: "${entry}" is not NAME=VALUE`)
    if (eq === -1) inherit(name)
    else env[name] = entry.slice(eq + 1)
  }
  return env
}

export function parseMemory (text: string): number {
  let bytes: number
  try {
    bytes = parseBytes(text)
  } catch (err) {
    throw new UsageError(`--memory: ${(err as Error).message}`)
  }
  if (bytes < MIN_MEMORY_BYTES) throw new UsageError(`--memory: "${text}" is below the minimum of 4 MiB`)
  return bytes
}

export function parseCpus (text: string): number {
  const cpus = /^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(text) ? Number(text) : NaN
  if (!Number.isFinite(cpus)) throw new UsageError(`--cpus: "${text}" is not a number of cores (examples: 0.5, 2)`)
  if (cpus < MIN_CPUS || cpus > MAX_CPUS) throw new UsageError(`--cpus: ${text} is out of range (${MIN_CPUS} to ${MAX_CPUS})`)
  return cpus
}

export function parseCheckpointEvery (text: string): number {
  let ms: number
  try {
    ms = parseDurationMs(text)
  } catch (err) {
    throw new UsageError(`--checkpoint-every: ${(err as Error).message}`)
  }
  if (ms < 1000 || ms > 2 ** 31 - 1) throw new UsageError(`--checkpoint-every: "${text}" is out of range (1s to 24 days)`)
  return ms
}

export function parsePids (text: string): number {
  const pids = /^\s*\d+\s*$/.test(text) ? Number(text) : NaN
  if (!Number.isSafeInteger(pids) || pids < 1 || pids > MAX_PIDS) {
    throw new UsageError(`--pids: "${text}" is not a whole number from 1 to ${MAX_PIDS}`)
  }
  return pids
}
