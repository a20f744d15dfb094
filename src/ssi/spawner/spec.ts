/**
 * Validation of job specs and their encoding for the shim: NUL-terminated "key=value" records
 * (see shim/shim.h), so that no value needs quoting and the C side only splits on NUL.
 */
import { stat } from 'node:fs/promises'
import { isAbsolute } from 'node:path'
import { CgroupLimitError } from '../cgroups/errors.js'
import { checkLimits } from '../cgroups/util.js'
import { JobSpecError } from './errors.js'
import type { JobSpec, RestoreSpec } from './types.js'

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/
const ENV_NAME = /^[^=\0]+$/
const MAX_ID = 0xfffffffe

function check (ok: boolean, message: string): asserts ok {
  if (!ok) throw new JobSpecError(message)
}

const noNul = (s: string): boolean => !s.includes('\0')
const isId = (n: unknown): boolean => Number.isSafeInteger(n) && (n as number) >= 0 && (n as number) <= MAX_ID

function checkPath (path: unknown, what: string): asserts path is string {
  check(typeof path === 'string' && isAbsolute(path) && noNul(path) && path.length < 3900, `${what} must be an absolute path, got ${JSON.stringify(path)}`)
}

function checkCommon (id: unknown, jobsRoot: unknown): void {
  check(typeof id === 'string' && ID.test(id), `job id must match ${ID.source}, got ${JSON.stringify(id)}`)
  checkPath(jobsRoot, 'jobsRoot')
}

function checkArgv (argv: unknown, what: string): void {
  check(Array.isArray(argv) && argv.length > 0, `${what} must be a non-empty array of strings`)
  check(argv.every((a) => typeof a === 'string' && noNul(a)), `${what} must hold strings without NUL`)
  check((argv[0] as string).length > 0, `${what}[0] must not be empty`)
}

/** Checks everything that can be checked before starting; cwd must exist and be a directory. */
export async function validateJobSpec (spec: JobSpec): Promise<void> {
  checkCommon(spec.id, spec.jobsRoot)
  checkArgv(spec.argv, 'argv')
  check(typeof spec.env === 'object' && spec.env !== null, 'env must be an object')
  for (const [name, value] of Object.entries(spec.env)) {
    check(ENV_NAME.test(name) && typeof value === 'string' && noNul(value), `invalid environment variable ${JSON.stringify(name)}`)
  }
  check(isId(spec.uid) && isId(spec.gid), `uid and gid must be integers in 0..${MAX_ID}`)
  check(Array.isArray(spec.groups) && spec.groups.length <= 65536 && spec.groups.every(isId), 'groups must be a list of gids')
  check(typeof spec.hostname === 'string' && HOSTNAME.test(spec.hostname), `invalid hostname ${JSON.stringify(spec.hostname)}`)
  check(typeof spec.stdin === 'boolean', 'stdin must be a boolean')
  checkSpecLimits(spec.limits ?? {})
  checkPath(spec.cwd, 'cwd')
  const info = await stat(spec.cwd).catch(() => undefined)
  check(info?.isDirectory() === true, `cwd ${spec.cwd} is not an existing directory`)
}

/** Limits as the cgroup manager would take them, reported as a spec error. */
function checkSpecLimits (limits: Parameters<typeof checkLimits>[0]): void {
  try {
    checkLimits(limits)
  } catch (err) {
    if (err instanceof CgroupLimitError) throw new JobSpecError(`invalid limits: ${err.message}`, { cause: err })
    throw err
  }
}

export function validateRestoreSpec (spec: RestoreSpec): void {
  checkCommon(spec.id, spec.jobsRoot)
  checkArgv(spec.command, 'command')
  checkPath(spec.pidFile, 'pidFile')
  check(typeof spec.stdin === 'boolean', 'stdin must be a boolean')
  checkSpecLimits(spec.limits ?? {})
}

function encode (records: ReadonlyArray<readonly [string, string | number]>): Buffer {
  return Buffer.from(records.map(([k, v]) => `${k}=${v}\0`).join(''))
}

export interface RunSpecExtras {
  readonly tini: string
  /** cgroup.procs files the job joins before exec. */
  readonly procsFiles: readonly string[]
  /** File with the cgroup's "oom_kill N" counter, read by the shim when the job ends. */
  readonly oomFile: string | undefined
}

export function encodeRunSpec (spec: JobSpec, extras: RunSpecExtras): Buffer {
  const records: Array<[string, string | number]> = [
    ['v', 1], ['tini', extras.tini], ['hostname', spec.hostname], ['cwd', spec.cwd],
    ['uid', spec.uid], ['gid', spec.gid], ['stdin', spec.stdin ? 1 : 0], ['mountproc', spec.privateProc === false ? 0 : 1],
    ['iouring', spec.ioUring === false ? 0 : 1]
  ]
  for (const g of spec.groups) records.push(['group', g])
  for (const file of extras.procsFiles) records.push(['cgroup', file])
  if (extras.oomFile !== undefined) records.push(['oom', extras.oomFile])
  for (const a of spec.argv) records.push(['arg', a])
  for (const [k, v] of Object.entries(spec.env)) records.push(['env', `${k}=${v}`])
  return encode(records)
}

export function encodeRestoreSpec (spec: RestoreSpec, oomFile: string | undefined, procsFiles: readonly string[] = []): Buffer {
  const records: Array<[string, string | number]> = [['v', 1], ['pidfile', spec.pidFile], ['stdin', spec.stdin ? 1 : 0]]
  if (spec.hold === true) records.push(['hold', 1])
  for (const file of procsFiles) records.push(['cgroup', file])
  if (oomFile !== undefined) records.push(['oom', oomFile])
  for (const a of spec.command) records.push(['cmd', a])
  return encode(records)
}
