/**
 * Migration modes end to end (real daemons, real CRIU, pages over libp2p): post-copy keeps a job's
 * vpid, output and exit status; `--mode auto` follows the config's postCopyAboveBytes; pre-copy is
 * refused with the reason before anything is frozen; --json carries the phase times; progress
 * events reach the caller. Needs root, CRIU >= 4.2 with lazy pages, fs.pipe-max-size >= 4 MiB.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ControlClient } from '../../src/api/client.js'
import { ssi } from '../helpers/cli.js'
import type { CliOptions } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { JobInfo, MigrateEvent, MigrateResult, NodeInfo, PsResult } from '../../src/api/schema.js'

const MiB = 2 ** 20

/** Fills `mib` MiB, then prints 1..n (one line every 20 ms) and the sum of its memory's bytes, exits 3. */
const worker = (mib: number, n: number): string[] => ['/usr/bin/python3', '-c', [
  'import sys,time',
  `b=bytearray(range(256))*(${mib}*4096)`,
  `for i in range(1,${n + 1}):`,
  '  print(i,flush=True)',
  '  time.sleep(0.02)',
  'print("sum",sum(b[::4099]),flush=True)',
  'sys.exit(3)'
].join('\n')]

const expectedOutput = (mib: number, n: number): string => {
  const lines = Array.from({ length: n }, (_, i) => `${i + 1}\n`).join('')
  let sum = 0
  for (let i = 0; i < mib * MiB; i += 4099) sum += i % 256
  return `${lines}sum ${sum}\n`
}

