/**
 * "Each live vpid runs on exactly one node", checked against the machine: the processes in each
 * node's job cgroups and the live shims, next to what `ps` reports. A problem counts as a violation
 * only if it is still there in a second look 1.5 s later and the job had no operation in flight.
 */
import { anyLiveNode, sleep, violation } from './context.js'
import { hostProcesses, jobPlacement, shimPlacement } from './host.js'
import type { SoakContext } from './context.js'
import type { JobInfo } from '../../src/api/schema.js'

interface Snapshot {
  readonly procs: Map<number, Map<string, number>>
  readonly shims: Map<number, string[]>
  readonly ps: readonly JobInfo[] | undefined
  /** vpids with an operation in flight at the start or the end of the snapshot. */
  readonly busy: ReadonlySet<number>
}

interface Problem { readonly vpid: number, readonly kind: string, readonly detail: string }

async function snapshot (ctx: SoakContext): Promise<Snapshot> {
  const busyBefore = [...ctx.busy.keys()]
  const stateDirs = new Map(ctx.c.config.nodes.map(n => [n.name, n.stateDir]))
  const all = await hostProcesses()
  const ps = await ctx.api.call(anyLiveNode(ctx), 'ps', {}).then(r => r.unreachable.length > 0 ? undefined : r.jobs, () => undefined)
  return {
    procs: jobPlacement(all, ctx.c.config.name),
    shims: shimPlacement(all, stateDirs),
    ps,
    busy: new Set([...busyBefore, ...ctx.busy.keys()])
  }
}

const where = (m: Map<string, number> | undefined): string => m === undefined ? 'nowhere' : [...m].map(([n, k]) => `${n}:${k}`).join(' ')

function problems (ctx: SoakContext, s: Snapshot): Problem[] {
  const out: Problem[] = []
  for (const [vpid, nodes] of s.procs) {
    if (!s.busy.has(vpid) && nodes.size > 1) out.push({ vpid, kind: 'runs-twice', detail: `job processes on ${where(nodes)}` })
  }
  for (const [vpid, nodes] of s.shims) {
    if (!s.busy.has(vpid) && nodes.length > 1) out.push({ vpid, kind: 'two-shims', detail: `shims on ${nodes.join(', ')}` })
  }
  if (s.ps === undefined) return out
  const listed = new Map<number, JobInfo[]>()
  for (const j of s.ps) listed.set(j.vpid, [...(listed.get(j.vpid) ?? []), j])
  for (const [vpid, entries] of listed) {
    if (entries.length > 1) out.push({ vpid, kind: 'listed-twice', detail: entries.map(e => `${e.state}@${e.node}`).join(', ') })
    const j = entries[0]
    if (j === undefined || j.state !== 'running' || s.busy.has(vpid) || ctx.down.has(j.node) || !ctx.jobs.has(vpid)) continue
    const real = s.procs.get(vpid)
    if (real === undefined || real.size !== 1 || !real.has(j.node)) out.push({ vpid, kind: 'not-where-ps-says', detail: `ps: running on ${j.node}; processes: ${where(real)}` })
  }
  return out
}

/** One round of the placement check over every job. */
export async function checkPlacement (ctx: SoakContext): Promise<void> {
  ctx.stats.placementChecks++
  const first = problems(ctx, await snapshot(ctx))
  if (first.length === 0) return
  await sleep(1500)
  const again = problems(ctx, await snapshot(ctx))
  for (const p of again) {
    if (first.some(f => f.vpid === p.vpid && f.kind === p.kind)) violation(ctx, p.kind, `${p.detail} (seen twice 1.5 s apart)`, p.vpid)
  }
}

/** One job that should run on `node` only (right after a migration to it was confirmed), not elsewhere too. */
export async function checkOneJob (ctx: SoakContext, vpid: number, node: string, when: string): Promise<void> {
  const look = async (): Promise<string | undefined> => {
    const all = await hostProcesses()
    const real = jobPlacement(all, ctx.c.config.name).get(vpid)
    // No processes at all: the job may have just ended or been killed; its waiter judges that.
    if (real === undefined) return undefined
    return real.size === 1 && real.has(node) ? undefined : `processes on ${where(real)}`
  }
  if (await look() === undefined) return
  await sleep(1500)
  const still = await look()
  // A job that ended meanwhile (or was killed by a fault) is no longer expected anywhere.
  if (still !== undefined && ctx.jobs.get(vpid)?.ended === undefined && ctx.down.size === 0) violation(ctx, 'placement', `${when}: ${still}`, vpid)
}
