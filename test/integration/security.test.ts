/**
 * Hardening, end to end against real daemons (see README, Threat model): who may reach the control
 * socket and with what mode; root-only methods; a user touches only their own jobs through every
 * verb (root-only methods are the server's job: test/unit/control-api.test.ts); a user's job gains no privileges (NoNewPrivs, no capabilities, a setuid-root binary does not
 * elevate it); env/cwd/argv injection is refused; the daemon checks its key and state permissions.
 */
import { chmod, copyFile, lstat, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobInfo, NodeInfo } from '../../src/api/schema.js'
import { createClusterKey } from '../../src/node/identity.js'
import { ssi } from '../helpers/cli.js'
import type { CliOptions } from '../helpers/cli.js'
import { eventually, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'

const NOBODY = 65534
const OTHER = 1000
const asNobody: CliOptions = { uid: NOBODY, gid: NOBODY, cwd: '/tmp' }

describe('security hardening (2 real daemons)', () => {
  let c: TestCluster
  const run = async (args: string[], opts: CliOptions = {}): ReturnType<typeof ssi> => await ssi(c.socket('n1'), args, opts)

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('security tests need root (they run the CLI as other users)')
    c = await makeCluster({ nodes: 2 })
    await chmod(c.dir, 0o755) // other users reach the control socket; authorisation is per call
    await c.start()
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 15_000, '2 alive')
  })
  afterAll(async () => { await c?.stop() })

  it('serves any local user on a 0666 socket in a dir only root can write; state, identity and key are private', async () => {
    const sock = await lstat(c.socket('n1'))
    expect(sock.isSocket()).toBe(true)
    expect(sock.mode & 0o777).toBe(0o666)
    expect((await lstat(c.dir)).mode & 0o022).toBe(0)
    const status = await run(['status'], asNobody)
    expect(status.code).toBe(0)
    const node = c.config.nodes[0]!
    expect((await lstat(node.stateDir)).mode & 0o777).toBe(0o700)
    expect((await lstat(join(node.stateDir, 'identity.key'))).mode & 0o777).toBe(0o600)
    expect((await lstat(c.config.keyFile)).mode & 0o777).toBe(0o600)
  })

  it('lets a user kill, migrate or read the output of only their own jobs; inspect and wait are public like ps', async () => {
    const rootJob = (await run(['run', '-d', '--node', 'n1', '--', 'sh', '-c', 'echo root-secret; sleep 60'])).stdout.trim()
    expect(rootJob).toMatch(/^\d+$/)
    for (const args of [['kill', rootJob], ['kill', '-s', 'SIGKILL', rootJob], ['migrate', rootJob, 'n2'], ['logs', rootJob]]) {
      const denied = await run(args, asNobody)
      expect(denied.code, args.join(' ')).not.toBe(0)
      expect(denied.stderr, args.join(' ')).toMatch(/permission denied/)
      expect(denied.stdout, args.join(' ')).not.toContain('root-secret')
    }
    // Another non-root user is no better placed than nobody.
    expect((await run(['logs', rootJob], { uid: OTHER, gid: OTHER, cwd: '/tmp' })).stderr).toMatch(/permission denied/)
    const info = JSON.parse((await run(['--json', 'inspect', rootJob], asNobody)).stdout) as JobInfo
    expect(info).toMatchObject({ state: 'running', owner: { uid: 0 } })
    expect((await run(['logs', rootJob])).stdout).toContain('root-secret') // root may
    expect((await run(['kill', '-s', 'SIGKILL', rootJob])).code).toBe(0)
    expect((await run(['wait', rootJob], asNobody)).code).not.toBe(0) // waits and reports, as anyone may
    expect((await run(['--json', 'inspect', rootJob])).stdout).toMatch(/killed/)

    const own = (await run(['run', '-d', '--', 'sh', '-c', 'echo mine; sleep 60'], asNobody)).stdout.trim()
    await eventually(async () => (await run(['logs', own], asNobody)).stdout.includes('mine'), 10_000, 'own output')
    expect((await run(['kill', own], { uid: OTHER, gid: OTHER, cwd: '/tmp' })).stderr).toMatch(/permission denied/)
    expect((await run(['kill', own], asNobody)).code).toBe(0)
  })

  it('lets only root call cluster-admin verbs (shutdown): others get a clear refusal and the daemon serves on', async () => {
    for (const who of [asNobody, { uid: OTHER, gid: OTHER, cwd: '/tmp' }]) {
      const denied = await ssi(c.socket('n2'), ['shutdown'], who)
      expect(denied.code).not.toBe(0)
      expect(denied.stderr).toMatch(new RegExp(`shutdown may only be called by root \\(caller uid ${who.uid ?? -1}\\)`))
    }
    expect((await ssi(c.socket('n2'), ['status'], asNobody)).code).toBe(0)
    // Root may: the daemon stops, the job it runs does not, and the restarted daemon re-adopts it.
    const job = (await ssi(c.socket('n2'), ['run', '-d', '--node', 'n2', '--', 'sleep', '60'])).stdout.trim()
    const pid = await c.pid('n2')
    const stopped = await ssi(c.socket('n2'), ['shutdown'])
    expect(stopped.stderr).toBe('')
    expect(stopped.stdout).toMatch(/the daemon of n2 is stopping; its jobs run on/)
    await eventually(async () => { try { process.kill(pid, 0); return false } catch { return true } }, 15_000, 'the n2 daemon gone')
    await c.start(['n2'])
    expect(JSON.parse((await run(['--json', 'inspect', job])).stdout)).toMatchObject({ node: 'n2', state: 'running' })
    expect((await run(['kill', '-s', 'SIGKILL', job])).code).toBe(0)
  })

  it('runs a user\'s job with NoNewPrivs and no capabilities: a setuid-root binary does not make it root', async () => {
    const dir = join(c.dir, 'suid')
    await mkdir(dir, { mode: 0o755 })
    await copyFile('/usr/bin/id', join(dir, 'id'))
    await chmod(join(dir, 'id'), 0o4755) // setuid root
    const script = `grep -E '^(NoNewPrivs|CapEff|CapPrm):' /proc/self/status; ${join(dir, 'id')} -u`
    const user = await run(['run', '--', 'sh', '-c', script], asNobody)
    expect(user.stdout).toMatch(/NoNewPrivs:\s+1/)
    expect(user.stdout).toMatch(/CapEff:\s+0+\n/)
    expect(user.stdout).toMatch(/CapPrm:\s+0+\n/)
    expect(user.stdout.trim().split('\n').at(-1)).toBe(String(NOBODY))
    // Root's jobs are root's: no NoNewPrivs, and the setuid binary is root anyway.
    const root = await run(['run', '--', 'sh', '-c', script])
    expect(root.stdout).toMatch(/NoNewPrivs:\s+0/)
    expect(root.stdout.trim().split('\n').at(-1)).toBe('0')
  })

  it('refuses env, cwd and argv that would smuggle extra records into the job spec', async () => {
    const call = async (params: Record<string, unknown>): Promise<unknown> =>
      await c.call('n1', 'run', { argv: ['true'], env: {}, cwd: '/tmp', detach: true, ...params }).then(() => 'accepted', (err: Error) => err.message)
    expect(await call({ env: { 'A=B': 'x' } })).toMatch(/environment/)
    expect(await call({ env: { X: 'a\u0000uid=0' } })).toMatch(/environment/)
    expect(await call({ argv: ['sh', 'x\u0000arg=y'] })).toMatch(/NUL|argv/)
    expect(await call({ cwd: 'relative' })).toMatch(/absolute/)
    expect(await call({ cwd: '/tmp\u0000/etc' })).toMatch(/absolute|cwd/)
    // A cwd the user may not enter is refused as that user (chdir runs after dropping privileges).
    const denied = await ssi(c.socket('n1'), ['run', '--', 'pwd'], { ...asNobody, cwd: '/root' })
    expect(denied.code).not.toBe(0)
    expect(denied.stdout.trim()).not.toBe('/root')
  })
})

