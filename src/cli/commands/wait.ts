/** `ssi wait VPID`: wait for a job to end and exit with its status, as the shell's `wait` does. */
import { parseVpidArg } from '../errors.js'
import { reportJobEnd } from '../job-result.js'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.argument('<vpid>', 'the job to wait for')
    .addHelpText('after', '\nPrints nothing (--json: the result) and exits with the job\'s status: its exit code, or 128+N\n' +
      'when signal N ended it. A job killed for exceeding its memory limit gets one line on stderr.\n' +
      '125 when ssi itself fails (bad vpid, unknown job, no daemon) or could not start the job; 254 when\n' +
      'the job was lost with its node.')
    .action(async (vpidText: string) => {
      const vpid = parseVpidArg(vpidText)
      const client = await ctx.client()
      const result = await client.call('wait', { vpid }, { signal: ctx.signal })
      if (ctx.globals().json) ctx.printer.out(JSON.stringify(result, null, 2))
      reportJobEnd(ctx, result)
    })
}
