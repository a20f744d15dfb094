/** `ssi restore DIR [--node NODE]` / `ssi restore --last VPID`: bring a checkpointed job back. */
import { absolutePath, parseVpidArg, UsageError } from '../errors.js'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

const HELP = `
DIR is a directory of THIS node written by \`ssi checkpoint\`. It is verified (manifest signature,
sha256 of every file) and refused if corrupt, altered or from another cluster. The job comes back
with the same vpid and in-namespace PIDs, here or on --node, its output continuing where the
checkpoint left it. Refused while the job still runs. With --last VPID, the job is restored from
the last periodic checkpoint (ssi run --checkpoint-every) held by a live node.`

export function register (cmd: Command, ctx: CliContext): void {
  cmd.argument('[dir]', 'the checkpoint directory (on this node)')
    .option('--node <name>', 'restore on this node (default: this one; with --last: the node holding it)')
    .option('--last <vpid>', 'restore this job from its last periodic checkpoint')
    .addHelpText('after', HELP)
    .action(async (dirText: string | undefined, opts: { node?: string, last?: string }) => {
      if ((dirText === undefined) === (opts.last === undefined)) throw new UsageError('give either a checkpoint DIR or --last VPID')
      const client = await ctx.client()
      const node = opts.node === undefined ? {} : { node: opts.node }
      const r = opts.last !== undefined
        ? await client.call('restoreLast', { vpid: parseVpidArg(opts.last), ...node }, { signal: ctx.signal })
        : await client.call('restore', { dir: absolutePath(ctx.cwd(), dirText ?? ''), ...node }, { signal: ctx.signal })
      if (ctx.globals().json) {
        ctx.printer.out(JSON.stringify(r, null, 2))
        return
      }
      ctx.printer.out(`${r.vpid} restored on ${r.node} from the checkpoint of ${new Date(r.takenMs).toISOString()} (restore ${r.restoreMs} ms)`)
    })
}
