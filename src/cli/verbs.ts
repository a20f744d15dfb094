/**
 * Every `ssi` verb, in the order `ssi --help` lists them. To add one: write
 * `src/cli/commands/<verb>.ts` exporting `register(cmd, ctx)` and add one line here. Only the module
 * of the verb being run is imported, so each verb costs start-up time only when it is used.
 */
import type { CommandModule } from './context.js'

export interface VerbEntry {
  readonly name: string
  /** One line for `ssi --help`. */
  readonly summary: string
  readonly load: () => Promise<CommandModule>
}

export const verbs: readonly VerbEntry[] = [
  { name: 'status', summary: 'show the cluster, this node and its members at a glance', load: async () => await import('./commands/status.js') },
  { name: 'nodes', summary: 'list the nodes of the cluster with their state, load and memory', load: async () => await import('./commands/nodes.js') },
  { name: 'cluster', summary: 'start (up) or stop (down) every node of a local cluster config', load: async () => await import('./commands/cluster.js') },
  { name: 'daemon', summary: 'run one node of a cluster in the foreground', load: async () => await import('./commands/daemon.js') },
  { name: 'keygen', summary: 'write a new cluster key file', load: async () => await import('./commands/keygen.js') }
]
