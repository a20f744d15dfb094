/** `ssi kill [-s SIG | -SIG | -N] VPID…`: send a signal (default SIGTERM) to jobs anywhere in the cluster. */
import { parseVpidArg, UsageError } from '../errors.js'
import { parseSignal } from '../signals.js'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.usage('[-s SIGNAL | -SIGNAL | -N] <vpid...>')
    .argument('<vpid...>', 'the jobs to signal')
    .option('-s, --signal <signal>', 'signal name or number (default TERM)')
    // `-9`, `-KILL`, `-SIGKILL` are not options commander knows: they arrive as the first argument.
    .allowUnknownOption()
    .addHelpText('after', '\nExamples: ssi kill 1000001; ssi kill -9 1000001; ssi kill -s HUP 1000001 2000004')
    .action(async (args: string[], opts: { signal?: string }) => {
      const { signal, vpids } = parseKillArgs(args, opts.signal)
      const client = await ctx.client()
      const { results } = await client.call('kill', { vpids, signal }, { signal: ctx.signal })
      if (ctx.globals().json) ctx.printer.out(JSON.stringify(results, null, 2))
      const failed = results.filter(r => r.error !== undefined)
      if (!ctx.globals().json) for (const r of failed) ctx.printer.err(`ssi: kill ${r.vpid}: ${r.error}`)
      if (failed.length > 0) ctx.setExitCode(1)
    })
}

/** The signal ("SIGTERM" unless -s or a leading -SIG/-N says otherwise) and the vpids. */
export function parseKillArgs (args: readonly string[], signalOption: string | undefined): { signal: string, vpids: number[] } {
  let rest = args
  let signal = signalOption === undefined ? undefined : parseSignal(signalOption)
  const first = args[0]
  if (first !== undefined && /^-\w+$/.test(first)) {
    if (signal !== undefined) throw new UsageError('give the signal once: -s SIGNAL or -SIGNAL')
    signal = parseSignal(first.slice(1))
    rest = args.slice(1)
  }
  if (rest.length === 0) throw new UsageError('kill: no vpid given')
  const vpids = rest.map(arg => {
    if (arg.startsWith('-')) throw new UsageError(`kill: unexpected "${arg}" (the signal goes first: ssi kill -9 VPID)`)
    return parseVpidArg(arg)
  })
  return { signal: signal ?? 'SIGTERM', vpids }
}
