import { describe, expect, it } from 'vitest'
import { RemoteError } from '../../src/api/errors.js'
import { renderPs } from '../../src/cli/commands/ps.js'
import { parseSignal } from '../../src/cli/signals.js'
import { EXIT_SSI_ERROR, EXIT_USAGE } from '../../src/cli/run.js'
import { bytes, harness, NOW } from './cli-harness.js'
import type { JobInfo, RunResult } from '../../src/api/schema.js'
import type { StubStream } from './cli-harness.js'

const MiB = 1024 * 1024

function job (over: Partial<JobInfo> = {}): JobInfo {
  return {
    vpid: 1000001,
    owner: { uid: 1000, gid: 1000, groups: [1000], user: 'ada' },
    argv: ['sleep', '100'],
    cwd: '/home/ada',
    hostname: 'lab',
    limits: { memoryBytes: 512 * MiB, cpus: 0.5 },
    node: 'n2',
    homeNode: 'n1',
    state: 'running',
    createdMs: NOW - 65_000,
    startedMs: NOW - 64_000,
    stdin: false,
    cpuPercent: 12.345,
    rssBytes: 34 * MiB,
    ...over
  }
}

const jobs: JobInfo[] = [
  job(),
  job({ vpid: 2000004, owner: { uid: 0, gid: 0, groups: [], user: 'root' }, argv: ['sh', '-c', 'echo it\'s done; exit 1'], node: 'n2', homeNode: 'n2', state: 'exited', exit: { code: 1, oomKilled: false }, endedMs: NOW - 1000 }),
  job({ vpid: 1000002, state: 'starting', startedMs: undefined, argv: ['x'.repeat(200)] })
]

describe('ssi ps', () => {
  it('prints a table of every job with its command cut to 60 characters when not on a terminal', async () => {
    const h = harness({ ps: { jobs, unreachable: [] } })
    expect(await h.run(['ps'])).toBe(0)
    expect(h.out).toEqual([
      'VPID     USER  STATE      NODE  HOME  CPU%  RSS       START      COMMAND',
      '1000001  ada   running    n2    n1    12.3  34.0 MiB  1m04s ago  sleep 100',
      "2000004  root  exited(1)  n2    n2       -         -  1m04s ago  sh -c 'echo it'\\''s done; exit 1'",
      `1000002  ada   starting   n2    n1       -         -  -          ${'x'.repeat(59)}…`
    ])
    expect(h.err).toEqual([])
    expect(h.calls).toEqual([{ method: 'ps', params: {} }])
  })

  it('fits the command to the terminal width', () => {
    const lines = renderPs([job({ argv: ['y'.repeat(300)] })], NOW, 100)
    expect(lines[1]?.length).toBe(99) // the last column stays free: no wrap
    expect(renderPs([job({ argv: ['y'.repeat(300)] })], NOW, 30)[1]).toMatch(/ y{19}…$/) // never narrower than 20
  })

  it('sends the filters; warns on stderr about nodes that did not answer; --json prints the raw result', async () => {
    const h = harness({ ps: { jobs: [], unreachable: ['n3', 'n4'] } })
    expect(await h.run(['ps', '--node', 'n2', '--user', 'ada', '--state', 'running', '--json'])).toBe(0)
    expect(h.calls[0]?.params).toEqual({ node: 'n2', user: 'ada', state: 'running' })
    expect(h.err).toEqual(['ssi: warning: no answer from n3, n4: their jobs are missing below'])
    expect(JSON.parse(h.out.join('\n'))).toEqual({ jobs: [], unreachable: ['n3', 'n4'] })
  })
})

