/**
 * The shim's restore mode: it runs a restore command (CRIU's `restore -d --pidfile F` in
 * production) as a child subreaper, then supervises the root that command left behind — a process
 * reparented to the shim — and records its exit like a normally started job. A shell that
 * backgrounds a child and writes its pid plays CRIU here. Needs gcc to build the shim.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FakeCgroupManager } from '../../src/ssi/cgroups/index.js'
import { JobStartError, ShimJobSpawner } from '../../src/ssi/spawner/index.js'
import type { RestoreSpec } from '../../src/ssi/spawner/index.js'

let jobsRoot: string
let spawner: ShimJobSpawner
let seq = 0

beforeAll(() => {
  execFileSync(join(import.meta.dirname, '../../scripts/build-shim.sh'), { stdio: 'pipe' })
  jobsRoot = mkdtempSync(join(tmpdir(), 'ssi-restore-'))
  spawner = new ShimJobSpawner({ cgroups: new FakeCgroupManager(), pollIntervalMs: 50 })
})

afterAll(() => { rmSync(jobsRoot, { recursive: true, force: true }) })

function restoreSpec (script: (pidFile: string) => string): RestoreSpec {
  const id = `r${++seq}`
  const pidFile = join(jobsRoot, `${id}.pid`)
  return { id, jobsRoot, command: ['sh', '-c', script(pidFile)], pidFile, stdin: false }
}

describe('ssi-shim restore mode', () => {
  it('records the exit code of a root reparented to the shim', async () => {
    const h = await spawner.restore(restoreSpec((f) => `(sleep 0.3; exit 7) & echo $! > ${f}`))
    expect(h.hostPid).not.toBe(h.shimPid)
    const ppid = execFileSync('ps', ['-o', 'ppid=', '-p', String(h.hostPid)]).toString().trim()
    expect(Number(ppid)).toBe(h.shimPid)
    expect(await spawner.exitStatus(h)).toBeUndefined()
    expect(await spawner.waitExit(h)).toMatchObject({ code: 7, oomKilled: false })
    expect(await spawner.adopt(h.jobDir)).toMatchObject({ state: 'exited', exit: { code: 7 } })
  })

  it('records a signal that kills the restored root', async () => {
    const h = await spawner.restore(restoreSpec((f) => `sleep 100 & echo $! > ${f}`))
    expect(await spawner.kill(h, 'SIGTERM')).toBe(true)
    expect(await spawner.waitExit(h)).toMatchObject({ signal: 15 })
  })

  it('fails with JobStartError when the restore command fails', async () => {
    await expect(spawner.restore(restoreSpec(() => 'echo criu says no >&2; exit 1'))).rejects.toThrow(JobStartError)
    await expect(spawner.restore(restoreSpec(() => 'exit 0'))).rejects.toThrow(/no pid in/)
  })

  it('refuses a root that is not its child', async () => {
    await expect(spawner.restore(restoreSpec((f) => `echo 1 > ${f}`))).rejects.toThrow(/not a child of the shim/)
  })
})
