/** Errors of the CRIU driver. */
import { readFileSync } from 'node:fs'

/** What is known about a failed CRIU request. */
export interface CriuFailure {
  /** The request: 'dump', 'restore', 'check', ... */
  readonly operation: string
  /** CRIU's first logged error (cr_errmsg), when it sent one. */
  readonly criuMessage?: string
  /** CRIU's cr_errno (an errno value, or CRIU's own code), when non-zero. */
  readonly criuErrno?: number
  /** The log file CRIU wrote for this request, when one was requested. */
  readonly logPath?: string
  /** The last error lines of that log (and its last lines), for the message. */
  readonly logTail?: string
  /** What the criu process printed on stderr (tail), if anything. */
  readonly stderr?: string
  /** Exit code or signal of the criu process, when it died without answering. */
  readonly exit?: string
  /** Extra words about what went wrong, when it was not CRIU that said it. */
  readonly detail?: string
}

function describe (f: CriuFailure): string {
  const parts = [`criu ${f.operation} failed`]
  if (f.detail !== undefined) parts.push(f.detail)
  if (f.criuMessage !== undefined && f.criuMessage !== '') parts.push(`criu: ${f.criuMessage.trim()}`)
  if (f.criuErrno !== undefined && f.criuErrno !== 0) parts.push(`cr_errno ${f.criuErrno}`)
  if (f.exit !== undefined) parts.push(f.exit)
  if (f.logPath !== undefined) parts.push(`log: ${f.logPath}`)
  let message = parts.join('; ')
  if (f.logTail !== undefined && f.logTail !== '') message += `\n--- log tail ---\n${f.logTail}`
  if (f.stderr !== undefined && f.stderr.trim() !== '') message += `\n--- stderr ---\n${f.stderr.trim()}`
  return message
}

/** A CRIU request that did not succeed: carries CRIU's own message, errno and the log path. */
export class CriuError extends Error {
  static override name = 'CriuError'
  override name = 'CriuError'
  readonly operation: string
  readonly criuMessage: string | undefined
  readonly criuErrno: number | undefined
  readonly logPath: string | undefined

  constructor (readonly failure: CriuFailure, options?: ErrorOptions) {
    super(describe(failure), options)
    this.operation = failure.operation
    this.criuMessage = failure.criuMessage
    this.criuErrno = failure.criuErrno
    this.logPath = failure.logPath
  }
}

/** No usable criu binary was found. */
export class CriuNotFoundError extends Error {
  static override name = 'CriuNotFoundError'
  override name = 'CriuNotFoundError'
}

/** The criu found is older than ssi needs. */
export class CriuVersionError extends Error {
  static override name = 'CriuVersionError'
  override name = 'CriuVersionError'
}

/**
 * Errors CRIU logs on every run in some environments without failing because of them: e.g. here
 * root lacks CAP_SYS_RESOURCE, so "rlimit: Can't setup RLIMIT_NOFILE" is CRIU's first error (and
 * so its cr_errmsg) even when the real failure is something else.
 */
const HARMLESS_ERRORS = [/rlimit: Can't setup RLIMIT_NOFILE/]

const isHarmless = (line: string): boolean => HARMLESS_ERRORS.some((re) => re.test(line))

function readLogLines (logPath: string): string[] {
  try {
    return readFileSync(logPath, 'utf8').split('\n').filter((line) => line.trim() !== '')
  } catch {
    return [] // CRIU may have died before writing it
  }
}

const errorLines = (lines: string[]): string[] => lines.filter((line) => /\bError\b/.test(line) && !isHarmless(line))

/**
 * The lines of a CRIU log worth showing: its error lines (last `maxErrors`, harmless ones left
 * out) then its last `lastLines` lines. Empty if the log cannot be read.
 */
export function summarizeLog (logPath: string, maxErrors = 12, lastLines = 6): string {
  const lines = readLogLines(logPath)
  const errors = errorLines(lines).slice(-maxErrors)
  const tail = lines.slice(-lastLines).filter((line) => !errors.includes(line) && !isHarmless(line))
  return [...errors, ...(tail.length > 0 && errors.length > 0 ? ['...'] : []), ...tail].join('\n')
}

/**
 * CRIU's message for a failure: its cr_errmsg, unless that is a known harmless line, in which case
 * the first other error of the log (without the timestamp prefix).
 */
export function significantMessage (crErrmsg: string | undefined, logPath: string | undefined): string | undefined {
  if (crErrmsg !== undefined && crErrmsg.trim() !== '' && !isHarmless(crErrmsg)) return crErrmsg.trim()
  const first = logPath === undefined ? undefined : errorLines(readLogLines(logPath))[0]
  return first?.replace(/^\(\s*[\d.]+\)\s*/, '').trim() ?? crErrmsg?.trim()
}
