/**
 * Closes the connections of a member that membership declared dead. With no libp2p connection
 * monitor, a connection to a partitioned or hung peer stays open on our side, and membership does not
 * re-dial a connected peer; TCP's retransmission backoff can then delay the rejoin after the
 * partition heals by a minute or more. Hung up, the peer is re-dialled every `redialMs` like any dead
 * node, and rejoins within a second of the network coming back. Its direct bulk connections (image
 * transfers, page streams) are aborted too: a hung peer's kernel keeps them open, stalled, forever.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import type { NodeHost } from './host.js'
import type { Logger } from './logger.js'
import type { Membership, MemberStateChange } from './membership.js'

/** Direct bulk connections (src/node/bulk-transport.ts): not part of the libp2p connection hung up. */
export interface DirectHangUp {
  hangUp(node: string, reason: Error): number
}

export function hangUpOnDeath (membership: Membership, host: NodeHost, logger: Logger, bulk?: DirectHangUp, deadAfterMs?: number): () => void {
  const onState = (evt: Event): void => {
    const { member } = (evt as CustomEvent<MemberStateChange>).detail
    if (member.state !== 'dead' || member.self) return
    const silent = deadAfterMs === undefined ? '' : ` (no heartbeat for ${deadAfterMs} ms)`
    const aborted = bulk?.hangUp(member.name, new Error(`node ${member.name} stopped answering and was declared dead${silent}`)) ?? 0
    if (aborted > 0) logger.info({ node: member.name, channels: aborted }, 'aborted direct bulk channels of a dead member')
    void host.hangUp(peerIdFromString(member.peerId)).catch((err: Error) => {
      logger.debug({ node: member.name, err: err.message }, 'could not hang up on a dead member')
    })
  }
  membership.addEventListener('member:state', onState)
  return () => { membership.removeEventListener('member:state', onState) }
}
