/** Signal names and numbers as `kill(1)` accepts them: 9, KILL, SIGKILL, kill. */
import { constants } from 'node:os'
import { UsageError } from './errors.js'

const SIGNALS = constants.signals as Readonly<Record<string, number>>

/** "9", "KILL", "sigkill" → "SIGKILL". Throws UsageError for anything else. */
export function parseSignal (text: string): string {
  const trimmed = text.trim()
  if (/^\d+$/.test(trimmed)) {
    const name = signalName(Number(trimmed))
    if (name !== undefined) return name
  } else {
    const upper = trimmed.toUpperCase()
    const name = upper.startsWith('SIG') ? upper : `SIG${upper}`
    if (SIGNALS[name] !== undefined) return name
  }
  throw new UsageError(`unknown signal "${text}" (examples: TERM, KILL, INT, HUP, 9)`)
}

/** 9 → "SIGKILL" (the first name of a number with aliases: 6 → SIGABRT, not SIGIOT). */
export function signalName (signal: number): string | undefined {
  for (const [name, n] of Object.entries(SIGNALS)) if (n === signal) return name
  return undefined
}