describe('ssi kill', () => {
  const ok = (p: { vpids: number[] }): unknown => ({ results: p.vpids.map(vpid => ({ vpid, node: 'n1' })) })

  it('accepts -9, -KILL, -SIGKILL, -s TERM, --signal=hup; defaults to SIGTERM; prints nothing on success', async () => {
    const h = harness({ kill: ok })
    const forms = [['-9'], ['-KILL'], ['-SIGKILL'], ['-s', 'TERM'], ['--signal=hup'], ['-s', '1'], []]
    for (const form of forms) expect(await h.run(['kill', ...form, '1000001', '2000004'])).toBe(0)
    expect(h.calls.map(c => c.params.signal)).toEqual(['SIGKILL', 'SIGKILL', 'SIGKILL', 'SIGTERM', 'SIGHUP', 'SIGHUP', 'SIGTERM'])
    expect(h.calls[0]?.params.vpids).toEqual([1000001, 2000004])
    expect(h.out).toEqual([])
    expect(h.err).toEqual([])
  })

  it('one line per vpid that failed, exit 1', async () => {
    const h = harness({
      kill: { results: [{ vpid: 1000001, node: 'n1' }, { vpid: 1000009, error: 'no process 1000009 in the cluster' }] }
    })
    expect(await h.run(['kill', '1000001', '1000009'])).toBe(1)
    expect(h.err).toEqual(['ssi: kill 1000009: no process 1000009 in the cluster'])
  })

  it('bad vpids and signals: a usage error, exit 2, nothing sent', async () => {
    const cases: Array<[string[], string]> = [
      [['abc'], 'ssi: "abc" is not a vpid: vpids are positive integers such as 1000001 (see ssi ps)'],
      [['0'], 'ssi: "0" is not a vpid: vpids are positive integers such as 1000001 (see ssi ps)'],
      [['-BOGUS', '1'], 'ssi: unknown signal "BOGUS" (examples: TERM, KILL, INT, HUP, 9)'],
      [['-s', 'KILL', '-9', '1'], 'ssi: give the signal once: -s SIGNAL or -SIGNAL'],
      [['1000001', '-9'], 'ssi: kill: unexpected "-9" (the signal goes first: ssi kill -9 VPID)'],
      [['-9'], 'ssi: kill: no vpid given']
    ]
    for (const [args, message] of cases) {
      const h = harness({ kill: ok })
      expect(await h.run(['kill', ...args])).toBe(EXIT_USAGE)
      expect(h.err).toEqual([message])
      expect(h.connects).toBe(0)
    }
  })

  it('parses signal names and numbers', () => {
    expect(parseSignal('9')).toBe('SIGKILL')
    expect(parseSignal('int')).toBe('SIGINT')
    expect(parseSignal('SIGUSR1')).toBe('SIGUSR1')
    expect(() => parseSignal('99')).toThrow(/unknown signal/)
  })
})

describe('ssi wait', () => {
  const result = (over: Partial<RunResult>): RunResult =>
    ({ vpid: 1000001, node: 'n1', state: 'exited', exit: { code: 0, oomKilled: false }, status: 0, limits: {}, ...over })

  it('prints nothing and exits with the job\'s status', async () => {
    const h = harness({ wait: result({ exit: { code: 42, oomKilled: false }, status: 42 }) })
    expect(await h.run(['wait', '1000001'])).toBe(42)
    expect(h.calls).toEqual([{ method: 'wait', params: { vpid: 1000001 } }])
    expect(h.out).toEqual([])
    expect(h.err).toEqual([])
  })

  it('OOM: the message and 137; --json prints the result', async () => {
    const h = harness({ wait: result({ state: 'oom', exit: { signal: 9, oomKilled: true }, status: 137, limits: { memoryBytes: 1024 * MiB } }) })
    expect(await h.run(['wait', '--json', '1000001'])).toBe(137)
    expect(h.err).toEqual(['ssi: job 1000001 was killed: out of memory (limit 1 GiB)'])
    expect(JSON.parse(h.out.join('\n'))).toMatchObject({ status: 137, state: 'oom' })
  })

  it('a bad vpid or an unknown one: ssi\'s error, exit 125 (never a job status)', async () => {
    const bad = harness()
    expect(await bad.run(['wait', '12x'])).toBe(EXIT_SSI_ERROR)
    const unknown = harness({ wait: new RemoteError('VpidNotFoundError', 'no process 1000009 in the cluster') })
    expect(await unknown.run(['wait', '1000009'])).toBe(EXIT_SSI_ERROR)
    expect(unknown.err).toEqual(['ssi: no process 1000009 in the cluster'])
  })
})

