/** The control API of one node for the soak: a fresh connection per call, since daemons come and go. */
import { ControlClient } from '../../src/api/client.js'
import type { MethodName, MethodParams, MethodResult, RunResult } from '../../src/api/schema.js'

export class NodeApi {
  constructor (private readonly socket: (node: string) => string) {}

  async call<M extends MethodName> (node: string, method: M, params: MethodParams<M>, timeoutMs = 30_000): Promise<MethodResult<M>> {
    const c = await ControlClient.connect(this.socket(node), { timeoutMs: 5000 })
    try { return await c.call(method, params, { timeoutMs }) } finally { c.close() }
  }

  /** Starts a detached job; the daemon answers once it runs. */
  async run (node: string, params: MethodParams<'run'>): Promise<RunResult> {
    const c = await ControlClient.connect(this.socket(node), { timeoutMs: 5000 })
    try {
      const call = c.stream('run', { ...params, detach: true }, { timeoutMs: 30_000 })
      for await (const _ of call) { /* 'started' */ }
      return await call.result
    } finally { c.close() }
  }

  /** A job's whole stdout and stderr so far. */
  async logs (node: string, vpid: number): Promise<{ stdout: string, stderr: string }> {
    const c = await ControlClient.connect(this.socket(node), { timeoutMs: 5000 })
    const out: Record<1 | 2, Buffer[]> = { 1: [], 2: [] }
    try {
      const call = c.stream('logs', { vpid, follow: false }, { timeoutMs: 30_000 })
      for await (const e of call) if (e.kind === 'output') out[e.fd].push(Buffer.from(e.data))
      await call.result
      return { stdout: Buffer.concat(out[1]).toString(), stderr: Buffer.concat(out[2]).toString() }
    } finally { c.close() }
  }

  /** Waits for a job's end with no deadline: the caller's signal ends it. */
  async wait (node: string, vpid: number, signal: AbortSignal): Promise<RunResult> {
    const c = await ControlClient.connect(this.socket(node), { timeoutMs: 5000, signal })
    try { return await c.call('wait', { vpid }, { signal }) } finally { c.close() }
  }
}
