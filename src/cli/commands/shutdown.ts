/** `ssi shutdown`: stop the daemon this CLI talks to (root only); its jobs run on and are re-adopted when it starts again. */
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.action(async () => {
    const client = await ctx.client()
    const r = await client.call('shutdown', {}, { signal: ctx.signal })
    if (ctx.globals().json) ctx.printer.out(JSON.stringify(r))
    else ctx.printer.out(`the daemon of ${r.node} is stopping; its jobs run on`)
  })
}
