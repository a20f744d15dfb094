/** `ssi logs [-f] VPID`: a job's output so far (and, with -f, until it ends), as raw bytes. */
import { parseVpidArg } from '../errors.js'
import { checkpointedMessage } from '../job-result.js'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.argument('<vpid>', 'the job')
    .option('-f, --follow', 'keep printing new output until the job ends (Ctrl-C stops)')
    .addHelpText('after', '\nThe job\'s stdout goes to stdout and its stderr to stderr, byte for byte. With -f, a job stopped\n' +
      'by `ssi checkpoint` gets one line on stderr (where the checkpoint is) and is followed on: its\n' +
      'output continues once `ssi restore` brings it back, on whichever node.')
    .action(async (vpidText: string, opts: { follow?: boolean }) => {
      const vpid = parseVpidArg(vpidText)
      const client = await ctx.client()
      const call = client.stream('logs', { vpid, follow: opts.follow === true }, { signal: ctx.signal })
      try {
        for await (const event of call) {
          if (event.kind === 'output') await ctx.output.write(event.fd, event.data)
          else if (event.kind === 'checkpointed') ctx.printer.err(`ssi: ${checkpointedMessage(event)}`)
        }
        await call.result
      } catch (err) {
        // Ctrl-C is how `logs -f` ends: exit 130 quietly, as `tail -f` does.
        if (!ctx.signal.aborted) throw err
        ctx.setExitCode(130)
      }
    })
}
