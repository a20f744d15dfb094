import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ControlClient } from '../../src/api/client.js'
import { ControlServer } from '../../src/node/control-server.js'
import { runCli } from '../../src/cli/run.js'
import type { CallOptions } from '../../src/api/client.js'
import type { NodeInfo, StatusResult } from '../../src/api/schema.js'
import type { ApiClient, Printer } from '../../src/cli/context.js'

const NOW = 1_700_000_000_000

const nodes: NodeInfo[] = [
  {
    name: 'n2', id: 2, peerId: '12D3KooWHbQxLAbCdEfGh2222', addresses: ['/ip4/127.0.0.1/tcp/7002/p2p/12D3KooWHbQxLAbCdEfGh2222'],
    state: 'suspect', self: false, load: { runQueue: 3, load1: 1.5, load5: 1.25, load15: 1, cpus: 4 },
    memory: { freeBytes: 512 * 1024 * 1024, totalBytes: 8 * 1024 ** 3 }, jobs: 12, lastSeenMs: NOW - 4200
  },
  {
    name: 'n1', id: 1, peerId: '12D3KooWHbQxLAbCdEfGh1111', addresses: ['/ip4/127.0.0.1/tcp/7001', '/ip4/10.0.0.1/tcp/7001'],
    state: 'alive', self: true, load: { runQueue: 0, load1: 0.05, load5: 0.1, load15: 0.2, cpus: 2 },
    memory: { freeBytes: 1.2 * 1024 ** 3, totalBytes: 3.8 * 1024 ** 3 }, jobs: 0, lastSeenMs: NOW
  },
  {
    name: 'n3', id: 3, peerId: '', addresses: ['/ip4/127.0.0.1/tcp/7003'], state: 'unknown', self: false,
    load: { runQueue: 0, load1: 0, load5: 0, load15: 0, cpus: 0 }, memory: { freeBytes: 0, totalBytes: 0 }, jobs: 0, lastSeenMs: 0
  }
]

const status: StatusResult = {
  cluster: 'lab', version: '0.1.0', node: { name: 'n1', id: 1, peerId: '12D3KooWHbQxLAbCdEfGh1111' },
  uptimeMs: 2 * 3600_000 + 5 * 60_000, members: { alive: 2, suspect: 1, dead: 0, total: 3 }, jobs: 4
}

interface Harness {
  readonly out: string[]
  readonly err: string[]
  readonly calls: Array<{ method: string, params: unknown, options?: CallOptions }>
  readonly sockets: string[]
  closed: number
  run(argv: string[], env?: Record<string, string>): Promise<number>
}

/** runCli with a capturing printer and a stub client answering from `answers`. */
function harness (answers: Record<string, unknown>): Harness {
  const h: Harness = {
    out: [],
    err: [],
    calls: [],
    sockets: [],
    closed: 0,
    async run (argv, env = {}) {
      const printer: Printer = { out: t => { h.out.push(t) }, err: t => { h.err.push(t) } }
      const client = {
        async call (method: string, params: unknown, options?: CallOptions) {
          h.calls.push({ method, params, options })
          const answer = answers[method]
          if (answer instanceof Error) throw answer
          return answer
        },
        stream () { throw new Error('not used') },
        close () { h.closed++ }
      } as unknown as ApiClient
      return await runCli(argv, { printer, env, now: () => NOW, connect: async (socket) => { h.sockets.push(socket); return client } })
    }
  }
  return h
}