describe('ssi logs', () => {
  it('writes the output as raw bytes to stdout and stderr; -f asks to follow', async () => {
    const h = harness()
    h.onStream = (s: StubStream) => {
      s.emit({ kind: 'output', fd: 1, data: bytes('out') })
      s.emit({ kind: 'output', fd: 2, data: bytes('err\n') })
      s.finish({})
    }
    expect(await h.run(['logs', '-f', '1000001'])).toBe(0)
    expect(h.calls).toEqual([{ method: 'logs', params: { vpid: 1000001, follow: true } }])
    expect(h.written).toEqual([{ fd: 1, text: 'out' }, { fd: 2, text: 'err\n' }])
    await h.run(['logs', '1000001'])
    expect(h.calls[1]?.params).toEqual({ vpid: 1000001, follow: false })
  })

  it('-f: a job stopped by a checkpoint gets one line on stderr saying where, and following goes on', async () => {
    const h = harness()
    h.onStream = (s: StubStream) => {
      s.emit({ kind: 'output', fd: 1, data: bytes('before\n') })
      s.emit({ kind: 'checkpointed', vpid: 1000001, node: 'n2', dir: '/tmp/ck', atMs: 1 })
      s.emit({ kind: 'output', fd: 1, data: bytes('after\n') })
      s.finish({})
    }
    expect(await h.run(['logs', '-f', '1000001'])).toBe(0)
    expect(h.stdout()).toBe('before\nafter\n')
    expect(h.err).toEqual(['ssi: job 1000001 was checkpointed (stopped) into /tmp/ck on n2; still following: its output continues here once it is restored (ssi restore /tmp/ck)'])
  })

  it('Ctrl-C ends `logs -f` quietly with 130', async () => {
    const interrupt = new AbortController()
    const h = harness()
    h.onStream = (s: StubStream) => {
      s.emit({ kind: 'output', fd: 1, data: bytes('line\n') })
      setTimeout(() => { interrupt.abort(new Error('interrupted')); s.fail(new Error('interrupted')) }, 5)
    }
    expect(await h.run(['logs', '-f', '1000001'], { signal: interrupt.signal })).toBe(130)
    expect(h.err).toEqual([])
    expect(h.stdout()).toBe('line\n')
  })
})

describe('ssi inspect', () => {
  it('prints the job as aligned key/value lines', async () => {
    const h = harness({ inspect: job({ state: 'oom', exit: { signal: 9, oomKilled: true }, endedMs: NOW - 2000, hostPid: 4242, jobDir: '/var/lib/ssi/jobs/1000001' }) })
    expect(await h.run(['inspect', '1000001'])).toBe(0)
    expect(h.out).toEqual([
      'vpid      1000001',
      'state     oom',
      'command   sleep 100',
      'user      ada (uid 1000, gid 1000)',
      'node      n2 (home n1)',
      'cwd       /home/ada',
      'hostname  lab',
      'limits    memory 512 MiB, cpus 0.5',
      `created   ${new Date(NOW - 65_000).toISOString()} (1m05s ago)`,
      `started   ${new Date(NOW - 64_000).toISOString()} (1m04s ago)`,
      `ended     ${new Date(NOW - 2000).toISOString()} (2.0s ago)`,
      'exit      signal 9 (SIGKILL), out of memory',
      'cpu       12.3%',
      'rss       34.0 MiB',
      'stdin     none',
      'host pid  4242',
      'job dir   /var/lib/ssi/jobs/1000001'
    ])
  })

  it('says how the last migration ended and why', async () => {
    const migration = { from: 'n1', to: 'n2', outcome: 'rolled-back' as const, atMs: NOW - 3000, detail: 'transferring failed: link down; it runs here again' }
    const h = harness({ inspect: job({ migration }) })
    expect(await h.run(['inspect', '1000001'])).toBe(0)
    expect(h.out.at(-1)).toBe(`migration  n1 -> n2 rolled-back ${new Date(NOW - 3000).toISOString()} (3.0s ago): transferring failed: link down; it runs here again`)
  })

  it('--json prints the raw job', async () => {
    const h = harness({ inspect: job() })
    expect(await h.run(['inspect', '1000001', '--json'])).toBe(0)
    expect(JSON.parse(h.out.join('\n'))).toEqual(job())
  })
})

describe('ssi: global --json before the verb', () => {
  it('works for the job verbs', async () => {
    const ps = harness({ ps: { jobs: [], unreachable: [] } })
    expect(await ps.run(['--json', 'ps'])).toBe(0)
    expect(JSON.parse(ps.out.join('\n'))).toEqual({ jobs: [], unreachable: [] })
    const inspect = harness({ inspect: job() })
    expect(await inspect.run(['--json', 'inspect', '1000001'])).toBe(0)
    expect(JSON.parse(inspect.out.join('\n'))).toEqual(job())
  })
})
