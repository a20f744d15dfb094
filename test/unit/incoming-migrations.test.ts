/**
 * The target's prepared migrations (src/node/migration-target.ts) with fakes for the job service,
 * the runtime and post-copy, and in-memory channels: nothing of a migration is left in
 * `migrations/in/<vpid>` once it cannot complete, without waiting for incomingTtlMs: a receive
 * that breaks drops it (the source may have found this node hung and never sends its cancel), a
 * cancel that comes while the prepare is still starting the page server wins, and a stopping
 * daemon cancels what it holds.
 */
import { existsSync } from 'node:fs'
import { appendFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { IncomingMigrations } from '../../src/node/migration-target.js'
import { createMemoryChannelPair, sendImageDir } from '../../src/migration/transfer.js'
import type { PageServerProcess } from '../../src/migration/page-stream.js'
import type { ByteChannel } from '../../src/migration/ports.js'
import type { Logger } from '../../src/node/logger.js'
import type { MigrationTestHooks } from '../../src/node/migration-hooks.js'
import type { PostCopyPlumbing } from '../../src/node/migration-post-copy.js'
import type { MigratePrepareParams } from '../../src/protocol/migrate.js'
import type { LocalJobs } from '../../src/ssi/jobs/local.js'
import type { JobRecord } from '../../src/ssi/jobs/record.js'
import type { DumpedFile, JobRuntime, RuntimeJob, RuntimeRestoreSpec } from '../../src/ssi/jobs/runtime.js'

const VPID = 2_000_007
const never = new AbortController().signal
const dirs: string[] = []
afterEach(async () => { for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true }) })

interface Setup {
  incoming: IncomingMigrations
  inDir: string
  root: string
  /** Resolves the pending receivePages call with a fake page server. */
  startPageServer: () => void
  pageServerStopped: () => boolean
}

async function setup (extra: Partial<JobRuntime> = {}, record?: Partial<JobRecord>): Promise<Setup> {
  const root = await mkdtemp(join(tmpdir(), 'ssi-incoming-'))
  dirs.push(root)
  let stopped = false
  let release = (): void => {}
  const server: PageServerProcess = {
    socket: undefined as unknown as PageServerProcess['socket'],
    done: new Promise<void>(resolve => { release = resolve }),
    stop: () => { stopped = true; release() }
  }
  let start = (): void => {}
  const runtime = {
    receivePages: async () => { await new Promise<void>(resolve => { start = resolve }); return server },
    ...extra
  } as unknown as JobRuntime
  const local = { canReceive: () => true, has: () => record !== undefined, get: () => record, adoptMigrated: async () => {} } as unknown as LocalJobs
  const postCopy = { cancelIn: () => {}, prepareIn: async () => {}, isPulling: () => false } as unknown as PostCopyPlumbing
  const hooks: MigrationTestHooks = { run: async () => {}, wrapImages: c => c }
  const logger = { info: () => {}, warn: () => {}, debug: () => {}, error: () => {}, child: () => logger } as unknown as Logger
  const inDir = join(root, 'in')
  const incoming = new IncomingMigrations({
    selfName: 'n2', local, runtime, dir: inDir, logger, hooks, postCopy, maxImageBytes: 2 ** 30, incomingTtlMs: 600_000, recheckBeforeRestore: false,
    discard: async path => { await rm(path, { recursive: true, force: true }) }
  })
  return { incoming, inDir, root, startPageServer: () => { start() }, pageServerStopped: () => stopped }
}

const params = (pages?: 'stream', stdio?: DumpedFile[]): MigratePrepareParams => ({
  vpid: VPID,
  job: {
    vpid: VPID, owner: { uid: 0, gid: 0, user: 'root', groups: [] }, argv: ['sleep', '1'], cwd: '/', hostname: 'h', limits: { pids: 10 },
    homeNode: 'n1', createdMs: 1, startedMs: 1, stdin: false, stdinClosed: false
  },
  ...(pages === undefined ? {} : { pages }),
  ...(stdio === undefined ? {} : { stdio })
} as unknown as MigratePrepareParams)

async function until (what: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !what(); i++) await new Promise(resolve => setTimeout(resolve, 10))
  expect(what()).toBe(true)
}