describe('ssi nodes', () => {
  it('prints an aligned table, nodes by id, with short peer ids, load, runq/cpus, memory and last seen', async () => {
    const h = harness({ nodes })
    expect(await h.run(['nodes'])).toBe(0)
    expect(h.err).toEqual([])
    expect(h.out).toEqual([
      'NAME  ID  PEER       ADDRESS                     STATE    LOAD            RUNQ  MEM FREE/TOTAL   JOBS  LAST SEEN',
      'n1     1  …EfGh1111  /ip4/127.0.0.1/tcp/7001 +1  alive    0.05/0.10/0.20  0/2   1.2 GiB/3.8 GiB     0  self',
      'n2     2  …EfGh2222  /ip4/127.0.0.1/tcp/7002     suspect  1.50/1.25/1.00  3/4   512 MiB/8.0 GiB    12  4.2s ago',
      'n3     3  -          /ip4/127.0.0.1/tcp/7003     unknown  -               -     -                   -  never'
    ])
    expect(h.calls).toMatchObject([{ method: 'nodes', params: {} }])
    expect(h.calls[0]?.options?.signal).toBeInstanceOf(AbortSignal)
    expect(h.closed).toBe(1)
  })

  it('--json (before or after the verb) prints the raw array', async () => {
    for (const argv of [['--json', 'nodes'], ['nodes', '--json']]) {
      const h = harness({ nodes })
      expect(await h.run(argv)).toBe(0)
      expect(JSON.parse(h.out.join('\n'))).toEqual(nodes)
    }
  })

  it('connects to --socket, else SSI_SOCKET, else /run/ssi/ssi.sock', async () => {
    const h = harness({ nodes })
    await h.run(['--socket', '/tmp/a.sock', 'nodes'], { SSI_SOCKET: '/tmp/env.sock' })
    await h.run(['nodes', '--socket=/tmp/b.sock'])
    await h.run(['nodes'], { SSI_SOCKET: '/tmp/env.sock' })
    await h.run(['nodes'])
    expect(h.sockets).toEqual(['/tmp/a.sock', '/tmp/b.sock', '/tmp/env.sock', '/run/ssi/ssi.sock'])
  })

  it('an empty --socket or SSI_SOCKET is one clear line (not a TCP port error), and no connection', async () => {
    const h = harness({ nodes })
    expect(await h.run(['--socket', '', 'nodes'])).toBe(2)
    expect(await h.run(['nodes'], { SSI_SOCKET: '' })).toBe(2)
    expect(await h.run(['--socket=', 'run', '--', 'true'])).toBe(125)
    const line = 'ssi: the control socket path is empty (--socket or SSI_SOCKET): give the daemon\'s socket, e.g. /run/ssi/ssi.sock'
    expect(h.err).toEqual([line, line, line])
    expect(h.sockets).toEqual([])
  })
})

describe('ssi status', () => {
  it('prints the cluster, this node, members by state, jobs, uptime and version', async () => {
    const h = harness({ status })
    expect(await h.run(['status'])).toBe(0)
    expect(h.out).toEqual([
      'cluster  lab',
      'node     n1 (id 1, peer …EfGh1111)',
      'members  2 alive, 1 suspect, 0 dead (3 total)',
      'jobs     4',
      'uptime   2h05m',
      'version  0.1.0'
    ])
  })

  it('--json prints the raw result', async () => {
    const h = harness({ status })
    expect(await h.run(['status', '--json'])).toBe(0)
    expect(JSON.parse(h.out.join('\n'))).toEqual(status)
  })
})

describe('ssi against a real control server', () => {
  it('prints nodes and status through a real ControlClient', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ssi-cli-'))
    const socketPath = join(dir, 'ssi.sock')
    const logger = { debug () {}, info () {}, warn () {}, error () {} }
    const server = new ControlServer({ socketPath, logger })
    server.handle('nodes', async () => nodes)
    server.handle('status', async () => status)
    await server.start()
    try {
      const out: string[] = []
      const err: string[] = []
      const printer: Printer = { out: t => { out.push(t) }, err: t => { err.push(t) } }
      const connect = async (path: string): Promise<ApiClient> => await ControlClient.connect(path)
      expect(await runCli(['--socket', socketPath, 'nodes'], { printer, env: {}, connect, now: () => NOW })).toBe(0)
      expect(out).toHaveLength(4)
      expect(out[1]).toMatch(/^n1 +1 /)
      expect(await runCli(['--socket', socketPath, 'status', '--json'], { printer: { out: t => { out.push(t) }, err: t => { err.push(t) } }, env: {}, connect })).toBe(0)
      expect(JSON.parse(out.slice(4).join('\n'))).toEqual(status)
      expect(err).toEqual([])
      await waitFor(() => server.connectionCount === 0) // the CLI closed its connections
    } finally {
      await server.stop()
      await rm(dir, { recursive: true, force: true })
    }
  })
})

async function waitFor (predicate: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}
