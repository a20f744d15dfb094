/**
 * The command the target's shim runs to restore a job (see RestoreSpec): CRIU's CLI in detached
 * mode writing the restored root's pid to a file, with the job's stdout/stderr redirected to the
 * new job dir's files through `--inherit-fd`. A shell opens those files (O_APPEND, like the
 * spawner's) as fds 3, 4, ... and then execs criu, which inherits them.
 */

/** One file of the dumped job replaced by another path on restore. */
export interface RedirectedFile {
  /** CRIU's name of the file in the images: `file[mnt:ino]` for external files (stdio-files.ts). */
  readonly key: string
  /** File the restored job gets instead, opened for appending. */
  readonly newPath: string
  /** A FIFO (the job's stdin): opened read-write, which never blocks; CRIU reopens it with the dumped flags. */
  readonly fifo?: boolean
}

export interface RestoreCommandOptions {
  /** criu binary (or wrapper) to run. */
  readonly criuPath: string
  readonly imagesDir: string
  /** Where criu writes the restored root's host pid. */
  readonly pidFile: string
  /** criu's log (absolute). */
  readonly logFile: string
  readonly stdio: readonly RedirectedFile[]
  /** CRIU log level 0..4; default 4 (the log is what explains a failed restore). */
  readonly logLevel?: number
  /** Post-copy: pages come from a `criu lazy-pages` daemon whose socket is in imagesDir (the work dir). */
  readonly lazyPages?: boolean
  /** The images come through an image streamer listening in imagesDir (./image-streamer.ts) as they arrive. */
  readonly stream?: boolean
  /** An executable CRIU runs at each step (`--action-script`), e.g. gateScript()'s. */
  readonly actionScript?: string
}

const FIRST_FD = 3

/**
 * An action script (CRIU runs it at each step, the step in CRTOOLS_SCRIPT_ACTION) that holds a
 * restored tree before any task runs (post-restore) until a line comes from the FIFO `fifo`:
 * "go" lets it run; anything else, or the FIFO's end (its writer gone), fails the script, and
 * CRIU then kills the tree.
 */
export function gateScript (fifo: string): string {
  const quoted = `'${fifo.replaceAll("'", "'\\''")}'`
  return `#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" != post-restore ] || { read -r verdict < ${quoted} && [ "$verdict" = go ]; }\n`
}

/** argv of the restore command; mounts are external (dumped with `--external mnt[]`). */
export function restoreCommand (o: RestoreCommandOptions): string[] {
  const opens = o.stdio.map((f, i) => `${FIRST_FD + i}${f.fifo === true ? '<>' : '>>'}"$${i + 1}"`).join(' ')
  const script = `exec ${opens}; shift ${o.stdio.length}; exec "$@"`
  const inherit = o.stdio.flatMap((f, i) => ['--inherit-fd', `fd[${FIRST_FD + i}]:${f.key}`])
  return [
    'sh', '-c', script, 'ssi-restore', ...o.stdio.map((f) => f.newPath),
    o.criuPath, 'restore', '-d', '-D', o.imagesDir, '--pidfile', o.pidFile, '-o', o.logFile, `-v${o.logLevel ?? 4}`,
    '--root', '/', '--ext-mount-map', 'auto', '--enable-external-masters', '--manage-cgroups=ignore', ...inherit,
    ...(o.lazyPages === true ? ['--lazy-pages'] : []),
    ...(o.stream === true ? ['--stream'] : []),
    ...(o.actionScript === undefined ? [] : ['--action-script', o.actionScript])
  ]
}
