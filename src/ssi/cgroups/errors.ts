/** Errors of the cgroup managers. */

export class CgroupNotFoundError extends Error {
  static override name = 'CgroupNotFoundError'
  override name = 'CgroupNotFoundError'
}

export class CgroupExistsError extends Error {
  static override name = 'CgroupExistsError'
  override name = 'CgroupExistsError'
}

/** A name or limit the manager refuses (bad characters, negative memory, ...). */
export class CgroupLimitError extends Error {
  static override name = 'CgroupLimitError'
  override name = 'CgroupLimitError'
}

/** The host lacks what was asked for (a controller, the freezer, cgroupfs itself). */
export class CgroupUnsupportedError extends Error {
  static override name = 'CgroupUnsupportedError'
  override name = 'CgroupUnsupportedError'
}

/** The kernel did not reach the wanted state in time (still populated, not frozen). */
export class CgroupTimeoutError extends Error {
  static override name = 'CgroupTimeoutError'
  override name = 'CgroupTimeoutError'
}
