/**
 * Durability across a real daemon crash: a separate Node process (the "daemon") starts a job and is
 * SIGKILLed; this process then adopts the job, reads all of its output — including what it wrote
 * while no daemon existed — and its exit status. Needs root, gcc, tini.
 */
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { createCgroupManager, parseV1Mounts } from '../../src/ssi/cgroups/index.js'
import { ShimJobSpawner, findTini } from '../../src/ssi/spawner/index.js'
import type { JobHandle } from '../../src/ssi/spawner/index.js'

const repo = join(import.meta.dirname, '../..')
const PREFIX = `ssi-restart-test-${process.pid}`
let dir: string

const DAEMON = `
import { createCgroupManager } from '${repo}/src/ssi/cgroups/index.js'
import { ShimJobSpawner } from '${repo}/src/ssi/spawner/index.js'
const [jobsRoot, prefix] = process.argv.slice(2)
const spawner = new ShimJobSpawner({ cgroups: createCgroupManager({ prefix }) })
const handle = await spawner.spawn({
  id: 'job1', argv: ['sh', '-c', 'for i in $(seq 1 40); do echo $i; sleep 0.025; done; exit 4'],
  env: { PATH: '/usr/bin:/bin' }, cwd: '/', uid: 65534, gid: 65534, groups: [], hostname: 'h',
  limits: { memoryBytes: 64 << 20 }, stdin: false, jobsRoot
})
process.stdout.write(JSON.stringify(handle) + '\\n')
setInterval(() => {}, 1000)
`

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error('the restart test needs root')
  findTini()
  execFileSync(join(repo, 'scripts/build-shim.sh'), { stdio: 'pipe' })
  dir = mkdtempSync(join(tmpdir(), 'ssi-restart-'))
  writeFileSync(join(dir, 'daemon.mts'), DAEMON)
})

afterAll(() => {
  const parents = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? [`/sys/fs/cgroup/${PREFIX}`]
    : [...new Set(parseV1Mounts(readFileSync('/proc/self/mountinfo', 'utf8')).values())].map((m) => `${m}/${PREFIX}`)
  for (const p of parents) if (existsSync(p)) rmdirSync(p)
  rmSync(dir, { recursive: true, force: true })
})

it('a job outlives a SIGKILLed daemon; the next daemon gets all output and the exit status', async () => {
  const jobsRoot = join(dir, 'jobs')
  // node --import tsx (not the tsx CLI, which would run the script in a grandchild SIGKILL misses).
  const daemon = spawn(process.execPath, ['--import', 'tsx', join(dir, 'daemon.mts'), jobsRoot, PREFIX], { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'] })
  const first = await new Promise<string>((resolve, reject) => {
    createInterface({ input: daemon.stdout }).once('line', resolve)
    daemon.once('exit', (code) => { reject(new Error(`daemon exited early (${code})`)) })
  })
  const started = JSON.parse(first) as JobHandle
  daemon.kill('SIGKILL')
  await new Promise((resolve) => daemon.once('exit', resolve))

  const cgroups = createCgroupManager({ prefix: PREFIX })
  const next = new ShimJobSpawner({ cgroups, pollIntervalMs: 100 })
  const adopted = await next.adopt(join(jobsRoot, 'job1'))
  expect(adopted).toMatchObject({ state: 'running', handle: { hostPid: started.hostPid, shimPid: started.shimPid } })
  const chunks: Buffer[] = []
  for await (const c of next.followOutput(adopted.handle, 'stdout')) chunks.push(c)
  expect(Buffer.concat(chunks).toString()).toBe(Array.from({ length: 40 }, (_, i) => `${i + 1}\n`).join(''))
  expect(await next.waitExit(adopted.handle)).toMatchObject({ code: 4, oomKilled: false })
  await next.release(adopted.handle)
})
