/**
 * The churn soak (benchmarks/soak) for ~1 minute on a 4-node loopback cluster: random runs,
 * migrations, kills, daemon restarts and a node kill, with invariants checked throughout. No
 * invariant may be violated and nothing may be left behind. A failing run prints its seed: replay
 * it with `SOAK_SEED=N` (or `npm run bench:soak -- --seed N`). Needs root, tini, CRIU >= 4.2.
 */
import { spawn } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'

const repo = join(import.meta.dirname, '../..')

interface SoakReport {
  seed: number
  dir: string
  operations: Record<string, number>
  faultsInjected: Record<string, number>
  invariantViolations: { count: number, details: unknown[] }
  leakedResources: { count: number, details: unknown[] }
}

async function soak (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(repo, 'benchmarks/soak/main.ts'), ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null>(resolve => child.once('close', resolve))
  return { code, stdout, stderr }
}

it('a 55 s churn soak: 0 invariant violations, 0 leaked resources', { timeout: 180_000 }, async () => {
  if (process.getuid?.() !== 0) throw new Error('the soak needs root (cgroups, namespaces, CRIU)')
  const seed = process.env.SOAK_SEED ?? String(Math.floor(Math.random() * 2 ** 31))
  const r = await soak(['--seed', seed, '--duration', '55s', '--nodes', '4'])
  let report: SoakReport
  try { report = JSON.parse(r.stdout) as SoakReport } catch {
    throw new Error(`soak (seed ${seed}) printed no report (exit ${r.code}):\n${r.stderr.slice(-4000)}`)
  }
  const failed = report.invariantViolations.count > 0 || report.leakedResources.count > 0
  const summary = JSON.stringify({ seed, violations: report.invariantViolations, leaks: report.leakedResources }, null, 2) +
    (failed ? `\n${await evidence(report, r.stderr)}` : '')
  // Every kind of operation and fault happened, so a quiet run cannot pass for a good one.
  expect(report.faultsInjected['daemon-restart'], summary).toBeGreaterThanOrEqual(1)
  expect(report.faultsInjected['node-kill'], summary).toBeGreaterThanOrEqual(1)
  expect((report.operations['migrate-stop-copy'] ?? 0) + (report.operations['migrate-post-copy'] ?? 0), summary).toBeGreaterThanOrEqual(3)
  expect(report.operations['output-checked'] ?? 0, summary).toBeGreaterThanOrEqual(10)
  expect(report.invariantViolations.count, summary).toBe(0)
  expect(report.leakedResources.count, summary).toBe(0)
  expect(r.code, summary).toBe(0)
})

/** What the soak and the daemons logged about each job a violation names: enough to start from in a CI log. */
async function evidence (report: SoakReport, stderr: string): Promise<string> {
  const vpids = [...new Set((report.invariantViolations.details as Array<{ vpid?: number }>).flatMap(v => v.vpid === undefined ? [] : [String(v.vpid)]))]
  const out: string[] = [`soak dir kept: ${report.dir}`]
  const logs = await readdir(report.dir).then(names => names.filter(n => !n.includes('.')), () => [])
  for (const vpid of vpids.slice(0, 3)) {
    out.push(`--- soak log on ${vpid}:`, ...stderr.split('\n').filter(l => l.includes(vpid)).slice(-20))
    for (const node of logs) {
      const lines = (await readFile(join(report.dir, node, 'daemon.log'), 'utf8').catch(() => '')).split('\n').filter(l => l.includes(vpid))
      if (lines.length > 0) out.push(`--- ${node}/daemon.log on ${vpid}:`, ...lines.slice(-25).map(l => l.slice(0, 600)))
    }
  }
  return out.join('\n')
}
