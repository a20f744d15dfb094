/**
 * unusedMounts on real processes and real mounts: a mount holding a child's cwd or the root's open
 * fd is kept; an unused tmpfs and its child mount are left out; the root and system mounts never are.
 * Needs root (mount); every mount made here is undone.
 */
import { execFile, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/cluster.js'
import { processTree } from '../../src/migration/precheck.js'
import { unusedMounts } from '../../src/migration/used-mounts.js'

const exec = promisify(execFile)

describe('unusedMounts (real /proc, real mounts)', () => {
  const mounted: string[] = []
  let dir = ''
  let proc: ChildProcess | undefined

  afterAll(async () => {
    proc?.kill('SIGKILL')
    for (const p of mounted.reverse()) await exec('umount', ['-l', p]).catch(() => {})
    if (dir !== '') await rm(dir, { recursive: true, force: true })
  })

  it('keeps the mounts of a cwd and an open fd in the tree, leaves out an unused subtree', async () => {
    if (process.getuid?.() !== 0) throw new Error('needs root (mount)')
    dir = await mkdtemp(join(tmpdir(), 'ssi-used-mnt-'))
    for (const sub of ['cwd', 'fd', 'unused', 'unused/inner']) {
      await exec('mkdir', ['-p', join(dir, sub)])
      await exec('mount', ['-t', 'tmpfs', 'ssi-test', join(dir, sub)])
      mounted.push(join(dir, sub))
    }
    await writeFile(join(dir, 'fd', 'f'), 'x')
    // The root holds fd/f open; its child (sleep) runs in cwd/.
    proc = spawn('sh', ['-c', `exec 3<${join(dir, 'fd', 'f')}; (cd ${join(dir, 'cwd')} && exec sleep 60) & wait`], { stdio: 'ignore' })
    const pid = proc.pid as number
    await eventually(async () => (await processTree(pid)).length >= 2, 5_000, 'child started')
    const skip = await unusedMounts(pid)
    expect(skip).toContain(join(dir, 'unused'))
    expect(skip).toContain(join(dir, 'unused', 'inner'))
    expect(skip).not.toContain(join(dir, 'cwd'))
    expect(skip).not.toContain(join(dir, 'fd'))
    for (const p of ['/', '/proc', '/sys', '/dev']) expect(skip).not.toContain(p)
  })
})
