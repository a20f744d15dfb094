/**
 * Errors of the control API, shared by the daemon side and the client. The daemon sends an error as
 * `{ name, message, code? }` using the class name; the client re-throws it as a `RemoteError`.
 */

/** A frame's length prefix exceeds the limit. The stream cannot be resynchronised: the peer closes it. */
export class FrameTooLargeError extends Error {
  static override name = 'FrameTooLargeError'
  override name = 'FrameTooLargeError'
  readonly code = 'FRAME_TOO_LARGE'
  constructor (readonly bytes: number, readonly maxBytes: number) {
    super(`frame of ${bytes} bytes exceeds the limit of ${maxBytes} bytes`)
  }
}

/** A frame's body is not valid msgpack. */
export class MalformedFrameError extends Error {
  static override name = 'MalformedFrameError'
  override name = 'MalformedFrameError'
  readonly code = 'MALFORMED_FRAME'
}

/** A frame decoded but is not a valid message (envelope schema). */
export class InvalidMessageError extends Error {
  static override name = 'InvalidMessageError'
  override name = 'InvalidMessageError'
  readonly code = 'INVALID_MESSAGE'
}

/** The message carries an API version this side does not speak. */
export class UnsupportedVersionError extends Error {
  static override name = 'UnsupportedVersionError'
  override name = 'UnsupportedVersionError'
  readonly code = 'UNSUPPORTED_VERSION'
}

export class UnknownMethodError extends Error {
  static override name = 'UnknownMethodError'
  override name = 'UnknownMethodError'
  readonly code = 'UNKNOWN_METHOD'
}

/** The params of a call fail the method's schema. */
export class InvalidParamsError extends Error {
  static override name = 'InvalidParamsError'
  override name = 'InvalidParamsError'
  readonly code = 'INVALID_PARAMS'
}

/** The caller (by uid) may not call this method. */
export class PermissionDeniedError extends Error {
  static override name = 'PermissionDeniedError'
  override name = 'PermissionDeniedError'
  readonly code = 'PERMISSION_DENIED'
}

/** A handler produced a result or event that fails the schema: a daemon bug, reported instead of sent. */
export class InvalidResultError extends Error {
  static override name = 'InvalidResultError'
  override name = 'InvalidResultError'
  readonly code = 'INVALID_RESULT'
}

/** Per-connection in-flight call limit reached. */
export class TooManyCallsError extends Error {
  static override name = 'TooManyCallsError'
  override name = 'TooManyCallsError'
  readonly code = 'TOO_MANY_CALLS'
}

/** Connection limit of the daemon reached. */
export class TooManyConnectionsError extends Error {
  static override name = 'TooManyConnectionsError'
  override name = 'TooManyConnectionsError'
  readonly code = 'TOO_MANY_CONNECTIONS'
}

/** A call reused the id of a call still in flight on the same connection. */
export class DuplicateCallIdError extends Error {
  static override name = 'DuplicateCallIdError'
  override name = 'DuplicateCallIdError'
  readonly code = 'DUPLICATE_CALL_ID'
}

/** The call was cancelled by the client, or the connection or the daemon went away. */
export class CallCancelledError extends Error {
  static override name = 'CallCancelledError'
  override name = 'CallCancelledError'
  readonly code = 'CANCELLED'
}

/** Nothing listens on the socket path (missing, or a stale file of a crashed daemon). */
export class DaemonNotRunningError extends Error {
  static override name = 'DaemonNotRunningError'
  override name = 'DaemonNotRunningError'
  readonly code = 'DAEMON_NOT_RUNNING'
  constructor (readonly socketPath: string, detail?: string, options?: ErrorOptions) {
    super(`no ssi daemon at ${socketPath}${detail === undefined ? '' : ` (${detail})`}: ` +
      'start one with `ssi cluster up <config>` or `ssi daemon ...`, or point --socket / SSI_SOCKET at it', options)
  }
}

/** The socket exists but this user may not connect to it. */
export class DaemonAccessDeniedError extends Error {
  static override name = 'DaemonAccessDeniedError'
  override name = 'DaemonAccessDeniedError'
  readonly code = 'DAEMON_ACCESS_DENIED'
  constructor (readonly socketPath: string, options?: ErrorOptions) {
    super(`permission denied connecting to the ssi daemon at ${socketPath}`, options)
  }
}

/** Connecting to the daemon failed for another reason than "not running" or "permission denied". */
export class DaemonConnectError extends Error {
  static override name = 'DaemonConnectError'
  override name = 'DaemonConnectError'
  readonly code = 'DAEMON_CONNECT'
}

/** Starting a server on a socket path where another daemon is live (or a non-socket file sits). */
export class SocketInUseError extends Error {
  static override name = 'SocketInUseError'
  override name = 'SocketInUseError'
  readonly code = 'SOCKET_IN_USE'
}

/** The connection to the daemon closed while a call was in flight (or before it was sent). */
export class ConnectionClosedError extends Error {
  static override name = 'ConnectionClosedError'
  override name = 'ConnectionClosedError'
  readonly code = 'CONNECTION_CLOSED'
}

/** A connect or call did not complete within its deadline. */
export class ApiTimeoutError extends Error {
  static override name = 'ApiTimeoutError'
  override name = 'ApiTimeoutError'
  readonly code = 'TIMEOUT'
}

/** The peer sent something this side cannot make sense of (wrong version, wrong shape). */
export class ApiProtocolError extends Error {
  static override name = 'ApiProtocolError'
  override name = 'ApiProtocolError'
  readonly code = 'PROTOCOL'
}

/** An error the daemon returned for a call; `remoteName` is the daemon-side class name. */
export class RemoteError extends Error {
  static override name = 'RemoteError'
  override name = 'RemoteError'
  constructor (readonly remoteName: string, message: string, readonly remoteCode?: string) {
    super(message)
  }
}

/** The wire form of an error: the class name, the message, and a code when the error has one. */
export interface ErrorPayload {
  name: string
  message: string
  code?: string
}

/** Turns anything thrown into its wire form. Messages are capped so one error cannot be huge. */
export function toErrorPayload (err: unknown): ErrorPayload {
  if (!(err instanceof Error)) return { name: 'Error', message: truncate(String(err)) }
  // A class that sets only `static name` leaves the instance's name at Error's 'Error': use the class's.
  const className = (err.constructor as { name?: unknown } | undefined)?.name
  const name = err.name !== 'Error' && err.name !== '' ? err.name : typeof className === 'string' && className !== '' ? className : 'Error'
  const code = (err as { code?: unknown }).code
  const payload: ErrorPayload = { name, message: truncate(err.message) }
  if (typeof code === 'string') payload.code = code
  return payload
}

/** Caps a string at `max` characters (error messages can embed decoded data). */
export function truncate (text: string, max = 512): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`
}