describe('ssi migrate --mode (real daemons, real CRIU)', () => {
  let c: TestCluster
  let sock: string
  const run = async (args: string[], opts: CliOptions = {}): ReturnType<typeof ssi> => await ssi(sock, args, { cwd: '/tmp', ...opts })
  const job = async (vpid: number): Promise<JobInfo | undefined> =>
    (JSON.parse((await run(['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid && j.state !== 'moved')
  const leftover: number[] = []
  const start = async (mib: number, n: number): Promise<number> => {
    const started = await run(['run', '-d', '--node', 'n1', '--', ...worker(mib, n)])
    expect(started.code).toBe(0)
    const vpid = Number(started.stdout.trim())
    leftover.push(vpid)
    await eventually(async () => ((await job(vpid))?.rssBytes ?? 0) >= mib * MiB * 0.9 && (await run(['logs', String(vpid)])).stdout.includes('3\n'), 30_000, 'job allocated and printing')
    return vpid
  }

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('migration tests need root (CRIU)')
    const pipeMax = Number((await readFile('/proc/sys/fs/pipe-max-size', 'utf8')).trim())
    if (pipeMax < 4 * MiB) throw new Error(`post-copy needs fs.pipe-max-size >= 4 MiB (is ${pipeMax}); scripts/provision.sh sets it`)
    c = await makeCluster({ nodes: 2, extra: { migration: { postCopyAboveBytes: '48MiB' } } })
    await chmod(c.dir, 0o755)
    await c.start()
    sock = c.socket('n1')
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
  })
  afterAll(async () => {
    if (leftover.length > 0) await run(['kill', '-KILL', ...leftover.map(String)]).catch(() => {})
    for (const v of leftover) await run(['wait', String(v)], { timeoutMs: 10_000 }).catch(() => {})
    await c?.stop()
  })

  it('post-copy: warns first, reports the pull, and the job keeps its vpid, output and exit status', async () => {
    const vpid = await start(64, 150)
    const moved = await run(['migrate', '--json', '--mode', 'post-copy', String(vpid), 'n2'])
    expect({ code: moved.code, stderr: moved.stderr }).toMatchObject({ code: 0 })
    expect(moved.stderr).toMatch(/warning: post-copy: .*if the source node dies before the page pull is complete, the job is lost/)
    expect(moved.stderr).toMatch(/page pull complete/)
    expect(moved.stderr.indexOf('warning')).toBeLessThan(moved.stderr.indexOf('page pull complete'))
    const r = JSON.parse(moved.stdout) as MigrateResult
    expect(r).toMatchObject({ vpid, from: 'n1', node: 'n2', mode: 'post-copy' })
    for (const k of ['checkMs', 'dumpMs', 'transferMs', 'restoreMs', 'downtimeMs', 'pullMs', 'totalMs', 'bytes', 'pageBytes'] as const) expect(typeof r[k]).toBe('number')
    // The memory travelled as pages, not in the images: the images are small, the pages ~64 MiB.
    expect(r.pageBytes ?? 0).toBeGreaterThan(60 * MiB)
    expect(r.bytes).toBeLessThan(16 * MiB)
    expect(r.downtimeMs).toBeLessThanOrEqual(r.totalMs ?? 0)
    expect((await job(vpid))?.node).toBe('n2') // running there, or already ended there
    const waited = await run(['wait', String(vpid)], { timeoutMs: 60_000 })
    expect(waited.code).toBe(3)
    expect((await run(['logs', String(vpid)])).stdout).toBe(expectedOutput(64, 150))
  })

  it('auto: stop-copy below migration.postCopyAboveBytes, post-copy above it', async () => {
    const small = await start(8, 100)
    const a = await run(['migrate', '--json', '--mode', 'auto', String(small), 'n2'])
    expect({ code: a.code, stderr: a.stderr }).toMatchObject({ code: 0 })
    expect(a.stderr).toBe('')
    expect(JSON.parse(a.stdout)).toMatchObject({ mode: 'stop-copy', modeReason: expect.stringMatching(/^auto: \d+ MiB resident <= 48 MiB/) })
    const big = await start(64, 100)
    const b = await run(['migrate', '--json', String(big), 'n2']) // auto is the default
    expect({ code: b.code, stderr: b.stderr }).toMatchObject({ code: 0 })
    expect(JSON.parse(b.stdout)).toMatchObject({ mode: 'post-copy', modeReason: expect.stringMatching(/^auto: \d+ MiB resident > 48 MiB/) })
    expect(b.stderr).toMatch(/warning: post-copy/)
    for (const v of [small, big]) {
      expect((await run(['wait', String(v)], { timeoutMs: 60_000 })).code).toBe(3)
      expect((await run(['logs', String(v)])).stdout).toBe(expectedOutput(v === small ? 8 : 64, 100))
    }
  })

  it('pre-copy is refused with the reason before anything is frozen; the job keeps running', async () => {
    const vpid = await start(8, 300)
    const r = await run(['migrate', '--mode', 'pre-copy', String(vpid), 'n2'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/pre-copy needs memory change tracking, which this kernel lacks \(CONFIG_MEM_SOFT_DIRTY|pre-copy is not implemented/)
    expect(await job(vpid)).toMatchObject({ node: 'n1', state: 'running' })
    const before = (await run(['logs', String(vpid)])).stdout.length
    await eventually(async () => (await run(['logs', String(vpid)])).stdout.length > before, 10_000, 'still printing')
    await run(['kill', '-KILL', String(vpid)])
  })

  it('streams progress events to the caller: mode, phases in order, bytes moved', async () => {
    const vpid = await start(64, 600)
    const client = await ControlClient.connect(sock)
    try {
      const events: MigrateEvent[] = []
      const result = await client.stream('migrate', { vpid, node: 'n2', mode: 'post-copy' }, { onEvent: (e) => { events.push(e) }, timeoutMs: 120_000 }).result
      expect(events[0]).toMatchObject({ kind: 'mode', mode: 'post-copy', reason: 'requested' })
      const phases = events.flatMap(e => e.kind === 'phase' ? [e.phase] : [])
      expect(phases).toEqual(['preparing', 'dumping', 'transferring', 'restoring', 'pulling', 'moved'])
      const pulls = events.flatMap(e => e.kind === 'progress' && e.phase === 'pulling' ? [e] : [])
      expect(pulls.length).toBeGreaterThan(0)
      expect(pulls.at(-1)?.doneBytes).toBe(result.pageBytes)
      expect(events.some(e => e.kind === 'progress' && e.phase === 'transferring' && e.doneBytes === e.totalBytes)).toBe(true)
      const printed = (await run(['logs', String(vpid)])).stdout.length
      await eventually(async () => (await run(['logs', String(vpid)])).stdout.length > printed, 10_000, 'running on n2')
      const stop = await client.stream('migrate', { vpid, node: 'n1', mode: 'stop-copy' }, { onEvent: (e) => { events.push(e) }, timeoutMs: 120_000 }).result
      expect(stop.mode).toBe('stop-copy')
      expect(stop.bytes).toBeGreaterThan(60 * MiB)
    } finally {
      client.close()
    }
    expect((await run(['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(3)
    expect((await run(['logs', String(vpid)])).stdout).toBe(expectedOutput(64, 600))
  })
})

describe('post-copy rollback (real daemons, real CRIU)', () => {
  let c: TestCluster | undefined
  afterAll(async () => { await c?.stop() })

  it('a target that cannot restore lazily: the frozen job runs on its source again with all its output', async () => {
    c = await makeCluster({ nodes: 2 })
    await chmod(c.dir, 0o755)
    await c.start(['n1'])
    // n2 finds a "criu" that fails: its lazy-pages daemon never starts, after the lazy dump and the images' transfer.
    const broken = join(c.dir, 'broken-criu')
    await writeFile(broken, '#!/bin/sh\necho broken >&2\nexit 1\n', { mode: 0o755 })
    const saved = process.env.SSI_CRIU
    process.env.SSI_CRIU = broken
    try { await c.start(['n2']) } finally { if (saved === undefined) delete process.env.SSI_CRIU; else process.env.SSI_CRIU = saved }
    const sock = c.socket('n1')
    const run = async (args: string[]): ReturnType<typeof ssi> => await ssi(sock, args, { cwd: '/tmp' })
    await eventually(async () => (await c?.call<NodeInfo[]>('n1', 'nodes'))?.filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
    const started = await run(['run', '-d', '--node', 'n1', '--', ...worker(16, 300)])
    const vpid = Number(started.stdout.trim())
    await eventually(async () => (await run(['logs', String(vpid)])).stdout.includes('3\n'), 30_000, 'printing')
    const r = await run(['migrate', '--mode', 'post-copy', String(vpid), 'n2'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/post-copy migration of job \d+ restoring failed: .*; it runs here again/)
    const info = (JSON.parse((await run(['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid)
    expect(info).toMatchObject({ node: 'n1', state: 'running' })
    expect((await ssi(sock, ['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(3)
    expect((await run(['logs', String(vpid)])).stdout).toBe(expectedOutput(16, 300))
  }, 120_000)
})
