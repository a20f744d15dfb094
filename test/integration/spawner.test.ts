/**
 * ShimJobSpawner against the real thing: ssi-shim, tini, PID/IPC/UTS/mount namespaces and the
 * host's cgroups. Needs root, gcc (to build the shim) and tini; fails saying which is missing.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, rmdirSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createCgroupManager, parseV1Mounts } from '../../src/ssi/cgroups/index.js'
import type { CgroupManager } from '../../src/ssi/cgroups/index.js'
import {
  JobExistsError, JobSpecError, ShimJobSpawner, findTini
} from '../../src/ssi/spawner/index.js'
import type { JobHandle, JobSpawner, JobSpec } from '../../src/ssi/spawner/index.js'

const PREFIX = `ssi-spawner-test-${process.pid}`
const NOBODY = 65534
let jobsRoot: string
let workDir: string
let cgroups: CgroupManager
let spawner: JobSpawner
let seq = 0
const handles: JobHandle[] = []

function requirePlatform (): void {
  if (process.getuid?.() !== 0) throw new Error('spawner tests need root (namespaces, cgroups, setuid)')
  findTini() // throws naming tini and how to install it
  try {
    execFileSync(join(import.meta.dirname, '../../scripts/build-shim.sh'), { stdio: 'pipe' })
  } catch (err) {
    throw new Error(`cannot build ssi-shim (needs gcc and libc6-dev): ${String((err as { stderr?: Buffer }).stderr ?? err)}`)
  }
}

function spec (argv: string[], more: Partial<JobSpec> = {}): JobSpec {
  return {
    id: `j${++seq}`,
    argv,
    env: { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C' },
    cwd: workDir,
    uid: NOBODY,
    gid: NOBODY,
    groups: [NOBODY],
    hostname: 'job-host',
    limits: {},
    stdin: false,
    jobsRoot,
    ...more
  }
}

async function start (argv: string[], more: Partial<JobSpec> = {}): Promise<JobHandle> {
  const h = await spawner.spawn(spec(argv, more))
  handles.push(h)
  return h
}

async function collect (it: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of it) chunks.push(c)
  return Buffer.concat(chunks).toString('utf8')
}

async function run (argv: string[], more: Partial<JobSpec> = {}): Promise<{ exit: Awaited<ReturnType<JobSpawner['waitExit']>>, out: string, err: string }> {
  const h = await start(argv, more)
  const [out, err, exit] = await Promise.all([
    collect(spawner.followOutput(h, 'stdout')), collect(spawner.followOutput(h, 'stderr')), spawner.waitExit(h)
  ])
  return { exit, out, err }
}

beforeAll(() => {
  requirePlatform()
  jobsRoot = mkdtempSync(join(tmpdir(), 'ssi-jobs-'))
  workDir = mkdtempSync(join(tmpdir(), 'ssi-work-'))
  chmodSync(workDir, 0o777)
  cgroups = createCgroupManager({ prefix: PREFIX })
  spawner = new ShimJobSpawner({ cgroups, pollIntervalMs: 100 })
})

afterAll(async () => {
  for (const h of handles) await spawner.release(h)
  const parents = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? [`/sys/fs/cgroup/${PREFIX}`]
    : [...new Set(parseV1Mounts(readFileSync('/proc/self/mountinfo', 'utf8')).values())].map((m) => `${m}/${PREFIX}`)
  for (const dir of parents) if (existsSync(dir)) rmdirSync(dir)
  rmSync(jobsRoot, { recursive: true, force: true })
  rmSync(workDir, { recursive: true, force: true })
})

describe('ShimJobSpawner: output and exit', () => {
  it('records 100k lines of stdout complete and in order, stderr separately', async () => {
    const { exit, out, err } = await run(['sh', '-c', 'seq 1 100000; echo oops >&2'])
    expect(exit).toMatchObject({ code: 0, oomKilled: false })
    const expected = Array.from({ length: 100000 }, (_, i) => `${i + 1}\n`).join('')
    expect(out.length).toBe(expected.length)
    expect(out === expected).toBe(true)
    expect(err).toBe('oops\n')
  })

  it('reports the exit code', async () => {
    expect((await run(['sh', '-c', 'exit 3'])).exit).toMatchObject({ code: 3, oomKilled: false })
  })

  it('reports a signal that ended the job (forwarded by tini) and SIGKILL of the whole job', async () => {
    const h = await start(['sleep', '100'])
    expect(await spawner.kill(h, 'SIGTERM')).toBe(true)
    expect(await spawner.waitExit(h)).toMatchObject({ signal: 15, oomKilled: false })
    expect(await spawner.kill(h, 'SIGTERM')).toBe(false)
    const k = await start(['sh', '-c', 'sleep 100 & sleep 100'])
    expect(await spawner.kill(k, 'SIGKILL')).toBe(true)
    expect(await spawner.waitExit(k)).toMatchObject({ signal: 9 })
    expect(await cgroups.pids(k.id)).toEqual([])
  })

  it('forwards SIGTERM sent to the shim to the job and still records the exit', async () => {
    const h = await start(['sleep', '100'])
    process.kill(h.shimPid, 'SIGTERM')
    expect(await spawner.waitExit(h)).toMatchObject({ signal: 15 })
  })

  it('exits 127 with a clear message when the command does not exist', async () => {
    const { exit, err } = await run(['no-such-command-xyz', 'arg'])
    expect(exit).toMatchObject({ code: 127 })
    expect(err).toContain('exec no-such-command-xyz failed: No such file or directory')
  })
})

describe('ShimJobSpawner: isolation', () => {
  it('runs in its own PID namespace under tini, with its own /proc and hostname', async () => {
    const { out } = await run(['sh', '-c', 'echo $$; cat /proc/1/comm; cat /proc/$$/comm; hostname; ls /proc | grep -c "^[0-9]"'])
    expect(out.split('\n')).toEqual(['2', 'tini', 'sh', 'job-host', expect.stringMatching(/^[34]$/), ''])
  })

  it('runs as the given uid, gid and groups, in the given cwd, with exactly the given env', async () => {
    const { out } = await run(['sh', '-c', 'id -u; id -g; id -G; pwd'], { groups: [NOBODY, 100] })
    expect(out).toBe(`${NOBODY}\n${NOBODY}\n${NOBODY} 100\n${workDir}\n`)
    const env = await run(['/usr/bin/env'], { env: { A: '1', B: 'x y', PATH: '/bin' } })
    expect(env.out).toBe('A=1\nB=x y\nPATH=/bin\n')
  })

  it('leaks no fd >= 3 into the job, and tini is session leader inside the namespace', async () => {
    // No pipelines: a shell holds pipe fds for a moment while it starts one.
    const { out } = await run(['sh', '-c', 'ls /proc/1/fd; echo --; ls /proc/$$/fd; cut -d" " -f6 /proc/1/stat'])
    expect(out).toBe('0\n1\n2\n--\n0\n1\n2\n1\n')
  })

  it('is not a descendant of the daemon', async () => {
    const h = await start(['sleep', '100'])
    const ppid = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1])
    expect(ppid(h.hostPid)).toBe(h.shimPid)
    expect(ppid(h.shimPid)).not.toBe(process.pid)
    await spawner.kill(h, 'SIGKILL')
    await spawner.waitExit(h)
  })
})

describe('ShimJobSpawner: limits', () => {
  it('OOM-kills a job beyond its memory limit and says so', async () => {
    const { exit } = await run(['sh', '-c', 'head -c 400M /dev/zero | tail'], { limits: { memoryBytes: 32 << 20 } })
    expect(exit).toMatchObject({ signal: 9, oomKilled: true })
  })

  it('caps forks at the pids limit', async () => {
    const { exit, err } = await run(['sh', '-c', 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; wait'], { limits: { pids: 6 } })
    expect(exit).toMatchObject({ code: 2, oomKilled: false })
    expect(err).toContain('Cannot fork')
  })

  it('throttles CPU to the cpus limit', async () => {
    const h = await start(['sh', '-c', 'while :; do :; done'], { limits: { cpus: 0.2 } })
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const used = (await spawner.stats(h))?.cpuUsageNs ?? NaN
    await spawner.kill(h, 'SIGKILL')
    expect(used).toBeGreaterThan(0.05e9)
    expect(used).toBeLessThan(0.4e9)
  })
})

describe('ShimJobSpawner: stdin', () => {
  it('blocks the job until data arrives, then delivers it and EOF on close', async () => {
    const h = await start(['sh', '-c', 'while read l; do echo "got $l"; done; echo eof'], { stdin: true })
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(await spawner.exitStatus(h)).toBeUndefined()
    await spawner.writeStdin(h, 'a\n')
    await spawner.writeStdin(h, Buffer.from('b\n'))
    await spawner.closeStdin(h)
    expect(await spawner.waitExit(h)).toMatchObject({ code: 0 })
    expect((await spawner.readOutput(h, 'stdout')).data.toString()).toBe('got a\ngot b\neof\n')
  })

  it('keeps stdin open across a new spawner instance (daemon restart)', async () => {
    const h = await start(['sh', '-c', 'cat; echo done'], { stdin: true })
    await spawner.writeStdin(h, 'one\n')
    const other = new ShimJobSpawner({ cgroups, pollIntervalMs: 100 })
    const adopted = await other.adopt(h.jobDir)
    expect(adopted.state).toBe('running')
    await other.writeStdin(adopted.handle, 'two\n')
    await other.closeStdin(adopted.handle)
    // The first instance's writer is still open: the job sees EOF only when it closes too.
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(await spawner.exitStatus(h)).toBeUndefined()
    await spawner.closeStdin(h)
    expect(await other.waitExit(adopted.handle)).toMatchObject({ code: 0 })
    expect((await other.readOutput(adopted.handle, 'stdout')).data.toString()).toBe('one\ntwo\ndone\n')
  })
})

describe('ShimJobSpawner: durability', () => {
  it('a new spawner instance adopts a running job, follows its output and gets its exit', async () => {
    const h = await start(['sh', '-c', 'echo a; sleep 1; echo b; exit 5'])
    const restarted = new ShimJobSpawner({ cgroups, pollIntervalMs: 100 })
    const adopted = await restarted.adopt(h.jobDir)
    expect(adopted).toMatchObject({ state: 'running', handle: { hostPid: h.hostPid, shimPid: h.shimPid, id: h.id } })
    expect(await collect(restarted.followOutput(adopted.handle, 'stdout'))).toBe('a\nb\n')
    expect(await restarted.waitExit(adopted.handle)).toMatchObject({ code: 5 })
    expect(await restarted.adopt(h.jobDir)).toMatchObject({ state: 'exited', exit: { code: 5 } })
  })

  it('reports a job whose supervisor and tini are gone without an exit as lost', async () => {
    const h = await start(['sleep', '100'])
    process.kill(h.shimPid, 'SIGKILL')
    await spawner.kill(h, 'SIGKILL')
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect((await spawner.adopt(h.jobDir)).state).toBe('lost')
    await expect(spawner.waitExit(h)).rejects.toThrow(/died without recording/)
    expect(await spawner.kill(h, 0)).toBe(false)
  })
})

describe('ShimJobSpawner: errors and latency', () => {
  it('rejects invalid specs and duplicate ids', async () => {
    await expect(spawner.spawn(spec([]))).rejects.toThrow(JobSpecError)
    await expect(spawner.spawn(spec(['true'], { cwd: 'relative' }))).rejects.toThrow(JobSpecError)
    await expect(spawner.spawn(spec(['true'], { cwd: '/no/such/dir' }))).rejects.toThrow(/not an existing directory/)
    await expect(spawner.spawn(spec(['true'], { limits: { memoryBytes: -5 } }))).rejects.toThrow(JobSpecError)
    const h = await start(['true'])
    await expect(spawner.spawn({ ...spec(['true']), id: h.id })).rejects.toThrow(JobExistsError)
  })

  it('honours AbortSignal in spawn, waitExit and followOutput', async () => {
    const aborted = AbortSignal.abort(new Error('cancelled'))
    const s = spec(['true'])
    await expect(spawner.spawn(s, aborted)).rejects.toThrow('cancelled')
    expect(existsSync(join(jobsRoot, s.id))).toBe(false)
    const h = await start(['sleep', '100'])
    await expect(spawner.waitExit(h, AbortSignal.timeout(100))).rejects.toThrow(/timeout|aborted/i)
    await expect(collect(spawner.followOutput(h, 'stdout', { signal: AbortSignal.timeout(100) }))).rejects.toThrow(/timeout|aborted/i)
    await spawner.release(h)
    expect(await spawner.waitExit(h)).toMatchObject({ signal: 9 })
  })

  it('measures spawn → exit known of `true` jobs', async () => {
    const times: number[] = []
    for (let i = 0; i < 40; i++) {
      const t0 = performance.now()
      const h = await start(['true'])
      await spawner.waitExit(h)
      times.push(performance.now() - t0)
      await spawner.release(h, { removeDir: true })
    }
    times.sort((a, b) => a - b)
    const p = (q: number): string => (times[Math.floor(q * (times.length - 1))] ?? NaN).toFixed(1)
    console.log(`spawn→exit of 'true': p50 ${p(0.5)} ms, p90 ${p(0.9)} ms, max ${p(1)} ms`)
    expect(Number(p(0.5))).toBeLessThan(100)
  })
})
