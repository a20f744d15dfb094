import { readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { DaemonNotRunningError, RemoteError } from '../../src/api/errors.js'
import { formatAgo, formatBytes, formatCommand, formatDuration, formatLimitBytes, formatLoad, shortAddresses, shortPeerId, truncate } from '../../src/cli/format.js'
import { EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_NO_DAEMON, EXIT_SSI_ERROR, EXIT_USAGE, findVerb, runCli } from '../../src/cli/run.js'
import { formatKeyValues, formatTable } from '../../src/cli/table.js'
import { verbs } from '../../src/cli/verbs.js'
import type { ApiClient, Printer } from '../../src/cli/context.js'

interface Outcome { code: number, out: string[], err: string[] }

/** Runs the CLI with a stub client whose `call` is `call`. */
async function run (argv: string[], call: (method: string, signal?: AbortSignal) => Promise<unknown>, options: { env?: Record<string, string>, signal?: AbortSignal, connectError?: Error } = {}): Promise<Outcome> {
  const out: string[] = []
  const err: string[] = []
  const printer: Printer = { out: t => { out.push(t) }, err: t => { err.push(t) } }
  const client = {
    call: async (method: string, _params: unknown, opts?: { signal?: AbortSignal }) => await call(method, opts?.signal),
    stream () { throw new Error('not used') },
    close () {}
  } as unknown as ApiClient
  const connect = async (): Promise<ApiClient> => {
    if (options.connectError !== undefined) throw options.connectError
    return client
  }
  const code = await runCli(argv, { printer, env: options.env ?? {}, connect, signal: options.signal })
  return { code, out, err }
}

const never = async (): Promise<unknown> => { throw new Error('the daemon should not be called') }

describe('ssi: errors become one line on stderr and an exit code', () => {
  it('a daemon error: its message, exit 1, nothing on stdout', async () => {
    const r = await run(['status'], async () => { throw new RemoteError('VpidNotFoundError', 'no process 2000017 in the cluster') })
    expect(r).toEqual({ code: EXIT_FAILURE, out: [], err: ['ssi: no process 2000017 in the cluster'] })
  })

  it('no daemon: the connect error, exit 3', async () => {
    const r = await run(['nodes'], never, { connectError: new DaemonNotRunningError('/run/ssi/ssi.sock') })
    expect(r.code).toBe(EXIT_NO_DAEMON)
    expect(r.out).toEqual([])
    expect(r.err).toHaveLength(1)
    expect(r.err[0]).toMatch(/^ssi: no ssi daemon at \/run\/ssi\/ssi\.sock: start one with `ssi cluster up <config>`/)
  })

  it('a multi-line message is folded into one line; SSI_DEBUG adds the stack', async () => {
    const failing = async (): Promise<unknown> => { throw new Error('first\n  second\n') }
    expect((await run(['nodes'], failing)).err).toEqual(['ssi: first; second'])
    const debug = await run(['nodes'], failing, { env: { SSI_DEBUG: '1' } })
    expect(debug.err[0]).toBe('ssi: first; second')
    expect(debug.err[1]).toMatch(/at /)
  })

  it('usage errors: unknown verb (with a suggestion), unknown option, excess argument → exit 2', async () => {
    const unknownVerb = await run(['nodez'], never)
    expect(unknownVerb.code).toBe(EXIT_USAGE)
    expect(unknownVerb.err).toEqual(["ssi: unknown command 'nodez'; (Did you mean nodes?)"])
    const unknownOption = await run(['nodes', '--frobnicate'], never)
    expect(unknownOption).toMatchObject({ code: EXIT_USAGE, err: ["ssi: unknown option '--frobnicate'"] })
    const excess = await run(['status', 'extra'], never)
    expect(excess.code).toBe(EXIT_USAGE)
    expect(excess.err).toHaveLength(1)
  })

  it('run and wait, which exit with a job\'s status: every ssi error is 125 instead of 1/2/3', async () => {
    const noDaemon = { connectError: new DaemonNotRunningError('/run/ssi/ssi.sock') }
    expect((await run(['run', '--', 'true'], never, noDaemon)).code).toBe(EXIT_SSI_ERROR)
    expect((await run(['wait', '1000001'], never, noDaemon)).code).toBe(EXIT_SSI_ERROR)
    const unknownNode = await run(['run', '-d', '--node', 'n9', '--', 'true'], async () => { throw new RemoteError('UnknownNodeError', 'unknown node "n9"') })
    expect(unknownNode).toMatchObject({ code: EXIT_SSI_ERROR, err: ['ssi: unknown node "n9"'] })
    expect((await run(['run', '--frobnicate', '--', 'true'], never)).code).toBe(EXIT_SSI_ERROR)
    // Other verbs keep 1/2/3.
    expect((await run(['ps', '--frobnicate'], never)).code).toBe(EXIT_USAGE)
    expect((await run(['ps'], never, noDaemon)).code).toBe(EXIT_NO_DAEMON)
  })

  it('an interrupt (SIGINT) during a call → "interrupted", exit 130', async () => {
    const controller = new AbortController()
    const waitForAbort = async (_method: string, signal?: AbortSignal): Promise<unknown> => await new Promise((_resolve, reject) => {
      signal?.addEventListener('abort', () => { reject(signal.reason) })
      controller.abort(new Error('interrupted'))
    })
    const r = await run(['nodes'], waitForAbort, { signal: controller.signal })
    expect(r).toEqual({ code: EXIT_INTERRUPTED, out: [], err: ['ssi: interrupted'] })
  })
})

describe('ssi: help and verb loading', () => {
  it('--help lists every verb with its summary on stdout, exit 0, without connecting', async () => {
    const r = await run(['--help'], never, { connectError: new Error('must not connect') })
    expect(r.code).toBe(0)
    const help = r.out.join('\n').replace(/\s+/g, ' ')
    for (const verb of verbs) expect(help).toContain(verb.summary)
    expect(help).toContain('--socket <path>')
    expect(help).toContain('--json')
  })

  it('<verb> --help and help <verb> show the verb', async () => {
    for (const argv of [['nodes', '--help'], ['help', 'nodes']]) {
      const r = await run(argv, never)
      expect(r.code).toBe(0)
      expect(r.out.join('\n')).toMatch(/Usage: ssi nodes/)
    }
  })

  it('no verb: help on stderr and a non-zero exit', async () => {
    const r = await run([], never)
    expect(r.code).not.toBe(0)
    expect(r.err.join('\n')).toMatch(/Usage: ssi/)
  })

  it('finds the verb past global options and their values', () => {
    expect(findVerb(['nodes'])).toBe('nodes')
    expect(findVerb(['--json', 'nodes'])).toBe('nodes')
    expect(findVerb(['--socket', 'status', 'nodes'])).toBe('nodes')
    expect(findVerb(['--socket=/x', 'status'])).toBe('status')
    expect(findVerb(['help', 'status'])).toBe('status')
    expect(findVerb(['--help'])).toBeUndefined()
    expect(findVerb(['--', 'nodes'])).toBeUndefined()
  })

  it('every verb module loads and registers', async () => {
    for (const verb of verbs) expect(typeof (await verb.load()).register).toBe('function')
  })
})

describe('ssi: formatting', () => {
  it('formats bytes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B')
    expect(formatBytes(1023)).toBe('1023 B')
    expect(formatBytes(1024)).toBe('1.0 KiB')
    expect(formatBytes(1.2 * 1024 ** 3)).toBe('1.2 GiB')
    expect(formatBytes(512 * 1024 ** 2)).toBe('512 MiB')
    expect(formatBytes(3 * 1024 ** 6)).toBe('3072 PiB')
    expect(formatBytes(-1)).toBe('?')
  })

  it('formats limits exactly, commands quoted for a shell, and cuts long text', () => {
    expect(formatLimitBytes(64 * 1024 ** 2)).toBe('64 MiB')
    expect(formatLimitBytes(1.5 * 1024 ** 3)).toBe('1.5 GiB')
    expect(formatLimitBytes(1024 ** 3)).toBe('1 GiB')
    expect(formatLimitBytes(1_500_000_000)).toBe('1.4 GiB')
    expect(formatLimitBytes(4096)).toBe('4 KiB')
    expect(formatCommand(['sh', '-c', "echo it's", 'a b', 'x=1,y'])).toBe("sh -c 'echo it'\\''s' 'a b' x=1,y")
    expect(truncate('abcdef', 4)).toBe('abc…')
    expect(truncate('abc', 4)).toBe('abc')
  })

  it('formats durations and ages', () => {
    expect(formatDuration(400)).toBe('0.4s')
    expect(formatDuration(59_949)).toBe('59.9s')
    expect(formatDuration(185_000)).toBe('3m05s')
    expect(formatDuration(2 * 3600_000 + 7 * 60_000)).toBe('2h07m')
    expect(formatDuration(4 * 86_400_000 + 3 * 3600_000)).toBe('4d03h')
    expect(formatDuration(-5)).toBe('0.0s')
    expect(formatAgo(1000, 1400)).toBe('0.4s ago')
  })

  it('formats load, peer ids and addresses', () => {
    expect(formatLoad({ load1: 0.5, load5: 0.25, load15: 1 })).toBe('0.50/0.25/1.00')
    expect(shortPeerId('12D3KooWAbCdEfGhIjKl')).toBe('…EfGhIjKl')
    expect(shortPeerId('short')).toBe('short')
    expect(shortAddresses([])).toBe('-')
    expect(shortAddresses(['/ip4/1.2.3.4/tcp/1/p2p/12D3KooWx', '/ip4/5.6.7.8/tcp/2'])).toBe('/ip4/1.2.3.4/tcp/1 +1')
  })

  it('aligns table columns, right-aligning the chosen ones, with no trailing spaces', () => {
    expect(formatTable(['A', 'NUM', 'C'], [['xx', '1', ''], ['y', '100', 'z']], { rightAlign: [1] })).toEqual([
      'A   NUM  C',
      'xx    1',
      'y   100  z'
    ])
    expect(formatKeyValues([['a', '1'], ['long', '2']])).toEqual(['a     1', 'long  2'])
  })
})

