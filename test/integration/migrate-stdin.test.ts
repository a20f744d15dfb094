/**
 * A job reading stdin forwarded by `ssi run -i` migrates with its input stream: real daemons, real
 * CRIU. Its stdin FIFO is dumped as an external file with the bytes it held, restored onto a new
 * FIFO on the target, and the attached CLI's further input goes to the job's new node. Needs root
 * and CRIU >= 4.2.
 */
import { spawn } from 'node:child_process'
import { chmod, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { NodeInfo, PsResult } from '../../src/api/schema.js'

const SSI = fileURLToPath(new URL('../../bin/ssi.cjs', import.meta.url))
/** Echoes each line it reads (slowly, so input queues in its FIFO), then "eof" once stdin ends. */
const ECHO = 'while IFS= read -r l; do echo "got $l"; sleep 0.005; done; echo eof; exit 7'
const batch = (from: number, to: number): string => Array.from({ length: to - from + 1 }, (_, i) => `L${from + i}\n`).join('')
const echoed = (from: number, to: number): string => batch(from, to).replace(/^L/gm, 'got L')

interface Attached {
  readonly vpid: number
  readonly stdin: NodeJS.WritableStream
  stdout: () => string
  stderr: () => string
  readonly exited: Promise<number | null>
}

/** `ssi run -i` of ECHO on n1, attached: its stdin is ours to write. */
async function attach (c: TestCluster): Promise<Attached> {
  const cli = spawn(process.execPath, [SSI, '--socket', c.socket('n1'), 'run', '-i', '--node', 'n1', '--', 'sh', '-c', ECHO], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  cli.stdout.on('data', (d: Buffer) => { out += d.toString() })
  cli.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const exited = new Promise<number | null>(resolve => cli.once('close', code => { resolve(code) }))
  const vpid = (await eventually(async () => (JSON.parse((await ssi(c.socket('n1'), ['ps', '--json'])).stdout) as PsResult).jobs
    .find(j => j.argv.join(' ').includes('read -r l') && j.state === 'running')?.vpid, 10_000, 'job running')).value
  return { vpid, stdin: cli.stdin, stdout: () => out, stderr: () => err, exited }
}

describe('ssi run -i: the job migrates with its stdin (real daemons, real CRIU)', () => {
  let c: TestCluster
  const leftover: number[] = []

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('migration tests need root (CRIU)')
    c = await makeCluster({ nodes: 2 })
    await chmod(c.dir, 0o755)
    await c.start()
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
  })
  afterAll(async () => {
    if (leftover.length > 0) await ssi(c.socket('n1'), ['kill', '-KILL', ...leftover.map(String)]).catch(() => {})
    for (const v of leftover) await ssi(c.socket('n1'), ['wait', String(v)], { timeoutMs: 10_000 }).catch(() => {})
    await c?.stop()
  })

  it('keeps reading where it was across two migrations (stop-copy, post-copy): every line once, in order, then EOF and its exit status', async () => {
    const job = await attach(c)
    const { vpid, stdin } = job
    leftover.push(vpid)

    stdin.write(batch(1, 100))
    await eventually(async () => job.stdout().includes('got L50\n'), 20_000, 'first lines echoed')
    // Input keeps coming while the job is dumped: some of it waits in the FIFO, some in the daemons.
    stdin.write(batch(101, 300))
    const toN2 = await ssi(c.socket('n1'), ['migrate', '--mode', 'stop-copy', String(vpid), 'n2'], { timeoutMs: 60_000 })
    expect(toN2.stderr).toBe('')
    expect(toN2.code).toBe(0)
    stdin.write(batch(301, 400))
    await eventually(async () => job.stdout().includes('got L350\n'), 20_000, 'lines echoed on n2')
    stdin.write(batch(401, 600))
    // Back by post-copy: the same FIFO handling, with the memory pulled lazily.
    const back = await ssi(c.socket('n1'), ['migrate', '--mode', 'post-copy', String(vpid), 'n1'], { timeoutMs: 60_000 })
    expect(back.code).toBe(0)
    stdin.end(batch(601, 700))

    expect(await job.exited).toBe(7)
    expect(job.stderr()).toBe('')
    expect(job.stdout()).toBe(echoed(1, 700) + 'eof\n')
    const info = JSON.parse((await ssi(c.socket('n2'), ['inspect', '--json', String(vpid)])).stdout) as { node: string, migration?: { from: string, to: string } }
    expect(info).toMatchObject({ node: 'n1', migration: { from: 'n2', to: 'n1' } })
  }, 120_000)

  it('a migration that fails after the dump: the job reads on at the source, nothing lost or repeated', async () => {
    const broken = await makeCluster({ nodes: 2 })
    try {
      await broken.start(['n1'])
      // n2 finds a "criu" that fails: its restore fails after the dump and the transfer; n1 rolls back.
      const criu = join(broken.dir, 'broken-criu')
      await writeFile(criu, '#!/bin/sh\necho broken >&2\nexit 1\n', { mode: 0o755 })
      process.env.SSI_CRIU = criu
      try { await broken.start(['n2']) } finally { delete process.env.SSI_CRIU }
      await eventually(async () => (await broken.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
      const job = await attach(broken)
      job.stdin.write(batch(1, 100))
      await eventually(async () => job.stdout().includes('got L50\n'), 20_000, 'first lines echoed')
      job.stdin.write(batch(101, 300))
      const r = await ssi(broken.socket('n1'), ['migrate', '--mode', 'stop-copy', String(job.vpid), 'n2'], { timeoutMs: 60_000 })
      expect(r.stderr).toMatch(/restoring failed: .*; it runs here again/)
      job.stdin.end(batch(301, 400))
      expect(await job.exited).toBe(7)
      expect(job.stdout()).toBe(echoed(1, 400) + 'eof\n')
    } finally {
      await broken.stop()
    }
  }, 120_000)
})
