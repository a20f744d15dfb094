export class VpidNotFoundError extends Error {
  static override name = 'VpidNotFoundError'
  override name = 'VpidNotFoundError'
}

export class JobPermissionError extends Error {
  static override name = 'JobPermissionError'
  override name = 'JobPermissionError'
}

export class JobStateError extends Error {
  static override name = 'JobStateError'
  override name = 'JobStateError'
}

export class NoNodeAvailableError extends Error {
  static override name = 'NoNodeAvailableError'
  override name = 'NoNodeAvailableError'
}

export class UnknownNodeError extends Error {
  static override name = 'UnknownNodeError'
  override name = 'UnknownNodeError'
}

/** A VpidNotFoundError, thrown here or by a peer (its name travels as remoteName). */
export function isVpidNotFound (err: unknown): boolean {
  const e = err as { name?: string, remoteName?: string }
  return e.name === 'VpidNotFoundError' || e.remoteName === 'VpidNotFoundError'
}
