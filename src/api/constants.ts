/**
 * Control-API constants with no dependencies, so the CLI can use them without loading zod (importing
 * zod costs ~50-70 ms, more than the whole CLI budget). `schema.ts` re-exports everything here: it
 * stays the one module that defines the protocol.
 */

/** Carried in every message (`v`). A daemon answers a message of another version with an error. */
export const API_VERSION = 1

/** Where the CLI looks for the local daemon unless `--socket` or `SSI_SOCKET` says otherwise. */
export const DEFAULT_SOCKET_PATH = '/run/ssi/ssi.sock'

/** Largest client→server frame body (bytes) the daemon accepts: requests are small. */
export const MAX_REQUEST_FRAME_BYTES = 1024 * 1024

/** Largest server→client frame body (bytes): results such as a cluster-wide `ps` can be large. */
export const MAX_RESPONSE_FRAME_BYTES = 16 * 1024 * 1024

/** Message kinds a client sends. Only ever append. */
export const CLIENT_MESSAGE_TYPES = ['call', 'input', 'cancel'] as const

/** Message kinds a server sends. Only ever append. */
export const SERVER_MESSAGE_TYPES = ['result', 'error', 'event'] as const

/** The call id of server errors about a frame that could not be tied to a call. Clients start at 1. */
export const CONNECTION_ERROR_ID = 0
