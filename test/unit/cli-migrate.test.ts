import { describe, expect, it } from 'vitest'
import { RemoteError } from '../../src/api/errors.js'
import { harness } from './cli-harness.js'

const result = { vpid: 1000001, from: 'n1', node: 'n2', checkMs: 1, dumpMs: 52, transferMs: 30, restoreMs: 61, downtimeMs: 150, bytes: 3 * 1024 * 1024 }

describe('ssi migrate', () => {
  it('calls migrate and prints the phase times', async () => {
    const h = harness({ migrate: result })
    expect(await h.run(['migrate', '1000001', 'n2'])).toBe(0)
    expect(h.calls).toEqual([{ method: 'migrate', params: { vpid: 1000001, node: 'n2' } }])
    expect(h.out).toEqual(['1000001 moved n1 -> n2: dump 52 ms, transfer 30 ms (3.0 MiB), restore 61 ms, downtime 150 ms'])
    expect(h.err).toEqual([])
  })

  it('--json prints every phase time', async () => {
    const h = harness({ migrate: result })
    expect(await h.run(['migrate', '--json', '1000001', 'n2'])).toBe(0)
    expect(JSON.parse(h.out.join('\n'))).toEqual(result)
  })

  it('says why a migration was refused and exits non-zero', async () => {
    const h = harness({ migrate: new RemoteError('JobPermissionError', 'permission denied: job 1000001 belongs to root (uid 0); only its owner or root may migrate it') })
    expect(await h.run(['migrate', '1000001', 'n2'])).not.toBe(0)
    expect(h.err.join('\n')).toMatch(/permission denied/)
  })
})
