/** awaitOldShim: a restore waits for the previous shim of the job dir to end (it may still write `exit`). */
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { awaitOldShim, procStartTime } from '../../src/ssi/spawner/state.js'

let dir: string
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'ssi-old-shim-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

/** A stand-in shim: a `sleep` recorded in dir/pid as the job's shim. */
async function fakeShim (seconds: string): Promise<{ pid: number, exited: Promise<unknown> }> {
  const p = spawn('/bin/sleep', [seconds], { stdio: 'ignore' })
  const exited = new Promise(resolve => p.once('exit', resolve))
  const pid = p.pid ?? 0
  const start = procStartTime(pid) ?? 0
  await writeFile(join(dir, 'pid'), `pid=${pid}\nstart=${start}\nshim=${pid}\nshimstart=${start}\n`)
  return { pid, exited }
}

it('waits for a shim that ends on its own', async () => {
  await fakeShim('0.4')
  const t0 = Date.now()
  expect(await awaitOldShim(dir, 5000)).toBe(false)
  expect(Date.now() - t0).toBeGreaterThanOrEqual(300)
})

it('kills a shim that does not end within the timeout', async () => {
  const shim = await fakeShim('30')
  expect(await awaitOldShim(dir, 200)).toBe(true)
  await shim.exited
})

it('returns at once when there is no pid record or its shim is gone', async () => {
  await rm(join(dir, 'pid'), { force: true })
  expect(await awaitOldShim(dir, 5000)).toBe(false)
})
