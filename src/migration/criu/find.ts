/** Finding the criu to use and checking that it is recent enough. */
import { accessSync, constants, readFileSync } from 'node:fs'
import { delimiter, isAbsolute, join } from 'node:path'
import { Criu, type CriuVersion } from './criu.js'
import { CriuNotFoundError, CriuVersionError } from './errors.js'
import type { CriuLogger } from './swrk.js'

/** Written by scripts/provision.sh: the absolute path of the criu to use. */
export const CRIU_PATH_FILE = '/opt/ssi/criu.path'
/** Kernels >= 6.16 need CRIU >= 4.2 (older ones cannot dump inet sockets; see docs/criu.md). */
export const MIN_CRIU_VERSION = { major: 4, minor: 2 } as const

export interface FindCriuOptions {
  /** Default CRIU_PATH_FILE. */
  readonly pathFile?: string
  /** Default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>
  readonly logger?: CriuLogger
  readonly signal?: AbortSignal
}

export interface FoundCriu {
  readonly path: string
  readonly version: CriuVersion
  /** Where the path came from: 'SSI_CRIU', the path file, or 'PATH'. */
  readonly source: string
}

function isExecutable (path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

function fromPathFile (file: string): string | undefined {
  try {
    const path = readFileSync(file, 'utf8').trim()
    return path === '' ? undefined : path
  } catch {
    return undefined
  }
}

function fromSearchPath (env: FindCriuOptions['env']): string | undefined {
  const dirs = (env?.PATH ?? '').split(delimiter).filter((dir) => dir !== '')
  return dirs.map((dir) => join(dir, 'criu')).find(isExecutable)
}

/** Candidates in order: $SSI_CRIU (an explicit choice wins), the provisioned path file, PATH. */
function candidates (options: FindCriuOptions): Array<{ path: string, source: string }> {
  const env = options.env ?? process.env
  const pathFile = options.pathFile ?? CRIU_PATH_FILE
  const found = [
    { path: env.SSI_CRIU, source: 'SSI_CRIU' },
    { path: fromPathFile(pathFile), source: pathFile },
    { path: fromSearchPath(env), source: 'PATH' }
  ]
  return found.filter((c): c is { path: string, source: string } => c.path !== undefined && c.path !== '')
}

export function versionAtLeast (v: Pick<CriuVersion, 'major' | 'minor'>, min = MIN_CRIU_VERSION): boolean {
  return v.major > min.major || (v.major === min.major && v.minor >= min.minor)
}

/**
 * The criu to use, with its version (asked over RPC).
 * @throws CriuNotFoundError when no candidate exists or is executable; CriuVersionError when the
 *         first executable candidate is older than 4.2 (a wrong explicit choice is not skipped).
 */
export async function findCriu (options: FindCriuOptions = {}): Promise<FoundCriu> {
  const all = candidates(options)
  const usable = all.find((c) => isAbsolute(c.path) && isExecutable(c.path))
  if (usable === undefined) {
    const tried = all.length === 0 ? 'no $SSI_CRIU, no ' + (options.pathFile ?? CRIU_PATH_FILE) + ', no criu on PATH' : all.map((c) => `${c.path} (${c.source})`).join(', ')
    throw new CriuNotFoundError(`no usable criu >= ${MIN_CRIU_VERSION.major}.${MIN_CRIU_VERSION.minor}: ${tried}; run scripts/provision.sh as root`)
  }
  const probe = new Criu({ criuPath: usable.path, workDir: '/', logger: options.logger })
  let version: CriuVersion
  try {
    version = await probe.version({ signal: options.signal })
  } catch (err) {
    throw new CriuVersionError(`${usable.path} (from ${usable.source}) does not answer a VERSION request; it is probably older than ${MIN_CRIU_VERSION.major}.${MIN_CRIU_VERSION.minor} or broken on this kernel`, { cause: err })
  }
  if (!versionAtLeast(version)) {
    throw new CriuVersionError(`${usable.path} (from ${usable.source}) is CRIU ${version.text}; ssi needs >= ${MIN_CRIU_VERSION.major}.${MIN_CRIU_VERSION.minor} (run scripts/provision.sh)`)
  }
  options.logger?.debug({ path: usable.path, source: usable.source, version: version.text }, 'criu found')
  return { path: usable.path, version, source: usable.source }
}
