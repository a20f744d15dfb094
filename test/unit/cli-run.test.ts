import { describe, expect, it } from 'vitest'
import { EXIT_SSI_ERROR } from '../../src/cli/run.js'
import { bytes, harness, waitFor } from './cli-harness.js'
import type { RunResult } from '../../src/api/schema.js'
import type { StubStream } from './cli-harness.js'

const VPID = 1000001
const MiB = 1024 * 1024

function ended (over: Partial<RunResult> = {}): RunResult {
  return { vpid: VPID, node: 'n1', state: 'exited', exit: { code: 0, oomKilled: false }, status: 0, limits: {}, ...over }
}

/** Scripts each stream: started, the given output, then the result. */
function script (outputs: Array<[1 | 2, string]>, result: RunResult = ended()) {
  return (s: StubStream): void => {
    s.emit({ kind: 'started', vpid: VPID, node: 'n1' })
    for (const [fd, text] of outputs) s.emit({ kind: 'output', fd, data: bytes(text) })
    s.finish(result)
  }
}

describe('ssi run: params', () => {
  it('sends argv (options after the command included), the caller\'s env and cwd; no limits unless given', async () => {
    const h = harness()
    h.onStream = script([])
    expect(await h.run(['run', '--', 'grep', '--json', '-i', 'x'])).toBe(0)
    expect(h.calls).toEqual([{
      method: 'run',
      params: {
        argv: ['grep', '--json', '-i', 'x'],
        env: { PATH: '/usr/bin:/bin', HOME: '/home/ada', LANG: 'C.UTF-8' },
        cwd: '/home/ada/work',
        stdin: false,
        detach: false
      }
    }])
    expect(h.out).toEqual([])
    expect(h.err).toEqual([])
  })

  it('without --: options after the command still belong to it; run\'s own options go before it', async () => {
    const h = harness()
    h.onStream = script([])
    await h.run(['run', '--node', 'n2', 'ls', '-la', '--json', '--node', 'x'])
    expect(h.calls[0]?.params).toMatchObject({ argv: ['ls', '-la', '--json', '--node', 'x'], node: 'n2' })
    expect(h.out).toEqual([]) // --json went to ls
  })

  it('converts limits: --memory in bytes (binary and decimal units), --cpus as a fraction, --pids', async () => {
    const h = harness()
    h.onStream = script([])
    await h.run(['run', '--memory', '512M', '--cpus', '0.5', '--pids', '100', '--', 'true'])
    await h.run(['run', '-m', '1GiB', '--cpus', '2', '--', 'true'])
    await h.run(['run', '--memory=1.5GB', '--cpus', '.25', '--', 'true'])
    expect(h.calls.map(c => [c.params.memoryBytes, c.params.cpus, c.params.pids])).toEqual([
      [512 * MiB, 0.5, 100],
      [1024 * MiB, 2, undefined],
      [1_500_000_000, 0.25, undefined]
    ])
  })

  it('invalid limits and options: one usage line, exit 2, the daemon is not contacted', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--memory', '12Q'], /^ssi: --memory: "12Q" is not a size/],
      [['--memory', '1M'], /^ssi: --memory: "1M" is below the minimum of 4 MiB$/],
      [['--memory', '-5'], /^ssi: --memory:/],
      [['--cpus', 'abc'], /^ssi: --cpus: "abc" is not a number of cores/],
      [['--cpus', '0'], /^ssi: --cpus: 0 is out of range \(0\.01 to 4096\)$/],
      [['--pids', '0'], /^ssi: --pids: "0" is not a whole number from 1 to 4194304$/],
      [['--pids', '1.5'], /^ssi: --pids:/],
      [['--env', '=x'], /^ssi: --env: "=x" is not NAME=VALUE$/],
      [['--node', ''], /^ssi: --node: empty node name$/]
    ]
    for (const [options, message] of cases) {
      const h = harness()
      expect(await h.run(['run', ...options, '--', 'true'])).toBe(EXIT_SSI_ERROR)
      expect(h.err).toHaveLength(1)
      expect(h.err[0]).toMatch(message)
      expect(h.connects).toBe(0)
    }
  })

  it('no command: usage error, exit 125 (ssi\'s own error, never a job status)', async () => {
    const h = harness()
    expect(await h.run(['run'])).toBe(EXIT_SSI_ERROR)
    expect(h.err).toEqual(["ssi: missing required argument 'command'"])
  })

  it('--env adds to and overrides the caller\'s environment; --clean-env keeps only PATH and the --env ones', async () => {
    const h = harness()
    h.onStream = script([])
    await h.run(['run', '-e', 'A=1', '--env', 'LANG=de_DE', '--env', 'B=x=y', '--env', 'EMPTY=', '--', 'env'])
    expect(h.calls[0]?.params.env).toEqual({ PATH: '/usr/bin:/bin', HOME: '/home/ada', LANG: 'de_DE', A: '1', B: 'x=y', EMPTY: '' })
    await h.run(['run', '--clean-env', '--env', 'A=1', '--env', 'HOME', '--env', 'UNSET', '--', 'env'])
    expect(h.calls[1]?.params.env).toEqual({ PATH: '/usr/bin:/bin', A: '1', HOME: '/home/ada' })
  })
})

