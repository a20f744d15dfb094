import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ControlServer } from '../../src/node/control-server.js'
import type { NodeInfo } from '../../src/api/schema.js'

const run = promisify(execFile)

const node: NodeInfo = {
  name: 'n1', id: 1, peerId: '12D3KooWHbQxLAbCdEfGh1111', addresses: ['/ip4/127.0.0.1/tcp/7001'], state: 'alive', self: true,
  load: { runQueue: 0, load1: 0.05, load5: 0.1, load15: 0.2, cpus: 2 }, memory: { freeBytes: 1024 ** 3, totalBytes: 4 * 1024 ** 3 }, jobs: 0, lastSeenMs: Date.now()
}

describe('the bundled CLI (scripts/bundle-cli.mjs)', () => {
  let dir: string
  let bundle: string
  let server: ControlServer
  const logger = { debug () {}, info () {}, warn () {}, error () {} }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ssi-bundle-'))
    await run(process.execPath, ['scripts/bundle-cli.mjs', '--outdir', join(dir, 'dist', 'cli-bundle')])
    bundle = join(dir, 'dist', 'cli-bundle', 'main.cjs')
    server = new ControlServer({ socketPath: join(dir, 'ssi.sock'), logger })
    server.handle('nodes', async () => [node])
    server.handle('run', async (p, ctx) => {
      await ctx.emit({ kind: 'started', vpid: 1000001, node: 'n1' })
      await ctx.emit({ kind: 'output', fd: 1, data: Buffer.from(`${p.argv.join(' ')}\n`) })
      await ctx.emit({ kind: 'output', fd: 2, data: Buffer.from(`cwd ${p.cwd}\n`) })
      return { vpid: 1000001, node: 'n1', state: 'exited', exit: { code: 7, oomKilled: false }, status: 7, limits: {} }
    })
    await server.start()
  })

  afterAll(async () => {
    await server.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('is one CommonJS file with commander inlined and no daemon code, zod, pino or libp2p', async () => {
    const text = await readFile(bundle, 'utf8')
    expect(text).toContain('// node_modules/commander/lib/command.js')
    expect(text).not.toMatch(/require\("commander"\)/)
    for (const heavy of ['node_modules/zod', 'node_modules/pino', 'node_modules/libp2p', 'node_modules/@libp2p', 'src/node/']) {
      expect(text).not.toContain(`// ${heavy}`)
    }
    // Daemon code is imported from the tsc output next to the bundle.
    expect(text).toContain('import("../node/main.js")')
    expect(text).toContain('import("../node/cluster-launcher.js")')
  })

  it('runs `ssi nodes` and `ssi run` against a real daemon socket', async () => {
    const socket = join(dir, 'ssi.sock')
    const nodes = await run(process.execPath, [bundle, '--socket', socket, 'nodes'])
    expect(nodes.stdout).toMatch(/^NAME +ID +PEER/)
    expect(nodes.stdout).toMatch(/\nn1 +1 +…EfGh1111 /)
    const failed = await run(process.execPath, [bundle, '--socket', socket, 'run', '--', 'echo', '--json'], { cwd: dir }).catch((err: unknown) => err)
    expect(failed).toMatchObject({ code: 7, stdout: 'echo --json\n', stderr: `cwd ${dir}\n` })
  })
})
