/**
 * CRIU processes a killed daemon left behind. `criu swrk` ends with its daemon's socket, but a
 * post-copy target's `criu lazy-pages` daemon is a process of its own: after its daemon died it
 * waits for pages that never come, holding its image dir, forever.
 */
import { readdir, readFile } from 'node:fs/promises'

/** SIGKILLs every CRIU process whose command line names a path under `dir`; returns their pids. */
export async function killStaleCriu (dir: string): Promise<number[]> {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`
  const killed: number[] = []
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue
    const argv = (await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')).split('\0')
    if (!argv.some(a => /(^|\/)criu$/.test(a)) || !argv.some(a => a.startsWith(prefix))) continue
    try { process.kill(Number(name), 'SIGKILL'); killed.push(Number(name)) } catch { /* gone meanwhile */ }
  }
  return killed
}