describe('ssi run: output and exit status', () => {
  it('writes the job\'s stdout and stderr as raw bytes, in order, with nothing added', async () => {
    const h = harness()
    h.onStream = script([[1, 'partial line'], [2, 'warning\n'], [1, ' continued\n'], [1, '\u0000\u00ff']])
    expect(await h.run(['run', '--', 'job'])).toBe(0)
    expect(h.written).toEqual([
      { fd: 1, text: 'partial line' }, { fd: 2, text: 'warning\n' }, { fd: 1, text: ' continued\n' }, { fd: 1, text: '\u0000\u00ff' }
    ])
    expect(h.out).toEqual([])
    expect(h.err).toEqual([])
  })

  it('exits with the job\'s status: its exit code, or 128 + the signal', async () => {
    for (const [result, code] of [
      [ended({ exit: { code: 3, oomKilled: false }, status: 3 }), 3],
      [ended({ state: 'killed', exit: { signal: 15, oomKilled: false }, status: 143 }), 143]
    ] as const) {
      const h = harness()
      h.onStream = script([], result)
      expect(await h.run(['run', '--', 'job'])).toBe(code)
      expect(h.err).toEqual([])
    }
  })

  it('a command that could not be found: the job\'s own message, status 127, nothing added', async () => {
    const h = harness()
    h.onStream = script([[2, 'ssi-shim: nope: command not found\n']], ended({ exit: { code: 127, oomKilled: false }, status: 127 }))
    expect(await h.run(['run', '--', 'nope'])).toBe(127)
    expect(h.err).toEqual([])
    expect(h.stderr()).toBe('ssi-shim: nope: command not found\n')
  })

  it('OOM-killed: one line with the limit, exit 137', async () => {
    const h = harness()
    h.onStream = script([], ended({ state: 'oom', exit: { signal: 9, oomKilled: true }, status: 137, limits: { memoryBytes: 512 * MiB } }))
    expect(await h.run(['run', '--memory', '512M', '--', 'hog'])).toBe(137)
    expect(h.err).toEqual(['ssi: job 1000001 was killed: out of memory (limit 512 MiB)'])
  })

  it('a job that failed to start or was lost: the reason on stderr, its status', async () => {
    const h = harness()
    h.onStream = script([], ended({ state: 'failed', exit: undefined, status: 255, error: 'cgroup: no such controller cpu' }))
    expect(await h.run(['run', '--', 'job'])).toBe(EXIT_SSI_ERROR)
    expect(h.err).toEqual(['ssi: job 1000001 failed: cgroup: no such controller cpu'])
  })

  it('a job lost with its node: the reason on stderr and exit status 254, whatever its status field says', async () => {
    const h = harness()
    h.onStream = script([], ended({ state: 'lost', exit: undefined, status: 255, error: 'node n3 died (declared dead by 3 of 4 nodes)' }))
    expect(await h.run(['run', '--', 'job'])).toBe(254)
    expect(h.err).toEqual(['ssi: job 1000001 was lost: node n3 died (declared dead by 3 of 4 nodes)'])
  })

  it('--json (global, before run) prints the result after the output', async () => {
    const h = harness()
    h.onStream = script([[1, 'hi\n']], ended({ exit: { code: 1, oomKilled: false }, status: 1 }))
    expect(await h.run(['--json', 'run', '--', 'job'])).toBe(1)
    expect(h.stdout()).toBe('hi\n')
    expect(JSON.parse(h.out.join('\n'))).toMatchObject({ vpid: VPID, status: 1 })
  })

  it('-d prints the vpid once started and returns (no output, no signals); with --json the result', async () => {
    const h = harness({ run: ended({ state: 'running', exit: undefined }) })
    expect(await h.run(['run', '-d', '--', 'sleep', '100'])).toBe(0)
    expect(h.out).toEqual(['1000001'])
    expect(h.calls[0]?.params).toMatchObject({ detach: true, argv: ['sleep', '100'] })
    expect(h.streams).toEqual([])
    expect(await h.run(['run', '--detach', '--json', '--', 'sleep', '100'])).toBe(0)
    expect(JSON.parse(h.out.slice(1).join('\n'))).toMatchObject({ vpid: VPID, state: 'running' })
  })

  it('-d when the job could not be started: the vpid, the reason, its status', async () => {
    const h = harness({ run: ended({ state: 'failed', exit: undefined, status: 255, error: 'no such directory /x' }) })
    expect(await h.run(['run', '-d', '--', 'true'])).toBe(EXIT_SSI_ERROR)
    expect(h.out).toEqual(['1000001'])
    expect(h.err).toEqual(['ssi: job 1000001 failed: no such directory /x'])
  })
})

