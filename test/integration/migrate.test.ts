/**
 * `ssi migrate` end to end: real daemons (libp2p, peer RPC, images over the bulk channel), a real
 * job (shim, tini, namespaces, cgroups) moved by CRIU n1 -> n2 -> n1 under the same vpid, with its
 * output complete and in order and its exit status intact. Needs root and CRIU >= 4.2.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createServer } from 'node:net'
import { networkInterfaces } from 'node:os'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import type { CliOptions } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { JobInfo, NodeInfo, PsResult } from '../../src/api/schema.js'
import { findCriu } from '../../src/migration/criu/index.js'

const OTHER = 65534

describe('ssi migrate (real daemons, real CRIU)', () => {
  let c: TestCluster
  let sock: string
  const run = async (args: string[], opts: CliOptions = {}): ReturnType<typeof ssi> => await ssi(sock, args, opts)
  const job = async (vpid: number): Promise<JobInfo | undefined> =>
    (JSON.parse((await run(['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid)
  const lineCount = async (vpid: number): Promise<number> => (await run(['logs', String(vpid)])).stdout.split('\n').filter(l => l !== '').length

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('migration tests need root (CRIU)')
    c = await makeCluster({ nodes: 2 })
    await chmod(c.dir, 0o755)
    await c.start()
    sock = c.socket('n1')
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
  })
  const leftover: number[] = []
  // Jobs outlive their daemon (shim): end ours, so no cgroup named after our vpid stays behind.
  afterAll(async () => {
    if (leftover.length > 0) await run(['kill', '-KILL', ...leftover.map(String)]).catch(() => {})
    for (const v of leftover) await run(['wait', String(v)], { timeoutMs: 10_000 }).catch(() => {})
    await c?.stop()
  })

  it('moves a job n1 -> n2 -> n1 with the same vpid; output complete and in order; exit status kept; only the owner may', async () => {
    const script = 'i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo $i; echo e$i >&2; sleep 0.03; done; exit 3'
    // As root: CRIU reads the rlimits of the tree with prlimit(2), which for another uid needs
    // CAP_SYS_RESOURCE, which this sandbox's root lacks (docs/criu.md).
    const started = await run(['run', '-d', '--node', 'n1', '--', 'sh', '-c', script], { cwd: '/tmp' })
    expect(started.stderr).toBe('')
    expect(started.code).toBe(0)
    const vpid = Number(started.stdout.trim())
    leftover.push(vpid)
    await eventually(async () => (await lineCount(vpid)) >= 10, 10_000, 'first lines')

    const denied = await run(['migrate', String(vpid), 'n2'], { uid: OTHER, gid: OTHER, cwd: '/tmp' })
    expect(denied.code).not.toBe(0)
    expect(denied.stderr).toMatch(/permission denied/)
    expect((await job(vpid))?.state).toBe('running')

    const following = run(['logs', '-f', String(vpid)]) // follows the job across both moves
    const there = await run(['migrate', '--json', String(vpid), 'n2'])
    expect(there.stderr).toBe('')
    expect(there.code).toBe(0)
    const times = JSON.parse(there.stdout) as Record<string, number | string>
    expect(times).toMatchObject({ vpid, from: 'n1', node: 'n2' })
    for (const k of ['freezeMs', 'frozenMs', 'dumpMs', 'transferMs', 'restoreMs', 'downtimeMs', 'bytes', 'bytesDuringDump']) expect(typeof times[k]).toBe('number')
    expect(times.bytesDuringDump).toBeLessThanOrEqual(times.bytes as number)
    expect(await job(vpid)).toMatchObject({ node: 'n2', state: 'running' })
    const afterFirst = await lineCount(vpid)
    await eventually(async () => (await lineCount(vpid)) > afterFirst + 5, 10_000, 'output continuing on n2')

    const back = await run(['migrate', String(vpid), 'n1'])
    expect(back.stderr).toBe('')
    expect(back.stdout).toMatch(new RegExp(`^${vpid} moved n2 -> n1: dump \\d+ ms \\(freeze [\\d.]+ ms\\)`))
    expect(await job(vpid)).toMatchObject({ node: 'n1', state: 'running' })

    const waited = await run(['wait', String(vpid)])
    expect(waited.code).toBe(3)
    const logs = await run(['logs', String(vpid)])
    expect(logs.stdout).toBe(Array.from({ length: 200 }, (_, i) => `${i + 1}\n`).join(''))
    expect(logs.stderr).toBe(Array.from({ length: 200 }, (_, i) => `e${i + 1}\n`).join(''))
    const followed = await following
    expect(followed.stdout).toBe(logs.stdout)
    expect(followed.stderr).toBe(logs.stderr)
    expect((await run(['ps', '--json'])).stdout.match(new RegExp(`"vpid": ${vpid},`, 'g'))).toHaveLength(1)
  }, 90_000)

  it('a job cannot set up io_uring (CRIU cannot dump it), so it stays migratable; the filter moves with it', async () => {
    // io_uring_setup(1, NULL): EFAULT (14) where io_uring is allowed, ENOSYS (38) under ssi's seccomp filter.
    const script = `const k = require('koffi'); const sc = k.load('libc.so.6').func('long syscall(long, long, void *)')
      const probe = () => { const r = sc(425, 1, null); return r < 0 ? 'errno ' + k.errno() : 'fd ' + r }
      const seccomp = () => /Seccomp:\\s+(\\d)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]
      setInterval(() => console.log('io_uring_setup ' + probe() + ', seccomp mode ' + seccomp()), 100)`
    const started = await run(['run', '-d', '--node', 'n1', '--', process.execPath, '-e', script], { cwd: join(import.meta.dirname, '../..') })
    const vpid = Number(started.stdout.trim())
    leftover.push(vpid)
    const last = async (): Promise<string> => (await run(['logs', String(vpid)])).stdout.trim().split('\n').pop() ?? ''
    await eventually(async () => (await last()) !== '', 10_000, 'first probe')
    expect(await last()).toBe('io_uring_setup errno 38, seccomp mode 2')
    const moved = await run(['migrate', String(vpid), 'n2'])
    expect(moved.stderr).toBe('')
    const lines = await lineCount(vpid)
    await eventually(async () => (await lineCount(vpid)) > lines + 2, 10_000, 'probes on n2')
    expect(await last()).toBe('io_uring_setup errno 38, seccomp mode 2')
    expect(await job(vpid)).toMatchObject({ node: 'n2', state: 'running' })
  }, 40_000)

  it('sends the page files while CRIU dumps them, and the job\'s memory arrives intact', async () => {
    // 64 MiB of varied bytes; every 0.5 s the job prints their sha256.
    const script = 'import hashlib,time\nb=bytearray(range(256))*262144\nwhile True:\n print(hashlib.sha256(b).hexdigest(),flush=True)\n time.sleep(0.5)'
    const started = await run(['run', '-d', '--node', 'n1', '--', '/usr/bin/python3', '-c', script], { cwd: '/tmp' })
    const vpid = Number(started.stdout.trim())
    leftover.push(vpid)
    const lines = async (): Promise<string[]> => (await run(['logs', String(vpid)])).stdout.trim().split('\n').filter(l => l !== '')
    await eventually(async () => (await lines()).length >= 1 || undefined, 10_000, 'first digest')
    const moved = await run(['migrate', '--json', '--mode', 'stop-copy', String(vpid), 'n2'])
    expect(moved.stderr).toBe('')
    const r = JSON.parse(moved.stdout) as { bytes: number, bytesDuringDump: number }
    expect(r.bytes).toBeGreaterThan(64 * 2 ** 20)
    expect(r.bytesDuringDump).toBeGreaterThan(0) // CRIU's pages-N.img followed while it wrote them
    const before = (await lines()).length
    const after = (await eventually(async () => { const l = await lines(); return l.length > before + 1 ? l : undefined }, 10_000, 'digests on n2')).value
    expect(new Set(after)).toEqual(new Set([after[0]]))
  }, 40_000)

  it('refuses a second concurrent migration of the same job', async () => {
    const started = await run(['run', '-d', '--node', 'n1', '--', 'sleep', '60'])
    const vpid = Number(started.stdout.trim())
    leftover.push(vpid)
    const [a, b] = await Promise.all([run(['migrate', String(vpid), 'n2']), run(['migrate', String(vpid), 'n2'])])
    expect([a.code, b.code].sort()).toEqual([0, 1])
    expect((a.code === 0 ? b : a).stderr).toMatch(/already (migrating|runs on n2)/)
    expect(await job(vpid)).toMatchObject({ node: 'n2', state: 'running' })
  }, 30_000)

  it('refuses, before freezing it, a job with a TCP connection to another host; the job keeps running', async () => {
    const ip = Object.values(networkInterfaces()).flat().find(a => a !== undefined && a.family === 'IPv4' && !a.internal)?.address
    if (ip === undefined) throw new Error('this test needs a non-loopback IPv4 address on the host')
    const server = createServer(s => { s.on('error', () => {}) })
    await new Promise<void>(resolve => server.listen(0, '0.0.0.0', resolve))
    try {
      const port = (server.address() as { port: number }).port
      const script = `require('net').connect(${port}, '${ip}').on('connect', () => console.log('connected')); setInterval(() => {}, 1000)`
      const started = await run(['run', '-d', '--node', 'n1', '--', process.execPath, '-e', script], { env: { UV_USE_IO_URING: '0' } })
      const vpid = Number(started.stdout.trim())
      leftover.push(vpid)
      await eventually(async () => (await run(['logs', String(vpid)])).stdout === 'connected\n', 10_000, 'connected')
      const r = await run(['migrate', String(vpid), 'n2'])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toMatch(/cannot migrate: .*pid \d+ fd \d+: established TCP connection to/)
      expect(await job(vpid)).toMatchObject({ node: 'n1', state: 'running' })
    } finally {
      server.close()
    }
  }, 30_000)
})

describe('ssi migrate rollback (real daemons, real CRIU)', () => {
  let c: TestCluster
  const leftover: number[] = []
  afterAll(async () => {
    if (leftover.length > 0) await ssi(c.socket('n1'), ['kill', '-KILL', ...leftover.map(String)]).catch(() => {})
    for (const v of leftover) await ssi(c.socket('n1'), ['wait', String(v)], { timeoutMs: 10_000 }).catch(() => {})
    await c?.stop()
  })

  it('restores the job on its node from its own images when the target cannot restore it', async () => {
    c = await makeCluster({ nodes: 2 })
    await c.start(['n1'])
    // n2 finds a "criu" that fails, so its restore fails after the dump and the transfer.
    const broken = join(c.dir, 'broken-criu')
    await writeFile(broken, '#!/bin/sh\necho broken >&2\nexit 1\n', { mode: 0o755 })
    const saved = process.env.SSI_CRIU
    process.env.SSI_CRIU = broken
    try { await c.start(['n2']) } finally { if (saved === undefined) delete process.env.SSI_CRIU; else process.env.SSI_CRIU = saved }
    const sock = c.socket('n1')
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')

    const script = 'i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo $i; sleep 0.03; done; exit 6'
    const started = await ssi(sock, ['run', '-d', '--node', 'n1', '--', 'sh', '-c', script])
    const vpid = Number(started.stdout.trim())
    leftover.push(vpid)
    await eventually(async () => (await ssi(sock, ['logs', String(vpid)])).stdout.length > 20, 10_000, 'first lines')
    const r = await ssi(sock, ['migrate', String(vpid), 'n2'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/restoring failed: .*; it runs here again/)
    const info = (JSON.parse((await ssi(sock, ['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid)
    expect(info).toMatchObject({ node: 'n1', state: 'running' })
    expect((await ssi(sock, ['wait', String(vpid)])).code).toBe(6)
    expect((await ssi(sock, ['logs', String(vpid)])).stdout).toBe(Array.from({ length: 100 }, (_, i) => `${i + 1}\n`).join(''))
  }, 60_000)

  it('after a streamed dump (pages sent while dumping), restores the job on its node from its recorded page stream', async () => {
    const c2 = await makeCluster({ nodes: 2, extra: { migration: { streamPages: true } } })
    try {
      // n1 notes what its outgoing dir holds once the images are sent; n2's criu fails only restores.
      const seen = join(c2.dir, 'seen')
      const hook = join(c2.dir, 'hook')
      await writeFile(hook, `#!/bin/sh\n[ "$1" = source-restoring ] && ls ${join(c2.dir, 'n1', 'migrations', 'out')} > ${seen}\nexit 0\n`, { mode: 0o755 })
      process.env.SSI_TEST_MIGRATION_HOOK = hook
      try { await c2.start(['n1']) } finally { delete process.env.SSI_TEST_MIGRATION_HOOK }
      const restoreFails = join(c2.dir, 'restore-fails-criu')
      await writeFile(restoreFails, `#!/bin/sh\nif [ "$1" = restore ]; then echo broken >&2; exit 1; fi\nexec ${(await findCriu()).path} "$@"\n`, { mode: 0o755 })
      const saved = process.env.SSI_CRIU
      process.env.SSI_CRIU = restoreFails
      try { await c2.start(['n2']) } finally { if (saved === undefined) delete process.env.SSI_CRIU; else process.env.SSI_CRIU = saved }
      const sock = c2.socket('n1')
      await eventually(async () => (await c2.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
      // 8 MiB of pages besides the shell's, so the stream is more than a few frames.
      const script = 'x=$(head -c 8388608 /dev/zero | tr "\\0" a); i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo $i; sleep 0.03; done; exit 6'
      const vpid = Number((await ssi(sock, ['run', '-d', '--node', 'n1', '--', 'sh', '-c', script])).stdout.trim())
      await eventually(async () => (await ssi(sock, ['logs', String(vpid)])).stdout.length > 20, 20_000, 'first lines')
      const r = await ssi(sock, ['migrate', String(vpid), 'n2'])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toMatch(/restoring failed: .*; it runs here again/)
      // The pages went as a stream, recorded next to the images dir (not in it).
      expect((await readFile(seen, 'utf8')).split('\n')).toEqual(expect.arrayContaining([String(vpid), `${vpid}.pages`]))
      const ps = await ssi(sock, ['ps', '--json'])
      expect(ps.code, ps.stderr).toBe(0)
      expect((JSON.parse(ps.stdout) as PsResult).jobs.find(j => j.vpid === vpid)).toMatchObject({ node: 'n1', state: 'running' })
      expect((await ssi(sock, ['wait', String(vpid)])).code).toBe(6)
      expect((await ssi(sock, ['logs', String(vpid)])).stdout).toBe(Array.from({ length: 100 }, (_, i) => `${i + 1}\n`).join(''))
    } finally {
      await c2.stop()
    }
  }, 90_000)
})
