/**
 * Host mounts that come and go do not break checkpoints or migrations: a job's mount namespace is
 * an rslave copy of the node's, so a mount made on the host after the job started appears in it.
 * Mounts no process of the job uses are left out of the images (skip_mnt), so the restore does not
 * need them. Real daemons, real CRIU, real mounts (root needed); every mount made here is undone.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import type { CliOptions } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { NodeInfo, PsResult } from '../../src/api/schema.js'

const exec = promisify(execFile)
const SCRIPT = (n: number, code: number): string => `i=0; while [ $i -lt ${n} ]; do i=$((i+1)); echo $i; sleep 0.03; done; exit ${code}`
const lines = (n: number): string => Array.from({ length: n }, (_, i) => `${i + 1}\n`).join('')

describe('host mounts the job does not use (real daemons, real CRIU, real mounts)', () => {
  let c: TestCluster
  const leftover: number[] = []
  const mounted: string[] = [] // mount points, innermost last
  const dirs: string[] = []
  let hookDir = ''
  const run = async (node: string, args: string[], opts: CliOptions = {}): ReturnType<typeof ssi> => await ssi(c.socket(node), args, opts)
  const stdoutLines = async (vpid: number): Promise<number> => (await run('n1', ['logs', String(vpid)])).stdout.split('\n').filter(l => l !== '').length
  const hostPid = async (vpid: number): Promise<number> =>
    (JSON.parse((await run('n1', ['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid)?.hostPid ?? 0
  /** Every daemon log of the cluster, concatenated. */
  const daemonLogs = async (): Promise<string> => {
    const files = (await readdir(c.dir, { recursive: true })).filter(f => f.endsWith('daemon.log'))
    return (await Promise.all(files.map(async f => await readFile(join(c.dir, f), 'utf8')))).join('\n')
  }
  const skipping = async (): Promise<number> => (await daemonLogs()).split('dump leaves out unused mounts').length - 1
  /** A dump since `before` left mounts out, and no dump had to fall back to dumping every mount. */
  const skippedCleanly = async (before: number): Promise<void> => {
    expect(await skipping()).toBeGreaterThan(before)
    expect(await daemonLogs()).not.toContain('retrying with every mount')
  }
  const where = async (vpid: number): Promise<string | undefined> =>
    (JSON.parse((await run('n1', ['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid)?.node
  const start = async (script: string): Promise<number> => {
    const started = await run('n1', ['run', '-d', '--node', 'n1', '--', 'sh', '-c', script])
    expect(started.stderr).toBe('')
    const vpid = Number(started.stdout.trim())
    leftover.push(vpid)
    await eventually(async () => (await stdoutLines(vpid)) >= 5, 10_000, 'first lines')
    return vpid
  }
  const freshDir = async (): Promise<string> => {
    const d = await mkdtemp(join(tmpdir(), 'ssi-mnt-'))
    dirs.push(d)
    return d
  }
  /** A fresh dir with a shared tmpfs (as on a systemd host, where / is shared): mounts made under it later reach the job. */
  const sharedDir = async (): Promise<string> => {
    const d = await freshDir()
    await mount(['-t', 'tmpfs', 'ssi-test-shared'], d)
    await exec('mount', ['--make-shared', d])
    return d
  }
  const mount = async (args: string[], point: string): Promise<void> => {
    await exec('mount', [...args, point])
    mounted.push(point)
  }
  const unmountAll = async (): Promise<void> => {
    for (const p of mounted.splice(0).reverse()) await exec('umount', ['-l', p]).catch(() => {})
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true }).catch(() => {})
  }

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('mount tests need root (CRIU, mount)')
    hookDir = await mkdtemp(join(tmpdir(), 'ssi-mnt-hook-'))
    const hook = join(hookDir, 'hook')
    await writeFile(hook, `#!/bin/sh\nif [ "$1" = "source-restoring" ] && [ -x ${hookDir}/on-restoring ]; then ${hookDir}/on-restoring; fi\nexit 0\n`, { mode: 0o755 })
    c = await makeCluster({ nodes: 2 })
    process.env.SSI_TEST_MIGRATION_HOOK = hook
    try { await c.start() } finally { delete process.env.SSI_TEST_MIGRATION_HOOK }
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
  })
  afterEach(unmountAll)
  afterAll(async () => {
    await unmountAll()
    if (leftover.length > 0) await run('n1', ['kill', '-KILL', ...leftover.map(String)]).catch(() => {})
    for (const v of leftover) await run('n1', ['wait', String(v)], { timeoutMs: 10_000 }).catch(() => {})
    await c?.stop()
    if (hookDir !== '') await rm(hookDir, { recursive: true, force: true })
  })

  it('checkpoint while a host tmpfs (with a child mount) is mounted, unmount and remove it, restore on n2: output intact', async () => {
    const shared = await sharedDir()
    const vpid = await start(SCRIPT(120, 3))
    const point = join(shared, 'x')
    await exec('mkdir', [point])
    await mount(['-t', 'tmpfs', 'ssi-test'], point) // after the job started: it propagates into the job's namespace
    await exec('mkdir', [join(point, 'inner')])
    await mount(['-t', 'tmpfs', 'ssi-test-inner'], join(point, 'inner'))
    await eventually(async () => (await readFile(`/proc/${await hostPid(vpid)}/mountinfo`, 'utf8')).includes(` ${point}/inner `), 5_000, 'propagated into the job')
    const dir = join(c.dir, 'ck-mnt')
    const waiting = run('n2', ['wait', String(vpid)])
    const skipsBefore = await skipping()
    const ck = await run('n1', ['checkpoint', '--to', dir, String(vpid)])
    expect(ck.stderr).toBe('')
    await unmountAll() // gone before the restore: the images must not need it
    const r = await run('n1', ['restore', '--node', 'n2', dir])
    expect(r.stderr).toBe('')
    expect(await where(vpid)).toBe('n2')
    expect((await waiting).code).toBe(3)
    expect((await run('n1', ['logs', String(vpid)])).stdout).toBe(lines(120))
    await skippedCleanly(skipsBefore)
  }, 90_000)

  it('migrates (stop-copy) while a host tmpfs and an nsfs bind mount are mounted; both are gone before the target restores: output intact', async () => {
    const shared = await sharedDir()
    const vpid = await start(SCRIPT(120, 4))
    const point = join(shared, 'x')
    await exec('mkdir', [point])
    await mount(['-t', 'tmpfs', 'ssi-test'], point)
    const nsFile = join(shared, 'ns') // like `ip netns add` or Docker's /run/docker/netns/*
    await writeFile(nsFile, '')
    await mount(['--bind', '/proc/self/ns/net'], nsFile)
    await eventually(async () => {
      const info = await readFile(`/proc/${await hostPid(vpid)}/mountinfo`, 'utf8')
      return info.includes(` ${point} `) && info.includes(` ${nsFile} `)
    }, 5_000, 'propagated into the job')
    // After the images are sent, before the target restores: the host mounts go away.
    await writeFile(join(hookDir, 'on-restoring'), `#!/bin/sh\numount -l ${point} ${nsFile} ${shared} && rm -f ${join(hookDir, 'on-restoring')}\n`, { mode: 0o755 })
    const waiting = run('n2', ['wait', String(vpid)])
    const skipsBefore = await skipping()
    const moved = await run('n1', ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'])
    expect(moved.stderr).toBe('')
    expect(moved.code).toBe(0)
    await expect(readFile(join(hookDir, 'on-restoring'))).rejects.toThrow() // the hook ran (and unmounted)
    expect(await where(vpid)).toBe('n2')
    expect((await waiting).code).toBe(4)
    expect((await run('n1', ['logs', String(vpid)])).stdout).toBe(lines(120))
    await skippedCleanly(skipsBefore)
  }, 90_000)

  it('post-copy: the lazy dump leaves the unused host tmpfs out too (no fallback); the job moves with its output', async () => {
    const shared = await sharedDir()
    const vpid = await start(SCRIPT(120, 6))
    const point = join(shared, 'x')
    await exec('mkdir', [point])
    await mount(['-t', 'tmpfs', 'ssi-test'], point)
    await eventually(async () => (await readFile(`/proc/${await hostPid(vpid)}/mountinfo`, 'utf8')).includes(` ${point} `), 5_000, 'propagated into the job')
    const waiting = run('n2', ['wait', String(vpid)])
    const skipsBefore = await skipping()
    const moved = await run('n1', ['migrate', '--mode', 'post-copy', String(vpid), 'n2'])
    expect(moved.code).toBe(0)
    expect(await where(vpid)).toBe('n2')
    expect((await waiting).code).toBe(6)
    expect((await run('n1', ['logs', String(vpid)])).stdout).toBe(lines(120))
    await skippedCleanly(skipsBefore)
  }, 90_000)
})
