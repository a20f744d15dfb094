/**
 * `ssi checkpoint` / `ssi restore` and periodic checkpoints end to end: real daemons (libp2p, peer
 * RPC, checkpoint dirs over the bulk image transport), real jobs (shim, tini, namespaces, cgroups),
 * real CRIU. Needs root and CRIU >= 4.2. Jobs run as root: CRIU cannot dump another uid's job in
 * this sandbox (no CAP_SYS_RESOURCE), so authorization is tested with a root job and a non-root caller.
 */
import { chmod, cp, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import type { CliOptions } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import { MANIFEST_FILE, manifestKey, readManifest, writeManifest } from '../../src/migration/checkpoint/manifest.js'
import { readClusterKey } from '../../src/node/identity.js'
import type { JobInfo, NodeInfo, PsResult } from '../../src/api/schema.js'

const OTHER = 65534
const SCRIPT = (n: number, code: number): string => `i=0; while [ $i -lt ${n} ]; do i=$((i+1)); echo $i; echo e$i >&2; sleep 0.03; done; exit ${code}`
const lines = (n: number, prefix = ''): string => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}\n`).join('')

/** In-namespace pid and command of every long-lived process (not the loop's `sleep`s) of the tree rooted at host pid `root`. */
async function treeNsPids (root: number): Promise<string[]> {
  const out: string[] = []
  const visit = async (pid: number): Promise<void> => {
    // The loop's `sleep`s come and go every 30 ms: one may end while it is being read.
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined)
    if (status === undefined) return
    const nsPid = /^NSpid:\s*(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).at(-1)
    const name = /^Name:\s*(.*)$/m.exec(status)?.[1]
    out.push(`${nsPid ?? '?'}:${name ?? '?'}`)
    for (const task of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
      const kids = (await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '')).trim()
      for (const k of kids === '' ? [] : kids.split(/\s+/)) await visit(Number(k))
    }
  }
  await visit(root)
  return out.filter(p => !p.endsWith(':sleep')).sort()
}

describe('ssi checkpoint / restore (real daemons, real CRIU)', () => {
  let c: TestCluster
  const leftover: number[] = []
  const run = async (node: string, args: string[], opts: CliOptions = {}): ReturnType<typeof ssi> => await ssi(c.socket(node), args, opts)
  const job = async (vpid: number): Promise<JobInfo | undefined> =>
    (JSON.parse((await run('n1', ['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid)
  const inspect = async (vpid: number): Promise<JobInfo> => JSON.parse((await run('n1', ['inspect', '--json', String(vpid)])).stdout) as JobInfo
  const stdoutLines = async (vpid: number): Promise<number> => (await run('n1', ['logs', String(vpid)])).stdout.split('\n').filter(l => l !== '').length
  const start = async (node: string, script: string, extra: string[] = []): Promise<number> => {
    const started = await run('n1', ['run', '-d', '--node', node, ...extra, '--', 'sh', '-c', script])
    expect(started.stderr).toBe('')
    const vpid = Number(started.stdout.trim())
    leftover.push(vpid)
    await eventually(async () => (await stdoutLines(vpid)) >= 5, 10_000, 'first lines')
    return vpid
  }

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('checkpoint tests need root (CRIU)')
    c = await makeCluster({ nodes: 2 })
    await chmod(c.dir, 0o755) // the non-root caller must reach the sockets
    await c.start()
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
  })
  afterAll(async () => {
    if (leftover.length > 0) await run('n1', ['kill', '-KILL', ...leftover.map(String)]).catch(() => {})
    for (const v of leftover) await run('n1', ['wait', String(v)], { timeoutMs: 10_000 }).catch(() => {})
    await c?.stop()
  })

  it('checkpoints a job to disk (it stops, "checkpointed") and restores it on the same node: same vpid, PIDs, output, exit status', async () => {
    const vpid = await start('n1', SCRIPT(150, 4))
    const before = await treeNsPids((await job(vpid))?.hostPid ?? 0)
    const dir = join(c.dir, 'ck-same')
    const following = run('n1', ['wait', String(vpid)]) // started before the checkpoint: must get the final status
    const tailing = run('n1', ['logs', '-f', String(vpid)]) // ...and all the output, also from after the restore
    const ck = await run('n1', ['checkpoint', '--json', '--to', dir, String(vpid)])
    expect(ck.stderr).toBe('')
    expect(JSON.parse(ck.stdout)).toMatchObject({ vpid, node: 'n1', dir, leftRunning: false })
    expect((await readdir(dir))).toContain(MANIFEST_FILE)
    expect(await job(vpid)).toMatchObject({ state: 'checkpointed', node: 'n1' })
    const frozenAt = await stdoutLines(vpid)
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(await stdoutLines(vpid)).toBe(frozenAt) // really stopped

    const r = await run('n1', ['restore', dir])
    expect(r.stderr).toBe('')
    expect(r.stdout).toMatch(new RegExp(`^${vpid} restored on n1 from the checkpoint of `))
    const info = await job(vpid)
    expect(info).toMatchObject({ state: 'running', node: 'n1' })
    expect(await treeNsPids(info?.hostPid ?? 0)).toEqual(before)
    expect((await following).code).toBe(4)
    const tailed = await tailing
    expect(tailed.stdout).toBe(lines(150))
    expect(tailed.stderr).toContain(`ssi: job ${vpid} was checkpointed (stopped) into ${dir} on n1;`)
    const logs = await run('n1', ['logs', String(vpid)])
    expect(logs.stdout).toBe(lines(150))
    expect(logs.stderr).toBe(lines(150, 'e'))
  }, 60_000)

  it('restores a checkpoint of n1 on n2 (images sent over the transport): same vpid and output; ssi wait follows it', async () => {
    const vpid = await start('n1', SCRIPT(120, 5))
    const before = await treeNsPids((await job(vpid))?.hostPid ?? 0)
    const dir = join(c.dir, 'ck-other')
    const waiting = run('n2', ['wait', String(vpid)])
    expect((await run('n1', ['checkpoint', '--to', dir, String(vpid)])).code).toBe(0)
    const r = await run('n1', ['restore', '--node', 'n2', dir])
    expect(r.stderr).toBe('')
    const info = await job(vpid)
    expect(info).toMatchObject({ state: 'running', node: 'n2' })
    expect(await treeNsPids(info?.hostPid ?? 0)).toEqual(before)
    expect((await run('n1', ['ps', '--json'])).stdout.match(new RegExp(`"vpid": ${vpid},`, 'g'))).toHaveLength(1)
    expect((await waiting).code).toBe(5)
    expect((await run('n1', ['logs', String(vpid)])).stdout).toBe(lines(120))
  }, 60_000)

  it('logs -f and an attached run say where a checkpoint stopped the job, follow on, and get the output after the restore (on another node)', async () => {
    const script = SCRIPT(200, 3)
    let attachedEnded = false
    const attached = run('n1', ['run', '--node', 'n1', '--', 'sh', '-c', script]).finally(() => { attachedEnded = true })
    const vpid = await eventually(async () => (JSON.parse((await run('n1', ['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.argv.join(' ').includes(script) && j.state === 'running')?.vpid, 10_000, 'attached job running')
    leftover.push(vpid.value)
    await eventually(async () => (await stdoutLines(vpid.value)) >= 5, 10_000, 'first lines')
    let followEnded = false
    const following = run('n2', ['logs', '-f', String(vpid.value)]).finally(() => { followEnded = true })
    const dir = join(c.dir, 'ck-follow')
    expect((await run('n1', ['checkpoint', '--to', dir, String(vpid.value)])).code).toBe(0)
    await new Promise(resolve => setTimeout(resolve, 2500))
    expect(followEnded).toBe(false) // not over: the job is only stopped
    expect(attachedEnded).toBe(false)
    expect((await run('n2', ['restore', '--node', 'n2', dir])).stderr).toBe('')
    const followed = await following
    const note = `ssi: job ${vpid.value} was checkpointed (stopped) into ${dir} on n1; still following: its output continues here once it is restored (ssi restore ${dir})\n`
    expect(followed.code).toBe(0)
    expect(followed.stdout).toBe(lines(200))
    expect(followed.stderr).toContain(note)
    expect(followed.stderr.replace(note, '')).toBe(lines(200, 'e'))
    const att = await attached
    expect(att.code).toBe(3)
    expect(att.stdout).toBe(lines(200))
    expect(att.stderr).toContain(note)
    expect(att.stderr.replace(note, '')).toBe(lines(200, 'e'))
    const again = await run('n1', ['logs', '-f', String(vpid.value)])
    expect(again.stdout).toBe(lines(200))
  }, 60_000)

  it('--leave-running from another node; restoring a running job, a corrupt, altered or foreign checkpoint, or as non-owner is refused', async () => {
    const vpid = await start('n1', SCRIPT(2000, 0))
    const dir = join(c.dir, 'ck-running')
    // The CLI talks to n2: the dump happens on n1 and the checkpoint travels to n2's disk.
    const denied = await run('n2', ['checkpoint', '--to', join('/tmp', `ssi-denied-${vpid}`), String(vpid)], { uid: OTHER, gid: OTHER })
    expect(denied.code).not.toBe(0)
    expect(denied.stderr).toMatch(/permission denied: job \d+ belongs to root \(uid 0\); only its owner or root may checkpoint it/)
    const ck = await run('n2', ['checkpoint', '--leave-running', '--json', '--to', dir, String(vpid)])
    expect(ck.stderr).toBe('')
    const result = JSON.parse(ck.stdout) as { node: string, leftRunning: boolean, transferMs: number }
    expect(result).toMatchObject({ node: 'n1', leftRunning: true })
    expect(await job(vpid)).toMatchObject({ state: 'running', node: 'n1' })
    const atDump = await stdoutLines(vpid)
    await eventually(async () => (await stdoutLines(vpid)) > atDump + 5, 10_000, 'still printing')

    const twice = await run('n2', ['restore', dir])
    expect(twice.code).not.toBe(0)
    expect(twice.stderr).toMatch(/is running on n1: restoring it would run it twice/)
    await run('n1', ['kill', '-KILL', String(vpid)])
    expect((await run('n1', ['wait', String(vpid)])).code).toBe(137)

    const images = (await readdir(dir)).filter(f => f.startsWith('pages-'))
    expect(images.length).toBeGreaterThan(0)
    const refused = async (name: string, damage: (d: string) => Promise<void>, why: RegExp): Promise<void> => {
      const copy = join(c.dir, name)
      await cp(dir, copy, { recursive: true })
      await damage(copy)
      const r = await run('n2', ['restore', copy])
      expect(r.code, r.stdout).not.toBe(0)
      expect(r.stderr).toMatch(why)
    }
    await refused('bad-image', async d => {
      const f = join(d, images[0] ?? '')
      const buf = await readFile(f)
      buf.writeUInt8(buf.readUInt8(buf.length >> 1) ^ 0xff, buf.length >> 1)
      await writeFile(f, buf)
    }, /pages-\d+\.img is corrupt \(sha256 mismatch\)/)
    await refused('bad-manifest', async d => {
      const m = join(d, MANIFEST_FILE)
      await writeFile(m, (await readFile(m, 'utf8')).replace(`"vpid": ${vpid}`, `"vpid": ${vpid + 1}`))
    }, /signature does not match: it was made by another cluster, or altered/)
    await refused('foreign', async d => {
      const body = await readManifest(d, manifestKey(await readClusterKey(c.config.keyFile)))
      const { files: _f, format: _x, ...rest } = body
      await writeManifest(d, manifestKey(new TextEncoder().encode('another cluster key')), rest)
    }, /made by another cluster/)
    await refused('truncated', async d => { await writeFile(join(d, MANIFEST_FILE), '{"body":') }, /ssi-checkpoint\.json is corrupt/)
    const notOwner = await run('n2', ['restore', dir], { uid: OTHER, gid: OTHER })
    expect(notOwner.code).not.toBe(0)
    expect(notOwner.stderr).toMatch(/permission denied: the checkpoint of job \d+ belongs to root/)

    const r = await run('n2', ['restore', dir])
    expect(r.stderr).toBe('')
    expect(await job(vpid)).toMatchObject({ state: 'running', node: 'n2' })
    await eventually(async () => (await stdoutLines(vpid)) > atDump + 5, 10_000, 'output continuing after the restore')
    const out = (await run('n1', ['logs', String(vpid)])).stdout
    expect(out.startsWith(lines(atDump - 1))).toBe(true)
    expect(out.split('\n').filter(l => l !== '').every((l, i) => l === String(i + 1))).toBe(true) // the checkpoint's output, then on from there
  }, 90_000)

  it('--checkpoint-every keeps the last good checkpoint on the other node, replaced each period; restore --last brings the job back', async () => {
    const vpid = await start('n1', SCRIPT(3000, 0), ['--checkpoint-every', '1s'])
    const held = join(c.dir, 'n2', 'checkpoints', 'held', String(vpid))
    const first = await eventually(async () => {
      const cp = (await inspect(vpid)).checkpoint
      return cp?.takenMs !== undefined ? cp : undefined
    }, 15_000, 'a first periodic checkpoint')
    expect(first.value).toMatchObject({ everyMs: 1000, node: 'n2' })
    const taken1 = first.value.takenMs ?? 0
    const second = await eventually(async () => {
      const cp = (await inspect(vpid)).checkpoint
      return (cp?.takenMs ?? 0) > taken1 ? cp : undefined
    }, 15_000, 'a newer periodic checkpoint')
    expect(second.value.node).toBe('n2')
    const key = manifestKey(await readClusterKey(c.config.keyFile))
    expect((await readManifest(held, key)).takenMs).toBeGreaterThanOrEqual(taken1)
    expect((await readdir(join(c.dir, 'n2', 'checkpoints', 'held'))).filter(d => d.startsWith(String(vpid)))).toEqual([String(vpid)])
    expect(await stat(join(c.dir, 'n1', 'checkpoints', 'held', String(vpid))).catch(() => undefined)).toBeUndefined()
    expect((await run('n1', ['inspect', String(vpid)])).stdout).toMatch(/checkpoint\s+every 1s; last on n2 at /)

    await run('n1', ['kill', '-KILL', String(vpid)])
    expect((await run('n1', ['wait', String(vpid)])).code).toBe(137)
    const heldAt = (await readManifest(held, key)).takenMs
    const r = await run('n1', ['restore', '--json', '--last', String(vpid)])
    expect(r.stderr).toBe('')
    expect(JSON.parse(r.stdout)).toMatchObject({ vpid, node: 'n2', takenMs: heldAt })
    // 'migrating' for the moment of a periodic dump: the schedule goes on for the restored job.
    expect(await job(vpid)).toMatchObject({ state: expect.stringMatching(/^(running|migrating)$/) as unknown, node: 'n2' })
    const atRestore = await stdoutLines(vpid)
    await eventually(async () => (await stdoutLines(vpid)) > atRestore + 3, 10_000, 'output continuing on n2')
    // Now on n2, its next checkpoints are kept on n1, and n2 drops the one it held.
    await eventually(async () => (await inspect(vpid)).checkpoint?.node === 'n1', 15_000, 'checkpoints held by n1')
    await eventually(async () => await stat(held).then(() => false, () => true), 10_000, 'n2 dropped its copy')
  }, 90_000)

  it('a held checkpoint corrupted on disk is refused by restore --last right before `criu restore`; the job stays ended', async () => {
    const vpid = await start('n1', SCRIPT(3000, 0), ['--checkpoint-every', '1s'])
    const held = join(c.dir, 'n2', 'checkpoints', 'held', String(vpid))
    await eventually(async () => (await inspect(vpid)).checkpoint?.takenMs !== undefined, 15_000, 'a periodic checkpoint')
    await run('n1', ['kill', '-KILL', String(vpid)])
    expect((await run('n1', ['wait', String(vpid)])).code).toBe(137)
    await new Promise(resolve => setTimeout(resolve, 1500)) // a round in flight at the kill lands first
    const key = manifestKey(await readClusterKey(c.config.keyFile))
    const pages = (await readManifest(held, key)).files.filter(f => f.name.startsWith('pages-')).sort((a, b) => b.size - a.size)[0]
    expect(pages).toBeDefined()
    const path = join(held, pages?.name ?? '')
    const bytes = await readFile(path)
    bytes[64] = (bytes[64] ?? 0) ^ 0xff // same size, one byte changed: only a checksum sees it
    await writeFile(path, bytes)
    const r = await run('n1', ['restore', '--last', String(vpid)])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(new RegExp(`changed on disk after they arrived: ${pages?.name ?? ''} is corrupt \\(sha256 mismatch\\)`))
    expect(await job(vpid)).toMatchObject({ state: 'killed' })
  }, 60_000)
})
