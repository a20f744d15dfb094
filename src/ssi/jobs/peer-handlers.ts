/** The executing-node and home-node sides of the job methods, validated before use. */
import { parseParams } from '../../protocol/peer.js'
import { jobOutputSchema, jobSignalSchema, jobStartSchema, jobStdinSchema, jobSupersedeSchema, locationSetSchema, vpidParamSchema } from '../../protocol/jobs.js'
import { VpidNotFoundError } from './errors.js'
import { locKey, TERMINAL_STATES } from './record.js'
import { listLost, lostKey, recoveredKey } from '../failure/lost.js'
import type { LocationRecord } from '../failure/lost.js'
import type { JobRecord, JobState } from './record.js'
import type { LocalJobs, JobStore } from './local.js'
import type { PeerHandlerContext, PeerRpc } from '../ports.js'

/** Emits the job's output from the offsets ({fd, data} events); resolves with its record (its final one with `follow`). */
async function sendOutput (local: LocalJobs, vpid: number, follow: boolean, offsets: readonly [number, number], ctx: PeerHandlerContext): Promise<{ record: JobRecord }> {
  const pump = async (fd: 1 | 2, offset: number): Promise<void> => {
    for await (const data of local.output(vpid, fd, offset, follow, ctx.signal)) await ctx.emit({ fd, data })
  }
  await Promise.all([pump(1, offsets[0]), pump(2, offsets[1])])
  // With the record the caller needs no second call to learn how the job ended (or that it moved).
  return { record: follow ? await local.settled(vpid, ctx.signal) : local.get(vpid) }
}

export function registerJobPeerHandlers (rpc: PeerRpc, local: LocalJobs, store: JobStore): void {
  rpc.handle('job.start', async p => await local.start(parseParams(jobStartSchema, p)))
  // Jobs running here, and the jobs launched here whose node died (failure/lost.ts).
  rpc.handle('job.list', async () => [...await local.list(), ...await listLost(store)])
  rpc.handle('job.get', async p => await local.snapshot(parseParams(vpidParamSchema, p).vpid))
  rpc.handle('job.signal', async p => {
    const { vpid, signal, asUid } = parseParams(jobSignalSchema, p)
    await local.signal(vpid, signal as NodeJS.Signals, asUid)
    return {}
  })
  rpc.handle('job.supersede', async p => {
    const { vpid, node } = parseParams(jobSupersedeSchema, p)
    return { superseded: await local.supersede(vpid, node) }
  })
  rpc.handle('job.wait', async (p, ctx) => await local.wait(parseParams(vpidParamSchema, p).vpid, ctx.signal))
  rpc.handle('job.stdin', async (p, ctx) => {
    const { vpid, asUid, data, eof } = parseParams(jobStdinSchema, p)
    return await local.stdin(vpid, asUid, data, eof ?? false, ctx.signal)
  })
  rpc.handle('job.output', async (p, ctx) => {
    const { vpid, follow, stdoutOffset, stderrOffset } = parseParams(jobOutputSchema, p)
    return await sendOutput(local, vpid, follow, [stdoutOffset, stderrOffset], ctx)
  })
  // job.start and then job.output (follow, from the start) in one call: an attached `ssi run` saves
  // a round trip, and the output is followed from the moment the job runs. The first event is
  // `{ started: record }`; the caller falls back to the two calls where this method is unknown.
  rpc.handle('job.run', async (p, ctx) => {
    const record = await local.start(parseParams(jobStartSchema, p))
    await ctx.emit({ started: record })
    return await sendOutput(local, record.vpid, true, [0, 0], ctx)
  })
  rpc.handle('loc.get', async p => {
    const { vpid } = parseParams(vpidParamSchema, p)
    const loc = await store.get<LocationRecord>(locKey(vpid))
    if (loc === undefined) throw new VpidNotFoundError(`no job with vpid ${vpid}`)
    const { record: _r, ...where } = loc
    const recovered = await store.get(recoveredKey(vpid))
    return { ...where, ...(recovered === undefined ? {} : { recovered }), ...(loc.state === 'lost' ? { lost: await store.get(lostKey(vpid)) } : {}) }
  })
  rpc.handle('loc.set', async p => {
    const loc = parseParams(locationSetSchema, p)
    const known = await store.get<LocationRecord>(locKey(loc.vpid))
    // The end of a stale copy (killed after a restore elsewhere) must not hide where the job runs.
    const stale = known !== undefined && known.node !== loc.node && !TERMINAL_STATES.has(known.state as JobState) && TERMINAL_STATES.has(loc.state as JobState)
    if (stale) return {}
    await store.put(locKey(loc.vpid), loc)
    if (loc.state !== 'lost') await store.del(lostKey(loc.vpid))
    return {}
  })
}
