/**
 * Post-copy migration when a daemon restarts during the page pull, on real daemons and real CRIU.
 * Post-copy journals its phases on the source and marks the pull on the target, so each restart
 * ends in a clear state: the source gone mid-pull loses the job and says why on both nodes; the
 * target gone mid-pull loses it too (its memory can no longer arrive) and its copy is killed when
 * it comes back; a target restarted after the pull re-adopts the job. Never a copy on two nodes.
 * Daemons are killed at exact points through SSI_TEST_MIGRATION_HOOK (src/node/migration-hooks.ts).
 * Needs root and CRIU >= 4.2 with lazy pages.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { JobInfo, NodeInfo, PsResult } from '../../src/api/schema.js'

/** Starts a 2-node cluster; `env` goes to the daemon of `envNode` only. */
async function cluster (envNode: string, env: Record<string, string>): Promise<TestCluster> {
  if (process.getuid?.() !== 0) throw new Error('migration tests need root (CRIU)')
  const c = await makeCluster({ nodes: 2 })
  for (const node of ['n1', 'n2']) {
    if (node === envNode) Object.assign(process.env, env)
    try { await c.start([node]) } finally { for (const k of Object.keys(env)) delete process.env[k] }
  }
  await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 30_000, '2 alive')
  return c
}

/** Pids of processes whose command line holds `token`. */
async function processesWith (token: string): Promise<number[]> {
  const pids: number[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue
    const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')
    if (cmd.includes(token)) pids.push(Number(name))
  }
  return pids
}

