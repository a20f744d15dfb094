/** `ssi migrate VPID NODE [--mode M]`: move a running job to another node, keeping its vpid. */
import { parseVpidArg, UsageError } from '../errors.js'
import { describeMigrateProgress, ProgressLine } from '../progress.js'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'
import type { MigrateEvent, MigrateResult, MethodParams } from '../../api/schema.js'

const MODES = ['auto', 'stop-copy', 'post-copy', 'pre-copy'] as const
type Mode = typeof MODES[number]

const HELP = `
Modes (--mode, default auto):
  stop-copy  freeze, dump, copy, restore: downtime grows with the job's memory (~1.3 s per GiB here).
  post-copy  restore on NODE at once and pull the memory from the source afterwards: downtime
             ~0.1-0.3 s whatever the size, BUT until the page pull is complete the job needs both
             nodes: if the source node dies during the pull, the job is lost.
  pre-copy   copy memory while the job runs (needs soft-dirty memory tracking in the kernel); refused
             with the reason where it is not available.
  auto       stop-copy up to the cluster config's migration.postCopyAboveBytes of resident memory
             (default 256 MiB), post-copy above it when the source can do it, else stop-copy.
If anything fails before the job runs on NODE, it continues where it was. A live progress line goes
to stderr when it is a terminal; --json prints every phase time in ms.`

function parseMode (text: string): Mode {
  if ((MODES as readonly string[]).includes(text)) return text as Mode
  throw new UsageError(`--mode must be one of ${MODES.join(', ')} (got "${text}")`)
}

const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1)

/** Turns the source's events into terminal lines: the post-copy warning, phases, a live progress line. */
function eventPrinter (ctx: CliContext, target: string): { onEvent: (e: MigrateEvent) => void, done: () => void } {
  const columns = ctx.stderrColumns
  const line = columns === undefined ? undefined : new ProgressLine(t => { void ctx.output.write(2, Buffer.from(t)) }, columns)
  let mode: string | undefined
  const say = (text: string): void => { line?.clear(); ctx.printer.err(text) }
  return {
    onEvent: (e) => {
      if (e.kind === 'mode') {
        mode = e.mode
        // stop-copy is the quiet, usual case; anything else is said before the job is frozen.
        if (e.mode !== 'stop-copy' && e.reason !== 'requested') say(`mode ${e.mode} (${e.reason})`)
        if (e.warning !== undefined) say(`warning: ${e.warning}`)
      } else if (e.kind === 'phase') {
        if (mode === 'post-copy' && e.phase === 'pulling') say(`the job runs on ${target}; pulling its memory from the source (keep the source node up)`)
        else if (mode === 'post-copy' && e.phase === 'moved') say('page pull complete: the job no longer needs the source node')
        else line?.update(e.phase)
      } else {
        line?.update(describeMigrateProgress(e))
      }
    },
    done: () => { line?.clear() }
  }
}

function summary (r: MigrateResult): string {
  const freeze = r.freezeMs === undefined ? '' : ` (freeze ${r.freezeMs} ms)`
  const head = `${r.vpid} moved ${r.from} -> ${r.node}${r.mode === undefined || r.mode === 'stop-copy' ? '' : ` (${r.mode})`}`
  const pull = r.pullMs === undefined ? '' : `, page pull ${r.pullMs} ms (${mib(r.pageBytes ?? 0)} MiB)`
  const total = r.totalMs === undefined ? '' : `, total ${r.totalMs} ms`
  const early = r.bytesDuringDump === undefined || r.bytesDuringDump === 0 ? '' : `, ${mib(r.bytesDuringDump)} of it during the dump`
  return `${head}: dump ${r.dumpMs} ms${freeze}, transfer ${r.transferMs} ms (${mib(r.bytes)} MiB${early}), restore ${r.restoreMs} ms, downtime ${r.downtimeMs} ms${pull}${total}`
}

export function register (cmd: Command, ctx: CliContext): void {
  cmd.argument('<vpid>', 'the job to move')
    .argument('<node>', 'the node to move it to')
    .option('--mode <mode>', `how: ${MODES.join(' | ')}`, 'auto')
    .addHelpText('after', HELP)
    .action(async (vpidText: string, node: string, opts: { mode: string }) => {
      const vpid = parseVpidArg(vpidText)
      const mode = parseMode(opts.mode)
      const client = await ctx.client()
      const printer = eventPrinter(ctx, node)
      const params: MethodParams<'migrate'> = { vpid, node, mode }
      const call = client.stream('migrate', params, { signal: ctx.signal })
      let r: MigrateResult
      try {
        for await (const event of call) printer.onEvent(event)
        r = await call.result
      } finally {
        printer.done()
      }
      if (ctx.globals().json) ctx.printer.out(JSON.stringify(r, null, 2))
      else ctx.printer.out(summary(r))
    })
}