/** Runtime (non-type) static imports of a source file, resolved to .ts paths or left as package names. */
function staticImports (file: string): string[] {
  const source = readFileSync(file, 'utf8')
  const specifiers = [...source.matchAll(/^import (?!type )[^'"]*['"]([^'"]+)['"]/gm)].map(m => m[1] as string)
  return specifiers.map(s => s.startsWith('.') ? resolve(dirname(file), s.replace(/\.js$/, '.ts')) : s)
}

describe('ssi: start-up cost', () => {
  it('the CLI and its command modules statically load no zod, pino, libp2p, level, koffi or daemon code', () => {
    const root = resolve('src')
    const entries = ['cli/main.ts', 'api/client.ts', ...verbs.map(v => `cli/commands/${v.name}.ts`)].map(f => join(root, f))
    const seen = new Set<string>()
    const packages = new Set<string>()
    const queue = [...entries]
    while (queue.length > 0) {
      const file = queue.pop() as string
      if (seen.has(file)) continue
      seen.add(file)
      for (const dep of staticImports(file)) {
        if (dep.startsWith('/')) queue.push(dep)
        else packages.add(dep)
      }
    }
    const allowed = (p: string): boolean => p.startsWith('node:') || p === 'commander' || p === 'msgpackr/pack'
    expect([...packages].filter(p => !allowed(p))).toEqual([])
    const modules = [...seen].map(f => relative(root, f))
    expect(modules.filter(m => !m.startsWith('cli/') && !m.startsWith('api/') && m !== 'util/units.ts')).toEqual([])
    expect(modules).toEqual(expect.arrayContaining(['cli/run.ts', 'cli/verbs.ts', 'api/framing.ts', 'cli/table.ts', 'cli/commands/run.ts']))
    // node:os for signal names (kill, inspect). commander (cli/commander.ts, through require()) is
    // imported on demand: a plain `ssi run` never loads it (cli/fast-run.ts).
    expect(packages).toEqual(new Set(['node:net', 'node:os', 'msgpackr/pack']))
    expect(modules).not.toContain('cli/commander.ts')
    expect(modules).not.toContain('api/schema.ts') // zod
    expect(modules).not.toContain('api/server-connection.ts')
  })
})
