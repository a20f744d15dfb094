/** Errors of the job spawner. */

/** The job spec is invalid (empty argv, relative cwd, bad id, ...); nothing was started. */
export class JobSpecError extends Error {
  static override name = 'JobSpecError'
  override name = 'JobSpecError'
}

/** A job with this id already has a dir or a cgroup on this node. */
export class JobExistsError extends Error {
  static override name = 'JobExistsError'
  override name = 'JobExistsError'
}

/** The shim could not start the job (its setup failed before tini ran); nothing is running. */
export class JobStartError extends Error {
  static override name = 'JobStartError'
  override name = 'JobStartError'
}

/** No job was ever started in this dir (no pid file). */
export class JobNotFoundError extends Error {
  static override name = 'JobNotFoundError'
  override name = 'JobNotFoundError'
}

/** The job's supervisor died without recording an exit: the exit status is unknown. */
export class JobLostError extends Error {
  static override name = 'JobLostError'
  override name = 'JobLostError'
}

/** A binary the spawner needs (tini, ssi-shim) is missing. */
export class RuntimeBinaryError extends Error {
  static override name = 'RuntimeBinaryError'
  override name = 'RuntimeBinaryError'
}

/** Stdin cannot be written: the job has no stdin FIFO, closed it, or ended. */
export class StdinClosedError extends Error {
  static override name = 'StdinClosedError'
  override name = 'StdinClosedError'
}
