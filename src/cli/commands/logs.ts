/** `ssi logs [-f] VPID`: a job's output so far (and, with -f, until it ends), as raw bytes. */
import { parseVpidArg } from '../errors.js'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.argument('<vpid>', 'the job')
    .option('-f, --follow', 'keep printing new output until the job ends (Ctrl-C stops)')
    .addHelpText('after', '\nThe job\'s stdout goes to stdout and its stderr to stderr, byte for byte.')
    .action(async (vpidText: string, opts: { follow?: boolean }) => {
      const vpid = parseVpidArg(vpidText)
      const client = await ctx.client()
      const call = client.stream('logs', { vpid, follow: opts.follow === true }, { signal: ctx.signal })
      try {
        for await (const event of call) await ctx.output.write(event.fd, event.data)
        await call.result
      } catch (err) {
        // Ctrl-C is how `logs -f` ends: exit 130 quietly, as `tail -f` does.
        if (!ctx.signal.aborted) throw err
        ctx.setExitCode(130)
      }
    })
}
