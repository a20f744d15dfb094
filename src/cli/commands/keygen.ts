/** `ssi keygen <file>`: write a new random cluster key (mode 0600); refuses to overwrite one. */
import type { Command } from 'commander'
import type { CliContext } from '../context.js'

export function register (cmd: Command, ctx: CliContext): void {
  cmd.argument('<file>', 'where to write the key')
    .action(async (file: string) => {
      const { createClusterKey } = await import('../../node/identity.js')
      try {
        await createClusterKey(file)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${file} already exists: not overwriting a cluster key`)
        throw err
      }
      ctx.printer.out(`wrote cluster key ${file}: copy it to every node of the cluster`)
    })
}
