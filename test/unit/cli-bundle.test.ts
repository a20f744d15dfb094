import { execFile } from 'node:child_process'
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat, symlink } from 'node:fs/promises'
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
      if (p.argv[0] === 'printenv') {
        await ctx.emit({ kind: 'output', fd: 1, data: Buffer.from(`${p.env[p.argv[1] ?? ''] ?? '(unset)'}\n`) })
        return { vpid: 1000001, node: 'n1', state: 'exited', exit: { code: 0, oomKilled: false }, status: 0, limits: {} }
      }
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
    // Source comments name paths relative to the checkout (../../main/node_modules/ in a worktree).
    expect(text).toMatch(/\/\/ (\S*\/)?node_modules\/commander\/lib\/command\.js/)
    expect(text).not.toMatch(/require\("commander"\)/)
    for (const heavy of ['node_modules/zod/', 'node_modules/pino/', 'node_modules/libp2p/', 'node_modules/@libp2p/', 'src/node/']) {
      expect(text).not.toMatch(new RegExp(`// (\\S*/)?${heavy}`))
    }
    // Daemon code is imported from the tsc output next to the bundle (through bin/ssi.cjs's importer).
    expect(text).toContain('__ssiImport("../node/main.js")')
    expect(text).toContain('__ssiImport("../node/cluster-launcher.js")')
    expect(text).not.toContain('import("../node/')
    expect(text.startsWith('"use strict";')).toBe(true)
  })

  it('runs `ssi nodes` and `ssi run` against a real daemon socket', async () => {
    const socket = join(dir, 'ssi.sock')
    const nodes = await run(process.execPath, [bundle, '--socket', socket, 'nodes'])
    expect(nodes.stdout).toMatch(/^NAME +ID +PEER/)
    expect(nodes.stdout).toMatch(/\nn1 +1 +…EfGh1111 /)
    const failed = await run(process.execPath, [bundle, '--socket', socket, 'run', '--', 'echo', '--json'], { cwd: dir }).catch((err: unknown) => err)
    expect(failed).toMatchObject({ code: 7, stdout: 'echo --json\n', stderr: `cwd ${dir}\n` })
  })

  it('bin/ssi.cjs runs it with a V8 code cache it writes itself, and ignores a cache others may write', async () => {
    const socket = join(dir, 'ssi.sock')
    await mkdir(join(dir, 'bin'), { recursive: true })
    await copyFile('bin/ssi.cjs', join(dir, 'bin', 'ssi.cjs'))
    await symlink(join(process.cwd(), 'dist', 'node'), join(dir, 'dist', 'node')).catch(() => {})
    const ssi = join(dir, 'bin', 'ssi.cjs')
    const cache = `${bundle}.v8cache`
    const first = await run(process.execPath, [ssi, '--socket', socket, 'nodes'])
    expect((await stat(cache)).size).toBeGreaterThan(1000)
    const second = await run(process.execPath, [ssi, '--socket', socket, 'nodes'])
    expect(second.stdout).toBe(first.stdout)
    expect(second.stderr).toBe('')
    // Daemon code imported from the cached bundle (keygen loads src/node/identity).
    const key = join(dir, 'cluster.key')
    const keygen = await run(process.execPath, [ssi, 'keygen', key])
    expect(keygen.stdout).toContain('wrote cluster key')
    expect((await stat(key)).size).toBeGreaterThan(0)
    // Group- or world-writable: not used, and replaced by this run's own.
    await chmod(cache, 0o666)
    const third = await run(process.execPath, [ssi, '--socket', socket, 'nodes'])
    expect(third.stdout).toBe(first.stdout)
    expect((await stat(cache)).mode & 0o777).toBe(0o644)
  })

  it('bin/ssi starts Node without NODE_EXTRA_CA_CERTS and hands the caller\'s value on to the job', async () => {
    await mkdir(join(dir, 'bin'), { recursive: true })
    await copyFile('bin/ssi.cjs', join(dir, 'bin', 'ssi.cjs'))
    await copyFile('bin/ssi', join(dir, 'bin', 'ssi'))
    await symlink(join(dir, 'bin', 'ssi'), join(dir, 'ssi-link')) // what npm link makes
    const missing = join(dir, 'no-such-ca.pem') // Node would warn at start-up had it seen this
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_EXTRA_CA_CERTS: missing }
    for (const command of [join(dir, 'bin', 'ssi'), join(dir, 'ssi-link')]) {
      const r = await run(command, ['--socket', join(dir, 'ssi.sock'), 'run', '--', 'printenv', 'NODE_EXTRA_CA_CERTS'], { env })
      expect(r).toMatchObject({ stdout: `${missing}\n`, stderr: '' })
      const saved = await run(command, ['--socket', join(dir, 'ssi.sock'), 'run', '--', 'printenv', 'SSI_SAVED_NODE_EXTRA_CA_CERTS'], { env })
      expect(saved.stdout).toBe('(unset)\n')
    }
    const plain = await run(process.execPath, [join(dir, 'bin', 'ssi.cjs'), '--socket', join(dir, 'ssi.sock'), 'run', '--', 'printenv', 'NODE_EXTRA_CA_CERTS'], { env })
    expect(plain.stdout).toBe(`${missing}\n`)
    // The warning the launcher spares, where Node loads the file at start-up (Node 20 does).
    const nodeWarns = (await run(process.execPath, ['-e', '0'], { env })).stderr.includes('extra certs')
    expect(plain.stderr.includes('extra certs')).toBe(nodeWarns)
  })
})
