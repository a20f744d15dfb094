/**
 * A job for tests that drive CRIU directly: a python allocator under tini in new namespaces that
 * fills memory from a seed and reports the sha256 of it on SIGUSR1, dumped into `<dir>/a`.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { expect } from 'vitest'
import { until } from './until.js'

/** Fills `mib` MiB from a seed; on SIGUSR1 writes the sha256 of that memory next to its ready file. */
const allocator = (mib: number): string => `import hashlib,signal,sys,time
b=bytearray(hashlib.sha256(b"seed").digest())*(32768*${mib})
def dump(*_): open(sys.argv[1]+".sha","w").write(hashlib.sha256(b).hexdigest())
signal.signal(signal.SIGUSR1, dump)
open(sys.argv[1],"w").write("ready")
while True: time.sleep(1)`

export function childrenOf (pid: number): number[] {
  try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(s => s !== '').map(Number) } catch { return [] }
}

export async function run (cmd: string, args: string[]): Promise<{ code: number | null }> {
  const p = spawn(cmd, args, { stdio: 'ignore' })
  return await new Promise(resolve => p.once('close', code => { resolve({ code }) }))
}

/** The allocator's sha256 as it reports it on SIGUSR1. */
export async function memorySha (pid: number, ready: string): Promise<string> {
  rmSync(`${ready}.sha`, { force: true })
  process.kill(pid, 'SIGUSR1')
  return await until('the memory digest', () => existsSync(`${ready}.sha`) ? readFileSync(`${ready}.sha`, 'utf8') || undefined : undefined)
}

/** What a test kills afterwards: the helpers started by `dumpedJob`, and the pids it registers. */
export interface Leftovers {
  readonly jobs: ChildProcess[]
  readonly pids: number[]
}

/** Starts the allocator (mib MiB), dumps it with `criuPath` into `<dir>/a`; returns its digest and ready file. */
export async function dumpedJob (criuPath: string, dir: string, mib: number, left: Leftovers): Promise<{ sha: string, ready: string }> {
  mkdirSync(join(dir, 'a'), { recursive: true })
  const ready = join(dir, 'ready')
  const job = spawn('setsid', ['unshare', '--pid', '--ipc', '--uts', '--fork', 'setsid', 'tini', '-s', '--', '/usr/bin/python3', '-c', allocator(mib), ready], { stdio: 'ignore' })
  left.jobs.push(job)
  await until('the allocator', () => existsSync(ready) ? true : undefined, 30_000)
  const tini = await until('tini', () => childrenOf(job.pid ?? -1)[0])
  left.pids.push(tini)
  const python = await until('python', () => childrenOf(tini)[0])
  const sha = await memorySha(python, ready)
  expect((await run(criuPath, ['dump', '-t', String(tini), '-D', join(dir, 'a'), '-o', join(dir, 'dump.log')])).code).toBe(0)
  return { sha, ready }
}

/** Kills what `dumpedJob` (and the test) left running. */
export function killLeftovers (left: Leftovers): void {
  for (const pid of left.pids.splice(0)) try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
  for (const job of left.jobs.splice(0)) job.kill('SIGKILL')
}
