/** `ssi checkpoint VPID [--leave-running] [--to DIR]`: dump a job into a directory of this node. */
import { absolutePath, parseVpidArg } from '../errors.js'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

const HELP = `
The job is frozen and dumped wherever it runs, and its checkpoint (CRIU images, its output so far,
and a signed manifest) is written to DIR on THIS node. DIR must not exist or be empty; by default it
is a new directory under this node's state dir. Without --leave-running the job then stops and shows
state "checkpointed" until \`ssi restore DIR\` brings it back with the same vpid.`

export function register (cmd: Command, ctx: CliContext): void {
  cmd.argument('<vpid>', 'the job to checkpoint')
    .option('--leave-running', 'keep the job running after the dump')
    .option('--to <dir>', 'directory to write the checkpoint to (on this node)')
    .addHelpText('after', HELP)
    .action(async (vpidText: string, opts: { leaveRunning?: boolean, to?: string }) => {
      const vpid = parseVpidArg(vpidText)
      const client = await ctx.client()
      const dir = opts.to === undefined ? undefined : absolutePath(ctx.cwd(), opts.to)
      const r = await client.call('checkpoint', { vpid, leaveRunning: opts.leaveRunning === true, ...(dir === undefined ? {} : { dir }) }, { signal: ctx.signal })
      if (ctx.globals().json) {
        ctx.printer.out(JSON.stringify(r, null, 2))
        return
      }
      const mib = (r.bytes / 2 ** 20).toFixed(1)
      const how = r.leftRunning ? 'still running' : 'stopped (checkpointed)'
      ctx.printer.out(`${r.vpid} checkpointed on ${r.node} to ${r.dir} (${mib} MiB, dump ${r.dumpMs} ms, total ${r.totalMs} ms); ${how}`)
    })
}
