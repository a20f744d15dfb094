/** Errors of checkpoint-image transfer. */

/**
 * Why a transfer failed, for callers that act on it (retry, pick another node, report):
 * - 'bad-name': a file name is not a plain, safe name (a path, `..`, NUL, ...)
 * - 'not-a-file': the source dir holds something other than regular files (symlink, dir, ...)
 * - 'too-large' / 'too-many-files' / 'no-space': over the receiver's caps or free disk space
 * - 'exists': a file of that name already exists in the destination (never overwritten)
 * - 'integrity': received data does not match its digest, size or compression framing
 * - 'protocol': the peer broke the wire format (bad frame, wrong order, wrong version)
 * - 'source-changed': a source file changed size while it was being sent
 * - 'channel': the channel closed or was reset before the transfer finished
 * - 'cancelled': the sender gave up (its reason is in the message)
 * - 'aborted': the local AbortSignal fired
 * - 'io': a local filesystem or helper-process failure
 */
export type TransferErrorCode =
  | 'bad-name' | 'not-a-file' | 'too-large' | 'too-many-files' | 'no-space' | 'exists'
  | 'integrity' | 'protocol' | 'source-changed' | 'channel' | 'cancelled' | 'aborted' | 'io'

export interface TransferErrorOptions extends ErrorOptions {
  readonly code: TransferErrorCode
  /** The image file concerned, when there is one. */
  readonly file?: string
  /** True when the other end reported this failure (it arrived in a RESULT or CANCEL frame). */
  readonly remote?: boolean
}

/** An image transfer failed; `code` says why, `file` which file, `remote` which end noticed. */
export class ImageTransferError extends Error {
  static override name = 'ImageTransferError'
  override name = 'ImageTransferError'
  readonly code: TransferErrorCode
  readonly file: string | undefined
  readonly remote: boolean

  constructor (message: string, options: TransferErrorOptions) {
    super(message, options)
    this.code = options.code
    this.file = options.file
    this.remote = options.remote ?? false
  }
}

/** Received image data is corrupt: a digest, size or compressed-stream mismatch. */
export class ImageIntegrityError extends ImageTransferError {
  static override name = 'ImageIntegrityError'
  override name = 'ImageIntegrityError'

  constructor (message: string, options: Omit<TransferErrorOptions, 'code'>) {
    super(message, { ...options, code: 'integrity' })
  }
}

const CODES = new Set<string>([
  'bad-name', 'not-a-file', 'too-large', 'too-many-files', 'no-space', 'exists',
  'integrity', 'protocol', 'source-changed', 'channel', 'cancelled', 'aborted', 'io'
])

/** Rebuilds the error the other end reported (RESULT or CANCEL frame), marked `remote`. */
export function remoteTransferError (failure: { name: string, code: string, message: string, file?: string | undefined }, prefix: string): ImageTransferError {
  const message = `${prefix}: ${failure.message}`
  if (failure.name === 'ImageIntegrityError') return new ImageIntegrityError(message, { file: failure.file, remote: true })
  const code = CODES.has(failure.code) ? failure.code as TransferErrorCode : 'protocol'
  return new ImageTransferError(message, { code, file: failure.file, remote: true })
}

/** Turns any failure into an ImageTransferError (keeping one that already is). */
export function asTransferError (err: unknown, signal: AbortSignal | undefined, fallback: TransferErrorCode, what: string): ImageTransferError {
  if (err instanceof ImageTransferError) return err
  const e = err instanceof Error ? err : new Error(String(err))
  if (signal?.aborted === true) return new ImageTransferError(`${what} aborted: ${reasonText(signal.reason)}`, { code: 'aborted', cause: e })
  return new ImageTransferError(`${what} failed: ${e.message}`, { code: fallback, cause: e })
}

function reasonText (reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason)
}
