/** Running iproute2/iptables commands for the netns network, with errors that say what failed. */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const execFileAsync = promisify(execFile)

export class NetnsError extends Error {
  static override name = 'NetnsError'
  override name = 'NetnsError'
}

/** Runs a command; @throws NetnsError with its stderr. */
export async function run (cmd: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { timeout: 15_000 })
    return stdout
  } catch (err) {
    const e = err as Error & { stderr?: string }
    throw new NetnsError(`${cmd} ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`, { cause: err })
  }
}

/** Runs a command; undefined if it failed. */
export async function tryRun (cmd: string, args: readonly string[]): Promise<string | undefined> {
  try { return await run(cmd, args) } catch { return undefined }
}

/**
 * The iptables front ends to configure: `iptables` and, when present, `iptables-legacy` too, since
 * with br_netfilter bridged frames cross the FORWARD hooks of both (Docker may use either).
 */
export const IPTABLES = ['iptables', 'iptables-legacy'] as const

/** Runs `bin` (an iptables, waiting for its lock): whether it succeeded; with `must`, a failure throws. */
export async function ipt (bin: string, args: readonly string[], must = false): Promise<boolean> {
  if (must) { await run(bin, ['-w', ...args]); return true }
  return await tryRun(bin, ['-w', ...args]) !== undefined
}
