import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { gateScript, restoreCommand } from '../../src/migration/restore-command.js'

describe('restore command', () => {
  it('streams and gates only when asked', () => {
    const base = { criuPath: '/criu', imagesDir: '/i', pidFile: '/p', logFile: '/l', stdio: [] }
    expect(restoreCommand(base)).not.toContain('--stream')
    expect(restoreCommand(base)).not.toContain('--action-script')
    const argv = restoreCommand({ ...base, stream: true, actionScript: '/j/restore-gate.sh' })
    expect(argv).toContain('--stream')
    expect(argv.slice(argv.indexOf('--action-script'), argv.indexOf('--action-script') + 2)).toEqual(['--action-script', '/j/restore-gate.sh'])
  })

  it('the gate script passes every step but post-restore, which it holds until "go" (a quote in the path too)', () => {
    const dir = mkdtempSync(join(tmpdir(), "ssi-gate-it's-"))
    try {
      const script = join(dir, 'gate.sh')
      writeFileSync(script, gateScript(join(dir, 'fifo')), { mode: 0o700 })
      const run = (action: string, verdict?: string): number => {
        if (verdict !== undefined) writeFileSync(join(dir, 'fifo'), verdict) // a plain file stands in for the FIFO
        try { execFileSync(script, { env: { CRTOOLS_SCRIPT_ACTION: action } }); return 0 } catch (err) { return (err as { status: number }).status }
      }
      expect(run('pre-restore')).toBe(0)
      expect(run('post-restore', 'go\n')).toBe(0)
      expect(run('post-restore', 'stop\n')).not.toBe(0)
      expect(run('post-restore', '')).not.toBe(0) // the writer went away: EOF
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
