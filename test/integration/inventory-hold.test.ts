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
import { childrenOf, dumpedJob as dumped, killLeftovers, memorySha } from '../helpers/criu-job.js'
import type { Leftovers } from '../helpers/criu-job.js'
import { until } from '../helpers/until.js'

const MIB = 16

interface Run { readonly child: ChildProcess, readonly exited: Promise<number | null> }

function start (cmd: string, args: string[]): Run {
  const child = spawn(cmd, args, { stdio: 'ignore' })
  return { child, exited: new Promise(resolve => child.once('close', code => { resolve(code) })) }
}

/** Whether `pid` sleeps on a pipe (CRIU reading the held FIFO, or waiting in its open). */
const onPipe = (pid: number): boolean => /pipe|fifo|wait_for_partner/.test(readFileSync(`/proc/${pid}/wchan`, 'utf8'))

describe('InventoryHold (real criu restore)', () => {
  let criuPath: string
  let root: string
  const left: Leftovers = { jobs: [], pids: [] }

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('needs root (CRIU)')
    criuPath = (await findCriu()).path
    root = mkdtempSync(join(tmpdir(), 'ssi-inventory-hold-test-'))
  })
  afterEach(() => { killLeftovers(left) })
  afterAll(() => { rmSync(root, { recursive: true, force: true }) })

  const dumpedJob = async (dir: string): Promise<{ sha: string, ready: string }> => await dumped(criuPath, dir, MIB, left)

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
    left.pids.push(tini)
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
    left.pids.push(tini)
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