describe('a target drops what it holds of a migration that cannot complete', () => {
  it('a receive that breaks (the source gone) drops the prepared migration and its partial images at once', async () => {
    const s = await setup()
    await s.incoming.prepare(params(), 'n1')
    const dir = join(s.inDir, String(VPID))
    expect(existsSync(dir)).toBe(true)
    const src = join(s.root, 'src')
    await rm(src, { recursive: true, force: true })
    await import('node:fs/promises').then(async fs => await fs.mkdir(src))
    await writeFile(join(src, 'pages-1.img'), Buffer.alloc(8 * 1024 * 1024, 7))
    const [a, b] = createMemoryChannelPair({ highWaterMark: 1024 * 1024 })
    const receiving = s.incoming.receiveImages(b, 'n1', never)
    receiving.catch(() => {})
    let sent = 0
    const dying: ByteChannel = {
      read: (signal) => a.read(signal),
      closeWrite: async (signal) => { await a.closeWrite(signal) },
      abort: (err) => { a.abort(err) },
      write: async (chunk, signal) => {
        sent += chunk.byteLength
        if (sent > 2 * 1024 * 1024) a.abort(new Error('the source died'))
        await a.write(chunk, signal)
      }
    }
    const sending = sendImageDir(dying, src, { label: String(VPID) })
    await expect(sending).rejects.toThrow(/the source died/)
    await expect(receiving).rejects.toThrow()
    await until(() => !existsSync(dir))
    expect(s.incoming.holds(VPID, 'n1')).toBe('absent')
    // Nothing of it blocks the next migration of the job here.
    await s.incoming.prepare(params(), 'n1')
    expect(existsSync(dir)).toBe(true)
  })

  it('a cancel while the prepare still starts the page server: the prepare fails, the page server stops, no dir is left', async () => {
    const s = await setup()
    const preparing = s.incoming.prepare(params('stream'), 'n1')
    preparing.catch(() => {})
    await new Promise(resolve => setTimeout(resolve, 20))
    await s.incoming.cancel(VPID, 'n1') // the source's prepare call timed out
    s.startPageServer()
    await expect(preparing).rejects.toThrow(/cancelled/)
    expect(s.pageServerStopped()).toBe(true)
    expect(existsSync(join(s.inDir, String(VPID)))).toBe(false)
    expect(s.incoming.holds(VPID, 'n1')).toBe('absent')
  })

  it('a stopping daemon cancels its prepared migrations and refuses new ones', async () => {
    const s = await setup()
    const preparing = s.incoming.prepare(params('stream'), 'n1')
    await new Promise(resolve => setTimeout(resolve, 20))
    s.startPageServer()
    expect(await preparing).toEqual({ pages: 'stream' })
    await s.incoming.close()
    expect(s.pageServerStopped()).toBe(true)
    expect(existsSync(join(s.inDir, String(VPID)))).toBe(false)
    await expect(s.incoming.prepare(params(), 'n1')).rejects.toThrow(/stopping/)
  })
})

/**
 * A runtime whose restore behaves as CRIU's towards its images dir: it opens inventory.img first
 * and reads it to its end (a held FIFO: until released or abandoned), and fails on an empty one.
 */
function earlyRuntime (root: string): { runtime: Partial<JobRuntime>, calls: Array<{ spec: RuntimeRestoreSpec, inventory: Promise<string> }> } {
  const calls: Array<{ spec: RuntimeRestoreSpec, inventory: Promise<string> }> = []
  const jobDir = join(root, 'jobs', String(VPID))
  const runtime: Partial<JobRuntime> = {
    restoresEarly: true,
    paths: () => ({ jobDir, stdout: join(jobDir, 'stdout'), stderr: join(jobDir, 'stderr') }),
    confirmRestored: () => true,
    removeStored: async () => { await rm(jobDir, { recursive: true, force: true }) },
    restore: async (spec) => {
      const inventory = readFile(join(spec.imagesDir, 'inventory.img'), 'utf8')
      calls.push({ spec, inventory })
      if ((await inventory) === '') throw new Error('Unexpected EOF')
      return { vpid: spec.vpid, hostPid: 1 } as unknown as RuntimeJob
    }
  }
  return { runtime, calls }
}

const STDIO: DumpedFile[] = [{ key: 'file[1a:2b]', stream: 'stdout' }, { key: 'file[1a:2c]', stream: 'stderr' }]

/** Sends a dump-like images dir (with the staged output) for VPID and waits until it is received. */
async function sendImages (s: Setup): Promise<void> {
  const src = join(s.root, 'src')
  await mkdir(src, { recursive: true })
  await writeFile(join(src, 'inventory.img'), 'INVENTORY')
  await writeFile(join(src, 'core-1.img'), 'core')
  await writeFile(join(src, 'pages-1.img'), Buffer.alloc(2 * 1024 * 1024, 7))
  await writeFile(join(src, 'ssi.stdout'), 'out 2\n')
  await writeFile(join(src, 'ssi.stderr'), 'err 2\n')
  const [a, b] = createMemoryChannelPair({ highWaterMark: 1024 * 1024 })
  const receiving = s.incoming.receiveImages(b, 'n1', never)
  await sendImageDir(a, src, { label: String(VPID), checksum: 'crc32' })
  await receiving
}

