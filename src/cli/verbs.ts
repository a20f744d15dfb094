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
  { name: 'run', summary: 'run a command on the cluster as if it ran here', load: async () => await import('./commands/run.js') },
  { name: 'ps', summary: 'list the jobs of the whole cluster', load: async () => await import('./commands/ps.js') },
  { name: 'kill', summary: 'send a signal to jobs (default SIGTERM)', load: async () => await import('./commands/kill.js') },
  { name: 'wait', summary: 'wait for a job to end and exit with its status', load: async () => await import('./commands/wait.js') },
  { name: 'logs', summary: 'print the output of a job (-f: follow it)', load: async () => await import('./commands/logs.js') },
  { name: 'migrate', summary: 'move a running job to another node, keeping its vpid', load: async () => await import('./commands/migrate.js') },
  { name: 'checkpoint', summary: 'dump a job to a directory (it stops unless --leave-running)', load: async () => await import('./commands/checkpoint.js') },
  { name: 'restore', summary: 'bring a checkpointed job back with the same vpid', load: async () => await import('./commands/restore.js') },
  { name: 'inspect', summary: 'show everything known about a job', load: async () => await import('./commands/inspect.js') },
  { name: 'status', summary: 'show the cluster, this node and its members at a glance', load: async () => await import('./commands/status.js') },
  { name: 'nodes', summary: 'list the nodes of the cluster with their state, load and memory', load: async () => await import('./commands/nodes.js') },
  { name: 'cluster', summary: 'start (up) or stop (down) every node of a local cluster config', load: async () => await import('./commands/cluster.js') },
  { name: 'shutdown', summary: 'stop the daemon of this node (root only); its jobs run on', load: async () => await import('./commands/shutdown.js') },
  { name: 'daemon', summary: 'run one node of a cluster in the foreground', load: async () => await import('./commands/daemon.js') },
  { name: 'keygen', summary: 'write a new cluster key file', load: async () => await import('./commands/keygen.js') }
]
