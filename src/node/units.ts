// Moved to src/util/units.ts so the CLI can share it without importing daemon code.
export { parseBytes, parseDurationMs } from '../util/units.js'
