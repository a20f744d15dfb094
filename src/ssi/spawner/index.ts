/** Job spawning: the JobSpawner interface and its shim-based implementation. */
import { ShimJobSpawner } from './shim-spawner.js'
import type { ShimJobSpawnerInit } from './shim-spawner.js'
import type { JobSpawner } from './types.js'

export type {
  AdoptResult, ExitStatus, FollowOptions, JobHandle, JobLimits, JobSpawner, JobSpec, OutputStream, RestoreSpec, SpawnerLogger
} from './types.js'
export {
  JobExistsError, JobLostError, JobNotFoundError, JobSpecError, JobStartError, RuntimeBinaryError, StdinClosedError
} from './errors.js'
export { ShimJobSpawner, signalProcess } from './shim-spawner.js'
export type { ShimJobSpawnerInit } from './shim-spawner.js'
export { DEFAULT_SHIM_PATH, findTini } from './launch.js'
export { decodeExit, procStartTime } from './state.js'
export { readChunk } from './output.js'

export function createJobSpawner (init: ShimJobSpawnerInit): JobSpawner {
  return new ShimJobSpawner(init)
}
