import { describe, expect, it } from 'vitest'
import { parseDumpStats } from '../../src/migration/dump-stats.js'

// stats-dump written by CRIU 4.2 for a dump of one `sleep` on this host.
const SAMPLE = '4059105506330957210000000a1f087c1095301889042097012839300038' + '1e4000480050065806600068007000'

describe('CRIU dump stats', () => {
  it('reads freezing, frozen, memdump and memwrite times', () => {
    expect(parseDumpStats(Buffer.from(SAMPLE, 'hex'))).toEqual({ freezingUs: 124, frozenUs: 6165, memdumpUs: 521, memwriteUs: 151 })
  })
  it('refuses a truncated file', () => {
    expect(() => parseDumpStats(Buffer.from('40591055', 'hex'))).toThrow(/too short/)
  })
})
