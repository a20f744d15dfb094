/**
 * What really runs on this machine, read from /proc and cgroupfs rather than from the daemons:
 * which node's cgroup holds processes of which vpid, the ssi processes of a cluster, and how to kill
 * a whole node (its daemon and everything it started) as a power cut would.
 */
import { readdir, readFile, readlink } from 'node:fs/promises'

export interface HostProcess {
  readonly pid: number
  readonly comm: string
  readonly cmdline: string
  readonly cgroup: string
  readonly cwd: string
}

async function readProcess (pid: number): Promise<HostProcess | undefined> {
  try {
    const [comm, cmdline, cgroup, cwd] = await Promise.all([
      readFile(`/proc/${pid}/comm`, 'utf8'),
      readFile(`/proc/${pid}/cmdline`, 'utf8'),
      readFile(`/proc/${pid}/cgroup`, 'utf8'),
      readlink(`/proc/${pid}/cwd`).catch(() => '')
    ])
    return { pid, comm: comm.trim(), cmdline: cmdline.split('\0').join(' ').trim(), cgroup, cwd }
  } catch {
    return undefined // gone meanwhile
  }
}

/** Every process on the host (kernel threads have an empty cmdline and are left out). */
export async function hostProcesses (): Promise<HostProcess[]> {
  const pids = (await readdir('/proc')).filter(n => /^\d+$/.test(n)).map(Number).filter(p => p !== process.pid)
  const all = await Promise.all(pids.map(readProcess))
  return all.filter((p): p is HostProcess => p !== undefined && p.cmdline !== '')
}

/** The cluster's processes, by what ties them to it: its job cgroups, its dir in argv or as cwd. */
export function clusterProcesses (all: readonly HostProcess[], cluster: string, dir: string): HostProcess[] {
  return all.filter(p => p.cgroup.includes(`/ssi-${cluster}-`) || p.cmdline.includes(dir) || p.cwd.startsWith(dir))
}

/**
 * vpid → node → number of job processes, from each process's cgroup (`ssi-<cluster>-<node>/<vpid>`).
 * CRIU itself is left out: a restore runs inside the job's new cgroup before the job exists there.
 */
export function jobPlacement (all: readonly HostProcess[], cluster: string): Map<number, Map<string, number>> {
  const re = new RegExp(`/ssi-${cluster}-([^/\\s]+)/(\\d+)(?:/|$)`, 'm')
  const out = new Map<number, Map<string, number>>()
  for (const p of all) {
    if (p.comm === 'criu') continue
    const m = re.exec(p.cgroup)
    if (m === null) continue
    const vpid = Number(m[2])
    const node = m[1] ?? ''
    const perNode = out.get(vpid) ?? new Map<string, number>()
    perNode.set(node, (perNode.get(node) ?? 0) + 1)
    out.set(vpid, perNode)
  }
  return out
}

/** vpid → nodes whose state dir has a live `ssi-shim` supervising that vpid. */
export function shimPlacement (all: readonly HostProcess[], stateDirOf: ReadonlyMap<string, string>): Map<number, string[]> {
  const out = new Map<number, string[]>()
  for (const p of all) {
    const m = /ssi-shim (?:run|restore) (\S+)\/jobs\/(\d+)$/.exec(p.cmdline)
    if (m === null) continue
    const node = [...stateDirOf].find(([, d]) => d === m[1])?.[0]
    if (node === undefined) continue
    const vpid = Number(m[2])
    out.set(vpid, [...(out.get(vpid) ?? []), node])
  }
  return out
}

/**
 * A power cut of one node: its daemon, the shims and CRIU processes working in its state dir and
 * every process in its job cgroups are stopped first (so none reacts to another's death), then
 * killed; again until none is left, since a process forked meanwhile (a shim the daemon was
 * starting, a tree CRIU was restoring) would otherwise survive the cut.
 */
export async function killNode (cluster: string, node: string, stateDir: string, daemonPid: number): Promise<number> {
  const killed = new Set<number>()
  for (let round = 0; round < 50; round++) {
    const mine = (await hostProcesses()).filter(p => p.pid === daemonPid || p.cgroup.includes(`/ssi-${cluster}-${node}/`) || p.cmdline.includes(`${stateDir}/`) || p.cwd.startsWith(stateDir))
    const pids = [...new Set([...(round === 0 ? [daemonPid] : []), ...mine.map(p => p.pid)])]
    if (pids.length === 0) break
    for (const pid of pids) try { process.kill(pid, 'SIGSTOP') } catch { /* gone */ }
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } killed.add(pid) }
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  return killed.size
}
