/**
 * What can migrate, on real daemons and real CRIU (README "What can migrate"): a process tree with
 * pipes between its processes, SysV message queues and shared memory in the job's IPC namespace, a
 * file opened with O_APPEND, a TCP listener that keeps accepting on loopback. And what cannot,
 * refused before anything is frozen: io_uring, a GPU device (an established TCP connection to
 * another host: migrate.test.ts); and a checkpoint of a job with stdin from `ssi run -i`, refused with the reason.
 * Needs root and CRIU >= 4.2.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ssi } from '../helpers/cli.js'
import type { CliOptions, CliResult } from '../helpers/cli.js'
import { eventually, freePort, makeCluster } from '../helpers/cluster.js'
import type { TestCluster } from '../helpers/cluster.js'
import type { JobInfo, NodeInfo, PsResult } from '../../src/api/schema.js'

const exec = promisify(execFile)

/** One line from a TCP server on loopback. */
async function ask (port: number): Promise<string> {
  return await new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1')
    let got = ''
    s.on('data', d => { got += d.toString() })
    s.on('end', () => { resolve(got) })
    s.on('error', reject)
  })
}

describe('what can migrate, and what is refused (real daemons, real CRIU)', () => {
  let c: TestCluster
  let work: string
  const leftover: number[] = []
  const run = async (args: string[], opts: CliOptions = {}): Promise<CliResult> => await ssi(c.socket('n1'), args, opts)
  const job = async (vpid: number): Promise<JobInfo | undefined> =>
    (JSON.parse((await run(['ps', '--json'])).stdout) as PsResult).jobs.find(j => j.vpid === vpid)
  const start = async (argv: string[], env?: Record<string, string>): Promise<number> => {
    const r = await run(['run', '-d', '--node', 'n1', '--', ...argv], { env })
    expect(r.stderr).toBe('')
    const vpid = Number(r.stdout.trim())
    leftover.push(vpid)
    return vpid
  }
  const migrate = async (vpid: number, to: string): Promise<void> => {
    const r = await run(['migrate', String(vpid), to], { timeoutMs: 120_000 })
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(await job(vpid)).toMatchObject({ node: to, state: 'running' })
  }
  const logs = async (vpid: number): Promise<string> => (await run(['logs', String(vpid)])).stdout

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('migration tests need root (CRIU)')
    work = await mkdtemp(join(tmpdir(), 'ssi-what-'))
    // io_uring allowed, so the refusal of a job using it can be shown (by default jobs cannot set it up: migrate.test.ts).
    c = await makeCluster({ nodes: 2, extra: { jobs: { ioUring: 'allow' } } })
    await c.start()
    await eventually(async () => (await c.call<NodeInfo[]>('n1', 'nodes')).filter(n => n.state === 'alive').length === 2, 30_000, '2 alive')
  })
  afterAll(async () => {
    if (leftover.length > 0) await run(['kill', '-KILL', ...leftover.map(String)]).catch(() => {})
    for (const v of leftover) await run(['wait', String(v)], { timeoutMs: 10_000 }).catch(() => {})
    await c?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('a tree with a pipe, SysV queue and shared memory of its IPC namespace, and an O_APPEND file move together', async () => {
    const go = join(work, 'go-ipc')
    const appended = join(work, 'append.log')
    // perl (IPC objects) | cat -n (pipe) in the background, while sh appends to a file through fd 3.
    const perl = `$| = 1; my $q = msgget(0, 01600) // die "msgget: $!"; msgsnd($q, pack("l! a*", 1, "m$_"), 0) or die "msgsnd: $!" for 1..3;
      my $m = shmget(0, 4096, 01600) // die "shmget: $!"; shmwrite($m, "shared", 0, 6) or die "shmwrite: $!"; print "ipc ready $q $m\\n";
      select(undef, undef, undef, 0.05) until -e "${go}";
      my @got; for (1..3) { my $b; msgrcv($q, $b, 100, 0, 0) or die "msgrcv: $!"; push @got, substr($b, length(pack("l!", 0))) }
      my $d; shmread($m, $d, 0, 6) or die "shmread: $!"; print "queue @got shm $d\\n"`
    const script = `exec 3>>${appended}
      perl -e '${perl}' | cat -n &
      i=0; while [ ! -e ${go} ]; do i=$((i+1)); echo "line $i" >&3; sleep 0.03; done
      wait; echo "appended $i"`
    const vpid = await start(['sh', '-c', script])
    await eventually(async () => (await logs(vpid)).includes('ipc ready'), 30_000, 'IPC objects made')
    const [, queue, shm] = /ipc ready (\d+) (\d+)/.exec(await logs(vpid)) ?? []
    await migrate(vpid, 'n2')
    // The objects are in the job's own IPC namespace on n2, with the same ids.
    const hostPid = (await job(vpid))?.hostPid ?? -1
    const ipcs = (await exec('nsenter', ['-i', '-t', String(hostPid), 'ipcs', '-q', '-m'])).stdout
    expect(ipcs).toMatch(new RegExp(`^0x0+ +${queue} +root +600 +\\d+ +3 *$`, 'm'))
    expect(ipcs).toMatch(new RegExp(`^0x0+ +${shm} +root +600 +4096 `, 'm'))
    await migrate(vpid, 'n1')
    await writeFile(go, '')
    expect((await run(['wait', String(vpid)], { timeoutMs: 60_000 })).code).toBe(0)
    const out = await logs(vpid)
    const n = Number(/appended (\d+)/.exec(out)?.[1])
    expect(out).toBe(`     1\tipc ready ${queue ?? ''} ${shm ?? ''}\n     2\tqueue m1 m2 m3 shm shared\nappended ${n}\n`)
    expect(await readFile(appended, 'utf8')).toBe(Array.from({ length: n }, (_, i) => `line ${i + 1}\n`).join(''))
  }, 120_000)

  it('a TCP listener keeps accepting on loopback after each move, its state intact', async () => {
    const port = await freePort()
    const server = `let n = 0; require('net').createServer(c => { n++; c.end('hello ' + n + '\\n') }).listen(${port}, '127.0.0.1', () => console.log('listening'))`
    const vpid = await start([process.execPath, '-e', server], { UV_USE_IO_URING: '0' })
    await eventually(async () => (await logs(vpid)) === 'listening\n', 30_000, 'listening')
    expect(await ask(port)).toBe('hello 1\n')
    await migrate(vpid, 'n2')
    expect(await ask(port)).toBe('hello 2\n')
    await migrate(vpid, 'n1')
    expect(await ask(port)).toBe('hello 3\n')
  }, 120_000)

  const refusedBeforeFreezing = async (vpid: number, reason: RegExp): Promise<void> => {
    const before = await logs(vpid)
    const r = await run(['migrate', String(vpid), 'n2'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(reason)
    expect(await job(vpid)).toMatchObject({ node: 'n1', state: 'running' })
    // Never dumped: no images were made, and the job went on printing.
    expect(existsSync(join(c.dir, 'n1', 'migrations', 'out', String(vpid)))).toBe(false)
    await eventually(async () => (await logs(vpid)).length > before.length, 20_000, 'output continuing')
  }

  it('refuses to checkpoint a job whose stdin is forwarded by ssi run -i, saying why (it migrates: migrate-stdin.test.ts)', async () => {
    const started = await c.call<{ vpid: number }>('n1', 'run', { argv: ['sleep', '60'], env: {}, cwd: '/tmp', node: 'n1', stdin: true, detach: true })
    leftover.push(started.vpid)
    const r = await run(['checkpoint', String(started.vpid)])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/reads stdin forwarded by `ssi run -i`, which a restored checkpoint could not be fed again: it cannot be checkpointed/)
    expect(await job(started.vpid)).toMatchObject({ node: 'n1', state: 'running' })
  }, 60_000)

  it('refuses a job using io_uring before freezing it', async () => {
    // libuv (Node 20) submits file system work through io_uring when UV_USE_IO_URING=1.
    const script = `setInterval(() => require('fs').readFile('/etc/hostname', () => console.log('tick')), 100)`
    const vpid = await start([process.execPath, '-e', script], { UV_USE_IO_URING: '1' })
    await eventually(async () => (await logs(vpid)).includes('tick'), 30_000, 'ticking')
    await refusedBeforeFreezing(vpid, /cannot migrate: pid \d+ fd \d+: io_uring instance/)
  }, 60_000)

  it('refuses a job holding a GPU device open before freezing it', async () => {
    // No GPU here: a file at an NVIDIA device path stands in for one (the scan goes by path and by
    // device number).
    const device = `/dev/nvidia-ssi-test-${process.pid}`
    await writeFile(device, '')
    try {
      const vpid = await start(['sh', '-c', `exec 5<${device}; while :; do echo tick; sleep 0.1; done`])
      await eventually(async () => (await logs(vpid)).includes('tick'), 30_000, 'ticking')
      await refusedBeforeFreezing(vpid, new RegExp(`cannot migrate: pid \\d+ fd 5: GPU device ${device}`))
    } finally {
      await rm(device, { force: true })
    }
  }, 60_000)
})
