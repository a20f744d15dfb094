/** `ssi migrate VPID NODE`: move a running job to another node (stop-and-copy), keeping its vpid. */
import { parseVpidArg } from '../errors.js'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.argument('<vpid>', 'the job to move')
    .argument('<node>', 'the node to move it to')
    .addHelpText('after', '\nThe job is frozen and dumped, its memory and output copied, and it continues on NODE with the\n' +
      'same vpid; if anything fails it continues where it was. Prints the phase times (--json: all of them, in ms).')
    .action(async (vpidText: string, node: string) => {
      const vpid = parseVpidArg(vpidText)
      const client = await ctx.client()
      const r = await client.call('migrate', { vpid, node }, { signal: ctx.signal })
      if (ctx.globals().json) {
        ctx.printer.out(JSON.stringify(r, null, 2))
        return
      }
      const mib = (r.bytes / 2 ** 20).toFixed(1)
      const freeze = r.freezeMs === undefined ? '' : ` (freeze ${r.freezeMs} ms)`
      ctx.printer.out(`${r.vpid} moved ${r.from} -> ${r.node}: dump ${r.dumpMs} ms${freeze}, transfer ${r.transferMs} ms (${mib} MiB), restore ${r.restoreMs} ms, downtime ${r.downtimeMs} ms`)
    })
}
