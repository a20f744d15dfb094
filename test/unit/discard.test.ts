/** DirDiscarder (src/node/discard.ts): a dir's path is free at once, its content goes in the background. */
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { DirDiscarder } from '../../src/node/discard.js'

const warnings: unknown[] = []
const logger = { warn: (o: unknown) => { warnings.push(o) } }
let root = ''
afterEach(async () => { await rm(root, { recursive: true, force: true }) })

describe('DirDiscarder', () => {
  it('frees the path at once, deletes in the background, and flush waits for it', async () => {
    root = await mkdtemp(join(tmpdir(), 'ssi-discard-'))
    const d = new DirDiscarder(join(root, 'trash'), logger)
    const dir = join(root, 'out', '7')
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, 'pages-1.img'), Buffer.alloc(1 << 20))
    await d.discard(dir)
    expect(existsSync(dir)).toBe(false)
    await mkdir(dir) // the next migration of the same job may use the path at once
    await d.flush()
    expect(existsSync(dir)).toBe(true)
    expect(await readdir(join(root, 'trash'))).toEqual([])
    await d.discard(join(root, 'missing')) // nothing there: fine
    expect(warnings).toEqual([])
  })

  it('purge deletes what an earlier daemon left in the trash', async () => {
    root = await mkdtemp(join(tmpdir(), 'ssi-discard-'))
    await mkdir(join(root, 'trash', '9-left'), { recursive: true })
    await new DirDiscarder(join(root, 'trash'), logger).purge()
    expect(existsSync(join(root, 'trash'))).toBe(false)
  })
})
