/**
 * Checkpoint arrivals (src/node/checkpoint/arrivals.ts) when the daemon stops: dirs nobody claimed
 * (e.g. the periodic round's `ckpt.keep` never came because the home node's dump call failed) are
 * deleted then, not left in checkpoints/work for the next start; waiters fail; a dir whose
 * transfer finishes afterwards is deleted at once.
 */
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Arrivals } from '../../src/node/checkpoint/arrivals.js'

const roots: string[] = []
afterEach(async () => { for (const r of roots.splice(0)) await rm(r, { recursive: true, force: true }) })

async function arrived (name: string): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'ssi-arrivals-'))
  roots.push(root)
  const dir = join(root, name)
  await mkdir(dir)
  await writeFile(join(dir, 'pages-1.img'), 'x')
  return dir
}

describe('checkpoint arrivals on stop', () => {
  it('deletes unclaimed dirs, fails waiters, and deletes what arrives later', async () => {
    const arrivals = new Arrivals()
    const unclaimed = await arrived('a')
    arrivals.put('n2', 7, { dir: unclaimed })
    const waiting = arrivals.take('n3', 8, 60_000)
    waiting.catch(() => {})
    await arrivals.close()
    expect(existsSync(unclaimed)).toBe(false)
    await expect(waiting).rejects.toThrow(/stopping/)
    const late = await arrived('b')
    arrivals.put('n3', 8, { dir: late })
    for (let i = 0; i < 100 && existsSync(late); i++) await new Promise(resolve => setTimeout(resolve, 10))
    expect(existsSync(late)).toBe(false)
  })

  it('a claimed dir is the claimer\'s: close leaves it alone', async () => {
    const arrivals = new Arrivals()
    const dir = await arrived('c')
    arrivals.put('n2', 9, { dir })
    expect(await arrivals.take('n2', 9, 1000)).toBe(dir)
    await arrivals.close()
    expect(existsSync(dir)).toBe(true)
  })
})
