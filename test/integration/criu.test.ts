/**
 * The CRIU driver against the real CRIU: version and checks, dump of a real job (tini + a shell
 * counter in new pid/ipc/uts namespaces), restore as our child with its namespace pids, a failing
 * restore. Needs root and CRIU >= 4.2 (scripts/provision.sh installs it); never skipped.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import koffi from 'koffi'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createCheckpointer, Criu, CriuError, findCriu, type FoundCriu } from '../../src/migration/criu/index.js'
import { sleep, until } from '../helpers/until.js'

const TOOLS = ['bash', 'setsid', 'unshare', 'tini', 'sh']

function onPath (tool: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try { accessSync(join(dir, tool), constants.X_OK); return true } catch { return false }
  })
}

/** Fails (never skips) with what is missing. */
async function requireCriuHost (): Promise<FoundCriu> {
  if (process.getuid?.() !== 0) throw new Error('CRIU integration tests need root (CRIU needs CAP_SYS_ADMIN and ptrace); run as root')
  const missing = TOOLS.filter((tool) => !onPath(tool))
  if (missing.length > 0) throw new Error(`missing tools: ${missing.join(', ')} (run scripts/provision.sh)`)
  return await findCriu()
}

const libc = koffi.load('libc.so.6')
const waitpid = libc.func('int waitpid(int pid, _Out_ int *status, int options)') as (pid: number, status: Int32Array, options: number) => number
const WNOHANG = 1

/** Reaps our (non-libuv) child `pid`: its wait status, polled with WNOHANG. */
async function reapChild (pid: number, timeoutMs = 5000): Promise<number> {
  const status = new Int32Array(1)
  return await until(`exit of ${pid}`, () => (waitpid(pid, status, WNOHANG) === pid ? status[0] : undefined), timeoutMs)
}

function childrenOf (pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter((s) => s !== '').map(Number)
  } catch {
    return []
  }
}

function statusField (pid: number, field: string): string {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(`${field}:`))
  return line?.slice(field.length + 1).trim() ?? ''
}

function commOf (pid: number): string | undefined {
  try { return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() } catch { return undefined }
}

const nsPid = (pid: number): number => Number(statusField(pid, 'NSpid').split(/\s+/).at(-1))
const parentPid = (pid: number): number => Number(statusField(pid, 'PPid'))

/** Counter lines "<ns pid of sh> <n>" written through one O_APPEND fd the shell keeps open. */
function counterLines (file: string): Array<{ pid: number, n: number }> {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => {
    const [pid, n] = l.split(' ').map(Number)
    return { pid: pid ?? NaN, n: n ?? NaN }
  })
}
const lastCount = (file: string): number => counterLines(file).at(-1)?.n ?? 0

interface Job { readonly launcher: ChildProcess, readonly init: number, readonly counterFile: string }

/** A checkpointable job as criu.md says: fds >= 3 closed, sessions inside a new pid namespace, tini as init. */
async function startJob (dir: string): Promise<Job> {
  const counterFile = join(dir, 'counter.log')
  const script = 'exec 3>>"$1"; i=0; while :; do i=$((i+1)); echo "$$ $i" >&3; sleep 0.05; done'
  const closeFds = 'for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null; exec "$@"'
  const launcher = spawn('bash', ['-c', closeFds, 'bash', 'setsid', 'unshare', '--pid', '--ipc', '--uts', '--fork',
    'setsid', 'tini', '-s', '--', 'sh', '-c', script, 'counter', counterFile], { stdio: 'ignore', cwd: dir })
  // The launcher is bash (and its `ls` subshell) before it becomes unshare: wait for tini itself.
  const init = await until('the job init', () => childrenOf(launcher.pid ?? -1).find((pid) => commOf(pid) === 'tini'))
  await until('the counter', () => (lastCount(counterFile) >= 3 ? true : undefined))
  return { launcher, init, counterFile }
}

/** Kills the job's init (which ends its pid namespace) and the launcher. */
function stopJob (job: Job): void {
  try { process.kill(job.init, 'SIGKILL') } catch { /* already gone (dumped) */ }
  job.launcher.kill('SIGKILL')
}

