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
