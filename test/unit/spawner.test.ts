/** Spawner pieces that need no root: spec validation and encoding, exit decoding, output follow. */
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { JobSpecError, decodeExit } from '../../src/ssi/spawner/index.js'
import type { JobSpec } from '../../src/ssi/spawner/index.js'
import { followFile } from '../../src/ssi/spawner/output.js'
import { encodeRunSpec, validateJobSpec } from '../../src/ssi/spawner/spec.js'

const base: JobSpec = {
  id: '2000017', argv: ['make', '-j8'], env: { PATH: '/usr/bin', EMPTY: '' }, cwd: '/tmp', uid: 1000, gid: 1000,
  groups: [1000, 27], hostname: 'n1-2000017', limits: { memoryBytes: 1 << 30, cpus: 1.5 }, stdin: true, jobsRoot: '/var/lib/ssi/jobs'
}

describe('validateJobSpec', () => {
  it('accepts a good spec', async () => {
    await validateJobSpec(base)
  })

  const bad: Array<[string, Partial<JobSpec>, RegExp]> = [
    ['empty argv', { argv: [] }, /argv must be a non-empty/],
    ['empty command', { argv: [''] }, /argv\[0\]/],
    ['NUL in an argument', { argv: ['echo', 'a\0b'] }, /without NUL/],
    ['id with a slash', { id: '../x' }, /job id/],
    ['relative cwd', { cwd: 'tmp' }, /cwd must be an absolute path/],
    ['missing cwd', { cwd: '/no/such/dir' }, /not an existing directory/],
    ['relative jobsRoot', { jobsRoot: 'jobs' }, /jobsRoot/],
    ['env name with =', { env: { 'A=B': '1' } }, /environment variable/],
    ['negative uid', { uid: -1 }, /uid and gid/],
    ['fractional gid', { gid: 1.5 }, /uid and gid/],
    ['bad group', { groups: [-3] }, /groups/],
    ['bad hostname', { hostname: 'a b' }, /hostname/],
    ['negative memory', { limits: { memoryBytes: -1 } }, /invalid limits: memoryBytes/],
    ['zero cpus', { limits: { cpus: 0 } }, /invalid limits: cpus/]
  ]
  for (const [what, patch, message] of bad) {
    it(`rejects ${what}`, async () => {
      const err = await validateJobSpec({ ...base, ...patch }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(JobSpecError)
      expect((err as Error).message).toMatch(message)
      expect((err as Error).name).toBe('JobSpecError')
    })
  }
})

describe('encodeRunSpec', () => {
  it('writes NUL-terminated key=value records, lists in order', () => {
    const buf = encodeRunSpec(base, { tini: '/usr/bin/tini', procsFiles: ['/cg/a/cgroup.procs', '/cg/b/cgroup.procs'], oomFile: '/cg/a/memory.oom_control' })
    const records = buf.toString().split('\0')
    expect(records.pop()).toBe('')
    expect(records).toEqual([
      'v=1', 'tini=/usr/bin/tini', 'hostname=n1-2000017', 'cwd=/tmp', 'uid=1000', 'gid=1000', 'stdin=1', 'mountproc=1', 'iouring=1',
      'group=1000', 'group=27', 'cgroup=/cg/a/cgroup.procs', 'cgroup=/cg/b/cgroup.procs', 'oom=/cg/a/memory.oom_control',
      'arg=make', 'arg=-j8', 'env=PATH=/usr/bin', 'env=EMPTY='
    ])
  })
})

describe('decodeExit', () => {
  const dec = (o: Record<string, string>): ReturnType<typeof decodeExit> => decodeExit(new Map(Object.entries({ time: '5', ...o })))
  it('keeps plain exit codes, 127 included', () => {
    expect(dec({ code: '0' })).toEqual({ code: 0, oomKilled: false, finishedMs: 5 })
    expect(dec({ code: '127' })).toEqual({ code: 127, oomKilled: false, finishedMs: 5 })
    expect(dec({ code: '128' })).toEqual({ code: 128, oomKilled: false, finishedMs: 5 })
  })
  it('decodes tini\'s 128+N as signal N', () => {
    expect(dec({ code: '143' })).toEqual({ signal: 15, oomKilled: false, finishedMs: 5 })
    expect(dec({ code: '137', oom_kill: '1' })).toEqual({ signal: 9, oomKilled: true, finishedMs: 5 })
  })
  it('reports a signal that killed tini itself, and core dumps', () => {
    expect(dec({ signal: '9', core: '0', oom_kill: '0' })).toEqual({ signal: 9, oomKilled: false, coreDumped: false, finishedMs: 5 })
    expect(dec({ signal: '11', core: '1' })).toMatchObject({ signal: 11, coreDumped: true })
  })
})

describe('followFile', () => {
  const dirs: string[] = []
  afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }) })

  it('yields appended data live and ends once finished and fully read', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'follow-'))
    dirs.push(dir)
    const path = join(dir, 'stdout')
    writeFileSync(path, 'a\n')
    let done = false
    const got: string[] = []
    const follower = (async () => {
      for await (const c of followFile({ path, fromOffset: 0, pollMs: 1000, finished: async () => done })) got.push(c.toString())
    })()
    await new Promise((resolve) => setTimeout(resolve, 50))
    appendFileSync(path, 'b\n')
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(got.join('')).toBe('a\nb\n') // woken by inotify, well before the 1 s poll
    appendFileSync(path, 'c\n')
    done = true
    writeFileSync(join(dir, 'exit'), 'code=0\n')
    await follower
    expect(got.join('')).toBe('a\nb\nc\n')
  })

  it('starts at an offset and stops on abort', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'follow-'))
    dirs.push(dir)
    const path = join(dir, 'stdout')
    writeFileSync(path, '0123456789')
    const ac = new AbortController()
    const got: string[] = []
    const follower = (async () => {
      for await (const c of followFile({ path, fromOffset: 4, pollMs: 50, finished: async () => false, signal: ac.signal })) got.push(c.toString())
    })()
    await new Promise((resolve) => setTimeout(resolve, 100))
    ac.abort(new Error('client went away'))
    await expect(follower).rejects.toThrow('client went away')
    expect(got).toEqual(['456789'])
  })
})