describe('a target starts CRIU\'s restore when the migration is prepared (migration.earlyRestore)', () => {
  it('the restore waits for its inventory; once the images are in, the output is appended and CRIU reads them all', async () => {
    const s0 = await setup()
    const { runtime, calls } = earlyRuntime(s0.root)
    const s = await setup(runtime)
    await s.incoming.prepare(params(undefined, STDIO), 'n1')
    const restoreDir = join(s.inDir, `${VPID}.restore`)
    expect(calls.map(c => c.spec)).toEqual([expect.objectContaining({ imagesDir: restoreDir, waitsForImages: true, hold: true, stdio: STDIO })])
    expect(await readdir(restoreDir)).toEqual(['inventory.img'])
    const paths = (runtime.paths as JobRuntime['paths'])(VPID)
    await appendFile(paths.stdout, 'out 1\n') // what the job printed before (the early restore made the file)
    await sendImages(s)
    expect(s.incoming.holds(VPID, 'n1')).toBe('incoming')
    await s.incoming.restore(VPID, STDIO, 'n1', never)
    expect(await calls[0]?.inventory).toBe('INVENTORY')
    expect(calls).toHaveLength(1)
    expect(await readFile(paths.stdout, 'utf8')).toBe('out 1\nout 2\n')
    expect(await readFile(paths.stderr, 'utf8')).toBe('err 2\n')
    await until(() => !existsSync(join(s.inDir, String(VPID))) && !existsSync(restoreDir)) // discarded once adopted
  })

  it('a dump that named other stdio files: the early restore gets no inventory and fails, the images are restored anew', async () => {
    const s0 = await setup()
    const { runtime, calls } = earlyRuntime(s0.root)
    const s = await setup(runtime)
    await s.incoming.prepare(params(undefined, STDIO), 'n1')
    await sendImages(s)
    const other: DumpedFile[] = [{ key: 'file[1a:2d]', stream: 'stdout' }, STDIO[1] as DumpedFile]
    await s.incoming.restore(VPID, other, 'n1', never)
    expect(await calls[0]?.inventory).toBe('')
    expect(calls[1]?.spec).toMatchObject({ imagesDir: join(s.inDir, String(VPID)), stdio: other })
    expect(calls[1]?.spec.waitsForImages).toBeUndefined()
    expect(existsSync(join(s.inDir, `${VPID}.restore`))).toBe(false)
  })

  it('a release that fails (the output cannot be appended) gives CRIU no inventory instead of leaving it waiting', async () => {
    const s0 = await setup()
    const { runtime, calls } = earlyRuntime(s0.root)
    const s = await setup(runtime)
    await s.incoming.prepare(params(undefined, STDIO), 'n1')
    const paths = (runtime.paths as JobRuntime['paths'])(VPID)
    await rm(paths.stdout)
    await mkdir(paths.stdout) // appending to it fails (EISDIR)
    await sendImages(s)
    await expect(s.incoming.restore(VPID, STDIO, 'n1', never)).rejects.toThrow(/EISDIR/)
    expect(await calls[0]?.inventory).toBe('')
    expect(calls).toHaveLength(1)
  })

  it('a cancel before the images are in ends the early restore and leaves no dir', async () => {
    const s0 = await setup()
    const { runtime, calls } = earlyRuntime(s0.root)
    const s = await setup(runtime)
    await s.incoming.prepare(params(undefined, STDIO), 'n1')
    const { jobDir } = (runtime.paths as JobRuntime['paths'])(VPID)
    expect(existsSync(jobDir)).toBe(true)
    await s.incoming.cancel(VPID, 'n1')
    expect(await calls[0]?.inventory).toBe('')
    expect(existsSync(jobDir)).toBe(false) // made for the restore, which never ran
    expect(existsSync(join(s.inDir, `${VPID}.restore`))).toBe(false)
    expect(existsSync(join(s.inDir, String(VPID)))).toBe(false)
    expect(s.incoming.holds(VPID, 'n1')).toBe('absent')
  })

  it('no stdio in the prepare: the restore starts once the images are in', async () => {
    const s0 = await setup()
    const { runtime, calls } = earlyRuntime(s0.root)
    const s = await setup(runtime)
    await s.incoming.prepare(params(), 'n1')
    expect(calls).toHaveLength(0)
    expect(existsSync(join(s.inDir, `${VPID}.restore`))).toBe(false)
  })
})

describe('what a target tells a restarted source of its migration (migrate.status)', () => {
  it('a job that arrived in that migration counts as moved even after it moved on or ended; an earlier stay, another source or a loss do not', async () => {
    const arrival = { from: 'n1', migrationStartedMs: 1_000 }
    const movedOn = await setup({}, { node: 'n3', state: 'moved', arrival })
    expect(movedOn.incoming.holds(VPID, 'n1', 1_000)).toBe('running')
    expect(movedOn.incoming.holds(VPID, 'n1', 999)).toBe('absent') // it came here in an earlier migration
    expect(movedOn.incoming.holds(VPID, 'n1')).toBe('absent') // a source that does not say which
    expect(movedOn.incoming.holds(VPID, 'n4', 1_000)).toBe('absent')
    expect((await setup({}, { node: 'n2', state: 'exited', arrival })).incoming.holds(VPID, 'n1', 1_000)).toBe('running')
    expect((await setup({}, { node: 'n2', state: 'lost', arrival })).incoming.holds(VPID, 'n1', 1_000)).toBe('absent')
    expect((await setup({}, { node: 'n2', state: 'moved' })).incoming.holds(VPID, 'n1', 1_000)).toBe('absent')
  })
})
