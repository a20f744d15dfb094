/**
 * The target's prepared migrations (src/node/migration-target.ts) with fakes for the job service,
 * the runtime and post-copy, and in-memory channels: nothing of a migration is left in
 * `migrations/in/<vpid>` once it cannot complete, without waiting for incomingTtlMs: a receive
 * that breaks drops it (the source may have found this node hung and never sends its cancel), a
 * cancel that comes while the prepare is still starting the page server wins, and a stopping
 * daemon cancels what it holds.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
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
import type { JobRuntime } from '../../src/ssi/jobs/runtime.js'

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

async function setup (): Promise<Setup> {
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
    receivePages: async () => { await new Promise<void>(resolve => { start = resolve }); return server }
  } as unknown as JobRuntime
  const local = { canReceive: () => true, has: () => false } as unknown as LocalJobs
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

const params = (pages?: 'stream'): MigratePrepareParams => ({
  vpid: VPID,
  job: {
    vpid: VPID, owner: { uid: 0, gid: 0, user: 'root', groups: [] }, argv: ['sleep', '1'], cwd: '/', hostname: 'h', limits: { pids: 10 },
    homeNode: 'n1', createdMs: 1, startedMs: 1, stdin: false, stdinClosed: false
  },
  ...(pages === undefined ? {} : { pages })
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
