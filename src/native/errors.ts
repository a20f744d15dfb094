/** Errors of the native bindings. */
import { constants } from 'node:os'

const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name])
)

/** The symbolic name of an errno value (`2` → `ENOENT`), or `E<n>` when unknown. */
export function errnoName (errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`
}

/** A failed system call: carries `errno`, its symbolic `code` and the `syscall`, like Node's own. */
export class NativeError extends Error {
  static override name = 'NativeError'
  override name = 'NativeError'
  readonly code: string

  constructor (readonly syscall: string, readonly errno: number, detail?: string, options?: ErrorOptions) {
    const code = errnoName(errno)
    super(`${syscall} failed: ${code}${detail === undefined ? '' : ` (${detail})`}`, options)
    this.code = code
  }
}
