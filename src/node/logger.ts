import { pino } from 'pino'
import type { DestinationStream } from 'pino'

/** The logging surface library code may use: a pino-compatible subset, so tests can pass a fake. */
export interface Logger {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
  child(bindings: Record<string, unknown>): Logger
}

/** A JSON logger writing to `dest` (a file descriptor or stream), scoped to one node. */
export function createLogger (node: string, level: string, dest: DestinationStream | number = 2): Logger {
  const stream = typeof dest === 'number' ? pino.destination({ fd: dest, sync: false }) : dest
  return pino({ level, base: { node } }, stream)
}

/** A logger that drops everything, for tests. */
export const silentLogger: Logger = {
  debug () {}, info () {}, warn () {}, error () {}, child () { return silentLogger }
}
