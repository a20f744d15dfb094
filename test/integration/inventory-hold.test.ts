/**
 * InventoryHold against the real CRIU: `criu restore` started on a dir holding only the FIFO waits
 * (its start done) until the images are released into the dir, then restores the job with the same
 * memory; abandoned, it fails at once, also when it comes to its open only afterwards. Needs root
 * and CRIU; never skipped.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { findCriu } from '../../src/migration/criu/index.js'
import { INVENTORY_IMAGE, InventoryHold, InventoryHoldError } from '../../src/migration/inventory-hold.js'
import { until } from '../helpers/until.js'

const MIB = 16
/** Fills MIB MiB from a seed; on SIGUSR1 writes the sha256 of that memory next to its ready file. */
const ALLOCATOR = `import hashlib,signal,sys,time
b=bytearray(hashlib.sha256(b"seed").digest())*(32768*${MIB})
def dump(*_): open(sys.argv[1]+".sha","w").write(hashlib.sha256(b).hexdigest())
signal.signal(signal.SIGUSR1, dump)
open(sys.argv[1],"w").write("ready")
while True: time.sleep(1)`

function childrenOf (pid: number): number[] {
  try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(s => s !== '').map(Number) } catch { return [] }
}

interface Run { readonly child: ChildProcess, readonly exited: Promise<number | null> }

function start (cmd: string, args: string[]): Run {
  const child = spawn(cmd, args, { stdio: 'ignore' })
  return { child, exited: new Promise(resolve => child.once('close', code => { resolve(code) })) }
}

async function memorySha (pid: number, ready: string): Promise<string> {
  rmSync(`${ready}.sha`, { force: true })
  process.kill(pid, 'SIGUSR1')
  return await until('the memory digest', () => existsSync(`${ready}.sha`) ? readFileSync(`${ready}.sha`, 'utf8') || undefined : undefined)
}

/** Whether `pid` sleeps on a pipe (CRIU reading the held FIFO, or waiting in its open). */
const onPipe = (pid: number): boolean => /pipe|fifo|wait_for_partner/.test(readFileSync(`/proc/${pid}/wchan`, 'utf8'))

describe('InventoryHold (real criu restore)', () => {
  let criuPath: string
  let root: string
  const jobs: ChildProcess[] = []
  const pids: number[] = []

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('needs root (CRIU)')
    criuPath = (await findCriu()).path
    root = mkdtempSync(join(tmpdir(), 'ssi-inventory-hold-test-'))
  })
  afterEach(() => {
    for (const pid of pids.splice(0)) try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    for (const job of jobs.splice(0)) job.kill('SIGKILL')
  })
  afterAll(() => { rmSync(root, { recursive: true, force: true }) })

  /** Starts the allocator under tini in new namespaces, dumps it into `<dir>/a`; returns its digest. */
  async function dumpedJob (dir: string): Promise<{ sha: string, ready: string }> {
    mkdirSync(join(dir, 'a'), { recursive: true })
    const ready = join(dir, 'ready')
    const job = spawn('setsid', ['unshare', '--pid', '--ipc', '--uts', '--fork', 'setsid', 'tini', '-s', '--', '/usr/bin/python3', '-c', ALLOCATOR, ready], { stdio: 'ignore' })
    jobs.push(job)
    await until('the allocator', () => existsSync(ready) ? true : undefined, 30_000)
    const tini = await until('tini', () => childrenOf(job.pid ?? -1)[0])
    pids.push(tini)
    const python = await until('python', () => childrenOf(tini)[0])
    const sha = await memorySha(python, ready)
    expect(await start(criuPath, ['dump', '-t', String(tini), '-D', join(dir, 'a'), '-o', join(dir, 'dump.log')]).exited).toBe(0)
    return { sha, ready }
  }

  const restore = (dir: string): Run => start(criuPath, ['restore', '-d', '-D', join(dir, 'b'), '-o', join(dir, 'restore.log'), '--pidfile', join(dir, 'restored.pid')])

  it('CRIU started before the images waits for them, then restores the job with the same memory', async () => {
    const dir = join(root, 'released')
    const { sha, ready } = await dumpedJob(dir)
    const hold = new InventoryHold(join(dir, 'b'))
    const criu = restore(dir)
    // CRIU did its start and now reads the FIFO; nothing else of the images is there yet.
    await until('CRIU reading the held inventory', () => onPipe(criu.child.pid ?? -1) || undefined, 30_000)
    expect(readdirSync(join(dir, 'b'))).toEqual([INVENTORY_IMAGE])
    expect(hold.holding).toBe(true)
    hold.release(join(dir, 'a'))
    expect(hold.holding).toBe(false)
    expect(await criu.exited, readFileSync(join(dir, 'restore.log'), 'utf8').slice(-2000)).toBe(0)
    const tini = Number(readFileSync(join(dir, 'restored.pid'), 'utf8'))
    pids.push(tini)
    expect(await memorySha(childrenOf(tini)[0] ?? -1, ready)).toBe(sha)
    expect(readdirSync(join(dir, 'a'))).toEqual([])
  }, 90_000)

  it('a CRIU that comes to its open after the release reads the inventory file instead', async () => {
    const dir = join(root, 'late')
    const { sha, ready } = await dumpedJob(dir)
    const hold = new InventoryHold(join(dir, 'b'))
    hold.release(join(dir, 'a'))
    expect(await restore(dir).exited).toBe(0)
    const tini = Number(readFileSync(join(dir, 'restored.pid'), 'utf8'))
    pids.push(tini)
    expect(await memorySha(childrenOf(tini)[0] ?? -1, ready)).toBe(sha)
  }, 90_000)

  it('abandoned, a waiting CRIU fails at once, and so does one that opens only afterwards; nothing runs', async () => {
    const dir = join(root, 'abandoned')
    await dumpedJob(dir)
    const hold = new InventoryHold(join(dir, 'b'))
    const waiting = restore(dir)
    await until('CRIU reading the held inventory', () => onPipe(waiting.child.pid ?? -1) || undefined, 30_000)
    hold.abandon()
    expect(await waiting.exited).not.toBe(0)
    expect(readFileSync(join(dir, 'restore.log'), 'utf8')).toMatch(/Unexpected EOF/)
    expect(await restore(dir).exited).not.toBe(0)
    expect(existsSync(join(dir, 'restored.pid'))).toBe(false)
    hold.abandon() // no-op
    expect(() => { hold.release(join(dir, 'a')) }).toThrow(InventoryHoldError)
  }, 90_000)

  it('a dir without an inventory is refused, and CRIU gets none', async () => {
    const dir = join(root, 'no-inventory')
    mkdirSync(join(dir, 'a'), { recursive: true })
    const hold = new InventoryHold(join(dir, 'b'))
    const waiting = restore(dir)
    await until('CRIU reading the held inventory', () => onPipe(waiting.child.pid ?? -1) || undefined, 30_000)
    expect(() => { hold.release(join(dir, 'a')) }).toThrow(/ENOENT/)
    expect(await waiting.exited).not.toBe(0)
    expect(hold.holding).toBe(false)
  }, 90_000)
})
