/**
 * The argv of a plain `ssi run`, read without commander. Loading and setting up commander is a third
 * of the CLI's own start-up (~4 ms of CPU of ~12 on a 2-core box), and `ssi run` is the command that
 * people and scripts start most often, so runCli takes this path when it can.
 *
 * It recognises only the forms commander would read the same way — separate words, `--opt value`,
 * no `--opt=value`, no `-im` or `-m512M`, no help — and returns undefined for anything else, which
 * then goes through commander (with its error messages and help). Like the run verb's
 * passThroughOptions, the first word that is not one of run's options starts the command; a `--`
 * before it is dropped, everything after it belongs to the command.
 */
import type { RunOptions } from './commands/run.js'

export interface FastRun {
  /** `--socket`, given after `run` or else before it. */
  readonly socket?: string
  readonly json: boolean
  readonly options: RunOptions
  /** The command and its arguments (at least one word). */
  readonly command: string[]
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/** Options of run that take a value: the RunOptions key each one sets. */
const VALUE_OPTIONS: Readonly<Record<string, 'node' | 'memory' | 'cpus' | 'pids' | 'checkpointEvery'>> = {
  '--node': 'node',
  '-m': 'memory',
  '--memory': 'memory',
  '--cpus': 'cpus',
  '--pids': 'pids',
  '--checkpoint-every': 'checkpointEvery'
}

const FLAG_OPTIONS: Readonly<Record<string, 'interactive' | 'detach' | 'cleanEnv'>> = {
  '-i': 'interactive',
  '--interactive': 'interactive',
  '-d': 'detach',
  '--detach': 'detach',
  '--clean-env': 'cleanEnv'
}

/** `ssi [--socket P] [--json] run [run's options] [--] CMD ARGS…`, or undefined for anything else. */
export function parseFastRun (argv: readonly string[]): FastRun | undefined {
  let i = 0
  let topSocket: string | undefined
  let json = false
  for (; i < argv.length && argv[i] !== 'run'; i++) {
    if (argv[i] === '--json') json = true
    else if (argv[i] === '--socket' && i + 1 < argv.length) topSocket = argv[++i]
    else return undefined
  }
  if (i >= argv.length) return undefined
  const options: Mutable<RunOptions> = {}
  let socket: string | undefined
  const env: string[] = []
  for (i++; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '--') {
      i++
      break
    }
    if (!arg.startsWith('-')) break
    const valueKey = VALUE_OPTIONS[arg]
    const flagKey = FLAG_OPTIONS[arg]
    const takesValue = valueKey !== undefined || arg === '-e' || arg === '--env' || arg === '--socket'
    if (takesValue && i + 1 >= argv.length) return undefined // commander's "argument missing"
    if (valueKey !== undefined) options[valueKey] = argv[++i]
    else if (arg === '-e' || arg === '--env') env.push(argv[++i] as string)
    else if (arg === '--socket') socket = argv[++i]
    else if (flagKey !== undefined) options[flagKey] = true
    else if (arg === '--json') json = true
    else return undefined // help, --opt=value, -im, unknown options: commander's business
  }
  const command = argv.slice(i)
  if (command.length === 0) return undefined
  if (env.length > 0) options.env = env
  return { socket: socket ?? topSocket, json, options, command }
}