/** A 1-node cluster in a dir of our own (the helper's stop() keeps it), removed afterwards. */
async function withCluster (fn: (c: TestCluster) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ssi-sec-'))
  const c = await makeCluster({ nodes: 1, dir })
  try {
    await fn(c)
  } finally {
    await c.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

describe('start-up permission checks', () => {
  it('refuses a cluster key other users can read, with a clear error', async () => {
    await withCluster(async c => {
      await createClusterKey(c.config.keyFile)
      await chmod(c.config.keyFile, 0o644)
      await expect(c.start()).rejects.toThrow(/cluster key .* is accessible to other users \(mode 0644\); run `chmod 600/)
      await chmod(c.config.keyFile, 0o600)
      await c.start()
      expect((await c.call<{ node: { name: string } }>('n1', 'status')).node.name).toBe('n1')
    })
  })

  it('tightens a loose state dir to 0700 and refuses a socket dir others may write to', async () => {
    await withCluster(async c => {
      const node = c.config.nodes[0]!
      await mkdir(node.stateDir, { mode: 0o755 })
      await chmod(node.stateDir, 0o755)
      await chmod(c.dir, 0o777)
      await expect(c.start()).rejects.toThrow(/control socket dir .* is writable by other users/)
      await chmod(node.stateDir, 0o755)
      await chmod(c.dir, 0o755)
      await c.start()
      expect((await lstat(node.stateDir)).mode & 0o777).toBe(0o700)
      expect(await readFile(join(node.stateDir, 'daemon.log'), 'utf8')).toContain('made it 0700')
    })
  })

  it('refuses an identity key other users can read', async () => {
    await withCluster(async c => {
      await c.start()
      await c.stop()
      await chmod(join(c.config.nodes[0]!.stateDir, 'identity.key'), 0o640)
      await expect(c.start()).rejects.toThrow(/node identity key .* is accessible to other users \(mode 0640\)/)
    })
  })
})