describe('post-copy when a daemon restarts during the page pull (real daemons, real CRIU)', () => {
  let c: TestCluster | undefined
  let dir: string | undefined
  const tokens: string[] = []
  afterEach(async () => {
    // A failed case may leave a restored job under its shim, which the cluster's stop does not end.
    for (const token of tokens.splice(0)) for (const pid of await processesWith(token)) { try { process.kill(pid, 'SIGKILL') } catch { /* gone already */ } }
    if (c !== undefined) {
      for (const node of ['n1', 'n2']) if (!existsSync(c.socket(node))) await c.start([node]).catch(() => {})
      await c.stop()
    }
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
    c = undefined
    dir = undefined
  })

  /** The record `node` itself keeps of vpid (ps lists every node's). */
  const record = async (node: string, vpid: number): Promise<JobInfo | undefined> =>
    (JSON.parse((await ssi(c?.socket(node) ?? '', ['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid && j.node === node)
  /** A job of ~`mib` MiB printing a line every 30 ms, with a unique token in its command line. */
  const start = async (mib: number, token: string, lines = 100000): Promise<number> => {
    tokens.push(token)
    const perl = `$| = 1; my $x = "a" x (${mib} * 1024 * 1024 + $$); for my $i (1..${lines}) { print "$i\\n"; select(undef, undef, undef, 0.03) } exit 5`
    const r = await ssi(c?.socket('n1') ?? '', ['run', '-d', '--node', 'n1', '--', 'perl', '-e', perl, token])
    expect(r.stderr).toBe('')
    const vpid = Number(r.stdout.trim())
    await eventually(async () => (await ssi(c?.socket('n1') ?? '', ['logs', String(vpid)])).stdout.includes('\n3\n'), 60_000, 'first lines')
    return vpid
  }
  /** A hook that SIGKILLs its daemon at `point`, after `delay` seconds. */
  const hookKilling = async (point: string, delay = 0): Promise<string> => {
    dir = await mkdtemp('/tmp/ssi-hook-')
    const hook = join(dir, 'hook')
    await writeFile(hook, `#!/bin/sh\nif [ "$1" = "${point}" ]; then sleep ${delay}; kill -9 $PPID; sleep 10; fi\nexit 0\n`, { mode: 0o755 })
    return hook
  }
  const gone = async (pid: number, what: string): Promise<void> => {
    await eventually(async () => { try { process.kill(pid, 0); return false } catch { return true } }, 30_000, what)
  }

  it('source SIGKILLed mid-pull: the job is lost, both nodes say so and why, nothing of it runs anywhere', async () => {
    c = await cluster('n1', { SSI_TEST_MIGRATION_HOOK: await hookKilling('source-pulling') })
    const token = `pc-src-${process.pid}-${Date.now()}`
    const vpid = await start(256, token)
    const n1pid = await c.pid('n1')
    const r = await ssi(c.socket('n1'), ['migrate', '--mode', 'post-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    expect(r.code).not.toBe(0)
    await gone(n1pid, 'n1 gone')
    // The target's copy lost its page stream: recorded lost there, and killed.
    const onTarget = await eventually(async () => { const j = await record('n2', vpid); return j?.state === 'lost' ? j : undefined }, 60_000, 'lost on n2')
    expect(onTarget.value.error).toMatch(/post-copy page pull from n1 broke .*so it is lost \(post-copy needs its source until every page has arrived\)/)
    await c.start(['n1'])
    const onSource = await eventually(async () => { const j = await record('n1', vpid); return j?.state === 'lost' ? j : undefined }, 90_000, 'lost on n1')
    expect(onSource.value.migration).toMatchObject({ from: 'n1', to: 'n2', outcome: 'lost' })
    expect(onSource.value.migration?.detail ?? '').toMatch(/restarted during the migration to n2 \(phase pulling\).*post-copy needs its source until every page has reached the target, and the source restarted before that: the job is lost/)
    await eventually(async () => (await processesWith(token)).length === 0, 30_000, 'no process of the job left')
    await eventually(async () => !existsSync(join(c?.dir ?? '', 'n1', 'migrations', 'out', String(vpid))), 10_000, 'images removed')
  }, 300_000)

  it('target SIGKILLed mid-pull: the source reports the job lost and kills its frozen copy; the restarted target kills its own', async () => {
    // 0.3 s after the pull began: the source has had its answer to the restore, and 512 MiB take
    // longer than that to pull.
    c = await cluster('n2', { SSI_TEST_MIGRATION_HOOK: await hookKilling('target-pulling', 0.3) })
    const token = `pc-tgt-${process.pid}-${Date.now()}`
    const vpid = await start(512, token)
    const n2pid = await c.pid('n2')
    const r = await ssi(c.socket('n1'), ['migrate', '--mode', 'post-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/the page pull failed after the job started on n2: .*; the job is lost/s)
    await gone(n2pid, 'n2 gone')
    expect((await record('n1', vpid))?.state).toBe('lost')
    await c.start(['n2'])
    const onTarget = await eventually(async () => { const j = await record('n2', vpid); return j?.state === 'lost' ? j : undefined }, 60_000, 'lost on n2')
    expect(onTarget.value.error).toMatch(/restarted during the post-copy page pull from n1: the pages not pulled yet cannot reach the job any more, so it is lost/)
    await eventually(async () => (await processesWith(token)).length === 0, 30_000, 'no process of the job left')
  }, 300_000)

  it('target restarted after the pull: the job runs on there, re-adopted, with its output and exit status', async () => {
    c = await cluster('n2', {})
    const token = `pc-ok-${process.pid}-${Date.now()}`
    const vpid = await start(16, token, 400)
    const r = await ssi(c.socket('n1'), ['migrate', '--mode', 'post-copy', String(vpid), 'n2'], { timeoutMs: 120_000 })
    expect(r.code).toBe(0)
    const n2pid = await c.pid('n2')
    process.kill(n2pid, 'SIGKILL')
    await gone(n2pid, 'n2 gone')
    await c.start(['n2'])
    const j = await record('n2', vpid)
    expect(j).toMatchObject({ node: 'n2', state: 'running' })
    const waited = await ssi(c.socket('n1'), ['wait', String(vpid)], { timeoutMs: 60_000 })
    expect(waited.code).toBe(5)
    const logs = await ssi(c.socket('n1'), ['logs', String(vpid)])
    expect(logs.stdout).toBe(Array.from({ length: 400 }, (_, i) => `${i + 1}\n`).join(''))
    expect(await processesWith(token)).toEqual([])
  }, 300_000)
})
