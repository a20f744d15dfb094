import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const SSI = fileURLToPath(new URL('../../bin/ssi.cjs', import.meta.url))

export interface CliResult { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

export interface CliOptions {
  readonly uid?: number
  readonly gid?: number
  readonly cwd?: string
  readonly input?: string
  readonly env?: Record<string, string>
  /** Called once the process is running (e.g. to signal it). */
  readonly onSpawn?: (pid: number) => void
  readonly timeoutMs?: number
}

/** Runs the real `ssi` CLI against a daemon socket, as a separate process (optionally as another user). */
export async function ssi (socket: string, args: string[], opts: CliOptions = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [SSI, '--socket', socket, ...args], {
    cwd: opts.cwd ?? '/tmp',
    uid: opts.uid,
    gid: opts.gid,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  const out: Buffer[] = []
  const err: Buffer[] = []
  child.stdout.on('data', (d: Buffer) => out.push(d))
  child.stderr.on('data', (d: Buffer) => err.push(d))
  if (opts.input !== undefined) child.stdin.end(opts.input)
  else child.stdin.end()
  if (child.pid !== undefined) opts.onSpawn?.(child.pid)
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(resolve => child.once('close', (c, s) => { resolve([c, s]) }))
  clearTimeout(timer)
  return { code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }
}