describe('CRIU driver (real criu)', () => {
  let found: FoundCriu
  let criu: Criu
  let root: string
  const cleanups: Array<() => void> = []

  beforeAll(async () => {
    found = await requireCriuHost()
    root = mkdtempSync(join(tmpdir(), 'ssi-criu-test-'))
    criu = new Criu({ criuPath: found.path, workDir: root })
  })

  afterEach(() => { for (const cleanup of cleanups.splice(0)) cleanup() })
  afterAll(() => { if (root !== undefined) rmSync(root, { recursive: true, force: true }) })

  it('reports version >= 4.2, passes check and reports features', async () => {
    const version = await criu.version()
    expect(version.major * 100 + version.minor).toBeGreaterThanOrEqual(402)
    expect(version.text).toBe(found.version.text)
    await criu.check()
    const features = await criu.checkFeatures()
    expect(typeof features.memTrack).toBe('boolean')
    expect(features.lazyPages).toBe(true) // userfaultfd is there on this kernel (docs/criu.md)
    const checkpointer = await createCheckpointer({ workDir: root })
    expect((await checkpointer.version()).text).toBe(version.text)
  })

  it('dumps a job, then restores it as our child with the same namespace pids', async () => {
    const dir = mkdtempSync(join(root, 'job-'))
    const images = mkdtempSync(join(root, 'images-'))
    const job = await startJob(dir)
    cleanups.push(() => { stopJob(job) })
    const shHost = await until('the shell', () => childrenOf(job.init).find((pid) => commOf(pid) === 'sh'))
    expect(nsPid(job.init)).toBe(1)
    const shNsPid = nsPid(shHost)

    const dumpEvents: string[] = []
    await criu.dump({ pid: job.init, imagesDir: images, onNotify: (script) => { dumpEvents.push(script) } })
    expect(dumpEvents).toEqual(expect.arrayContaining(['pre-dump', 'post-dump']))
    await until('the launcher to exit', () => (job.launcher.exitCode !== null || job.launcher.signalCode !== null ? true : undefined))
    const frozenAt = lastCount(job.counterFile)
    await sleep(200)
    expect(lastCount(job.counterFile)).toBe(frozenAt)

    const restoreEvents: Array<[string, number | undefined]> = []
    const { pid } = await criu.restore({ imagesDir: images, rstSibling: true, onNotify: (script, p) => { restoreEvents.push([script, p]) } })
    cleanups.push(() => { try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ } })
    expect(restoreEvents.map(([script]) => script)).toEqual(expect.arrayContaining(['pre-restore', 'post-restore']))
    expect(restoreEvents.find(([script]) => script === 'post-restore')?.[1]).toBe(pid)
    expect(parentPid(pid)).toBe(process.pid)
    expect(nsPid(pid)).toBe(1)
    const restoredSh = await until('the restored shell', () => childrenOf(pid).find((p) => commOf(p) === 'sh'))
    expect(nsPid(restoredSh)).toBe(shNsPid)

    await until('the counter to move on', () => (lastCount(job.counterFile) > frozenAt + 3 ? true : undefined))
    const after = counterLines(job.counterFile).filter((line) => line.n > frozenAt)
    expect(after[0]?.n).toBe(frozenAt + 1) // continues where it stopped: restored, not restarted
    expect(new Set(after.map((line) => line.pid))).toEqual(new Set([shNsPid]))

    // rst_sibling made it our child: we get its real exit status (tini passes on sh's SIGTERM death).
    process.kill(pid, 'SIGTERM')
    const status = await reapChild(pid)
    expect(status >> 8).toBe(128 + 15)
  })

  it('turns a failed restore into a CriuError with CRIU\'s message and the log path', async () => {
    const dir = mkdtempSync(join(root, 'job-'))
    const images = mkdtempSync(join(root, 'images-'))
    const job = await startJob(dir)
    cleanups.push(() => { stopJob(job) })
    await criu.dump({ pid: job.init, imagesDir: images, leaveRunning: true })
    expect(lastCount(job.counterFile)).toBeGreaterThan(0)
    writeFileSync(join(images, 'pstree.img'), Buffer.from('this is not a CRIU image at all'))

    const error = await criu.restore({ imagesDir: images }).catch((err: unknown) => err)
    expect(error).toBeInstanceOf(CriuError)
    const criuError = error as CriuError
    expect(criuError.operation).toBe('restore')
    expect(criuError.logPath).toMatch(new RegExp(`^${root}/restore-.*\\.log$`))
    expect(existsSync(criuError.logPath ?? '')).toBe(true)
    expect(criuError.criuMessage ?? '').toMatch(/magic/i) // the real cause, not the harmless rlimit line
    expect(criuError.message).toContain(criuError.criuMessage?.trim() ?? '')
    expect(criuError.message).toContain(criuError.logPath)
  })

  it('migrates with post-copy: lazy dump + page server, lazy-pages daemon, lazy restore', async () => {
    const dir = mkdtempSync(join(root, 'job-'))
    const images = mkdtempSync(join(root, 'images-'))
    const job = await startJob(dir)
    cleanups.push(() => { stopJob(job) })
    const pageServer = { address: '127.0.0.1', port: 27000 + (process.pid % 1000) }
    const events: string[] = []
    let ready!: () => void
    const serving = new Promise<void>((resolve) => { ready = resolve })
    const dumped = criu.dump({
      pid: job.init, imagesDir: images, lazyPages: true, pageServer,
      onNotify: (script) => { events.push(script); if (script === 'status-ready') ready() }
    })
    dumped.catch(() => {})
    await Promise.race([serving, dumped.then(() => { throw new Error('lazy dump ended before its page server was ready') })])
    const frozenAt = lastCount(job.counterFile)

    const daemon = await criu.startLazyPages({ imagesDir: images, pageServer })
    cleanups.push(() => { daemon.stop() })
    const { pid } = await criu.restore({ imagesDir: images, lazyPages: true })
    cleanups.push(() => { try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ } })
    await dumped
    await daemon.done
    expect(events).toEqual(expect.arrayContaining(['post-dump', 'status-ready']))
    await until('the counter to move on', () => (lastCount(job.counterFile) > frozenAt + 3 ? true : undefined))
    expect(counterLines(job.counterFile).find((line) => line.n > frozenAt)?.n).toBe(frozenAt + 1)
    process.kill(pid, 'SIGKILL')
    expect((await reapChild(pid)) & 0x7f).toBe(9)
  })

  it('aborts a blocking request (a lazy dump waiting for its page client) by killing criu', async () => {
    const dir = mkdtempSync(join(root, 'job-'))
    const images = mkdtempSync(join(root, 'images-'))
    const job = await startJob(dir)
    cleanups.push(() => { stopJob(job) })
    const controller = new AbortController()
    const pageServer = { address: '127.0.0.1', port: 28000 + (process.pid % 1000) }
    const dumped = criu.dump({
      pid: job.init, imagesDir: images, lazyPages: true, pageServer, signal: controller.signal,
      onNotify: (script) => { if (script === 'status-ready') controller.abort() }
    })
    const started = Date.now()
    await expect(dumped).rejects.toThrow(/abort/i)
    expect(Date.now() - started).toBeLessThan(5000)
  })

  it('fails the dump when a notify hook throws, and the job keeps running', async () => {
    const dir = mkdtempSync(join(root, 'job-'))
    const images = mkdtempSync(join(root, 'images-'))
    const job = await startJob(dir)
    cleanups.push(() => { stopJob(job) })
    const veto = new Error('target node went away')
    const error = await criu.dump({ pid: job.init, imagesDir: images, onNotify: (script) => { if (script === 'post-dump') throw veto } })
      .catch((err: unknown) => err)
    expect(error).toBeInstanceOf(CriuError)
    expect((error as CriuError).cause).toBe(veto)
    expect((error as CriuError).message).toContain('target node went away')
    const before = lastCount(job.counterFile)
    await until('the counter to move on', () => (lastCount(job.counterFile) > before + 2 ? true : undefined))
  })

  it('streams pages to a page server during dump (stop-and-copy over the network), then restores', async () => {
    const dir = mkdtempSync(join(root, 'job-'))
    const local = mkdtempSync(join(root, 'images-'))
    const remote = mkdtempSync(join(root, 'images-'))
    const job = await startJob(dir)
    cleanups.push(() => { stopJob(job) })
    const server = await criu.pageServer({ imagesDir: remote, address: '127.0.0.1', port: 29000 + (process.pid % 1000) })
    // A page server serves exactly one client: if the dump never connects, connecting once ends it.
    cleanups.push(() => { connect(server.port, '127.0.0.1').on('error', () => {}).end() })
    await criu.dump({ pid: job.init, imagesDir: local, pageServer: { address: '127.0.0.1', port: server.port } })
    const frozenAt = lastCount(job.counterFile)
    expect(readdirSync(remote).some((name) => name.startsWith('pages-'))).toBe(true)
    expect(readdirSync(local).some((name) => name.startsWith('pages-'))).toBe(false)
    for (const name of readdirSync(local)) copyFileSync(join(local, name), join(remote, name))
    const { pid } = await criu.restore({ imagesDir: remote })
    cleanups.push(() => { try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ } })
    await until('the counter to move on', () => (lastCount(job.counterFile) > frozenAt + 2 ? true : undefined))
    process.kill(pid, 'SIGKILL')
    await reapChild(pid)
  })

  it('reports pre-dump as impossible without soft-dirty tracking, or does it with it', async () => {
    const dir = mkdtempSync(join(root, 'job-'))
    const images = mkdtempSync(join(root, 'images-'))
    const job = await startJob(dir)
    cleanups.push(() => { stopJob(job) })
    const { memTrack } = await criu.checkFeatures()
    const outcome = await criu.preDump({ pid: job.init, imagesDir: images, trackMem: true }).then(() => 'ok', (err: unknown) => err)
    if (memTrack) expect(outcome).toBe('ok')
    else expect(outcome).toBeInstanceOf(CriuError)
    await until('the job to keep running', () => (lastCount(job.counterFile) > 0 ? true : undefined))
  })

  it('does not start criu for an aborted signal', async () => {
    const signal = AbortSignal.abort()
    await expect(criu.version({ signal })).rejects.toThrow(/abort/i)
  })
})
