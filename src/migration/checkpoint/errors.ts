/** Errors of checkpoint to disk and restore from it. */

/** A checkpoint directory that must not be restored: missing, corrupt, foreign, or tampered with. */
export class CheckpointInvalidError extends Error {
  static override name = 'CheckpointInvalidError'
  override name = 'CheckpointInvalidError'
}

/** A checkpoint or restore that cannot be done now (job running, no node to hold it, ...). */
export class CheckpointStateError extends Error {
  static override name = 'CheckpointStateError'
  override name = 'CheckpointStateError'
}
