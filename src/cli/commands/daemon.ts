/** `ssi daemon --config <file> --node <name>`: run one node in the foreground (what systemd runs). */
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

export function register (cmd: Command, _ctx: CliContext): void {
  cmd.requiredOption('-c, --config <file>', 'cluster config file')
    .requiredOption('-n, --node <name>', 'which node of the config this is')
    .option('--log-level <level>', 'debug, info, warn or error (env SSI_LOG_LEVEL)')
    .action(async (opts: { config: string, node: string, logLevel?: string }) => {
      const { runDaemon } = await import('../../node/main.js')
      const args = ['--config', opts.config, '--node', opts.node]
      if (opts.logLevel !== undefined) args.push('--log-level', opts.logLevel)
      await runDaemon(args)
    })
}
