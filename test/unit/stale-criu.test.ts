/** killStaleCriu: only CRIU processes naming a path under the dir are killed. */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { expect, it } from 'vitest'
import { killStaleCriu } from '../../src/node/stale-criu.js'

/** A process whose argv looks like `<argv0> ... -D <path>`. */
const fake = (argv0: string, path: string): ChildProcess =>
  spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)', '--', '-D', path], { argv0, stdio: 'ignore' })

it('kills a criu whose argv names a path under the dir, and leaves other criu and non-criu processes alone', async () => {
  const dir = `/tmp/ssi-stale-criu-${process.pid}/migrations/in`
  const procs = [
    fake('/opt/ssi/criu/usr/sbin/criu', `${dir}/1000001`), // stale: killed
    fake('/opt/ssi/criu/usr/sbin/criu', `/tmp/elsewhere-${process.pid}/in/1`), // another node's
    fake('/usr/bin/not-criu', `${dir}/1000002`) // not CRIU
  ]
  const exited = procs.map(p => new Promise(resolve => p.once('exit', resolve)))
  await new Promise(resolve => setTimeout(resolve, 500))
  try {
    expect(await killStaleCriu(dir)).toEqual([procs[0]?.pid])
    await exited[0]
    expect(procs.map(p => p.exitCode === null && p.signalCode === null)).toEqual([false, true, true])
  } finally {
    for (const p of procs) p.kill('SIGKILL')
  }
})
