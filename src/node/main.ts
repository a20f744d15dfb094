/**
 * `ssid --config FILE --node NAME`: runs one node in the foreground until SIGTERM/SIGINT.
 * What a real deployment runs under systemd (see contrib/ssid@.service); `ssi cluster up` spawns it.
 */
import '../polyfill.js'
import { parseArgs } from 'node:util'
import { findNode, loadClusterConfig } from './config.js'
import { startDaemon } from './daemon.js'
import { createLogger } from './logger.js'

export async function runDaemon (argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      node: { type: 'string', short: 'n' },
      'log-level': { type: 'string', default: process.env.SSI_LOG_LEVEL ?? 'info' }
    },
    strict: true
  })
  if (values.config === undefined || values.node === undefined) {
    throw new Error('usage: ssi daemon --config <file> --node <name>')
  }
  const config = await loadClusterConfig(values.config)
  const node = findNode(config, values.node)
  const logger = createLogger(node.name, values['log-level'] ?? 'info')
  let requested = (why: string): void => { logger.warn({ why }, 'shutdown requested before the daemon was up: ignored') }
  const daemon = await startDaemon({ config, node, logger, requestShutdown: why => { requested(why) } })
  await new Promise<void>(resolve => {
    let stopping = false
    const shutdown = (why: string): void => {
      if (stopping) return
      stopping = true
      logger.info({ why }, 'shutting down')
      void daemon.stop().finally(resolve)
    }
    requested = shutdown
    process.once('SIGTERM', () => { shutdown('SIGTERM') })
    process.once('SIGINT', () => { shutdown('SIGINT') })
  })
}

