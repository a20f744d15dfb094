/** Control-API handlers of checkpoint to disk and restore: checkpoint, restore, restoreLast. */
import { parseVpid } from '../../ssi/vpid.js'
import type { ControlServer } from '../control-server.js'
import type { CheckpointOperations } from '../checkpoint/operations.js'
import type { PeriodicCheckpoints, PeriodicRecord } from '../checkpoint/periodic.js'
import type { JobHandlerHooks } from './jobs.js'
import type { PeerRpc } from '../../ssi/ports.js'
import type { JobInfo } from '../../api/schema.js'

export function registerCheckpointHandlers (control: ControlServer, ops: CheckpointOperations): void {
  control.handle('checkpoint', async (p, ctx) => {
    const r = await ops.checkpointToDir(parseVpid(p.vpid), ctx.caller, p.leaveRunning, p.dir, ctx.signal)
    return { vpid: r.vpid, node: r.node, dir: r.dir, takenMs: r.takenMs, dumpMs: r.dumpMs, transferMs: r.transferMs, totalMs: r.totalMs, bytes: r.bytes, leftRunning: r.leftRunning }
  })
  control.handle('restore', async (p, ctx) => await ops.restoreFromDir(p.dir, ctx.caller, p.node, ctx.signal))
  control.handle('restoreLast', async (p, ctx) => await ops.restoreFromLast(parseVpid(p.vpid), { node: p.node, asUid: ctx.caller.uid, signal: ctx.signal }))
}

/** run --checkpoint-every schedules on this (the home) node; inspect shows the home node's record. */
export function checkpointJobHooks (periodic: PeriodicCheckpoints, rpc: PeerRpc): JobHandlerHooks {
  return {
    started: async (job, params) => {
      if (params.checkpointEveryMs !== undefined) await periodic.schedule(job.vpid, params.checkpointEveryMs)
    },
    inspect: async (job, signal) => {
      const rec = await rpc.call(job.homeNode, 'ckpt.info', { vpid: job.vpid }, { signal, timeoutMs: 5000 }).catch(() => null) as PeriodicRecord | null
      if (rec === null) return job
      const { everyMs, last, lastError } = rec
      const checkpoint: NonNullable<JobInfo['checkpoint']> = {
        everyMs, node: last?.node, takenMs: last?.takenMs, dumpMs: last?.dumpMs, bytes: last?.bytes, ...(lastError === undefined ? {} : { error: lastError })
      }
      return { ...job, checkpoint: JSON.parse(JSON.stringify(checkpoint)) as typeof checkpoint }
    }
  }
}
