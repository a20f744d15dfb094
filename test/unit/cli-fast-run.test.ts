import { describe, expect, it } from 'vitest'
import { Command, CommanderError } from 'commander'
import { register } from '../../src/cli/commands/run.js'
import { parseFastRun } from '../../src/cli/fast-run.js'
import type { CliContext } from '../../src/cli/context.js'
import type { FastRun } from '../../src/cli/fast-run.js'

/** How commander reads `ssi <argv>` with the real run verb: what parseFastRun must match. */
function commanderReads (argv: string[]): FastRun | 'error' {
  const program = new Command('ssi').option('--socket <path>').option('--json').enablePositionalOptions().exitOverride()
    .configureOutput({ writeOut: () => {}, writeErr: () => {} })
  const cmd = program.command('run').option('--socket <path>').option('--json').exitOverride()
  register(cmd, {} as unknown as CliContext)
  let read: FastRun | undefined
  cmd.action((command: string[], opts: Record<string, unknown>) => {
    const { socket, json, ...options } = opts
    const top = program.opts<{ socket?: string, json?: boolean }>()
    read = { socket: (socket as string | undefined) ?? top.socket, json: json === true || top.json === true, options, command }
  })
  try {
    program.parse(argv, { from: 'user' })
  } catch (err) {
    if (err instanceof CommanderError) return 'error'
    throw err
  }
  return read ?? 'error'
}

describe('parseFastRun: the `ssi run` argv read without commander', () => {
  const understood: string[][] = [
    ['run', 'true'],
    ['run', '--', 'true'],
    ['run', '--node', 'n2', '--', 'true'],
    ['--socket', '/s', 'run', '--node', 'n2', '--', 'true'],
    ['--socket', 'run', 'run', 'true'],
    ['--json', 'run', '-d', 'sleep', '9'],
    ['run', '--socket', '/a', '--json', '--', 'x'],
    ['--socket', '/top', 'run', '--socket', '/verb', 'x'],
    ['run', '-m', '512M', '--memory', '1G', '--cpus', '0.5', '--pids', '9', '--checkpoint-every', '5m', 'x'],
    ['run', '-e', 'A=1', '--env', 'B', '-e', '-x', '--clean-env', '-i', '--interactive', '--detach', 'env'],
    ['run', '--memory', '-5', '--', 'true'],
    ['run', '--node', '--', 'x', 'y'],
    ['run', 'ls', '-la', '--json', '--node', 'x', '--', 'z'],
    ['run', '--', '--node', 'x'],
    ['run', '--', '--', 'x'],
    ['run', 'x', '--help']
  ]
  it('reads every form it takes exactly as commander does', () => {
    for (const argv of understood) {
      const fast = parseFastRun(argv)
      expect(fast, argv.join(' ')).toBeDefined()
      expect(fast, argv.join(' ')).toEqual(commanderReads(argv))
    }
  })

  it('leaves everything else to commander: help, other verbs, = and bundled short options, unknown options, errors', () => {
    const declined: string[][] = [
      [], ['ps'], ['run'], ['run', '--'], ['run', '--node'], ['run', '--node', 'n2'], ['run', '-h'], ['run', '--help'],
      ['--help', 'run', 'x'], ['help', 'run'], ['-V'], ['--socket'], ['--socket=/s', 'run', 'x'], ['run', '--node=n2', 'x'],
      ['run', '-im', '1G', 'x'], ['run', '-m1G', 'x'], ['run', '--bogus', 'x'], ['run', '-', 'x'], ['--bogus', 'run', 'x'],
      ['run', '-e'], ['nodes', 'run', 'x']
    ]
    for (const argv of declined) expect(parseFastRun(argv), argv.join(' ')).toBeUndefined()
  })
})
