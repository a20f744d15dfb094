import { describe, expect, it } from 'vitest'
import { ArrivingImages } from '../../src/migration/transfer/arrivals.js'
import { compareImageNames } from '../../src/migration/transfer/source.js'

const never = new AbortController().signal
const tick = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

describe('ArrivingImages', () => {
  it('answers whether a file exists only once every file is listed, or it is', async () => {
    const a = new ArrivingImages('/d')
    const ghost = a.has('ghost.img', never)
    let settled = false
    void ghost.then(() => { settled = true })
    a.listed(['core-1.img'], false)
    expect(await a.has('core-1.img', never)).toBe(true)
    await tick()
    expect(settled).toBe(false) // a later header may still list it
    a.listed(['pages-1.img'], true)
    expect(await ghost).toBe(false)
    expect(a.path('pages-1.img')).toBe('/d/pages-1.img')
  })

  it('says how much of a file is on disk, waiting for more than the caller has', async () => {
    const a = new ArrivingImages('/d')
    a.listed(['pages-1.img'], true)
    const first = a.progress('pages-1.img', 0, never)
    a.wrote('pages-1.img', 4096)
    expect(await first).toEqual({ bytes: 4096, complete: false })
    const next = a.progress('pages-1.img', 4096, never)
    a.wrote('pages-1.img', 4096) // no more than before: still waiting
    await tick()
    a.completed('pages-1.img', 8192)
    expect(await next).toEqual({ bytes: 8192, complete: true })
    await a.complete('pages-1.img', never)
  })

  it('fails every waiter when the transfer breaks, and stops one waiter on abort', async () => {
    const a = new ArrivingImages('/d')
    const stop = new AbortController()
    const aborted = a.whenVerified(stop.signal)
    stop.abort(new Error('cancelled'))
    await expect(aborted).rejects.toThrow('cancelled')
    const waiting = [a.has('x.img', never), a.progress('x.img', 0, never), a.whenVerified(never)]
    a.failed(new Error('the transfer broke'))
    for (const w of waiting) await expect(w).rejects.toThrow('the transfer broke')
    a.verified()
    await expect(a.whenVerified(never)).rejects.toThrow('the transfer broke') // a failure stays
  })
})

describe('compareImageNames', () => {
  it('puts CRIU\'s page files last, by number, and the rest by name', () => {
    const names = ['pages-10.img', 'ssi.stdout', 'pages-2.img', 'core-1.img', 'pagemap-1.img', 'pages-1.img', 'ssi.stderr']
    expect(names.sort(compareImageNames)).toEqual(['core-1.img', 'pagemap-1.img', 'ssi.stderr', 'ssi.stdout', 'pages-1.img', 'pages-2.img', 'pages-10.img'])
  })
})