describe('ssi run: signals', () => {
  it('forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGPIPE to the job and keeps streaming until it ends', async () => {
    const h = harness()
    const done = h.run(['run', '--', 'job'])
    await waitFor(() => h.subscribed, 'the signal subscription')
    const stream = h.streams[0] as StubStream
    stream.emit({ kind: 'started', vpid: VPID, node: 'n1' })
    for (const name of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGPIPE']) h.signal(name)
    await waitFor(() => stream.inputs.length === 5, 'the forwarded signals')
    expect(stream.inputs).toEqual(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGPIPE'].map(signal => ({ signal })))
    stream.emit({ kind: 'output', fd: 1, data: bytes('cleaning up\n') })
    stream.finish(ended({ state: 'killed', exit: { signal: 2, oomKilled: false }, status: 130 }))
    expect(await done).toBe(130)
    expect(stream.cancelled).toBe(false)
    expect(h.stdout()).toBe('cleaning up\n')
    expect(h.err).toEqual([])
    expect(h.subscribed).toBe(false)
  })

  it('a second Ctrl-C within 1 s is forwarded and detaches: exit 130, the job is left running', async () => {
    const h = harness()
    const done = h.run(['run', '--', 'job'])
    await waitFor(() => h.subscribed, 'the signal subscription')
    const stream = h.streams[0] as StubStream
    stream.emit({ kind: 'started', vpid: VPID, node: 'n1' })
    await waitFor(() => h.written.length === 0) // let the event through
    h.signal('SIGINT')
    h.nowMs += 1500 // too late for a double Ctrl-C
    h.signal('SIGINT')
    expect(stream.cancelled).toBe(false)
    h.nowMs += 300
    h.signal('SIGINT')
    expect(stream.cancelled).toBe(true)
    expect(await done).toBe(130)
    await waitFor(() => stream.inputs.length === 3, 'three forwarded signals')
    expect(h.err).toEqual(['ssi: detached from job 1000001; it may still be running (ssi ps, ssi logs -f 1000001, ssi kill 1000001)'])
  })
})

describe('ssi run -i: stdin', () => {
  async function * chunks (...parts: Uint8Array[]): AsyncIterable<Uint8Array> {
    for (const part of parts) yield part
  }

  it('forwards stdin chunks in order, big ones in 256 KiB pieces, then end of file', async () => {
    const h = harness()
    const big = new Uint8Array(600 * 1024).fill(7)
    const done = h.run(['run', '-i', '--', 'cat'], { stdin: () => chunks(bytes('one\n'), big, bytes('two\n')) })
    await waitFor(() => h.streams[0]?.inputs.length === 6, 'stdin inputs')
    const stream = h.streams[0] as StubStream
    expect(stream.params.stdin).toBe(true)
    const sizes = stream.inputs.map(i => (i as { stdin?: Uint8Array }).stdin?.length)
    expect(sizes).toEqual([4, 256 * 1024, 256 * 1024, 88 * 1024, 4, undefined])
    expect(stream.inputs[5]).toEqual({ eof: true })
    stream.finish(ended())
    expect(await done).toBe(0)
  })

  it('reads the next chunk only after the previous one was sent (backpressure)', async () => {
    const h = harness()
    let reads = 0
    let release!: () => void
    h.sendGate = async () => { await new Promise<void>(resolve => { release = resolve }) }
    async function * counted (): AsyncIterable<Uint8Array> {
      for (let i = 0; i < 3; i++) { reads++; yield bytes(`${i}`) }
    }
    const done = h.run(['run', '-i', '--', 'cat'], { stdin: counted })
    await waitFor(() => reads === 1 && release !== undefined, 'the first read')
    await new Promise(resolve => setTimeout(resolve, 20))
    expect(reads).toBe(1) // held back by the unsent first chunk
    h.sendGate = async () => {}
    release()
    await waitFor(() => h.streams[0]?.inputs.length === 4, 'all inputs')
    expect(reads).toBe(3)
    h.streams[0]?.finish(ended())
    expect(await done).toBe(0)
  })

  it('a stdin write the daemon could not make (stdin-closed) is said once and ends forwarding: nothing more sent, no end of file', async () => {
    const h = harness()
    let reads = 0
    let more!: () => void
    async function * endless (): AsyncIterable<Uint8Array> {
      for (;;) {
        reads++
        yield bytes('x')
        await new Promise<void>(resolve => { more = resolve })
      }
    }
    const done = h.run(['run', '-i', '--', 'cat'], { stdin: endless })
    await waitFor(() => h.streams[0]?.inputs.length === 1, 'the first chunk')
    const stream = h.streams[0] as StubStream
    stream.emit({ kind: 'started', vpid: VPID, node: 'n1' })
    stream.emit({ kind: 'stdin-closed', message: 'cannot open /x/stdin: the job no longer reads its stdin' })
    await waitFor(() => h.err.length === 1, 'the message')
    expect(h.err).toEqual(['ssi: stopped forwarding stdin: cannot open /x/stdin: the job no longer reads its stdin'])
    more() // the read already under way when forwarding stopped: its bytes are not sent
    await new Promise(resolve => setTimeout(resolve, 20))
    expect(stream.inputs).toEqual([{ stdin: bytes('x') }])
    expect(reads).toBe(2)
    stream.finish(ended())
    expect(await done).toBe(0)
  })

  it('a stdin read error is said, and the job gets end of file', async () => {
    const h = harness()
    async function * failing (): AsyncIterable<Uint8Array> {
      yield bytes('a')
      throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' })
    }
    const done = h.run(['run', '-i', '--', 'cat'], { stdin: failing })
    await waitFor(() => h.streams[0]?.inputs.length === 2, 'the chunk and end of file')
    expect(h.streams[0]?.inputs).toEqual([{ stdin: bytes('a') }, { eof: true }])
    expect(h.err).toEqual(['ssi: cannot read stdin (EIO: i/o error, read): the job gets end of file'])
    h.streams[0]?.finish(ended())
    expect(await done).toBe(0)
  })

  it('without -i, stdin is never read', async () => {
    const h = harness()
    h.onStream = script([])
    expect(await h.run(['run', '--', 'cat'])).toBe(0) // the harness's stdin throws if read
    expect(h.streams[0]?.inputs).toEqual([])
  })
})
